//! Credentials at the edge, through the real routes on SQLite: a `/ws` ticket is spent only
//! once every other check of the upgrade passed (origin, topics, connection limits, the
//! handshake, shutdown); tokens and tickets of a deactivated user, or issued before a role or
//! password change, are refused from the next request on; `iat` carries milliseconds.

use std::time::Duration;

use actix_http::Request;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, test};
use gateway::{JwtKeys, Pulse, PulseOptions};
use serde_json::{Value, json};
use services::{Database, PoolOptions};

struct Setup {
    pulse: Pulse,
    _dir: tempfile::TempDir,
}

async fn setup(limits: gateway::limits::Limits) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("pulse.db").display());
    let db = Database::connect(&url, PoolOptions::default()).await.expect("connects");
    db.migrate().await.expect("migrates");
    let jwt = JwtKeys::new(&[7u8; 32], Duration::from_secs(3600)).expect("keys");
    let pulse = Pulse::start(db, PulseOptions { limits, ..PulseOptions::new(jwt) }).await.expect("starts");
    pulse.services().users.bootstrap_admin("admin", "admin-password").await.expect("admin");
    Setup { pulse, _dir: dir }
}

async fn call<S, R>(app: &S, req: R) -> (u16, Value)
where
    S: Service<R, Response = ServiceResponse, Error = actix_web::Error>,
{
    let response = test::call_service(app, req).await;
    let status = response.status().as_u16();
    let body = test::read_body(response).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn upgrade(uri: &str) -> test::TestRequest {
    test::TestRequest::get()
        .uri(uri)
        .insert_header(("host", "pulse.local"))
        .insert_header(("upgrade", "websocket"))
        .insert_header(("connection", "upgrade"))
        .insert_header(("sec-websocket-version", "13"))
        .insert_header(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="))
}

async fn login<S>(app: &S, username: &str, password: &str) -> String
where
    S: Service<Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let req = test::TestRequest::post()
        .uri("/api/v1/auth/login")
        .set_json(json!({"username": username, "password": password}))
        .to_request();
    let (status, body) = call(app, req).await;
    assert_eq!(status, 200, "login as {username}: {body}");
    body["token"].as_str().expect("token").to_owned()
}

async fn ticket<S>(app: &S, token: &str) -> String
where
    S: Service<Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let req = test::TestRequest::post()
        .uri("/api/v1/ws-ticket")
        .insert_header(("authorization", format!("Bearer {token}")))
        .to_request();
    let (status, body) = call(app, req).await;
    assert_eq!(status, 200, "ticket: {body}");
    body["ticket"].as_str().expect("ticket").to_owned()
}

async fn still_there(pulse: &Pulse, ticket: &str) -> bool {
    pulse.services().tickets.peek(ticket).await.expect("peek").is_some()
}

#[actix_web::test]
async fn a_ticket_is_spent_only_once_every_other_check_passed() {
    let limits = gateway::limits::Limits { max_connections_per_user: 1, ..Default::default() };
    let Setup { pulse, _dir } = setup(limits).await;
    let state = pulse.state();
    let app = test::init_service(App::new().configure(|cfg| gateway::configure(cfg, state.clone()))).await;
    let token = login(&app, "admin", "admin-password").await;
    let t = ticket(&app, &token).await;
    let uri = format!("/ws?ticket={t}");

    // A foreign origin: 403, the ticket stays.
    let (status, _) =
        call(&app, upgrade(&uri).insert_header(("origin", "http://evil.example")).to_request()).await;
    assert_eq!(status, 403);
    assert!(still_there(&pulse, &t).await, "spent by a foreign-origin upgrade");
    // Unknown topics: 400, the ticket stays.
    let (status, _) = call(&app, upgrade(&format!("{uri}&topics=nope")).to_request()).await;
    assert_eq!(status, 400);
    assert!(still_there(&pulse, &t).await, "spent by a bad topic list");
    // Not an upgrade at all: 400, the ticket stays.
    let plain = test::TestRequest::get().uri(&uri).insert_header(("host", "pulse.local")).to_request();
    assert_eq!(call(&app, plain).await.0, 400);
    assert!(still_there(&pulse, &t).await, "spent by a plain GET");
    // No room for this user: 503, the ticket stays.
    let admin_id = pulse.services().users.list(&admin_actor(&pulse).await).await.expect("list")[0].id;
    let held = state.connections.acquire(admin_id, &state.limits).expect("a place");
    assert_eq!(call(&app, upgrade(&uri).to_request()).await.0, 503);
    assert!(still_there(&pulse, &t).await, "spent by an upgrade over the connection limit");
    state.connections.release_slot(held);
    // Everything passes: 101, spent; once.
    assert_eq!(call(&app, upgrade(&uri).to_request()).await.0, 101);
    assert!(!still_there(&pulse, &t).await, "a used ticket is gone");
    assert_eq!(call(&app, upgrade(&uri).to_request()).await.0, 401, "single use");
    // Shutting down: 503, the ticket stays (another instance can take it).
    let t2 = ticket(&app, &token).await;
    pulse.shutdown();
    assert_eq!(call(&app, upgrade(&format!("/ws?ticket={t2}")).to_request()).await.0, 503);
    assert!(still_there(&pulse, &t2).await, "spent by an upgrade refused for shutdown");
}

async fn admin_actor(pulse: &Pulse) -> domain_events::model::Actor {
    let state = pulse.services().users.account_state(1).await.expect("state").expect("admin");
    domain_events::model::Actor { user_id: 1, username: state.username, role: state.role }
}

#[actix_web::test]
async fn changes_refuse_older_credentials_from_the_next_request() {
    let Setup { pulse, _dir } = setup(Default::default()).await;
    let state = pulse.state();
    let app = test::init_service(App::new().configure(|cfg| gateway::configure(cfg, state.clone()))).await;
    let admin = login(&app, "admin", "admin-password").await;
    let bearer = |token: &str| ("authorization", format!("Bearer {token}"));
    let create = test::TestRequest::post()
        .uri("/api/v1/users")
        .insert_header(bearer(&admin))
        .set_json(json!({"username": "sam", "password": "sam-password", "role": "staff"}))
        .to_request();
    let (status, sam) = call(&app, create).await;
    assert_eq!(status, 201, "{sam}");
    assert_eq!(sam["active"], true);
    assert!(sam["createdAt"].is_string(), "{sam}");
    let sam_id = sam["id"].as_i64().expect("id");
    let me =
        |token: &str| test::TestRequest::get().uri("/api/v1/me").insert_header(bearer(token)).to_request();
    let patch = |body: Value| {
        test::TestRequest::patch()
            .uri(&format!("/api/v1/users/{sam_id}"))
            .insert_header(bearer(&admin))
            .set_json(body)
            .to_request()
    };

    // A token and a ticket from before a role change: refused right after it (the cache was warm).
    let old = login(&app, "sam", "sam-password").await;
    let old_ticket = ticket(&app, &old).await;
    assert_eq!(call(&app, me(&old)).await.0, 200);
    let (status, body) = call(&app, patch(json!({"role": "manager"}))).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("manager")), "{body}");
    assert_eq!(call(&app, me(&old)).await.0, 401, "a token issued before the role change");
    assert_eq!(call(&app, upgrade(&format!("/ws?ticket={old_ticket}")).to_request()).await.0, 401);
    assert_eq!(call(&app, upgrade(&format!("/ws?token={old}")).to_request()).await.0, 401);
    // A new login works at once, with the new role.
    let new = login(&app, "sam", "sam-password").await;
    let (status, body) = call(&app, me(&new)).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("manager")));
    // An equal value changes nothing: the new token stays valid.
    assert_eq!(call(&app, patch(json!({"role": "manager", "active": true}))).await.0, 200);
    assert_eq!(call(&app, me(&new)).await.0, 200, "nothing was retired");
    // Deactivated: every token and ticket refused, no login.
    let live_ticket = ticket(&app, &new).await;
    let (status, body) = call(&app, patch(json!({"active": false}))).await;
    assert_eq!((status, body["active"].as_bool()), (200, Some(false)), "{body}");
    assert_eq!(call(&app, me(&new)).await.0, 401);
    assert_eq!(call(&app, upgrade(&format!("/ws?ticket={live_ticket}")).to_request()).await.0, 401);
    let req = test::TestRequest::post()
        .uri("/api/v1/auth/login")
        .set_json(json!({"username": "sam", "password": "sam-password"}))
        .to_request();
    assert_eq!(call(&app, req).await.0, 401);
    // `{}` is refused; the last admin stays.
    assert_eq!(call(&app, patch(json!({}))).await.0, 400);
    let self_off = test::TestRequest::patch()
        .uri("/api/v1/users/1")
        .insert_header(bearer(&admin))
        .set_json(json!({"active": false}))
        .to_request();
    assert_eq!(call(&app, self_off).await.0, 409);
}

#[actix_web::test]
async fn own_password_change_retires_every_older_token_of_the_user() {
    let Setup { pulse, _dir } = setup(Default::default()).await;
    let state = pulse.state();
    let app = test::init_service(App::new().configure(|cfg| gateway::configure(cfg, state.clone()))).await;
    let first = login(&app, "admin", "admin-password").await;
    let second = login(&app, "admin", "admin-password").await;
    let change = |token: &str, current: &str| {
        test::TestRequest::post()
            .uri("/api/v1/me/password")
            .insert_header(("authorization", format!("Bearer {token}")))
            .set_json(json!({"currentPassword": current, "newPassword": "a-new-password"}))
            .to_request()
    };
    let (status, body) = call(&app, change(&first, "wrong-password")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert_eq!(call(&app, change(&first, "admin-password")).await.0, 204);
    for token in [&first, &second] {
        let me = test::TestRequest::get()
            .uri("/api/v1/me")
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request();
        assert_eq!(call(&app, me).await.0, 401, "tokens from before the change log in again");
    }
    login(&app, "admin", "a-new-password").await;
}
