//! The hub: the latest frame of every stats topic, shared by all connections.
//!
//! Each topic is a [`watch`] channel holding the newest serialized value, so a broadcast
//! is serialized once, cloning it for a client costs a reference count, and a client that
//! falls behind skips straight to the newest value: per-client memory is bounded by
//! construction, whatever the rate of changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytestring::ByteString;
use serde::Serialize;
use tokio::sync::watch;

use crate::topic::{StatsTopic, StatsValue};

/// A message serialized once, shared by every recipient (cloning is a reference count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(ByteString);

impl Frame {
    /// Serializes `value` as JSON.
    pub fn json(value: &impl Serialize) -> Self {
        // Serializing plain data structures to a string cannot fail.
        Frame(ByteString::from(serde_json::to_string(value).unwrap_or_default()))
    }

    /// A frame of fixed text.
    pub fn from_static(text: &'static str) -> Self {
        Frame(ByteString::from_static(text))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text, for a transport that takes ownership.
    pub fn text(&self) -> ByteString {
        self.0.clone()
    }
}

/// The newest value of a topic, its sequence number and its serialized message.
#[derive(Debug, Clone)]
struct StatsFrame {
    value: StatsValue,
    frame: Frame,
}

#[derive(Serialize)]
struct StatsMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    payload: &'a StatsValue,
}

/// Counters for operators and benches.
#[derive(Debug, Default)]
pub struct HubMetrics {
    /// New stats values published (each one serialized once).
    pub stats_published: AtomicU64,
    /// Recomputed values equal to the last one, not sent.
    pub stats_unchanged: AtomicU64,
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections opened since start.
    pub connections_total: AtomicU64,
    /// Frames handed to client sockets.
    pub frames_sent: AtomicU64,
}

struct Inner {
    stats: [watch::Sender<Option<StatsFrame>>; 3],
    seq: [AtomicU64; 3],
    shutdown: watch::Sender<bool>,
    metrics: HubMetrics,
}

/// Fans stats values out to every connection. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// A hub with no values yet.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                stats: std::array::from_fn(|_| watch::channel(None).0),
                seq: std::array::from_fn(|_| AtomicU64::new(0)),
                shutdown: watch::channel(false).0,
                metrics: HubMetrics::default(),
            }),
        }
    }

    /// Publishes a topic's new value to every connection, unless it equals the last one.
    /// Returns whether it was sent.
    pub fn publish_stats(&self, value: StatsValue) -> bool {
        let topic = value.topic();
        let sent = self.inner.stats[topic.index()].send_if_modified(|current| {
            if current.as_ref().is_some_and(|c| c.value == value) {
                return false;
            }
            let seq = self.inner.seq[topic.index()].fetch_add(1, Ordering::Relaxed) + 1;
            let frame = Frame::json(&StatsMessage { kind: topic.name(), seq, payload: &value });
            *current = Some(StatsFrame { value, frame });
            true
        });
        let counter =
            if sent { &self.inner.metrics.stats_published } else { &self.inner.metrics.stats_unchanged };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }

    /// The newest value of `topic`, if one was published.
    pub fn current(&self, topic: StatsTopic) -> Option<StatsValue> {
        self.inner.stats[topic.index()].borrow().as_ref().map(|s| s.value)
    }

    /// A feed of every stats topic for a new connection. Subscribe before sending the
    /// snapshot: a value published in between is then delivered, not missed.
    pub fn subscribe(&self) -> ClientFeed {
        ClientFeed {
            stats: std::array::from_fn(|i| self.inner.stats[i].subscribe()),
            shutdown: self.inner.shutdown.subscribe(),
        }
    }

    /// Tells every connection to close (code 1001): the server is going away.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Whether [`Hub::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Counters.
    pub fn metrics(&self) -> &HubMetrics {
        &self.inner.metrics
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection_guard(&self) -> ConnectionGuard {
        self.inner.metrics.connections.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard { hub: self.clone() }
    }
}

/// See [`Hub::connection_guard`].
pub struct ConnectionGuard {
    hub: Hub,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.hub.inner.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection's feed yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// A topic has a new value: send this frame.
    Frame(Frame),
    /// The server is shutting down.
    Shutdown,
}

/// One connection's view of the hub.
pub struct ClientFeed {
    stats: [watch::Receiver<Option<StatsFrame>>; 3],
    shutdown: watch::Receiver<bool>,
}

impl ClientFeed {
    /// The current value of every topic, in contract order, marked as seen.
    pub fn snapshot(&mut self) -> Vec<Frame> {
        StatsTopic::ALL
            .iter()
            .filter_map(|t| self.stats[t.index()].borrow_and_update().as_ref().map(|s| s.frame.clone()))
            .collect()
    }

    /// Waits for the next topic value not yet seen (only the newest of each topic), or for
    /// shutdown. Cancel-safe.
    pub async fn next(&mut self) -> FeedEvent {
        if *self.shutdown.borrow() {
            return FeedEvent::Shutdown;
        }
        let [tasks, approvals, conversations] = &mut self.stats;
        let changed = tokio::select! {
            r = tasks.changed() => r.map(|_| 0),
            r = approvals.changed() => r.map(|_| 1),
            r = conversations.changed() => r.map(|_| 2),
            _ = self.shutdown.changed() => return FeedEvent::Shutdown,
        };
        match changed {
            Ok(i) => {
                let frame = self.stats[i].borrow_and_update().as_ref().map(|s| s.frame.clone());
                match frame {
                    Some(frame) => FeedEvent::Frame(frame),
                    None => Box::pin(self.next()).await,
                }
            }
            // The hub is gone: nothing more will come.
            Err(_) => FeedEvent::Shutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain_events::model::TaskStats;
    use serde_json::Value;

    fn tasks(pending: u64) -> StatsValue {
        StatsValue::Tasks(TaskStats { pending, in_progress: 0, completed: 0, total: pending })
    }

    fn parse(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_str()).expect("json")
    }

    #[tokio::test]
    async fn a_value_is_serialized_once_with_a_growing_seq_and_equal_values_are_skipped() {
        let hub = Hub::new();
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        assert!(hub.publish_stats(tasks(1)));
        assert!(!hub.publish_stats(tasks(1)), "equal value skipped");
        assert!(hub.publish_stats(tasks(2)));
        let (FeedEvent::Frame(fa), FeedEvent::Frame(fb)) = (a.next().await, b.next().await) else {
            panic!("frames expected")
        };
        // The same shared text: one serialization for every client.
        assert_eq!(fa.as_str().as_ptr(), fb.as_str().as_ptr());
        assert_eq!(
            parse(&fa),
            serde_json::json!({
                "type": "stats:tasks", "seq": 2,
                "payload": {"pending": 2, "inProgress": 0, "completed": 0, "total": 2}
            })
        );
        assert_eq!(hub.metrics().stats_published.load(Ordering::Relaxed), 2);
        assert_eq!(hub.metrics().stats_unchanged.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_slow_client_gets_only_the_newest_value() {
        let hub = Hub::new();
        let mut slow = hub.subscribe();
        for n in 1..=1000 {
            hub.publish_stats(tasks(n));
        }
        let FeedEvent::Frame(frame) = slow.next().await else { panic!("frame expected") };
        assert_eq!(parse(&frame)["payload"]["pending"], 1000);
        assert_eq!(parse(&frame)["seq"], 1000);
        // Nothing else is pending for it.
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(20), slow.next()).await;
        assert!(nothing.is_err());
    }

    #[tokio::test]
    async fn snapshot_lists_topics_in_contract_order_and_marks_them_seen() {
        let hub = Hub::new();
        hub.publish_stats(StatsValue::Conversations(Default::default()));
        hub.publish_stats(tasks(3));
        let mut feed = hub.subscribe();
        let types: Vec<Value> = feed.snapshot().iter().map(|f| parse(f)["type"].clone()).collect();
        assert_eq!(types, ["stats:tasks", "stats:conversations"]);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), feed.next()).await.is_err());
        hub.publish_stats(StatsValue::Approvals(Default::default()));
        let FeedEvent::Frame(frame) = feed.next().await else { panic!("frame expected") };
        assert_eq!(parse(&frame)["type"], "stats:approvals");
    }

    #[tokio::test]
    async fn shutdown_reaches_every_feed() {
        let hub = Hub::new();
        let mut feed = hub.subscribe();
        hub.shutdown();
        assert_eq!(feed.next().await, FeedEvent::Shutdown);
        assert_eq!(hub.subscribe().next().await, FeedEvent::Shutdown);
    }
}
