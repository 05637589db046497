//! One client's session, independent of the WebSocket library: the gateway adapts its
//! socket to [`Transport`] and a stream of [`Incoming`], and tests use plain channels.
//!
//! Order on connect: subscribe to the hub, send `connected`, then the snapshot — so a
//! change committed while the client connects is delivered, never missed.

use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};

use std::collections::{BTreeSet, HashSet};

use crate::hub::{ClientFeed, FeedEvent, Frame, Hub, Registration};
use crate::protocol::{BadMessage, ClientMessage, ConnectedUser, server};
use crate::topic::Topic;

/// Close codes the server uses (see `docs/protocol.md`).
pub mod close_code {
    /// The client closed, or the server closed normally.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down, or the client stopped answering pings: reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent messages faster than allowed.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The client does not read fast enough: reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The token expired, or was retired by a role or password change: log in again, do not
    /// retry with the same token.
    pub const TOKEN_EXPIRED: u16 = 4401;
    /// The user was deactivated: do not reconnect.
    pub const USER_DEACTIVATED: u16 = 4403;
}

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

impl From<Option<SystemTime>> for Credential {
    fn from(expires_at: Option<SystemTime>) -> Self {
        Self { expires_at, issued_at_ms: None }
    }
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
    /// A close frame; the session ends after it.
    Close {
        /// Close code.
        code: u16,
        /// Short reason.
        reason: &'static str,
    },
}

/// The socket was closed under the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the socket is closed")]
pub struct Closed;

/// The sending half of a client socket.
pub trait Transport: Send {
    /// Sends one message; waits while the socket's bounded buffer is full.
    fn send(&mut self, message: Outgoing) -> impl Future<Output = Result<(), Closed>> + Send;
}

/// Timings of a session.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// How often the server pings.
    pub heartbeat_interval: Duration,
    /// Pings left unanswered before the connection is dropped.
    pub missed_heartbeats: u32,
    /// How long one send may wait on a full socket before the client counts as too slow.
    pub send_timeout: Duration,
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
            missed_heartbeats: 2,
            send_timeout: Duration::from_secs(10),
            messages_per_second: 20,
            message_burst: 40,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The client closed or the socket ended.
    ClientClosed,
    /// The server shut down (sent 1001).
    Shutdown,
    /// The token expired (sent 4401).
    TokenExpired,
    /// A role or password change retired the credential (sent 4401).
    CredentialRetired,
    /// The user was deactivated (sent 4403).
    UserDeactivated,
    /// The client stopped answering pings.
    HeartbeatTimeout,
    /// A frame was too large (sent 1009).
    TooLarge,
    /// The client did not read fast enough (sent 1013 if possible).
    TooSlow,
    /// The client sent messages too fast (sent 1008).
    Flooding,
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

/// How long a new subscription may wait for a stats value that reflects every change already
/// committed (a recompute in flight); after that the current value is sent as it is.
const FRESH_VALUE_WAIT: Duration = Duration::from_secs(1);

/// Most topics one connection may follow at once.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// Serves one client until it leaves, its token expires or is retired, its user is
/// deactivated, or the server shuts down. `topics` are what it follows from the start
/// ([`Topic::DEFAULT`] unless it asked); `credential` is its token's expiry and issue time
/// (a plain `Option<SystemTime>` expiry converts into one).
#[allow(clippy::too_many_arguments)]
pub async fn serve_connection<T, S>(
    hub: &Hub,
    user: ConnectedUser,
    topics: &[Topic],
    credential: impl Into<Credential>,
    config: &ConnectionConfig,
    mut socket: T,
    mut incoming: S,
) -> ConnectionEnd
where
    T: Transport,
    S: Stream<Item = Incoming> + Unpin,
{
    // Registered (personal events) before `connected`; each topic is subscribed before its
    // value is read, so nothing published in between is lost; and a value is read only once
    // it reflects every change committed before (`Hub::wait_fresh`).
    let credential = credential.into();
    let registration = hub.register_credential(&user, credential.issued_at_ms);
    let mut session = Session { socket: &mut socket, config, hub };
    if session.send_text(server::connected(&user)).await.is_err() {
        return ConnectionEnd::ClientClosed;
    }
    let mut subscriptions = Subscriptions { topics: BTreeSet::new(), feed: hub.feed() };
    let snapshot = subscriptions.add(topics, &registration, hub).await;
    for frame in snapshot {
        if session.send_text(frame).await.is_err() {
            return ConnectionEnd::TooSlow;
        }
    }

    let expiry = tokio::time::sleep_until(deadline(credential.expires_at));
    tokio::pin!(expiry);
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + config.heartbeat_interval, config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut rate = RateLimit::new(config);

    loop {
        tokio::select! {
            event = subscriptions.feed.next() => match event {
                FeedEvent::Frame(frame) => {
                    if session.send_text(frame).await.is_err() {
                        return session.close(close_code::TRY_AGAIN_LATER, "too slow", ConnectionEnd::TooSlow).await;
                    }
                }
                FeedEvent::Shutdown => {
                    return session.close(close_code::GOING_AWAY, "server shutting down", ConnectionEnd::Shutdown).await;
                }
            },
            _ = registration.mailbox().ready() => {
                let Ok(frames) = registration.mailbox().take() else {
                    return session.close(close_code::TRY_AGAIN_LATER, "too slow", ConnectionEnd::TooSlow).await;
                };
                for frame in frames {
                    if session.send_text(frame).await.is_err() {
                        return session.close(close_code::TRY_AGAIN_LATER, "too slow", ConnectionEnd::TooSlow).await;
                    }
                }
            }
            message = incoming.next() => {
                last_heard = Instant::now();
                let counted = matches!(message, Some(Incoming::Text(_) | Incoming::Binary | Incoming::Ping(_)));
                if counted && !rate.allow() {
                    return session.close(close_code::POLICY_VIOLATION, "message rate limit exceeded", ConnectionEnd::Flooding).await;
                }
                let replies = match message {
                    Some(Incoming::Text(text)) => match ClientMessage::parse(&text) {
                        Ok(message) => subscriptions.handle(message, &user, &registration, hub).await,
                        Err(bad) => vec![server::error(&bad)],
                    },
                    Some(Incoming::Binary) => vec![server::error(&BadMessage::new(
                        "binary frames are not part of the protocol; send JSON text",
                    ))],
                    Some(Incoming::Ping(bytes)) => {
                        if session.send(Outgoing::Pong(bytes)).await.is_err() {
                            return ConnectionEnd::ClientClosed;
                        }
                        Vec::new()
                    }
                    Some(Incoming::Pong) => Vec::new(),
                    Some(Incoming::TooLarge) => {
                        return session.close(close_code::TOO_BIG, "frame too large", ConnectionEnd::TooLarge).await;
                    }
                    Some(Incoming::Close) => {
                        return session.close(close_code::NORMAL, "", ConnectionEnd::ClientClosed).await;
                    }
                    Some(Incoming::Error(error)) => {
                        tracing::debug!(%error, "websocket protocol error");
                        return ConnectionEnd::ClientClosed;
                    }
                    None => return ConnectionEnd::ClientClosed,
                };
                for reply in replies {
                    if session.send_text(reply).await.is_err() {
                        return ConnectionEnd::TooSlow;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > config.heartbeat_interval * config.missed_heartbeats {
                    return session.close(close_code::GOING_AWAY, "heartbeat timeout", ConnectionEnd::HeartbeatTimeout).await;
                }
                if session.send(Outgoing::Ping).await.is_err() {
                    return ConnectionEnd::TooSlow;
                }
            }
            _ = &mut expiry => {
                return session.close(close_code::TOKEN_EXPIRED, "token expired", ConnectionEnd::TokenExpired).await;
            }
            code = registration.revoked() => {
                return match code {
                    close_code::USER_DEACTIVATED => {
                        session.close(code, "user deactivated", ConnectionEnd::UserDeactivated).await
                    }
                    _ => session.close(code, "token retired: log in again", ConnectionEnd::CredentialRetired).await,
                };
            }
        }
    }
}

/// What a connection follows, and the feed that delivers it.
struct Subscriptions {
    topics: BTreeSet<Topic>,
    feed: ClientFeed,
}

impl Subscriptions {
    /// Follows `topics`; returns the current values of the newly followed whole-value
    /// topics (stats in contract order, then presence).
    async fn add(&mut self, topics: &[Topic], registration: &Registration, hub: &Hub) -> Vec<Frame> {
        let new: BTreeSet<Topic> = topics.iter().copied().filter(|t| !self.topics.contains(t)).collect();
        for topic in &new {
            match topic {
                Topic::Stats(stats) => hub.wait_fresh(*stats, FRESH_VALUE_WAIT).await,
                Topic::Presence => hub.refresh_presence(),
                Topic::Conversation(_) => {}
            }
        }
        self.topics.extend(new.iter().copied());
        let mut frames = Vec::new();
        for topic in &new {
            let frame = match topic {
                Topic::Stats(stats) => self.feed.watch_stats(*stats),
                Topic::Presence => self.feed.watch_presence(),
                Topic::Conversation(_) => None,
            };
            frames.extend(frame);
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
                Topic::Stats(stats) => self.feed.unwatch_stats(*stats),
                Topic::Presence => self.feed.unwatch_presence(),
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

    fn acknowledgement(&self) -> Frame {
        server::subscribed(&self.topics.iter().map(Topic::name).collect::<Vec<_>>())
    }

    /// Handles one client message; returns the replies, in order.
    async fn handle(
        &mut self,
        message: ClientMessage,
        user: &ConnectedUser,
        registration: &Registration,
        hub: &Hub,
    ) -> Vec<Frame> {
        match message {
            ClientMessage::Ping => vec![server::pong()],
            ClientMessage::Subscribe(names) => match parse_topics(&names) {
                Err(bad) => vec![server::error(&bad)],
                Ok(topics) => {
                    let after = self.topics.iter().chain(topics.iter()).collect::<BTreeSet<_>>().len();
                    if after > MAX_SUBSCRIPTIONS {
                        return vec![server::error(&BadMessage::new(format!(
                            "at most {MAX_SUBSCRIPTIONS} topics per connection"
                        )))];
                    }
                    let values = self.add(&topics, registration, hub).await;
                    std::iter::once(self.acknowledgement()).chain(values).collect()
                }
            },
            ClientMessage::Unsubscribe(names) => match parse_topics(&names) {
                Err(bad) => vec![server::error(&bad)],
                Ok(topics) => {
                    self.remove(&topics, registration);
                    vec![self.acknowledgement()]
                }
            },
            ClientMessage::Viewing(path) => {
                registration.viewing(path);
                Vec::new()
            }
            ClientMessage::Typing { conversation_id, typing } => {
                registration.typing(user, conversation_id, typing);
                Vec::new()
            }
        }
    }
}

/// Every name, or the first unknown one as an error (and nothing changes).
pub fn parse_topics(names: &[impl AsRef<str>]) -> Result<Vec<Topic>, BadMessage> {
    names
        .iter()
        .map(|n| Topic::parse(n.as_ref()).ok_or_else(|| BadMessage::unknown_topic(n.as_ref())))
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

struct Session<'a, T> {
    socket: &'a mut T,
    config: &'a ConnectionConfig,
    hub: &'a Hub,
}

impl<T: Transport> Session<'_, T> {
    /// Sends within the send timeout: a client that cannot take one frame in that time is
    /// too slow, and its buffers are not allowed to grow.
    async fn send(&mut self, message: Outgoing) -> Result<(), Closed> {
        match tokio::time::timeout(self.config.send_timeout, self.socket.send(message)).await {
            Ok(result) => result,
            Err(_) => Err(Closed),
        }
    }

    async fn send_text(&mut self, frame: Frame) -> Result<(), Closed> {
        self.send(Outgoing::Text(frame)).await?;
        self.hub.metrics().frames_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn close(&mut self, code: u16, reason: &'static str, end: ConnectionEnd) -> ConnectionEnd {
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.socket.send(Outgoing::Close { code, reason }))
                .await;
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{StatsTopic, StatsValue};
    use domain_events::model::{Role, TaskStats};
    use serde_json::Value;
    use tokio::sync::mpsc;
    use tokio_stream_shim::ReceiverStream;

    /// The smallest `Stream` over an mpsc receiver, to feed the session in tests.
    mod tokio_stream_shim {
        use std::pin::Pin;
        use std::task::{Context, Poll};
        pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);
        impl<T> futures_util::Stream for ReceiverStream<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.0.poll_recv(cx)
            }
        }
    }

    struct ChannelTransport(mpsc::Sender<Outgoing>);

    impl Transport for ChannelTransport {
        async fn send(&mut self, message: Outgoing) -> Result<(), Closed> {
            self.0.send(message).await.map_err(|_| Closed)
        }
    }

    struct Client {
        to_server: mpsc::Sender<Incoming>,
        from_server: mpsc::Receiver<Outgoing>,
        task: tokio::task::JoinHandle<ConnectionEnd>,
    }

    impl Client {
        async fn recv(&mut self) -> Outgoing {
            tokio::time::timeout(Duration::from_secs(60), self.from_server.recv())
                .await
                .expect("a message in time")
                .expect("open")
        }

        async fn recv_json(&mut self) -> Value {
            match self.recv().await {
                Outgoing::Text(frame) => serde_json::from_str(frame.as_str()).expect("json"),
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    fn connect(hub: &Hub, expires: Option<SystemTime>, config: ConnectionConfig, buffer: usize) -> Client {
        let user = ConnectedUser { user_id: 1, username: "ana".into(), role: Role::Staff };
        connect_as(hub, user, &Topic::DEFAULT, expires, config, buffer)
    }

    fn connect_as(
        hub: &Hub,
        user: ConnectedUser,
        topics: &[Topic],
        expires: Option<SystemTime>,
        config: ConnectionConfig,
        buffer: usize,
    ) -> Client {
        let (to_server, incoming) = mpsc::channel(16);
        let (out, from_server) = mpsc::channel(buffer);
        let hub = hub.clone();
        let topics = topics.to_vec();
        let task = tokio::spawn(async move {
            serve_connection(
                &hub,
                user,
                &topics,
                expires,
                &config,
                ChannelTransport(out),
                ReceiverStream(incoming),
            )
            .await
        });
        Client { to_server, from_server, task }
    }

    fn tasks(pending: u64) -> StatsValue {
        StatsValue::Tasks(TaskStats { pending, in_progress: 0, completed: 0, total: pending })
    }

    fn primed_hub() -> Hub {
        let hub = Hub::new();
        hub.publish_stats(tasks(0));
        hub.publish_stats(StatsValue::Approvals(Default::default()));
        hub.publish_stats(StatsValue::Conversations(Default::default()));
        hub
    }

    #[tokio::test]
    async fn connected_then_the_snapshot_in_order_then_changes() {
        let hub = primed_hub();
        let mut client = connect(&hub, None, ConnectionConfig::default(), 16);
        let connected = client.recv_json().await;
        assert_eq!(connected["type"], "connected");
        assert_eq!(
            connected["payload"],
            serde_json::json!({"userId": 1, "username": "ana", "role": "staff"})
        );
        let types: Vec<Value> =
            [client.recv_json().await, client.recv_json().await, client.recv_json().await]
                .into_iter()
                .map(|m| m["type"].clone())
                .collect();
        assert_eq!(types, ["stats:tasks", "stats:approvals", "stats:conversations"]);
        hub.publish_stats(tasks(4));
        let change = client.recv_json().await;
        assert_eq!(
            (change["type"].as_str(), change["payload"]["pending"].as_u64()),
            (Some("stats:tasks"), Some(4))
        );
        assert_eq!(change["seq"], 2);
    }

    #[tokio::test]
    async fn ping_gets_pong_and_bad_messages_get_errors_without_closing() {
        let hub = primed_hub();
        let mut client = connect(&hub, None, ConnectionConfig::default(), 16);
        for _ in 0..4 {
            client.recv().await;
        }
        client.to_server.send(Incoming::Text(r#"{"type":"ping"}"#.into())).await.expect("send");
        assert_eq!(client.recv_json().await, serde_json::json!({"type": "pong"}));
        for bad in ["nope", r#"{"type":"fly"}"#, "[]"] {
            client.to_server.send(Incoming::Text(bad.into())).await.expect("send");
            let error = client.recv_json().await;
            assert_eq!(error["type"], "error");
            assert_eq!(error["payload"]["code"], "bad_message");
        }
        client.to_server.send(Incoming::Binary).await.expect("send");
        assert_eq!(client.recv_json().await["payload"]["code"], "bad_message");
        client.to_server.send(Incoming::Ping(vec![1, 2])).await.expect("send");
        assert_eq!(client.recv().await, Outgoing::Pong(vec![1, 2]));
        client.to_server.send(Incoming::Text(r#"{"type":"ping"}"#.into())).await.expect("send");
        assert_eq!(client.recv_json().await["type"], "pong", "still open");
    }

    #[tokio::test]
    async fn oversized_frames_close_with_1009() {
        let hub = primed_hub();
        let mut client = connect(&hub, None, ConnectionConfig::default(), 16);
        for _ in 0..4 {
            client.recv().await;
        }
        client.to_server.send(Incoming::TooLarge).await.expect("send");
        assert_eq!(client.recv().await, Outgoing::Close { code: 1009, reason: "frame too large" });
        assert_eq!(client.task.await.expect("join"), ConnectionEnd::TooLarge);
    }

    #[tokio::test]
    async fn shutdown_closes_with_1001() {
        let hub = primed_hub();
        let mut client = connect(&hub, None, ConnectionConfig::default(), 16);
        for _ in 0..4 {
            client.recv().await;
        }
        hub.shutdown();
        assert_eq!(client.recv().await, Outgoing::Close { code: 1001, reason: "server shutting down" });
        assert_eq!(client.task.await.expect("join"), ConnectionEnd::Shutdown);
    }

    #[tokio::test]
    async fn an_expired_token_closes_with_4401() {
        let hub = primed_hub();
        let expires = SystemTime::now() + Duration::from_millis(200);
        let mut client = connect(&hub, Some(expires), ConnectionConfig::default(), 16);
        for _ in 0..4 {
            client.recv().await;
        }
        assert_eq!(client.recv().await, Outgoing::Close { code: 4401, reason: "token expired" });
        assert_eq!(client.task.await.expect("join"), ConnectionEnd::TokenExpired);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_and_drops_a_silent_client() {
        let hub = primed_hub();
        let config = ConnectionConfig { heartbeat_interval: Duration::from_secs(25), ..Default::default() };
        let mut client = connect(&hub, None, config, 16);
        for _ in 0..4 {
            client.recv().await;
        }
        assert_eq!(client.recv().await, Outgoing::Ping, "first ping after 25 s");
        client.to_server.send(Incoming::Pong).await.expect("pong");
        assert_eq!(client.recv().await, Outgoing::Ping);
        // From now on the client is silent: two more intervals and it is dropped.
        assert_eq!(client.recv().await, Outgoing::Ping);
        assert_eq!(client.recv().await, Outgoing::Close { code: 1001, reason: "heartbeat timeout" });
        assert_eq!(client.task.await.expect("join"), ConnectionEnd::HeartbeatTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_dropped_not_buffered() {
        let hub = primed_hub();
        let config = ConnectionConfig { send_timeout: Duration::from_secs(2), ..Default::default() };
        // Room for four frames in the socket, and the client never reads.
        let client = connect(&hub, None, config, 4);
        for n in 1..=100 {
            hub.publish_stats(tasks(n));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(client.task.await.expect("join"), ConnectionEnd::TooSlow);
        assert_eq!(hub.metrics().connections.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    impl Client {
        async fn send(&self, text: &str) {
            self.to_server.send(Incoming::Text(text.into())).await.expect("send");
        }

        async fn silent_for(&mut self, millis: u64) -> bool {
            tokio::time::timeout(Duration::from_millis(millis), self.from_server.recv()).await.is_err()
        }
    }

    fn person(id: i64, name: &str) -> ConnectedUser {
        ConnectedUser { user_id: id, username: name.into(), role: Role::Staff }
    }

    #[tokio::test]
    async fn topics_on_connect_subscribe_and_unsubscribe() {
        let hub = primed_hub();
        let _workers = hub.spawn_workers();
        let topics = [Topic::Stats(StatsTopic::Approvals), Topic::Presence];
        let mut client = connect_as(&hub, person(1, "ana"), &topics, None, ConnectionConfig::default(), 16);
        assert_eq!(client.recv_json().await["type"], "connected");
        assert_eq!(client.recv_json().await["type"], "stats:approvals");
        let mut presence = client.recv_json().await;
        // The presence worker may publish ana's arrival after the snapshot was taken.
        while presence["payload"]["online"].as_array().is_none_or(|online| online.is_empty()) {
            presence = client.recv_json().await;
        }
        assert_eq!(presence["payload"]["online"][0]["username"], "ana");
        // Not subscribed to tasks: no task values.
        hub.publish_stats(tasks(5));
        assert!(client.silent_for(100).await);

        client.send(r#"{"type":"subscribe","topics":["stats:tasks","conversation:4"]}"#).await;
        assert_eq!(
            client.recv_json().await,
            serde_json::json!({"type":"subscribed","payload":{"topics":["stats:tasks","stats:approvals","presence","conversation:4"]}})
        );
        let value = client.recv_json().await;
        assert_eq!(
            (value["type"].as_str(), value["payload"]["pending"].as_u64()),
            (Some("stats:tasks"), Some(5))
        );

        // An unknown topic changes nothing.
        client.send(r#"{"type":"subscribe","topics":["stats:tasks","bogus"]}"#).await;
        let error = client.recv_json().await;
        assert_eq!(error["payload"]["code"], "unknown_topic");
        client.send(r#"{"type":"unsubscribe","topics":["presence","nope:1"]}"#).await;
        assert_eq!(client.recv_json().await["payload"]["code"], "unknown_topic");

        client.send(r#"{"type":"unsubscribe","topics":["stats:approvals","presence"]}"#).await;
        assert_eq!(
            client.recv_json().await["payload"]["topics"],
            serde_json::json!(["stats:tasks", "conversation:4"])
        );
        hub.publish_stats(StatsValue::Approvals(domain_events::model::ApprovalStats {
            pending: 1,
            ..Default::default()
        }));
        hub.publish_stats(tasks(6));
        assert_eq!(client.recv_json().await["payload"]["pending"], 6, "approvals no longer followed");
    }

    #[tokio::test]
    async fn typing_goes_to_the_other_subscribers_of_the_conversation() {
        let hub = primed_hub();
        let _workers = hub.spawn_workers();
        let conv = [Topic::Conversation(3)];
        let mut ana = connect_as(&hub, person(1, "ana"), &conv, None, ConnectionConfig::default(), 16);
        let mut bob = connect_as(&hub, person(2, "bob"), &conv, None, ConnectionConfig::default(), 16);
        let mut carl = connect_as(&hub, person(3, "carl"), &[], None, ConnectionConfig::default(), 16);
        for client in [&mut ana, &mut bob, &mut carl] {
            assert_eq!(client.recv_json().await["type"], "connected");
        }
        ana.send(r#"{"type":"typing","payload":{"conversationId":3,"typing":true}}"#).await;
        assert_eq!(
            bob.recv_json().await,
            serde_json::json!({"type":"typing","payload":{"conversationId":3,"userId":1,"username":"ana","typing":true}})
        );
        ana.send(r#"{"type":"typing","payload":{"conversationId":3,"typing":false}}"#).await;
        assert_eq!(bob.recv_json().await["payload"]["typing"], false);
        assert!(ana.silent_for(50).await, "the typist gets no echo");
        assert!(carl.silent_for(50).await, "not subscribed");
    }

    #[tokio::test]
    async fn presence_follows_connections_and_viewing() {
        let hub = primed_hub();
        let _workers = hub.spawn_workers();
        let mut watcher =
            connect_as(&hub, person(1, "ana"), &[Topic::Presence], None, ConnectionConfig::default(), 64);
        assert_eq!(watcher.recv_json().await["type"], "connected");
        let bob = connect_as(&hub, person(2, "bob"), &[], None, ConnectionConfig::default(), 64);
        bob.send(r#"{"type":"viewing","payload":{"path":"/approvals"}}"#).await;
        let wanted = serde_json::json!([
            {"userId":1,"username":"ana","connections":1,"viewing":null},
            {"userId":2,"username":"bob","connections":1,"viewing":"/approvals"},
        ]);
        let mut last = Value::Null;
        while last != wanted {
            let message = watcher.recv_json().await;
            assert_eq!(message["type"], "presence");
            last = message["payload"]["online"].clone();
        }
        drop(bob);
        let wanted = serde_json::json!([{"userId":1,"username":"ana","connections":1,"viewing":null}]);
        while last != wanted {
            last = watcher.recv_json().await["payload"]["online"].clone();
        }
    }

    #[tokio::test]
    async fn a_flooding_client_is_closed_with_1008() {
        let hub = primed_hub();
        let config = ConnectionConfig { messages_per_second: 5, message_burst: 10, ..Default::default() };
        let mut client = connect(&hub, None, config, 256);
        for _ in 0..4 {
            client.recv().await;
        }
        for _ in 0..10 {
            client.send(r#"{"type":"ping"}"#).await;
            assert_eq!(client.recv_json().await["type"], "pong", "within the burst");
        }
        client.send(r#"{"type":"ping"}"#).await;
        assert_eq!(
            client.recv().await,
            Outgoing::Close { code: 1008, reason: "message rate limit exceeded" }
        );
        assert_eq!(client.task.await.expect("join"), ConnectionEnd::Flooding);
    }

    #[tokio::test]
    async fn the_snapshot_waits_for_a_change_already_committed() {
        let hub = primed_hub();
        // A change committed (and was confirmed to someone) but is not recomputed yet.
        hub.mark_stale(StatsTopic::Tasks);
        let mut client = connect(&hub, None, ConnectionConfig::default(), 16);
        assert_eq!(client.recv_json().await["type"], "connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
        hub.publish_stats(tasks(9));
        hub.settle(StatsTopic::Tasks, hub.stale_generation(StatsTopic::Tasks));
        let first = client.recv_json().await;
        assert_eq!(
            (first["type"].as_str(), first["payload"]["pending"].as_u64()),
            (Some("stats:tasks"), Some(9))
        );
    }

    fn user_update(user_id: i64, active: bool, valid_after_ms: i64) -> domain_events::model::UserUpdate {
        domain_events::model::UserUpdate {
            user: domain_events::model::User {
                id: user_id,
                username: format!("user{user_id}"),
                role: Role::Staff,
                active,
                created_at: chrono::Utc::now(),
            },
            tokens_valid_after: chrono::DateTime::from_timestamp_millis(valid_after_ms).expect("valid"),
        }
    }

    /// A session for user 1 whose credential was issued at `issued_at_ms`.
    fn connect_issued(hub: &Hub, issued_at_ms: i64) -> Client {
        let (to_server, incoming) = mpsc::channel(16);
        let (out, from_server) = mpsc::channel(16);
        let hub = hub.clone();
        let user = ConnectedUser { user_id: 1, username: "ana".into(), role: Role::Staff };
        let credential = Credential { expires_at: None, issued_at_ms: Some(issued_at_ms) };
        let task = tokio::spawn(async move {
            serve_connection(
                &hub,
                user,
                &Topic::DEFAULT,
                credential,
                &ConnectionConfig::default(),
                ChannelTransport(out),
                ReceiverStream(incoming),
            )
            .await
        });
        Client { to_server, from_server, task }
    }

    #[tokio::test]
    async fn a_deactivated_user_is_closed_with_4403_and_a_retired_credential_with_4401() {
        let hub = primed_hub();
        let mut older = connect_issued(&hub, 1_000);
        let mut newer = connect_issued(&hub, 3_000);
        let mut other =
            connect_as(&hub, person(2, "bob"), &Topic::DEFAULT, None, ConnectionConfig::default(), 16);
        for client in [&mut older, &mut newer, &mut other] {
            for _ in 0..4 {
                client.recv().await;
            }
        }
        // A password change at 2,000 ms retires what was issued before it, not after.
        hub.user_updated(&user_update(1, true, 2_000));
        assert_eq!(older.recv().await, Outgoing::Close { code: 4401, reason: "token retired: log in again" });
        assert_eq!(older.task.await.expect("join"), ConnectionEnd::CredentialRetired);
        newer.to_server.send(Incoming::Text(r#"{"type":"ping"}"#.into())).await.expect("send");
        assert_eq!(newer.recv_json().await["type"], "pong", "a newer credential stays");
        // Deactivation closes every connection of the user, however new, and no one else's.
        hub.user_updated(&user_update(1, false, 2_000));
        assert_eq!(newer.recv().await, Outgoing::Close { code: 4403, reason: "user deactivated" });
        assert_eq!(newer.task.await.expect("join"), ConnectionEnd::UserDeactivated);
        other.to_server.send(Incoming::Text(r#"{"type":"ping"}"#.into())).await.expect("send");
        assert_eq!(other.recv_json().await["type"], "pong", "another user stays");
        // A connection that registers after the change (it raced with it) is closed at once.
        let mut late = connect_issued(&hub, 5_000);
        assert_eq!(late.recv_json().await["type"], "connected");
        let mut last = late.recv().await;
        while matches!(last, Outgoing::Text(_)) {
            last = late.recv().await;
        }
        assert_eq!(last, Outgoing::Close { code: 4403, reason: "user deactivated" });
        // Reactivated: a new credential is fine again.
        hub.user_updated(&user_update(1, true, 2_000));
        let mut back = connect_issued(&hub, 6_000);
        for _ in 0..4 {
            back.recv().await;
        }
        back.to_server.send(Incoming::Text(r#"{"type":"ping"}"#.into())).await.expect("send");
        assert_eq!(back.recv_json().await["type"], "pong");
    }
}
