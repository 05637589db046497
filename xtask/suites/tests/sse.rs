//! Contract section 8 over a real server: the Server-Sent Events transport carries sections
//! 5–7 as a WebSocket does — `connected` with a `connectionId`, the snapshot, pushes,
//! client messages POSTed to `/api/v1/realtime/{connectionId}` with the replies on the
//! stream, personal events, presence, typing, the close events — on SQLite and PostgreSQL,
//! and across two instances on one PostgreSQL (a POST reaching the instance that does not
//! hold the stream is delivered; a change through one instance reaches a stream on the
//! other). The client is a plain TCP one ([`suites::SseClient`]) that asks for gzip and
//! checks every event's exact shape.
//!
//! ```text
//! PULSE_SERVER_BIN=target/debug/server cargo test -p suites --test sse
//! ```

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use suites::{
    Api, Body, Cluster, Method, Response, ServerOptions, ServerProcess, SseClient, SseItem, TestDatabase,
    WAIT, both_databases, id_of,
};

both_databases!(
    the_stream_carries_the_protocol_and_posts_reach_it,
    bad_posts_are_refused_and_change_nothing,
    refused_streams_keep_their_ticket_and_count_toward_the_limits,
    personal_events_presence_and_typing_reach_a_stream,
    closes_are_events_and_idle_streams_get_comments,
    posts_count_toward_the_sessions_rate_limit,
);

struct Pulse {
    server: ServerProcess,
    admin: Api,
}

impl Pulse {
    async fn start(db: &TestDatabase, options: ServerOptions) -> Self {
        let server = ServerProcess::start(db, options).await.expect("starting the server");
        let token = server.api().login("admin", server.admin_password()).await.expect("admin login");
        let admin = server.api().with_token(token);
        Self { server, admin }
    }

    async fn user(&self, name: &str, role: &str) -> (Api, i64) {
        let password = format!("pw-{name}-long-enough");
        let user = self.admin.create_user(name, &password, role).await.expect("creating a user");
        let token = self.admin.login(name, &password).await.expect("login");
        (self.admin.with_token(token), id_of(&user))
    }
}

async fn ticket(api: &Api) -> String {
    let body = api.post_empty("/api/v1/ws-ticket").await.expect("request").expect_status(200).clone();
    body["ticket"].as_str().expect("a ticket").to_owned()
}

/// Opens `/sse` for `api`'s user as a browser behind a gzip-friendly proxy would.
async fn open(base: &str, api: &Api, query: &str) -> SseClient {
    let path = format!("/sse?ticket={}{query}", ticket(api).await);
    SseClient::open(base, &path, &[("Accept-Encoding", "gzip, deflate, br")]).await.expect("GET /sse")
}

/// An open stream past `connected` and the snapshot of the three stats topics; returns its
/// connection id.
async fn live(base: &str, api: &Api) -> (SseClient, String) {
    let mut stream = open(base, api, "").await;
    assert_eq!(stream.status, 200);
    let connected = stream.next_message(WAIT).await.expect("connected");
    assert_eq!(connected["type"], "connected", "{connected}");
    let id = connected["payload"]["connectionId"].as_str().expect("a connectionId").to_owned();
    for _ in 0..3 {
        let value = stream.next_message(WAIT).await.expect("the snapshot");
        assert!(value["type"].as_str().is_some_and(|t| t.starts_with("stats:")), "{value}");
    }
    (stream, id)
}

async fn post_raw(api: &Api, id: &str, body: Vec<u8>) -> Response {
    api.request(
        Method::POST,
        &format!("/api/v1/realtime/{id}"),
        Body::Raw { content_type: Some("application/json".into()), bytes: body },
        None,
    )
    .await
    .expect("request")
}

async fn post(api: &Api, id: &str, message: Value) -> Response {
    post_raw(api, id, serde_json::to_vec(&message).expect("json")).await
}

fn task(assignee: Option<&str>) -> Value {
    let mut body = json!({"type": "housekeeping", "department": "front", "description": "Towels for 12"});
    if let Some(a) = assignee {
        body["assignee"] = json!(a);
    }
    body
}

async fn the_stream_carries_the_protocol_and_posts_reach_it(db: TestDatabase) {
    let p = Pulse::start(&db, ServerOptions::default()).await;
    let base = p.server.base_url();
    let (ana, ana_id) = p.user("ana", "staff").await;
    let mut stream = open(&base, &ana, "").await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
    // Asked for gzip, got the events as they are.
    assert!(matches!(stream.header("content-encoding"), None | Some("identity")), "{:?}", stream.headers);

    let connected = stream.next_message(WAIT).await.expect("connected");
    let id = connected["payload"]["connectionId"].as_str().expect("a connectionId").to_owned();
    assert_eq!(
        connected,
        json!({"type": "connected", "payload": {"userId": ana_id, "username": "ana", "role": "staff", "connectionId": id}})
    );
    let mut snapshot = Vec::new();
    for _ in 0..3 {
        snapshot.push(stream.next_message(WAIT).await.expect("the snapshot")["type"].clone());
    }
    assert_eq!(snapshot, ["stats:tasks", "stats:approvals", "stats:conversations"]);

    // A change is pushed at once: nothing holds small chunks back.
    let started = Instant::now();
    p.admin.post("/api/v1/tasks", &task(None)).await.expect("request").expect_status(201);
    let pushed = stream.until("stats:tasks", WAIT).await.expect("a push");
    assert_eq!(pushed["payload"]["pending"], 1, "{pushed}");
    assert!(started.elapsed() < Duration::from_secs(1), "the push took {:?}", started.elapsed());

    // Client messages by POST, replies on the stream.
    assert_eq!(post(&ana, &id, json!({"type": "ping"})).await.status, 202);
    assert_eq!(stream.next_message(WAIT).await.expect("pong"), json!({"type": "pong"}));
    assert_eq!(post(&ana, &id, json!({"type": "subscribe", "topics": ["presence"]})).await.status, 202);
    let subscribed = stream.next_message(WAIT).await.expect("subscribed");
    assert_eq!(subscribed["type"], "subscribed");
    assert!(subscribed["payload"]["topics"].as_array().expect("topics").contains(&json!("presence")));
    let presence = stream.until("presence", WAIT).await.expect("presence");
    assert!(presence["payload"]["online"].as_array().expect("online").iter().any(|e| e["userId"] == ana_id));
    assert_eq!(post(&ana, &id, json!({"type": "unsubscribe", "topics": ["stats:tasks"]})).await.status, 202);
    let subscribed = stream.until("subscribed", WAIT).await.expect("subscribed");
    assert!(!subscribed["payload"]["topics"].as_array().expect("topics").contains(&json!("stats:tasks")));
    assert_eq!(post(&ana, &id, json!({"type": "subscribe", "topics": ["nope"]})).await.status, 202);
    assert_eq!(stream.until("error", WAIT).await.expect("error")["payload"]["code"], "unknown_topic");

    // An unknown type is the session's to answer: 202 and an error on the stream.
    assert_eq!(post(&ana, &id, json!({"type": "dance"})).await.status, 202);
    assert_eq!(stream.until("error", WAIT).await.expect("error")["payload"]["code"], "bad_message");
    // The stream is still live.
    assert_eq!(post(&ana, &id, json!({"type": "ping"})).await.status, 202);
    stream.until("pong", WAIT).await.expect("pong");
}

async fn bad_posts_are_refused_and_change_nothing(db: TestDatabase) {
    let p = Pulse::start(&db, ServerOptions::default()).await;
    let base = p.server.base_url();
    let (ana, _) = p.user("ana", "staff").await;
    let (ben, _) = p.user("ben", "staff").await;
    let (mut stream, id) = live(&base, &ana).await;

    for body in [&b"not json"[..], b"[1,2]", b"\"ping\"", b"{}", b"{\"type\": 3}", b"{\"type\": null}"] {
        post_raw(&ana, &id, body.to_vec()).await.expect_error(400, &["bad_request"]);
    }
    let as_text = ana
        .request(
            Method::POST,
            &format!("/api/v1/realtime/{id}"),
            Body::Raw { content_type: Some("text/plain".into()), bytes: br#"{"type":"ping"}"#.to_vec() },
            None,
        )
        .await
        .expect("request");
    as_text.expect_error(415, &["unsupported_media_type"]);
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024));
    post_raw(&ana, &id, huge.into_bytes()).await.expect_error(413, &["payload_too_large"]);
    // Someone else's connection, and ids nobody holds.
    post(&ben, &id, json!({"type": "ping"})).await.expect_error(404, &["not_found"]);
    for unknown in ["nope", "0123456789abcdef.00", &format!("{id}0")] {
        post(&ana, unknown, json!({"type": "ping"})).await.expect_error(404, &["not_found"]);
    }
    post(&ana.anonymous(), &id, json!({"type": "ping"})).await.expect_error(401, &["unauthorized"]);
    // None of it reached the stream; a large but valid message does.
    let large = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(30 * 1024));
    assert_eq!(post_raw(&ana, &id, large.into_bytes()).await.status, 202);
    assert_eq!(stream.next_message(WAIT).await.expect("pong"), json!({"type": "pong"}));
    // Once the stream is gone its id is unknown.
    drop(stream);
    let deadline = Instant::now() + WAIT;
    loop {
        let status = post(&ana, &id, json!({"type": "ping"})).await.status;
        if status == 404 {
            break;
        }
        assert_eq!(status, 202);
        assert!(Instant::now() < deadline, "the closed stream's id is still served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn refused_streams_keep_their_ticket_and_count_toward_the_limits(db: TestDatabase) {
    let p = Pulse::start(&db, ServerOptions::default().env("WS_MAX_CONNECTIONS_PER_USER", "1")).await;
    let base = p.server.base_url();
    let (ana, _) = p.user("ana", "staff").await;
    let ticket = ticket(&ana).await;
    let with = |query: &str| format!("/sse?ticket={ticket}{query}");
    let foreign =
        SseClient::open(&base, &with(""), &[("Origin", "https://evil.example")]).await.expect("GET");
    assert_eq!(foreign.status, 403);
    assert_eq!(SseClient::open(&base, &with("&topics=nope"), &[]).await.expect("GET").status, 400);
    assert_eq!(SseClient::open(&base, "/sse?ticket=made-up", &[]).await.expect("GET").status, 401);
    assert_eq!(SseClient::open(&base, "/sse", &[]).await.expect("GET").status, 401);
    // The refusals did not spend it.
    let mut first = SseClient::open(&base, &with(""), &[]).await.expect("GET");
    assert_eq!(first.status, 200);
    assert_eq!(first.next_message(WAIT).await.expect("connected")["type"], "connected");
    // Spent now.
    assert_eq!(SseClient::open(&base, &with(""), &[]).await.expect("GET").status, 401);
    // One connection per user: a second stream, or a socket, is refused while it is open.
    let second = open(&base, &ana, "").await;
    assert_eq!(second.status, 503);
    let token = ana.token().expect("token");
    assert!(p.server.connect_ws(token).await.is_err(), "a WebSocket beyond the limit was accepted");
    // A stream whose client left frees its place at once, without waiting for a write.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let again = open(&base, &ana, "").await;
        if again.status == 200 {
            break;
        }
        assert_eq!(again.status, 503);
        assert!(Instant::now() < deadline, "the closed stream's slot was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn personal_events_presence_and_typing_reach_a_stream(db: TestDatabase) {
    let p = Pulse::start(&db, ServerOptions::default()).await;
    let base = p.server.base_url();
    let (ana, ana_id) = p.user("ana", "staff").await;
    let (ben, ben_id) = p.user("ben", "staff").await;
    let (mut stream, id) = live(&base, &ana).await;

    p.admin.post("/api/v1/tasks", &task(Some("ana"))).await.expect("request").expect_status(201);
    let assigned = stream.until("task:assigned", WAIT).await.expect("task:assigned");
    assert_eq!(assigned["payload"]["assignee"], "ana", "{assigned}");

    let conversation = p
        .admin
        .post("/api/v1/conversations", &suites::conversation_body("Mr. Lee"))
        .await
        .expect("request")
        .expect_status(201)
        .clone();
    let topic = format!("conversation:{}", id_of(&conversation));
    assert_eq!(
        post(&ana, &id, json!({"type": "subscribe", "topics": ["presence", topic]})).await.status,
        202
    );
    stream.until("subscribed", WAIT).await.expect("subscribed");
    assert_eq!(post(&ana, &id, json!({"type": "viewing", "payload": {"path": "/tasks"}})).await.status, 202);
    let deadline = Instant::now() + WAIT;
    loop {
        let presence = stream.until("presence", deadline - Instant::now()).await.expect("presence");
        let online = presence["payload"]["online"].as_array().expect("online").clone();
        if online.iter().any(|e| e["userId"] == ana_id && e["viewing"] == "/tasks") {
            break;
        }
    }
    // Ben, on a WebSocket, types: ana's stream hears it.
    let mut ws = p.server.connect_ws(ben.token().expect("token")).await.expect("ben's socket");
    ws.send_json(
        &json!({"type": "typing", "payload": {"conversationId": id_of(&conversation), "typing": true}}),
    )
    .await
    .expect("typing");
    let typing = stream.until("typing", WAIT).await.expect("typing");
    assert_eq!(
        typing["payload"],
        json!({"conversationId": id_of(&conversation), "userId": ben_id, "username": "ben", "typing": true})
    );
    // And ana types over POST: ben hears it.
    ws.send_json(&json!({"type": "subscribe", "topics": [topic]})).await.expect("subscribe");
    let deadline = Instant::now() + WAIT;
    while ws.next_json(deadline - Instant::now()).await.expect("subscribed")["type"] != "subscribed" {}
    assert_eq!(
        post(
            &ana,
            &id,
            json!({"type": "typing", "payload": {"conversationId": id_of(&conversation), "typing": true}})
        )
        .await
        .status,
        202
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let message = ws.next_json(deadline - Instant::now()).await.expect("ana typing");
        if message["type"] == "typing" && message["payload"]["userId"] == ana_id {
            assert_eq!(message["payload"]["typing"], true);
            break;
        }
    }
}

async fn closes_are_events_and_idle_streams_get_comments(db: TestDatabase) {
    let mut p = Pulse::start(&db, ServerOptions::default().env("WS_HEARTBEAT_SECS", "1")).await;
    let base = p.server.base_url();
    let (ana, ana_id) = p.user("ana", "staff").await;
    let (ben, ben_id) = p.user("ben", "staff").await;
    let (cat, _) = p.user("cat", "staff").await;

    // An idle stream gets a comment line at the heartbeat interval.
    let (mut idle, _) = live(&base, &cat).await;
    let started = Instant::now();
    assert_eq!(idle.next_item(Duration::from_secs(3)).await.expect("a comment"), Some(SseItem::Comment));
    assert!(started.elapsed() < Duration::from_millis(2500));

    let (mut ana_stream, _) = live(&base, &ana).await;
    p.admin
        .patch(&format!("/api/v1/users/{ana_id}"), &json!({"active": false}))
        .await
        .expect("request")
        .expect_status(200);
    let close = ana_stream.until("close", WAIT).await.expect("close");
    assert_eq!(close, json!({"type": "close", "payload": {"code": 4403}}));
    assert!(ana_stream.ends_within(WAIT).await.expect("the end"), "the stream went on after close");

    let (mut ben_stream, _) = live(&base, &ben).await;
    p.admin
        .patch(&format!("/api/v1/users/{ben_id}"), &json!({"role": "manager"}))
        .await
        .expect("request")
        .expect_status(200);
    assert_eq!(ben_stream.until("close", WAIT).await.expect("close")["payload"]["code"], 4401);
    assert!(ben_stream.ends_within(WAIT).await.expect("the end"));

    let stopping = tokio::spawn(async move {
        p.server.stop_graceful().await.expect("stopping");
    });
    assert_eq!(idle.until("close", WAIT).await.expect("close")["payload"]["code"], 1001);
    assert!(idle.ends_within(WAIT).await.expect("the end"));
    stopping.await.expect("stopped");
}

async fn posts_count_toward_the_sessions_rate_limit(db: TestDatabase) {
    // 5 messages a second, a burst of 10: 30 POSTs at once are a flood.
    let p = Pulse::start(&db, ServerOptions::default().env("WS_MESSAGES_PER_SECOND", "5")).await;
    let base = p.server.base_url();
    let (ana, _) = p.user("ana", "staff").await;
    let (mut stream, id) = live(&base, &ana).await;
    for _ in 0..30 {
        let status = post(&ana, &id, json!({"type": "ping"})).await.status;
        assert!(status == 202 || status == 404, "HTTP {status}");
    }
    let close = stream.until("close", WAIT).await.expect("close");
    assert_eq!(close["payload"]["code"], 1008);
    assert!(stream.ends_within(WAIT).await.expect("the end"));
}

// ---------------------------------------------------------------------------------------------
// Two instances on one PostgreSQL
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_instances_posts_reach_the_stream_and_changes_reach_every_stream() {
    let cluster = Cluster::start(2).await.expect("two instances");
    let admin0 = cluster.api(0, cluster.admin_token());
    let (ana_on_0, _) = cluster.user("ana", "staff", 0).await.expect("ana");
    let (ben_on_0, _) = cluster.user("ben", "staff", 0).await.expect("ben");
    let ana_on_1 = cluster.api(1, ana_on_0.token().expect("token"));
    let base1 = cluster.servers[1].base_url();
    let (mut stream, id) = live(&base1, &ana_on_1).await;

    // A POST through the instance that does not hold the stream is delivered.
    let started = Instant::now();
    assert_eq!(post(&ana_on_0, &id, json!({"type": "ping"})).await.status, 202);
    assert_eq!(stream.next_message(WAIT).await.expect("pong"), json!({"type": "pong"}));
    let relayed = started.elapsed();
    assert!(relayed < Duration::from_secs(1), "relayed in {relayed:?}");
    assert_eq!(post(&ana_on_0, &id, json!({"type": "dance"})).await.status, 202);
    assert_eq!(stream.until("error", WAIT).await.expect("error")["payload"]["code"], "bad_message");
    // Larger than one notification.
    let large = format!(r#"{{"type":"ping","pad":"{}"}}"#, "é".repeat(20 * 1024));
    assert_eq!(post_raw(&ana_on_0, &id, large.into_bytes()).await.status, 202);
    assert_eq!(stream.next_message(WAIT).await.expect("pong"), json!({"type": "pong"}));
    // Another user's connection is not found, from either instance.
    post(&ben_on_0, &id, json!({"type": "ping"})).await.expect_error(404, &["not_found"]);
    post(&cluster.api(1, ben_on_0.token().expect("token")), &id, json!({"type": "ping"}))
        .await
        .expect_error(404, &["not_found"]);

    // A change through instance 0 reaches the stream on instance 1, and ana's personal event.
    admin0.post("/api/v1/tasks", &task(Some("ana"))).await.expect("request").expect_status(201);
    stream.until("task:assigned", WAIT).await.expect("task:assigned from the other instance");
    stream.until("stats:tasks", WAIT).await.expect("stats from the other instance");

    // Once the stream is closed, no instance holds its id.
    drop(stream);
    let deadline = Instant::now() + WAIT + WAIT;
    loop {
        let status = post(&ana_on_0, &id, json!({"type": "ping"})).await.status;
        if status == 404 {
            break;
        }
        assert_eq!(status, 202);
        assert!(Instant::now() < deadline, "the closed stream's id is still served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
