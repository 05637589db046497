//! From events to fresh stats values, coalescing bursts.
//!
//! Personal events (`task:assigned`) go straight to the hub, which routes them to the
//! assignee's connections; so do user changes (`user.updated`), on which the hub closes the
//! connections whose credentials they retire.
//!
//! One worker per topic waits on a [`Notify`]: an event stores a permit, so however many
//! events arrive while a recompute is in flight, they cost one more recompute, not one
//! each. The first event of a quiet period is handled at once (no fixed delay).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain_events::{BusMessage, DomainEvent, EventPublisher, EventStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::hub::Hub;
use crate::metrics::Histogram;
use crate::topic::{StatsTopic, StatsValue};

/// Where fresh stats values come from; the application implements it with its services.
pub trait StatsSource: Send + Sync + 'static {
    /// The current value of `topic`.
    fn stats(&self, topic: StatsTopic) -> impl Future<Output = Result<StatsValue, StatsError>> + Send;
}

/// A stats source that failed; the bridge logs it and retries.
#[derive(Debug, thiserror::Error)]
#[error("stats unavailable: {0}")]
pub struct StatsError(pub String);

/// After a topic's value is published, its next recompute waits at least this long: a
/// burst of thousands of changes costs at most 40 broadcasts a second per topic instead of
/// one per change, while the first change after a quiet spell still goes out at once.
pub const MIN_BROADCAST_INTERVAL: Duration = Duration::from_millis(25);

/// How long a failed recompute waits before it tries again (doubling up to the maximum).
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// Short enough that a topic is fresh within a second of the database answering again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

struct Shared {
    dirty: [Notify; 3],
    /// When each topic was first dirtied since its last recompute began.
    dirty_since: [Mutex<Option<Instant>>; 3],
    metrics: Arc<BridgeMetrics>,
}

impl Shared {
    fn mark_dirty(&self, topic: StatsTopic) {
        let mut since = self.dirty_since[topic.index()].lock().unwrap_or_else(|p| p.into_inner());
        since.get_or_insert_with(Instant::now);
        drop(since);
        self.dirty[topic.index()].notify_one();
    }
}

/// What the bridge counts.
#[derive(Debug, Default)]
pub struct BridgeMetrics {
    /// Stats recomputes run (each one query per topic).
    pub recomputes: AtomicU64,
    /// Recomputes that failed (and were retried).
    pub failures: AtomicU64,
    /// How long a recompute's query took (the database's latency as the bridge sees it).
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
        for topic in StatsTopic::ALL {
            self.shared.mark_dirty(topic);
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
        for topic in events.iter().filter_map(|envelope| StatsTopic::dirtied_by(&envelope.event)) {
            self.hub.mark_stale(topic);
        }
        self.inner.publish(events);
    }

    fn resync(&self) {
        for topic in StatsTopic::ALL {
            self.hub.mark_stale(topic);
        }
        self.inner.resync();
    }

    fn commit_unknown(&self, seqs: &[i64]) {
        // The client got 503 and may have committed: a socket it opens next must not get a
        // value from before. Which topics is not known here (rare: mark them all).
        for topic in StatsTopic::ALL {
            self.hub.mark_stale(topic);
        }
        self.inner.commit_unknown(seqs);
    }
}

/// Computes every topic once and publishes it, so the hub has a snapshot before the first
/// client connects.
pub async fn prime<S: StatsSource>(source: &S, hub: &Hub) -> Result<(), StatsError> {
    for topic in StatsTopic::ALL {
        hub.publish_stats(source.stats(topic).await?);
    }
    Ok(())
}

/// Starts the bridge: reads `events`, recomputes the topics they dirty through `source`,
/// and publishes the values on `hub`. A lagged event stream resyncs every topic.
pub fn spawn_bridge<S: StatsSource>(mut events: EventStream, source: Arc<S>, hub: Hub) -> BridgeHandle {
    let shared = Arc::new(Shared {
        dirty: std::array::from_fn(|_| Notify::new()),
        dirty_since: std::array::from_fn(|_| Mutex::new(None)),
        metrics: Arc::new(BridgeMetrics::default()),
    });
    let mut tasks = Vec::new();
    for topic in StatsTopic::ALL {
        let (shared, source, hub) = (shared.clone(), source.clone(), hub.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                shared.dirty[topic.index()].notified().await;
                recompute(topic, &*source, &hub, &shared).await;
                tokio::time::sleep(MIN_BROADCAST_INTERVAL).await;
            }
        }));
    }
    let dispatcher = shared.clone();
    let personal = hub.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(message) = events.recv().await {
            match message {
                BusMessage::Event(envelope) => {
                    if let Some(topic) = StatsTopic::dirtied_by(&envelope.event) {
                        personal.mark_stale(topic);
                        dispatcher.mark_dirty(topic);
                    }
                    match &envelope.event {
                        DomainEvent::TaskAssigned(task) => personal.task_assigned(task),
                        DomainEvent::UserUpdated(update) => personal.user_updated(update),
                        _ => {}
                    }
                }
                BusMessage::Lagged { missed } => {
                    tracing::warn!(missed, "event stream lagged; resyncing every stats topic");
                    for topic in StatsTopic::ALL {
                        personal.mark_stale(topic);
                        dispatcher.mark_dirty(topic);
                    }
                }
            }
        }
        tracing::debug!("event bus closed; bridge dispatcher stops");
    }));
    BridgeHandle { shared, tasks }
}

async fn recompute<S: StatsSource>(topic: StatsTopic, source: &S, hub: &Hub, shared: &Shared) {
    let since = shared.dirty_since[topic.index()].lock().unwrap_or_else(|p| p.into_inner()).take();
    // Every change announced before this point is reflected by what the query reads.
    let generation = hub.stale_generation(topic);
    let mut delay = RETRY_DELAY;
    loop {
        shared.metrics.recomputes.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match source.stats(topic).await {
            Ok(value) => {
                shared.metrics.recompute_seconds.observe(started.elapsed());
                hub.publish_stats(value);
                hub.settle(topic, generation);
                if let Some(since) = since {
                    shared.metrics.broadcast_seconds.observe(since.elapsed());
                }
                return;
            }
            Err(error) => {
                shared.metrics.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = topic.name(), %error, retry_in_ms = delay.as_millis() as u64, "stats recompute failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::FeedEvent;
    use chrono::Utc;
    use domain_events::model::{Actor, Role, Task, TaskStats, TaskStatus};
    use domain_events::{DomainEvent, EventEnvelope, EventPublisher, EventSubscriber, InProcessBus};
    use std::sync::atomic::AtomicBool;
    use tokio::sync::Semaphore;

    /// A stats source whose task count is set by the test, and which can be held back to
    /// simulate a slow query.
    struct FakeSource {
        pending: AtomicU64,
        calls: AtomicU64,
        gate: Semaphore,
        fail: AtomicBool,
    }

    const GATE: usize = 1_000_000;

    impl FakeSource {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                pending: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                gate: Semaphore::new(GATE),
                fail: AtomicBool::new(false),
            })
        }
    }

    impl StatsSource for FakeSource {
        async fn stats(&self, topic: StatsTopic) -> Result<StatsValue, StatsError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let _permit = self.gate.acquire().await.map_err(|e| StatsError(e.to_string()))?;
            if self.fail.load(Ordering::SeqCst) {
                return Err(StatsError("database down".into()));
            }
            let pending = self.pending.load(Ordering::SeqCst);
            Ok(match topic {
                StatsTopic::Tasks => {
                    StatsValue::Tasks(TaskStats { pending, in_progress: 0, completed: 0, total: pending })
                }
                StatsTopic::Approvals => StatsValue::Approvals(Default::default()),
                StatsTopic::Conversations => StatsValue::Conversations(Default::default()),
            })
        }
    }

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

    async fn next_pending(feed: &mut crate::hub::ClientFeed) -> u64 {
        match tokio::time::timeout(Duration::from_secs(2), feed.next()).await.expect("a value in time") {
            FeedEvent::Frame(frame) => {
                let json: serde_json::Value = serde_json::from_str(frame.as_str()).expect("json");
                assert_eq!(json["type"], "stats:tasks");
                json["payload"]["pending"].as_u64().expect("number")
            }
            FeedEvent::Shutdown => panic!("unexpected shutdown"),
        }
    }

    #[tokio::test]
    async fn an_event_updates_its_topic_at_once() {
        let (bus, hub, source) = (InProcessBus::new(64), Hub::new(), FakeSource::new());
        prime(&*source, &hub).await.expect("prime");
        let _bridge = spawn_bridge(bus.subscribe(), source.clone(), hub.clone());
        let mut feed = hub.subscribe();
        feed.snapshot();
        source.pending.store(1, Ordering::SeqCst);
        bus.publish(vec![task_created(1)]);
        assert_eq!(next_pending(&mut feed).await, 1);
    }

    #[tokio::test]
    async fn a_burst_costs_at_most_two_recomputes() {
        let (bus, hub, source) = (InProcessBus::new(4096), Hub::new(), FakeSource::new());
        let bridge = spawn_bridge(bus.subscribe(), source.clone(), hub.clone());
        let mut feed = hub.subscribe();
        // Hold the first recompute in flight while the burst arrives.
        let held = source.gate.acquire_many(GATE as u32).await.expect("gate");
        bus.publish(vec![task_created(1)]);
        while source.calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        source.pending.store(200, Ordering::SeqCst);
        for seq in 2..=200 {
            bus.publish(vec![task_created(seq)]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        // The in-flight recompute may publish its (already current) value first; the final
        // value is the burst's.
        let mut last = next_pending(&mut feed).await;
        while last != 200 {
            last = next_pending(&mut feed).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(bridge.recomputes(), 2, "200 events, two recomputes");
    }

    #[tokio::test]
    async fn a_lagged_stream_resyncs_every_topic() {
        let (bus, hub, source) = (InProcessBus::new(2), Hub::new(), FakeSource::new());
        let held = source.gate.acquire_many(GATE as u32).await.expect("gate");
        let bridge = spawn_bridge(bus.subscribe(), source.clone(), hub.clone());
        // The dispatcher is parked on a full ring: overflow it.
        for seq in 1..=10 {
            bus.publish(vec![task_created(seq)]);
        }
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        for topic in StatsTopic::ALL {
            assert!(hub.current(topic).is_some(), "{topic:?} recomputed after the lag");
        }
        assert!(bridge.recomputes() >= 3);
    }

    #[tokio::test]
    async fn a_failed_recompute_is_retried() {
        let (bus, hub, source) = (InProcessBus::new(16), Hub::new(), FakeSource::new());
        let bridge = spawn_bridge(bus.subscribe(), source.clone(), hub.clone());
        source.fail.store(true, Ordering::SeqCst);
        source.pending.store(5, Ordering::SeqCst);
        let mut feed = hub.subscribe();
        bus.publish(vec![task_created(1)]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(bridge.failures() >= 1);
        source.fail.store(false, Ordering::SeqCst);
        assert_eq!(next_pending(&mut feed).await, 5);
    }

    #[tokio::test]
    async fn a_user_change_reaches_the_hub_and_dirties_no_stats() {
        let (bus, hub, source) = (InProcessBus::new(16), Hub::new(), FakeSource::new());
        let bridge = spawn_bridge(bus.subscribe(), source.clone(), hub.clone());
        let user = crate::protocol::ConnectedUser { user_id: 7, username: "eve".into(), role: Role::Staff };
        let connection = hub.register_credential(&user, Some(1_000));
        let now = Utc::now();
        bus.publish(vec![EventEnvelope {
            seq: 1,
            at: now,
            actor: Actor { user_id: 1, username: "admin".into(), role: Role::Admin },
            event: DomainEvent::UserUpdated(domain_events::model::UserUpdate {
                user: domain_events::model::User {
                    id: 7,
                    username: "eve".into(),
                    role: Role::Staff,
                    active: false,
                    created_at: now,
                },
                tokens_valid_after: now,
            }),
        }]);
        let code = tokio::time::timeout(Duration::from_secs(2), connection.revoked()).await.expect("in time");
        assert_eq!(code, crate::connection::close_code::USER_DEACTIVATED);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(bridge.recomputes(), 0, "no stats topic is dirtied by a user change");
    }
}
