//! The hub: what every connection of this instance shares, and its one worker.
//!
//! It puts together the [`board`](crate::board) (newest values, serialized once), the
//! [`freshness`](crate::freshness) counters (read your writes) and the
//! [`directory`](crate::directory) (who is connected: presence, personal events, typing,
//! changed users), and links them to the other instances through a [`Cluster`]. One worker
//! task publishes presence (at most every [`PRESENCE_MIN_INTERVAL`]), expires typing, and
//! takes in what other instances say.
//!
//! Architecture invariant: knows topics by id and users by id; nothing of sockets, HTTP or
//! where values come from.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use domain_events::model::{Actor, Task, UserUpdate};
use domain_events::{Cluster, ClusterSignal, SingleInstance, Typing};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

use crate::board::{BoardWriter, ClientFeed};
use crate::directory::{ConnectionId, Delivered, Directory};
use crate::freshness::Freshness;
use crate::mailbox::Mailbox;
use crate::metrics::HubMetrics;
use crate::topic::{TopicId, TopicValue, Topics};

/// Presence is republished at most this often (a connect storm costs a few messages).
pub const PRESENCE_MIN_INTERVAL: Duration = Duration::from_millis(200);

struct Inner {
    topics: Arc<Topics>,
    board: BoardWriter,
    freshness: Freshness,
    directory: Mutex<Directory>,
    cluster: Arc<dyn Cluster>,
    metrics: HubMetrics,
    shutdown: watch::Sender<bool>,
    /// Presence may have changed (the worker rebuilds it, throttled).
    presence_dirty: Notify,
    /// A typing deadline may have moved (the worker re-reads the next one).
    typing_changed: Notify,
}

/// Fans messages out to every connection. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// A single-instance hub for `topics`, with no values yet. Call [`Hub::spawn_worker`]
    /// for presence and typing to flow.
    pub fn new(topics: Arc<Topics>) -> Self {
        Self::with_cluster(topics, Arc::new(SingleInstance::default()))
    }

    /// A hub that shares presence and typing through `cluster`.
    pub fn with_cluster(topics: Arc<Topics>, cluster: Arc<dyn Cluster>) -> Self {
        Self {
            inner: Arc::new(Inner {
                board: BoardWriter::new(topics.len()),
                freshness: Freshness::new(topics.len()),
                topics,
                directory: Mutex::new(Directory::default()),
                cluster,
                metrics: HubMetrics::default(),
                shutdown: watch::channel(false).0,
                presence_dirty: Notify::new(),
                typing_changed: Notify::new(),
            }),
        }
    }

    /// The whole-value topics this hub serves.
    pub fn topics(&self) -> &Arc<Topics> {
        &self.inner.topics
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the worker: presence, typing expiry and what other instances say. Needs a
    /// tokio runtime; it ends when the hub shuts down.
    pub fn spawn_worker(&self) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        let mut signals = self.inner.cluster.subscribe();
        tokio::spawn(async move { hub.work(&mut signals).await })
    }

    /// The link to the other instances (a transport relays client messages through it).
    pub fn cluster(&self) -> Arc<dyn Cluster> {
        self.inner.cluster.clone()
    }

    async fn work(&self, signals: &mut broadcast::Receiver<ClusterSignal>) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut presence_due: Option<Instant> = None;
        let mut presence_published = Instant::now() - PRESENCE_MIN_INTERVAL;
        loop {
            let typing_due = self.directory().next_typing_deadline();
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = self.inner.presence_dirty.notified() => {
                    presence_due.get_or_insert(presence_published + PRESENCE_MIN_INTERVAL);
                }
                _ = tokio::time::sleep_until(presence_due.unwrap_or(far)), if presence_due.is_some() => {
                    presence_due = None;
                    presence_published = Instant::now();
                    self.publish_presence();
                }
                _ = tokio::time::sleep_until(typing_due.unwrap_or(far)), if typing_due.is_some() => {
                    let delivered = self.directory().expire_typing(Instant::now());
                    self.count(delivered);
                }
                _ = self.inner.typing_changed.notified() => {}
                signal = signals.recv() => match signal {
                    Ok(ClusterSignal::Typing(typing)) => self.typing(&typing, None),
                    Ok(ClusterSignal::RemotePresence(entries)) => {
                        if self.directory().set_remote(entries) {
                            self.inner.presence_dirty.notify_one();
                        }
                    }
                    // Client messages relayed between instances are the transport's.
                    Ok(ClusterSignal::Relayed(_) | ClusterSignal::RelayAnswered { .. }) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Publishes `topic`'s new value to every follower unless it equals the last one;
    /// returns whether it was sent.
    pub fn publish(&self, topic: TopicId, value: &TopicValue) -> bool {
        let sent = self.inner.board.publish(&self.inner.topics, topic, value);
        let counter =
            if sent { &self.inner.metrics.stats_published } else { &self.inner.metrics.stats_unchanged };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }

    /// The payload of `topic`'s newest value, if one was published.
    pub fn current(&self, topic: TopicId) -> Option<String> {
        self.inner.board.current(topic)
    }

    /// A change to `topic` committed: its value is stale until a recompute that starts
    /// after this call publishes (see [`crate::freshness`]).
    pub fn mark_stale(&self, topic: TopicId) {
        self.inner.freshness.mark_stale(topic);
    }

    /// The changes announced so far for `topic` (read when a recompute starts).
    pub fn stale_generation(&self, topic: TopicId) -> u64 {
        self.inner.freshness.generation(topic)
    }

    /// Records that the published value reflects every change up to `generation`.
    pub fn settle(&self, topic: TopicId, generation: u64) {
        self.inner.freshness.settle(topic, generation);
    }

    /// Waits (at most `limit`) until `topic`'s published value reflects every change
    /// announced before this call.
    pub async fn wait_fresh(&self, topic: TopicId, limit: Duration) {
        self.inner.freshness.wait(topic, limit).await;
    }

    /// Whether `other` is this hub (a clone of it).
    pub fn is(&self, other: &Hub) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Board changes, for a transport that delivers many connections' feeds at once.
    pub fn board_changes(&self) -> crate::board::BoardChanges {
        self.inner.board.changes()
    }

    /// A feed for a new connection, following nothing yet.
    pub fn feed(&self) -> ClientFeed {
        self.inner.board.feed()
    }

    /// Registers a connection of `user` for presence, personal events and typing, whose
    /// credential was issued at `issued_at_ms` (a user change retiring older credentials
    /// closes it only if it is older; unknown: any does). Online until the handle drops.
    pub fn register(&self, user: &Actor, issued_at_ms: Option<i64>) -> Registration {
        self.register_with(user, issued_at_ms, Arc::default())
    }

    /// [`Hub::register`] with a mailbox made beforehand (a direct session's transport holds
    /// it from the start).
    pub(crate) fn register_with(
        &self,
        user: &Actor,
        issued_at_ms: Option<i64>,
        mailbox: Arc<Mailbox>,
    ) -> Registration {
        let id = self.directory().register(user, issued_at_ms, mailbox.clone());
        self.inner.metrics.connections.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        self.inner.presence_dirty.notify_one();
        Registration { hub: self.clone(), id, user: user.clone(), mailbox }
    }

    /// Sends `task:assigned` to every connection of the task's assignee here.
    pub fn task_assigned(&self, task: &Task) {
        let delivered = self.directory().task_assigned(task);
        self.count(delivered);
    }

    /// A user's account changed (on any instance): closes their connections here that the
    /// change ends (4403 deactivated, 4401 credential retired).
    pub fn user_updated(&self, update: &UserUpdate) {
        let closed = self.directory().user_updated(update, Instant::now());
        if closed > 0 {
            tracing::info!(
                user_id = update.user.id,
                closed,
                active = update.user.active,
                "closing the connections of a changed user"
            );
        }
    }

    /// Publishes presence now if it changed since it was last built, so a connection that
    /// subscribes finds itself in the value it is given.
    pub fn refresh_presence(&self) {
        if self.directory().presence_stale() {
            self.publish_presence();
        }
    }

    /// Rebuilds presence, shares this instance's part with the others, and publishes the
    /// merged value if it changed.
    fn publish_presence(&self) {
        let build = self.directory().build_presence();
        self.inner.cluster.share_presence(&build.local);
        if self.inner.board.publish_presence(build.built, build.frame) {
            self.inner.metrics.presence_published.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn typing(&self, signal: &Typing, origin: Option<ConnectionId>) {
        let delivered = self.directory().typing(signal, origin, Instant::now());
        self.count(delivered);
        self.inner.typing_changed.notify_one();
    }

    fn count(&self, delivered: Delivered) {
        self.inner.metrics.mailbox_conflated.fetch_add(delivered.replaced, Ordering::Relaxed);
    }

    /// Tells every connection to close (code 1001): the server is going away.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.board.shut_down();
    }

    /// Whether [`Hub::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Counters.
    pub fn metrics(&self) -> &HubMetrics {
        &self.inner.metrics
    }
}

/// A connection's place in the hub; dropping it takes the connection offline.
pub struct Registration {
    hub: Hub,
    id: ConnectionId,
    user: Actor,
    mailbox: Arc<Mailbox>,
}

impl Registration {
    /// The connection's mailbox: personal and typing messages, and the order to close.
    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// Records what the user is looking at (presence).
    pub fn viewing(&self, path: String) {
        if self.hub.directory().set_viewing(self.user.user_id, path) {
            self.hub.inner.presence_dirty.notify_one();
        }
    }

    /// The conversations whose typing this connection receives.
    pub fn set_conversations(&self, conversations: &HashSet<i64>) {
        self.hub.directory().set_conversations(self.id, conversations);
    }

    /// The user typed (or stopped) in a conversation: relayed to its other followers here
    /// and told to the other instances.
    pub fn typing(&self, conversation_id: i64, typing: bool) {
        let signal = Typing {
            conversation_id,
            user_id: self.user.user_id,
            username: self.user.username.clone(),
            typing,
        };
        self.hub.inner.cluster.share_typing(&signal);
        self.hub.typing(&signal, Some(self.id));
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.directory().unregister(self.id);
        self.hub.inner.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        self.hub.inner.presence_dirty.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use domain_events::model::Role;
    use serde_json::Value;

    use super::*;
    use crate::board::FeedEvent;
    use crate::protocol::Frame;
    use crate::topic::testing;

    fn user(id: i64, name: &str) -> Actor {
        Actor { user_id: id, username: name.into(), role: Role::Staff }
    }

    fn parse(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_str()).expect("json")
    }

    fn hub() -> Hub {
        Hub::new(testing::topics().0)
    }

    #[tokio::test]
    async fn presence_is_published_as_connections_come_and_go() {
        let hub = hub();
        let _worker = hub.spawn_worker();
        let mut feed = hub.feed();
        assert_eq!(parse(&feed.follow_presence())["payload"]["online"], serde_json::json!([]));
        let ana = hub.register(&user(1, "ana"), None);
        let expected =
            serde_json::json!([{"userId": 1, "username": "ana", "connections": 1, "viewing": null}]);
        let mut last = Value::Null;
        while last != expected {
            let FeedEvent::Frame(frame) = feed.next().await else { panic!("frame expected") };
            last = parse(&frame)["payload"]["online"].clone();
        }
        drop(ana);
        while last != serde_json::json!([]) {
            let FeedEvent::Frame(frame) = feed.next().await else { panic!("frame expected") };
            last = parse(&frame)["payload"]["online"].clone();
        }
        assert_eq!(hub.metrics().connections.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_subscriber_finds_itself_in_the_presence_it_is_given() {
        // No worker: only the refresh on subscribe can publish.
        let hub = hub();
        let _ana = hub.register(&user(1, "ana"), None);
        hub.refresh_presence();
        let online = parse(&hub.feed().follow_presence())["payload"]["online"].clone();
        assert_eq!(online[0]["username"], "ana");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_storm_costs_a_few_presence_messages() {
        let hub = hub();
        let _worker = hub.spawn_worker();
        let registrations: Vec<Registration> =
            (0..1000).map(|i| hub.register(&user(i, &format!("u{i}")), None)).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(hub.metrics().presence_published.load(Ordering::Relaxed) <= 6);
        drop(registrations);
    }

    #[tokio::test(start_paused = true)]
    async fn typing_expires_through_the_worker() {
        let hub = hub();
        let _worker = hub.spawn_worker();
        let ana = hub.register(&user(1, "ana"), None);
        let bob = hub.register(&user(2, "bob"), None);
        let conversation: HashSet<i64> = [7].into();
        bob.set_conversations(&conversation);
        ana.typing(7, true);
        assert_eq!(parse(&bob.mailbox().take().expect("open")[0])["payload"]["typing"], true);
        tokio::time::sleep(Duration::from_millis(6_100)).await;
        assert_eq!(parse(&bob.mailbox().take().expect("open")[0])["payload"]["typing"], false);
    }

    #[tokio::test]
    async fn shutdown_reaches_every_feed() {
        let hub = hub();
        let mut feed = hub.feed();
        hub.shutdown();
        assert!(hub.is_shutting_down());
        assert_eq!(feed.next().await, FeedEvent::Shutdown);
    }
}
