//! The same WebSocket session on both of the gateway's ways to carry it, through a real
//! server and a real client: `gateway::http_server` (the socket owned after the upgrade,
//! values written by the worker's fan-out) and a plain `actix_web::HttpServer`, as an
//! embedding application runs it (the session as the `101` response's body).

use std::time::Duration;

use actix_web::{App, HttpServer};
use futures_util::{SinkExt, StreamExt};
use gateway::{JwtKeys, Pulse, PulseOptions, ServerOptions};
use serde_json::{Value, json};
use services::{Database, PoolOptions};
use tokio_tungstenite::tungstenite::Message;

async fn pulse(dir: &tempfile::TempDir) -> Pulse {
    let url = format!("sqlite://{}", dir.path().join("pulse.db").display());
    let db = Database::connect(&url, PoolOptions::default()).await.expect("connects");
    db.migrate().await.expect("migrates");
    let jwt = JwtKeys::new(&[7u8; 32], Duration::from_secs(3600)).expect("keys");
    let pulse = Pulse::start(db, PulseOptions::new(jwt)).await.expect("starts");
    pulse.services().users.bootstrap_admin("admin", "admin-password").await.expect("admin");
    pulse
}

async fn login(base: &str) -> String {
    let client = reqwest_like::Client;
    let body = client
        .post_json(
            &format!("{base}/api/v1/auth/login"),
            &json!({"username": "admin", "password": "admin-password"}),
            None,
        )
        .await;
    body["token"].as_str().expect("token").to_owned()
}

/// The smallest HTTP/1.1 client for two JSON requests (no HTTP client among the gateway's
/// dependencies).
mod reqwest_like {
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client;

    impl Client {
        pub async fn post_json(&self, url: &str, body: &Value, token: Option<&str>) -> Value {
            let rest = url.strip_prefix("http://").expect("http");
            let (host, path) = rest.split_once('/').expect("path");
            let body = body.to_string();
            let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
            let request = format!(
                "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut socket = tokio::net::TcpStream::connect(host).await.expect("connect");
            socket.write_all(request.as_bytes()).await.expect("write");
            let mut answer = Vec::new();
            socket.read_to_end(&mut answer).await.expect("read");
            let answer = String::from_utf8(answer).expect("utf-8");
            let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
            assert!(head.starts_with("HTTP/1.1 20"), "{head}\n{body}");
            serde_json::from_str(body).expect("json body")
        }
    }
}

async fn next_json(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("open")
            .expect("a frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("json"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Connect, snapshot, a change pushed, a ping answered, a close answered with 1000.
async fn the_session_works(base: &str) {
    let token = login(base).await;
    let ws = format!("{}/ws?token={token}", base.replace("http://", "ws://"));
    let (mut socket, response) = tokio_tungstenite::connect_async(ws).await.expect("upgrade");
    assert_eq!(response.status(), 101);
    assert_eq!(next_json(&mut socket).await["type"], "connected");
    let mut snapshot: Vec<String> = Vec::new();
    for _ in 0..3 {
        snapshot.push(next_json(&mut socket).await["type"].as_str().expect("type").to_owned());
    }
    assert_eq!(snapshot, ["stats:tasks", "stats:approvals", "stats:conversations"]);
    let task = json!({"type": "cleaning", "department": "housekeeping", "description": "room 12"});
    reqwest_like::Client.post_json(&format!("{base}/api/v1/tasks"), &task, Some(&token)).await;
    let change = next_json(&mut socket).await;
    assert_eq!(
        (change["type"].as_str(), change["payload"]["total"].as_u64()),
        (Some("stats:tasks"), Some(1))
    );
    socket.send(Message::text(r#"{"type":"ping"}"#)).await.expect("send");
    assert_eq!(next_json(&mut socket).await["type"], "pong");
    socket.close(None).await.expect("close");
    let closing =
        tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("an answer to the close");
    match closing {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected the close answered with 1000, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_session_on_the_gateways_own_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pulse = pulse(&dir).await;
    let state = pulse.state();
    let app = move || App::new().configure(|cfg| gateway::configure(cfg, state.clone()));
    let options = ServerOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        workers: Some(1),
        ..ServerOptions::default()
    };
    let (server, addr) = gateway::http_server(app, &options).expect("binds");
    let handle = server.handle();
    actix_web::rt::spawn(server);
    the_session_works(&format!("http://{addr}")).await;
    handle.stop(false).await;
}

#[actix_web::test]
async fn a_session_under_an_embedding_applications_http_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pulse = pulse(&dir).await;
    let state = pulse.state();
    let server = HttpServer::new(move || App::new().configure(|cfg| gateway::configure(cfg, state.clone())))
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("binds");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    the_session_works(&format!("http://{addr}")).await;
    handle.stop(false).await;
}
