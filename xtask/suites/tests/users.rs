//! Black-box tests of the user lifecycle (`docs/protocol.md` §2): admins list users, change a
//! role, reset a password, deactivate and reactivate; users change their own password. A
//! deactivated user cannot log in and their tokens and tickets are refused (401) and their
//! sockets closed with 4403; a role or password change retires older tokens (401, sockets
//! 4401) — on the instance that made the change from the next request on (sockets within
//! 1 s), within 5 s on every other; the last active admin stays, even against two admins at
//! once. Every case runs on SQLite and on PostgreSQL, each on its own server and database;
//! the cross-instance case runs two servers on one PostgreSQL database.
//!
//! ```text
//! PULSE_SERVER_BIN=target/debug/server cargo test -p suites --test users
//! ```

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use suites::{
    Api, Cluster, Incoming, Pulse, TestDatabase, Ws, connect, get_ok, id_of, mint_token_claims, now_secs,
    refused_status,
};

/// How long a socket that must be closed "at once" may take (contract: within 1 s).
const AT_ONCE: Duration = Duration::from_secs(1);
/// How long another instance may take (contract: within 5 s).
const ELSEWHERE: Duration = Duration::from_secs(5);

suites::both_databases!(
    admins_list_and_change_users_and_bad_changes_change_nothing,
    deactivation_refuses_everything_and_closes_sockets_with_4403,
    a_role_change_retires_older_tokens_and_closes_their_sockets_with_4401,
    password_resets_and_own_changes_retire_older_tokens,
    the_last_active_admin_stays_even_against_two_admins_at_once,
    tokens_minted_elsewhere_with_a_whole_second_iat_still_verify,
);

async fn start(db: TestDatabase) -> Pulse {
    Pulse::start(db).await.expect("starting the server")
}

/// A user with `role` and their password, logged in.
async fn user(p: &Pulse, name: &str, role: &str) -> (Api, Value, String) {
    let password = format!("pw-{name}-long-enough");
    let user = p.admin.create_user(name, &password, role).await.expect("creating a user");
    let token = p.admin.login(name, &password).await.expect("login");
    (p.admin.with_token(token), user, password)
}

fn token(api: &Api) -> &str {
    api.token().expect("a token")
}

async fn ws_ready(url: &str) -> Ws {
    let mut ws = connect(url).await.unwrap_or_else(|e| panic!("WebSocket to {url}: {e}"));
    for _ in 0..4 {
        ws.next_json(Duration::from_secs(5)).await.expect("opening messages");
    }
    ws
}

async fn ticket(api: &Api) -> String {
    let body = api.post_empty("/api/v1/ws-ticket").await.expect("request").expect_status(200).clone();
    body["ticket"].as_str().expect("ticket").to_owned()
}

async fn patch(admin: &Api, id: i64, body: Value) -> suites::Response {
    admin.patch(&format!("/api/v1/users/{id}"), &body).await.expect("request")
}

/// Waits for a close frame and returns its code and how long it took.
async fn closed(ws: &mut Ws, within: Duration) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let code = ws.close_frame(within).await.expect("a close frame in time");
    (code, started.elapsed())
}

/// The socket still answers a ping (nothing closed it).
async fn still_open(ws: &mut Ws) {
    ws.send_json(&json!({"type": "ping"})).await.expect("send");
    loop {
        match ws.next_incoming(Duration::from_secs(2)).await {
            Some(Incoming::Json(v)) if v["type"] == "pong" => return,
            Some(Incoming::Json(_)) => {}
            other => panic!("expected the socket open, got {other:?}"),
        }
    }
}

async fn status_of_me(api: &Api) -> u16 {
    api.get("/api/v1/me").await.expect("request").status
}

async fn admins_list_and_change_users_and_bad_changes_change_nothing(db: TestDatabase) {
    let p = start(db).await;
    let (manager, _, _) = user(&p, "mgr", "manager").await;
    let (staff, sam, _) = user(&p, "sam", "staff").await;
    let list = get_ok(&p.admin, "/api/v1/users").await;
    let items = list["items"].as_array().expect("items");
    let names: Vec<&str> = items.iter().map(|u| u["username"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["admin", "mgr", "sam"], "ordered by id: {list}");
    for u in items {
        for field in ["id", "username", "role", "active", "createdAt"] {
            assert!(u.get(field).is_some(), "user JSON without {field}: {u}");
        }
        assert_eq!(u["active"], true);
        for secret in ["password", "passwordHash", "password_hash"] {
            assert!(u.get(secret).is_none(), "{u}");
        }
    }
    for api in [&manager, &staff] {
        api.get("/api/v1/users").await.expect("request").expect_error(403, &["forbidden"]);
        patch(api, id_of(&sam), json!({"role": "admin"})).await.expect_error(403, &["forbidden"]);
    }
    let id = id_of(&sam);
    for bad in [
        json!({}),
        json!({"role": "owner", "active": false}),
        json!({"role": "manager", "password": "short"}),
        json!({"active": "no"}),
        json!({"password": "x".repeat(257), "active": false}),
    ] {
        patch(&p.admin, id, bad.clone()).await.expect_error(400, &["bad_request", "validation_failed"]);
    }
    patch(&p.admin, 999_999, json!({"role": "staff"})).await.expect_error(404, &["not_found"]);
    // Nothing changed: same role, still active, the token still works.
    let now = get_ok(&p.admin, "/api/v1/users").await;
    let sam_now =
        now["items"].as_array().expect("items").iter().find(|u| u["id"] == id).cloned().expect("sam");
    assert_eq!((sam_now["role"].as_str(), sam_now["active"].as_bool()), (Some("staff"), Some(true)));
    assert_eq!(status_of_me(&staff).await, 200);
    let changed = patch(&p.admin, id, json!({"role": "manager"})).await.expect_status(200).clone();
    assert_eq!(changed["role"], "manager");
    assert_eq!(changed["active"], true);
    assert_eq!(changed["createdAt"], sam["createdAt"]);
}

async fn deactivation_refuses_everything_and_closes_sockets_with_4403(db: TestDatabase) {
    let p = start(db).await;
    let (staff, sam, password) = user(&p, "sam", "staff").await;
    let mut by_token = ws_ready(&p.server.ws_url(token(&staff))).await;
    let spent = ticket(&staff).await;
    let mut by_ticket = ws_ready(&format!("{}?ticket={spent}", p.server.ws_url_bare())).await;
    let unspent = ticket(&staff).await;
    let (other, _, _) = user(&p, "ana", "staff").await;
    let mut bystander = ws_ready(&p.server.ws_url(token(&other))).await;

    let off = patch(&p.admin, id_of(&sam), json!({"active": false})).await.expect_status(200).clone();
    assert_eq!(off["active"], false);
    // From the next request on.
    assert_eq!(status_of_me(&staff).await, 401, "the token of a deactivated user");
    for (name, ws) in [("token socket", &mut by_token), ("ticket socket", &mut by_ticket)] {
        let (code, took) = closed(ws, AT_ONCE + Duration::from_millis(500)).await;
        assert_eq!(code, Some(4403), "{name}");
        assert!(took <= AT_ONCE, "{name} closed after {took:?}");
    }
    still_open(&mut bystander).await;
    let refused =
        connect(&format!("{}?ticket={unspent}", p.server.ws_url_bare())).await.expect_err("refused");
    assert_eq!(refused_status(&refused), Some(401), "an unredeemed ticket");
    let refused = connect(&p.server.ws_url(token(&staff))).await.expect_err("refused");
    assert_eq!(refused_status(&refused), Some(401), "the token on /ws");
    p.server
        .api()
        .login_response("sam", &password)
        .await
        .expect("request")
        .expect_error(401, &["unauthorized"]);
    let task =
        json!({"type": "housekeeping", "department": "rooms", "description": "Towels", "assignee": "sam"});
    p.admin.post("/api/v1/tasks", &task).await.expect("request").expect_error(400, &["validation_failed"]);

    // Back: logs in again; the tokens from before stay retired.
    patch(&p.admin, id_of(&sam), json!({"active": true})).await.expect_status(200);
    let fresh = p.admin.with_token(p.admin.login("sam", &password).await.expect("login again"));
    assert_eq!(status_of_me(&fresh).await, 200);
    assert_eq!(status_of_me(&staff).await, 401, "a token from before the deactivation");
    p.admin.post("/api/v1/tasks", &task).await.expect("request").expect_status(201);
}

async fn a_role_change_retires_older_tokens_and_closes_their_sockets_with_4401(db: TestDatabase) {
    let p = start(db).await;
    let (manager, maria, password) = user(&p, "maria", "manager").await;
    let mut ws = ws_ready(&p.server.ws_url(token(&manager))).await;
    // Equal values change nothing and retire nothing.
    patch(&p.admin, id_of(&maria), json!({"role": "manager", "active": true})).await.expect_status(200);
    assert_eq!(status_of_me(&manager).await, 200);
    still_open(&mut ws).await;

    patch(&p.admin, id_of(&maria), json!({"role": "staff"})).await.expect_status(200);
    assert_eq!(status_of_me(&manager).await, 401, "a token issued before the role change");
    let (code, took) = closed(&mut ws, AT_ONCE + Duration::from_millis(500)).await;
    assert_eq!(code, Some(4401));
    assert!(took <= AT_ONCE, "closed after {took:?}");
    let staff = p.admin.with_token(p.admin.login("maria", &password).await.expect("login"));
    let me = get_ok(&staff, "/api/v1/me").await;
    assert_eq!(me["role"], "staff");
    let approval = staff.post("/api/v1/approvals", &suites::approval_body()).await.expect("request");
    let id = id_of(approval.expect_status(201));
    let decide =
        staff.post(&format!("/api/v1/approvals/{id}/decide"), &json!({"decision": "approved"})).await;
    decide.expect("request").expect_error(403, &["forbidden"]);
}

async fn password_resets_and_own_changes_retire_older_tokens(db: TestDatabase) {
    let p = start(db).await;
    let (staff, sam, password) = user(&p, "sam", "staff").await;
    let mut ws = ws_ready(&p.server.ws_url(token(&staff))).await;
    patch(&p.admin, id_of(&sam), json!({"password": "reset-by-the-admin"})).await.expect_status(200);
    assert_eq!(status_of_me(&staff).await, 401);
    assert_eq!(closed(&mut ws, AT_ONCE + Duration::from_millis(500)).await.0, Some(4401));
    p.server
        .api()
        .login_response("sam", &password)
        .await
        .expect("request")
        .expect_error(401, &["unauthorized"]);
    let staff = p.admin.with_token(p.admin.login("sam", "reset-by-the-admin").await.expect("new password"));

    // The user's own change.
    let mut ws = ws_ready(&p.server.ws_url(token(&staff))).await;
    let change = |current: &str, new: &str| json!({"currentPassword": current, "newPassword": new});
    let wrong = staff.post("/api/v1/me/password", &change("not-my-password", "mine-from-now-on")).await;
    wrong.expect("request").expect_error(403, &["forbidden"]);
    let short = staff.post("/api/v1/me/password", &change("reset-by-the-admin", "short")).await;
    short.expect("request").expect_error(400, &["validation_failed"]);
    assert_eq!(status_of_me(&staff).await, 200, "refused changes retire nothing");
    let ok = staff.post("/api/v1/me/password", &change("reset-by-the-admin", "mine-from-now-on")).await;
    let ok = ok.expect("request");
    assert_eq!(ok.status, 204, "{}", ok.text);
    assert_eq!(status_of_me(&staff).await, 401, "the user's own older tokens go too");
    assert_eq!(closed(&mut ws, AT_ONCE + Duration::from_millis(500)).await.0, Some(4401));
    p.admin.login("sam", "mine-from-now-on").await.expect("the new password");
}

async fn the_last_active_admin_stays_even_against_two_admins_at_once(db: TestDatabase) {
    let p = start(db).await;
    let admin_id = p.admin_id();
    patch(&p.admin, admin_id, json!({"active": false})).await.expect_error(409, &["conflict"]);
    patch(&p.admin, admin_id, json!({"role": "manager"})).await.expect_error(409, &["conflict"]);
    let (_, second, second_password) = user(&p, "second-admin", "admin").await;
    let first_password = p.server.admin_password().to_owned();
    let api = p.server.api();
    for round in 0..8 {
        let first = api.with_token(api.login("admin", &first_password).await.expect("login"));
        let other = api.with_token(api.login("second-admin", &second_password).await.expect("login"));
        let removal = if round % 2 == 0 { json!({"active": false}) } else { json!({"role": "manager"}) };
        let (a, b) =
            tokio::join!(patch(&first, id_of(&second), removal.clone()), patch(&other, admin_id, removal));
        let statuses = [a.status, b.status];
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "round {round}: exactly one of two admins removing each other wins: {statuses:?} ({} / {})",
            a.text,
            b.text
        );
        // The loser was refused for the last admin (409), or — when the winner committed before
        // its request was authenticated — for its own retired token (401).
        assert!(statuses.iter().all(|s| [200, 409, 401].contains(s)), "round {round}: {statuses:?}");
        let (survivor, removed) = if a.status == 200 { (&first, id_of(&second)) } else { (&other, admin_id) };
        let users = get_ok(survivor, "/api/v1/users").await;
        let active_admins = users["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|u| u["role"] == "admin" && u["active"] == true)
            .count();
        assert_eq!(active_admins, 1, "round {round}: {users}");
        patch(survivor, removed, json!({"role": "admin", "active": true})).await.expect_status(200);
    }
}

async fn tokens_minted_elsewhere_with_a_whole_second_iat_still_verify(db: TestDatabase) {
    let p = start(db).await;
    let (_, sam, _) = user(&p, "sam", "staff").await;
    let secret = p.server.jwt_secret();
    let mint = |role: &str, iat: i64| {
        let claims = json!({"sub": id_of(&sam).to_string(), "username": "sam", "role": role,
                            "iat": iat, "exp": now_secs() + 600});
        p.server.api().with_token(mint_token_claims(secret, &claims).expect("mint"))
    };
    assert_eq!(status_of_me(&mint("staff", now_secs() - 5)).await, 200, "an integer iat");
    let before = now_secs() - 1;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    patch(&p.admin, id_of(&sam), json!({"role": "manager"})).await.expect_status(200);
    assert_eq!(status_of_me(&mint("manager", before)).await, 401, "minted before the change");
    assert_eq!(status_of_me(&mint("staff", now_secs() + 1)).await, 401, "claims the old role");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_of_me(&mint("manager", now_secs())).await, 200, "minted after the change");
}

/// Two instances on one PostgreSQL database: a change made through one reaches the sockets
/// and requests of the other within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_other_instance_within_5_s() {
    let cluster = Cluster::start(2).await.expect("two instances");
    let (deactivated, ana) = cluster.user("ana", "staff", 1).await.expect("ana");
    let (demoted, bob) = cluster.user("bob", "manager", 1).await.expect("bob");
    let mut ana_ws = ws_ready(&cluster.servers[1].ws_url(token(&deactivated))).await;
    let mut bob_ws = ws_ready(&cluster.servers[1].ws_url(token(&demoted))).await;
    // Warm instance 1's cache: a stale entry is what the event must clear.
    assert_eq!(status_of_me(&deactivated).await, 200);
    assert_eq!(status_of_me(&demoted).await, 200);
    let bob_ticket = ticket(&demoted).await;

    let admin = &cluster.admins[0];
    let started = Instant::now();
    patch(admin, id_of(&ana), json!({"active": false})).await.expect_status(200);
    patch(admin, id_of(&bob), json!({"role": "staff"})).await.expect_status(200);
    assert_eq!(ana_ws.close_frame(ELSEWHERE).await.expect("closed in time"), Some(4403));
    let ana_closed = started.elapsed();
    assert_eq!(bob_ws.close_frame(ELSEWHERE).await.expect("closed in time"), Some(4401));
    let bob_closed = started.elapsed();
    let refused = connect(&format!("{}?ticket={bob_ticket}", cluster.servers[1].ws_url_bare())).await;
    assert_eq!(refused.err().as_ref().and_then(refused_status), Some(401), "a ticket from before the change");
    let mut refused_at = Vec::new();
    for api in [&deactivated, &demoted] {
        loop {
            if status_of_me(api).await == 401 {
                refused_at.push(started.elapsed());
                break;
            }
            assert!(started.elapsed() < ELSEWHERE, "instance 1 still accepts a retired token after 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let total = started.elapsed();
    assert!(total <= ELSEWHERE, "took {total:?}");
    eprintln!(
        "instance 1: sockets closed {:?} (4403) / {:?} (4401) after the change, tokens refused after {:?} / {:?}",
        ana_closed, bob_closed, refused_at[0], refused_at[1]
    );
}
