//! The hub: what every connection receives, and from where.
//!
//! - Stats and presence: one [`watch`] channel (the board) holds the newest serialized value
//!   of every stats topic and of presence, so a broadcast is serialized once, cloning it for
//!   a client costs a reference count, a client that falls behind skips straight to the
//!   newest value, and a change wakes each connection once (one waiter per connection, not
//!   one per topic: with 10,000 connections the waiter bookkeeping was a tenth of the
//!   server's CPU per broadcast). Presence is rebuilt at most every
//!   [`PRESENCE_MIN_INTERVAL`] however many connections come and go.
//! - Personal events and typing: a small per-connection [`Mailbox`] keyed by what the
//!   message is about (a task, a typist), so a newer message replaces an older one about the
//!   same thing; a mailbox over [`MAILBOX_CAPACITY`] keys marks its client too slow.
//!
//! The hub also shares presence and typing with other instances through a [`Cluster`], and
//! closes the connections whose credentials a user change retires ([`Hub::user_updated`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytestring::ByteString;
use domain_events::model::{Task, UserUpdate};
use domain_events::{Cluster, ClusterSignal, PresenceEntry, SingleInstance, Typing};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::connection::close_code;
use crate::protocol::{ConnectedUser, server};
use crate::topic::{StatsTopic, StatsValue};

/// A `typing: true` not refreshed within this is relayed as `typing: false`.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(6);
/// Presence is republished at most this often (a connect storm costs a few messages).
pub const PRESENCE_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Personal and typing messages a client may have waiting before it counts as too slow.
pub const MAILBOX_CAPACITY: usize = 256;
/// Users whose latest change the hub remembers, so that a connection registered just after a
/// change it raced with is closed too.
pub const REMEMBERED_USER_CHANGES: usize = 4096;

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

/// The newest value of a stats topic and its serialized message.
#[derive(Debug, Clone)]
struct StatsFrame {
    value: StatsValue,
    seq: u64,
    frame: Frame,
}

/// The newest value of everything a connection can follow as a whole, in one watch channel.
#[derive(Debug, Clone, Default)]
struct Board {
    stats: [Option<StatsFrame>; 3],
    /// The newest `presence` message and its version (1 for the first).
    presence: Option<(u64, Frame)>,
    /// The registry change count the presence message was built from.
    presence_built: u64,
    shutdown: bool,
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
    /// Presence messages published.
    pub presence_published: AtomicU64,
    /// Personal and typing messages that replaced an older one still waiting.
    pub mailbox_conflated: AtomicU64,
}

/// What a mailbox entry is about: a newer entry about the same thing replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailKey {
    /// `task:assigned` for this task.
    TaskAssigned(i64),
    /// `typing` of this user in this conversation.
    Typing {
        /// Conversation id.
        conversation: i64,
        /// User id.
        user: i64,
    },
}

/// One connection's bounded queue of personal and typing messages.
#[derive(Debug, Default)]
pub struct Mailbox {
    entries: Mutex<Vec<(MailKey, Frame)>>,
    ready: Notify,
    overflowed: AtomicBool,
}

impl Mailbox {
    fn put(&self, key: MailKey, frame: Frame, metrics: &HubMetrics) {
        let mut entries = lock(&self.entries);
        if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = frame;
            metrics.mailbox_conflated.fetch_add(1, Ordering::Relaxed);
        } else if entries.len() >= MAILBOX_CAPACITY {
            self.overflowed.store(true, Ordering::Relaxed);
        } else {
            entries.push((key, frame));
        }
        drop(entries);
        self.ready.notify_one();
    }

    /// Waits until something is waiting. Cancel-safe.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Everything waiting, oldest first; `Err` if the client fell too far behind.
    pub fn take(&self) -> Result<Vec<Frame>, TooSlow> {
        if self.overflowed.load(Ordering::Relaxed) {
            return Err(TooSlow);
        }
        Ok(std::mem::take(&mut *lock(&self.entries)).into_iter().map(|(_, frame)| frame).collect())
    }
}

/// Set when the server must close a connection because its user was deactivated or its
/// credential retired: the close code, and a wake-up for the session.
#[derive(Debug, Default)]
struct Revocation {
    code: AtomicU16,
    notify: Notify,
}

impl Revocation {
    fn revoke(&self, code: u16) {
        if self.code.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.notify.notify_one();
        }
    }

    async fn wait(&self) -> u16 {
        loop {
            let code = self.code.load(Ordering::SeqCst);
            if code != 0 {
                return code;
            }
            self.notify.notified().await;
        }
    }
}

/// The latest change seen for a user: whether they are active, and since when their
/// credentials are valid (milliseconds since the epoch).
#[derive(Debug, Clone, Copy)]
struct UserChange {
    active: bool,
    valid_after_ms: i64,
    seen: Instant,
}

impl UserChange {
    /// The close code for a connection whose credential was issued at `issued_at_ms`
    /// (unknown: as if at the epoch), if the change ends it.
    fn closes(&self, issued_at_ms: Option<i64>) -> Option<u16> {
        if !self.active {
            Some(close_code::USER_DEACTIVATED)
        } else if issued_at_ms.unwrap_or(0) < self.valid_after_ms {
            Some(close_code::TOKEN_EXPIRED)
        } else {
            None
        }
    }
}

/// A client's mailbox overflowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSlow;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    connections: HashMap<u64, Registered>,
    by_username: HashMap<String, HashSet<u64>>,
    by_conversation: HashMap<i64, HashSet<u64>>,
    users: HashMap<i64, LocalUser>,
    /// What other instances report, by user (summed over instances).
    remote: Vec<PresenceEntry>,
    /// Bumped by every change presence shows (connections, viewing, other instances)…
    presence_changes: u64,
    /// …and the count the published presence value reflects.
    presence_built: u64,
    /// The latest change of recently changed users (at most [`REMEMBERED_USER_CHANGES`]).
    user_changes: HashMap<i64, UserChange>,
}

struct Registered {
    user: ConnectedUser,
    mailbox: Arc<Mailbox>,
    conversations: HashSet<i64>,
    /// When the connection's credential (token, or the token behind its ticket) was issued.
    issued_at_ms: Option<i64>,
    revocation: Arc<Revocation>,
}

struct LocalUser {
    username: String,
    connections: u32,
    viewing: Option<String>,
}

struct TypingState {
    username: String,
    until: Instant,
    origin: Option<u64>,
}

struct Inner {
    board: watch::Sender<Board>,
    /// Changes announced per stats topic (a generation counter) …
    stale: [AtomicU64; 3],
    /// … and the generation the newest published value reflects.
    settled: [watch::Sender<u64>; 3],
    seq: [AtomicU64; 3],
    presence_dirty: Notify,
    shutdown: watch::Sender<bool>,
    metrics: HubMetrics,
    registry: Mutex<Registry>,
    typing: Mutex<HashMap<(i64, i64), TypingState>>,
    typing_changed: Notify,
    cluster: Arc<dyn Cluster>,
}

/// Fans messages out to every connection. Cheap to clone.
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
    /// A single-instance hub with no values yet. Call [`Hub::spawn_workers`] for presence
    /// and typing to flow.
    pub fn new() -> Self {
        Self::with_cluster(Arc::new(SingleInstance::default()))
    }

    /// A hub that shares presence and typing through `cluster`.
    pub fn with_cluster(cluster: Arc<dyn Cluster>) -> Self {
        Self {
            inner: Arc::new(Inner {
                board: watch::channel(Board {
                    presence: Some((1, server::presence(&[]))),
                    ..Board::default()
                })
                .0,
                seq: std::array::from_fn(|_| AtomicU64::new(0)),
                stale: std::array::from_fn(|_| AtomicU64::new(0)),
                settled: std::array::from_fn(|_| watch::channel(0).0),
                presence_dirty: Notify::new(),
                shutdown: watch::channel(false).0,
                metrics: HubMetrics::default(),
                registry: Mutex::new(Registry::default()),
                typing: Mutex::new(HashMap::new()),
                typing_changed: Notify::new(),
                cluster,
            }),
        }
    }

    /// Starts the background work: presence publishing, typing expiry, and what other
    /// instances say. Needs a tokio runtime; the tasks end when the hub shuts down.
    pub fn spawn_workers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let presence = {
            let hub = self.clone();
            tokio::spawn(async move {
                let mut shutdown = hub.inner.shutdown.subscribe();
                loop {
                    tokio::select! {
                        _ = hub.inner.presence_dirty.notified() => {}
                        _ = shutdown.changed() => return,
                    }
                    hub.publish_presence();
                    tokio::time::sleep(PRESENCE_MIN_INTERVAL).await;
                }
            })
        };
        let typing = {
            let hub = self.clone();
            tokio::spawn(async move {
                let mut shutdown = hub.inner.shutdown.subscribe();
                loop {
                    let next = lock(&hub.inner.typing).values().map(|t| t.until).min();
                    let sleep = tokio::time::sleep_until(
                        next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
                    );
                    tokio::select! {
                        _ = sleep => hub.expire_typing(),
                        _ = hub.inner.typing_changed.notified() => {}
                        _ = shutdown.changed() => return,
                    }
                }
            })
        };
        let remote = {
            let hub = self.clone();
            let mut signals = self.inner.cluster.subscribe();
            tokio::spawn(async move {
                let mut shutdown = hub.inner.shutdown.subscribe();
                loop {
                    let signal = tokio::select! {
                        signal = signals.recv() => signal,
                        _ = shutdown.changed() => return,
                    };
                    match signal {
                        Ok(ClusterSignal::Typing(typing)) => hub.apply_typing(typing, None),
                        Ok(ClusterSignal::RemotePresence(entries)) => {
                            let mut registry = lock(&hub.inner.registry);
                            if registry.remote != entries {
                                registry.remote = entries;
                                registry.presence_changes += 1;
                                drop(registry);
                                hub.inner.presence_dirty.notify_one();
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            })
        };
        vec![presence, typing, remote]
    }

    /// Publishes a stats topic's new value to every subscriber, unless it equals the last
    /// one. Returns whether it was sent.
    pub fn publish_stats(&self, value: StatsValue) -> bool {
        let topic = value.topic();
        let sent = self.inner.board.send_if_modified(|board| {
            let current = &mut board.stats[topic.index()];
            if current.as_ref().is_some_and(|c| c.value == value) {
                return false;
            }
            let seq = self.inner.seq[topic.index()].fetch_add(1, Ordering::Relaxed) + 1;
            let frame = Frame::json(&StatsMessage { kind: topic.name(), seq, payload: &value });
            *current = Some(StatsFrame { value, seq, frame });
            true
        });
        let counter =
            if sent { &self.inner.metrics.stats_published } else { &self.inner.metrics.stats_unchanged };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }

    /// Notes that a change to `topic` committed: its published value is stale until a
    /// recompute that starts after this call settles it.
    pub fn mark_stale(&self, topic: StatsTopic) {
        self.inner.stale[topic.index()].fetch_add(1, Ordering::SeqCst);
    }

    /// The changes announced so far for `topic` (read when a recompute starts).
    pub fn stale_generation(&self, topic: StatsTopic) -> u64 {
        self.inner.stale[topic.index()].load(Ordering::SeqCst)
    }

    /// Records that the value now published reflects every change up to `generation`.
    pub fn settle(&self, topic: StatsTopic, generation: u64) {
        self.inner.settled[topic.index()].send_if_modified(|settled| {
            let newer = generation > *settled;
            if newer {
                *settled = generation;
            }
            newer
        });
    }

    /// Waits (at most `limit`) until `topic`'s published value reflects every change
    /// announced before this call — so a snapshot never predates a change its client has
    /// already seen confirmed. Returns at once when nothing is pending.
    pub async fn wait_fresh(&self, topic: StatsTopic, limit: Duration) {
        let target = self.stale_generation(topic);
        let mut settled = self.inner.settled[topic.index()].subscribe();
        let _ = tokio::time::timeout(limit, settled.wait_for(|g| *g >= target)).await;
    }

    /// The newest value of `topic`, if one was published.
    pub fn current(&self, topic: StatsTopic) -> Option<StatsValue> {
        self.inner.board.borrow().stats[topic.index()].as_ref().map(|s| s.value)
    }

    /// A feed for a new connection, subscribed to nothing yet.
    pub fn feed(&self) -> ClientFeed {
        ClientFeed {
            board: self.inner.board.subscribe(),
            stats_sent: [None; 3],
            presence_sent: None,
            pending: VecDeque::new(),
        }
    }

    /// A feed subscribed to every stats topic (what a connection gets by default).
    pub fn subscribe(&self) -> ClientFeed {
        let mut feed = self.feed();
        for topic in StatsTopic::ALL {
            feed.watch_stats(topic);
        }
        feed
    }

    /// Registers a connection for personal messages, typing and presence; it counts as
    /// online until the handle is dropped. Its credential's issue time is unknown: any
    /// retirement of the user's credentials closes it.
    pub fn register(&self, user: &ConnectedUser) -> Registration {
        self.register_credential(user, None)
    }

    /// [`Hub::register`] for a connection whose credential was issued at `issued_at_ms`
    /// (milliseconds since the epoch), so a user change retiring older credentials closes
    /// it only if it is older. A change already seen for the user applies at once.
    pub fn register_credential(&self, user: &ConnectedUser, issued_at_ms: Option<i64>) -> Registration {
        let mailbox = Arc::new(Mailbox::default());
        let revocation = Arc::new(Revocation::default());
        let id = {
            let mut registry = lock(&self.inner.registry);
            if let Some(code) = registry.user_changes.get(&user.user_id).and_then(|c| c.closes(issued_at_ms))
            {
                revocation.revoke(code);
            }
            registry.next_id += 1;
            let id = registry.next_id;
            registry.connections.insert(
                id,
                Registered {
                    user: user.clone(),
                    mailbox: mailbox.clone(),
                    conversations: HashSet::new(),
                    issued_at_ms,
                    revocation: revocation.clone(),
                },
            );
            registry.by_username.entry(user.username.clone()).or_default().insert(id);
            let entry = registry.users.entry(user.user_id).or_insert_with(|| LocalUser {
                username: user.username.clone(),
                connections: 0,
                viewing: None,
            });
            entry.connections += 1;
            registry.presence_changes += 1;
            id
        };
        self.inner.metrics.connections.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        self.inner.presence_dirty.notify_one();
        Registration { hub: self.clone(), id, user_id: user.user_id, mailbox, revocation }
    }

    /// A user's account changed (on any instance): closes this instance's connections of
    /// that user with 4403 when deactivated, else with 4401 those whose credential was issued
    /// before the retirement instant; remembers the change for connections registering just
    /// after it.
    pub fn user_updated(&self, update: &UserUpdate) {
        let change = UserChange {
            active: update.user.active,
            valid_after_ms: update.tokens_valid_after.timestamp_millis(),
            seen: Instant::now(),
        };
        let mut registry = lock(&self.inner.registry);
        let user_id = update.user.id;
        if !registry.user_changes.contains_key(&user_id)
            && registry.user_changes.len() >= REMEMBERED_USER_CHANGES
            && let Some(oldest) = registry.user_changes.iter().min_by_key(|(_, c)| c.seen).map(|(id, _)| *id)
        {
            registry.user_changes.remove(&oldest);
        }
        registry.user_changes.insert(user_id, change);
        let mut closed = 0;
        for conn in registry.connections.values().filter(|c| c.user.user_id == user_id) {
            if let Some(code) = change.closes(conn.issued_at_ms) {
                conn.revocation.revoke(code);
                closed += 1;
            }
        }
        drop(registry);
        if closed > 0 {
            tracing::info!(
                user_id,
                closed,
                active = change.active,
                "closing the connections of a changed user"
            );
        }
    }

    fn unregister(&self, id: u64, user_id: i64) {
        {
            let mut registry = lock(&self.inner.registry);
            if let Some(gone) = registry.connections.remove(&id) {
                if let Some(ids) = registry.by_username.get_mut(&gone.user.username) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        registry.by_username.remove(&gone.user.username);
                    }
                }
                for conversation in gone.conversations {
                    if let Some(ids) = registry.by_conversation.get_mut(&conversation) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            registry.by_conversation.remove(&conversation);
                        }
                    }
                }
            }
            if let Some(user) = registry.users.get_mut(&user_id) {
                user.connections = user.connections.saturating_sub(1);
                if user.connections == 0 {
                    registry.users.remove(&user_id);
                }
            }
            registry.presence_changes += 1;
        }
        self.inner.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        self.inner.presence_dirty.notify_one();
    }

    /// Sends `task:assigned` to every connection of the task's assignee on this instance.
    pub fn task_assigned(&self, task: &Task) {
        let Some(assignee) = task.assignee.as_deref() else { return };
        let registry = lock(&self.inner.registry);
        let Some(ids) = registry.by_username.get(assignee) else { return };
        let frame = server::task_assigned(task);
        for id in ids {
            if let Some(conn) = registry.connections.get(id) {
                conn.mailbox.put(MailKey::TaskAssigned(task.id), frame.clone(), &self.inner.metrics);
            }
        }
    }

    /// Records what a user on this instance is looking at.
    fn set_viewing(&self, user_id: i64, path: String) {
        let changed = {
            let mut registry = lock(&self.inner.registry);
            match registry.users.get_mut(&user_id) {
                Some(user) if user.viewing.as_deref() != Some(&path) => {
                    user.viewing = Some(path);
                    registry.presence_changes += 1;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.inner.presence_dirty.notify_one();
        }
    }

    fn set_conversations(&self, id: u64, conversations: &HashSet<i64>) {
        let mut registry = lock(&self.inner.registry);
        let Some(conn) = registry.connections.get_mut(&id) else { return };
        let old = std::mem::replace(&mut conn.conversations, conversations.clone());
        for gone in old.difference(conversations) {
            if let Some(ids) = registry.by_conversation.get_mut(gone) {
                ids.remove(&id);
                if ids.is_empty() {
                    registry.by_conversation.remove(gone);
                }
            }
        }
        for new in conversations.difference(&old) {
            registry.by_conversation.entry(*new).or_default().insert(id);
        }
    }

    /// A local client typed (or stopped): relay to the conversation's other subscribers here
    /// and tell the other instances.
    fn typing_from(&self, id: u64, user: &ConnectedUser, conversation_id: i64, typing: bool) {
        let signal =
            Typing { conversation_id, user_id: user.user_id, username: user.username.clone(), typing };
        self.inner.cluster.share_typing(&signal);
        self.apply_typing(signal, Some(id));
    }

    /// Updates the typing state; relays when it changed. Refreshes only extend the deadline.
    fn apply_typing(&self, signal: Typing, origin: Option<u64>) {
        let key = (signal.conversation_id, signal.user_id);
        let changed = {
            let mut states = lock(&self.inner.typing);
            if signal.typing {
                let until = Instant::now() + TYPING_TIMEOUT;
                states.insert(key, TypingState { username: signal.username.clone(), until, origin }).is_none()
            } else {
                states.remove(&key).is_some()
            }
        };
        self.inner.typing_changed.notify_one();
        if changed {
            self.relay_typing(&signal, origin);
        }
    }

    fn expire_typing(&self) {
        let now = Instant::now();
        let expired: Vec<(Typing, Option<u64>)> = {
            let mut states = lock(&self.inner.typing);
            let keys: Vec<(i64, i64)> =
                states.iter().filter(|(_, s)| s.until <= now).map(|(k, _)| *k).collect();
            keys.into_iter()
                .filter_map(|key| {
                    states.remove(&key).map(|s| {
                        let typing = Typing {
                            conversation_id: key.0,
                            user_id: key.1,
                            username: s.username,
                            typing: false,
                        };
                        (typing, s.origin)
                    })
                })
                .collect()
        };
        for (typing, origin) in expired {
            self.relay_typing(&typing, origin);
        }
    }

    fn relay_typing(&self, typing: &Typing, except: Option<u64>) {
        let registry = lock(&self.inner.registry);
        let Some(ids) = registry.by_conversation.get(&typing.conversation_id) else { return };
        let frame = server::typing(typing);
        let key = MailKey::Typing { conversation: typing.conversation_id, user: typing.user_id };
        for id in ids.iter().filter(|id| Some(**id) != except) {
            if let Some(conn) = registry.connections.get(id) {
                conn.mailbox.put(key, frame.clone(), &self.inner.metrics);
            }
        }
    }

    /// Rebuilds the presence message (local users plus other instances'), publishes it if it
    /// changed, and shares the local part with the other instances.
    fn publish_presence(&self) {
        let (built, local, merged) = {
            let mut registry = lock(&self.inner.registry);
            registry.presence_built = registry.presence_changes;
            let built = registry.presence_changes;
            let local: Vec<PresenceEntry> = registry
                .users
                .iter()
                .map(|(id, u)| PresenceEntry {
                    user_id: *id,
                    username: u.username.clone(),
                    connections: u.connections,
                    viewing: u.viewing.clone(),
                })
                .collect();
            let mut merged: HashMap<i64, PresenceEntry> = HashMap::new();
            for entry in registry.remote.iter().chain(local.iter()) {
                merged
                    .entry(entry.user_id)
                    .and_modify(|m| {
                        m.connections += entry.connections;
                        if entry.viewing.is_some() {
                            m.viewing = entry.viewing.clone();
                        }
                    })
                    .or_insert_with(|| entry.clone());
            }
            let mut merged: Vec<PresenceEntry> = merged.into_values().collect();
            merged.sort_by(|a, b| a.username.cmp(&b.username).then(a.user_id.cmp(&b.user_id)));
            (built, local, merged)
        };
        self.inner.cluster.share_presence(&local);
        let frame = server::presence(&merged);
        // Two builds may race to the board (the worker's and a subscriber's refresh): the one
        // built from the older registry state must not replace the newer.
        let sent = self.inner.board.send_if_modified(|board| {
            if built < board.presence_built {
                return false;
            }
            board.presence_built = built;
            let version = match &board.presence {
                Some((_, current)) if *current == frame => return false,
                Some((version, _)) => version + 1,
                None => 1,
            };
            board.presence = Some((version, frame));
            true
        });
        if sent {
            self.inner.metrics.presence_published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes presence now if it changed since it was last published, so a connection
    /// that subscribes finds itself in the value it is given (presence is otherwise rebuilt
    /// at most every [`PRESENCE_MIN_INTERVAL`]).
    pub fn refresh_presence(&self) {
        let stale = {
            let registry = lock(&self.inner.registry);
            registry.presence_built < registry.presence_changes
        };
        if stale {
            self.publish_presence();
        }
    }

    /// Tells every connection to close (code 1001): the server is going away.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.board.send_modify(|board| board.shutdown = true);
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
    id: u64,
    user_id: i64,
    mailbox: Arc<Mailbox>,
    revocation: Arc<Revocation>,
}

impl Registration {
    /// Waits until the server must close this connection because of a user change, and
    /// returns the close code (4403 deactivated, 4401 credential retired). Cancel-safe.
    pub async fn revoked(&self) -> u16 {
        self.revocation.wait().await
    }

    /// The connection's mailbox of personal and typing messages.
    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// Records what the user is looking at (presence).
    pub fn viewing(&self, path: String) {
        self.hub.set_viewing(self.user_id, path);
    }

    /// The conversations whose typing this connection receives.
    pub fn set_conversations(&self, conversations: &HashSet<i64>) {
        self.hub.set_conversations(self.id, conversations);
    }

    /// The user typed (or stopped) in a conversation.
    pub fn typing(&self, user: &ConnectedUser, conversation_id: i64, typing: bool) {
        self.hub.typing_from(self.id, user, conversation_id, typing);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id, self.user_id);
    }
}

/// What a connection's feed yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// A subscribed topic has a new value: send this frame.
    Frame(Frame),
    /// The server is shutting down.
    Shutdown,
}

/// One connection's subscriptions to the hub's whole-value topics (stats, presence): what it
/// follows, and the version of each it was last given.
pub struct ClientFeed {
    board: watch::Receiver<Board>,
    /// Per stats topic: `None` when not followed, else the `seq` last given (0: none yet).
    stats_sent: [Option<u64>; 3],
    /// `None` when presence is not followed, else the version last given (0: none yet).
    presence_sent: Option<u64>,
    /// Frames found newer than what was given, not yet handed out.
    pending: VecDeque<Frame>,
}

impl ClientFeed {
    /// Starts following a stats topic; returns its current value, marked as sent.
    pub fn watch_stats(&mut self, topic: StatsTopic) -> Option<Frame> {
        let board = self.board.borrow();
        let current = board.stats[topic.index()].as_ref();
        self.stats_sent[topic.index()] = Some(current.map_or(0, |s| s.seq));
        current.map(|s| s.frame.clone())
    }

    /// Stops following a stats topic.
    pub fn unwatch_stats(&mut self, topic: StatsTopic) {
        self.stats_sent[topic.index()] = None;
    }

    /// Starts following presence; returns the current value, marked as sent.
    pub fn watch_presence(&mut self) -> Option<Frame> {
        let board = self.board.borrow();
        self.presence_sent = Some(board.presence.as_ref().map_or(0, |(version, _)| *version));
        board.presence.as_ref().map(|(_, frame)| frame.clone())
    }

    /// Stops following presence.
    pub fn unwatch_presence(&mut self) {
        self.presence_sent = None;
    }

    /// The current value of every followed stats topic, in contract order, marked as sent.
    pub fn snapshot(&mut self) -> Vec<Frame> {
        let followed: Vec<StatsTopic> =
            StatsTopic::ALL.into_iter().filter(|topic| self.stats_sent[topic.index()].is_some()).collect();
        followed.into_iter().filter_map(|topic| self.watch_stats(topic)).collect()
    }

    /// Waits for the next value not yet sent of a followed topic (only the newest of each),
    /// or for shutdown. Cancel-safe: what was found stays in `pending`.
    pub async fn next(&mut self) -> FeedEvent {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return FeedEvent::Frame(frame);
            }
            {
                let board = self.board.borrow_and_update();
                if board.shutdown {
                    return FeedEvent::Shutdown;
                }
                for (sent, current) in self.stats_sent.iter_mut().zip(&board.stats) {
                    if let (Some(sent), Some(current)) = (sent.as_mut(), current)
                        && current.seq > *sent
                    {
                        *sent = current.seq;
                        self.pending.push_back(current.frame.clone());
                    }
                }
                if let (Some(sent), Some((version, frame))) = (self.presence_sent.as_mut(), &board.presence)
                    && version > sent
                {
                    *sent = *version;
                    self.pending.push_back(frame.clone());
                }
            }
            if self.pending.is_empty() && self.board.changed().await.is_err() {
                // The hub is gone: nothing more will come.
                return FeedEvent::Shutdown;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain_events::model::{Role, TaskStats};
    use serde_json::Value;

    fn tasks(pending: u64) -> StatsValue {
        StatsValue::Tasks(TaskStats { pending, in_progress: 0, completed: 0, total: pending })
    }

    fn parse(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_str()).expect("json")
    }

    fn user(id: i64, name: &str) -> ConnectedUser {
        ConnectedUser { user_id: id, username: name.into(), role: Role::Staff }
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
        let nothing = tokio::time::timeout(Duration::from_millis(20), slow.next()).await;
        assert!(nothing.is_err(), "nothing else is pending");
    }

    #[tokio::test]
    async fn snapshot_lists_followed_topics_in_contract_order_and_marks_them_seen() {
        let hub = Hub::new();
        hub.publish_stats(StatsValue::Conversations(Default::default()));
        hub.publish_stats(tasks(3));
        let mut feed = hub.subscribe();
        let types: Vec<Value> = feed.snapshot().iter().map(|f| parse(f)["type"].clone()).collect();
        assert_eq!(types, ["stats:tasks", "stats:conversations"]);
        assert!(tokio::time::timeout(Duration::from_millis(20), feed.next()).await.is_err());
        hub.publish_stats(StatsValue::Approvals(Default::default()));
        let FeedEvent::Frame(frame) = feed.next().await else { panic!("frame expected") };
        assert_eq!(parse(&frame)["type"], "stats:approvals");
    }

    #[tokio::test]
    async fn a_feed_only_gets_the_topics_it_follows() {
        let hub = Hub::new();
        let mut feed = hub.feed();
        assert_eq!(feed.watch_stats(StatsTopic::Approvals), None);
        hub.publish_stats(tasks(1));
        assert!(tokio::time::timeout(Duration::from_millis(20), feed.next()).await.is_err());
        hub.publish_stats(StatsValue::Approvals(Default::default()));
        let FeedEvent::Frame(frame) = feed.next().await else { panic!("frame expected") };
        assert_eq!(parse(&frame)["type"], "stats:approvals");
        feed.unwatch_stats(StatsTopic::Approvals);
        let current = feed.watch_stats(StatsTopic::Tasks).expect("current value");
        assert_eq!(parse(&current)["payload"]["pending"], 1);
    }

    #[tokio::test]
    async fn shutdown_reaches_every_feed() {
        let hub = Hub::new();
        let mut feed = hub.subscribe();
        hub.shutdown();
        assert_eq!(feed.next().await, FeedEvent::Shutdown);
        assert_eq!(hub.subscribe().next().await, FeedEvent::Shutdown);
    }

    #[tokio::test]
    async fn presence_counts_connections_per_user_and_follows_viewing() {
        let hub = Hub::new();
        let _workers = hub.spawn_workers();
        let mut feed = hub.feed();
        let first = feed.watch_presence().expect("a presence value");
        assert_eq!(parse(&first)["payload"]["online"], serde_json::json!([]));
        let ana1 = hub.register(&user(1, "ana"));
        let ana2 = hub.register(&user(1, "ana"));
        let bob = hub.register(&user(2, "bob"));
        ana2.viewing("/tasks".into());
        let expected = serde_json::json!([
            {"userId": 1, "username": "ana", "connections": 2, "viewing": "/tasks"},
            {"userId": 2, "username": "bob", "connections": 1, "viewing": null},
        ]);
        let mut last = Value::Null;
        while last != expected {
            let FeedEvent::Frame(frame) = feed.next().await else { panic!("frame expected") };
            last = parse(&frame)["payload"]["online"].clone();
        }
        drop((ana1, bob));
        let expected =
            serde_json::json!([{"userId": 1, "username": "ana", "connections": 1, "viewing": "/tasks"}]);
        while last != expected {
            let FeedEvent::Frame(frame) = feed.next().await else { panic!("frame expected") };
            last = parse(&frame)["payload"]["online"].clone();
        }
        assert_eq!(hub.metrics().connections.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_storm_costs_a_few_presence_messages() {
        let hub = Hub::new();
        let _workers = hub.spawn_workers();
        let registrations: Vec<Registration> =
            (0..1000).map(|i| hub.register(&user(i, &format!("u{i}")))).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(hub.metrics().presence_published.load(Ordering::Relaxed) <= 6);
        drop(registrations);
    }

    #[tokio::test]
    async fn task_assigned_reaches_only_the_assignees_connections() {
        let hub = Hub::new();
        let ana = hub.register(&user(1, "ana"));
        let bob = hub.register(&user(2, "bob"));
        let now = chrono::Utc::now();
        let task = Task {
            id: 9,
            kind: "k".into(),
            department: "d".into(),
            description: "x".into(),
            status: domain_events::model::TaskStatus::InProgress,
            assignee: Some("ana".into()),
            created_by: "bob".into(),
            created_at: now,
            updated_at: now,
            completed_at: None,
        };
        hub.task_assigned(&task);
        let frames = ana.mailbox().take().expect("not overflowed");
        assert_eq!(frames.len(), 1);
        assert_eq!(parse(&frames[0])["type"], "task:assigned");
        assert_eq!(parse(&frames[0])["payload"]["id"], 9);
        assert!(bob.mailbox().take().expect("ok").is_empty());
    }

    #[tokio::test]
    async fn a_mailbox_keeps_the_newest_per_key_and_overflows_instead_of_growing() {
        let hub = Hub::new();
        let ana = hub.register(&user(1, "ana"));
        let metrics = HubMetrics::default();
        ana.mailbox().put(MailKey::TaskAssigned(1), Frame::from_static("old"), &metrics);
        ana.mailbox().put(MailKey::TaskAssigned(1), Frame::from_static("new"), &metrics);
        assert_eq!(ana.mailbox().take().expect("ok"), vec![Frame::from_static("new")]);
        for i in 0..=MAILBOX_CAPACITY as i64 {
            ana.mailbox().put(MailKey::TaskAssigned(i), Frame::from_static("x"), &metrics);
        }
        assert_eq!(ana.mailbox().take(), Err(TooSlow));
    }

    #[tokio::test(start_paused = true)]
    async fn typing_is_relayed_to_other_subscribers_and_expires_after_six_seconds() {
        let hub = Hub::new();
        let _workers = hub.spawn_workers();
        let (ana, bob, carl) = (user(1, "ana"), user(2, "bob"), user(3, "carl"));
        let ana_conn = hub.register(&ana);
        let bob_conn = hub.register(&bob);
        let carl_conn = hub.register(&carl);
        let conv: HashSet<i64> = [7].into();
        ana_conn.set_conversations(&conv);
        bob_conn.set_conversations(&conv);
        ana_conn.typing(&ana, 7, true);
        let got = bob_conn.mailbox().take().expect("ok");
        assert_eq!(
            parse(&got[0]),
            serde_json::json!({"type":"typing","payload":{"conversationId":7,"userId":1,"username":"ana","typing":true}})
        );
        assert!(ana_conn.mailbox().take().expect("ok").is_empty(), "not echoed to the typist");
        assert!(carl_conn.mailbox().take().expect("ok").is_empty(), "not subscribed");
        // A refresh within 6 s sends nothing new and extends the deadline.
        tokio::time::sleep(Duration::from_secs(4)).await;
        ana_conn.typing(&ana, 7, true);
        assert!(bob_conn.mailbox().take().expect("ok").is_empty());
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(bob_conn.mailbox().take().expect("ok").is_empty(), "still typing at 8 s");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let got = bob_conn.mailbox().take().expect("ok");
        assert_eq!(parse(&got[0])["payload"]["typing"], false, "expired 6 s after the last refresh");
    }
}
