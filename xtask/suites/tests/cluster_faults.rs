//! The fault suite of issue 12: the cluster guarantees of `docs/protocol.md` §5 and §6, tried
//! against real server processes on real PostgreSQL while things break underneath them.
//!
//! Each scenario starts its own instances on its own database (on the shared PostgreSQL, or on
//! a private [`PgCluster`] when it must restart or measure PostgreSQL), through a [`PgProxy`]
//! each when it faults their connections, and connects real WebSocket clients: on every
//! instance, an admin socket and a socket of the assignee of the tasks the scenario creates.
//! It then breaks something and ends with the same check:
//!
//! - every client of every surviving instance holds the true stats within 5 s of recovery —
//!   the moment the database answers again, or the scenario's last write if that is later.
//!   The truth is counted in the tables (psql) after the last change, and REST must say the
//!   same (`GET …/stats`, read once the clients had their chance: see [`sql_stats`]);
//! - every `task:assigned` for a connection that stayed open arrived exactly once: the
//!   assignee's sockets received one message for each task assigned to that user (REST and
//!   the table agree) and created while they were open, and nothing else; the admin sockets
//!   received none;
//!
//! and prints the time to converge, `converged scenario=<name> ms=<n>`, counted from recovery.
//!
//! The scenarios: every backend terminated, then 20 creations; the LISTEN connection of one
//! instance stalled 10 s; PostgreSQL restarted under two instances; one of three instances
//! `kill -9`ed mid-burst; three instances started at once on an empty database; a
//! transaction holding a sequence gap open for 40 s; a commit whose acknowledgement was lost;
//! and what an idle two-instance cluster costs the database.
//!
//! ```text
//! PULSE_SERVER_BIN=$PWD/target/debug/server cargo test -p suites --test cluster_faults -- --nocapture
//! ```
//!
//! Needs `psql`, PostgreSQL on 127.0.0.1:5432 (or `TEST_DATABASE_URL`) and `initdb`/`pg_ctl`
//! (see `suites::pgcluster`) for the private clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use suites::pgproxy::role_of;
use suites::{
    ADMIN_USERNAME, Api, Cluster, ClusterOptions, Filter, PgCluster, STATS_TOPICS, ServerOptions, StopMode,
    TestDatabase, Watcher, approval_body, conversation_body, matches, psql,
};
use tokio_postgres::NoTls;

/// The bound of `docs/protocol.md` §6: every client holds the final values this soon.
const CONVERGE: Duration = Duration::from_secs(5);
/// Every instance's pool size, so that a few instances fit the shared server's connections.
const POOL: usize = 8;
/// The user every scenario assigns tasks to.
const ASSIGNEE: &str = "floor-staff";
/// How long the clients keep reading after converging, to catch late duplicates or values.
const AFTERMATH: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// Setting up
// ---------------------------------------------------------------------------------------------

fn server_options() -> ServerOptions {
    ServerOptions::default().env("DB_MAX_CONNECTIONS", POOL.to_string())
}

async fn start(n: usize, db: TestDatabase, proxied: bool, together: bool) -> Cluster {
    let options = ClusterOptions { proxied, together, server: server_options() };
    Cluster::start_with(n, db, options).await.unwrap_or_else(|e| panic!("starting {n} instances: {e:#}"))
}

fn shared_db() -> TestDatabase {
    TestDatabase::postgres().expect("a PostgreSQL database")
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

async fn create(api: &Api, path: &str, body: &Value) -> i64 {
    let resp = api.post(path, body).await.unwrap_or_else(|e| panic!("POST {path}: {e:#}"));
    resp.expect_status(201)["id"].as_i64().unwrap_or_else(|| panic!("no integer id in {}", resp.text))
}

/// The clients of a scenario: on each instance it names, an admin socket and a socket of
/// [`ASSIGNEE`], all opened before any task assigned to them was created.
struct Fleet {
    watchers: Vec<Watcher>,
    /// Whether `watchers[i]` is the assignee's.
    assignee: Vec<bool>,
    /// Tasks with a higher id were created while every socket was open.
    newest_task_before: i64,
}

impl Fleet {
    /// Creates [`ASSIGNEE`] and opens the sockets on `instances`.
    async fn open(c: &Cluster, instances: &[usize]) -> Self {
        let (staff, _) = c.user(ASSIGNEE, "staff", instances[0]).await.expect("creating the assignee");
        let staff_token = staff.token().expect("a token").to_owned();
        let newest_task_before = newest_task_id(&c.admins[instances[0]]).await;
        let mut watchers = Vec::new();
        let mut assignee = Vec::new();
        for &i in instances {
            watchers.push(c.watcher(i, c.admin_token(), &format!("instance {i} admin socket")).await);
            assignee.push(false);
            watchers.push(c.watcher(i, &staff_token, &format!("instance {i} {ASSIGNEE} socket")).await);
            assignee.push(true);
        }
        Self { watchers, assignee, newest_task_before }
    }
}

async fn newest_task_id(api: &Api) -> i64 {
    let page = suites::get_ok(api, "/api/v1/tasks?limit=1").await;
    page["items"][0]["id"].as_i64().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The ground truth and the check every scenario ends with
// ---------------------------------------------------------------------------------------------

/// The truth, read in the database itself (psql, straight to PostgreSQL): the three stats, in
/// [`STATS_TOPICS`] order, counted from the tables.
///
/// Read there, not through an instance, while the clients converge: a REST read goes through
/// an instance's pool, and right after a fault it lands on connections the fault killed (each
/// answers 503 once and is dropped, `RecyclingMethod::Fast`): reading would repair the pool
/// that the instance's own stats recompute is struggling with, and hide what a client sees
/// when nobody is reading. REST is compared with this truth after the wait.
async fn sql_stats(c: &Cluster) -> [Value; 3] {
    let out = c
        .psql(
            "SELECT json_build_array(\
               (SELECT json_build_object('pending', count(*) FILTER (WHERE status = 'pending'), \
                  'inProgress', count(*) FILTER (WHERE status = 'in_progress'), \
                  'completed', count(*) FILTER (WHERE status = 'completed'), 'total', count(*)) FROM tasks), \
               (SELECT json_build_object('pending', count(*) FILTER (WHERE status = 'pending'), \
                  'approved', count(*) FILTER (WHERE status = 'approved'), \
                  'rejected', count(*) FILTER (WHERE status = 'rejected'), \
                  'executed', count(*) FILTER (WHERE status = 'executed'), 'total', count(*)) FROM approvals), \
               (SELECT json_build_object('active', count(*) FILTER (WHERE state = 'active'), \
                  'escalated', count(*) FILTER (WHERE state = 'escalated'), \
                  'resolved', count(*) FILTER (WHERE state = 'resolved'), 'total', count(*)) FROM conversations))",
        )
        .await;
    let v: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("stats from SQL {out:?}: {e}"));
    [v[0].clone(), v[1].clone(), v[2].clone()]
}

/// The ids of the tasks assigned to [`ASSIGNEE`] with an id above `after`, from the table.
async fn sql_assigned(c: &Cluster, after: i64) -> BTreeSet<i64> {
    let out = c.psql(&format!("SELECT id FROM tasks WHERE assignee = '{ASSIGNEE}' AND id > {after}")).await;
    out.lines().map(|l| l.parse().unwrap_or_else(|_| panic!("not an id: {l:?}"))).collect()
}

/// REST reads through one instance, after the clients were given their chance. A read may
/// still land on a pooled connection a fault killed (503 once, then dropped): up to [`POOL`]
/// such answers are let through and counted, so that the report shows them; any other
/// answer fails the scenario.
struct Rest<'a> {
    api: &'a Api,
    unavailable: usize,
}

impl<'a> Rest<'a> {
    fn new(api: &'a Api) -> Self {
        Self { api, unavailable: 0 }
    }

    async fn get(&mut self, path: &str) -> Value {
        loop {
            let resp = self.api.get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
            if resp.status == 503 && self.unavailable < POOL {
                self.unavailable += 1;
                continue;
            }
            return resp.expect_status(200).clone();
        }
    }

    /// The three REST stats, in [`STATS_TOPICS`] order.
    async fn stats(&mut self) -> [Value; 3] {
        let tasks = self.get("/api/v1/tasks/stats").await;
        let approvals = self.get("/api/v1/approvals/stats").await;
        let approvals = approvals
            .get("stats")
            .cloned()
            .unwrap_or_else(|| panic!("approval stats not in \"stats\": {approvals}"));
        [tasks, approvals, self.get("/api/v1/conversations/stats").await]
    }

    /// The ids of the tasks assigned to [`ASSIGNEE`] with an id above `after`.
    async fn assigned(&mut self, after: i64) -> BTreeSet<i64> {
        let mut ids = BTreeSet::new();
        let mut cursor = String::new();
        loop {
            let page = self.get(&format!("/api/v1/tasks?assignee={ASSIGNEE}&limit=200{cursor}")).await;
            let items = page["items"].as_array().unwrap_or_else(|| panic!("no items in {page}"));
            for task in items {
                assert_eq!(
                    task["assignee"], ASSIGNEE,
                    "a task of another assignee in the filtered list: {task}"
                );
                let id = task["id"].as_i64().unwrap_or_else(|| panic!("no integer id in {task}"));
                if id > after {
                    ids.insert(id);
                }
            }
            match page["nextCursor"].as_i64() {
                Some(next) if items.last().and_then(|t| t["id"].as_i64()).is_some_and(|id| id > after) => {
                    cursor = format!("&cursor={next}")
                }
                _ => return ids,
            }
        }
    }
}

fn holds(w: &Watcher, expected: &[Value; 3]) -> bool {
    STATS_TOPICS.iter().zip(expected).all(|(topic, want)| matches(&w.last_payload(topic), want))
}

/// The last value of every stats topic, as one JSON array.
fn last(w: &Watcher) -> Value {
    STATS_TOPICS.iter().map(|t| w.last_payload(t)).collect()
}

/// What the check found.
struct Outcome {
    /// When every client held the truth (`None`: some never did by the deadline).
    all_held_at: Option<Instant>,
    failures: Vec<String>,
    expected: [Value; 3],
    assigned: usize,
    /// 503 answers to the REST reads after the wait.
    unavailable: usize,
}

/// Waits until every client holds the true stats and every assignee socket has every
/// `task:assigned` (at most until `deadline`), reads a little longer, then checks that nothing
/// moved away, that no `task:assigned` came twice or for a task not assigned to the socket's
/// user, that none is missing, and that REST (through instance `rest`) says the same.
async fn check(fleet: &mut Fleet, c: &Cluster, rest: usize, deadline: Instant) -> Outcome {
    let expected = sql_stats(c).await;
    let ids = sql_assigned(c, fleet.newest_task_before).await;
    let none = BTreeSet::new();
    let waits = fleet.watchers.iter_mut().zip(&fleet.assignee).map(|(w, &is_assignee)| {
        let (expected, want) = (&expected, if is_assignee { &ids } else { &none });
        async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let done =
                |w: &Watcher| holds(w, expected) && want.iter().all(|id| w.assigned().contains_key(id));
            w.wait_until(done, left).await.then(Instant::now)
        }
    });
    let held: Vec<Option<Instant>> = join_all(waits).await;
    let aftermath = join_all(fleet.watchers.iter_mut().map(|w| w.drain(AFTERMATH))).await;

    let mut failures = Vec::new();
    for (((w, &is_assignee), at), late) in
        fleet.watchers.iter().zip(&fleet.assignee).zip(&held).zip(&aftermath)
    {
        if let Some(end) = late.iter().find(|m| m.get("__close").is_some() || m.get("__ended").is_some()) {
            failures.push(format!("{}: the connection ended: {end}", w.name));
        }
        if at.is_none() && !holds(w, &expected) {
            failures.push(format!("{}: did not hold the true stats in time; it holds {}", w.name, last(w)));
        } else if !holds(w, &expected) {
            failures.push(format!("{}: moved away from the true stats, to {}", w.name, last(w)));
        }
        let want = if is_assignee { &ids } else { &none };
        let got = w.assigned();
        let missing: Vec<i64> = want.iter().filter(|id| !got.contains_key(id)).copied().collect();
        let twice: Vec<(i64, usize)> = got.iter().filter(|(_, n)| **n > 1).map(|(id, n)| (*id, *n)).collect();
        let unexpected: Vec<i64> = got.keys().filter(|id| !want.contains(id)).copied().collect();
        if !missing.is_empty() {
            failures.push(format!("{}: task:assigned missing for tasks {missing:?}", w.name));
        }
        if !twice.is_empty() {
            failures.push(format!("{}: task:assigned more than once (task, times): {twice:?}", w.name));
        }
        if !unexpected.is_empty() {
            failures.push(format!("{}: task:assigned for tasks not assigned to it: {unexpected:?}", w.name));
        }
    }
    let mut reads = Rest::new(&c.admins[rest]);
    let rest_stats = reads.stats().await;
    for ((topic, got), want) in STATS_TOPICS.iter().zip(&rest_stats).zip(&expected) {
        if !matches(got, want) {
            failures.push(format!("REST {topic} {got} differs from the tables' {want}"));
        }
    }
    let rest_ids = reads.assigned(fleet.newest_task_before).await;
    if rest_ids != ids {
        failures
            .push(format!("REST lists the tasks {rest_ids:?} as assigned to {ASSIGNEE}; the table {ids:?}"));
    }
    let all_held_at =
        held.iter().copied().collect::<Option<Vec<Instant>>>().and_then(|v| v.into_iter().max());
    Outcome { all_held_at, failures, expected, assigned: ids.len(), unavailable: reads.unavailable }
}

/// Before the fault: every instance's pool is warm, as on a server that has served traffic
/// (concurrent reads open its connections up to [`POOL`]; a fault kills all of them), and
/// every client holds the truth (so what fails later is the fault's doing).
async fn settle(fleet: &mut Fleet, c: &Cluster, rest: usize) {
    let reads =
        c.admins.iter().flat_map(|api| (0..4 * POOL).map(move |_| api.get("/api/v1/tasks?limit=200")));
    for resp in join_all(reads).await {
        assert_eq!(resp.expect("GET /api/v1/tasks").status, 200, "warming the pools");
    }
    let outcome = check(fleet, c, rest, Instant::now() + CONVERGE).await;
    assert!(
        outcome.failures.is_empty(),
        "the clients did not converge before the fault:\n{}",
        outcome.failures.join("\n")
    );
}

/// The check every scenario ends with: within 5 s of `recovery` (or of `last_write`, if the
/// scenario wrote after recovering), every client holds the true stats, and every
/// `task:assigned` came exactly once; REST agrees. Prints `converged scenario=<name> ms=<n>`,
/// or on failure the instances' warnings and errors. The time is an upper bound: a message
/// that arrived while the truth was being read (one psql, a few tens of ms) counts from when
/// it is read.
#[allow(clippy::print_stderr, reason = "the report lines of the suite, read with --nocapture")]
async fn assert_converged(
    scenario: &str,
    fleet: &mut Fleet,
    c: &Cluster,
    rest: usize,
    recovery: Instant,
    last_write: Instant,
) {
    let from = recovery.max(last_write);
    let outcome = check(fleet, c, rest, from + CONVERGE).await;
    let ms = |t: Instant| t.saturating_duration_since(recovery).as_millis();
    let after_write = |t: Instant| t.saturating_duration_since(last_write).as_millis();
    match outcome.all_held_at {
        Some(at) if outcome.failures.is_empty() => eprintln!(
            "converged scenario={scenario} ms={} after_last_write_ms={} clients={} assigned_tasks={} \
             rest_503_after_wait={}",
            ms(at),
            after_write(at),
            fleet.watchers.len(),
            outcome.assigned,
            outcome.unavailable
        ),
        _ => {
            eprintln!("NOT converged scenario={scenario}");
            for (i, server) in c.servers.iter().enumerate() {
                for line in server.logs().lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")) {
                    eprintln!("instance {i}: {line}");
                }
            }
            panic!(
                "{scenario}: {} failure(s) within {CONVERGE:?} of recovery (true stats {}, {} tasks \
                 assigned to {ASSIGNEE}; REST answered 503 {} times after the wait):\n{}",
                outcome.failures.len(),
                Value::from(outcome.expected.to_vec()),
                outcome.assigned,
                outcome.unavailable,
                outcome.failures.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

/// What a stream of task creations got back.
#[derive(Default)]
struct Writes {
    answers: Mutex<Vec<(Instant, u16)>>,
    transport_errors: AtomicUsize,
}

impl Writes {
    fn done(&self) -> usize {
        self.answers.lock().expect("answers").len() + self.transport_errors.load(Ordering::SeqCst)
    }

    fn created(&self) -> usize {
        self.answers.lock().expect("answers").iter().filter(|(_, s)| *s == 201).count()
    }

    fn created_after(&self, t: Instant) -> usize {
        self.answers.lock().expect("answers").iter().filter(|(at, s)| *s == 201 && *at > t).count()
    }

    /// Whether every request was answered, with one of `statuses`.
    fn only(&self, statuses: &[u16]) -> bool {
        self.transport_errors.load(Ordering::SeqCst) == 0
            && self.answers.lock().expect("answers").iter().all(|(_, s)| statuses.contains(s))
    }

    /// `status → count`, and transport errors.
    fn summary(&self) -> String {
        let mut by_status = BTreeMap::new();
        for (_, s) in self.answers.lock().expect("answers").iter() {
            *by_status.entry(*s).or_insert(0) += 1;
        }
        format!("{by_status:?}, {} transport errors", self.transport_errors.load(Ordering::SeqCst))
    }
}

/// Starts up to `n` task creations through `api`, `concurrency` at a time, each waiting
/// `pace` first, until `stop` is set; every `assign_every`-th is assigned to [`ASSIGNEE`].
fn spawn_writes(
    api: Api,
    n: usize,
    concurrency: usize,
    pace: Duration,
    assign_every: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Writes>, tokio::task::JoinHandle<()>) {
    let writes = Arc::new(Writes::default());
    let w = Arc::clone(&writes);
    let handle = tokio::spawn(async move {
        let mut answers = futures_util::stream::iter(0..n)
            .take_while(move |_| std::future::ready(!stop.load(Ordering::SeqCst)))
            .map(|i| {
                let api = api.clone();
                let body = task_body(i, i.is_multiple_of(assign_every).then_some(ASSIGNEE));
                async move {
                    tokio::time::sleep(pace).await;
                    api.post("/api/v1/tasks", &body).await
                }
            })
            .buffer_unordered(concurrency);
        while let Some(answer) = answers.next().await {
            match answer {
                Ok(resp) => w.answers.lock().expect("answers").push((Instant::now(), resp.status)),
                Err(_) => {
                    w.transport_errors.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    (writes, handle)
}

/// Waits (bounded) until `cond` holds.
async fn wait_for(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Every backend of the database terminated at once (pools, LISTEN and outbound connections
/// of both instances), then 20 creations with an assignee through instance 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_terminated_then_20_creations() {
    let c = start(2, shared_db(), false, false).await;
    let mut fleet = Fleet::open(&c, &[0, 1]).await;
    create(&c.admins[0], "/api/v1/tasks", &task_body(0, Some(ASSIGNEE))).await;
    settle(&mut fleet, &c, 1).await;

    let connections = c
        .psql(
            "SELECT string_agg(application_name || ' ' || n, ', ') FROM (SELECT application_name, count(*) AS n \
             FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1) s",
        )
        .await;
    let terminated = c
        .psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND datname = current_database()",
        )
        .await;
    let recovery = Instant::now();
    let mut statuses = BTreeMap::new();
    for i in 1..=20 {
        let resp = c.admins[0].post("/api/v1/tasks", &task_body(i, Some(ASSIGNEE))).await.expect("POST");
        *statuses.entry(resp.status).or_insert(0) += 1;
    }
    let last_write = Instant::now();
    eprintln!(
        "all_backends_terminated: {terminated} backends terminated ({connections}); the 20 creations \
         answered {statuses:?}"
    );
    assert_converged("all_backends_terminated", &mut fleet, &c, 1, recovery, last_write).await;
    assert!(
        statuses.keys().all(|s| [201, 503].contains(s)),
        "docs/protocol.md §3: a request that loses its database answers 503 unavailable; the creations \
         answered {statuses:?}"
    );
}

/// Instance 1's LISTEN connection stalled for 10 s (its socket open, nothing forwarded either
/// way) while changes of every kind are made through instance 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_connection_stalled_10s() {
    let c = start(2, shared_db(), true, false).await;
    let mut fleet = Fleet::open(&c, &[0, 1]).await;
    create(&c.admins[0], "/api/v1/tasks", &task_body(0, Some(ASSIGNEE))).await;
    settle(&mut fleet, &c, 1).await;

    let stalled = c.proxies[1].stall(Filter::listener());
    assert_eq!(
        stalled,
        1,
        "instance 1 should have one LISTEN connection: {:?}",
        c.proxies[1].open(&Filter::All)
    );
    let stall_start = Instant::now();
    for i in 1..=8 {
        create(&c.admins[0], "/api/v1/tasks", &task_body(i, Some(ASSIGNEE))).await;
        tokio::time::sleep_until((stall_start + Duration::from_millis(1100 * i as u64)).into()).await;
    }
    create(&c.admins[0], "/api/v1/approvals", &approval_body()).await;
    create(&c.admins[0], "/api/v1/conversations", &conversation_body("Ada")).await;
    let last_write = Instant::now();
    tokio::time::sleep_until((stall_start + Duration::from_secs(10)).into()).await;
    c.proxies[1].resume();
    let recovery = Instant::now();
    let listeners = c.proxies[1].stats().seen_of(&Filter::listener());
    eprintln!("listen_connection_stalled_10s: instance 1 opened {listeners} LISTEN connection(s) in all");
    assert_converged("listen_connection_stalled_10s", &mut fleet, &c, 1, recovery, last_write).await;
}

/// PostgreSQL (a private cluster) stopped with `-m immediate` and started again under two
/// instances, while instance 0 creates a task every 100 ms; the writes go on until five
/// succeeded after the restart (or 5 s passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted() {
    let mut pg = PgCluster::start().await.expect("a private PostgreSQL");
    let db = TestDatabase::postgres_on(&pg.admin_url()).expect("a database on it");
    let c = start(2, db, false, false).await;
    let mut fleet = Fleet::open(&c, &[0, 1]).await;
    create(&c.admins[0], "/api/v1/tasks", &task_body(0, Some(ASSIGNEE))).await;
    settle(&mut fleet, &c, 1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (writes, writer) =
        spawn_writes(c.admins[0].clone(), 10_000, 1, Duration::from_millis(100), 2, Arc::clone(&stop));
    wait_for("creations before the restart", Duration::from_secs(10), async || writes.created() >= 3).await;
    let down = pg.restart(StopMode::Immediate).await.expect("restarting PostgreSQL");
    let recovery = Instant::now();
    let deadline = recovery + CONVERGE;
    while writes.created_after(recovery) < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the writer");
    let last_write = Instant::now();
    eprintln!(
        "postgres_restarted: down {down:?}; creations answered {} ({} created after the restart)",
        writes.summary(),
        writes.created_after(recovery)
    );
    assert_converged("postgres_restarted", &mut fleet, &c, 1, recovery, last_write).await;
    assert!(
        writes.only(&[201, 503]),
        "docs/protocol.md §3: a request that loses its database answers 503 unavailable; the creations \
         answered {}",
        writes.summary()
    );
    drop(c);
}

/// One of three instances killed with SIGKILL in the middle of a burst of creations through
/// it (every second one assigned); the survivors' clients must converge and get every
/// `task:assigned` of what the dead instance committed, exactly once.
///
/// Whether the kill falls between a commit and its doorbell is luck (the doorbell rings a few
/// milliseconds after each commit): the run would pass or fail by chance. So the dead
/// instance's doorbell connection is stalled for its last ~20 answers before the kill: those
/// commits certainly never rang, as when a writer dies right after committing, and only a
/// survivor's own reading of the outbox can find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_of_three_mid_burst() {
    let mut c = start(3, shared_db(), true, false).await;
    let dead = c.instance_name(0);
    let mut fleet = Fleet::open(&c, &[1, 2]).await;
    create(&c.admins[0], "/api/v1/tasks", &task_body(0, Some(ASSIGNEE))).await;
    settle(&mut fleet, &c, 1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (writes, burst) = spawn_writes(c.admins[0].clone(), 300, POOL, Duration::ZERO, 2, stop);
    wait_for("80 creations answered", Duration::from_secs(30), async || writes.done() >= 80).await;
    assert_eq!(c.proxies[0].stall(Filter::outbound()), 1, "instance 0's doorbell connection");
    wait_for("100 creations answered", Duration::from_secs(30), async || writes.done() >= 100).await;
    c.servers[0].kill().await.expect("kill -9 of instance 0");
    // The stalled connection would keep its backend (and the rings it holds) until resumed:
    // close it, rings lost, as the dead process's sockets are.
    c.proxies[0].cut(&Filter::All);
    tokio::time::timeout(Duration::from_secs(40), burst).await.expect("the burst ended").expect("burst task");
    // Every backend of the dead instance gone: each of its transactions committed or rolled
    // back. The database answered throughout; this is when the truth stops moving.
    let gone = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '{dead}%' \
         AND datname = current_database()"
    );
    wait_for("the dead instance's backends gone", Duration::from_secs(10), async || {
        c.psql(&gone).await == "0"
    })
    .await;
    let recovery = Instant::now();
    eprintln!("kill_9_of_one_of_three_mid_burst: instance 0 answered {} before SIGKILL", writes.summary());
    assert!((100..300).contains(&writes.created()), "the kill was not mid-burst: {}", writes.summary());
    assert_converged("kill_9_of_one_of_three_mid_burst", &mut fleet, &c, 1, recovery, recovery).await;
}

/// Three instances started at the same moment on an empty database: all three come up (none
/// exits), exactly one admin exists, and all converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_started_at_once() {
    let mut c = start(3, shared_db(), false, true).await;
    assert_eq!(
        c.psql("SELECT count(*) FROM users").await,
        "1",
        "users after three bootstraps: {}",
        c.psql("SELECT string_agg(username || ':' || role, ', ') FROM users").await
    );
    for (i, admin) in c.admins.iter().enumerate() {
        let me = suites::get_ok(admin, "/api/v1/tasks/stats").await;
        assert!(me.is_object(), "instance {i}: {me}");
    }
    let mut fleet = Fleet::open(&c, &[0, 1, 2]).await;
    let writes = (0..3).map(|i| {
        let admin = c.admins[i].clone();
        async move {
            create(&admin, "/api/v1/tasks", &task_body(i, Some(ASSIGNEE))).await;
            create(&admin, "/api/v1/tasks", &task_body(i + 3, Some(ASSIGNEE))).await;
            create(&admin, "/api/v1/approvals", &approval_body()).await;
            create(&admin, "/api/v1/conversations", &conversation_body("Grace")).await;
        }
    });
    join_all(writes).await;
    let last_write = Instant::now();
    assert_converged("three_instances_started_at_once", &mut fleet, &c, 2, last_write, last_write).await;
    for (i, server) in c.servers.iter_mut().enumerate() {
        assert_eq!(server.exit_status(), None, "instance {i} exited; log:\n{}", server.logs());
    }
    let admins = c.psql(&format!("SELECT count(*) FROM users WHERE username = '{ADMIN_USERNAME}'")).await;
    assert_eq!(admins, "1", "admins at the end");
}

/// A transaction of its own (a direct connection, as a slow instance would) inserts a task
/// assigned to [`ASSIGNEE`] and its two outbox rows, then stays open 40 s while the instances
/// commit later changes (which take later sequence numbers); then it commits. Its stats change
/// and its `task:assigned` must reach every instance's clients, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transaction_holding_a_gap_40s() {
    const HOLD: Duration = Duration::from_secs(40);
    let c = start(2, shared_db(), false, false).await;
    let mut fleet = Fleet::open(&c, &[0, 1]).await;
    create(&c.admins[0], "/api/v1/tasks", &task_body(0, Some(ASSIGNEE))).await;
    settle(&mut fleet, &c, 1).await;

    let origin = "pulse-test-slow-writer";
    let (slow, connection) =
        tokio_postgres::connect(&format!("{}?application_name={origin}", c.db.url()), NoTls)
            .await
            .expect("a direct connection");
    tokio::spawn(connection);
    let began = Instant::now();
    // The task counts itself in a counter shard no instance uses, instead of through the
    // trigger (whose shard is the backend's pid % 16): otherwise an instance's writer on the
    // same shard would wait 40 s for this transaction's row lock. What is tried here is the
    // fan-out of a late commit, not the counters' locking.
    // The outbox rows below are written with the triggers on, as a service writes them.
    slow.batch_execute(
        "BEGIN; SET LOCAL session_replication_role = replica; \
         INSERT INTO stats_counters AS c (topic, bucket, shard, n) VALUES ('tasks', 'in_progress', 1000, 1) \
         ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = c.n + 1",
    )
    .await
    .expect("BEGIN");
    let admin_id: i64 = slow
        .query_one("SELECT id FROM users WHERE username = $1", &[&ADMIN_USERNAME])
        .await
        .expect("the admin's id")
        .get(0);
    let at = chrono::Utc::now();
    let at_sql = at.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let at_json = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let description = "Slow writer: the minibar of room 404";
    let id: i64 = slow
        .query_one(
            "INSERT INTO tasks (kind, department, description, status, assignee, created_by, created_at, \
             updated_at) VALUES ('housekeeping', 'front', $1, 'in_progress', $2, $3, $4::text::timestamp, \
             $4::text::timestamp) RETURNING id",
            &[&description, &ASSIGNEE, &ADMIN_USERNAME, &at_sql],
        )
        .await
        .expect("inserting the task")
        .get(0);
    slow.batch_execute("SET LOCAL session_replication_role = origin").await.expect("triggers on again");
    // The outbox rows exactly as the services write them (crates/services/src/outbox.rs).
    let task = json!({
        "id": id, "type": "housekeeping", "department": "front", "description": description,
        "status": "in_progress", "assignee": ASSIGNEE, "createdBy": ADMIN_USERNAME,
        "createdAt": at_json, "updatedAt": at_json, "completedAt": null,
    });
    let actor = json!({"userId": admin_id, "username": ADMIN_USERNAME, "role": "admin"}).to_string();
    let mut seqs = Vec::new();
    for name in ["task.created", "task.assigned"] {
        let event = json!({"type": name, "data": task}).to_string();
        let seq: i64 = slow
            .query_one(
                "INSERT INTO events (name, actor, event, created_at) VALUES ($1, $2, $3, $4::text::timestamp) \
                 RETURNING seq",
                &[&name, &actor, &event, &at_sql],
            )
            .await
            .expect("inserting an outbox row")
            .get(0);
        seqs.push(seq);
    }

    // Later changes through both instances, every 2.5 s, while the gap stays open.
    let mut i = 1;
    while began.elapsed() + Duration::from_millis(2500) < HOLD {
        create(&c.admins[i % 2], "/api/v1/tasks", &task_body(i, Some(ASSIGNEE))).await;
        i += 1;
        tokio::time::sleep_until((began + Duration::from_millis(2500 * i as u64)).into()).await;
    }
    let later = c.psql(&format!("SELECT count(*) FROM events WHERE seq > {}", seqs[1])).await;
    let last_write = Instant::now();
    tokio::time::sleep_until((began + HOLD).into()).await;
    slow.batch_execute("COMMIT").await.expect("COMMIT");
    let recovery = Instant::now();
    eprintln!(
        "long_transaction_holding_a_gap_40s: task {id} (outbox seqs {seqs:?}) committed after {:?}; \
         {later} events committed after it meanwhile ({} creations)",
        began.elapsed(),
        i - 1
    );
    assert!(later.parse::<i64>().expect("a count") > 0, "no later change took a later sequence number");
    assert_converged("long_transaction_holding_a_gap_40s", &mut fleet, &c, 1, recovery, last_write).await;
}

/// The connection dies while `COMMIT` is being acknowledged: instance 0 answers the creation
/// `503`, but the row committed. Every instance, instance 0 included, must announce it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_commit_acknowledgement() {
    let c = start(2, shared_db(), true, false).await;
    let mut fleet = Fleet::open(&c, &[0, 1]).await;
    create(&c.admins[0], "/api/v1/tasks", &task_body(0, Some(ASSIGNEE))).await;
    settle(&mut fleet, &c, 1).await;
    let before = sql_assigned(&c, fleet.newest_task_before).await;

    c.proxies[0].cut_after_commit(Filter::Pool);
    let resp = c.admins[0].post("/api/v1/tasks", &task_body(1, Some(ASSIGNEE))).await.expect("POST");
    let recovery = Instant::now();
    assert!(
        c.proxies[0].wait_commits_cut(1, Duration::from_secs(1)).await,
        "no COMMIT of instance 0's pool crossed the proxy (answer: HTTP {} {})",
        resp.status,
        resp.text
    );
    resp.expect_error(503, &["unavailable"]);
    let after = sql_assigned(&c, fleet.newest_task_before).await;
    let committed: Vec<&i64> = after.difference(&before).collect();
    assert_eq!(committed.len(), 1, "the creation answered 503 should have committed one task: {committed:?}");
    eprintln!("lost_commit_acknowledgement: task {} committed, its creation answered 503", committed[0]);
    assert_converged("lost_commit_acknowledgement", &mut fleet, &c, 1, recovery, recovery).await;
}

/// A pool connection that stops answering (a proxy that accepts and never replies) holds a
/// request at most `services::DB_CALL_DEADLINE` (15 s): it answers 503, the connection is
/// not reused, and the instance serves again as soon as the database answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pool_connection_answers_503_within_the_deadline() {
    let c = start(1, shared_db(), true, false).await;
    let mut fleet = Fleet::open(&c, &[0]).await;
    create(&c.admins[0], "/api/v1/tasks", &task_body(0, Some(ASSIGNEE))).await;
    settle(&mut fleet, &c, 0).await;

    let stalled = c.proxies[0].stall(Filter::Pool);
    assert!(stalled > 0, "instance 0 had pool connections to stall");
    let asked = Instant::now();
    let resp = c.admins[0].post("/api/v1/tasks", &task_body(1, Some(ASSIGNEE))).await.expect("POST");
    let waited = asked.elapsed();
    resp.expect_error(503, &["unavailable"]);
    assert!(
        waited >= Duration::from_secs(14) && waited < Duration::from_secs(20),
        "answered after {waited:?}: the deadline is 15 s"
    );
    c.proxies[0].resume();
    let recovery = Instant::now();
    create(&c.admins[0], "/api/v1/tasks", &task_body(2, Some(ASSIGNEE))).await;
    assert_converged("stalled_pool_connection", &mut fleet, &c, 0, recovery, Instant::now()).await;
}

/// A `COMMIT` that did commit but whose answer never comes: the request gives up at the
/// deadline (503) and reports the change in doubt, so every instance — the writer's own
/// included, whose listener had already read and skipped the row as its own — announces it
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_commit_that_committed_is_announced_everywhere() {
    let c = start(2, shared_db(), true, false).await;
    let mut fleet = Fleet::open(&c, &[0, 1]).await;
    create(&c.admins[0], "/api/v1/tasks", &task_body(0, Some(ASSIGNEE))).await;
    settle(&mut fleet, &c, 1).await;
    let before = sql_assigned(&c, fleet.newest_task_before).await;

    c.proxies[0].stall_after_commit(Filter::Pool);
    let resp = c.admins[0].post("/api/v1/tasks", &task_body(1, Some(ASSIGNEE))).await.expect("POST");
    let recovery = Instant::now();
    assert!(c.proxies[0].wait_commits_cut(1, Duration::from_secs(1)).await, "no COMMIT was stalled");
    resp.expect_error(503, &["unavailable"]);
    let after = sql_assigned(&c, fleet.newest_task_before).await;
    assert_eq!(after.difference(&before).count(), 1, "the stalled COMMIT committed one task");
    assert_converged("stalled_commit", &mut fleet, &c, 1, recovery, recovery).await;
}

/// An idle cluster: two instances, no client, no change. Over 20 s, what they cost the
/// database, counted by each instance's proxy (exactly) and by PostgreSQL:
///
/// - statements executed (proxy). The bound: the safety poll, one read a second per
///   instance, plus a presence heartbeat per instance per 10 s of up to three statements
///   (write, NOTIFY, prune of dead rows); plus 20 % and 2 per instance for the window's edges.
/// - presence writes (proxy: executions of an INSERT or UPDATE of `presence`; PostgreSQL:
///   `n_tup_ins + n_tup_upd` of the table): at most one per instance per 10 s, plus one for
///   the window's edges.
/// - transactions (proxy, and `pg_stat_database.xact_commit`). PostgreSQL counts more than
///   one per statement: the `Parse` round trip of an unnamed statement (diesel's `sql_query`)
///   is a transaction of its own, and a LISTEN backend reads each batch of notifications in a
///   transaction, which no client message shows. The bound is twice the statements' (plus
///   the edges of the statistics' flush), loose on purpose: the statements are the measure,
///   this only checks that PostgreSQL sees nothing the proxy does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cluster_costs_a_poll_and_a_heartbeat() {
    const INSTANCES: u64 = 2;
    const SETTLE: Duration = Duration::from_secs(11);
    const WINDOW: Duration = Duration::from_secs(20);
    let pg = PgCluster::start().await.expect("a private PostgreSQL");
    let db = TestDatabase::postgres_on(&pg.admin_url()).expect("a database on it");
    let name = db.postgres_admin().expect("PostgreSQL").1.to_owned();
    // The history recorder (contract section 9) is off here: its cost is per minute, not per
    // second — at each minute's end one read per stats topic, and an insert per topic whose
    // value changed (five at the first minute, none while idle after it) — so a 20 s window
    // would count it or not depending on where the minute falls. Its cost to writers is
    // measured in docs/performance.md.
    let options = ClusterOptions {
        proxied: true,
        together: false,
        server: server_options().env("PULSE_HISTORY_BUCKET_SECONDS", "0"),
    };
    let c = Cluster::start_with(INSTANCES as usize, db, options)
        .await
        .unwrap_or_else(|e| panic!("starting {INSTANCES} instances: {e:#}"));
    // A backend flushes its statistics at most once a second while busy, and an idle one
    // within 10 s (PGSTAT_IDLE_INTERVAL): let the start-up's transactions reach
    // pg_stat_database before the window opens. Nothing observable marks that moment.
    tokio::time::sleep(SETTLE).await;

    // The counters of the test database are read from the cluster's `postgres` database, so
    // these reads are not counted; the presence table's are read in the test database, one
    // transaction each, before the first and after the second reading of xact_commit.
    let xact = format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{name}'");
    let presence_tuples = "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE relname = 'presence'";
    let number = |s: String| s.parse::<i64>().unwrap_or_else(|_| panic!("not a number: {s:?}"));
    let tuples0 = number(psql(c.db.url(), &[presence_tuples]).await);
    let xact0 = number(psql(&pg.admin_url(), &[&xact]).await);
    let proxy0: Vec<_> = c.proxies.iter().map(|p| p.stats()).collect();
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let xact1 = number(psql(&pg.admin_url(), &[&xact]).await);
    let proxy1: Vec<_> = c.proxies.iter().map(|p| p.stats()).collect();
    let window = t0.elapsed();
    let tuples1 = number(psql(c.db.url(), &[presence_tuples]).await);

    let is_presence_write = |sql: &str| {
        let s = sql.to_ascii_lowercase();
        s.contains("insert into presence") || s.contains("update presence")
    };
    let (mut statements, mut transactions, mut presence_writes) = (0, 0, 0);
    let mut lines = Vec::new();
    for (i, (a, b)) in proxy0.iter().zip(&proxy1).enumerate() {
        let mut by_role: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (conn, n) in &b.transactions {
            let delta = n - a.transactions.get(conn).copied().unwrap_or(0);
            by_role.entry(role_of(conn)).or_default().1 += delta;
            transactions += delta;
        }
        let mut listing = Vec::new();
        for ((conn, sql), n) in &b.statements {
            let delta = n - a.statements.get(&(conn.clone(), sql.clone())).copied().unwrap_or(0);
            if delta > 0 {
                by_role.entry(role_of(conn)).or_default().0 += delta;
                statements += delta;
                listing.push(format!("  {delta:>5} × [{}] {sql}", role_of(conn)));
            }
        }
        let writes =
            b.executions(&Filter::All, is_presence_write) - a.executions(&Filter::All, is_presence_write);
        presence_writes += writes;
        lines.push(format!(
            "instance {i}: (statements, transactions) by connection {by_role:?}, presence writes {writes}"
        ));
        lines.extend(listing);
    }
    let secs = window.as_secs_f64();
    let heartbeats = (secs / 10.0).ceil() as u64;
    let budget = INSTANCES * (secs.floor() as u64 + 3 * heartbeats);
    let statement_bound = budget + budget / 5 + 2 * INSTANCES;
    let transaction_bound = 2 * statement_bound + 2 * INSTANCES;
    let presence_bound = INSTANCES * (heartbeats + 1);
    let xact_commit = xact1 - xact0;
    let tuples = tuples1 - tuples0;
    eprintln!(
        "idle window_s={secs:.1} instances={INSTANCES} statements={statements} proxy_transactions={transactions} \
         xact_commit={xact_commit} presence_writes={presence_writes} presence_tuples={tuples} \
         statement_bound={statement_bound} transaction_bound={transaction_bound} presence_bound={presence_bound} \
         statements_per_instance_per_s={:.2}\n{}",
        statements as f64 / secs / INSTANCES as f64,
        lines.join("\n")
    );
    assert!(
        statements <= statement_bound,
        "an idle cluster of {INSTANCES} ran {statements} statements in {secs:.1} s (bound {statement_bound}: \
         a read a second and a heartbeat every 10 s per instance)"
    );
    assert!(
        presence_writes <= presence_bound && tuples <= presence_bound as i64,
        "an idle cluster wrote presence {presence_writes} times ({tuples} rows) in {secs:.1} s \
         (bound {presence_bound}: one write per instance per 10 s)"
    );
    assert!(
        transactions <= transaction_bound && xact_commit <= transaction_bound as i64,
        "an idle cluster ran {transactions} transactions ({xact_commit} commits for PostgreSQL) in {secs:.1} s \
         (bound {transaction_bound})"
    );
    drop(c);
}
