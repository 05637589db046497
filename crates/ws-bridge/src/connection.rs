//! One client's session, independent of the WebSocket library: the gateway adapts its
//! socket to [`Transport`] and a stream of [`Incoming`], and tests use plain channels.
//!
//! Order on connect: subscribe to the hub, send `connected`, then the snapshot — so a
//! change committed while the client connects is delivered, never missed.

use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};

use crate::hub::{FeedEvent, Frame, Hub};
use crate::protocol::{ClientMessage, ConnectedUser, server};

/// Close codes the server uses (see `docs/protocol.md`).
pub mod close_code {
    /// The client closed, or the server closed normally.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down, or the client stopped answering pings: reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The client does not read fast enough: reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The token expired: log in again, do not retry with the same token.
    pub const TOKEN_EXPIRED: u16 = 4401;
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
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(25),
            missed_heartbeats: 2,
            send_timeout: Duration::from_secs(10),
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
    /// The client stopped answering pings.
    HeartbeatTimeout,
    /// A frame was too large (sent 1009).
    TooLarge,
    /// The client did not read fast enough (sent 1013 if possible).
    TooSlow,
}

/// Serves one client until it leaves, its token expires or the server shuts down.
pub async fn serve_connection<T, S>(
    hub: &Hub,
    user: ConnectedUser,
    token_expires_at: Option<SystemTime>,
    config: &ConnectionConfig,
    mut socket: T,
    mut incoming: S,
) -> ConnectionEnd
where
    T: Transport,
    S: Stream<Item = Incoming> + Unpin,
{
    let _guard = hub.connection_guard();
    let mut feed = hub.subscribe();
    let mut session = Session { socket: &mut socket, config, hub };

    if session.send_text(server::connected(&user)).await.is_err() {
        return ConnectionEnd::ClientClosed;
    }
    for frame in feed.snapshot() {
        if session.send_text(frame).await.is_err() {
            return ConnectionEnd::TooSlow;
        }
    }

    let expiry = tokio::time::sleep_until(deadline(token_expires_at));
    tokio::pin!(expiry);
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + config.heartbeat_interval, config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();

    loop {
        tokio::select! {
            event = feed.next() => match event {
                FeedEvent::Frame(frame) => {
                    if session.send_text(frame).await.is_err() {
                        return session.close(close_code::TRY_AGAIN_LATER, "too slow", ConnectionEnd::TooSlow).await;
                    }
                }
                FeedEvent::Shutdown => {
                    return session.close(close_code::GOING_AWAY, "server shutting down", ConnectionEnd::Shutdown).await;
                }
            },
            message = incoming.next() => {
                last_heard = Instant::now();
                match message {
                    Some(Incoming::Text(text)) => {
                        let reply = match ClientMessage::parse(&text) {
                            Ok(ClientMessage::Ping) => server::pong(),
                            Err(bad) => server::error(&bad),
                        };
                        if session.send_text(reply).await.is_err() {
                            return ConnectionEnd::TooSlow;
                        }
                    }
                    Some(Incoming::Binary) => {
                        let bad = crate::protocol::BadMessage {
                            code: "bad_message",
                            message: "binary frames are not part of the protocol; send JSON text".into(),
                        };
                        if session.send_text(server::error(&bad)).await.is_err() {
                            return ConnectionEnd::TooSlow;
                        }
                    }
                    Some(Incoming::Ping(bytes)) => {
                        if session.send(Outgoing::Pong(bytes)).await.is_err() {
                            return ConnectionEnd::ClientClosed;
                        }
                    }
                    Some(Incoming::Pong) => {}
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
        }
    }
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
    use crate::topic::StatsValue;
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
        let (to_server, incoming) = mpsc::channel(16);
        let (out, from_server) = mpsc::channel(buffer);
        let hub = hub.clone();
        let user = ConnectedUser { user_id: 1, username: "ana".into(), role: Role::Staff };
        let task = tokio::spawn(async move {
            serve_connection(&hub, user, expires, &config, ChannelTransport(out), ReceiverStream(incoming))
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
}
