//! The session over plain channels: what a client sees, in order, and how it ends.

use domain_events::model::Role;
use serde_json::Value;
use tokio::sync::mpsc;

use super::*;
use crate::topic::testing;
use crate::topic::{TopicId, TopicValue};

const TASKS: TopicId = TopicId(0);
const APPROVALS: TopicId = TopicId(1);
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
    let defaults = hub.topics().defaults();
    connect_as(hub, person(1, "ana"), &defaults, expires, config, buffer)
}

fn connect_as(
    hub: &Hub,
    user: Actor,
    topics: &[Topic],
    expires: Option<SystemTime>,
    config: ConnectionConfig,
    buffer: usize,
) -> Client {
    let credential = Credential { expires_at: expires, issued_at_ms: None };
    start(
        hub,
        ConnectionRequest { user, topics: topics.to_vec(), credential, connection_id: None },
        config,
        buffer,
    )
}

fn start(hub: &Hub, request: ConnectionRequest, config: ConnectionConfig, buffer: usize) -> Client {
    let (to_server, incoming) = mpsc::channel(16);
    let (out, from_server) = mpsc::channel(buffer);
    let hub = hub.clone();
    // The transport's part: poll the session whenever the "socket" (a bounded channel) has
    // room, as the HTTP dispatcher does.
    let task = tokio::spawn(async move {
        let mut outgoing = std::pin::pin!(session(hub, config, request, ReceiverStream(incoming)));
        while let Some(item) = outgoing.next().await {
            if let Outgoing::End(end) = item {
                return end;
            }
            if out.send(item).await.is_err() {
                return ConnectionEnd::SocketGone;
            }
        }
        panic!("the session ended without saying why")
    });
    Client { to_server, from_server, task }
}

fn n(value: u64) -> TopicValue {
    TopicValue::json(&serde_json::json!({ "pending": value }))
}

fn primed_hub() -> Hub {
    let hub = Hub::new(testing::topics().0);
    for topic in hub.topics().clone().ids() {
        hub.publish(topic, &n(0));
    }
    hub
}

#[tokio::test]
async fn connected_then_the_snapshot_in_order_then_changes() {
    let hub = primed_hub();
    let mut client = connect(&hub, None, ConnectionConfig::default(), 16);
    let connected = client.recv_json().await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["payload"], serde_json::json!({"userId": 1, "username": "ana", "role": "staff"}));
    let types: Vec<Value> = [client.recv_json().await, client.recv_json().await, client.recv_json().await]
        .into_iter()
        .map(|m| m["type"].clone())
        .collect();
    assert_eq!(types, ["stats:tasks", "stats:approvals", "stats:conversations"]);
    hub.publish(TASKS, &n(4));
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
async fn a_session_whose_client_cannot_answer_pings_announces_its_id_and_is_never_dropped_for_silence() {
    let hub = primed_hub();
    let config = ConnectionConfig {
        heartbeat_interval: Duration::from_secs(25),
        missed_heartbeats: None,
        ..Default::default()
    };
    let request = ConnectionRequest {
        user: person(1, "ana"),
        topics: hub.topics().defaults(),
        credential: Credential::default(),
        connection_id: Some("node.c1".into()),
    };
    let mut client = start(&hub, request, config, 16);
    let connected = client.recv_json().await;
    assert_eq!(connected["payload"]["connectionId"], "node.c1");
    for _ in 0..3 {
        client.recv().await;
    }
    // A silent client through ten intervals: still only keep-alives.
    for _ in 0..10 {
        assert_eq!(client.recv().await, Outgoing::Ping);
    }
    client.to_server.send(Incoming::Text(r#"{"type":"ping"}"#.into())).await.expect("ping");
    assert_eq!(client.recv_json().await, serde_json::json!({"type": "pong"}));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_gets_the_newest_value_not_a_backlog() {
    let hub = primed_hub();
    // Room for four frames in the socket, and the client does not read for a while.
    let mut client = connect(&hub, None, ConnectionConfig::default(), 4);
    for value in 1..=100 {
        hub.publish(TASKS, &n(value));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut received = Vec::new();
    while let Some(message) = client.within(500).await {
        received.push(message);
    }
    let tasks: Vec<u64> = received
        .iter()
        .filter_map(|m| match m {
            Outgoing::Text(f) if f.as_str().contains("stats:tasks") => {
                serde_json::from_str::<Value>(f.as_str()).ok()?["payload"]["pending"].as_u64()
            }
            _ => None,
        })
        .collect();
    assert_eq!(tasks.last(), Some(&100), "the newest value arrives: {tasks:?}");
    assert!(received.len() <= 4 + 2, "nothing queued beyond the socket and the newest value: {received:?}");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_lets_personal_messages_pile_up_is_closed_with_1013() {
    let hub = primed_hub();
    let mut client = connect(&hub, None, ConnectionConfig::default(), 4);
    tokio::time::sleep(Duration::from_millis(10)).await;
    for id in 0..=i64::try_from(crate::mailbox::MAILBOX_CAPACITY).expect("small") {
        hub.task_assigned(&assigned(id, "ana"));
    }
    let mut last = client.recv().await;
    let mut texts = 0;
    while matches!(last, Outgoing::Text(_)) {
        texts += 1;
        last = client.recv().await;
    }
    assert_eq!(last, Outgoing::Close { code: 1013, reason: "too slow" });
    assert!(texts < 4 + 4 + 10, "the backlog was not sent before closing: {texts} frames");
    assert_eq!(client.task.await.expect("join"), ConnectionEnd::TooSlow);
    assert_eq!(hub.metrics().connections.load(std::sync::atomic::Ordering::Relaxed), 0);
}

fn assigned(id: i64, assignee: &str) -> domain_events::model::Task {
    let now = chrono::Utc::now();
    domain_events::model::Task {
        id,
        kind: "k".into(),
        department: "d".into(),
        description: "x".into(),
        status: domain_events::model::TaskStatus::InProgress,
        assignee: Some(assignee.into()),
        created_by: "bob".into(),
        created_at: now,
        updated_at: now,
        completed_at: None,
    }
}

impl Client {
    async fn send(&self, text: &str) {
        self.to_server.send(Incoming::Text(text.into())).await.expect("send");
    }

    async fn silent_for(&mut self, millis: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(millis), self.from_server.recv()).await.is_err()
    }

    /// The next message within `millis`, or `None` when the server stays silent that long.
    async fn within(&mut self, millis: u64) -> Option<Outgoing> {
        tokio::time::timeout(Duration::from_millis(millis), self.from_server.recv()).await.ok().flatten()
    }
}

fn person(id: i64, name: &str) -> Actor {
    Actor { user_id: id, username: name.into(), role: Role::Staff }
}

#[tokio::test]
async fn topics_on_connect_subscribe_and_unsubscribe() {
    let hub = primed_hub();
    let _worker = hub.spawn_worker();
    let topics = [Topic::Value(APPROVALS), Topic::Presence];
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
    hub.publish(TASKS, &n(5));
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
    hub.publish(APPROVALS, &n(1));
    hub.publish(TASKS, &n(6));
    assert_eq!(client.recv_json().await["payload"]["pending"], 6, "approvals no longer followed");
}

#[tokio::test]
async fn typing_goes_to_the_other_subscribers_of_the_conversation() {
    let hub = primed_hub();
    let _worker = hub.spawn_worker();
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
    let _worker = hub.spawn_worker();
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
    assert_eq!(client.recv().await, Outgoing::Close { code: 1008, reason: "message rate limit exceeded" });
    assert_eq!(client.task.await.expect("join"), ConnectionEnd::Flooding);
}

#[tokio::test]
async fn the_snapshot_waits_for_a_change_already_committed() {
    let hub = primed_hub();
    // A change committed (and was confirmed to someone) but is not recomputed yet.
    hub.mark_stale(TASKS);
    let mut client = connect(&hub, None, ConnectionConfig::default(), 16);
    assert_eq!(client.recv_json().await["type"], "connected");
    tokio::time::sleep(Duration::from_millis(50)).await;
    hub.publish(TASKS, &n(9));
    hub.settle(TASKS, hub.stale_generation(TASKS));
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
    let credential = Credential { expires_at: None, issued_at_ms: Some(issued_at_ms) };
    let request = ConnectionRequest {
        user: person(1, "ana"),
        topics: hub.topics().defaults(),
        credential,
        connection_id: None,
    };
    start(hub, request, ConnectionConfig::default(), 16)
}

#[tokio::test]
async fn a_deactivated_user_is_closed_with_4403_and_a_retired_credential_with_4401() {
    let hub = primed_hub();
    let mut older = connect_issued(&hub, 1_000);
    let mut newer = connect_issued(&hub, 3_000);
    let mut other =
        connect_as(&hub, person(2, "bob"), &hub.topics().defaults(), None, ConnectionConfig::default(), 16);
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

#[tokio::test]
async fn a_close_order_wins_over_a_value_that_became_ready_at_the_same_time() {
    // Twenty tries: with the branches polled in random order, a value would go out before
    // the 4403 about half the time.
    for attempt in 0..20 {
        let hub = primed_hub();
        let credential = Credential { expires_at: None, issued_at_ms: Some(1_000) };
        let request = ConnectionRequest {
            user: person(1, "ana"),
            topics: hub.topics().defaults(),
            credential,
            connection_id: None,
        };
        // Room for `connected` and the three snapshot values only: the session then waits.
        let mut client = start(&hub, request, ConnectionConfig::default(), 4);
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.publish(TASKS, &n(100 + attempt));
        hub.user_updated(&user_update(1, false, 0));
        for _ in 0..4 {
            assert!(matches!(client.recv().await, Outgoing::Text(_)), "connected and the snapshot");
        }
        assert_eq!(
            client.recv().await,
            Outgoing::Close { code: 4403, reason: "user deactivated" },
            "attempt {attempt}: nothing goes out after the deactivation"
        );
    }
}

/// A direct session against a model of its transport (the worker's fan-out writing the
/// board's values itself, a socket that takes frames when it likes), in every order proptest
/// finds: per topic a client never sees a value twice or an older one after a newer, sees
/// nothing of a topic between its unsubscribe and its next subscribe, and once things settle
/// holds the board's newest value of every topic it follows.
mod direct {
    use std::collections::BTreeMap;
    use std::task::{Context, Poll};

    use proptest::prelude::*;

    use crate::board::BoardChanges;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Publish(usize),
        /// A pass of the fan-out: with a fresh view of the board, or with an older view
        /// (publishes go on while a pass writes from the view it read); a
        /// deactivation may land between taking a connection's values and writing them.
        FanOut {
            fresh: bool,
            deactivate_between: bool,
        },
        /// The transport takes at most this many messages before the socket is full.
        PollSession(usize),
        SocketTakes,
        Subscribe(usize),
        Unsubscribe(usize),
        /// The user is deactivated: a close order in the mailbox.
        Deactivate,
    }

    const NAMES: [&str; 3] = ["stats:tasks", "stats:approvals", "stats:conversations"];

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..3_usize).prop_map(Step::Publish),
            3 => (proptest::bool::weighted(0.7), proptest::bool::weighted(0.05))
                .prop_map(|(fresh, deactivate_between)| Step::FanOut { fresh, deactivate_between }),
            3 => (1..4_usize).prop_map(Step::PollSession),
            3 => Just(Step::SocketTakes),
            1 => (0..3_usize).prop_map(Step::Subscribe),
            1 => (0..3_usize).prop_map(Step::Unsubscribe),
            1 => Just(Step::Deactivate),
        ]
    }

    /// The transport: what the session handed over and the socket has not taken, and what
    /// the client received.
    /// A direct session of ana on `hub`'s default topics, and the client's sending side.
    fn open(
        hub: &Hub,
        credential: Credential,
    ) -> (impl Stream<Item = Outgoing> + use<>, DirectFeed, mpsc::Sender<Incoming>) {
        let (to_server, incoming) = mpsc::channel(64);
        let request = ConnectionRequest {
            user: person(1, "ana"),
            topics: hub.topics().defaults(),
            credential,
            connection_id: None,
        };
        let (session, direct) =
            direct_session(hub.clone(), ConnectionConfig::default(), request, ReceiverStream(incoming));
        (session, direct, to_server)
    }

    #[derive(Default)]
    struct Model {
        outbox: Vec<Value>,
        received: Vec<Value>,
        /// Publishes so far, and how many the fan-out's last view covered: it runs while
        /// the board has changed since (once per change, as `BoardChanges::changed` fires).
        published: u64,
        fanned_out: u64,
        /// The fan-out's view of the board and the publishes it covers.
        view: Option<(BoardView, u64)>,
        /// A close order was given: the fan-out must write nothing more.
        close_ordered: bool,
        /// The session ended.
        ended: bool,
    }

    impl Model {
        /// The fan-out's first round for this connection: the frames to write, if any.
        fn take(&mut self, direct: &DirectFeed, changes: &BoardChanges, fresh: bool) -> Vec<Frame> {
            if fresh || self.view.is_none() {
                self.view = Some((changes.view(), self.published));
            }
            let Some((view, covers)) = &self.view else { return Vec::new() };
            if self.published <= self.fanned_out {
                return Vec::new();
            }
            self.fanned_out = self.fanned_out.max(*covers);
            if !direct.may_write(tokio::time::Instant::now()) {
                return Vec::new();
            }
            if !self.outbox.is_empty() {
                direct.poke();
                return Vec::new();
            }
            let mut picks = Vec::new();
            assert!(direct.take_newer_in(view, &mut picks), "not shutting down");
            let frames: Vec<Option<&Frame>> = view.frames().collect();
            picks.iter().map(|&pick| frames[pick as usize].expect("a value").clone()).collect()
        }

        /// The fan-out's second round: writes what `take` gave unless a close is due by now.
        fn write(&mut self, direct: &DirectFeed, frames: Vec<Frame>) {
            if frames.is_empty() || direct.is_closing() {
                return;
            }
            assert!(!self.close_ordered, "the fan-out wrote after a close order: {frames:?}");
            self.received
                .extend(frames.iter().map(|f| serde_json::from_str::<Value>(f.as_str()).expect("json")));
        }

        fn fan_out(&mut self, direct: &DirectFeed, changes: &BoardChanges) {
            let frames = self.take(direct, changes, true);
            self.write(direct, frames);
        }

        fn poll(&mut self, session: Pin<&mut impl Stream<Item = Outgoing>>, at_most: usize) {
            let mut session = session;
            if self.ended || !self.outbox.is_empty() {
                return;
            }
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            while !self.ended
                && self.outbox.len() < at_most
                && let Poll::Ready(Some(item)) = session.as_mut().poll_next(&mut cx)
            {
                match item {
                    Outgoing::Text(frame) => {
                        self.outbox.push(serde_json::from_str(frame.as_str()).expect("json"))
                    }
                    Outgoing::Close { code, .. } => {
                        self.outbox.push(serde_json::json!({"type": "close", "code": code}))
                    }
                    Outgoing::End(_) => self.ended = true,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }

    /// Checks the client's view message by message; returns the last value per topic.
    fn check(received: &[Value]) -> BTreeMap<String, (u64, Value)> {
        let mut following: BTreeMap<String, bool> = NAMES.iter().map(|n| ((*n).to_owned(), true)).collect();
        // Per topic: the last seq seen, and whether a re-subscription allows it again.
        let mut last: BTreeMap<String, (u64, Value)> = BTreeMap::new();
        let mut resubscribed: BTreeMap<String, bool> = BTreeMap::new();
        for message in received {
            let kind = message["type"].as_str().expect("type").to_owned();
            if kind == "subscribed" {
                let now: Vec<String> = message["payload"]["topics"]
                    .as_array()
                    .expect("topics")
                    .iter()
                    .map(|t| t.as_str().expect("name").to_owned())
                    .collect();
                for name in NAMES {
                    let follows = now.iter().any(|t| t == name);
                    if follows && !following[name] {
                        resubscribed.insert(name.to_owned(), true);
                    }
                    following.insert(name.to_owned(), follows);
                }
                continue;
            }
            if !kind.starts_with("stats:") {
                continue;
            }
            assert!(following[&kind], "{kind} arrived while not followed: {received:#?}");
            let seq = message["seq"].as_u64().expect("seq");
            if let Some((previous, _)) = last.get(&kind) {
                let again = resubscribed.remove(&kind).unwrap_or(false);
                assert!(
                    seq > *previous || (again && seq >= *previous),
                    "{kind}: seq {seq} after {previous}: {received:#?}"
                );
            }
            last.insert(kind, (seq, message["payload"].clone()));
        }
        last.retain(|name, _| following[name]);
        last
    }

    fn run(steps: Vec<Step>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("rt");
        runtime.block_on(async move {
            let hub = primed_hub();
            let (session, direct, to_server) = open(&hub, Credential::default());
            let mut session = std::pin::pin!(session);
            let mut model = Model::default();
            let mut values = [0_u64; 3];
            // Each topic's newest value when the user was deactivated: nothing newer may follow.
            let mut newest_at_close: Option<[u64; 3]> = None;
            let mut following = [true; 3];
            let changes = hub.board_changes();
            let deactivate = |model: &mut Model, newest_at_close: &mut Option<[u64; 3]>, values: [u64; 3]| {
                if !model.close_ordered {
                    *newest_at_close = Some(values);
                }
                hub.user_updated(&user_update(1, false, 0));
                model.close_ordered = true;
            };
            for step in steps {
                match step {
                    Step::Publish(topic) => {
                        values[topic] += 1;
                        hub.publish(TopicId(topic), &n(values[topic]));
                        model.published += 1;
                    }
                    Step::FanOut { fresh, deactivate_between } => {
                        let frames = model.take(&direct, &changes, fresh);
                        if deactivate_between {
                            deactivate(&mut model, &mut newest_at_close, values);
                        }
                        model.write(&direct, frames);
                    }
                    Step::PollSession(at_most) => model.poll(session.as_mut(), at_most),
                    Step::SocketTakes => model.received.append(&mut model.outbox),
                    Step::Deactivate => deactivate(&mut model, &mut newest_at_close, values),
                    Step::Subscribe(topic) | Step::Unsubscribe(topic) => {
                        let kind =
                            if matches!(step, Step::Subscribe(_)) { "subscribe" } else { "unsubscribe" };
                        following[topic] = kind == "subscribe";
                        let text = serde_json::json!({"type": kind, "topics": [NAMES[topic]]}).to_string();
                        // Once the session has ended, nobody reads what the client sends.
                        let _ = to_server.try_send(Incoming::Text(text));
                    }
                }
            }
            // Settle: the transport keeps going until nothing moves.
            for _ in 0..20 {
                model.poll(session.as_mut(), usize::MAX);
                model.received.append(&mut model.outbox);
                model.fan_out(&direct, &changes);
            }
            if model.close_ordered {
                // Whatever was queued before the order, then the close, and nothing after it.
                let close = model.received.iter().position(|m| m["type"] == "close");
                let close =
                    close.unwrap_or_else(|| panic!("no close after the deactivation: {:#?}", model.received));
                assert_eq!(model.received[close]["code"], 4403);
                assert_eq!(close, model.received.len() - 1, "nothing after the close: {:#?}", model.received);
                assert!(model.ended, "the session ended");
                check(&model.received);
                let newest = newest_at_close.expect("recorded");
                for message in &model.received {
                    if let Some(topic) = NAMES.iter().position(|n| message["type"] == *n) {
                        let value = message["payload"]["pending"].as_u64().expect("a value");
                        assert!(
                            value <= newest[topic],
                            "{} {value} was published after the deactivation (then {}), yet sent: {:#?}",
                            NAMES[topic],
                            newest[topic],
                            model.received
                        );
                    }
                }
                return;
            }
            let last = check(&model.received);
            for (topic, name) in NAMES.iter().enumerate() {
                if following[topic] {
                    let (_, payload) = last.get(*name).unwrap_or_else(|| panic!("{name} never arrived"));
                    assert_eq!(payload["pending"], values[topic], "{name} is not the newest value");
                } else {
                    assert!(!last.contains_key(*name), "{name} still followed");
                }
            }
        });
    }

    /// An expired credential stops direct writes at once: the session's timer, not a value,
    /// has the next word (4401).
    #[tokio::test(start_paused = true)]
    async fn a_direct_session_takes_no_value_once_its_credential_has_expired() {
        let hub = primed_hub();
        let credential =
            Credential { expires_at: Some(SystemTime::now() + Duration::from_secs(10)), issued_at_ms: None };
        let (session, direct, _to_server) = open(&hub, credential);
        let mut model = Model::default();
        let mut session = std::pin::pin!(session);
        model.poll(session.as_mut(), usize::MAX);
        assert_eq!(model.outbox.len(), 4, "connected and the snapshot: {:?}", model.outbox);
        let now = tokio::time::Instant::now();
        assert!(direct.may_write(now), "idle, credential valid");
        assert!(!direct.may_write(now + Duration::from_secs(11)), "the credential has expired by then");
    }

    /// A value the fan-out could not write (the socket still held the session's frames)
    /// reaches the client through the session once the socket has taken them: the poke is
    /// what makes the idle session take it.
    #[tokio::test(start_paused = true)]
    async fn a_poked_session_takes_the_value_the_fan_out_could_not_write() {
        let hub = primed_hub();
        let (session, direct, _to_server) = open(&hub, Credential::default());
        let changes = hub.board_changes();
        let mut model = Model::default();
        let mut session = std::pin::pin!(session);
        model.poll(session.as_mut(), usize::MAX);
        assert_eq!(model.outbox.len(), 4, "connected and the snapshot: {:?}", model.outbox);
        assert!(direct.may_write(tokio::time::Instant::now()), "idle");
        hub.publish(TopicId(0), &n(1));
        model.published += 1;
        assert!(model.take(&direct, &changes, true).is_empty(), "the socket is full: poked instead");
        model.received.append(&mut model.outbox);
        model.poll(session.as_mut(), usize::MAX);
        assert_eq!(model.outbox.len(), 1, "the session took it itself: {:?}", model.outbox);
        assert_eq!(model.outbox[0]["type"], "stats:tasks");
        assert_eq!(model.outbox[0]["payload"]["pending"], 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn a_direct_session_delivers_each_newest_value_once_and_in_order(steps in proptest::collection::vec(step(), 0..60)) {
            run(steps);
        }
    }
}

#[test]
fn a_drained_step_queue_gives_back_the_room_of_a_large_step() {
    let mut queue: VecDeque<u32> = (0..256).collect();
    for expected in 0..256 {
        assert_eq!(pop_front_shrinking(&mut queue), Some(expected), "in order");
    }
    assert!(queue.capacity() <= 2 * PENDING_KEPT, "an idle connection keeps no room for a mailbox's worth");
    let mut small: VecDeque<u32> = VecDeque::with_capacity(PENDING_KEPT);
    small.extend(0..4);
    while pop_front_shrinking(&mut small).is_some() {}
    assert_eq!(small.capacity(), PENDING_KEPT, "a snapshot's room is kept: no reallocation per step");
    assert_eq!(pop_front_shrinking(&mut small), None);
}
