//! The cases run by `integration.rs` on each database, and their helpers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use suites::{
    ADMIN_USERNAME, Api, Body, Incoming, Method, Pulse, ServerOptions, ServerProcess, TestDatabase, WAIT,
    Watcher, Ws, approval_body, claims, connect, conversation_body, get_ok, id_of, matches, mint_token,
    mint_token_alg, mint_token_claims, now_secs, refused_status, unsigned_token,
};

/// How long a socket must stay silent to count as "no message".
const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

async fn start(db: TestDatabase) -> Pulse {
    Pulse::start(db).await.expect("starting the server")
}

fn task_body(department: &str) -> Value {
    json!({"type": "housekeeping", "department": department, "description": "Fresh towels for room 101"})
}

async fn create(api: &Api, path: &str, body: Value) -> Value {
    let resp = api.post(path, &body).await.expect("request");
    resp.expect_status(201).clone()
}

#[track_caller]
fn assert_utc_time(v: &Value, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what} {s:?} is not RFC 3339: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "{what} {s:?} is not in UTC");
}

fn ids(list: &Value) -> Vec<i64> {
    list["items"].as_array().unwrap_or_else(|| panic!("no items array in {list}")).iter().map(id_of).collect()
}

#[track_caller]
fn assert_newest_first(list: &Value) {
    let ids = ids(list);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "items not newest first (ids {ids:?})");
}

/// Follows `nextCursor` from `path` (which already has a query string) and returns the pages'
/// ids.
async fn all_pages(api: &Api, path: &str, limit: usize) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let url = match cursor {
            Some(c) => format!("{path}&limit={limit}&cursor={c}"),
            None => format!("{path}&limit={limit}"),
        };
        let page = get_ok(api, &url).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= limit, "page of {} items with limit {limit}", page_ids.len());
        assert_newest_first(&page);
        pages.push(page_ids.clone());
        match &page["nextCursor"] {
            Value::Null => return pages,
            Value::Number(n) => {
                let next = n.as_i64().expect("integer cursor");
                assert_eq!(page_ids.len(), limit, "nextCursor {next} on a short page {page_ids:?}");
                cursor = Some(next);
            }
            other => panic!("nextCursor is neither an id nor null: {other} (page {page})"),
        }
        assert!(pages.len() < 100, "pagination does not end");
    }
}

async fn task_stats(api: &Api) -> Value {
    get_ok(api, "/api/v1/tasks/stats").await
}

async fn approval_stats(api: &Api) -> Value {
    let body = get_ok(api, "/api/v1/approvals/stats").await;
    body.get("stats").cloned().unwrap_or_else(|| panic!("approval stats not wrapped in \"stats\": {body}"))
}

async fn conversation_stats(api: &Api) -> Value {
    get_ok(api, "/api/v1/conversations/stats").await
}

#[track_caller]
fn assert_matches(actual: &Value, expected: &Value, what: &str) {
    assert!(matches(actual, expected), "{what}: got {actual}, expected {expected}");
}

#[track_caller]
fn assert_refused(result: Result<Ws, suites::tungstenite::Error>, status: u16, what: &str) {
    match result {
        Ok(_) => panic!("{what}: WebSocket upgrade accepted, expected HTTP {status}"),
        Err(e) => assert_eq!(refused_status(&e), Some(status), "{what}: expected HTTP {status}, got {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Configuration
// ---------------------------------------------------------------------------------------------

/// The log without ANSI colour codes.
fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Words of log lines that mention a password and look like a generated one.
fn password_candidates(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in strip_ansi(log).lines().filter(|l| l.to_lowercase().contains("password")) {
        for word in line.split(|c: char| !c.is_ascii_alphanumeric()) {
            let looks_random =
                word.len() >= 12 && word.chars().any(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
            if looks_random && !out.iter().any(|w| w == word) {
                out.push(word.to_owned());
            }
        }
    }
    out
}

pub(crate) async fn config_defaults_generate_and_keep_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unused = TestDatabase::sqlite().expect("sqlite");
    let opts = ServerOptions::default()
        .unset("DATABASE_URL")
        .unset("JWT_SECRET")
        .unset("ADMIN_PASSWORD")
        .current_dir(dir.path());
    let mut server = ServerProcess::start(&unused, opts.clone()).await.expect("starting with defaults");
    let data = dir.path().join("data");
    assert!(data.join("pulse.db").is_file(), "default database data/pulse.db was not created");
    let log = strip_ansi(&server.logs());
    assert!(
        log.lines().any(|l| l.to_lowercase().contains("warn") && l.to_lowercase().contains("secret")),
        "no warning about the generated JWT secret in the log:\n{log}"
    );
    let secret_files: Vec<String> = std::fs::read_dir(&data)
        .expect("data folder")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with("pulse.db"))
        .collect();
    assert!(!secret_files.is_empty(), "no generated secret kept in {}", data.display());

    // The random admin password is printed once.
    let api = server.api();
    let candidates = password_candidates(&log);
    assert!(candidates.len() <= 5, "too many password-like words in the log: {candidates:?}");
    let mut found = None;
    for candidate in &candidates {
        if let Ok(token) = api.login(ADMIN_USERNAME, candidate).await {
            found = Some((candidate.clone(), token));
            break;
        }
    }
    let (password, token) = found.unwrap_or_else(|| panic!("no working admin password in the log:\n{log}"));
    let api = api.with_token(token);
    create(&api, "/api/v1/tasks", task_body("front")).await;
    server.stop_graceful().await.expect("stopping");

    // Restart: same secret (old token valid), same admin, password not printed again.
    let server = ServerProcess::start(&unused, opts).await.expect("restarting with defaults");
    let api = Api::new(server.base_url()).with_token(api.token().unwrap_or_default());
    let me = get_ok(&api, "/api/v1/me").await;
    assert_eq!(me["username"], ADMIN_USERNAME);
    assert_eq!(task_stats(&api).await["total"], 1, "data lost across restart");
    api.login(ADMIN_USERNAME, &password).await.expect("the printed password still works");
    assert!(!server.logs().contains(&password), "the admin password was printed again on restart");
}

pub(crate) async fn config_short_jwt_secret_is_refused() {
    let db = TestDatabase::sqlite().expect("sqlite");
    let short = "only-31-bytes-long-secret-xxxxx";
    assert_eq!(short.len(), 31);
    match ServerProcess::start(&db, ServerOptions::default().env("JWT_SECRET", short)).await {
        Ok(server) => panic!("the server started with a 31-byte JWT_SECRET; log:\n{}", server.logs()),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("exited"), "expected the server to exit, got: {msg}");
        }
    }
}

pub(crate) async fn bootstrap_admin_only_when_there_are_no_users(db: TestDatabase) {
    let mut p = start(db).await;
    create(&p.admin, "/api/v1/tasks", task_body("front")).await;
    let secret = p.server.jwt_secret().to_owned();
    let old_password = p.server.admin_password().to_owned();
    p.server.stop_graceful().await.expect("stopping");

    let opts = ServerOptions::default()
        .env("JWT_SECRET", secret)
        .env("ADMIN_USERNAME", "second-admin")
        .env("ADMIN_PASSWORD", "a-different-password");
    p.server = ServerProcess::start(&p.db, opts).await.expect("restarting");
    let anon = p.server.api();
    anon.login(ADMIN_USERNAME, &old_password).await.expect("the first admin still logs in");
    anon.login_response("second-admin", "a-different-password")
        .await
        .unwrap()
        .expect_error(401, &["unauthorized"]);
    anon.login_response(ADMIN_USERNAME, "a-different-password")
        .await
        .unwrap()
        .expect_error(401, &["unauthorized"]);
    let admin = anon.with_token(p.admin.token().unwrap_or_default());
    assert_eq!(
        get_ok(&admin, "/api/v1/me").await["username"],
        ADMIN_USERNAME,
        "token from before the restart"
    );
    assert_eq!(task_stats(&admin).await["total"], 1, "data lost across restart");
}

// ---------------------------------------------------------------------------------------------
// 2. Authentication
// ---------------------------------------------------------------------------------------------

pub(crate) async fn login_returns_token_expiry_and_user(db: TestDatabase) {
    let p = start(db).await;
    let resp = p.server.api().login_response("admin", p.server.admin_password()).await.unwrap();
    let body = resp.expect_status(200);
    let token = body["token"].as_str().unwrap_or_else(|| panic!("no token: {body}"));
    assert_eq!(token.split('.').count(), 3, "token is not a JWT: {token}");
    assert_utc_time(&body["expiresAt"], "expiresAt");
    let expires = chrono::DateTime::parse_from_rfc3339(body["expiresAt"].as_str().unwrap()).unwrap();
    assert!(expires.timestamp() > now_secs(), "expiresAt {expires} is not in the future");
    let user = &body["user"];
    assert!(user["id"].is_i64(), "user.id is not an integer: {body}");
    assert_eq!(user["username"], "admin");
    assert_eq!(user["role"], "admin");
    for secret in ["password", "passwordHash", "password_hash"] {
        assert!(user.get(secret).is_none(), "login answer exposes {secret}: {body}");
    }
    // An HS256 JWT with the documented claims, expiring at expiresAt.
    let (header, claims) = suites::decode_unverified(token).unwrap();
    assert_eq!(header["alg"], "HS256", "token header {header}");
    let id = user["id"].as_i64().unwrap_or_default();
    assert_eq!(claims["sub"], json!(id.to_string()), "sub must be the user id as a string: {claims}");
    assert_eq!(claims["username"], "admin", "{claims}");
    assert_eq!(claims["role"], "admin", "{claims}");
    // A NumericDate with millisecond precision (`docs/protocol.md` §2): fractional seconds.
    let iat = claims["iat"].as_f64().unwrap_or_else(|| panic!("no numeric iat: {claims}"));
    assert!((iat - now_secs() as f64).abs() <= 60.0, "iat {iat} is not now: {claims}");
    assert!(claims["iat"].is_f64(), "iat is not written with its milliseconds: {claims}");
    assert_eq!(
        claims["exp"].as_i64(),
        Some(expires.timestamp()),
        "exp differs from expiresAt: {claims} {body}"
    );
    // The token works.
    let me = get_ok(&p.server.api().with_token(token), "/api/v1/me").await;
    assert_eq!(me["id"], user["id"]);
}

pub(crate) async fn bad_credentials_are_401_and_indistinguishable(db: TestDatabase) {
    let p = start(db).await;
    let api = p.server.api();
    let wrong_password = api.login_response("admin", "not-the-password").await.unwrap();
    wrong_password.expect_error(401, &["unauthorized"]);
    let unknown_user = api.login_response("nobody-here", "not-the-password").await.unwrap();
    unknown_user.expect_error(401, &["unauthorized"]);
    assert_eq!(
        wrong_password.json, unknown_user.json,
        "a wrong password and an unknown user must get the same answer"
    );
    assert!(wrong_password.json.get("token").is_none());
}

pub(crate) async fn protected_routes_refuse_missing_and_bad_tokens(db: TestDatabase) {
    let p = start(db).await;
    let task = id_of(&create(&p.admin, "/api/v1/tasks", task_body("front")).await);
    let conv = id_of(&create(&p.admin, "/api/v1/conversations", conversation_body("Ada")).await);
    let appr = id_of(&create(&p.admin, "/api/v1/approvals", approval_body()).await);

    let routes: Vec<(Method, String, Body)> = vec![
        (Method::GET, "/api/v1/me".into(), Body::None),
        (
            Method::POST,
            "/api/v1/users".into(),
            Body::Json(json!({"username": "intruder", "password": "password123", "role": "admin"})),
        ),
        (Method::GET, "/api/v1/tasks".into(), Body::None),
        (Method::POST, "/api/v1/tasks".into(), Body::Json(task_body("front"))),
        (Method::GET, "/api/v1/tasks/stats".into(), Body::None),
        (Method::GET, format!("/api/v1/tasks/{task}"), Body::None),
        (Method::POST, format!("/api/v1/tasks/{task}/assign"), Body::Json(json!({"assignee": "admin"}))),
        (Method::POST, format!("/api/v1/tasks/{task}/complete"), Body::None),
        (Method::GET, "/api/v1/conversations".into(), Body::None),
        (Method::POST, "/api/v1/conversations".into(), Body::Json(conversation_body("Eve"))),
        (Method::GET, "/api/v1/conversations/stats".into(), Body::None),
        (Method::GET, format!("/api/v1/conversations/{conv}"), Body::None),
        (Method::PATCH, format!("/api/v1/conversations/{conv}"), Body::Json(json!({"subject": "hacked"}))),
        (Method::POST, format!("/api/v1/conversations/{conv}/escalate"), Body::Json(json!({"reason": "x"}))),
        (Method::POST, format!("/api/v1/conversations/{conv}/resolve"), Body::None),
        (Method::GET, "/api/v1/approvals".into(), Body::None),
        (Method::POST, "/api/v1/approvals".into(), Body::Json(approval_body())),
        (Method::GET, "/api/v1/approvals/stats".into(), Body::None),
        (Method::GET, format!("/api/v1/approvals/{appr}"), Body::None),
        (
            Method::POST,
            format!("/api/v1/approvals/{appr}/decide"),
            Body::Json(json!({"decision": "approved"})),
        ),
        (Method::POST, format!("/api/v1/approvals/{appr}/execute"), Body::None),
    ];

    let secret = p.server.jwt_secret();
    let id = p.admin_id();
    let bad_signature = mint_token(&"x".repeat(48), id, "admin", "admin", 3600).unwrap();
    let expired = mint_token_claims(
        secret,
        &json!({"sub": id.to_string(), "username": "admin", "role": "admin",
                "iat": now_secs() - 7200, "exp": now_secs() - 3600}),
    )
    .unwrap();
    let alg_none = unsigned_token(&claims(id, "admin", "admin", now_secs() + 3600));
    let hs384 = mint_token_alg(
        jsonwebtoken::Algorithm::HS384,
        secret,
        &claims(id, "admin", "admin", now_secs() + 3600),
    )
    .unwrap();
    let no_exp = mint_token_claims(
        secret,
        &json!({"sub": id.to_string(), "username": "admin", "role": "admin", "iat": now_secs()}),
    )
    .unwrap();
    let sub_not_an_id =
        mint_token_claims(secret, &json!({"sub": "admin", "username": "admin", "role": "admin", "iat": now_secs(), "exp": now_secs() + 3600}))
            .unwrap();
    let valid = p.admin.token().unwrap().to_owned();
    let mut tampered_parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let sig = tampered_parts[2].clone();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    tampered_parts[2] = format!("{flipped}{}", &sig[1..]);
    let tampered = tampered_parts.join(".");

    let headers: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("empty bearer", Some("Bearer ".into())),
        ("malformed token", Some("Bearer not-a-jwt".into())),
        ("basic auth", Some("Basic YWRtaW46cGFzc3dvcmQ=".into())),
        ("token without scheme", Some(valid.clone())),
        ("bad signature", Some(format!("Bearer {bad_signature}"))),
        ("tampered signature", Some(format!("Bearer {tampered}"))),
        ("expired token", Some(format!("Bearer {expired}"))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("HS384", Some(format!("Bearer {hs384}"))),
        ("no exp claim", Some(format!("Bearer {no_exp}"))),
        ("sub that is not a user id", Some(format!("Bearer {sub_not_an_id}"))),
    ];

    let anonymous = p.admin.anonymous();
    for (method, path, body) in &routes {
        for (what, header) in &headers {
            let resp =
                anonymous.request(method.clone(), path, body.clone(), header.as_deref()).await.unwrap();
            assert_eq!(resp.status, 401, "{method} {path} with {what}: HTTP {} {}", resp.status, resp.text);
            resp.expect_error(401, &["unauthorized"]);
        }
    }

    // Nothing changed.
    assert_matches(
        &task_stats(&p.admin).await,
        &json!({"pending": 1, "inProgress": 0, "completed": 0, "total": 1}),
        "task stats",
    );
    assert_matches(
        &conversation_stats(&p.admin).await,
        &json!({"active": 1, "escalated": 0, "resolved": 0, "total": 1}),
        "conversation stats",
    );
    assert_matches(
        &approval_stats(&p.admin).await,
        &json!({"pending": 1, "approved": 0, "rejected": 0, "executed": 0, "total": 1}),
        "approval stats",
    );
    let c = get_ok(&p.admin, &format!("/api/v1/conversations/{conv}")).await;
    assert_eq!(c["subject"], "Late checkout");
    p.server
        .api()
        .login_response("intruder", "password123")
        .await
        .unwrap()
        .expect_error(401, &["unauthorized"]);
}

pub(crate) async fn token_minted_with_the_secret_is_accepted(db: TestDatabase) {
    let p = start(db).await;
    let token = mint_token(p.server.jwt_secret(), p.admin_id(), "admin", "admin", 600).unwrap();
    let api = p.server.api().with_token(&token);
    let me = get_ok(&api, "/api/v1/me").await;
    assert_eq!(me["id"], p.admin_user["id"]);
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "admin");
    create(&api, "/api/v1/tasks", task_body("front")).await;

    // A minted staff token carries the staff role: it may create, not decide.
    let (_, staff) = p.user("minted-staff", "staff").await.unwrap();
    let staff_token = mint_token(p.server.jwt_secret(), id_of(&staff), "minted-staff", "staff", 600).unwrap();
    let staff_api = p.server.api().with_token(staff_token);
    let me = get_ok(&staff_api, "/api/v1/me").await;
    assert_eq!(me["id"], staff["id"]);
    assert_eq!(me["role"], "staff");
    let appr = id_of(&create(&staff_api, "/api/v1/approvals", approval_body()).await);
    staff_api
        .post(&format!("/api/v1/approvals/{appr}/decide"), &json!({"decision": "approved"}))
        .await
        .unwrap()
        .expect_error(403, &["forbidden"]);
}

pub(crate) async fn me_returns_the_caller(db: TestDatabase) {
    let p = start(db).await;
    let me = get_ok(&p.admin, "/api/v1/me").await;
    assert_eq!(me["id"], p.admin_user["id"]);
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "admin");
    let (manager, user) = p.user("mgr.one", "manager").await.unwrap();
    let me = get_ok(&manager, "/api/v1/me").await;
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["username"], "mgr.one");
    assert_eq!(me["role"], "manager");
}

pub(crate) async fn users_are_created_by_admins_only_and_unique(db: TestDatabase) {
    let p = start(db).await;
    let resp = p
        .admin
        .post(
            "/api/v1/users",
            &json!({"username": "staff-one", "password": "correct horse", "role": "staff"}),
        )
        .await
        .unwrap();
    let user = resp.expect_status(201).clone();
    assert!(user["id"].is_i64(), "user id: {user}");
    assert_eq!(user["username"], "staff-one");
    assert_eq!(user["role"], "staff");
    for secret in ["password", "passwordHash", "password_hash"] {
        assert!(user.get(secret).is_none(), "created user exposes {secret}: {user}");
    }
    let staff = p.admin.with_token(p.admin.login("staff-one", "correct horse").await.unwrap());
    let me = get_ok(&staff, "/api/v1/me").await;
    assert_eq!(me["id"], user["id"]);

    let manager_user = p.admin.create_user("boss", "manager-pass", "manager").await.unwrap();
    assert_eq!(manager_user["role"], "manager");
    let manager = p.admin.with_token(p.admin.login("boss", "manager-pass").await.unwrap());

    for (who, api) in [("manager", &manager), ("staff", &staff)] {
        let resp = api
            .post(
                "/api/v1/users",
                &json!({"username": format!("by-{who}"), "password": "whatever1", "role": "admin"}),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 403, "{who} creating a user: {}", resp.text);
        resp.expect_error(403, &["forbidden"]);
        p.server
            .api()
            .login_response(&format!("by-{who}"), "whatever1")
            .await
            .unwrap()
            .expect_error(401, &["unauthorized"]);
    }

    let dup = p
        .admin
        .post(
            "/api/v1/users",
            &json!({"username": "staff-one", "password": "another one", "role": "manager"}),
        )
        .await
        .unwrap();
    dup.expect_error(409, &["conflict"]);
    // The original is untouched.
    p.admin.login("staff-one", "correct horse").await.unwrap();

    let bad_role = p
        .admin
        .post("/api/v1/users", &json!({"username": "root2", "password": "password123", "role": "superuser"}))
        .await
        .unwrap();
    bad_role.expect_error(400, &["bad_request", "validation_failed"]);
    let missing =
        p.admin.post("/api/v1/users", &json!({"username": "nopass", "role": "staff"})).await.unwrap();
    missing.expect_error(400, &["bad_request", "validation_failed"]);
}

// ---------------------------------------------------------------------------------------------
// 3. Errors
// ---------------------------------------------------------------------------------------------

pub(crate) async fn malformed_and_invalid_input_is_400(db: TestDatabase) {
    let p = start(db).await;
    let task = id_of(&create(&p.admin, "/api/v1/tasks", task_body("front")).await);
    let conv = id_of(&create(&p.admin, "/api/v1/conversations", conversation_body("Ada")).await);
    let appr = id_of(&create(&p.admin, "/api/v1/approvals", approval_body()).await);
    let either = &["bad_request", "validation_failed"][..];
    let validation = &["validation_failed"][..];

    let raw = |text: &str| Body::Raw {
        content_type: Some("application/json".into()),
        bytes: text.as_bytes().to_vec(),
    };
    let cases: Vec<(&str, Method, String, Body, &[&str])> = vec![
        ("malformed JSON", Method::POST, "/api/v1/tasks".into(), raw("{\"type\": \"x\","), either),
        ("JSON array", Method::POST, "/api/v1/tasks".into(), raw("[1, 2]"), either),
        ("empty body", Method::POST, "/api/v1/tasks".into(), raw(""), either),
        (
            "wrong type",
            Method::POST,
            "/api/v1/tasks".into(),
            Body::Json(json!({"type": 5, "department": "front", "description": "x"})),
            either,
        ),
        (
            "missing type",
            Method::POST,
            "/api/v1/tasks".into(),
            Body::Json(json!({"department": "front", "description": "x"})),
            validation,
        ),
        (
            "empty type",
            Method::POST,
            "/api/v1/tasks".into(),
            Body::Json(json!({"type": "", "department": "front", "description": "x"})),
            validation,
        ),
        (
            "blank department",
            Method::POST,
            "/api/v1/tasks".into(),
            Body::Json(json!({"type": "x", "department": "   ", "description": "x"})),
            validation,
        ),
        (
            "missing description",
            Method::POST,
            "/api/v1/tasks".into(),
            Body::Json(json!({"type": "x", "department": "front"})),
            validation,
        ),
        (
            "assign without assignee",
            Method::POST,
            format!("/api/v1/tasks/{task}/assign"),
            Body::Json(json!({})),
            validation,
        ),
        (
            "assign to empty name",
            Method::POST,
            format!("/api/v1/tasks/{task}/assign"),
            Body::Json(json!({"assignee": ""})),
            validation,
        ),
        (
            "conversation without guestName",
            Method::POST,
            "/api/v1/conversations".into(),
            Body::Json(json!({"channel": "email", "subject": "x"})),
            validation,
        ),
        (
            "conversation with empty subject",
            Method::POST,
            "/api/v1/conversations".into(),
            Body::Json(json!({"guestName": "Bo", "channel": "email", "subject": ""})),
            validation,
        ),
        (
            "escalate without reason",
            Method::POST,
            format!("/api/v1/conversations/{conv}/escalate"),
            Body::Json(json!({})),
            validation,
        ),
        (
            "escalate with empty reason",
            Method::POST,
            format!("/api/v1/conversations/{conv}/escalate"),
            Body::Json(json!({"reason": " "})),
            validation,
        ),
        (
            "patch with empty subject",
            Method::PATCH,
            format!("/api/v1/conversations/{conv}"),
            Body::Json(json!({"subject": ""})),
            validation,
        ),
        (
            "approval without kind",
            Method::POST,
            "/api/v1/approvals".into(),
            Body::Json(json!({"summary": "x"})),
            validation,
        ),
        (
            "approval with empty summary",
            Method::POST,
            "/api/v1/approvals".into(),
            Body::Json(json!({"kind": "refund", "summary": ""})),
            validation,
        ),
        (
            "decision maybe",
            Method::POST,
            format!("/api/v1/approvals/{appr}/decide"),
            Body::Json(json!({"decision": "maybe"})),
            either,
        ),
        (
            "decision missing",
            Method::POST,
            format!("/api/v1/approvals/{appr}/decide"),
            Body::Json(json!({})),
            either,
        ),
        ("task status=bogus", Method::GET, "/api/v1/tasks?status=bogus".into(), Body::None, either),
        (
            "conversation state=bogus",
            Method::GET,
            "/api/v1/conversations?state=bogus".into(),
            Body::None,
            either,
        ),
        ("approval status=bogus", Method::GET, "/api/v1/approvals?status=bogus".into(), Body::None, either),
        ("limit=201", Method::GET, "/api/v1/tasks?limit=201".into(), Body::None, either),
        ("limit=0", Method::GET, "/api/v1/tasks?limit=0".into(), Body::None, either),
        ("limit=-5", Method::GET, "/api/v1/tasks?limit=-5".into(), Body::None, either),
        ("limit=abc", Method::GET, "/api/v1/tasks?limit=abc".into(), Body::None, either),
        ("cursor=abc", Method::GET, "/api/v1/tasks?cursor=abc".into(), Body::None, either),
        (
            "conversations limit=201",
            Method::GET,
            "/api/v1/conversations?limit=201".into(),
            Body::None,
            either,
        ),
        ("approvals limit=201", Method::GET, "/api/v1/approvals?limit=201".into(), Body::None, either),
        (
            "login without password",
            Method::POST,
            "/api/v1/auth/login".into(),
            Body::Json(json!({"username": "admin"})),
            either,
        ),
        (
            "login with malformed JSON",
            Method::POST,
            "/api/v1/auth/login".into(),
            raw("{\"username\""),
            either,
        ),
    ];
    for (what, method, path, body, codes) in cases {
        let resp = p.admin.request(method.clone(), &path, body, None).await.unwrap();
        assert_eq!(resp.status, 400, "{what} ({method} {path}): HTTP {} {}", resp.status, resp.text);
        resp.expect_error(400, codes);
    }

    // Nothing changed.
    let t = get_ok(&p.admin, &format!("/api/v1/tasks/{task}")).await;
    assert_eq!(t["status"], "pending");
    assert!(t["assignee"].is_null());
    let c = get_ok(&p.admin, &format!("/api/v1/conversations/{conv}")).await;
    assert_eq!(c["state"], "active");
    assert_eq!(c["subject"], "Late checkout");
    let a = get_ok(&p.admin, &format!("/api/v1/approvals/{appr}")).await;
    assert_eq!(a["status"], "pending");
    assert_eq!(task_stats(&p.admin).await["total"], 1);
    assert_eq!(conversation_stats(&p.admin).await["total"], 1);
    assert_eq!(approval_stats(&p.admin).await["total"], 1);
}

pub(crate) async fn content_type_and_body_size_are_enforced(db: TestDatabase) {
    let p = start(db).await;
    let json_bytes = task_body("front").to_string().into_bytes();
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let resp = p
            .admin
            .request(
                Method::POST,
                "/api/v1/tasks",
                Body::Raw { content_type: ct.map(str::to_owned), bytes: json_bytes.clone() },
                None,
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 415, "content type {ct:?}: HTTP {} {}", resp.status, resp.text);
        resp.expect_error(415, &["unsupported_media_type"]);
    }
    // A charset parameter is still JSON.
    let resp = p
        .admin
        .request(
            Method::POST,
            "/api/v1/tasks",
            Body::Raw {
                content_type: Some("application/json; charset=utf-8".into()),
                bytes: json_bytes.clone(),
            },
            None,
        )
        .await
        .unwrap();
    resp.expect_status(201);

    // Over 64 KiB.
    let big = json!({"type": "x", "department": "front", "description": "d".repeat(70 * 1024)});
    p.admin.post("/api/v1/tasks", &big).await.unwrap().expect_error(413, &["payload_too_large"]);
    let big_payload = json!({"kind": "refund", "summary": "big", "payload": {"blob": "b".repeat(80 * 1024)}});
    p.admin.post("/api/v1/approvals", &big_payload).await.unwrap().expect_error(413, &["payload_too_large"]);
    let huge = json!({"username": "admin", "password": "p".repeat(100 * 1024)});
    p.server.api().post("/api/v1/auth/login", &huge).await.unwrap().expect_error(413, &["payload_too_large"]);

    assert_matches(&task_stats(&p.admin).await, &json!({"pending": 1, "total": 1}), "task stats");
    assert_eq!(approval_stats(&p.admin).await["total"], 0);
}

pub(crate) async fn unknown_routes_methods_and_ids(db: TestDatabase) {
    let p = start(db).await;
    let task = id_of(&create(&p.admin, "/api/v1/tasks", task_body("front")).await);

    let resp = p.admin.get("/api/v1/definitely-not-a-route").await.unwrap();
    resp.expect_error(404, &["not_found"]);
    let resp = p.admin.get("/api/v1/tasks/1/nothing-here").await.unwrap();
    resp.expect_error(404, &["not_found"]);

    let missing = 987_654;
    let cases: Vec<(Method, String, Body)> = vec![
        (Method::GET, format!("/api/v1/tasks/{missing}"), Body::None),
        (Method::POST, format!("/api/v1/tasks/{missing}/assign"), Body::Json(json!({"assignee": "admin"}))),
        (Method::POST, format!("/api/v1/tasks/{missing}/complete"), Body::None),
        (Method::GET, format!("/api/v1/conversations/{missing}"), Body::None),
        (Method::PATCH, format!("/api/v1/conversations/{missing}"), Body::Json(json!({"subject": "x"}))),
        (
            Method::POST,
            format!("/api/v1/conversations/{missing}/escalate"),
            Body::Json(json!({"reason": "x"})),
        ),
        (Method::POST, format!("/api/v1/conversations/{missing}/resolve"), Body::None),
        (Method::GET, format!("/api/v1/approvals/{missing}"), Body::None),
        (
            Method::POST,
            format!("/api/v1/approvals/{missing}/decide"),
            Body::Json(json!({"decision": "approved"})),
        ),
        (Method::POST, format!("/api/v1/approvals/{missing}/execute"), Body::None),
    ];
    for (method, path, body) in cases {
        let resp = p.admin.request(method.clone(), &path, body, None).await.unwrap();
        assert_eq!(resp.status, 404, "{method} {path}: HTTP {} {}", resp.status, resp.text);
        resp.expect_error(404, &["not_found"]);
    }

    for (method, path) in [
        (Method::DELETE, "/api/v1/tasks".to_owned()),
        (Method::PUT, format!("/api/v1/tasks/{task}")),
        (Method::DELETE, format!("/api/v1/tasks/{task}")),
        (Method::GET, "/api/v1/auth/login".to_owned()),
        (Method::GET, format!("/api/v1/tasks/{task}/complete")),
    ] {
        let resp = p.admin.request(method.clone(), &path, Body::None, None).await.unwrap();
        assert_eq!(resp.status, 405, "{method} {path}: HTTP {} {}", resp.status, resp.text);
        resp.expect_error(405, &[]);
    }

    // Nothing changed.
    let t = get_ok(&p.admin, &format!("/api/v1/tasks/{task}")).await;
    assert_eq!(t["status"], "pending");
    assert_eq!(task_stats(&p.admin).await["total"], 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Resources
// ---------------------------------------------------------------------------------------------

pub(crate) async fn task_create_and_get(db: TestDatabase) {
    let p = start(db).await;
    let body =
        json!({"type": "maintenance", "department": "engineering", "description": "Fix the AC in 204"});
    let t = create(&p.admin, "/api/v1/tasks", body).await;
    assert!(t["id"].is_i64(), "{t}");
    assert_eq!(t["type"], "maintenance");
    assert_eq!(t["department"], "engineering");
    assert_eq!(t["description"], "Fix the AC in 204");
    assert_eq!(t["status"], "pending");
    assert!(t.get("assignee").is_some_and(Value::is_null), "assignee must be null: {t}");
    assert!(
        t["createdBy"] == "admin" || t["createdBy"] == p.admin_user["id"],
        "createdBy should name the admin: {t}"
    );
    assert_utc_time(&t["createdAt"], "createdAt");
    assert_utc_time(&t["updatedAt"], "updatedAt");
    assert!(t.get("completedAt").is_some_and(Value::is_null), "completedAt must be null: {t}");
    let fetched = get_ok(&p.admin, &format!("/api/v1/tasks/{}", id_of(&t))).await;
    assert_eq!(fetched, t);

    let (staff, _) = p.user("night-porter", "staff").await.unwrap();
    let assigned = create(
        &staff,
        "/api/v1/tasks",
        json!({"type": "delivery", "department": "front", "description": "Bags to 305", "assignee": "admin"}),
    )
    .await;
    assert_eq!(assigned["status"], "in_progress");
    assert_eq!(assigned["assignee"], "admin");
    assert!(id_of(&assigned) > id_of(&t));

    let unknown = p
        .admin
        .post(
            "/api/v1/tasks",
            &json!({"type": "x", "department": "front", "description": "x", "assignee": "ghost-user"}),
        )
        .await
        .unwrap();
    unknown.expect_error(400, &["bad_request", "validation_failed"]);

    let stats = task_stats(&p.admin).await;
    assert_eq!(stats, json!({"pending": 1, "inProgress": 1, "completed": 0, "total": 2}));
}

pub(crate) async fn task_assign_complete_and_conflicts(db: TestDatabase) {
    let p = start(db).await;
    let (staff, _) = p.user("maria", "staff").await.unwrap();
    p.user("jonas", "staff").await.unwrap();
    let t = create(&staff, "/api/v1/tasks", task_body("housekeeping")).await;
    let id = id_of(&t);

    let resp =
        p.admin.post(&format!("/api/v1/tasks/{id}/assign"), &json!({"assignee": "maria"})).await.unwrap();
    let a = resp.expect_status(200).clone();
    assert_eq!(a["id"], id);
    assert_eq!(a["status"], "in_progress");
    assert_eq!(a["assignee"], "maria");
    assert_utc_time(&a["updatedAt"], "updatedAt");
    assert!(a["completedAt"].is_null());

    // Reassigning an in-progress task is allowed.
    let resp =
        p.admin.post(&format!("/api/v1/tasks/{id}/assign"), &json!({"assignee": "jonas"})).await.unwrap();
    assert_eq!(resp.expect_status(200)["assignee"], "jonas");

    let unknown = p
        .admin
        .post(&format!("/api/v1/tasks/{id}/assign"), &json!({"assignee": "ghost-user"}))
        .await
        .unwrap();
    unknown.expect_error(400, &["bad_request", "validation_failed"]);
    assert_eq!(get_ok(&p.admin, &format!("/api/v1/tasks/{id}")).await["assignee"], "jonas");

    let resp = staff.post_empty(&format!("/api/v1/tasks/{id}/complete")).await.unwrap();
    let c = resp.expect_status(200).clone();
    assert_eq!(c["status"], "completed");
    assert_eq!(c["assignee"], "jonas");
    assert_utc_time(&c["completedAt"], "completedAt");

    let again = p.admin.post_empty(&format!("/api/v1/tasks/{id}/complete")).await.unwrap();
    again.expect_error(409, &["conflict"]);
    let reassign =
        p.admin.post(&format!("/api/v1/tasks/{id}/assign"), &json!({"assignee": "maria"})).await.unwrap();
    reassign.expect_error(409, &["conflict"]);

    let now = get_ok(&p.admin, &format!("/api/v1/tasks/{id}")).await;
    assert_eq!(now, c, "a refused transition changed the task");

    // A second task, assigned at creation, then completed.
    let t2 = create(
        &p.admin,
        "/api/v1/tasks",
        json!({"type": "x", "department": "front", "description": "y", "assignee": "maria"}),
    )
    .await;
    let t3 = create(&p.admin, "/api/v1/tasks", task_body("front")).await;
    assert_eq!(
        task_stats(&p.admin).await,
        json!({"pending": 1, "inProgress": 1, "completed": 1, "total": 3})
    );
    p.admin.post_empty(&format!("/api/v1/tasks/{}/complete", id_of(&t2))).await.unwrap().expect_status(200);
    assert_eq!(
        task_stats(&p.admin).await,
        json!({"pending": 1, "inProgress": 0, "completed": 2, "total": 3})
    );
    assert_eq!(get_ok(&p.admin, &format!("/api/v1/tasks/{}", id_of(&t3))).await["status"], "pending");
}

pub(crate) async fn task_list_filters_and_pagination(db: TestDatabase) {
    let p = start(db).await;
    p.user("cook-1", "staff").await.unwrap();
    let mk = |dept: &str, assignee: Option<&str>| {
        let mut b = task_body(dept);
        if let Some(a) = assignee {
            b["assignee"] = json!(a);
        }
        b
    };
    let f1 = id_of(&create(&p.admin, "/api/v1/tasks", mk("front", None)).await);
    let f2 = id_of(&create(&p.admin, "/api/v1/tasks", mk("front", Some("admin"))).await);
    let k1 = id_of(&create(&p.admin, "/api/v1/tasks", mk("kitchen", None)).await);
    let f3 = id_of(&create(&p.admin, "/api/v1/tasks", mk("front", Some("admin"))).await);
    let k2 = id_of(&create(&p.admin, "/api/v1/tasks", mk("kitchen", Some("cook-1"))).await);
    let f4 = id_of(&create(&p.admin, "/api/v1/tasks", mk("front", None)).await);
    let k3 = id_of(&create(&p.admin, "/api/v1/tasks", mk("kitchen", None)).await);
    p.admin.post_empty(&format!("/api/v1/tasks/{f2}/complete")).await.unwrap().expect_status(200);

    let all = get_ok(&p.admin, "/api/v1/tasks").await;
    assert_eq!(ids(&all), vec![k3, f4, k2, f3, k1, f2, f1], "default listing: {all}");
    assert!(all["nextCursor"].is_null(), "nextCursor on the only page: {all}");
    for item in all["items"].as_array().unwrap() {
        assert_eq!(item, &get_ok(&p.admin, &format!("/api/v1/tasks/{}", id_of(item))).await, "listed task");
    }

    let check = |query: &'static str, expected: Vec<i64>| {
        let api = p.admin.clone();
        async move {
            let list = get_ok(&api, &format!("/api/v1/tasks?{query}")).await;
            assert_eq!(ids(&list), expected, "GET /api/v1/tasks?{query}: {list}");
            assert!(list["nextCursor"].is_null(), "?{query}: {list}");
            list
        }
    };
    let pending = check("status=pending", vec![k3, f4, k1, f1]).await;
    assert!(pending["items"].as_array().unwrap().iter().all(|t| t["status"] == "pending"));
    check("status=in_progress", vec![k2, f3]).await;
    check("status=completed", vec![f2]).await;
    let kitchen = check("department=kitchen", vec![k3, k2, k1]).await;
    assert!(kitchen["items"].as_array().unwrap().iter().all(|t| t["department"] == "kitchen"));
    check("assignee=admin", vec![f3, f2]).await;
    check("assignee=cook-1", vec![k2]).await;
    check("assignee=admin&status=in_progress", vec![f3]).await;
    check("department=front&status=pending", vec![f4, f1]).await;
    check("department=nowhere", vec![]).await;

    // Pagination: limit 3 over 7 items → 3, 3, 1.
    let pages = all_pages(&p.admin, "/api/v1/tasks?", 3).await;
    assert_eq!(pages.len(), 3, "pages: {pages:?}");
    assert_eq!(pages.concat(), vec![k3, f4, k2, f3, k1, f2, f1]);
    let pages = all_pages(&p.admin, "/api/v1/tasks?department=front", 3).await;
    assert_eq!(pages, vec![vec![f4, f3, f2], vec![f1]]);

    get_ok(&p.admin, "/api/v1/tasks?limit=200").await;
    p.admin
        .get("/api/v1/tasks?limit=201")
        .await
        .unwrap()
        .expect_error(400, &["bad_request", "validation_failed"]);

    // Default page size 50.
    for _ in 0..45 {
        create(&p.admin, "/api/v1/tasks", mk("bulk", None)).await;
    }
    let first = get_ok(&p.admin, "/api/v1/tasks").await;
    assert_eq!(ids(&first).len(), 50, "default page size");
    let cursor =
        first["nextCursor"].as_i64().unwrap_or_else(|| panic!("no nextCursor with 52 tasks: {first}"));
    let second = get_ok(&p.admin, &format!("/api/v1/tasks?cursor={cursor}")).await;
    assert_eq!(ids(&second), vec![f2, f1]);
    assert!(second["nextCursor"].is_null());
}

pub(crate) async fn conversation_lifecycle(db: TestDatabase) {
    let p = start(db).await;
    let (staff, _) = p.user("agent-7", "staff").await.unwrap();
    let c1 = create(&staff, "/api/v1/conversations", conversation_body("Ada Lovelace")).await;
    assert_eq!(c1["state"], "active");
    assert_eq!(c1["guestName"], "Ada Lovelace");
    assert_eq!(c1["channel"], "whatsapp");
    assert_eq!(c1["subject"], "Late checkout");
    assert_utc_time(&c1["createdAt"], "createdAt");
    let id1 = id_of(&c1);
    assert_eq!(get_ok(&p.admin, &format!("/api/v1/conversations/{id1}")).await, c1);

    let resp = p
        .admin
        .patch(&format!("/api/v1/conversations/{id1}"), &json!({"subject": "Checkout at 2pm"}))
        .await
        .unwrap();
    let patched = resp.expect_status(200).clone();
    assert_eq!(patched["subject"], "Checkout at 2pm");
    assert_eq!(patched["guestName"], "Ada Lovelace");
    assert_eq!(patched["channel"], "whatsapp");
    assert_eq!(patched["state"], "active");
    let resp = p
        .admin
        .patch(&format!("/api/v1/conversations/{id1}"), &json!({"guestName": "Ada King", "channel": "email"}))
        .await
        .unwrap();
    let patched = resp.expect_status(200).clone();
    assert_eq!(patched["guestName"], "Ada King");
    assert_eq!(patched["channel"], "email");
    assert_eq!(patched["subject"], "Checkout at 2pm");
    assert_eq!(get_ok(&p.admin, &format!("/api/v1/conversations/{id1}")).await, patched);

    // escalate: reason required, only from active.
    p.admin
        .post(&format!("/api/v1/conversations/{id1}/escalate"), &json!({}))
        .await
        .unwrap()
        .expect_error(400, &["validation_failed"]);
    let resp = staff
        .post(&format!("/api/v1/conversations/{id1}/escalate"), &json!({"reason": "VIP guest"}))
        .await
        .unwrap();
    assert_eq!(resp.expect_status(200)["state"], "escalated");
    p.admin
        .post(&format!("/api/v1/conversations/{id1}/escalate"), &json!({"reason": "again"}))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);

    // resolve from escalated, then nothing more.
    let resp = p.admin.post_empty(&format!("/api/v1/conversations/{id1}/resolve")).await.unwrap();
    assert_eq!(resp.expect_status(200)["state"], "resolved");
    p.admin
        .post_empty(&format!("/api/v1/conversations/{id1}/resolve"))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);
    p.admin
        .post(&format!("/api/v1/conversations/{id1}/escalate"), &json!({"reason": "too late"}))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);
    assert_eq!(get_ok(&p.admin, &format!("/api/v1/conversations/{id1}")).await["state"], "resolved");

    // resolve straight from active.
    let id2 = id_of(&create(&p.admin, "/api/v1/conversations", conversation_body("Grace")).await);
    let id3 = id_of(&create(&p.admin, "/api/v1/conversations", conversation_body("Linus")).await);
    let id4 = id_of(&create(&p.admin, "/api/v1/conversations", conversation_body("Barbara")).await);
    let resp = p.admin.post_empty(&format!("/api/v1/conversations/{id2}/resolve")).await.unwrap();
    assert_eq!(resp.expect_status(200)["state"], "resolved");
    p.admin
        .post(&format!("/api/v1/conversations/{id3}/escalate"), &json!({"reason": "angry"}))
        .await
        .unwrap()
        .expect_status(200);

    let list = |q: &'static str| {
        let api = p.admin.clone();
        async move { ids(&get_ok(&api, &format!("/api/v1/conversations{q}")).await) }
    };
    assert_eq!(list("").await, vec![id4, id3, id2, id1]);
    assert_eq!(list("?state=active").await, vec![id4]);
    assert_eq!(list("?state=escalated").await, vec![id3]);
    assert_eq!(list("?state=resolved").await, vec![id2, id1]);
    let pages = all_pages(&p.admin, "/api/v1/conversations?", 3).await;
    assert_eq!(pages, vec![vec![id4, id3, id2], vec![id1]]);

    assert_eq!(
        conversation_stats(&p.admin).await,
        json!({"active": 1, "escalated": 1, "resolved": 2, "total": 4})
    );
}

pub(crate) async fn approval_lifecycle_and_roles(db: TestDatabase) {
    let p = start(db).await;
    let (staff, _) = p.user("clerk", "staff").await.unwrap();
    let (manager, _) = p.user("duty-manager", "manager").await.unwrap();

    let payload =
        json!({"amount": 120.5, "items": [1, "two", {"three": 3}], "nested": {"ok": true}, "nothing": null});
    let a1 = create(
        &staff,
        "/api/v1/approvals",
        json!({"kind": "refund", "summary": "Refund room 12", "payload": payload}),
    )
    .await;
    assert_eq!(a1["status"], "pending");
    assert_eq!(a1["kind"], "refund");
    assert_eq!(a1["summary"], "Refund room 12");
    assert_eq!(a1["payload"], payload);
    assert_utc_time(&a1["createdAt"], "createdAt");
    let id1 = id_of(&a1);
    assert_eq!(get_ok(&staff, &format!("/api/v1/approvals/{id1}")).await, a1);

    let a2 = create(&staff, "/api/v1/approvals", json!({"kind": "comp", "summary": "Free breakfast"})).await;
    assert_eq!(a2["status"], "pending");
    assert!(a2.get("payload").is_none_or(Value::is_null), "no payload given: {a2}");
    let id2 = id_of(&a2);
    let a3 = create(
        &staff,
        "/api/v1/approvals",
        json!({"kind": "note", "summary": "Plain", "payload": "just text"}),
    )
    .await;
    assert_eq!(a3["payload"], "just text");
    let id3 = id_of(&a3);

    // Staff may neither decide nor execute.
    staff
        .post(&format!("/api/v1/approvals/{id1}/decide"), &json!({"decision": "approved"}))
        .await
        .unwrap()
        .expect_error(403, &["forbidden"]);
    assert_eq!(get_ok(&p.admin, &format!("/api/v1/approvals/{id1}")).await["status"], "pending");

    // Execute only from approved.
    manager
        .post_empty(&format!("/api/v1/approvals/{id1}/execute"))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);
    manager
        .post(&format!("/api/v1/approvals/{id1}/decide"), &json!({"decision": "maybe"}))
        .await
        .unwrap()
        .expect_error(400, &["bad_request", "validation_failed"]);

    let resp = manager
        .post(&format!("/api/v1/approvals/{id1}/decide"), &json!({"decision": "approved", "reason": "Fair"}))
        .await
        .unwrap();
    let decided = resp.expect_status(200).clone();
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["payload"], payload);
    manager
        .post(&format!("/api/v1/approvals/{id1}/decide"), &json!({"decision": "rejected"}))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);

    staff
        .post_empty(&format!("/api/v1/approvals/{id1}/execute"))
        .await
        .unwrap()
        .expect_error(403, &["forbidden"]);
    assert_eq!(get_ok(&p.admin, &format!("/api/v1/approvals/{id1}")).await["status"], "approved");

    let resp = manager.post_empty(&format!("/api/v1/approvals/{id1}/execute")).await.unwrap();
    assert_eq!(resp.expect_status(200)["status"], "executed");
    manager
        .post_empty(&format!("/api/v1/approvals/{id1}/execute"))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);

    // Admin rejects; a rejected approval cannot be executed.
    let resp = p
        .admin
        .post(&format!("/api/v1/approvals/{id2}/decide"), &json!({"decision": "rejected"}))
        .await
        .unwrap();
    assert_eq!(resp.expect_status(200)["status"], "rejected");
    p.admin
        .post_empty(&format!("/api/v1/approvals/{id2}/execute"))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);
    p.admin
        .post(&format!("/api/v1/approvals/{id2}/decide"), &json!({"decision": "approved"}))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);

    let list = |q: &'static str| {
        let api = staff.clone();
        async move { ids(&get_ok(&api, &format!("/api/v1/approvals{q}")).await) }
    };
    assert_eq!(list("").await, vec![id3, id2, id1]);
    assert_eq!(list("?status=pending").await, vec![id3]);
    assert_eq!(list("?status=approved").await, Vec::<i64>::new());
    assert_eq!(list("?status=executed").await, vec![id1]);
    assert_eq!(list("?status=rejected").await, vec![id2]);
    let pages = all_pages(&staff, "/api/v1/approvals?", 2).await;
    assert_eq!(pages, vec![vec![id3, id2], vec![id1]]);

    let stats = get_ok(&staff, "/api/v1/approvals/stats").await;
    assert_eq!(
        stats,
        json!({"stats": {"pending": 1, "approved": 0, "rejected": 1, "executed": 1, "total": 3}})
    );
}

pub(crate) async fn unavailable_database_gives_503(db: TestDatabase) {
    let p = start(db).await;
    create(&p.admin, "/api/v1/tasks", task_body("front")).await;
    p.server.api().get("/readyz").await.unwrap().expect_status(200);
    p.db.drop_postgres_now().expect("dropping the database");

    let started = Instant::now();
    let ready = p.server.api().get("/readyz").await.unwrap();
    assert_eq!(ready.status, 503, "/readyz with the database gone: HTTP {} {}", ready.status, ready.text);
    let resp = p.admin.get("/api/v1/tasks/stats").await.unwrap();
    resp.expect_error(503, &["unavailable"]);
    let resp = p.admin.post("/api/v1/tasks", &task_body("front")).await.unwrap();
    resp.expect_error(503, &["unavailable"]);
    assert!(started.elapsed() < Duration::from_secs(20), "503s took {:?}", started.elapsed());
    // The process still serves.
    p.server.api().get("/healthz").await.unwrap().expect_status(200);
}

pub(crate) async fn health_endpoints(db: TestDatabase) {
    let p = start(db).await;
    let api = p.server.api();
    api.get("/healthz").await.unwrap().expect_status(200);
    api.get("/readyz").await.unwrap().expect_status(200);
}

// ---------------------------------------------------------------------------------------------
// 5. WebSocket
// ---------------------------------------------------------------------------------------------

pub(crate) async fn ws_refuses_bad_tokens_before_upgrade(db: TestDatabase) {
    let p = start(db).await;
    let secret = p.server.jwt_secret();
    let id = p.admin_id();
    assert_refused(connect(&p.server.ws_url_bare()).await, 401, "no token");
    // The refusal is an error response like any other: JSON, code `unauthorized`.
    let refusal = connect(&p.server.ws_url("garbage")).await.expect_err("refused");
    let body = suites::refused_body(&refusal).unwrap_or_default();
    let json: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("401 body is not JSON ({e}): {body:?}"));
    assert_eq!(json["error"]["code"], "unauthorized", "{body}");
    assert_refused(connect(&p.server.ws_url("")).await, 401, "empty token");
    assert_refused(connect(&p.server.ws_url("garbage")).await, 401, "malformed token");
    let bad_sig = mint_token(&"y".repeat(40), id, "admin", "admin", 600).unwrap();
    assert_refused(connect(&p.server.ws_url(&bad_sig)).await, 401, "bad signature");
    let expired = mint_token_claims(
        secret,
        &json!({"sub": id.to_string(), "username": "admin", "role": "admin", "iat": now_secs() - 7200, "exp": now_secs() - 3600}),
    )
    .unwrap();
    assert_refused(connect(&p.server.ws_url(&expired)).await, 401, "expired token");
    let none = unsigned_token(&claims(id, "admin", "admin", now_secs() + 600));
    assert_refused(connect(&p.server.ws_url(&none)).await, 401, "alg none");
    let hs512 = mint_token_alg(
        jsonwebtoken::Algorithm::HS512,
        secret,
        &claims(id, "admin", "admin", now_secs() + 600),
    )
    .unwrap();
    assert_refused(connect(&p.server.ws_url(&hs512)).await, 401, "HS512");
    // And the real token is accepted.
    let ws = p.ws(p.admin.token().unwrap()).await.unwrap();
    ws.close().await;
}

pub(crate) async fn ws_opening_messages(db: TestDatabase) {
    let p = start(db).await;
    let (staff, staff_user) = p.user("front-desk", "staff").await.unwrap();
    create(&p.admin, "/api/v1/tasks", task_body("front")).await;
    let mut assigned = task_body("front");
    assigned["assignee"] = json!("front-desk");
    create(&p.admin, "/api/v1/tasks", assigned).await;
    create(&staff, "/api/v1/approvals", approval_body()).await;
    let c = id_of(&create(&staff, "/api/v1/conversations", conversation_body("Ada")).await);
    create(&staff, "/api/v1/conversations", conversation_body("Bob")).await;
    staff
        .post(&format!("/api/v1/conversations/{c}/escalate"), &json!({"reason": "x"}))
        .await
        .unwrap()
        .expect_status(200);

    let tasks = task_stats(&p.admin).await;
    let approvals = approval_stats(&p.admin).await;
    let conversations = conversation_stats(&p.admin).await;
    assert_eq!(tasks["total"], 2);

    let (ws, first) = p.ws_ready(staff.token().unwrap()).await.unwrap();
    let types: Vec<&str> = first.iter().map(|m| m["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(types, ["connected", "stats:tasks", "stats:approvals", "stats:conversations"], "{first:?}");
    let connected = &first[0]["payload"];
    assert_eq!(connected["userId"], staff_user["id"], "{}", first[0]);
    assert_eq!(connected["username"], "front-desk");
    assert_eq!(connected["role"], "staff");
    for (msg, expected) in first[1..].iter().zip([&tasks, &approvals, &conversations]) {
        assert!(msg["seq"].is_number(), "stats message without numeric seq: {msg}");
        assert_matches(&msg["payload"], expected, msg["type"].as_str().unwrap_or("?"));
    }
    ws.close().await;
}

pub(crate) async fn ws_clients_receive_every_stats_change(db: TestDatabase) {
    let p = start(db).await;
    let (staff, _) = p.user("runner", "staff").await.unwrap();
    let mut a = Watcher::connect(&p.server, p.admin.token().unwrap(), "admin socket").await;
    let mut b = Watcher::connect(&p.server, staff.token().unwrap(), "staff socket").await;
    assert_matches(
        &a.last_payload("stats:tasks"),
        &json!({"pending": 0, "inProgress": 0, "completed": 0, "total": 0}),
        "initial",
    );

    let t = id_of(&create(&staff, "/api/v1/tasks", task_body("front")).await);
    let expected = json!({"pending": 1, "inProgress": 0, "completed": 0, "total": 1});
    a.expect("stats:tasks", &expected).await;
    b.expect("stats:tasks", &expected).await;

    p.admin
        .post(&format!("/api/v1/tasks/{t}/assign"), &json!({"assignee": "runner"}))
        .await
        .unwrap()
        .expect_status(200);
    let expected = json!({"pending": 0, "inProgress": 1, "completed": 0, "total": 1});
    a.expect("stats:tasks", &expected).await;
    b.expect("stats:tasks", &expected).await;

    staff.post_empty(&format!("/api/v1/tasks/{t}/complete")).await.unwrap().expect_status(200);
    let expected = json!({"pending": 0, "inProgress": 0, "completed": 1, "total": 1});
    a.expect("stats:tasks", &expected).await;
    b.expect("stats:tasks", &expected).await;

    let ap = id_of(&create(&staff, "/api/v1/approvals", approval_body()).await);
    let expected = json!({"pending": 1, "approved": 0, "rejected": 0, "executed": 0, "total": 1});
    a.expect("stats:approvals", &expected).await;
    b.expect("stats:approvals", &expected).await;
    p.admin
        .post(&format!("/api/v1/approvals/{ap}/decide"), &json!({"decision": "approved"}))
        .await
        .unwrap()
        .expect_status(200);
    let expected = json!({"pending": 0, "approved": 1, "rejected": 0, "executed": 0, "total": 1});
    a.expect("stats:approvals", &expected).await;
    b.expect("stats:approvals", &expected).await;
    p.admin.post_empty(&format!("/api/v1/approvals/{ap}/execute")).await.unwrap().expect_status(200);
    let expected = json!({"pending": 0, "approved": 0, "rejected": 0, "executed": 1, "total": 1});
    a.expect("stats:approvals", &expected).await;
    b.expect("stats:approvals", &expected).await;

    let c = id_of(&create(&p.admin, "/api/v1/conversations", conversation_body("Ada")).await);
    let expected = json!({"active": 1, "escalated": 0, "resolved": 0, "total": 1});
    a.expect("stats:conversations", &expected).await;
    b.expect("stats:conversations", &expected).await;
    staff
        .post(&format!("/api/v1/conversations/{c}/escalate"), &json!({"reason": "VIP"}))
        .await
        .unwrap()
        .expect_status(200);
    let expected = json!({"active": 0, "escalated": 1, "resolved": 0, "total": 1});
    a.expect("stats:conversations", &expected).await;
    b.expect("stats:conversations", &expected).await;
    p.admin.post_empty(&format!("/api/v1/conversations/{c}/resolve")).await.unwrap().expect_status(200);
    let expected = json!({"active": 0, "escalated": 0, "resolved": 1, "total": 1});
    a.expect("stats:conversations", &expected).await;
    b.expect("stats:conversations", &expected).await;

    // Final values equal the REST stats.
    for w in [&a, &b] {
        assert_matches(&w.last_payload("stats:tasks"), &task_stats(&p.admin).await, &w.name);
        assert_matches(&w.last_payload("stats:approvals"), &approval_stats(&p.admin).await, &w.name);
        assert_matches(&w.last_payload("stats:conversations"), &conversation_stats(&p.admin).await, &w.name);
    }
}

pub(crate) async fn ws_burst_of_200_task_creations_converges(db: TestDatabase) {
    let p = start(db).await;
    let (staff, _) = p.user("burst-staff", "staff").await.unwrap();
    let mut a = Watcher::connect(&p.server, p.admin.token().unwrap(), "admin socket").await;
    let mut b = Watcher::connect(&p.server, staff.token().unwrap(), "staff socket").await;

    let mut handles = Vec::new();
    for i in 0..200 {
        let api = if i % 2 == 0 { p.admin.clone() } else { staff.clone() };
        handles.push(tokio::spawn(async move {
            let mut body = task_body(if i % 3 == 0 { "kitchen" } else { "front" });
            if i % 4 == 0 {
                body["assignee"] = json!("burst-staff");
            }
            api.post("/api/v1/tasks", &body).await
        }));
    }
    let mut statuses = HashMap::new();
    for h in handles {
        let resp = h.await.unwrap().unwrap();
        if resp.status != 201 {
            eprintln!("burst request failed: HTTP {} {}", resp.status, resp.text);
        }
        *statuses.entry(resp.status).or_insert(0) += 1;
    }
    assert_eq!(statuses, HashMap::from([(201, 200)]), "statuses of the 200 creations");

    let expected = task_stats(&p.admin).await;
    assert_eq!(expected, json!({"pending": 150, "inProgress": 50, "completed": 0, "total": 200}));
    for w in [&mut a, &mut b] {
        let matched = w.wait_for("stats:tasks", &expected, WAIT).await;
        assert!(
            matched,
            "{}: last stats:tasks {} != GET stats {expected} after 5 s",
            w.name,
            w.last_payload("stats:tasks")
        );
        // Nothing stale arrives afterwards.
        w.drain(Duration::from_millis(300)).await;
        assert_matches(&w.last_payload("stats:tasks"), &expected, &format!("{} after draining", w.name));
    }
}

pub(crate) async fn ws_refused_requests_emit_nothing(db: TestDatabase) {
    let p = start(db).await;
    let (staff, _) = p.user("quiet-staff", "staff").await.unwrap();
    let done = id_of(&create(&p.admin, "/api/v1/tasks", task_body("front")).await);
    p.admin.post_empty(&format!("/api/v1/tasks/{done}/complete")).await.unwrap().expect_status(200);
    let appr = id_of(&create(&p.admin, "/api/v1/approvals", approval_body()).await);
    let conv = id_of(&create(&p.admin, "/api/v1/conversations", conversation_body("Ada")).await);
    p.admin.post_empty(&format!("/api/v1/conversations/{conv}/resolve")).await.unwrap().expect_status(200);

    let mut w = Watcher::connect(&p.server, p.admin.token().unwrap(), "admin socket").await;
    // Let anything already in flight arrive first.
    w.drain(Duration::from_millis(300)).await;

    p.admin
        .post("/api/v1/tasks", &json!({}))
        .await
        .unwrap()
        .expect_error(400, &["bad_request", "validation_failed"]);
    p.admin
        .post(
            "/api/v1/tasks",
            &json!({"type": "x", "department": "y", "description": "z", "assignee": "ghost"}),
        )
        .await
        .unwrap()
        .expect_error(400, &["bad_request", "validation_failed"]);
    p.admin
        .anonymous()
        .post("/api/v1/tasks", &task_body("front"))
        .await
        .unwrap()
        .expect_error(401, &["unauthorized"]);
    staff
        .post(&format!("/api/v1/approvals/{appr}/decide"), &json!({"decision": "approved"}))
        .await
        .unwrap()
        .expect_error(403, &["forbidden"]);
    p.admin.post_empty("/api/v1/tasks/987654/complete").await.unwrap().expect_error(404, &["not_found"]);
    p.admin
        .post_empty(&format!("/api/v1/tasks/{done}/complete"))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);
    p.admin
        .post_empty(&format!("/api/v1/approvals/{appr}/execute"))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);
    p.admin
        .post(&format!("/api/v1/conversations/{conv}/escalate"), &json!({"reason": "late"}))
        .await
        .unwrap()
        .expect_error(409, &["conflict"]);
    p.admin
        .request(
            Method::POST,
            "/api/v1/tasks",
            Body::Raw {
                content_type: Some("text/plain".into()),
                bytes: task_body("front").to_string().into_bytes(),
            },
            None,
        )
        .await
        .unwrap()
        .expect_error(415, &["unsupported_media_type"]);

    let got = w.ws.drain_for(QUIET).await;
    assert!(got.is_empty(), "refused requests produced WebSocket messages: {got:?}");
}

pub(crate) async fn ws_ping_and_bad_messages(db: TestDatabase) {
    let p = start(db).await;
    let (mut ws, _) = p.ws_ready(p.admin.token().unwrap()).await.unwrap();

    ws.send_text(r#"{"type":"ping"}"#).await.unwrap();
    let pong = ws.next_json(WAIT).await.unwrap();
    assert_eq!(pong["type"], "pong", "{pong}");

    let bad: [(&str, String); 7] = [
        ("malformed JSON", "{not json".into()),
        ("unknown type", r#"{"type":"definitely-not-a-type"}"#.into()),
        ("JSON array", "[1,2,3]".into()),
        ("no type", r#"{"kind":"ping"}"#.into()),
        ("type not a string", r#"{"type":42}"#.into()),
        ("empty message", String::new()),
        ("60 KiB of garbage", "g".repeat(60 * 1024)),
    ];
    for (what, text) in bad {
        ws.send_text(&text).await.unwrap();
        let msg = ws.next_json(WAIT).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(msg["type"], "error", "{what}: {msg}");
        assert_eq!(msg["payload"]["code"], "bad_message", "{what}: {msg}");
        assert!(msg["payload"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {msg}");
        // Still open.
        ws.send_text(r#"{"type":"ping"}"#).await.unwrap();
        let pong = ws.next_json(WAIT).await.unwrap_or_else(|e| panic!("after {what}: {e}"));
        assert_eq!(pong["type"], "pong", "after {what}: {pong}");
    }
    ws.close().await;
}

pub(crate) async fn ws_oversize_frame_closes_1009(db: TestDatabase) {
    let p = start(db).await;
    let (mut ws, _) = p.ws_ready(p.admin.token().unwrap()).await.unwrap();
    let big = json!({"type": "ping", "pad": "x".repeat(65 * 1024)}).to_string();
    assert!(big.len() > 64 * 1024);
    // The server may close before the whole frame is written; the close frame is what counts.
    let _ = ws.send_text(&big).await;
    let code = ws.close_frame(WAIT).await.unwrap();
    assert_eq!(code, Some(1009));
}

pub(crate) async fn ws_graceful_shutdown_closes_1001(db: TestDatabase) {
    let mut p = start(db).await;
    let (staff, _) = p.user("leaving", "staff").await.unwrap();
    let (mut a, _) = p.ws_ready(p.admin.token().unwrap()).await.unwrap();
    let (mut b, _) = p.ws_ready(staff.token().unwrap()).await.unwrap();
    let wait = Duration::from_secs(10);
    let (exit, code_a, code_b) =
        tokio::join!(p.server.stop_graceful(), a.close_frame(wait), b.close_frame(wait));
    let exit = exit.unwrap();
    assert_eq!(code_a.unwrap(), Some(1001), "first client");
    assert_eq!(code_b.unwrap(), Some(1001), "second client");
    assert!(exit.success(), "server exit status after SIGTERM: {exit}; log:\n{}", p.server.logs());
}

pub(crate) async fn ws_token_expiry_closes_4401(db: TestDatabase) {
    let p = start(db).await;
    let lifetime = 3;
    let exp = now_secs() + lifetime;
    let token =
        mint_token_claims(p.server.jwt_secret(), &claims(p.admin_id(), "admin", "admin", exp)).unwrap();
    let (mut ws, _) = p.ws_ready(&token).await.unwrap();
    let code = ws.close_frame(Duration::from_secs(lifetime as u64 + 6)).await.unwrap();
    assert_eq!(code, Some(4401));
    let closed_at = now_secs();
    assert!(closed_at >= exp - 1, "closed at {closed_at}, before the token expired at {exp}");
    // The same token no longer opens a socket, nor answers over HTTP (RFC 7519: not accepted
    // on or after `exp`).
    assert_refused(
        connect(&p.server.ws_url(&token)).await,
        401,
        &format!("token with exp {exp} reused at {} (4401 received at {closed_at})", now_secs()),
    );
    let resp = p.server.api().with_token(&token).get("/api/v1/me").await.unwrap();
    assert_eq!(
        resp.status,
        401,
        "token with exp {exp} at {}: HTTP {} {}",
        now_secs(),
        resp.status,
        resp.text
    );
    resp.expect_error(401, &["unauthorized"]);
}

pub(crate) async fn ws_heartbeat_pings_and_drops_silent_clients(db: TestDatabase) {
    let p = Pulse::start_with(db, ServerOptions::default().env("WS_HEARTBEAT_SECS", "2"))
        .await
        .expect("starting the server");
    let token = p.admin.token().unwrap().to_owned();
    let (mut live, _) = p.ws_ready(&token).await.unwrap();
    let (mut silent, _) = p.ws_ready(&token).await.unwrap();

    // An answering client gets pings and stays connected.
    let got = live.drain_for(Duration::from_millis(5000)).await;
    assert!(
        got.is_empty(),
        "unexpected messages or close on a healthy socket: {got:?}; log:\n{}",
        p.server.logs()
    );
    assert!(
        live.pings_seen() >= 2,
        "only {} WebSocket pings in 5 s with WS_HEARTBEAT_SECS=2",
        live.pings_seen()
    );

    // `silent` has not been read (so has answered no ping) for 5 s; give it up to 13 s in all
    // (several times the interval: load on a 2-core machine must not make this flaky).
    let ended = live.drain_for(Duration::from_millis(8000)).await;
    assert!(ended.is_empty(), "healthy socket got {ended:?}; log:\n{}", p.server.logs());
    let mut outcome = None;
    let deadline = Instant::now() + Duration::from_secs(3);
    while outcome.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match silent.next_incoming(left).await {
            Some(Incoming::Close(code)) => outcome = Some(format!("close {code:?}")),
            Some(Incoming::Ended(why)) => outcome = Some(format!("ended: {why}")),
            Some(_) => {}
            None => break,
        }
    }
    assert!(outcome.is_some(), "a client that answered no ping for 13 s (heartbeat 2 s) is still connected");
    // The healthy one still works.
    live.send_text(r#"{"type":"ping"}"#).await.unwrap();
    assert_eq!(live.next_json(WAIT).await.unwrap()["type"], "pong");
}

pub(crate) async fn tokens_never_appear_in_logs(db: TestDatabase) {
    let mut p = start(db).await;
    let login_token = p.admin.token().unwrap().to_owned();
    let second = p.admin.login("admin", p.server.admin_password()).await.unwrap();
    let minted = mint_token(p.server.jwt_secret(), p.admin_id(), "admin", "admin", 600).unwrap();
    let bad_sig = mint_token(&"z".repeat(40), p.admin_id(), "admin", "admin", 600).unwrap();

    let (mut ws, _) = p.ws_ready(&login_token).await.unwrap();
    ws.send_text(r#"{"type":"ping"}"#).await.unwrap();
    ws.next_json(WAIT).await.unwrap();
    let (ws2, _) = p.ws_ready(&minted).await.unwrap();
    assert_refused(connect(&p.server.ws_url(&bad_sig)).await, 401, "bad signature");
    get_ok(&p.admin, "/api/v1/me").await;
    create(&p.admin.with_token(&second), "/api/v1/tasks", task_body("front")).await;
    p.admin
        .anonymous()
        .request(Method::GET, "/api/v1/me", Body::None, Some(&format!("Bearer {bad_sig}")))
        .await
        .unwrap();
    ws.close().await;
    ws2.close().await;

    let exit = p.server.stop_graceful().await.unwrap();
    let logs = p.server.logs();
    assert!(!logs.trim().is_empty(), "the server logged nothing (exit {exit})");
    for (what, token) in [
        ("login token", &login_token),
        ("second login token", &second),
        ("minted token", &minted),
        ("bad-signature token", &bad_sig),
    ] {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!logs.contains(token.as_str()), "the {what} appears in the log:\n{logs}");
        assert!(!logs.contains(signature), "the {what}'s signature appears in the log:\n{logs}");
    }
}
