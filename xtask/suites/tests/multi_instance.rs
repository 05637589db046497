//! Black-box tests of several Pulse instances on one database.
//!
//! On PostgreSQL every instance writes its events to the `events` outbox in the change's
//! transaction, publishes locally after the commit and rings `NOTIFY pulse_events`; every
//! instance's LISTEN connection (`application_name` `pulse-<8 hex>-listener`) reads the rows
//! it has not seen and republishes the other instances' events to its own WebSocket clients.
//! These tests start several server processes on one fresh PostgreSQL database (same
//! `JWT_SECRET` and admin password, so a token works on every instance) and check, from the
//! outside, that every client of every instance converges to the REST stats: with mutations
//! through every instance, when an instance is `kill -9`ed mid-burst, when a LISTEN backend is
//! terminated, and that a refused change produces no message anywhere. SQLite is single
//! instance: a second server on the same file must refuse to start.
//!
//! ```text
//! PULSE_SERVER_BIN=target/debug/server cargo test -p suites --test multi_instance
//! ```

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use suites::{
    ADMIN_USERNAME, Api, Cluster, ServerOptions, ServerProcess, TestDatabase, WAIT, Watcher, approval_body,
    conversation_body, free_port, get_ok, random_string, server_bin,
};

/// How long every socket must stay silent to count as "no message".
const QUIET: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Starts a [`Cluster`] of `n` instances and checks that no two share a name (the name tags
/// each instance's events and LISTEN connection).
async fn start_cluster(n: usize) -> Cluster {
    let cluster = Cluster::start(n).await.expect("starting the instances");
    let names: Vec<String> = (0..n).map(|i| cluster.instance_name(i)).collect();
    for (i, name) in names.iter().enumerate() {
        assert!(!names[..i].contains(name), "two instances share the name {name}: {names:?}");
    }
    cluster
}

fn task_body(i: usize, assignee: Option<&str>) -> Value {
    let mut body = json!({
        "type": "housekeeping",
        "department": if i.is_multiple_of(3) { "kitchen" } else { "front" },
        "description": format!("Fresh towels for room {}", 100 + i),
    });
    if let Some(a) = assignee {
        body["assignee"] = json!(a);
    }
    body
}

async fn create(api: &Api, path: &str, body: Value) -> i64 {
    let resp = api.post(path, &body).await.expect("request");
    let v = resp.expect_status(201);
    v["id"].as_i64().unwrap_or_else(|| panic!("no integer id in {v}"))
}

async fn post_ok(api: &Api, path: &str, body: Option<Value>) {
    let resp = match body {
        Some(b) => api.post(path, &b).await,
        None => api.post_empty(path).await,
    }
    .expect("request");
    resp.expect_status(200);
}

async fn task_stats(api: &Api) -> Value {
    get_ok(api, "/api/v1/tasks/stats").await
}

/// The three REST stats, in [`suites::STATS_TOPICS`] order.
async fn rest_stats(api: &Api) -> [Value; 3] {
    let approvals = get_ok(api, "/api/v1/approvals/stats").await;
    let approvals = approvals
        .get("stats")
        .cloned()
        .unwrap_or_else(|| panic!("approval stats not in \"stats\": {approvals}"));
    [task_stats(api).await, approvals, get_ok(api, "/api/v1/conversations/stats").await]
}

async fn status_of(server: &ServerProcess, path: &str) -> u16 {
    server.api().get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e:#}")).status
}

/// Waits (bounded) until `server`'s log contains `needle`.
async fn wait_for_log(server: &ServerProcess, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if server.logs().contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Converges every watcher (concurrently) to `expected`.
async fn converge_all(watchers: &mut [Watcher], expected: &[Value]) {
    join_all(watchers.iter_mut().map(|w| w.converge(expected, WAIT))).await;
}

/// Outcome counts of a burst of task creations.
#[derive(Default)]
struct BurstCounts {
    ok: AtomicUsize,
    refused: AtomicUsize,
    failed: AtomicUsize,
}

impl BurstCounts {
    fn done(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
            + self.refused.load(Ordering::SeqCst)
            + self.failed.load(Ordering::SeqCst)
    }
}

/// Starts `n` task creations through `api`, `concurrency` at a time; every fourth is assigned
/// to `assignee`. 2xx answers count as ok, other answers as refused, transport errors as
/// failed.
fn spawn_burst(
    api: Api,
    n: usize,
    concurrency: usize,
    assignee: &str,
) -> (Arc<BurstCounts>, tokio::task::JoinHandle<Vec<String>>) {
    let counts = Arc::new(BurstCounts::default());
    let c = Arc::clone(&counts);
    let assignee = assignee.to_owned();
    let handle = tokio::spawn(async move {
        let mut errors = Vec::new();
        let mut results = futures_util::stream::iter(0..n)
            .map(|i| {
                let api = api.clone();
                let body = task_body(i, i.is_multiple_of(4).then_some(assignee.as_str()));
                async move { api.post("/api/v1/tasks", &body).await }
            })
            .buffer_unordered(concurrency);
        while let Some(result) = results.next().await {
            match result {
                Ok(resp) if (200..300).contains(&resp.status) => {
                    c.ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(resp) => {
                    c.refused.fetch_add(1, Ordering::SeqCst);
                    errors.push(format!("HTTP {} {}", resp.status, resp.text));
                }
                Err(e) => {
                    c.failed.fetch_add(1, Ordering::SeqCst);
                    errors.push(format!("{e:#}"));
                }
            }
        }
        errors
    });
    (counts, handle)
}

/// Waits (bounded) until at least `n` requests of a burst are answered.
async fn wait_until_done(counts: &BurstCounts, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while counts.done() < n {
        assert!(
            Instant::now() < deadline,
            "only {} burst requests answered after {timeout:?}",
            counts.done()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_on_a_healthy_postgres_instance() {
    let c = start_cluster(2).await;
    for (i, server) in c.servers.iter().enumerate() {
        let ready = server.api().get("/readyz").await.expect("GET /readyz");
        assert_eq!(ready.status, 200, "instance {i} /readyz: HTTP {} {}", ready.status, ready.text);
        assert_eq!(status_of(server, "/healthz").await, 200, "instance {i} /healthz");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_converge_on_every_topic() {
    let c = start_cluster(3).await;
    let (staff, _) = c.user("floor-staff", "staff", 0).await.expect("creating a user");
    let staff_token = staff.token().expect("user token").to_owned();
    let admin = c.admin_token().to_owned();

    let mut watchers = vec![
        c.watcher(0, &admin, "instance 0 admin socket").await,
        c.watcher(1, &staff_token, "instance 1 staff socket").await,
        c.watcher(1, &admin, "instance 1 admin socket").await,
        c.watcher(2, &staff_token, "instance 2 staff socket").await,
    ];

    // The same sequence of changes of all three kinds through every instance, concurrently.
    let runs = (0..3).map(|i| {
        let admin = c.admins[i].clone();
        let staff = c.api(i, &staff_token);
        async move {
            let t1 = create(&staff, "/api/v1/tasks", task_body(i, None)).await;
            let t2 = create(&admin, "/api/v1/tasks", task_body(i, Some("floor-staff"))).await;
            create(&staff, "/api/v1/tasks", task_body(i + 10, None)).await;
            post_ok(&staff, &format!("/api/v1/tasks/{t2}/complete"), None).await;
            post_ok(&admin, &format!("/api/v1/tasks/{t1}/assign"), Some(json!({"assignee": "floor-staff"})))
                .await;

            let a1 = create(&staff, "/api/v1/approvals", approval_body()).await;
            let a2 = create(&staff, "/api/v1/approvals", approval_body()).await;
            create(&staff, "/api/v1/approvals", approval_body()).await;
            post_ok(&admin, &format!("/api/v1/approvals/{a1}/decide"), Some(json!({"decision": "approved"})))
                .await;
            post_ok(&admin, &format!("/api/v1/approvals/{a1}/execute"), None).await;
            post_ok(&admin, &format!("/api/v1/approvals/{a2}/decide"), Some(json!({"decision": "rejected"})))
                .await;

            let c1 = create(&staff, "/api/v1/conversations", conversation_body("Ada")).await;
            let c2 = create(&admin, "/api/v1/conversations", conversation_body("Grace")).await;
            create(&staff, "/api/v1/conversations", conversation_body("Linus")).await;
            post_ok(&staff, &format!("/api/v1/conversations/{c1}/escalate"), Some(json!({"reason": "VIP"})))
                .await;
            post_ok(&admin, &format!("/api/v1/conversations/{c2}/resolve"), None).await;
        }
    });
    join_all(runs).await;

    let expected = rest_stats(&c.admins[1]).await;
    assert_eq!(
        expected,
        [
            json!({"pending": 3, "inProgress": 3, "completed": 3, "total": 9}),
            json!({"pending": 3, "approved": 0, "rejected": 3, "executed": 3, "total": 9}),
            json!({"active": 3, "escalated": 3, "resolved": 3, "total": 9}),
        ],
        "REST stats after the changes"
    );
    for i in [0, 2] {
        assert_eq!(rest_stats(&c.admins[i]).await, expected, "REST stats of instance {i}");
    }
    converge_all(&mut watchers, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_instance_mid_burst_loses_nothing_elsewhere() {
    let mut c = start_cluster(3).await;
    let admin = c.admin_token().to_owned();
    let a_name = c.instance_name(0);
    let mut survivors = vec![
        c.watcher(1, &admin, "instance B socket").await,
        c.watcher(2, &admin, "instance C socket").await,
        c.watcher(2, &admin, "instance C second socket").await,
    ];

    const N: usize = 300;
    const CONCURRENCY: usize = 32;
    let (counts, burst) = spawn_burst(c.admins[0].clone(), N, CONCURRENCY, ADMIN_USERNAME);
    wait_until_done(&counts, 100, Duration::from_secs(30)).await;
    c.servers[0].kill().await.expect("kill -9 of instance A");
    let errors = tokio::time::timeout(Duration::from_secs(40), burst)
        .await
        .expect("the burst did not end within 40 s of the kill")
        .expect("burst task");
    let ok = counts.ok.load(Ordering::SeqCst);
    let refused = counts.refused.load(Ordering::SeqCst);
    assert_eq!(refused, 0, "A refused requests before dying: {errors:?}");
    assert!((100..N).contains(&ok), "A answered {ok} of {N} with 2xx: the kill was not mid-burst");

    // Every backend of A ends, so each of its transactions is committed or rolled back.
    let gone = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '{a_name}%' \
         AND datname = current_database()"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if c.psql(&gone).await == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "A's PostgreSQL backends still there 10 s after the kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for i in [1, 2] {
        assert_eq!(status_of(&c.servers[i], "/healthz").await, 200, "instance {i} /healthz after the kill");
    }
    let expected = task_stats(&c.admins[1]).await;
    assert_eq!(task_stats(&c.admins[2]).await, expected, "REST task stats of C and B differ");
    let total = expected["total"].as_u64().unwrap_or_else(|| panic!("no total in {expected}"));
    let rows: u64 = c.psql("SELECT count(*) FROM tasks").await.parse().expect("a count");
    assert_eq!(total, rows, "REST total {expected} is not the number of task rows");
    assert!(total >= ok as u64, "{ok} creations answered 2xx by A but only {total} tasks exist");
    assert!(
        total <= (ok + CONCURRENCY) as u64,
        "{total} tasks exist, more than the {ok} answered plus {CONCURRENCY} in flight"
    );
    eprintln!("A answered {ok} creations with 2xx before SIGKILL; {total} tasks committed");

    for w in &mut survivors {
        let got = w.wait_for("stats:tasks", &expected, WAIT).await;
        assert!(
            got,
            "{}: last stats:tasks {} != REST {expected} within {WAIT:?} of A's death",
            w.name,
            w.last_payload("stats:tasks")
        );
    }

    // B and C still talk to each other.
    create(&c.admins[1], "/api/v1/tasks", task_body(1, None)).await;
    let after = task_stats(&c.admins[2]).await;
    assert_eq!(after["total"].as_u64(), Some(total + 1), "{after}");
    let after = rest_stats(&c.admins[2]).await;
    converge_all(&mut survivors, &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_listen_backend_reconnects_and_catches_up() {
    let c = start_cluster(2).await;
    let admin = c.admin_token().to_owned();
    let b_name = c.instance_name(1);
    assert!(!c.servers[1].logs().contains("fan-out listener reconnected"), "B reconnected before the test");
    let mut watchers = vec![
        c.watcher(1, &admin, "instance B socket").await,
        c.watcher(1, &admin, "instance B second socket").await,
        c.watcher(0, &admin, "instance A socket").await,
    ];

    const N: usize = 200;
    let (counts, burst) = spawn_burst(c.admins[0].clone(), N, 16, ADMIN_USERNAME);
    wait_until_done(&counts, 50, Duration::from_secs(30)).await;
    let terminated = c
        .psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{b_name}-listener' AND datname = current_database()"
        ))
        .await;
    let done_at_termination = counts.done();
    assert_eq!(terminated, "t", "expected to terminate exactly B's LISTEN backend ({b_name}-listener)");
    let errors = tokio::time::timeout(Duration::from_secs(40), burst)
        .await
        .expect("the burst did not end within 40 s")
        .expect("burst task");
    assert_eq!(counts.ok.load(Ordering::SeqCst), N, "burst through A: {errors:?}");
    eprintln!("B's listener terminated after {done_at_termination} of {N} creations were answered");

    assert!(
        wait_for_log(&c.servers[1], "fan-out listener reconnected", WAIT).await,
        "B did not log \"fan-out listener reconnected\"; log:\n{}",
        c.servers[1].logs()
    );
    for line in c.servers[1].logs().lines().filter(|l| l.contains("fan-out")) {
        eprintln!("B: {line}");
    }
    let reconnected = c
        .psql(&format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = '{b_name}-listener' AND datname = current_database()"
        ))
        .await;
    assert_eq!(reconnected, "1", "B's LISTEN backends after the reconnection");

    let expected = rest_stats(&c.admins[1]).await;
    assert_eq!(expected[0]["total"], N, "{}", expected[0]);
    converge_all(&mut watchers, &expected).await;

    // The new LISTEN connection carries later changes too.
    create(&c.admins[0], "/api/v1/conversations", conversation_body("After")).await;
    let expected = rest_stats(&c.admins[1]).await;
    converge_all(&mut watchers, &expected).await;
    assert_eq!(status_of(&c.servers[1], "/readyz").await, 200, "B /readyz after catching up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_produce_no_message_on_any_instance() {
    let c = start_cluster(2).await;
    let admin = c.admin_token().to_owned();
    let (staff, _) = c.user("quiet-staff", "staff", 0).await.expect("creating a user");
    let staff_token = staff.token().expect("user token").to_owned();

    let done = create(&c.admins[0], "/api/v1/tasks", task_body(1, None)).await;
    post_ok(&c.admins[0], &format!("/api/v1/tasks/{done}/complete"), None).await;
    create(&c.admins[1], "/api/v1/tasks", task_body(2, None)).await;
    let appr = create(&c.admins[0], "/api/v1/approvals", approval_body()).await;
    let conv = create(&c.admins[1], "/api/v1/conversations", conversation_body("Ada")).await;
    post_ok(&c.admins[1], &format!("/api/v1/conversations/{conv}/resolve"), None).await;

    let mut watchers = vec![
        c.watcher(0, &admin, "instance A admin socket").await,
        c.watcher(0, &staff_token, "instance A staff socket").await,
        c.watcher(1, &admin, "instance B admin socket").await,
        c.watcher(1, &staff_token, "instance B staff socket").await,
    ];
    let before = rest_stats(&c.admins[0]).await;
    // Let everything already committed arrive first.
    converge_all(&mut watchers, &before).await;
    let events_before = c.psql("SELECT count(*) FROM events").await;

    for i in 0..2 {
        let admin = &c.admins[i];
        let staff = c.api(i, &staff_token);
        admin
            .post(
                "/api/v1/tasks",
                &json!({"type": "x", "department": "y", "description": "z", "assignee": "ghost"}),
            )
            .await
            .unwrap()
            .expect_error(400, &["bad_request", "validation_failed"]);
        admin
            .post(&format!("/api/v1/tasks/{done}/assign"), &json!({"assignee": "ghost"}))
            .await
            .unwrap()
            .expect_error(400, &["bad_request", "validation_failed"]);
        admin
            .post_empty(&format!("/api/v1/tasks/{done}/complete"))
            .await
            .unwrap()
            .expect_error(409, &["conflict"]);
        admin
            .post(&format!("/api/v1/tasks/{done}/assign"), &json!({"assignee": "quiet-staff"}))
            .await
            .unwrap()
            .expect_error(409, &["conflict"]);
        staff
            .post(&format!("/api/v1/approvals/{appr}/decide"), &json!({"decision": "approved"}))
            .await
            .unwrap()
            .expect_error(403, &["forbidden"]);
        admin
            .post_empty(&format!("/api/v1/approvals/{appr}/execute"))
            .await
            .unwrap()
            .expect_error(409, &["conflict"]);
        admin
            .post(&format!("/api/v1/conversations/{conv}/escalate"), &json!({"reason": "late"}))
            .await
            .unwrap()
            .expect_error(409, &["conflict"]);
        admin.post_empty("/api/v1/tasks/987654/complete").await.unwrap().expect_error(404, &["not_found"]);
    }

    let got = join_all(watchers.iter_mut().map(|w| async {
        let msgs = w.ws.drain_for(QUIET).await;
        (w.name.clone(), msgs)
    }))
    .await;
    for (name, msgs) in &got {
        assert!(msgs.is_empty(), "{name}: refused requests produced WebSocket messages: {msgs:?}");
    }
    assert_eq!(rest_stats(&c.admins[1]).await, before, "refused requests changed the stats");
    assert_eq!(c.psql("SELECT count(*) FROM events").await, events_before, "refused requests left events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_a_second_server_on_the_same_file() {
    let db = TestDatabase::sqlite().expect("creating a SQLite database");
    let secret = random_string(48);
    let password = random_string(20);
    let opts =
        ServerOptions::default().env("JWT_SECRET", secret.clone()).env("ADMIN_PASSWORD", password.clone());
    let first = ServerProcess::start(&db, opts).await.expect("starting the first server");
    let token = first.api().login(ADMIN_USERNAME, &password).await.expect("admin login");
    let admin = first.api().with_token(token.clone());
    create(&admin, "/api/v1/tasks", task_body(1, None)).await;
    let mut watcher = Watcher::connect(&first, &token, "first server socket").await;

    let path = db.url().strip_prefix("sqlite://").expect("a sqlite:// URL").to_owned();
    assert!(PathBuf::from(format!("{path}.lock")).is_file(), "no lock file {path}.lock");

    let port = free_port().expect("a free port");
    let second = tokio::process::Command::new(server_bin().expect("the server binary"))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", db.url())
        .env("JWT_SECRET", &secret)
        .env("ADMIN_USERNAME", ADMIN_USERNAME)
        .env("ADMIN_PASSWORD", &password)
        .env("RUST_LOG", "info")
        .env("PULSE_SKIP_DASHBOARD_BUILD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("the second server did not exit within 20 s (it should refuse the used file)")
        .expect("running the second server");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the second server exited with {}; log:\n{log}", out.status);
    assert!(out.status.code().is_some(), "the second server died of a signal ({}); log:\n{log}", out.status);
    assert!(
        log.contains("in use by another Pulse process"),
        "the second server's log does not say the file is in use; log:\n{log}"
    );

    // The first keeps serving, and its clients keep getting changes.
    assert_eq!(status_of(&first, "/healthz").await, 200);
    assert_eq!(status_of(&first, "/readyz").await, 200);
    create(&admin, "/api/v1/tasks", task_body(2, None)).await;
    let expected = task_stats(&admin).await;
    assert_eq!(expected["total"], 2, "{expected}");
    let expected = rest_stats(&admin).await;
    watcher.converge(&expected, WAIT).await;
    assert!(watcher.received >= 1, "the first server's socket got no change");
}
