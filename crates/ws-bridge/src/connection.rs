//! One client's session, independent of the transport: a stream of [`Outgoing`] that the
//! transport polls when it can write (the HTTP dispatcher polls it as the response body, so
//! no task and no channel per connection), fed by a stream of [`Incoming`].
//!
//! Backpressure is the socket's: a client that stops reading is no longer polled, so nothing
//! queues for it but what the hub bounds — stats values are conflated on the board (only the
//! newest is kept) and personal messages wait in a bounded mailbox, whose overflow ends the
//! session with 1013 the next time it is polled.
//!
//! Order on connect: register with the hub, send `connected`, then the snapshot — each
//! topic followed before its value is read, and a value read only once it reflects every
//! change already answered ([`Hub::wait_fresh`]) — so a change committed while the client
//! connects is delivered, never missed. How a session ends is decided in one place:
//! [`ConnectionEnd::close_frame`].
//!
//! Architecture invariant: knows the hub and the protocol; nothing of sockets, HTTP or
//! where values come from.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use domain_events::model::Actor;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};

use crate::board::{BoardView, ClientFeed, FeedEvent};
use crate::hub::{Hub, Registration};
use crate::mailbox::Closing;
use crate::protocol::{BadMessage, ClientMessage, Frame, close_code, server};
use crate::topic::{Topic, Topics};

/// What a connection was authenticated with, as far as the session cares: when it ends
/// (the token's expiry) and when it was issued (the token's `iat`, also for a ticket), which
/// decides whether a user change retiring older credentials closes the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credential {
    /// When the session must end (close 4401); `None`: never.
    pub expires_at: Option<SystemTime>,
    /// The credential's issue time, in milliseconds since the epoch; `None`: unknown.
    pub issued_at_ms: Option<i64>,
}

/// Who connects, to follow what, with which credential.
#[derive(Debug, Clone)]
pub struct ConnectionRequest {
    /// The user.
    pub user: Actor,
    /// What it follows from the start (the hub's defaults unless it asked).
    pub topics: Vec<Topic>,
    /// Its credential.
    pub credential: Credential,
    /// The id a client posts its messages to, announced in `connected` (Server-Sent
    /// Events); `None` for a transport that carries client messages itself.
    pub connection_id: Option<String>,
}

/// What the socket delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame.
    Text(String),
    /// A binary frame (not part of the protocol).
    Binary,
    /// A WebSocket ping; answered with a pong carrying the same bytes.
    Ping(Vec<u8>),
    /// A WebSocket pong.
    Pong,
    /// The client closed the connection.
    Close,
    /// A frame over the size limit.
    TooLarge,
    /// The socket failed.
    Error(String),
}

/// What the session asks the socket to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame.
    Text(Frame),
    /// A WebSocket ping.
    Ping,
    /// A WebSocket pong.
    Pong(Vec<u8>),
    /// A close frame; only [`Outgoing::End`] follows.
    Close {
        /// Close code.
        code: u16,
        /// Short reason.
        reason: &'static str,
    },
    /// Why the session ended: the stream's last item (nothing to send).
    End(ConnectionEnd),
}

/// Timings and limits of a session.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// How often the server pings.
    pub heartbeat_interval: Duration,
    /// Heartbeat intervals without a word from the client before the connection is
    /// dropped; `None`: never (a transport whose client cannot answer pings).
    pub missed_heartbeats: Option<u32>,
    /// Client messages per second allowed on average; a client above it (beyond the burst)
    /// is closed with 1008.
    pub messages_per_second: u32,
    /// Client messages allowed at once above the average.
    pub message_burst: u32,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(25),
            missed_heartbeats: Some(2),
            messages_per_second: 20,
            message_burst: 40,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The client closed (answered with 1000).
    ClientClosed,
    /// The socket ended or failed under the session (nothing more can be sent).
    SocketGone,
    /// The server shut down (1001).
    Shutdown,
    /// The token expired (4401).
    TokenExpired,
    /// A role or password change retired the credential (4401).
    CredentialRetired,
    /// The user was deactivated (4403).
    UserDeactivated,
    /// The client stopped answering pings (1001).
    HeartbeatTimeout,
    /// A frame was too large (1009).
    TooLarge,
    /// The client did not read fast enough (1013).
    TooSlow,
    /// The client sent messages too fast (1008).
    Flooding,
}

impl ConnectionEnd {
    /// The close frame the server sends for this end, if any: the one place that decides.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        Some(match self {
            ConnectionEnd::SocketGone => return None,
            ConnectionEnd::ClientClosed => (close_code::NORMAL, ""),
            ConnectionEnd::Shutdown => (close_code::GOING_AWAY, "server shutting down"),
            ConnectionEnd::TokenExpired => (close_code::TOKEN_EXPIRED, "token expired"),
            ConnectionEnd::CredentialRetired => (close_code::TOKEN_EXPIRED, "token retired: log in again"),
            ConnectionEnd::UserDeactivated => (close_code::USER_DEACTIVATED, "user deactivated"),
            ConnectionEnd::HeartbeatTimeout => (close_code::GOING_AWAY, "heartbeat timeout"),
            ConnectionEnd::TooLarge => (close_code::TOO_BIG, "frame too large"),
            ConnectionEnd::TooSlow => (close_code::TRY_AGAIN_LATER, "too slow"),
            ConnectionEnd::Flooding => (close_code::POLICY_VIOLATION, "message rate limit exceeded"),
        })
    }

    fn from_closing(closing: Closing) -> Self {
        match closing {
            Closing::TooSlow => ConnectionEnd::TooSlow,
            Closing::Code(close_code::USER_DEACTIVATED) => ConnectionEnd::UserDeactivated,
            Closing::Code(_) => ConnectionEnd::CredentialRetired,
        }
    }
}

/// A token bucket over client messages.
struct RateLimit {
    tokens: f64,
    per_second: f64,
    burst: f64,
    last: Instant,
}

impl RateLimit {
    fn new(config: &ConnectionConfig) -> Self {
        let burst = f64::from(config.message_burst.max(1));
        Self {
            tokens: burst,
            per_second: f64::from(config.messages_per_second.max(1)),
            burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; `false` when the client is over its rate.
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How long a new subscription may wait for a value that reflects every change already
/// committed (a recompute in flight); after that the current value is sent as it is.
const FRESH_VALUE_WAIT: Duration = Duration::from_secs(1);

/// Most topics one connection may follow at once.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// One client's session: the messages to send, in order, until it leaves, its token expires
/// or is retired, its user is deactivated, or the server shuts down; then the close frame
/// the end calls for and [`Outgoing::End`].
///
/// Nothing happens until the stream is polled: the transport polls it whenever it can
/// write, and drops it when the socket is gone (which unregisters the connection).
pub fn session<S>(
    hub: Hub,
    config: ConnectionConfig,
    request: ConnectionRequest,
    incoming: S,
) -> impl Stream<Item = Outgoing> + 'static
where
    S: Stream<Item = Incoming> + Unpin + 'static,
{
    stream(Session {
        hub,
        config,
        incoming,
        pending: VecDeque::new(),
        state: State::Starting(request),
        direct: None,
    })
}

/// A session whose board values (stats and presence) the transport writes itself, for many
/// connections at once: one wake-up per change and worker instead of one per connection.
/// Everything else — `connected`, snapshots, replies, personal messages, pings, the close —
/// still comes from the stream, which the transport must keep polling as for [`session`].
///
/// The transport, when the board changes ([`Hub::board_changes`]), for each connection:
/// if [`DirectFeed::may_write`] and nothing of the stream's is still unwritten, writes what
/// [`DirectFeed::take_newer`] gives (or [`DirectFeed::take_newer_in`] from a view of the
/// board; a transport that marks a change seen with [`crate::BoardChanges::newer_view`]
/// after writing some connections from an older view must visit those again); otherwise it
/// calls [`DirectFeed::poke`] (and, for an idle one, wakes the task polling the stream), and
/// the session takes the newer values itself, after everything it already sent. The transport must check, take and write on
/// the thread that polls the session, with nothing of the session's run in between: that
/// is what keeps a connection's frames in order.
pub fn direct_session<S>(
    hub: Hub,
    config: ConnectionConfig,
    request: ConnectionRequest,
    incoming: S,
) -> (impl Stream<Item = Outgoing> + 'static, DirectFeed)
where
    S: Stream<Item = Incoming> + Unpin + 'static,
{
    let direct = DirectFeed {
        mailbox: Arc::default(),
        feed: Arc::new(Mutex::new(hub.feed())),
        expires_at: deadline(request.credential.expires_at),
    };
    let session = Session {
        hub,
        config,
        incoming,
        pending: VecDeque::new(),
        state: State::Starting(request),
        direct: Some(direct.clone()),
    };
    (stream(session), direct)
}

fn stream<S>(session: Session<S>) -> impl Stream<Item = Outgoing> + 'static
where
    S: Stream<Item = Incoming> + Unpin + 'static,
{
    futures_util::stream::unfold(session, |mut session| async move {
        let item = session.next().await?;
        Some((item, session))
    })
}

/// The board side of a [`direct_session`], for the transport. What its check per change
/// reads is in the mailbox's one-word gate and here (the expiry), not behind more pointers.
#[derive(Debug, Clone)]
pub struct DirectFeed {
    /// The session's mailbox, made before it registers: its gate says whether the session
    /// waits idle, was poked, or has a close due (an order stops direct writes at once,
    /// before the session has run to send the close).
    mailbox: Arc<crate::mailbox::Mailbox>,
    feed: Arc<Mutex<ClientFeed>>,
    /// When the credential expires: from then on, nothing but the close (4401).
    expires_at: Instant,
}

/// The session's feed, shared with its transport.
fn lock(feed: &Mutex<ClientFeed>) -> MutexGuard<'_, ClientFeed> {
    feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl DirectFeed {
    /// Whether the transport may write newer values itself at `now`: the session waits with
    /// nothing to send (so they come after everything it sent), and no close is due — a
    /// close order or an expired credential wins over any value, as in the session itself.
    /// When it may not, the session's own wait has what it needs to run.
    pub fn may_write(&self, now: Instant) -> bool {
        now < self.expires_at && self.mailbox.open_to_direct_writes()
    }

    /// Appends the followed values not yet given (the newest of each) to `out`, marking them
    /// given; `false` once the server is shutting down (poke the session: it closes).
    pub fn take_newer(&self, out: &mut Vec<Frame>) -> bool {
        lock(&self.feed).take_newer(out)
    }

    /// Like [`DirectFeed::take_newer`], from a view of the board taken once for many
    /// connections: appends the indexes of the values to write ([`BoardView::frames`]).
    /// `false` (nothing appended): poke the session and wake it, it takes them itself
    /// (shutting down, or values wait in its feed).
    pub fn take_newer_in(&self, view: &BoardView, out: &mut Vec<u32>) -> bool {
        lock(&self.feed).take_newer_in(view, out)
    }

    /// Whether a close is due by order (deactivation, a retired credential, an overflowing
    /// mailbox): checked again just before writing what was taken, as orders come from other
    /// threads.
    pub fn is_closing(&self) -> bool {
        self.mailbox.is_closing()
    }

    /// Asks the session to take the newer values itself the next time it is polled.
    pub fn poke(&self) {
        self.mailbox.poke();
    }
}

/// Marks a direct session idle while it waits, and busy again however the wait ends.
struct IdleWhileWaiting<'a>(&'a crate::mailbox::Mailbox);

impl<'a> IdleWhileWaiting<'a> {
    fn new(direct: &'a DirectFeed) -> Self {
        direct.mailbox.set_idle(true);
        Self(&direct.mailbox)
    }
}

impl Drop for IdleWhileWaiting<'_> {
    fn drop(&mut self) {
        self.0.set_idle(false);
    }
}

/// The board's next values for a session that waits on the board itself; never, for a
/// direct session (the transport delivers them, or pokes).
async fn next_from_board(feed: &mut Feed) -> FeedEvent {
    match feed {
        Feed::Own(feed) => feed.next().await,
        Feed::Direct(_) => std::future::pending().await,
    }
}

/// Ready when the transport poked a direct session. Registers no waker: the transport wakes
/// the task that polls the session itself.
async fn poked(direct: Option<&DirectFeed>) {
    std::future::poll_fn(|_| match direct {
        Some(direct) if direct.mailbox.take_poke() => std::task::Poll::Ready(()),
        _ => std::task::Poll::Pending,
    })
    .await;
}

/// Where a session is.
enum State {
    /// Not yet registered.
    Starting(ConnectionRequest),
    /// Registered, following its topics.
    Live(Box<Live>),
    /// Its end is queued.
    Ended,
}

/// A registered session's state.
struct Live {
    registration: Registration,
    subscriptions: Subscriptions,
    expiry: Pin<Box<tokio::time::Sleep>>,
    heartbeat: tokio::time::Interval,
    last_heard: Instant,
    rate: RateLimit,
    /// The topics asked for on connect, until their snapshot is queued (after `connected`
    /// has gone out: the snapshot may wait for fresh values).
    initial_topics: Option<Vec<Topic>>,
}

struct Session<S> {
    hub: Hub,
    /// For a [`direct_session`]: its board side, shared with the transport.
    direct: Option<DirectFeed>,
    config: ConnectionConfig,
    incoming: S,
    /// What one step produced and is not yet sent (bounded by one step: a snapshot, a
    /// mailbox's contents, the replies to one message).
    pending: VecDeque<Outgoing>,
    state: State,
}

/// Items a drained step queue may keep room for: a snapshot's worth. One step may queue up
/// to a whole mailbox (256 messages); an idle connection does not keep room for that.
const PENDING_KEPT: usize = 16;

/// The front of `queue`; once it is empty, a queue grown past [`PENDING_KEPT`] gives back the
/// room above that (kept, so the next large step does not grow it from nothing again).
fn pop_front_shrinking<T>(queue: &mut VecDeque<T>) -> Option<T> {
    let item = queue.pop_front();
    if queue.is_empty() && queue.capacity() > PENDING_KEPT {
        queue.shrink_to(PENDING_KEPT);
    }
    item
}

impl<S: Stream<Item = Incoming> + Unpin> Session<S> {
    /// The next message to send; `None` once the end has been sent.
    async fn next(&mut self) -> Option<Outgoing> {
        loop {
            if let Some(item) = pop_front_shrinking(&mut self.pending) {
                if matches!(item, Outgoing::Text(_)) {
                    self.hub.metrics().frames_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return Some(item);
            }
            if matches!(self.state, State::Ended) {
                return None;
            }
            if let Err(end) = self.step().await {
                self.state = State::Ended;
                if let Some((code, reason)) = end.close_frame() {
                    self.pending.push_back(Outgoing::Close { code, reason });
                }
                self.pending.push_back(Outgoing::End(end));
            }
        }
    }

    /// Runs until there is something to send, or the session ends.
    async fn step(&mut self) -> Result<(), ConnectionEnd> {
        match std::mem::replace(&mut self.state, State::Ended) {
            State::Starting(request) => {
                let live = self.start(request);
                self.state = State::Live(Box::new(live));
                Ok(())
            }
            State::Live(mut live) => {
                let result = self.live_step(&mut live).await;
                self.state = State::Live(live);
                result
            }
            State::Ended => Ok(()),
        }
    }

    /// Registers and sends `connected` (the snapshot is the next step).
    fn start(&mut self, request: ConnectionRequest) -> Live {
        let hub = &self.hub;
        let issued_at_ms = request.credential.issued_at_ms;
        let registration = match &self.direct {
            Some(direct) => hub.register_with(&request.user, issued_at_ms, direct.mailbox.clone()),
            None => hub.register(&request.user, issued_at_ms),
        };
        self.pending
            .push_back(Outgoing::Text(server::connected(&request.user, request.connection_id.as_deref())));
        let feed = match &self.direct {
            Some(direct) => Feed::Direct(direct.feed.clone()),
            None => Feed::Own(hub.feed()),
        };
        let subscriptions = Subscriptions { topics: BTreeSet::new(), feed };
        let interval = self.config.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Live {
            registration,
            subscriptions,
            expiry: Box::pin(tokio::time::sleep_until(deadline(request.credential.expires_at))),
            heartbeat,
            last_heard: Instant::now(),
            rate: RateLimit::new(&self.config),
            initial_topics: Some(request.topics),
        }
    }

    /// Waits for the next thing to do, does it, and queues what it says to send.
    async fn live_step(&mut self, live: &mut Live) -> Result<(), ConnectionEnd> {
        let hub = &self.hub;
        let pending = &mut self.pending;
        // A connection closed as it registers (its user was deactivated a moment ago) gets
        // no snapshot: the wait below sends the close.
        if let Some(topics) = live.initial_topics.take()
            && !live.registration.mailbox().is_closing()
        {
            let frames = live.subscriptions.add(&topics, &live.registration, hub).await;
            pending.extend(frames.into_iter().map(Outgoing::Text));
            return Ok(());
        }
        let direct = self.direct.as_ref();
        while pending.is_empty() {
            // A direct session takes what the transport could not write before it waits —
            // unless a close is due: then the wait below sends it, and nothing before it.
            let mut newer = Vec::new();
            let closing =
                || live.registration.mailbox().is_closing() || Instant::now() >= live.expiry.deadline();
            if let Some(direct) = direct
                && !closing()
            {
                direct.mailbox.take_poke();
                if !direct.take_newer(&mut newer) {
                    return Err(ConnectionEnd::Shutdown);
                }
                // Checked again after reading the board: a close ordered in between (from
                // another thread) may come with values published after it.
                if closing() {
                    newer.clear();
                }
                if !newer.is_empty() {
                    pending.extend(newer.into_iter().map(Outgoing::Text));
                    break;
                }
            }
            let _idle = direct.map(IdleWhileWaiting::new);
            // Biased, in this order: an expired token and a close order (4401, 4403, 1013)
            // win over anything still to send — a deactivated user gets nothing more.
            tokio::select! {
                biased;
                _ = &mut live.expiry => return Err(ConnectionEnd::TokenExpired),
                _ = live.registration.mailbox().ready() => {
                    let frames = live.registration.mailbox().take().map_err(ConnectionEnd::from_closing)?;
                    pending.extend(frames.into_iter().map(Outgoing::Text));
                }
                event = next_from_board(&mut live.subscriptions.feed) => match event {
                    FeedEvent::Frame(frame) => pending.push_back(Outgoing::Text(frame)),
                    FeedEvent::Shutdown => return Err(ConnectionEnd::Shutdown),
                },
                () = poked(direct) => {}
                message = self.incoming.next() => {
                    live.last_heard = Instant::now();
                    // Pongs count too: one answers each ping, so only a client sending them unasked
                    // (each one a wake-up) reaches the limit.
                    let counted = matches!(
                        message,
                        Some(Incoming::Text(_) | Incoming::Binary | Incoming::Ping(_) | Incoming::Pong)
                    );
                    if counted && !live.rate.allow() {
                        return Err(ConnectionEnd::Flooding);
                    }
                    let replies = match message {
                        Some(Incoming::Text(text)) => match ClientMessage::parse(&text) {
                            Ok(message) => live.subscriptions.handle(message, &live.registration, hub).await,
                            Err(bad) => vec![server::error(&bad)],
                        },
                        Some(Incoming::Binary) => vec![server::error(&BadMessage::new(
                            "binary frames are not part of the protocol; send JSON text",
                        ))],
                        Some(Incoming::Ping(bytes)) => {
                            pending.push_back(Outgoing::Pong(bytes));
                            Vec::new()
                        }
                        Some(Incoming::Pong) => Vec::new(),
                        Some(Incoming::TooLarge) => return Err(ConnectionEnd::TooLarge),
                        Some(Incoming::Close) => return Err(ConnectionEnd::ClientClosed),
                        Some(Incoming::Error(error)) => {
                            tracing::debug!(%error, "protocol error from the client");
                            return Err(ConnectionEnd::SocketGone);
                        }
                        None => return Err(ConnectionEnd::SocketGone),
                    };
                    pending.extend(replies.into_iter().map(Outgoing::Text));
                }
                _ = live.heartbeat.tick() => {
                    if let Some(missed) = self.config.missed_heartbeats
                        && live.last_heard.elapsed() > self.config.heartbeat_interval * missed
                    {
                        return Err(ConnectionEnd::HeartbeatTimeout);
                    }
                    pending.push_back(Outgoing::Ping);
                }
            }
        }
        Ok(())
    }
}

/// What a connection follows, and the feed that delivers it.
struct Subscriptions {
    topics: BTreeSet<Topic>,
    feed: Feed,
}

/// A session's feed: its own, or shared with the transport ([`direct_session`]).
enum Feed {
    Own(ClientFeed),
    Direct(Arc<Mutex<ClientFeed>>),
}

impl Feed {
    fn with<R>(&mut self, f: impl FnOnce(&mut ClientFeed) -> R) -> R {
        match self {
            Feed::Own(feed) => f(feed),
            Feed::Direct(feed) => f(&mut lock(feed)),
        }
    }
}

impl Subscriptions {
    /// Follows `topics`; returns the current values of the newly followed whole-value
    /// topics (registered topics in order, then presence).
    async fn add(&mut self, topics: &[Topic], registration: &Registration, hub: &Hub) -> Vec<Frame> {
        let new: BTreeSet<Topic> = topics.iter().copied().filter(|t| !self.topics.contains(t)).collect();
        for topic in &new {
            match topic {
                Topic::Value(id) => hub.wait_fresh(*id, FRESH_VALUE_WAIT).await,
                Topic::Presence => hub.refresh_presence(),
                Topic::Conversation(_) => {}
            }
        }
        self.topics.extend(new.iter().copied());
        let mut frames = Vec::new();
        for topic in &new {
            match topic {
                Topic::Value(id) => frames.extend(self.feed.with(|f| f.follow(*id))),
                Topic::Presence => frames.push(self.feed.with(ClientFeed::follow_presence)),
                Topic::Conversation(_) => {}
            }
        }
        if new.iter().any(|t| matches!(t, Topic::Conversation(_))) {
            registration.set_conversations(&self.conversations());
        }
        frames
    }

    fn remove(&mut self, topics: &[Topic], registration: &Registration) {
        let mut conversations_changed = false;
        for topic in topics {
            if !self.topics.remove(topic) {
                continue;
            }
            match topic {
                Topic::Value(id) => self.feed.with(|f| f.unfollow(*id)),
                Topic::Presence => self.feed.with(ClientFeed::unfollow_presence),
                Topic::Conversation(_) => conversations_changed = true,
            }
        }
        if conversations_changed {
            registration.set_conversations(&self.conversations());
        }
    }

    fn conversations(&self) -> HashSet<i64> {
        self.topics
            .iter()
            .filter_map(|t| if let Topic::Conversation(id) = t { Some(*id) } else { None })
            .collect()
    }

    fn acknowledgement(&self, topics: &Topics) -> Frame {
        server::subscribed(&self.topics.iter().map(|t| t.name(topics)).collect::<Vec<_>>())
    }

    /// Handles one client message; returns the replies, in order.
    async fn handle(&mut self, message: ClientMessage, registration: &Registration, hub: &Hub) -> Vec<Frame> {
        let topics = hub.topics();
        match message {
            ClientMessage::Ping => vec![server::pong()],
            ClientMessage::Subscribe(names) => match parse_topics(&names, topics) {
                Err(bad) => vec![server::error(&bad)],
                Ok(asked) => {
                    let after = self.topics.iter().chain(asked.iter()).collect::<BTreeSet<_>>().len();
                    if after > MAX_SUBSCRIPTIONS {
                        return vec![server::error(&BadMessage::new(format!(
                            "at most {MAX_SUBSCRIPTIONS} topics per connection"
                        )))];
                    }
                    let values = self.add(&asked, registration, hub).await;
                    std::iter::once(self.acknowledgement(topics)).chain(values).collect()
                }
            },
            ClientMessage::Unsubscribe(names) => match parse_topics(&names, topics) {
                Err(bad) => vec![server::error(&bad)],
                Ok(asked) => {
                    self.remove(&asked, registration);
                    vec![self.acknowledgement(topics)]
                }
            },
            ClientMessage::Viewing(path) => {
                registration.viewing(path);
                Vec::new()
            }
            ClientMessage::Typing { conversation_id, typing } => {
                registration.typing(conversation_id, typing);
                Vec::new()
            }
        }
    }
}

/// Every name, or the first unknown one as an error (and nothing changes).
pub fn parse_topics(names: &[impl AsRef<str>], topics: &Topics) -> Result<Vec<Topic>, BadMessage> {
    names
        .iter()
        .map(|n| Topic::parse(n.as_ref(), topics).ok_or_else(|| BadMessage::unknown_topic(n.as_ref())))
        .collect()
}

/// When a token expiring at `at` must close the session (far future when it never expires).
fn deadline(at: Option<SystemTime>) -> Instant {
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    match at {
        None => far,
        Some(at) => match at.duration_since(SystemTime::now()) {
            Ok(left) => Instant::now() + left,
            Err(_) => Instant::now(),
        },
    }
}

#[cfg(test)]
mod tests;
