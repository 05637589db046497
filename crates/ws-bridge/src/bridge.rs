//! From events to fresh topic values, coalescing bursts; personal events and user changes
//! straight to the hub.
//!
//! One worker per whole-value topic waits on a [`Notify`]: an event stores a permit, so
//! however many events arrive while a recompute is in flight, they cost one more
//! recompute, not one each. The first event of a quiet period is handled at once. A value
//! that changes with time alone (its source says when) is recomputed at that moment, with
//! no event and no polling.
//!
//! Architecture invariant: knows the hub and the topics' sources; nothing of sockets or of
//! where events come from (the bus is the seam).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain_events::{BusMessage, DomainEvent, EventPublisher, EventStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::hub::Hub;
use crate::metrics::Histogram;
use crate::topic::{StatsError, TopicId};

/// After a topic's value is published, its next recompute waits at least this long: a
/// burst of thousands of changes costs at most 40 broadcasts a second per topic instead of
/// one per change, while the first change after a quiet spell still goes out at once.
pub const MIN_BROADCAST_INTERVAL: Duration = Duration::from_millis(25);

/// How long a failed recompute waits before it tries again (doubling up to the maximum).
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// Short enough that a topic is fresh within a second of the database answering again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// One topic's wake-ups.
#[derive(Default)]
struct Dirty {
    wake: Notify,
    /// When the topic was first dirtied since its last recompute began.
    since: Mutex<Option<Instant>>,
}

struct Shared {
    dirty: Vec<Dirty>,
    metrics: Arc<BridgeMetrics>,
}

impl Shared {
    fn mark_dirty(&self, topic: TopicId) {
        let dirty = &self.dirty[topic.index()];
        dirty.since.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(Instant::now);
        dirty.wake.notify_one();
    }
}

/// What the bridge counts.
#[derive(Debug, Default)]
pub struct BridgeMetrics {
    /// Recomputes run (each one source call).
    pub recomputes: AtomicU64,
    /// Recomputes that failed (and were retried).
    pub failures: AtomicU64,
    /// How long a recompute's source call took (the database's latency as the bridge sees it).
    pub recompute_seconds: Histogram,
    /// From an event reaching the bridge to the value reflecting it being published.
    pub broadcast_seconds: Histogram,
}

/// The running bridge; dropping it does not stop it, [`BridgeHandle::abort`] does.
pub struct BridgeHandle {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl BridgeHandle {
    /// Marks every topic dirty, e.g. after events may have been missed.
    pub fn resync(&self) {
        for topic in 0..self.shared.dirty.len() {
            self.shared.mark_dirty(TopicId(topic));
        }
    }

    /// Recomputes run since start.
    pub fn recomputes(&self) -> u64 {
        self.shared.metrics.recomputes.load(Ordering::Relaxed)
    }

    /// Recomputes that failed since start.
    pub fn failures(&self) -> u64 {
        self.shared.metrics.failures.load(Ordering::Relaxed)
    }

    /// Counters and histograms.
    pub fn metrics(&self) -> Arc<BridgeMetrics> {
        self.shared.metrics.clone()
    }

    /// Stops the bridge's tasks.
    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Wraps the publisher services use: before events reach the bus, their topics are marked
/// stale on the hub, synchronously — so a client that subscribes right after a change was
/// confirmed to it waits for the fresh value instead of getting the one before.
pub struct MarkStale<P> {
    inner: P,
    hub: Hub,
}

impl<P> MarkStale<P> {
    /// Marks on `hub`, then publishes on `inner`.
    pub fn new(inner: P, hub: Hub) -> Self {
        Self { inner, hub }
    }
}

impl<P: std::ops::Deref<Target = dyn EventPublisher> + Send + Sync + 'static> EventPublisher
    for MarkStale<P>
{
    fn publish(&self, events: Vec<domain_events::EventEnvelope>) {
        let topics = self.hub.topics().clone();
        for envelope in &events {
            for topic in topics.dirtied_by(&envelope.event) {
                self.hub.mark_stale(topic);
            }
        }
        self.inner.publish(events);
    }

    fn resync(&self) {
        for topic in self.hub.topics().ids() {
            self.hub.mark_stale(topic);
        }
        self.inner.resync();
    }

    fn commit_unknown(&self, seqs: &[i64]) {
        // The client got 503 and may have committed: a socket it opens next must not get a
        // value from before. Which topics is not known here (rare: mark them all).
        for topic in self.hub.topics().ids() {
            self.hub.mark_stale(topic);
        }
        self.inner.commit_unknown(seqs);
    }
}

/// Starts the bridge: computes every topic once (so the first client gets a snapshot),
/// then reads `events` and recomputes the topics they dirty, and time-driven values when
/// they change. Subscribe `events` before calling, so nothing committed meanwhile is lost.
pub async fn start_bridge(mut events: EventStream, hub: Hub) -> Result<BridgeHandle, StatsError> {
    let topics = hub.topics().clone();
    let shared = Arc::new(Shared {
        dirty: topics.ids().map(|_| Dirty::default()).collect(),
        metrics: Arc::new(BridgeMetrics::default()),
    });
    let mut first = Vec::with_capacity(topics.len());
    for topic in topics.ids() {
        let value = topics.source(topic).compute().await?;
        hub.publish(topic, &value);
        first.push(value.changes_in);
    }
    let mut tasks = Vec::new();
    for (topic, mut changes_in) in topics.ids().zip(first) {
        let (shared, hub) = (shared.clone(), hub.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let dirty = &shared.dirty[topic.index()].wake;
                match changes_in {
                    // Recomputed when the value changes by itself, or sooner on an event.
                    Some(delay) => tokio::select! {
                        _ = dirty.notified() => {}
                        _ = tokio::time::sleep(delay) => {}
                    },
                    None => dirty.notified().await,
                }
                changes_in = recompute(topic, &hub, &shared).await;
                tokio::time::sleep(MIN_BROADCAST_INTERVAL).await;
                changes_in = changes_in.map(|d| d.saturating_sub(MIN_BROADCAST_INTERVAL));
            }
        }));
    }
    let dispatcher = shared.clone();
    let router = hub.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(message) = events.recv().await {
            match message {
                BusMessage::Event(envelope) => {
                    for topic in topics.dirtied_by(&envelope.event) {
                        router.mark_stale(topic);
                        dispatcher.mark_dirty(topic);
                    }
                    match &envelope.event {
                        DomainEvent::TaskAssigned(task) => router.task_assigned(task),
                        DomainEvent::UserUpdated(update) => router.user_updated(update),
                        _ => {}
                    }
                }
                BusMessage::Lagged { missed } => {
                    tracing::warn!(missed, "event stream lagged; resyncing every topic");
                    for topic in topics.ids() {
                        router.mark_stale(topic);
                        dispatcher.mark_dirty(topic);
                    }
                }
            }
        }
        tracing::debug!("event bus closed; bridge dispatcher stops");
    }));
    Ok(BridgeHandle { shared, tasks })
}

/// Recomputes `topic` until it succeeds and publishes it; returns when its value changes
/// by itself next.
async fn recompute(topic: TopicId, hub: &Hub, shared: &Shared) -> Option<Duration> {
    let since = shared.dirty[topic.index()].since.lock().unwrap_or_else(|p| p.into_inner()).take();
    // Every change announced before this point is reflected by what the source reads.
    let generation = hub.stale_generation(topic);
    let source = hub.topics().source(topic).clone();
    let mut delay = RETRY_DELAY;
    loop {
        shared.metrics.recomputes.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match source.compute().await {
            Ok(value) => {
                shared.metrics.recompute_seconds.observe(started.elapsed());
                hub.publish(topic, &value);
                hub.settle(topic, generation);
                if let Some(since) = since {
                    shared.metrics.broadcast_seconds.observe(since.elapsed());
                }
                return value.changes_in;
            }
            Err(error) => {
                shared.metrics.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = hub.topics().name(topic), %error, retry_in_ms = delay.as_millis() as u64, "topic recompute failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use domain_events::model::{Actor, Role, Task, TaskStatus};
    use domain_events::{EventEnvelope, EventSubscriber, InProcessBus};

    use super::*;
    use crate::board::{ClientFeed, FeedEvent};
    use crate::topic::testing::{self, FakeSource, GATE};

    const TASKS: TopicId = TopicId(0);

    fn task_created(seq: i64) -> EventEnvelope {
        let now = Utc::now();
        EventEnvelope {
            seq,
            at: now,
            actor: Actor { user_id: 1, username: "admin".into(), role: Role::Admin },
            event: DomainEvent::TaskCreated(Task {
                id: seq,
                kind: "k".into(),
                department: "d".into(),
                description: "x".into(),
                status: TaskStatus::Pending,
                assignee: None,
                created_by: "admin".into(),
                created_at: now,
                updated_at: now,
                completed_at: None,
            }),
        }
    }

    async fn next_n(feed: &mut ClientFeed) -> u64 {
        match tokio::time::timeout(Duration::from_secs(2), feed.next()).await.expect("a value in time") {
            FeedEvent::Frame(frame) => {
                let json: serde_json::Value = serde_json::from_str(frame.as_str()).expect("json");
                assert_eq!(json["type"], "stats:tasks");
                json["payload"]["n"].as_u64().expect("number")
            }
            FeedEvent::Shutdown => panic!("unexpected shutdown"),
        }
    }

    async fn started(bus: &InProcessBus) -> (Hub, BridgeHandle, [Arc<FakeSource>; 4]) {
        let (topics, sources) = testing::topics();
        let hub = Hub::new(topics);
        let bridge = start_bridge(bus.subscribe(), hub.clone()).await.expect("primed");
        (hub, bridge, sources)
    }

    #[tokio::test]
    async fn an_event_updates_its_topic_at_once_and_only_the_topics_it_dirties() {
        let bus = InProcessBus::new(64);
        let (hub, bridge, sources) = started(&bus).await;
        let primed = bridge.recomputes();
        let mut feed = hub.feed();
        feed.follow(TASKS);
        sources[0].value.store(1, Ordering::SeqCst);
        bus.publish(vec![task_created(1)]);
        assert_eq!(next_n(&mut feed).await, 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // stats:tasks and stats:extra follow tasks; approvals and conversations do not move.
        assert_eq!(bridge.recomputes(), primed + 2);
        assert_eq!(sources[1].calls.load(Ordering::SeqCst), 1, "primed only");
    }

    #[tokio::test]
    async fn a_burst_costs_at_most_two_recomputes() {
        let bus = InProcessBus::new(4096);
        let (hub, _bridge, sources) = started(&bus).await;
        let mut feed = hub.feed();
        feed.follow(TASKS);
        let calls = sources[0].calls.load(Ordering::SeqCst);
        // Hold the first recompute in flight while the burst arrives.
        let held = sources[0].gate.acquire_many(GATE as u32).await.expect("gate");
        bus.publish(vec![task_created(1)]);
        while sources[0].calls.load(Ordering::SeqCst) == calls {
            tokio::task::yield_now().await;
        }
        sources[0].value.store(200, Ordering::SeqCst);
        for seq in 2..=200 {
            bus.publish(vec![task_created(seq)]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        let mut last = next_n(&mut feed).await;
        while last != 200 {
            last = next_n(&mut feed).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sources[0].calls.load(Ordering::SeqCst) - calls, 2, "200 events, two recomputes");
    }

    #[tokio::test]
    async fn a_lagged_stream_resyncs_every_topic() {
        let bus = InProcessBus::new(2);
        let (_hub, bridge, sources) = started(&bus).await;
        let primed = bridge.recomputes();
        let held: Vec<_> =
            futures_util::future::join_all(sources.iter().map(|s| s.gate.acquire_many(GATE as u32))).await;
        // The dispatcher is parked behind held recomputes: overflow the ring.
        for seq in 1..=10 {
            bus.publish(vec![task_created(seq)]);
        }
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(bridge.recomputes() >= primed + 4, "every topic recomputed after the lag");
        assert!(sources.iter().all(|s| s.calls.load(Ordering::SeqCst) >= 2));
    }

    #[tokio::test]
    async fn a_failed_recompute_is_retried() {
        let bus = InProcessBus::new(16);
        let (hub, bridge, sources) = started(&bus).await;
        sources[0].fail.store(true, Ordering::SeqCst);
        sources[0].value.store(5, Ordering::SeqCst);
        let mut feed = hub.feed();
        feed.follow(TASKS);
        bus.publish(vec![task_created(1)]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(bridge.failures() >= 1);
        sources[0].fail.store(false, Ordering::SeqCst);
        assert_eq!(next_n(&mut feed).await, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_that_changes_with_time_is_recomputed_when_it_changes_with_no_event() {
        let bus = InProcessBus::new(16);
        let (topics, sources) = testing::topics();
        *sources[0].changes_in.lock().expect("lock") = Some(Duration::from_secs(30));
        let hub = Hub::new(topics);
        let _bridge = start_bridge(bus.subscribe(), hub.clone()).await.expect("primed");
        let mut feed = hub.feed();
        feed.follow(TASKS);
        sources[0].value.store(9, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(10), feed.next()).await.is_err(),
            "not before its time"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(next_n(&mut feed).await, 9, "recomputed at the deadline, no event");
    }

    #[tokio::test]
    async fn mark_stale_marks_a_changes_topics_before_it_reaches_the_bus() {
        let bus = InProcessBus::new(16);
        let (hub, _bridge, _sources) = started(&bus).await;
        let publisher = MarkStale::new(Arc::new(bus.clone()) as Arc<dyn EventPublisher>, hub.clone());
        let before = hub.stale_generation(TASKS);
        publisher.publish(vec![task_created(1)]);
        assert_eq!(hub.stale_generation(TASKS), before + 1);
        assert_eq!(hub.stale_generation(TopicId(1)), 0, "approvals untouched");
        publisher.commit_unknown(&[2]);
        assert_eq!(hub.stale_generation(TopicId(1)), 1, "a commit in doubt marks every topic");
    }
}
