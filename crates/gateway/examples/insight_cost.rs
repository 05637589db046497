//! What contract section 9 costs (`docs/performance.md`).
//!
//! `queries`: the reads behind `stats:departments` and `stats:sla` at 1,000 and 1,000,000
//! tasks (one task created every 2 s, one in 50 still open, 20 departments: the same ~900
//! tasks within the last 30-minute SLA period whatever the table size), and at 1,000,000
//! open tasks all created just now (the worst case for overdue counting: every task is
//! within one SLA period). Each read runs 200 times; p50 and p99 are printed.
//!
//! `writes`: 8 concurrent writers create tasks through the services for a few seconds, in
//! rounds alternating without and with the history recorder running — at a 1-s "minute",
//! sixty times the product's rate, so its cost shows if it has one.
//!
//! ```text
//! cargo run --release -p gateway --example insight_cost -- queries sqlite|postgres
//! cargo run --release -p gateway --example insight_cost -- writes sqlite|postgres [SECONDS ROUNDS WRITERS]
//! ```
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names the
//! PostgreSQL server; a database `pulse_insight_cost` is created and dropped there. SQLite
//! runs in a temporary folder and needs the `sqlite3` command for the bulk insert.

#![allow(clippy::print_stdout)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use domain_events::model::{Actor, Role};
use domain_events::{EventPublisher, InProcessBus};
use services::insight::HistoryBucket;
use services::{Database, InsightService, NewTask, PoolOptions, Services, TaskSla};
use ws_bridge::Topics;

type Error = Box<dyn std::error::Error>;

/// A fresh database of either kind, dropped (PostgreSQL) or deleted (SQLite) at the end.
struct Fresh {
    url: String,
    admin_url: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Fresh {
    fn new(kind: &str) -> Result<Self, Error> {
        match kind {
            "postgres" => {
                let admin = std::env::var("TEST_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                psql(&admin, "DROP DATABASE IF EXISTS pulse_insight_cost WITH (FORCE)")?;
                psql(&admin, "CREATE DATABASE pulse_insight_cost")?;
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Ok(Self { url: format!("{base}/pulse_insight_cost"), admin_url: Some(admin), _dir: None })
            }
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("pulse.db").display());
                Ok(Self { url, admin_url: None, _dir: Some(dir) })
            }
            other => Err(format!("unknown database {other:?}: sqlite or postgres").into()),
        }
    }

    /// Runs `sql` on the database with its command-line client.
    fn exec(&self, sql: &str) -> Result<(), Error> {
        match &self.admin_url {
            Some(_) => psql(&self.url, sql),
            None => {
                let path = self.url.trim_start_matches("sqlite://");
                let out = Command::new("sqlite3").arg(path).arg(sql).output()?;
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
                }
                Ok(())
            }
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Some(admin) = &self.admin_url {
            let _ = psql(admin, "DROP DATABASE IF EXISTS pulse_insight_cost WITH (FORCE)");
        }
    }
}

fn psql(url: &str, sql: &str) -> Result<(), Error> {
    let out = Command::new("psql").args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]).output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(())
}

/// `n` tasks: task `i` created `2 (n - i)` s ago, one in `open_every` pending (the others
/// completed), in 20 departments. `open_every` 1 and `spacing` 0: all open, all created now.
fn bulk_insert(db: &Fresh, n: u64, open_every: u64, spacing_secs: u64) -> Result<(), Error> {
    match &db.admin_url {
        Some(_) => {
            // In transactions of 2,000 rows, as the load bench preloads: one transaction
            // updating the same counter rows a million times would pile up their versions.
            let mut cmd = Command::new("psql");
            cmd.args([db.url.as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1"]);
            for from in (1..=n).step_by(2_000) {
                let to = (from + 1_999).min(n);
                cmd.arg("-c").arg(format!(
                    "INSERT INTO tasks (kind, department, description, status, created_by, created_at, updated_at, completed_at) \
                     SELECT 'bulk', 'dept-' || (i % 20), 'task ' || i, \
                            CASE WHEN i % {open_every} = 0 THEN 'pending' ELSE 'completed' END, 'admin', \
                            (now() AT TIME ZONE 'UTC') - make_interval(secs => ({n} - i) * {spacing_secs}), \
                            now() AT TIME ZONE 'UTC', \
                            CASE WHEN i % {open_every} = 0 THEN NULL ELSE now() AT TIME ZONE 'UTC' END \
                     FROM generate_series({from}, {to}) AS i"
                ));
            }
            let out = cmd.output()?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
            }
            db.exec("VACUUM ANALYZE")
        }
        None => {
            db.exec(&format!(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n}) \
                 INSERT INTO tasks (kind, department, description, status, created_by, created_at, updated_at, completed_at) \
                 SELECT 'bulk', 'dept-' || (i % 20), 'task ' || i, \
                        CASE WHEN i % {open_every} = 0 THEN 'pending' ELSE 'completed' END, 'admin', \
                        strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%d seconds', ({n} - i) * {spacing_secs})), \
                        strftime('%Y-%m-%d %H:%M:%f', 'now'), \
                        CASE WHEN i % {open_every} = 0 THEN NULL ELSE strftime('%Y-%m-%d %H:%M:%f', 'now') END \
                 FROM c"
            ))?;
            db.exec("ANALYZE")
        }
    }
}

async fn open(db: &Fresh, connections: u32) -> Result<(Database, Services, Actor), Error> {
    let database =
        Database::connect(&db.url, PoolOptions { max_connections: connections, ..Default::default() })
            .await?;
    database.migrate().await?;
    let bus: Arc<dyn EventPublisher> = Arc::new(InProcessBus::default());
    let services = Services::new(database.clone(), bus);
    let user = services.users.bootstrap_admin("admin", "admin-password").await?.ok_or("no admin")?;
    let actor = Actor { user_id: user.id, username: user.username, role: Role::Admin };
    Ok((database, services, actor))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn time_it<F, Fut, T>(what: &str, mut read: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = services::ServiceResult<T>>,
{
    read().await?; // warm the cache
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        read().await?;
        times.push(t.elapsed());
    }
    times.sort();
    println!("  {what:<20} p50 {:7.3} ms   p99 {:7.3} ms", percentile(&times, 0.5), percentile(&times, 0.99));
    Ok(())
}

async fn queries(kind: &str) -> Result<(), Error> {
    for (n, open_every, spacing, label) in [
        (1_000u64, 50u64, 2u64, "1,000 tasks, 1 in 50 open, one every 2 s"),
        (1_000_000, 50, 2, "1,000,000 tasks, 1 in 50 open, one every 2 s"),
        (1_000_000, 1, 0, "1,000,000 tasks, all open, all created now"),
    ] {
        let db = Fresh::new(kind)?;
        let (database, _services, _actor) = open(&db, 4).await?;
        let t = Instant::now();
        bulk_insert(&db, n, open_every, spacing)?;
        println!("{kind}: {label} (inserted in {:.1} s)", t.elapsed().as_secs_f64());
        let insight = InsightService::new(database.clone(), TaskSla::default());
        let sla = insight.sla().await?;
        let departments = insight.department_stats().await?;
        println!(
            "  overdue {} of {} open; {} departments; next change in {:?}",
            sla.stats.overdue_tasks,
            departments.departments.iter().map(|d| d.pending + d.in_progress).sum::<u64>(),
            departments.departments.len(),
            sla.changes_in
        );
        time_it("stats:departments", || insight.department_stats()).await?;
        time_it("stats:sla", || insight.sla()).await?;
        time_it("stats:tasks", || services::stats::task_stats(&database)).await?;
    }
    Ok(())
}

async fn writes(kind: &str, secs: u64, rounds: u64, writers: u64) -> Result<(), Error> {
    let db = Fresh::new(kind)?;
    let (database, services, actor) = open(&db, writers as u32 + 2).await?;
    let insight = InsightService::new(database.clone(), TaskSla::default());
    let topics = Arc::new(Topics::new(gateway::topics::pulse_topics(&database, &insight))?);
    let bucket = HistoryBucket::from_secs(1)?;
    println!("{kind}: {writers} writers, {rounds} rounds of {secs} s per mode");
    let mut totals = [0.0f64; 2];
    for round in 0..rounds {
        for (i, mode) in ["without history", "with history (1-s minute)"].iter().enumerate() {
            let recorder =
                (i == 1).then(|| gateway::history::spawn_recorder(topics.clone(), insight.clone(), bucket));
            let rate = run_round(&services, &actor, writers, Duration::from_secs(secs)).await;
            if let Some(recorder) = recorder {
                recorder.abort();
            }
            totals[i] += rate;
            println!("round {round} {mode:<26} {rate:8.0} commits/s");
        }
    }
    let points = insight.history("stats:tasks", chrono::DateTime::UNIX_EPOCH).await?.points.len();
    let (without, with) = (totals[0] / rounds as f64, totals[1] / rounds as f64);
    println!(
        "mean: without {without:.0}/s, with {with:.0}/s ({:+.1} %); {points} stats:tasks points written",
        (with / without - 1.0) * 100.0
    );
    Ok(())
}

/// Creates tasks from `writers` tasks for `length`; commits per second.
async fn run_round(services: &Services, actor: &Actor, writers: u64, length: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (services, actor, stop, done) = (services.clone(), actor.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let task = NewTask {
                        kind: "bench".into(),
                        department: format!("dept-{}", w % 4),
                        description: "insight cost".into(),
                        assignee: None,
                    };
                    if services.tasks.create(&actor, task).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        let _ = handle.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.get(1).map_or("sqlite", String::as_str);
    let number = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("queries") => queries(kind).await,
        Some("writes") => writes(kind, number(2, 5), number(3, 3), number(4, 8)).await,
        _ => Err("usage: insight_cost queries|writes sqlite|postgres [SECONDS ROUNDS WRITERS]".into()),
    }
}
