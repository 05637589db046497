//! Black-box tests of `docs/protocol.md` §6: WebSocket topics
//! (`?topics=` on the URL, `subscribe` / `unsubscribe`), the personal `task:assigned` event,
//! presence and typing.
//!
//! Every case in `both_databases!` runs twice, on SQLite and on PostgreSQL, each time on its own
//! server process and fresh database. The `cluster` cases start three instances on one fresh
//! PostgreSQL database (same `JWT_SECRET` and admin password, so one token works everywhere)
//! and check that the same holds across instances, including what happens to presence when an
//! instance is stopped gracefully or `kill -9`ed. Run with (PostgreSQL on 127.0.0.1:5432, or an
//! admin URL in `TEST_DATABASE_URL`):
//!
//! ```text
//! PULSE_SERVER_BIN=target/debug/server cargo test -p suites --test topics
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use suites::{
    ADMIN_USERNAME, Api, Pulse, STATS_TOPICS, ServerProcess, TestDatabase, WAIT, Ws, approval_body, connect,
    conversation_body, get_ok, id_of, matches, refused_body, refused_status,
};

/// How long a socket must stay silent to count as "no message".
const QUIET: Duration = Duration::from_millis(700);

/// The keys of a task, as REST returns it.
const TASK_KEYS: [&str; 10] = [
    "id",
    "type",
    "department",
    "description",
    "status",
    "assignee",
    "createdBy",
    "createdAt",
    "updatedAt",
    "completedAt",
];

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn task_body(description: &str, assignee: Option<&str>) -> Value {
    let mut body = json!({"type": "housekeeping", "department": "front", "description": description});
    if let Some(a) = assignee {
        body["assignee"] = json!(a);
    }
    body
}

async fn create(api: &Api, path: &str, body: Value) -> Value {
    let resp = api.post(path, &body).await.expect("request");
    resp.expect_status(201).clone()
}

async fn post_ok(api: &Api, path: &str, body: &Value) -> Value {
    let resp = api.post(path, body).await.expect("request");
    resp.expect_status(200).clone()
}

async fn post_empty_ok(api: &Api, path: &str) -> Value {
    let resp = api.post_empty(path).await.expect("request");
    resp.expect_status(200).clone()
}

/// The REST value of a stats topic.
async fn rest_stats(api: &Api, topic: &str) -> Value {
    match topic {
        "stats:tasks" => get_ok(api, "/api/v1/tasks/stats").await,
        "stats:conversations" => get_ok(api, "/api/v1/conversations/stats").await,
        "stats:approvals" => {
            let body = get_ok(api, "/api/v1/approvals/stats").await;
            body.get("stats").cloned().unwrap_or_else(|| panic!("approval stats not in \"stats\": {body}"))
        }
        other => panic!("not a stats topic: {other}"),
    }
}

fn type_of(msg: &Value) -> &str {
    msg["type"].as_str().unwrap_or("?")
}

fn types(msgs: &[Value]) -> Vec<&str> {
    msgs.iter().map(type_of).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The `online` list of a presence message, checked: every entry has the four fields with
/// the right types, and the list is sorted by username.
#[track_caller]
fn online(msg: &Value) -> Vec<Value> {
    assert_eq!(type_of(msg), "presence", "not a presence message: {msg}");
    let list = msg["payload"]["online"]
        .as_array()
        .unwrap_or_else(|| panic!("presence without payload.online array: {msg}"))
        .clone();
    for e in &list {
        assert!(e["userId"].is_i64(), "presence entry without integer userId: {msg}");
        assert!(e["username"].is_string(), "presence entry without username: {msg}");
        assert!(e["connections"].as_u64().is_some_and(|c| c >= 1), "presence entry connections: {msg}");
        assert!(
            e.get("viewing").is_some_and(|v| v.is_null() || v.is_string()),
            "presence entry without viewing (null or a path): {msg}"
        );
    }
    let names: Vec<&str> = list.iter().map(|e| e["username"].as_str().unwrap_or("")).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "presence not sorted by username: {msg}");
    let mut dedup = sorted.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), sorted.len(), "a user appears twice in presence: {msg}");
    list
}

/// The presence entry of `username` in a presence message, if online.
#[track_caller]
fn entry(msg: &Value, username: &str) -> Option<Value> {
    online(msg).into_iter().find(|e| e["username"] == username)
}

/// One expected typing relay.
fn typing_payload(conversation: i64, user: &Value, typing: bool) -> Value {
    json!({
        "conversationId": conversation,
        "userId": user["id"],
        "username": user["username"],
        "typing": typing,
    })
}

fn typing_msg(conversation: i64, typing: bool) -> Value {
    json!({"type": "typing", "payload": {"conversationId": conversation, "typing": typing}})
}

/// `ws://…/ws?token=…&topics=…`.
fn topics_url(server: &ServerProcess, token: &str, topics: &str) -> String {
    format!("{}&topics={topics}", server.ws_url(token))
}

/// A WebSocket client with a name for messages, and strict or skipping reads.
struct Client {
    name: String,
    ws: Ws,
    /// The last stats and presence messages received, by type (whole values, sent on change).
    last: HashMap<String, Value>,
}

impl Client {
    /// Connects (with `?topics=` when `topics` is given) and checks that the opening messages
    /// have exactly the types `opening`, in order; returns them.
    async fn open(
        server: &ServerProcess,
        token: &str,
        topics: Option<&str>,
        name: &str,
        opening: &[&str],
    ) -> (Self, Vec<Value>) {
        let url = match topics {
            Some(t) => topics_url(server, token, t),
            None => server.ws_url(token),
        };
        let ws = connect(&url).await.unwrap_or_else(|e| panic!("{name}: connect to {url}: {e}"));
        let mut c = Self { name: name.to_owned(), ws, last: HashMap::new() };
        let mut first = Vec::new();
        for _ in opening {
            first.push(c.next().await);
        }
        assert_eq!(types(&first), opening, "{name}: opening messages {first:?}");
        (c, first)
    }

    /// Connects with the default topics (`connected` and the three stats).
    async fn default(server: &ServerProcess, token: &str, name: &str) -> Self {
        let opening = ["connected", "stats:tasks", "stats:approvals", "stats:conversations"];
        Self::open(server, token, None, name, &opening).await.0
    }

    /// The next JSON message within [`WAIT`]; panics otherwise.
    async fn next(&mut self) -> Value {
        let msg = self.ws.next_json(WAIT).await.unwrap_or_else(|e| panic!("{}: {e:#}", self.name));
        self.record(&msg);
        msg
    }

    /// Keeps the last stats and presence messages (checking them).
    fn record(&mut self, msg: &Value) {
        let ty = type_of(msg);
        if ty == "presence" {
            online(msg);
        } else if STATS_TOPICS.contains(&ty) {
            let seq = msg["seq"]
                .as_f64()
                .unwrap_or_else(|| panic!("{}: stats without numeric seq: {msg}", self.name));
            if let Some(last) = self.last.get(ty).and_then(|m| m["seq"].as_f64()) {
                assert!(seq >= last, "{}: {ty} seq went back from {last}: {msg}", self.name);
            }
        } else {
            return;
        }
        self.last.insert(ty.to_owned(), msg.clone());
    }

    /// The next message, which must be of type `ty`.
    async fn expect(&mut self, ty: &str) -> Value {
        let msg = self.next().await;
        assert_eq!(type_of(&msg), ty, "{}: expected a {ty:?} message, got {msg}", self.name);
        msg
    }

    /// Reads (skipping others) until a message of type `ty` satisfies `pred`, within `timeout`.
    async fn wait_for(&mut self, ty: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ws.next_incoming(left).await {
                Some(suites::Incoming::Json(v)) => {
                    self.record(&v);
                    if type_of(&v) == ty && pred(&v) {
                        return v;
                    }
                    skipped.push(v);
                }
                Some(other) => {
                    panic!("{}: waiting for {ty:?}, got {other:?} (skipped {skipped:?})", self.name)
                }
                None => panic!("{}: no matching {ty:?} within {timeout:?}; skipped {skipped:?}", self.name),
            }
        }
    }

    /// Returns the last value of `topic` if it matches `expected`, else waits for one that
    /// does.
    async fn wait_stats(&mut self, topic: &str, expected: &Value) -> Value {
        if let Some(last) = self.last.get(topic).filter(|m| matches(&m["payload"], expected)) {
            return last.clone();
        }
        self.wait_for(topic, WAIT, |m| matches(&m["payload"], expected)).await
    }

    /// Returns the last presence message if it satisfies `pred`, else waits (within
    /// `timeout`) for one that does.
    async fn wait_presence(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(last) = self.last.get("presence").filter(|m| pred(m)) {
            return last.clone();
        }
        self.wait_for("presence", timeout, |m| pred(m)).await
    }

    /// Everything received during `d`, failing on a close.
    async fn drain(&mut self, d: Duration) -> Vec<Value> {
        let msgs = self.ws.drain_for(d).await;
        for m in &msgs {
            self.record(m);
            assert!(m.get("__close").is_none() && m.get("__ended").is_none(), "{}: closed: {m}", self.name);
        }
        msgs
    }

    /// Panics if anything arrives during `d`.
    async fn quiet(&mut self, d: Duration) {
        let msgs = self.drain(d).await;
        assert!(msgs.is_empty(), "{}: expected no message, got {msgs:?}", self.name);
    }

    /// Panics if a message of type `ty` arrives during `d`; returns everything received.
    async fn none_of(&mut self, ty: &str, d: Duration) -> Vec<Value> {
        let msgs = self.drain(d).await;
        assert!(
            !msgs.iter().any(|m| type_of(m) == ty),
            "{}: expected no {ty:?} message, got {msgs:?}",
            self.name
        );
        msgs
    }

    async fn send(&mut self, v: &Value) {
        self.ws.send_json(v).await.unwrap_or_else(|e| panic!("{}: send {v}: {e}", self.name));
    }

    /// Sends `{"type": kind, "topics": topics}` and returns the acknowledged topic list (the
    /// very next message must be `subscribed`).
    async fn topics_request(&mut self, kind: &str, topics: &[&str]) -> Vec<String> {
        self.send(&json!({"type": kind, "topics": topics})).await;
        let ack = self.expect("subscribed").await;
        ack["payload"]["topics"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: subscribed without payload.topics array: {ack}", self.name))
            .iter()
            .map(|t| t.as_str().unwrap_or_else(|| panic!("non-string topic in {ack}")).to_owned())
            .collect()
    }

    async fn subscribe(&mut self, topics: &[&str]) -> Vec<String> {
        self.topics_request("subscribe", topics).await
    }

    async fn unsubscribe(&mut self, topics: &[&str]) -> Vec<String> {
        self.topics_request("unsubscribe", topics).await
    }

    /// Sends `{"type": kind, "topics": topics}` and expects an `unknown_topic` error next.
    async fn refused_topics(&mut self, kind: &str, topics: &[&str]) {
        self.send(&json!({"type": kind, "topics": topics})).await;
        let err = self.next().await;
        assert_eq!(type_of(&err), "error", "{}: {kind} {topics:?}: expected an error, got {err}", self.name);
        assert_eq!(err["payload"]["code"], "unknown_topic", "{}: {kind} {topics:?}: {err}", self.name);
        assert!(
            err["payload"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: error without message: {err}",
            self.name
        );
    }

    /// Sends a ping and expects the pong (proves the connection is open and the server has
    /// processed everything sent before).
    async fn ping(&mut self) {
        self.send(&json!({"type": "ping"})).await;
        self.wait_for("pong", WAIT, |_| true).await;
    }

    async fn viewing(&mut self, path: &str) {
        self.send(&json!({"type": "viewing", "payload": {"path": path}})).await;
    }

    async fn close(self) {
        self.ws.close().await;
    }
}

/// Waits (reading every client concurrently) until each has a `task:assigned` for
/// `task`, equal to it; then checks that none gets a second one.
async fn expect_assigned(clients: Vec<&mut Client>, task: &Value) {
    let id = id_of(task);
    join_all(clients.into_iter().map(|c| async move {
        let msg = c.wait_for("task:assigned", WAIT, |_| true).await;
        assert_eq!(msg["payload"]["id"], id, "{}: task:assigned for another task: {msg}", c.name);
        let payload = &msg["payload"];
        for key in TASK_KEYS {
            assert!(payload.get(key).is_some(), "{}: task:assigned payload without {key}: {msg}", c.name);
        }
        assert_eq!(payload, task, "{}: task:assigned payload is not the task", c.name);
        c.none_of("task:assigned", QUIET).await;
    }))
    .await;
}

/// Checks (concurrently) that none of `clients` receives a `task:assigned` within [`QUIET`].
async fn expect_no_assigned(clients: Vec<&mut Client>) {
    join_all(clients.into_iter().map(|c| c.none_of("task:assigned", QUIET))).await;
}

// ---------------------------------------------------------------------------------------------
// the cases, run on one instance of each database
// ---------------------------------------------------------------------------------------------

async fn start(db: TestDatabase) -> Pulse {
    Pulse::start(db).await.expect("starting the server")
}

/// Creates a task, an approval and a conversation, and waits until `control` (a socket with
/// the default topics) has the new values, so that the server's values are up to date.
/// Returns the conversation's id.
async fn seed(admin: &Api, control: &mut Client) -> i64 {
    create(admin, "/api/v1/tasks", task_body("seed", None)).await;
    create(admin, "/api/v1/approvals", approval_body()).await;
    let conversation = id_of(&create(admin, "/api/v1/conversations", conversation_body("Ada")).await);
    for topic in STATS_TOPICS {
        control.wait_stats(topic, &rest_stats(admin, topic).await).await;
    }
    conversation
}

/// `?topics=` on the URL chooses the starting subscriptions; an unknown topic there is
/// refused with 400 before the upgrade.
async fn url_topics_choose_the_starting_subscriptions(db: TestDatabase) {
    let p = start(db).await;
    let token = p.admin.token().expect("token").to_owned();
    let mut control = Client::default(&p.server, &token, "control socket (default topics)").await;
    let conversation = seed(&p.admin, &mut control).await;

    // Only stats:approvals: its value, nothing else.
    let (mut approvals_only, first) = Client::open(
        &p.server,
        &token,
        Some("stats:approvals"),
        "approvals-only socket",
        &["connected", "stats:approvals"],
    )
    .await;
    let expected = rest_stats(&p.admin, "stats:approvals").await;
    assert!(
        matches(&first[1]["payload"], &expected),
        "opening stats:approvals {} != REST {expected}",
        first[1]
    );
    assert!(first[1]["seq"].is_number(), "stats message without numeric seq: {}", first[1]);
    approvals_only.quiet(QUIET).await;
    assert_eq!(approvals_only.subscribe(&[]).await, ["stats:approvals"], "subscriptions from the URL");

    // A task change reaches the control socket, not this one.
    create(&p.admin, "/api/v1/tasks", task_body("second", None)).await;
    control.wait_stats("stats:tasks", &rest_stats(&p.admin, "stats:tasks").await).await;
    let conversations_before = rest_stats(&p.admin, "stats:conversations").await;
    post_empty_ok(&p.admin, &format!("/api/v1/conversations/{conversation}/resolve")).await;
    control.wait_stats("stats:conversations", &rest_stats(&p.admin, "stats:conversations").await).await;
    assert_ne!(conversations_before, rest_stats(&p.admin, "stats:conversations").await);
    approvals_only.quiet(QUIET).await;

    // An approval change does.
    create(&p.admin, "/api/v1/approvals", approval_body()).await;
    let expected = rest_stats(&p.admin, "stats:approvals").await;
    let msg = approvals_only.expect("stats:approvals").await;
    assert!(matches(&msg["payload"], &expected), "stats:approvals {msg} != REST {expected}");
    assert!(msg["seq"].as_f64() > first[1]["seq"].as_f64(), "seq did not grow: {} then {msg}", first[1]);
    approvals_only.quiet(QUIET).await;

    // Several topics, in any order on the URL: stats values in contract order, then presence.
    let (mut several, first) = Client::open(
        &p.server,
        &token,
        Some("presence,stats:conversations,stats:tasks"),
        "three-topic socket",
        &["connected", "stats:tasks", "stats:conversations", "presence"],
    )
    .await;
    for msg in &first[1..3] {
        let topic = type_of(msg);
        let expected = rest_stats(&p.admin, topic).await;
        assert!(matches(&msg["payload"], &expected), "opening {topic} {msg} != REST {expected}");
    }
    online(&first[3]);
    // The presence may be republished once it counts this very socket.
    several
        .wait_presence(WAIT, |m| {
            entry(m, ADMIN_USERNAME).is_some_and(|e| e["connections"] == 3 && e["userId"] == p.admin_id())
        })
        .await;
    let ack = several.subscribe(&[]).await;
    assert_eq!(ack, ["stats:tasks", "stats:conversations", "presence"], "subscriptions from the URL");

    // A conversation topic only: no stats at all.
    let url_topics = format!("conversation:{conversation}");
    let (mut typing_only, _) =
        Client::open(&p.server, &token, Some(&url_topics), "conversation-only socket", &["connected"]).await;
    assert_eq!(typing_only.subscribe(&[]).await, [url_topics.as_str()]);
    create(&p.admin, "/api/v1/tasks", task_body("third", None)).await;
    create(&p.admin, "/api/v1/approvals", approval_body()).await;
    create(&p.admin, "/api/v1/conversations", conversation_body("Bob")).await;
    control.wait_stats("stats:tasks", &rest_stats(&p.admin, "stats:tasks").await).await;
    control.wait_stats("stats:approvals", &rest_stats(&p.admin, "stats:approvals").await).await;
    control.wait_stats("stats:conversations", &rest_stats(&p.admin, "stats:conversations").await).await;
    typing_only.quiet(QUIET).await;
    let msgs = approvals_only.drain(QUIET).await;
    assert_eq!(types(&msgs), ["stats:approvals"], "approvals-only socket after three changes: {msgs:?}");

    // Unknown topics on the URL: 400 before the upgrade, with a JSON error.
    for bad in [
        "bogus",
        "stats:tasks,bogus",
        "stats:everything",
        "Stats:tasks",
        "conversation:abc",
        "conversation:",
        "conversations:1",
        "presence:1",
    ] {
        let err = match connect(&topics_url(&p.server, &token, bad)).await {
            Ok(_) => panic!("?topics={bad}: WebSocket upgrade accepted, expected HTTP 400"),
            Err(e) => e,
        };
        assert_eq!(refused_status(&err), Some(400), "?topics={bad}: expected HTTP 400, got {err:?}");
        let body = refused_body(&err).unwrap_or_default();
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("?topics={bad}: 400 body is not JSON ({e}): {body:?}"));
        assert!(
            json["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                && json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "?topics={bad}: 400 body is not {{\"error\": {{\"code\", \"message\"}}}}: {body}"
        );
    }
    // A bad token with good topics is still 401.
    let err = match connect(&topics_url(&p.server, "garbage", "stats:tasks")).await {
        Ok(_) => panic!("bad token with ?topics=: upgrade accepted"),
        Err(e) => e,
    };
    assert_eq!(refused_status(&err), Some(401), "bad token with ?topics=: {err:?}");

    // The refused upgrades changed nothing for the open sockets.
    tokio::join!(control.quiet(QUIET), typing_only.quiet(QUIET), approvals_only.quiet(QUIET));
    approvals_only.ping().await;
}

/// `subscribe` / `unsubscribe` acknowledgements, current values on subscribe, `unknown_topic`
/// errors that change nothing.
async fn subscribe_and_unsubscribe(db: TestDatabase) {
    let p = start(db).await;
    let token = p.admin.token().expect("token").to_owned();
    let mut control = Client::default(&p.server, &token, "control socket").await;
    let conversation = seed(&p.admin, &mut control).await;
    let conv_topic = format!("conversation:{conversation}");
    let (mut ws, _) =
        Client::open(&p.server, &token, Some("stats:tasks"), "socket", &["connected", "stats:tasks"]).await;

    // Subscribing a stats topic: the acknowledgement, then its current value at once.
    let ack = ws.subscribe(&["stats:conversations"]).await;
    assert_eq!(ack, ["stats:tasks", "stats:conversations"]);
    let msg = ws.expect("stats:conversations").await;
    let expected = rest_stats(&p.admin, "stats:conversations").await;
    assert!(matches(&msg["payload"], &expected), "stats:conversations after subscribe {msg} != {expected}");
    ws.quiet(QUIET).await;

    // An unknown topic in a subscribe refuses the whole message.
    ws.refused_topics("subscribe", &["stats:approvals", "bogus"]).await;
    ws.refused_topics("subscribe", &["conversation:nope"]).await;
    ws.quiet(QUIET).await;
    create(&p.admin, "/api/v1/approvals", approval_body()).await;
    create(&p.admin, "/api/v1/tasks", task_body("after refused subscribe", None)).await;
    control.wait_stats("stats:approvals", &rest_stats(&p.admin, "stats:approvals").await).await;
    let tasks = rest_stats(&p.admin, "stats:tasks").await;
    control.wait_stats("stats:tasks", &tasks).await;
    let got = ws.wait_stats("stats:tasks", &tasks).await;
    let late = ws.none_of("stats:approvals", QUIET).await;
    assert!(
        late.iter().all(|m| type_of(m) == "stats:tasks"),
        "unexpected messages after a refused subscribe: {got} then {late:?}"
    );
    assert_eq!(ws.subscribe(&[]).await, ["stats:tasks", "stats:conversations"], "after a refused subscribe");

    // An unknown topic in an unsubscribe refuses the whole message too.
    ws.refused_topics("unsubscribe", &["stats:tasks", "nope:1"]).await;
    create(&p.admin, "/api/v1/tasks", task_body("after refused unsubscribe", None)).await;
    ws.wait_stats("stats:tasks", &rest_stats(&p.admin, "stats:tasks").await).await;
    assert_eq!(
        ws.subscribe(&[]).await,
        ["stats:tasks", "stats:conversations"],
        "after a refused unsubscribe"
    );

    // Several at once, listed in the canonical order; values of the new stats topic, then presence.
    let ack = ws.subscribe(&["presence", &conv_topic, "stats:approvals"]).await;
    assert_eq!(
        ack,
        strings(&["stats:tasks", "stats:approvals", "stats:conversations", "presence", &conv_topic])
    );
    let msg = ws.expect("stats:approvals").await;
    let expected = rest_stats(&p.admin, "stats:approvals").await;
    assert!(matches(&msg["payload"], &expected), "stats:approvals after subscribe {msg} != {expected}");
    let presence = ws.expect("presence").await;
    let admin = entry(&presence, ADMIN_USERNAME)
        .unwrap_or_else(|| panic!("the admin (2 sockets) is not in presence: {presence}"));
    assert_eq!(admin["connections"], 2, "{presence}");
    ws.quiet(QUIET).await;

    // Subscribing again what is already subscribed changes nothing (an equal value may come).
    let ack = ws.subscribe(&["stats:tasks"]).await;
    assert_eq!(
        ack,
        strings(&["stats:tasks", "stats:approvals", "stats:conversations", "presence", &conv_topic])
    );
    let tasks = rest_stats(&p.admin, "stats:tasks").await;
    for m in ws.drain(QUIET).await {
        assert!(
            type_of(&m) == "stats:tasks" && matches(&m["payload"], &tasks),
            "after re-subscribing stats:tasks: {m}"
        );
    }

    // Unsubscribing: acknowledged, no value, and that topic stops.
    let ack = ws.unsubscribe(&["stats:tasks"]).await;
    assert_eq!(ack, strings(&["stats:approvals", "stats:conversations", "presence", &conv_topic]));
    ws.quiet(QUIET).await;
    create(&p.admin, "/api/v1/tasks", task_body("unseen", None)).await;
    control.wait_stats("stats:tasks", &rest_stats(&p.admin, "stats:tasks").await).await;
    ws.quiet(QUIET).await;
    create(&p.admin, "/api/v1/conversations", conversation_body("Bob")).await;
    ws.wait_stats("stats:conversations", &rest_stats(&p.admin, "stats:conversations").await).await;
    ws.none_of("stats:tasks", QUIET).await;

    // Unsubscribing what is not subscribed is no error.
    let ack = ws.unsubscribe(&["stats:tasks"]).await;
    assert_eq!(ack, strings(&["stats:approvals", "stats:conversations", "presence", &conv_topic]));

    // Unsubscribing presence stops presence.
    let ack = ws.unsubscribe(&["presence"]).await;
    assert_eq!(ack, strings(&["stats:approvals", "stats:conversations", &conv_topic]));
    let (mut watcher, _) =
        Client::open(&p.server, &token, Some("presence"), "presence socket", &["connected", "presence"])
            .await;
    watcher.wait_presence(WAIT, |m| entry(m, ADMIN_USERNAME).is_some_and(|e| e["connections"] == 3)).await;
    let extra = Client::default(&p.server, &token, "short-lived socket").await;
    watcher.wait_presence(WAIT, |m| entry(m, ADMIN_USERNAME).is_some_and(|e| e["connections"] == 4)).await;
    extra.close().await;
    watcher.wait_presence(WAIT, |m| entry(m, ADMIN_USERNAME).is_some_and(|e| e["connections"] == 3)).await;
    ws.quiet(QUIET).await;

    // Unsubscribing everything: an empty list, and nothing more arrives.
    let ack = ws.unsubscribe(&["stats:approvals", "stats:conversations", &conv_topic]).await;
    assert!(ack.is_empty(), "after unsubscribing everything: {ack:?}");
    create(&p.admin, "/api/v1/approvals", approval_body()).await;
    create(&p.admin, "/api/v1/conversations", conversation_body("Cy")).await;
    control.wait_stats("stats:approvals", &rest_stats(&p.admin, "stats:approvals").await).await;
    control.wait_stats("stats:conversations", &rest_stats(&p.admin, "stats:conversations").await).await;
    ws.quiet(QUIET).await;
    ws.ping().await;

    // Subscribing again gives the value that changed meanwhile.
    let ack = ws.subscribe(&["stats:tasks", "stats:approvals"]).await;
    assert_eq!(ack, ["stats:tasks", "stats:approvals"]);
    let first = ws.expect("stats:tasks").await;
    let second = ws.expect("stats:approvals").await;
    let tasks = rest_stats(&p.admin, "stats:tasks").await;
    let approvals = rest_stats(&p.admin, "stats:approvals").await;
    assert!(matches(&first["payload"], &tasks), "stats:tasks after re-subscribing {first} != {tasks}");
    assert!(matches(&second["payload"], &approvals), "stats:approvals after re-subscribing {second}");
    ws.quiet(QUIET).await;
}

/// A stats value sent on subscribe (or on connect with `?topics=`) right after a change
/// committed (its REST answer received) is the new value, not the one before the change.
async fn stats_sent_on_subscribe_include_a_change_just_made(db: TestDatabase) {
    let p = start(db).await;
    let token = p.admin.token().expect("token").to_owned();
    let (mut ws, _) =
        Client::open(&p.server, &token, Some("stats:tasks"), "socket", &["connected", "stats:tasks"]).await;
    for round in 1..=10 {
        create(&p.admin, "/api/v1/conversations", conversation_body(&format!("Guest {round}"))).await;
        let ack = ws.subscribe(&["stats:conversations"]).await;
        assert_eq!(ack, ["stats:tasks", "stats:conversations"]);
        let msg = ws.expect("stats:conversations").await;
        let expected = json!({"active": round, "escalated": 0, "resolved": 0, "total": round});
        assert_eq!(rest_stats(&p.admin, "stats:conversations").await, expected);
        if !matches(&msg["payload"], &expected) {
            let later = ws.drain(Duration::from_millis(300)).await;
            panic!(
                "round {round}: subscribed stats:conversations right after creating a conversation \
                 (201 received) and got {msg}, not the REST value {expected}; then {later:?}"
            );
        }
        assert_eq!(ws.unsubscribe(&["stats:conversations"]).await, ["stats:tasks"]);

        create(&p.admin, "/api/v1/approvals", approval_body()).await;
        let (mut fresh, first) = Client::open(
            &p.server,
            &token,
            Some("stats:approvals"),
            "fresh socket",
            &["connected", "stats:approvals"],
        )
        .await;
        let expected = json!({"pending": round, "approved": 0, "rejected": 0, "executed": 0, "total": round});
        if !matches(&first[1]["payload"], &expected) {
            let later = fresh.drain(Duration::from_millis(300)).await;
            panic!(
                "round {round}: connected with ?topics=stats:approvals right after creating an \
                 approval (201 received) and got {}, not the REST value {expected}; then {later:?}",
                first[1]
            );
        }
        fresh.close().await;
    }
}

/// `task:assigned` reaches every connection of the assignee, whatever it subscribed to, and
/// nobody else.
async fn task_assigned_goes_to_the_assignee_only(db: TestDatabase) {
    let p = start(db).await;
    let token = p.admin.token().expect("token").to_owned();
    let (bea, _) = p.user("bea", "staff").await.expect("user bea");
    let (carl, _) = p.user("carl", "staff").await.expect("user carl");
    let bea_token = bea.token().expect("token").to_owned();
    let mut a = Client::default(&p.server, &token, "admin socket").await;
    let mut b1 = Client::default(&p.server, &bea_token, "bea socket 1 (default topics)").await;
    let (mut b2, _) = Client::open(
        &p.server,
        &bea_token,
        Some("presence"),
        "bea socket 2 (presence)",
        &["connected", "presence"],
    )
    .await;
    let mut b3 = Client::default(&p.server, &bea_token, "bea socket 3 (nothing)").await;
    assert!(b3.unsubscribe(&STATS_TOPICS).await.is_empty());
    let mut c = Client::default(&p.server, carl.token().expect("token"), "carl socket").await;

    // An unassigned task: nobody.
    let t1 = create(&p.admin, "/api/v1/tasks", task_body("unassigned", None)).await;
    expect_no_assigned(vec![&mut a, &mut b1, &mut b2, &mut b3, &mut c]).await;

    // Assigning to bea: her three sockets, each once.
    let assigned =
        post_ok(&p.admin, &format!("/api/v1/tasks/{}/assign", id_of(&t1)), &json!({"assignee": "bea"})).await;
    assert_eq!(assigned["assignee"], "bea");
    assert_eq!(assigned["status"], "in_progress");
    tokio::join!(
        expect_assigned(vec![&mut b1, &mut b2, &mut b3], &assigned),
        expect_no_assigned(vec![&mut a, &mut c]),
    );

    // Creating a task with bea as assignee.
    let t2 = create(&p.admin, "/api/v1/tasks", task_body("created for bea", Some("bea"))).await;
    assert_eq!(t2["status"], "in_progress");
    assert_eq!(get_ok(&p.admin, &format!("/api/v1/tasks/{}", id_of(&t2))).await, t2);
    tokio::join!(
        expect_assigned(vec![&mut b1, &mut b2, &mut b3], &t2),
        expect_no_assigned(vec![&mut a, &mut c]),
    );

    // Re-assigning bea's task to carl: carl only.
    let moved =
        post_ok(&bea, &format!("/api/v1/tasks/{}/assign", id_of(&t2)), &json!({"assignee": "carl"})).await;
    tokio::join!(
        expect_assigned(vec![&mut c], &moved),
        expect_no_assigned(vec![&mut a, &mut b1, &mut b2, &mut b3]),
    );

    // Completing, and refused assignments, send nothing personal.
    post_empty_ok(&carl, &format!("/api/v1/tasks/{}/complete", id_of(&t2))).await;
    let resp = p
        .admin
        .post(&format!("/api/v1/tasks/{}/assign", id_of(&t2)), &json!({"assignee": "bea"}))
        .await
        .expect("request");
    resp.expect_error(409, &["conflict"]);
    let resp = p.admin.post("/api/v1/tasks", &task_body("ghost", Some("ghost"))).await.expect("request");
    assert_eq!(resp.status, 400, "assignee that does not exist: {}", resp.text);
    expect_no_assigned(vec![&mut a, &mut b1, &mut b2, &mut b3, &mut c]).await;

    // The admin gets its own.
    let mine = create(&p.admin, "/api/v1/tasks", task_body("for the admin", Some(ADMIN_USERNAME))).await;
    tokio::join!(
        expect_assigned(vec![&mut a], &mine),
        expect_no_assigned(vec![&mut b1, &mut b2, &mut b3, &mut c]),
    );
}

/// Presence: who is online, with how many connections and what they view.
async fn presence_tracks_connections_and_viewing(db: TestDatabase) {
    let p = start(db).await;
    let token = p.admin.token().expect("token").to_owned();
    let (bea, bea_user) = p.user("bea", "staff").await.expect("user bea");
    let (carl, carl_user) = p.user("carl", "staff").await.expect("user carl");
    let bea_token = bea.token().expect("token").to_owned();

    let mut a = Client::default(&p.server, &token, "admin socket").await;
    let ack = a.subscribe(&["presence"]).await;
    assert_eq!(ack, strings(&["stats:tasks", "stats:approvals", "stats:conversations", "presence"]));
    let first = a.expect("presence").await;
    online(&first);
    let msg = a
        .wait_presence(WAIT, |m| {
            online(m).len() == 1 && entry(m, ADMIN_USERNAME).is_some_and(|e| e["connections"] == 1)
        })
        .await;
    let admin_entry = entry(&msg, ADMIN_USERNAME).expect("admin entry");
    assert_eq!(admin_entry["userId"], p.admin_id(), "{msg}");
    assert_eq!(admin_entry["viewing"], Value::Null, "the admin has not said what it views: {msg}");

    // A socket that did not subscribe presence never gets it.
    let mut no_presence = Client::default(&p.server, &token, "admin socket without presence").await;

    // carl, then bea twice (sorted by username, not by arrival).
    let mut c = Client::default(&p.server, carl.token().expect("token"), "carl socket").await;
    a.wait_presence(WAIT, |m| entry(m, "carl").is_some_and(|e| e["connections"] == 1)).await;
    let mut b1 = Client::default(&p.server, &bea_token, "bea socket 1").await;
    let b2 = Client::default(&p.server, &bea_token, "bea socket 2").await;
    b1.viewing("/tasks").await;
    let msg = a
        .wait_presence(WAIT, |m| {
            entry(m, "bea").is_some_and(|e| e["connections"] == 2 && e["viewing"] == "/tasks")
        })
        .await;
    let names: Vec<Value> = online(&msg).iter().map(|e| e["username"].clone()).collect();
    assert_eq!(names, [json!(ADMIN_USERNAME), json!("bea"), json!("carl")], "{msg}");
    assert_eq!(
        entry(&msg, "bea").expect("bea"),
        json!({"userId": bea_user["id"], "username": "bea", "connections": 2, "viewing": "/tasks"}),
        "{msg}"
    );
    assert_eq!(
        entry(&msg, "carl").expect("carl"),
        json!({"userId": carl_user["id"], "username": "carl", "connections": 1, "viewing": null}),
        "{msg}"
    );
    assert_eq!(entry(&msg, ADMIN_USERNAME).expect("admin")["connections"], 2, "{msg}");

    // A change of view.
    c.viewing("/approvals").await;
    a.wait_presence(WAIT, |m| entry(m, "carl").is_some_and(|e| e["viewing"] == "/approvals")).await;
    // The same view again is no change: presence stays quiet.
    c.viewing("/approvals").await;
    c.ping().await;
    a.quiet(QUIET).await;

    // bea closes one socket, then the other.
    b2.close().await;
    let msg = a.wait_presence(WAIT, |m| entry(m, "bea").is_some_and(|e| e["connections"] == 1)).await;
    assert_eq!(entry(&msg, "bea").expect("bea")["viewing"], "/tasks", "{msg}");
    b1.close().await;
    let msg = a.wait_presence(WAIT, |m| entry(m, "bea").is_none()).await;
    let names: Vec<Value> = online(&msg).iter().map(|e| e["username"].clone()).collect();
    assert_eq!(names, [json!(ADMIN_USERNAME), json!("carl")], "{msg}");

    // Unsubscribed: no more presence (carl leaving is not sent).
    assert_eq!(a.unsubscribe(&["presence"]).await, STATS_TOPICS);
    c.close().await;
    let (mut watcher, _) =
        Client::open(&p.server, &token, Some("presence"), "presence socket", &["connected", "presence"])
            .await;
    watcher.wait_presence(WAIT, |m| entry(m, "carl").is_none()).await;
    tokio::join!(a.quiet(QUIET), no_presence.quiet(QUIET));
}

/// Typing is relayed to the other subscribers of the conversation, on change only, and
/// expires 6 s after the last `typing: true`.
async fn typing_is_relayed_to_the_conversation_subscribers(db: TestDatabase) {
    let p = start(db).await;
    let token = p.admin.token().expect("token").to_owned();
    let (bea, bea_user) = p.user("bea", "staff").await.expect("user bea");
    let (carl, _) = p.user("carl", "staff").await.expect("user carl");
    let (dora, dora_user) = p.user("dora", "staff").await.expect("user dora");
    let n = id_of(&create(&p.admin, "/api/v1/conversations", conversation_body("Ada")).await);
    let m = id_of(&create(&p.admin, "/api/v1/conversations", conversation_body("Bob")).await);
    let topic_n = format!("conversation:{n}");
    let topic_m = format!("conversation:{m}");

    let (mut a, _) = Client::open(&p.server, &token, Some(&topic_n), "admin socket", &["connected"]).await;
    // (stats:tasks only: no task changes here, so no stats message can come between.)
    let (mut c, _) = Client::open(
        &p.server,
        carl.token().expect("token"),
        Some("stats:tasks"),
        "carl socket",
        &["connected", "stats:tasks"],
    )
    .await;
    assert_eq!(c.subscribe(&[&topic_n]).await, strings(&["stats:tasks", &topic_n]));
    let (mut b, _) =
        Client::open(&p.server, bea.token().expect("token"), Some(&topic_n), "bea socket", &["connected"])
            .await;
    let (mut d, _) =
        Client::open(&p.server, dora.token().expect("token"), Some(&topic_m), "dora socket", &["connected"])
            .await;

    // bea types: admin and carl see it, bea and dora do not.
    b.send(&typing_msg(n, true)).await;
    let want = typing_payload(n, &bea_user, true);
    for client in [&mut a, &mut c] {
        let msg = client.wait_for("typing", WAIT, |_| true).await;
        assert_eq!(msg["payload"], want, "{}: {msg}", client.name);
    }
    // A refresh within 6 s is no change.
    b.send(&typing_msg(n, true)).await;
    tokio::join!(a.none_of("typing", QUIET), c.none_of("typing", QUIET), b.quiet(QUIET), d.quiet(QUIET));

    // Stopping is relayed once.
    b.send(&typing_msg(n, false)).await;
    let want = typing_payload(n, &bea_user, false);
    for client in [&mut a, &mut c] {
        let msg = client.wait_for("typing", WAIT, |_| true).await;
        assert_eq!(msg["payload"], want, "{}: {msg}", client.name);
    }
    b.send(&typing_msg(n, false)).await;
    tokio::join!(a.none_of("typing", QUIET), c.none_of("typing", QUIET), b.quiet(QUIET), d.quiet(QUIET));

    // Typing in the other conversation reaches dora only (bea is not subscribed to it, and
    // need not be to type).
    b.send(&typing_msg(m, true)).await;
    let msg = d.wait_for("typing", WAIT, |_| true).await;
    assert_eq!(msg["payload"], typing_payload(m, &bea_user, true), "{msg}");
    b.send(&typing_msg(m, false)).await;
    let msg = d.wait_for("typing", WAIT, |_| true).await;
    assert_eq!(msg["payload"], typing_payload(m, &bea_user, false), "{msg}");
    tokio::join!(a.none_of("typing", QUIET), c.none_of("typing", QUIET), b.quiet(QUIET));

    // dora types in n without being subscribed to it: n's subscribers, bea included, see it.
    d.send(&typing_msg(n, true)).await;
    for client in [&mut a, &mut b, &mut c] {
        let msg = client.wait_for("typing", WAIT, |_| true).await;
        assert_eq!(msg["payload"], typing_payload(n, &dora_user, true), "{}: {msg}", client.name);
    }
    d.send(&typing_msg(n, false)).await;
    for client in [&mut a, &mut b, &mut c] {
        let msg = client.wait_for("typing", WAIT, |_| true).await;
        assert_eq!(msg["payload"], typing_payload(n, &dora_user, false), "{}: {msg}", client.name);
    }

    // An unsubscribed socket stops getting typing.
    assert_eq!(a.unsubscribe(&[&topic_n]).await, Vec::<String>::new());

    // Expiry: true, refreshed 2 s later, then silence: false 5–8 s after the refresh (so not
    // 6 s after the first true), to carl only.
    b.send(&typing_msg(n, true)).await;
    let msg = c.wait_for("typing", WAIT, |_| true).await;
    assert_eq!(msg["payload"], typing_payload(n, &bea_user, true), "{msg}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.send(&typing_msg(n, true)).await;
    let refreshed = Instant::now();
    let msg = c.wait_for("typing", Duration::from_secs(9), |_| true).await;
    let after = refreshed.elapsed();
    assert_eq!(msg["payload"], typing_payload(n, &bea_user, false), "{msg}");
    assert!(
        (Duration::from_secs(5)..=Duration::from_secs(8)).contains(&after),
        "typing: false came {after:?} after the last typing: true (expected 5–8 s)"
    );
    tokio::join!(a.quiet(QUIET), b.none_of("typing", QUIET), c.none_of("typing", QUIET), d.quiet(QUIET));
}

suites::both_databases!(
    url_topics_choose_the_starting_subscriptions,
    subscribe_and_unsubscribe,
    stats_sent_on_subscribe_include_a_change_just_made,
    task_assigned_goes_to_the_assignee_only,
    presence_tracks_connections_and_viewing,
    typing_is_relayed_to_the_conversation_subscribers,
);

// ---------------------------------------------------------------------------------------------
// several instances on one PostgreSQL database
// ---------------------------------------------------------------------------------------------

/// Test names sort before `postgres::` and `sqlite::`, and the longest (`killed_…`) first, so
/// that it overlaps with the others.
mod cluster {
    use suites::Cluster;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_instance_users_leave_presence_within_45_s() {
        let mut c = Cluster::start(3).await.expect("starting the instances");
        let token = c.admin_token().to_owned();
        let (bea, _) = c.user("bea", "staff", 2).await.expect("creating a user");
        let (carl, _) = c.user("carl", "staff", 1).await.expect("creating a user");
        let (mut a0, _) =
            Client::open(&c.servers[0], &token, Some("presence"), "admin on 0", &["connected", "presence"])
                .await;
        let (mut a1, _) =
            Client::open(&c.servers[1], &token, Some("presence"), "admin on 1", &["connected", "presence"])
                .await;
        let _carl = Client::default(&c.servers[1], carl.token().expect("token"), "carl on 1").await;
        let mut b = Client::default(&c.servers[2], bea.token().expect("token"), "bea on 2").await;
        b.viewing("/conversations").await;
        let everyone = |m: &Value| {
            entry(m, "bea").is_some_and(|e| e["connections"] == 1 && e["viewing"] == "/conversations")
                && entry(m, "carl").is_some()
                && entry(m, ADMIN_USERNAME).is_some_and(|e| e["connections"] == 2)
        };
        join_all([&mut a0, &mut a1].map(|w| w.wait_presence(WAIT, everyone))).await;

        c.servers[2].kill().await.expect("kill -9 of instance 2");
        let killed = Instant::now();
        let limit = Duration::from_secs(45);
        let gone = join_all([&mut a0, &mut a1].map(|w| async move {
            let msg = w.wait_presence(limit, |m| entry(m, "bea").is_none()).await;
            (w.name.clone(), killed.elapsed(), msg)
        }))
        .await;
        for (name, after, msg) in gone {
            eprintln!("{name}: bea left presence {after:?} after the SIGKILL of her instance");
            assert!(after <= limit, "{name}: bea left presence only after {after:?}");
            assert!(entry(&msg, "carl").is_some(), "{name}: carl (instance 1) left too: {msg}");
            assert_eq!(
                entry(&msg, ADMIN_USERNAME).map(|e| e["connections"].clone()),
                Some(json!(2)),
                "{msg}"
            );
        }
        b.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn presence_across_instances_and_graceful_stop() {
        let mut c = Cluster::start(3).await.expect("starting the instances");
        let token = c.admin_token().to_owned();
        let (bea, bea_user) = c.user("bea", "staff", 1).await.expect("creating a user");
        let (carl, _) = c.user("carl", "staff", 2).await.expect("creating a user");
        let bea_token = bea.token().expect("token").to_owned();
        let (mut a, _) =
            Client::open(&c.servers[0], &token, Some("presence"), "admin on 0", &["connected", "presence"])
                .await;
        a.wait_presence(WAIT, |m| online(m).len() == 1 && entry(m, ADMIN_USERNAME).is_some()).await;

        // bea on instance 1, and on instance 2 where she views /tasks: one entry, 2 connections.
        let b1 = Client::default(&c.servers[1], &bea_token, "bea on 1").await;
        let mut b2 = Client::default(&c.servers[2], &bea_token, "bea on 2").await;
        b2.viewing("/tasks").await;
        let msg = a
            .wait_presence(WAIT, |m| {
                entry(m, "bea").is_some_and(|e| e["connections"] == 2 && e["viewing"] == "/tasks")
            })
            .await;
        assert_eq!(
            entry(&msg, "bea").expect("bea"),
            json!({"userId": bea_user["id"], "username": "bea", "connections": 2, "viewing": "/tasks"}),
            "{msg}"
        );
        let _carl = Client::default(&c.servers[2], carl.token().expect("token"), "carl on 2").await;
        let msg = a.wait_presence(WAIT, |m| entry(m, "carl").is_some()).await;
        let names: Vec<Value> = online(&msg).iter().map(|e| e["username"].clone()).collect();
        assert_eq!(names, [json!(ADMIN_USERNAME), json!("bea"), json!("carl")], "{msg}");

        // bea leaves instance 2: one connection left, on instance 1.
        b2.close().await;
        a.wait_presence(WAIT, |m| entry(m, "bea").is_some_and(|e| e["connections"] == 1)).await;
        // A subscriber on instance 2 sees the same.
        let (mut on2, _) =
            Client::open(&c.servers[2], &token, Some("presence"), "admin on 2", &["connected", "presence"])
                .await;
        on2.wait_presence(WAIT, |m| {
            entry(m, "bea").is_some_and(|e| e["connections"] == 1)
                && entry(m, "carl").is_some()
                && entry(m, ADMIN_USERNAME).is_some_and(|e| e["connections"] == 2)
        })
        .await;

        // Instance 1 stops gracefully: bea (only there) leaves everyone's presence quickly.
        let stopping = Instant::now();
        let stopped = c.servers[1].stop_graceful().await.expect("SIGTERM of instance 1");
        assert!(stopped.success(), "instance 1 exit status after SIGTERM: {stopped}");
        let limit = Duration::from_secs(5);
        let left = limit.saturating_sub(stopping.elapsed());
        let (msg_a, msg_2) = tokio::join!(
            a.wait_presence(left, |m| entry(m, "bea").is_none()),
            on2.wait_presence(left, |m| entry(m, "bea").is_none()),
        );
        let after = stopping.elapsed();
        eprintln!("bea left presence {after:?} after the SIGTERM of her instance");
        assert!(after <= limit, "bea left presence {after:?} after the SIGTERM");
        for msg in [msg_a, msg_2] {
            assert!(entry(&msg, "carl").is_some(), "carl (instance 2) left too: {msg}");
        }
        drop(b1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn task_assigned_reaches_the_assignee_on_every_instance() {
        let c = Cluster::start(3).await.expect("starting the instances");
        let token = c.admin_token().to_owned();
        let (bea, _) = c.user("bea", "staff", 2).await.expect("creating a user");
        let (carl, _) = c.user("carl", "staff", 1).await.expect("creating a user");
        let bea_token = bea.token().expect("token").to_owned();
        let mut a = Client::default(&c.servers[0], &token, "admin on 0").await;
        let mut b1 = Client::default(&c.servers[1], &bea_token, "bea on 1").await;
        let (mut b2, _) =
            Client::open(&c.servers[2], &bea_token, Some("presence"), "bea on 2", &["connected", "presence"])
                .await;
        let mut b2b = Client::default(&c.servers[2], &bea_token, "bea on 2 (second)").await;
        let mut cl = Client::default(&c.servers[1], carl.token().expect("token"), "carl on 1").await;

        // Assignment through instance 0.
        let t = create(&c.admins[0], "/api/v1/tasks", task_body("to assign", None)).await;
        let assigned = post_ok(
            &c.admins[0],
            &format!("/api/v1/tasks/{}/assign", id_of(&t)),
            &json!({"assignee": "bea"}),
        )
        .await;
        tokio::join!(
            expect_assigned(vec![&mut b1, &mut b2, &mut b2b], &assigned),
            expect_no_assigned(vec![&mut a, &mut cl]),
        );

        // Creation with an assignee through instance 1.
        let created = create(&c.admins[1], "/api/v1/tasks", task_body("created for bea", Some("bea"))).await;
        tokio::join!(
            expect_assigned(vec![&mut b1, &mut b2, &mut b2b], &created),
            expect_no_assigned(vec![&mut a, &mut cl]),
        );

        // Re-assignment to carl through instance 2, by bea.
        let moved =
            post_ok(&bea, &format!("/api/v1/tasks/{}/assign", id_of(&created)), &json!({"assignee": "carl"}))
                .await;
        tokio::join!(
            expect_assigned(vec![&mut cl], &moved),
            expect_no_assigned(vec![&mut a, &mut b1, &mut b2, &mut b2b]),
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn typing_across_instances() {
        let c = Cluster::start(3).await.expect("starting the instances");
        let token = c.admin_token().to_owned();
        let (bea, bea_user) = c.user("bea", "staff", 2).await.expect("creating a user");
        let (carl, _) = c.user("carl", "staff", 1).await.expect("creating a user");
        let (dora, _) = c.user("dora", "staff", 1).await.expect("creating a user");
        let n = id_of(&create(&c.admins[0], "/api/v1/conversations", conversation_body("Ada")).await);
        let m = id_of(&create(&c.admins[1], "/api/v1/conversations", conversation_body("Bob")).await);
        let topic_n = format!("conversation:{n}");
        let topic_m = format!("conversation:{m}");
        let admin_user = json!({"id": c.admins[0].get("/api/v1/me").await.expect("me").json["id"], "username": ADMIN_USERNAME});

        let (mut a, _) =
            Client::open(&c.servers[0], &token, Some(&topic_n), "admin on 0", &["connected"]).await;
        let (mut cl, _) = Client::open(
            &c.servers[1],
            carl.token().expect("token"),
            Some(&topic_n),
            "carl on 1",
            &["connected"],
        )
        .await;
        let (mut d, _) = Client::open(
            &c.servers[1],
            dora.token().expect("token"),
            Some(&topic_m),
            "dora on 1",
            &["connected"],
        )
        .await;
        let (mut b, _) = Client::open(
            &c.servers[2],
            bea.token().expect("token"),
            Some(&topic_n),
            "bea on 2",
            &["connected"],
        )
        .await;

        // bea types on instance 2: instances 0 and 1 relay it.
        for typing in [true, false] {
            b.send(&typing_msg(n, typing)).await;
            let want = typing_payload(n, &bea_user, typing);
            let (ma, mc) =
                tokio::join!(a.wait_for("typing", WAIT, |_| true), cl.wait_for("typing", WAIT, |_| true));
            assert_eq!(ma["payload"], want, "admin on 0: {ma}");
            assert_eq!(mc["payload"], want, "carl on 1: {mc}");
            tokio::join!(
                a.none_of("typing", QUIET),
                cl.none_of("typing", QUIET),
                b.quiet(QUIET),
                d.quiet(QUIET)
            );
        }

        // The admin types on instance 0: bea (2) and carl (1) see it.
        a.send(&typing_msg(n, true)).await;
        let typed = Instant::now();
        let want = typing_payload(n, &admin_user, true);
        let (mb, mc) =
            tokio::join!(b.wait_for("typing", WAIT, |_| true), cl.wait_for("typing", WAIT, |_| true));
        assert_eq!(mb["payload"], want, "bea on 2: {mb}");
        assert_eq!(mc["payload"], want, "carl on 1: {mc}");

        // Not refreshed: every instance relays typing: false 5–8 s later.
        let want = typing_payload(n, &admin_user, false);
        let limit = Duration::from_secs(9);
        let (mb, mc) =
            tokio::join!(b.wait_for("typing", limit, |_| true), cl.wait_for("typing", limit, |_| true));
        let after = typed.elapsed();
        assert_eq!(mb["payload"], want, "bea on 2: {mb}");
        assert_eq!(mc["payload"], want, "carl on 1: {mc}");
        assert!(
            (Duration::from_secs(5)..=Duration::from_secs(8)).contains(&after),
            "typing: false came {after:?} after typing: true (expected 5–8 s)"
        );
        tokio::join!(a.none_of("typing", QUIET), d.quiet(QUIET), cl.none_of("typing", QUIET));
    }
}
