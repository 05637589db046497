//! A WebSocket client that checks the stats topics, shared by the integration and the
//! multi-instance suites (each used to keep its own copy).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Incoming, ServerProcess, WAIT, Ws};

/// The whole-value stats topics, in the order a new connection receives them.
pub const STATS_TOPICS: [&str; 3] = ["stats:tasks", "stats:approvals", "stats:conversations"];

/// `true` when every key of `expected` has the same value in `actual`.
pub fn matches(actual: &Value, expected: &Value) -> bool {
    expected.as_object().is_some_and(|e| e.iter().all(|(k, v)| actual.get(k) == Some(v)))
}

/// A WebSocket client that checks every stats message it sees (numeric `seq`, never going
/// back, growing whenever the value changes) and keeps the last value of each topic, and
/// counts the `task:assigned` messages it receives by task id.
///
/// Its methods panic on a broken rule: they are assertions of the suites.
#[derive(Debug)]
pub struct Watcher {
    /// Names the socket in panic messages.
    pub name: String,
    /// The connection, for reads that bypass the checks.
    pub ws: Ws,
    last: HashMap<String, (f64, Value)>,
    /// How many JSON messages [`Watcher::wait_for`] has read.
    pub received: usize,
    assigned: BTreeMap<i64, usize>,
}

impl Watcher {
    /// Connects to `server` with `token` and checks the four opening messages (`connected`,
    /// then [`STATS_TOPICS`] in order), each within [`WAIT`].
    pub async fn connect(server: &ServerProcess, token: &str, name: &str) -> Self {
        Self::connect_url(&server.ws_url(token), name).await
    }

    /// As [`Watcher::connect`], to a WebSocket URL of its own (e.g. through a proxy).
    pub async fn connect_url(url: &str, name: &str) -> Self {
        let mut ws = crate::connect(url).await.unwrap_or_else(|e| panic!("{name}: connect: {e}"));
        let mut first = Vec::new();
        for _ in 0..4 {
            first
                .push(ws.next_json(WAIT).await.unwrap_or_else(|e| panic!("{name}: opening messages: {e:#}")));
        }
        let mut w =
            Self { name: name.into(), ws, last: HashMap::new(), received: 0, assigned: BTreeMap::new() };
        assert_eq!(first[0]["type"], "connected", "{name}: first message {}", first[0]);
        for (msg, topic) in first[1..].iter().zip(STATS_TOPICS) {
            assert_eq!(msg["type"], topic, "{name}: opening messages out of order: {first:?}");
            w.observe(msg);
        }
        w
    }

    /// Checks a message and records it if it is a stats message or a `task:assigned` (others
    /// are ignored).
    pub fn observe(&mut self, msg: &Value) {
        if msg["type"] == "task:assigned" {
            let id = msg["payload"]["id"].as_i64().unwrap_or_else(|| {
                panic!("{}: task:assigned without an integer payload.id: {msg}", self.name)
            });
            *self.assigned.entry(id).or_default() += 1;
            return;
        }
        let Some(topic) = msg["type"].as_str().filter(|t| t.starts_with("stats:")) else { return };
        let seq = msg["seq"]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: stats message without numeric seq: {msg}", self.name));
        let payload = msg["payload"].clone();
        assert!(payload.is_object(), "{}: stats payload is not an object: {msg}", self.name);
        if let Some((last_seq, last_payload)) = self.last.get(topic) {
            assert!(seq >= *last_seq, "{}: {topic} seq went back from {last_seq} to {seq}: {msg}", self.name);
            if &payload != last_payload {
                assert!(seq > *last_seq, "{}: new {topic} value with the same seq {seq}: {msg}", self.name);
            }
        }
        self.last.insert(topic.to_owned(), (seq, payload));
    }

    /// The last payload of `topic` (`Value::Null` before any).
    pub fn last_payload(&self, topic: &str) -> Value {
        self.last.get(topic).map(|(_, p)| p.clone()).unwrap_or(Value::Null)
    }

    /// The last `seq` of `topic` (NaN before any).
    pub fn last_seq(&self, topic: &str) -> f64 {
        self.last.get(topic).map(|(s, _)| *s).unwrap_or(f64::NAN)
    }

    /// How many `task:assigned` messages this socket received, by task id.
    pub fn assigned(&self) -> &BTreeMap<i64, usize> {
        &self.assigned
    }

    /// Reads (recording what it reads) until `done(self)` holds or `timeout` passes; returns
    /// whether it holds. Panics if the connection closes or ends.
    pub async fn wait_until(&mut self, done: impl Fn(&Watcher) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ws.next_incoming(left).await {
                Some(Incoming::Json(v)) => {
                    self.received += 1;
                    self.observe(&v);
                }
                Some(other) => panic!("{}: the connection ended while waiting: {other:?}", self.name),
                None => return done(self),
            }
        }
    }

    /// Reads until the last value of `topic` matches `expected` or `timeout` passes. Panics if
    /// the connection closes or ends.
    pub async fn wait_for(&mut self, topic: &str, expected: &Value, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if matches(&self.last_payload(topic), expected) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ws.next_incoming(left).await {
                Some(Incoming::Json(v)) => {
                    self.received += 1;
                    self.observe(&v);
                }
                Some(other) => panic!("{}: waiting for {topic} = {expected}, got {other:?}", self.name),
                None => return false,
            }
        }
    }

    /// Like [`Watcher::wait_for`] within [`WAIT`], but panics on timeout, and checks the seq
    /// grew.
    pub async fn expect(&mut self, topic: &str, expected: &Value) {
        let before = self.last_seq(topic);
        let got = self.wait_for(topic, expected, WAIT).await;
        assert!(
            got,
            "{}: no {topic} value matching {expected} within {WAIT:?}; last value {}",
            self.name,
            self.last_payload(topic)
        );
        assert!(self.last_seq(topic) > before, "{}: {topic} seq did not grow past {before}", self.name);
    }

    /// Reads for `d`, recording stats messages, and returns everything received.
    pub async fn drain(&mut self, d: Duration) -> Vec<Value> {
        let msgs = self.ws.drain_for(d).await;
        for m in &msgs {
            self.observe(m);
        }
        msgs
    }

    /// Panics unless the last value of every topic matches `expected` (in [`STATS_TOPICS`]
    /// order) within `timeout` overall; then reads for a little longer and checks that nothing
    /// stale arrives.
    pub async fn converge(&mut self, expected: &[Value], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for (topic, want) in STATS_TOPICS.iter().zip(expected) {
            let left = deadline.saturating_duration_since(Instant::now());
            let ok = self.wait_for(topic, want, left).await;
            assert!(
                ok,
                "{}: last {topic} {} != REST {want} after {timeout:?}",
                self.name,
                self.last_payload(topic)
            );
        }
        let late = self.ws.drain_for(Duration::from_millis(300)).await;
        for m in &late {
            assert!(m.get("__close").is_none() && m.get("__ended").is_none(), "{}: closed: {m}", self.name);
            self.observe(m);
        }
        for (topic, want) in STATS_TOPICS.iter().zip(expected) {
            assert!(
                matches(&self.last_payload(topic), want),
                "{}: {topic} moved away from REST {want} to {} (late messages {late:?})",
                self.name,
                self.last_payload(topic)
            );
        }
    }
}
