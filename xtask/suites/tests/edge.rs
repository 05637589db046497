//! Black-box tests of the edge (`docs/protocol.md` §2, §3 and §7), against the real server:
//!
//! - a `/ws` ticket is spent only after every other check of the upgrade passed, and never
//!   outlives the token it was issued with;
//! - the token (or ticket) query parameter is redacted from the log however it is encoded;
//! - a taken username's `409` does not repeat the database's text;
//! - `TRUSTED_PROXIES`: a malformed value stops the server; without it `X-Forwarded-For` is
//!   ignored; with it the client is read from the right, for the login limits, the access log
//!   and the `/metrics` loopback rule;
//! - the password-attempt limits: per address and per username, with `Retry-After`; a
//!   username no user can have never reaches them.
//!
//! ```text
//! PULSE_SERVER_BIN=target/debug/server cargo test -p suites --test edge
//! ```

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;
use suites::tungstenite::client::IntoClientRequest;
use suites::{
    Api, Pulse, ServerOptions, TestDatabase, connect, mint_token_claims, now_secs, random_string,
    refused_status, server_bin,
};

suites::both_databases!(
    a_refused_upgrade_leaves_its_ticket_usable,
    a_taken_username_does_not_repeat_the_database_text
);

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

async fn ticket(api: &Api) -> String {
    let body = api.post_empty("/api/v1/ws-ticket").await.expect("request").expect_status(200).clone();
    body["ticket"].as_str().expect("ticket").to_owned()
}

/// The HTTP status of an upgrade to `url` with `Origin: origin` (101 when accepted).
async fn upgrade_status(url: &str, origin: Option<&str>) -> u16 {
    let mut request = url.into_client_request().expect("a request");
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(e) => refused_status(&e).unwrap_or_else(|| panic!("upgrade to {url}: {e}")),
    }
}

async fn a_refused_upgrade_leaves_its_ticket_usable(db: TestDatabase) {
    let p = Pulse::start_with(db, ServerOptions::default().env("WS_MAX_CONNECTIONS_PER_USER", "1"))
        .await
        .expect("starting the server");
    let t = ticket(&p.admin).await;
    let url = format!("{}?ticket={t}", p.server.ws_url_bare());
    assert_eq!(upgrade_status(&url, Some("http://evil.example")).await, 403, "foreign origin");
    assert_eq!(upgrade_status(&format!("{url}&topics=nope"), None).await, 400, "unknown topic");
    let plain = p.server.api().get(&format!("/ws?ticket={t}")).await.expect("request");
    assert_eq!(plain.status, 400, "not an upgrade: {}", plain.text);
    // The user's one place is taken: 503.
    let holder = p.ws(p.admin.token().expect("token")).await.expect("a socket");
    assert_eq!(upgrade_status(&url, None).await, 503, "over the per-user limit");
    holder.close().await;
    // Once the place is free, the same ticket works — once.
    let mut status = 503;
    for _ in 0..100 {
        status = upgrade_status(&url, None).await;
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 101, "the ticket survived four refused upgrades");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upgrade_status(&url, None).await, 401, "single use");
}

async fn a_taken_username_does_not_repeat_the_database_text(db: TestDatabase) {
    let p = Pulse::start(db).await.expect("starting the server");
    p.admin.create_user("sam", "long-enough", "staff").await.expect("first");
    let dup = p
        .admin
        .post("/api/v1/users", &json!({"username": "sam", "password": "long-enough", "role": "staff"}))
        .await
        .expect("request");
    dup.expect_error(409, &["conflict"]);
    let message = dup.json["error"]["message"].as_str().unwrap_or_default().to_lowercase();
    for leak in ["constraint", "duplicate key", "unique", "users_username", "users.username", "sqlite"] {
        assert!(!message.contains(leak), "the 409 repeats the database: {message}");
    }
    assert!(message.contains("taken"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_never_outlives_its_token() {
    let p = Pulse::start(TestDatabase::sqlite().expect("db")).await.expect("starting the server");
    let exp = now_secs() + 3;
    let claims = json!({"sub": p.admin_id().to_string(), "username": "admin", "role": "admin",
                        "iat": now_secs(), "exp": exp});
    let short = p.server.api().with_token(mint_token_claims(p.server.jwt_secret(), &claims).expect("mint"));
    let answer = short.post_empty("/api/v1/ws-ticket").await.expect("request").expect_status(200).clone();
    let expires = chrono::DateTime::parse_from_rfc3339(answer["expiresAt"].as_str().expect("expiresAt"))
        .expect("RFC 3339");
    assert!(expires.timestamp() <= exp, "the ticket expires at {expires}, after its token ({exp})");
    let t = answer["ticket"].as_str().expect("ticket");
    while now_secs() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("{}?ticket={t}", p.server.ws_url_bare());
    assert_eq!(upgrade_status(&url, None).await, 401, "a ticket whose token expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_parameter_is_redacted_however_it_is_encoded() {
    let mut p = Pulse::start(TestDatabase::sqlite().expect("db")).await.expect("starting the server");
    let token = p.admin.token().expect("token").to_owned();
    let base = p.server.ws_url_bare();
    // Names the server decodes to `token`: they authenticate, so they must be redacted.
    for name in ["tok%65n", "%74%6F%6B%65%6E", "t%6fken"] {
        let ws = connect(&format!("{base}?topics=presence&{name}={token}")).await;
        ws.unwrap_or_else(|e| panic!("{name}= did not authenticate: {e}")).close().await;
    }
    // Not the token parameter (names are case-sensitive), but a token all the same.
    assert_eq!(upgrade_status(&format!("{base}?TOKEN={token}"), None).await, 401);
    let t = ticket(&p.admin).await;
    connect(&format!("{base}?tick%65t={t}")).await.expect("an encoded ticket name").close().await;
    p.server.stop_graceful().await.expect("stops");
    let logs = p.server.logs();
    let signature = token.rsplit('.').next().expect("signature");
    assert!(!logs.contains(signature), "the token's signature appears in the log:\n{logs}");
    assert!(!logs.contains(&t), "the ticket appears in the log:\n{logs}");
    assert!(logs.contains("tok%65n=[redacted]"), "no redacted line for tok%65n:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_trusted_proxies_value_stops_the_server() {
    let db = TestDatabase::sqlite().expect("db");
    let out = tokio::process::Command::new(server_bin().expect("server binary"))
        .env("DATABASE_URL", db.url())
        .env("BIND_ADDR", format!("127.0.0.1:{}", suites::free_port().expect("port")))
        .env("JWT_SECRET", random_string(48))
        .env("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.300/8")
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success(), "started with a malformed TRUSTED_PROXIES");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TRUSTED_PROXIES") && stderr.contains("10.0.0.300/8"),
        "unclear message: {stderr}"
    );
}

/// `n` bad logins (a new unknown username each) from `api`; the statuses.
async fn bad_logins(api: &Api, n: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let name = format!("nobody-{}", random_string(10));
        statuses.push(api.login_response(&name, "not-the-password").await.expect("request").status);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_forwarded_headers_are_ignored() {
    let p = Pulse::start(TestDatabase::sqlite().expect("db")).await.expect("starting the server");
    let base = p.server.base_url();
    let abuser = Api::bound_to(&base, ip("127.0.0.2")).expect("client");
    // A different X-Forwarded-For on every attempt: still one address.
    let mut statuses = Vec::new();
    for i in 0..50 {
        let spoofed = abuser.with_header("x-forwarded-for", &format!("198.51.100.{i}"));
        statuses.extend(bad_logins(&spoofed, 1).await);
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let spoofed = abuser.with_header("x-forwarded-for", "198.51.100.200");
    let next = spoofed.login_response("nobody-else", "x-x-x-x-x").await.expect("request");
    next.expect_error(429, &["too_many_requests"]);
    assert!(next.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1));
    let neighbour = Api::bound_to(&base, ip("127.0.0.3")).expect("client");
    assert_eq!(bad_logins(&neighbour, 1).await, [401], "another address is not limited");
    // /metrics: local and direct is open; forwarded by a proxy nobody trusts is not.
    assert_eq!(p.server.api().get("/metrics").await.expect("request").status, 200);
    let forwarded = p.server.api().with_header("x-forwarded-for", "203.0.113.9").get("/metrics").await;
    forwarded.expect("request").expect_error(403, &["forbidden"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_trusted_proxies_the_client_is_read_from_the_right() {
    let mut p = Pulse::start_with(
        TestDatabase::sqlite().expect("db"),
        ServerOptions::default().env("TRUSTED_PROXIES", "127.0.0.1"),
    )
    .await
    .expect("starting the server");
    let proxy = Api::bound_to(p.server.base_url(), ip("127.0.0.1")).expect("client");
    // Left of the real client, whatever the client sent; right of it, the trusted proxy.
    let abusive = proxy.with_header("x-forwarded-for", "6.6.6.6, 203.0.113.7");
    assert!(bad_logins(&abusive, 50).await.iter().all(|s| *s == 401));
    let refused = abusive.login_response("nobody-else", "x-x-x-x-x").await.expect("request");
    refused.expect_error(429, &["too_many_requests"]);
    let other = proxy.with_header("x-forwarded-for", "6.6.6.6, 203.0.113.8");
    assert_eq!(bad_logins(&other, 1).await, [401], "another client behind the same proxy");
    // A peer that is not a trusted proxy is its own client, whatever it says.
    let direct = Api::bound_to(p.server.base_url(), ip("127.0.0.2"))
        .expect("client")
        .with_header("x-forwarded-for", "203.0.113.7");
    assert_eq!(bad_logins(&direct, 1).await, [401]);
    // /metrics follows the real client.
    let remote = proxy.with_header("x-forwarded-for", "203.0.113.9").get("/metrics").await;
    remote.expect("request").expect_error(403, &["forbidden"]);
    let local = proxy.with_header("x-forwarded-for", "127.0.0.5").get("/metrics").await;
    assert_eq!(local.expect("request").status, 200);
    p.server.stop_graceful().await.expect("stops");
    let logs = p.server.logs();
    assert!(logs.contains("client=203.0.113.7"), "the access log names the real client:\n{logs}");
    assert!(!logs.contains("client=6.6.6.6"), "a spoofed entry was believed:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_is_limited_from_any_address_and_impossible_names_never_count() {
    let p = Pulse::start(TestDatabase::sqlite().expect("db")).await.expect("starting the server");
    let base = p.server.base_url();
    // 60 KiB usernames (the body limit is 64 KiB): refused for their shape (400), never counted.
    let client = Api::bound_to(&base, ip("127.0.0.4")).expect("client");
    for _ in 0..60 {
        let resp = client.login_response(&"a".repeat(60 * 1024), "whatever-password").await.expect("request");
        resp.expect_error(400, &["validation_failed"]);
    }
    assert_eq!(bad_logins(&client, 1).await, [401], "over-long usernames were counted");
    // Ten wrong passwords for one user, each from another address: the username is locked.
    for i in 0..10 {
        let from = Api::bound_to(&base, ip(&format!("127.0.1.{}", i + 1))).expect("client");
        from.login_response("admin", "wrong-password")
            .await
            .expect("request")
            .expect_error(401, &["unauthorized"]);
    }
    let elsewhere = Api::bound_to(&base, ip("127.0.2.1")).expect("client");
    let locked = elsewhere.login_response("admin", p.server.admin_password()).await.expect("request");
    locked.expect_error(429, &["too_many_requests"]);
    let wait: u64 = locked.retry_after.as_deref().and_then(|s| s.parse().ok()).expect("Retry-After");
    assert!((1..=300).contains(&wait), "Retry-After {wait}");
    // Another user is not affected.
    p.admin.create_user("sam", "long-enough", "staff").await.expect("user");
    elsewhere.login("sam", "long-enough").await.expect("another username");
}

/// Writes `request` on a fresh connection and reads until the server closes it (at most 5 s).
async fn raw_exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection within 5 s")
        .expect("read");
    answer
}

/// An upgrade request anywhere but `/ws` (`Upgrade: h2c` on a health check, `Upgrade:
/// websocket` on the API, `CONNECT`) is answered as the route answers any request, then the
/// connection is closed: taking a socket over is for an admitted `/ws` only. An answer that
/// would be a stream (`/sse`) is refused instead.
#[tokio::test]
async fn an_upgrade_request_elsewhere_gets_the_routes_answer_and_a_closed_connection() {
    let p = Pulse::start(TestDatabase::sqlite().expect("SQLite")).await.expect("starting the server");
    let addr = p.server.base_url().trim_start_matches("http://").to_owned();
    let health = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: pulse\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    let health = String::from_utf8_lossy(&health);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let me = raw_exchange(
        &addr,
        b"GET /api/v1/me HTTP/1.1\r\nHost: pulse\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let me = String::from_utf8_lossy(&me);
    assert!(me.starts_with("HTTP/1.1 401"), "{me}");
    assert!(me.to_ascii_lowercase().contains("connection: close"), "{me}");
    assert!(me.contains("\"error\""), "a JSON error body: {me}");
    // An event stream asked with upgrade headers would not notice its client leaving.
    let token = p.admin.token().expect("token");
    let sse = raw_exchange(
        &addr,
        format!(
            "GET /sse?token={token} HTTP/1.1\r\nHost: pulse\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let sse = String::from_utf8_lossy(&sse);
    assert!(sse.starts_with("HTTP/1.1 400"), "{sse}");
    assert!(sse.contains("no stream"), "{sse}");
    let connect = raw_exchange(&addr, b"CONNECT pulse:443 HTTP/1.1\r\nHost: pulse:443\r\n\r\n").await;
    let connect = String::from_utf8_lossy(&connect);
    assert!(connect.starts_with("HTTP/1.1 4"), "{connect}");
}

/// A client may send its first frame in the same packet as its handshake: the server reads
/// it from what arrived with the handshake, and answers it after the snapshot.
#[tokio::test]
async fn a_frame_sent_with_the_handshake_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = Pulse::start(TestDatabase::sqlite().expect("SQLite")).await.expect("starting the server");
    let addr = p.server.base_url().trim_start_matches("http://").to_owned();
    let token = p.admin.token().expect("token");
    let mut request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: pulse\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    // A masked text frame: {"type":"ping"}.
    let payload = br#"{"type":"ping"}"#;
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    request.extend_from_slice(&[0x81, 0x80 | u8::try_from(payload.len()).expect("short")]);
    request.extend_from_slice(&mask);
    request.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let mut socket = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    socket.write_all(&request).await.expect("write");
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if text.contains(r#"{"type":"pong"}"#) {
            assert!(text.starts_with("HTTP/1.1 101"), "{text}");
            let connected = text.find(r#""type":"connected""#).expect("connected");
            let pong = text.find(r#"{"type":"pong"}"#).expect("pong");
            assert!(connected < pong, "connected first: {text}");
            break;
        }
        let mut chunk = [0_u8; 4096];
        let n = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no pong within 10 s; received: {text}"))
            .expect("read");
        assert!(n > 0, "closed before the pong; received: {text}");
        received.extend_from_slice(&chunk[..n]);
    }
}
