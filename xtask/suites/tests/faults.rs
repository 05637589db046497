//! Black-box fault-tolerance tests: what Pulse does when things go wrong underneath it.
//!
//! - The PostgreSQL database becomes unreachable (connections refused, every backend
//!   terminated) and comes back: REST answers `503 unavailable` quickly, `/readyz` is 503 while
//!   `/healthz` stays 200, WebSocket sessions stay open, and everything recovers by itself.
//! - `kill -9` in the middle of a burst of writes, on SQLite and on PostgreSQL: after a restart
//!   on the same database every acknowledged change is there and nothing is half-written (the
//!   task rows, their `task.created` events and the stats counters agree).
//! - WebSocket clients that stop reading while thousands of changes happen: the server's
//!   memory stays bounded, each is dropped (a client whose backlog outgrows the socket buffers
//!   by the 10 s send timeout, within seconds of the changes; a stats-only one by the heartbeat)
//!   and its TCP connection closed, and a client that reads still converges to the REST stats.
//!
//! ```text
//! PULSE_SERVER_BIN=target/debug/server cargo test -p suites --test faults
//! ```
//!
//! Needs `psql` (and a PostgreSQL server, see `TEST_DATABASE_URL`) and the `sqlite3` CLI.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use suites::tungstenite::Message;
use suites::{
    Api, DbKind, Incoming, Pulse, Response, ServerOptions, ServerProcess, TestDatabase, WAIT, Ws, matches,
    psql, random_string,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;

/// The gauge of this instance's open WebSocket connections on `/metrics`.
const WS_CONNECTIONS: &str = r#"pulse_connections{transport="ws"}"#;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn task_body(i: usize) -> Value {
    json!({
        "type": "housekeeping",
        "department": if i.is_multiple_of(3) { "kitchen" } else { "front" },
        "description": format!("Fresh towels for room {}", 100 + i),
    })
}

async fn task_stats(api: &Api) -> Value {
    api.get("/api/v1/tasks/stats").await.expect("GET /api/v1/tasks/stats").expect_status(200).clone()
}

async fn status_of(api: &Api, path: &str) -> u16 {
    api.get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e:#}")).status
}

/// `GET path`, and how long the answer took.
async fn timed_get(api: &Api, path: &str) -> (Response, Duration) {
    let start = Instant::now();
    let resp = api.get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    (resp, start.elapsed())
}

/// Runs `sql` on a SQLite file with the `sqlite3` CLI and returns its output.
async fn sqlite3(path: &Path, sql: &str) -> String {
    let out = tokio::process::Command::new("sqlite3")
        .args(["-batch", "-noheader", "-cmd", ".timeout 5000"])
        .arg(path)
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running sqlite3 (apt-get install -y sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {sql:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One number from `sql` on the test database (psql on PostgreSQL, sqlite3 on SQLite).
async fn sql_count(db: &TestDatabase, sql: &str) -> i64 {
    let out = match db.kind() {
        DbKind::Postgres => psql(db.url(), &[sql]).await,
        DbKind::Sqlite => sqlite3(&db.sqlite_path().expect("a SQLite file"), sql).await,
    };
    out.parse().unwrap_or_else(|_| panic!("{sql:?} did not give a number: {out:?}"))
}

/// Keeps a PostgreSQL database closed to new connections; dropping it (even while a failed
/// assertion unwinds) allows connections again.
struct ConnectionsRefused {
    admin: String,
    name: String,
    restored: bool,
}

impl ConnectionsRefused {
    /// Refuses new connections to `name` and terminates every backend connected to it.
    async fn start(admin: &str, name: &str) -> Self {
        let guard = Self { admin: admin.to_owned(), name: name.to_owned(), restored: false };
        psql(
            admin,
            &[
                &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
                &format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}'"
                ),
            ],
        )
        .await;
        guard
    }

    fn allow_sql(&self) -> String {
        format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name)
    }

    /// Allows connections again.
    async fn restore(mut self) {
        psql(&self.admin, &[&self.allow_sql()]).await;
        self.restored = true;
    }
}

impl Drop for ConnectionsRefused {
    fn drop(&mut self) {
        if !self.restored {
            // Best effort, synchronous: we may be unwinding out of a failed assertion.
            let _ = std::process::Command::new("psql")
                .arg(&self.admin)
                .args(["-X", "-q", "-c", &self.allow_sql()])
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// Outcome of a burst of task creations.
#[derive(Default)]
struct Burst {
    /// Ids of the tasks whose creation was answered 2xx.
    acked: Mutex<Vec<i64>>,
    ok: AtomicUsize,
    refused: AtomicUsize,
    failed: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Burst {
    fn done(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
            + self.refused.load(Ordering::SeqCst)
            + self.failed.load(Ordering::SeqCst)
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("errors lock").clone()
    }
}

/// Starts `n` task creations through `api`, `concurrency` at a time.
fn spawn_burst(api: Api, n: usize, concurrency: usize) -> (Arc<Burst>, tokio::task::JoinHandle<()>) {
    spawn_creations(api, n, concurrency, task_body)
}

/// Starts `n` task creations with the bodies `body(i)`, `concurrency` at a time, counting
/// every answer (and the ids of the acknowledged tasks) in the returned [`Burst`].
fn spawn_creations(
    api: Api,
    n: usize,
    concurrency: usize,
    body: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> (Arc<Burst>, tokio::task::JoinHandle<()>) {
    let burst = Arc::new(Burst::default());
    let b = Arc::clone(&burst);
    let handle = tokio::spawn(async move {
        let mut results = futures_util::stream::iter(0..n)
            .map(|i| {
                let (api, body) = (api.clone(), body(i));
                async move { api.post("/api/v1/tasks", &body).await }
            })
            .buffer_unordered(concurrency);
        while let Some(result) = results.next().await {
            match result {
                Ok(resp) if (200..300).contains(&resp.status) => {
                    let id = resp.json["id"]
                        .as_i64()
                        .unwrap_or_else(|| panic!("2xx creation without an integer id: {}", resp.text));
                    b.acked.lock().expect("acked lock").push(id);
                    b.ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(resp) => {
                    b.refused.fetch_add(1, Ordering::SeqCst);
                    b.errors.lock().expect("errors lock").push(format!("HTTP {} {}", resp.status, resp.text));
                }
                Err(e) => {
                    b.failed.fetch_add(1, Ordering::SeqCst);
                    b.errors.lock().expect("errors lock").push(format!("{e:#}"));
                }
            }
        }
    });
    (burst, handle)
}

/// Waits (bounded) until at least `n` requests of a burst are answered.
async fn wait_until_done(burst: &Burst, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while burst.done() < n {
        assert!(Instant::now() < deadline, "only {} burst requests answered after {timeout:?}", burst.done());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads `ws` until its last `stats:tasks` payload matches `expected` (starting from `last`);
/// panics on close or timeout.
async fn wait_for_tasks_stats(
    ws: &mut Ws,
    name: &str,
    last: &mut Value,
    expected: &Value,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while !matches(last, expected) {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next_incoming(left).await {
            Some(Incoming::Json(v)) => {
                if v["type"] == "stats:tasks" {
                    *last = v["payload"].clone();
                }
            }
            Some(other) => panic!("{name}: waiting for stats:tasks = {expected}, got {other:?}"),
            None => panic!("{name}: last stats:tasks {last} != REST {expected} after {timeout:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. PostgreSQL down and back
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_keeps_sockets_and_recovers() {
    let db = TestDatabase::postgres().expect("creating a PostgreSQL database");
    let (admin_url, name) = db.postgres_admin().map(|(a, n)| (a.to_owned(), n.to_owned())).expect("PG");
    let pulse = Pulse::start(db).await.expect("starting the server");
    let admin = pulse.admin.clone();
    admin.post("/api/v1/tasks", &task_body(0)).await.expect("request").expect_status(201);
    let token = admin.token().expect("admin token").to_owned();
    let (mut ws, first) = pulse.ws_ready(&token).await.expect("WebSocket");
    assert_eq!(first[1]["type"], "stats:tasks", "{first:?}");
    let mut last = first[1]["payload"].clone();
    // The opening value may predate the creation by the stats recompute's latency; it must
    // catch up before the outage starts.
    let before = task_stats(&admin).await;
    wait_for_tasks_stats(&mut ws, "socket before the outage", &mut last, &before, WAIT).await;

    // The outage: no new connection to this database, every existing one terminated.
    let outage = ConnectionsRefused::start(&admin_url, &name).await;
    let backends =
        psql(&admin_url, &[&format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'")]).await;
    assert_eq!(backends, "0", "backends left on {name} after pg_terminate_backend");

    let start = Instant::now();
    let created = admin.post("/api/v1/tasks", &task_body(1)).await.expect("POST during the outage");
    let post_latency = start.elapsed();
    created.expect_error(503, &["unavailable"]);
    assert!(post_latency < Duration::from_secs(5), "POST /api/v1/tasks took {post_latency:?} to answer 503");

    let (stats, stats_latency) = timed_get(&admin, "/api/v1/tasks/stats").await;
    stats.expect_error(503, &["unavailable"]);
    assert!(stats_latency < Duration::from_secs(5), "GET stats took {stats_latency:?} to answer 503");
    let (ready, ready_latency) = timed_get(&admin, "/readyz").await;
    assert_eq!(ready.status, 503, "/readyz during the outage: {}", ready.text);
    assert!(ready_latency < Duration::from_secs(5), "/readyz took {ready_latency:?} to answer 503");
    assert_eq!(status_of(&admin, "/healthz").await, 200, "/healthz during the outage");

    ws.send_json(&json!({"type": "ping"})).await.expect("sending a ping during the outage");
    let pong = ws.next_of_type("pong", WAIT).await.expect("pong during the outage");
    assert_eq!(pong["type"], "pong");
    eprintln!(
        "outage: POST 503 in {post_latency:?}, GET stats 503 in {stats_latency:?}, \
         /readyz 503 in {ready_latency:?}"
    );

    // Back: everything recovers by itself within 15 s.
    let restored_at = Instant::now();
    let deadline = restored_at + Duration::from_secs(15);
    outage.restore().await;
    loop {
        if status_of(&admin, "/readyz").await == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still not 200 15 s after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_after = restored_at.elapsed();
    admin.post("/api/v1/tasks", &task_body(2)).await.expect("POST after the outage").expect_status(201);
    let created_after = restored_at.elapsed();
    assert!(created_after < Duration::from_secs(15), "task creation only worked after {created_after:?}");
    let expected = task_stats(&admin).await;
    assert_eq!(expected["total"], 2, "the refused creation must not count: {expected}");
    let left = deadline.saturating_duration_since(Instant::now());
    wait_for_tasks_stats(&mut ws, "socket kept through the outage", &mut last, &expected, left).await;
    eprintln!(
        "recovery: /readyz 200 after {ready_after:?}, task created after {created_after:?}, \
         WebSocket got the new stats after {:?}",
        restored_at.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 during a burst of writes
// ---------------------------------------------------------------------------------------------

/// Returns a summary of what happened, for the test to print.
async fn kill_9_mid_burst_then_restart(kind: DbKind) -> String {
    let db = match kind {
        DbKind::Sqlite => TestDatabase::sqlite(),
        DbKind::Postgres => TestDatabase::postgres(),
    }
    .expect("creating a database");
    let opts = ServerOptions::default()
        .env("JWT_SECRET", random_string(48))
        .env("ADMIN_PASSWORD", random_string(20));
    let mut pulse = Pulse::start_with(db, opts.clone()).await.expect("starting the server");
    let token = pulse.admin.token().expect("admin token").to_owned();

    const N: usize = 300;
    const CONCURRENCY: usize = 32;
    let (burst, handle) = spawn_burst(pulse.admin.clone(), N, CONCURRENCY);
    wait_until_done(&burst, 100, Duration::from_secs(30)).await;
    pulse.server.kill().await.expect("kill -9 of the server");
    tokio::time::timeout(Duration::from_secs(40), handle)
        .await
        .expect("the burst did not end within 40 s of the kill")
        .expect("burst task");
    let ok = burst.ok.load(Ordering::SeqCst);
    let refused = burst.refused.load(Ordering::SeqCst);
    assert_eq!(refused, 0, "the server refused creations before dying: {:?}", burst.errors());
    assert!((100..N).contains(&ok), "{ok} of {N} creations answered 2xx: the kill was not mid-burst");
    let acked = burst.acked.lock().expect("acked lock").clone();

    // A new server on the same database; the old token is still valid (same JWT_SECRET).
    let restart = Instant::now();
    pulse.server = ServerProcess::start(&pulse.db, opts).await.expect("restarting on the same database");
    let restart_took = restart.elapsed();
    let api = pulse.server.api().with_token(token);

    let missing: Vec<String> = futures_util::stream::iter(acked.iter().copied())
        .map(|id| {
            let api = api.clone();
            async move {
                let resp = api.get(&format!("/api/v1/tasks/{id}")).await.expect("GET task");
                (resp.status != 200 || resp.json["id"] != id)
                    .then(|| format!("{id}: HTTP {} {}", resp.status, resp.text))
            }
        })
        .buffer_unordered(8)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    assert!(missing.is_empty(), "{} acknowledged tasks lost after kill -9: {missing:?}", missing.len());

    let tasks = sql_count(&pulse.db, "SELECT count(*) FROM tasks").await;
    let created_events =
        sql_count(&pulse.db, "SELECT count(*) FROM events WHERE name = 'task.created'").await;
    let counters =
        sql_count(&pulse.db, "SELECT coalesce(sum(n), 0) FROM stats_counters WHERE topic = 'tasks'").await;
    let stats = task_stats(&api).await;
    let total = stats["total"].as_i64().unwrap_or_else(|| panic!("no total in {stats}"));
    assert_eq!(tasks, created_events, "{tasks} task rows but {created_events} task.created events");
    assert_eq!(counters, tasks, "stats counters sum to {counters} for {tasks} task rows");
    assert_eq!(total, tasks, "REST stats {stats} for {tasks} task rows");
    assert!(tasks >= ok as i64, "{ok} creations answered 2xx but only {tasks} tasks exist");
    assert!(
        tasks <= (ok + CONCURRENCY) as i64,
        "{tasks} tasks exist, more than the {ok} answered plus {CONCURRENCY} in flight"
    );
    if kind == DbKind::Sqlite {
        let path = pulse.db.sqlite_path().expect("a SQLite file");
        assert_eq!(sqlite3(&path, "PRAGMA integrity_check").await, "ok", "SQLite integrity after kill -9");
    }

    // And the restarted server keeps working.
    api.post("/api/v1/tasks", &task_body(N)).await.expect("request").expect_status(201);
    assert_eq!(task_stats(&api).await["total"], tasks + 1);
    format!(
        "{kind:?}: {ok} of {N} creations acknowledged before SIGKILL, {} failed (in flight or \
         refused connection); \
         {tasks} tasks committed; restart took {restart_took:?}",
        burst.failed.load(Ordering::SeqCst)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kill_9_mid_burst_keeps_every_acknowledged_write() {
    eprintln!("{}", kill_9_mid_burst_then_restart(DbKind::Sqlite).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_mid_burst_keeps_every_acknowledged_write() {
    eprintln!("{}", kill_9_mid_burst_then_restart(DbKind::Postgres).await);
}

// ---------------------------------------------------------------------------------------------
// 3. Clients that stop reading
// ---------------------------------------------------------------------------------------------

/// Receive buffer asked for the clients that stop reading (Linux doubles it): a small window,
/// as on a slow link, so what the server writes piles up on the server's side.
const UNREAD_RCVBUF: u32 = 4096;

/// Description length of the tasks assigned to the non-reading assignee (the limit is 4000).
const BIG_DESCRIPTION: usize = 3900;

/// A WebSocket whose four opening messages are read, and then nothing ever again. Also
/// returns when it connected and its local address.
async fn connect_and_stop_reading(
    server: &ServerProcess,
    token: &str,
) -> (WebSocketStream<TcpStream>, Instant, SocketAddr) {
    let addr: SocketAddr =
        server.base_url().trim_start_matches("http://").parse().expect("the server's address");
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket.set_recv_buffer_size(UNREAD_RCVBUF).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("TCP connect");
    let local = stream.local_addr().expect("local address");
    let connected = Instant::now();
    let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(token), stream).await.expect("upgrade");
    for i in 0..4 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("opening message {i} did not come"))
            .expect("stream ended")
            .expect("WebSocket error");
        assert!(matches!(msg, Message::Text(_)), "opening message {i}: {msg:?}");
    }
    (ws, connected, local)
}

/// Finally reads a client that stopped reading: how many frames were waiting, then how the
/// connection ended (`close <code>`, `EOF` or `error …`). Panics if it does not end within
/// `timeout`.
async fn read_to_end(ws: &mut WebSocketStream<TcpStream>, name: &str, timeout: Duration) -> (usize, String) {
    let mut frames = 0;
    let end = tokio::time::timeout(timeout, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return format!("close {:?}", frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => frames += 1,
                Some(Err(e)) => return format!("error {e}"),
                None => return "EOF".to_owned(),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name}: the socket did not end within {timeout:?} of reading it"));
    (frames, end)
}

/// The TCP state (`ss` name, e.g. `ESTAB`, `FIN-WAIT-1`) and send queue (bytes) of the
/// server's side of the connection whose client end is `client`; `None` when the server has
/// no such socket.
async fn server_side_state(server: &ServerProcess, client: SocketAddr) -> Option<(String, u64)> {
    let port = server.base_url().rsplit(':').next().expect("a port").to_owned();
    let out = tokio::process::Command::new("ss")
        .args(["-tnaH", &format!("( sport = :{port} and dport = :{} )", client.port())])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.lines().next()?.split_whitespace();
    let state = fields.next()?.to_owned();
    let send_q = fields.nth(1).and_then(|q| q.parse().ok()).unwrap_or(0);
    Some((state, send_q))
}

fn is_established(state: &Option<(String, u64)>) -> bool {
    state.as_ref().is_some_and(|(s, _)| s == "ESTAB")
}

/// Reads a client that keeps up, remembering its last `stats:tasks` payload, until `stop`.
fn spawn_reader(mut ws: Ws, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(Ws, Value, usize)> {
    tokio::spawn(async move {
        let mut last = Value::Null;
        let mut received = 0;
        while !stop.load(Ordering::SeqCst) {
            match ws.next_incoming(Duration::from_millis(100)).await {
                Some(Incoming::Json(v)) => {
                    received += 1;
                    if v["type"] == "stats:tasks" {
                        last = v["payload"].clone();
                    }
                }
                Some(other) => panic!("the healthy client was closed: {other:?}"),
                None => {}
            }
        }
        (ws, last, received)
    })
}

/// Starts `n` creations of tasks with a long description assigned to `assignee`.
fn spawn_assigned_burst(
    api: Api,
    n: usize,
    concurrency: usize,
    assignee: &str,
) -> (Arc<Burst>, tokio::task::JoinHandle<()>) {
    let assignee = assignee.to_owned();
    spawn_creations(api, n, concurrency, move |i| {
        json!({
            "type": "housekeeping",
            "department": "front",
            "description": format!("{i:06} {}", "x".repeat(BIG_DESCRIPTION - 7)),
            "assignee": assignee,
        })
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Two clients stop reading while 3,000 tasks are created at 32 concurrency:
///
/// - `stats-reader` only follows the stats. The server keeps at most the newest value per
///   topic for it and publishes at most a few dozen values a second, so its backlog stays
///   small enough for the kernel's socket buffers: no send ever blocks, and what drops it is
///   the heartbeat (pings every 25 s, dropped after two unanswered: ~50 s after it connected).
/// - `assignee-reader` is the assignee of every task, so it also gets a ~4 KB `task:assigned`
///   per creation (~12 MB in all): more than the kernel buffers hold. Its socket fills, the
///   server stops polling its session (nothing more queues for it but the bounded mailbox),
///   and after 10 s in which the socket took nothing it is closed and counted as too slow
///   (`gateway::socket`, `STALLED_WRITE_TIMEOUT`).
///
/// Meanwhile the server's RSS must stay bounded and a client that reads must converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_dropped_and_cost_bounded_memory() {
    // gateway=debug: the log says why each socket ended (diagnostics only).
    let opts = ServerOptions::default().env("RUST_LOG", "info,gateway=debug");
    let pulse =
        Pulse::start_with(TestDatabase::sqlite().expect("SQLite"), opts).await.expect("starting the server");
    let server = &pulse.server;
    let admin_token = pulse.admin.token().expect("admin token").to_owned();
    let (stats_api, _) = pulse.user("stats-reader", "staff").await.expect("a user");
    let (assignee_api, _) = pulse.user("assignee-reader", "staff").await.expect("a user");
    let rss_start = server.vm_rss_kib().expect("VmRSS");

    // Warm up (allocator arenas, database pool, HTTP workers) with the same kind of requests,
    // so the baseline is a server that has already served this load, not an idle one.
    const WARM_UP: usize = 300;
    let (warm, handle) = spawn_assigned_burst(pulse.admin.clone(), WARM_UP, 32, "assignee-reader");
    handle.await.expect("warm-up burst");
    assert_eq!(warm.ok.load(Ordering::SeqCst), WARM_UP, "warm-up: {:?}", warm.errors());

    let (healthy, _) = pulse.ws_ready(&admin_token).await.expect("healthy client");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(healthy, Arc::clone(&stop));
    let (mut stats_slow, stats_connected, stats_local) =
        connect_and_stop_reading(server, stats_api.token().expect("token")).await;
    let (mut assignee_slow, _, assignee_local) =
        connect_and_stop_reading(server, assignee_api.token().expect("token")).await;
    let gauge = server.metric(WS_CONNECTIONS).await.expect("/metrics");
    assert_eq!(gauge, Some(3.0), "{WS_CONNECTIONS} with the three clients");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = server.vm_rss_kib().expect("VmRSS");

    const N: usize = 3000;
    let burst_start = Instant::now();
    let (burst, handle) = spawn_assigned_burst(pulse.admin.clone(), N, 32, "assignee-reader");
    let mut peak = baseline;
    let mut samples = 0;
    let mut burst_end = None;
    let mut first_drop = None;
    let mut gauge = gauge;
    let mut next_gauge = Instant::now();
    let both_dropped = loop {
        peak = peak.max(server.vm_rss_kib().expect("VmRSS"));
        samples += 1;
        if burst_end.is_none() && handle.is_finished() {
            burst_end = Some(burst_start.elapsed());
        }
        if Instant::now() >= next_gauge {
            gauge = server.metric(WS_CONNECTIONS).await.expect("/metrics");
            let n = gauge.expect("the WebSocket connection gauge on /metrics");
            if n <= 2.0 && first_drop.is_none() {
                first_drop = Some(burst_start.elapsed());
            }
            if n <= 1.0 {
                break burst_start.elapsed();
            }
            next_gauge = Instant::now() + Duration::from_millis(250);
        }
        match (burst_end, first_drop) {
            (None, _) => assert!(burst_start.elapsed() < Duration::from_secs(45), "the burst took over 45 s"),
            (Some(end), None) => assert!(
                burst_start.elapsed() < end + Duration::from_secs(30),
                "no client that stopped reading was dropped within 30 s of the last change \
                 ({WS_CONNECTIONS} {gauge:?}, the burst took {end:?})"
            ),
            (Some(_), Some(_)) => assert!(
                stats_connected.elapsed() < Duration::from_secs(60),
                "stats-reader still connected 60 s after it connected and stopped reading, though \
                 it answers no ping ({WS_CONNECTIONS} {gauge:?})"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stats_dropped_after = stats_connected.elapsed();
    assert!(handle.is_finished(), "both slow clients were dropped before the burst ended");
    handle.await.expect("burst task");
    assert_eq!(burst.ok.load(Ordering::SeqCst), N, "burst: {:?}", burst.errors());
    let (burst_end, first_drop) = (burst_end.unwrap_or_default(), first_drop.unwrap_or_default());
    let after = server.vm_rss_kib().expect("VmRSS");

    // Dropped must mean the server's side of the TCP connection is closed (FIN-WAIT-*, or gone
    // after a reset), not only that the session forgot it: a socket left ESTABLISHED keeps its
    // file descriptor and kernel buffers (megabytes here) for as long as the client goes on not
    // reading, outside every connection limit. Read before the clients read anything, since
    // reading would unblock the server. stats-reader was dropped just now, so give it 10 s;
    // assignee-reader was dropped long ago.
    let assignee_state = server_side_state(server, assignee_local).await;
    let assignee_dropped_for = burst_start.elapsed().saturating_sub(first_drop);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stats_state = server_side_state(server, stats_local).await;
    while is_established(&stats_state) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats_state = server_side_state(server, stats_local).await;
    }
    let closed_lines: Vec<String> =
        server.logs().lines().filter(|l| l.contains("websocket closed")).map(str::to_owned).collect();
    eprintln!("server log:\n{}", closed_lines.join("\n"));

    // The bound. For each slow client the server keeps at most the newest value of each stats
    // topic, a mailbox of at most 256 personal messages (~1 MB here) and the HTTP dispatcher's
    // write buffer — whatever the number of changes; the rest is in the
    // kernel's socket buffers, which RSS does not count. Keeping everything sent to the
    // assignee would cost ~12 MB (3,000 frames of ~4 KB) and grow with the changes. The rest of
    // the growth is the allocator's working set under 32 concurrent requests, already paid by
    // the warm-up; it was ~3 MiB when this test was written.
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "slow readers: RSS start {:.1} MiB, baseline after warm-up {:.1} MiB, peak during {:.1} MiB \
         (+{:.1} MiB over {samples} samples), after {:.1} MiB; {N} changes in {burst_end:?}; \
         first slow client dropped {first_drop:?} after the burst started, the second after \
         {both_dropped:?} (stats-reader {stats_dropped_after:?} after it connected); server side \
         of assignee-reader {assignee_state:?}, of stats-reader {stats_state:?}",
        mib(rss_start),
        mib(baseline),
        mib(peak),
        mib(growth),
        mib(after)
    );
    assert!(
        growth < 10 * 1024,
        "RSS grew by {:.1} MiB over the {:.1} MiB baseline",
        mib(growth),
        mib(baseline)
    );

    // Both sockets are really closed: after what was waiting, a close frame or EOF.
    let (frames, end) = read_to_end(&mut assignee_slow, "assignee-reader", Duration::from_secs(10)).await;
    eprintln!("assignee-reader: {frames} frames were waiting, then {end}");
    assert!(!end.starts_with("close") || end == "close Some(1013)", "assignee-reader ended with {end}");
    let (frames, end) = read_to_end(&mut stats_slow, "stats-reader", Duration::from_secs(10)).await;
    eprintln!("stats-reader: {frames} frames were waiting, then {end}");
    // Dropped by the heartbeat (1001), or earlier by the kernel: the server's sockets abort
    // after 30 s with data the client does not take (TCP_USER_TIMEOUT), which resets it.
    assert!(
        end == "close Some(1001)" || end.contains("reset"),
        "stats-reader should be closed (1001) or reset, got {end}"
    );

    // The client that kept reading converges to the REST value.
    let expected = task_stats(&pulse.admin).await;
    assert_eq!(expected["total"], N + WARM_UP, "{expected}");
    stop.store(true, Ordering::SeqCst);
    let (mut ws, mut last, received) = reader.await.expect("healthy reader");
    wait_for_tasks_stats(&mut ws, "healthy client", &mut last, &expected, WAIT).await;
    eprintln!("healthy client: {received} messages, last stats:tasks {last}");
    assert_eq!(server.metric(WS_CONNECTIONS).await.expect("/metrics"), Some(1.0));
    // On /metrics: both readers that stopped ended. assignee-reader's socket filled, so it was
    // closed as `too_slow` 10 s later (the server's own stall timeout, before the kernel's
    // 30 s). stats-reader's socket never fills (a few KB): the heartbeat ends it, or the
    // kernel (TCP_USER_TIMEOUT, `socket_gone`) when its tiny receive window holds data
    // unacknowledged for 30 s.
    let metrics = server.api().get("/metrics").await.expect("/metrics").text;
    let closed: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("pulse_connections_closed_total{")).collect();
    let count = |line: &&str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    assert_eq!(closed.iter().map(count).sum::<f64>(), 2.0, "connections counted as ended: {closed:#?}");
    let stalled: f64 = closed
        .iter()
        .filter(|l| {
            l.contains(r#"transport="ws",reason="too_slow""#)
                || l.contains(r#"transport="ws",reason="socket_gone""#)
                || l.contains(r#"transport="ws",reason="heartbeat_timeout""#)
        })
        .map(count)
        .sum();
    assert_eq!(stalled, 2.0, "the readers that stopped were not counted as stalled: {closed:#?}");
    let too_slow: f64 =
        closed.iter().filter(|l| l.contains(r#"transport="ws",reason="too_slow""#)).map(count).sum();
    assert!(too_slow >= 1.0, "assignee-reader, whose socket filled, was not closed as too slow: {closed:#?}");
    assert!(
        first_drop < burst_end + Duration::from_secs(15),
        "assignee-reader's socket was full for the rest of the burst, yet it was dropped only \
         {first_drop:?} after the burst started (the burst took {burst_end:?}; the stall timeout is 10 s)"
    );

    assert!(
        !is_established(&stats_state),
        "the server's side of stats-reader's connection is still ESTABLISHED 10 s after the \
         heartbeat dropped it: {stats_state:?}"
    );
    assert!(
        !is_established(&assignee_state),
        "the server's side of assignee-reader's connection is still ESTABLISHED {assignee_dropped_for:?} \
         after {WS_CONNECTIONS} said it was dropped (too slow): the session ended but the TCP \
         connection, its file descriptor and its send buffer stay for as long as the client does \
         not read (state and send queue: {assignee_state:?})"
    );
}
