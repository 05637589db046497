//! `bench`: Pulse's load bench.
//!
//! Starts the release `server` binary on a fresh database, connects thousands of
//! authenticated WebSocket dashboards, drives task creations over HTTP and measures how fast
//! every dashboard sees them, what the server spends (CPU, memory) in each phase, and what the
//! same number of polling dashboards would cost. Writes `target/bench/report-<db>.json`,
//! `summary-<db>.md` and `latency-<db>.png` under the repository root.
//!
//! `bench soak` (module [`soak`]) is the long run of issue 8 instead: N clients under a mix
//! of REST mutations for `--secs`, sampled every 10 s; zero errors, flat memory, every client
//! converged (`target/bench/soak-<db>.{json,md}`).
//!
//! `cargo run --release -p bench -- --help` lists the flags. The CI smoke size is
//! `--clients 200 --mutations 20 --burst 200 --idle-secs 2 --poll-secs 2`: it asserts no
//! timing and exits non-zero only when something is broken.

// A command-line tool reports on its terminal: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod clients;
mod db;
mod floor;
mod load;
mod plot;
mod procstat;
mod report;
mod server;
mod soak;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::time::{Instant, sleep};

use crate::clients::{ClientOutcome, Fleet, FleetConfig};
use crate::db::{BenchDb, DbKind};
use crate::floor::FloorArgs;
use crate::load::Api;
use crate::procstat::{ClusterSample, Machine, PhaseCost, PhaseCosts, Sample};
use crate::report::{
    BurstReport, ConnectReport, GroupLatency, IdleReport, LocalRemote, MutationReport, Pcts, PollReport,
    PreloadReport, Report, Settings, VerifyReport, file_stem,
};
use crate::server::{Cluster, ServerConfig};
use crate::soak::SoakArgs;

/// Above this, `--preload` inserts directly into the database instead of going through the API.
const API_PRELOAD_MAX: u64 = 20_000;
/// The bootstrap admin the bench logs in as.
const ADMIN: &str = "admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DbChoice {
    Sqlite,
    Postgres,
    Both,
}

/// Another mode than the default load bench.
#[derive(Debug, Clone, Subcommand)]
enum Mode {
    /// Soak: N clients for a long time under a mix of mutations; fails on any error, a
    /// client not converged, or server memory growing after the warm-up.
    Soak(SoakArgs),
    /// The floor: one ready-made frame written to N loopback sockets and read back, no
    /// server — what the kernel alone charges for a fan-out on this machine.
    Floor(FloorArgs),
}

/// Pulse load bench: N WebSocket dashboards against the release server on a fresh database.
/// `bench soak …` runs the soak instead (`bench soak --help`); the server, database,
/// connection, timeout and output options apply to both and may come before or after `soak`.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench", version)]
struct Args {
    /// The soak mode (without it: the load bench).
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The server binary [default: $CARGO_TARGET_DIR/release/server if that variable is set,
    /// else target/release/server under the repository root].
    #[arg(long, env = "PULSE_SERVER_BIN", global = true)]
    server_bin: Option<PathBuf>,
    /// Database backend; `both` runs SQLite then PostgreSQL.
    #[arg(long, value_enum, default_value = "sqlite")]
    db: DbChoice,
    /// Server instances on the one database (PostgreSQL only: SQLite is single-instance).
    /// Clients are dealt round-robin over them; mutations go to instance 0, and the report
    /// gives latency for its clients (local) and the others' (remote, cross-instance).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// PostgreSQL admin URL used to create and drop the bench's database (127.0.0.1 only).
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        global = true
    )]
    pg_admin_url: String,
    /// WebSocket clients (all with one token from one login).
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Connects (TCP + upgrade + snapshot) in flight at once.
    #[arg(long, default_value_t = 200, global = true)]
    connect_concurrency: usize,
    /// Limit for the whole connect phase, s.
    #[arg(long, default_value_t = 300, global = true)]
    connect_timeout_secs: u64,
    /// Tasks created before the clients connect (API up to 20,000, a direct SQL insert above).
    #[arg(long, default_value_t = 0)]
    preload: u64,
    /// Paced mutations per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Paced mutations (task creations, one at a time).
    #[arg(long, default_value_t = 200)]
    mutations: usize,
    /// Burst: task creations as fast as the API takes them (0: skip).
    #[arg(long, default_value_t = 2_000)]
    burst: usize,
    /// Burst requests in flight.
    #[arg(long, default_value_t = 64)]
    burst_concurrency: usize,
    /// Idle measurement with every client connected and no change, s.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Poller request rate, requests/s.
    #[arg(long, default_value_t = 200.0)]
    poll_rate: f64,
    /// Poller duration, s (0: skip).
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
    /// Poller keep-alive connections.
    #[arg(long, default_value_t = 16)]
    poll_connections: usize,
    /// A (client, mutation) pair not delivered within this counts as missing, s.
    #[arg(long, default_value_t = 10)]
    pair_timeout_secs: u64,
    /// How long to wait for every client to hold a final value, s.
    #[arg(long, default_value_t = 60, global = true)]
    settle_timeout_secs: u64,
    /// `WS_HEARTBEAT_SECS` for the server.
    #[arg(long, default_value_t = 25, global = true)]
    heartbeat_secs: u64,
    /// `WORKERS` for the server (default: its own).
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// Output folder [default: target/bench under the repository root].
    #[arg(long, global = true)]
    out_dir: Option<PathBuf>,
    /// Limit for one database's whole run, s.
    #[arg(long, default_value_t = 3_600, global = true)]
    max_run_secs: u64,
}

impl Args {
    fn validate(&self, nofile: u64) -> Result<()> {
        let bounded = |name: &str, v: f64, lo: f64, hi: f64| -> Result<()> {
            if !(lo..=hi).contains(&v) {
                bail!("--{name} must be within {lo}..={hi}");
            }
            Ok(())
        };
        bounded("clients", self.clients as f64, 1.0, 100_000.0)?;
        bounded("instances", self.instances as f64, 1.0, 16.0)?;
        if self.instances > 1 && self.db != DbChoice::Postgres {
            bail!(
                "--instances {} needs --db postgres: SQLite is single-instance (a second server on the \
                 same file refuses to start); run --db sqlite and --db postgres --instances {} separately",
                self.instances,
                self.instances
            );
        }
        if self.instances > self.clients {
            bail!(
                "--instances {} is more than --clients {}: an instance would have no client",
                self.instances,
                self.clients
            );
        }
        bounded("connect-concurrency", self.connect_concurrency as f64, 1.0, 10_000.0)?;
        bounded("rate", self.rate, 0.01, 10_000.0)?;
        bounded("mutations", self.mutations as f64, 1.0, 1_000_000.0)?;
        bounded("burst", self.burst as f64, 0.0, 1_000_000.0)?;
        bounded("burst-concurrency", self.burst_concurrency as f64, 1.0, 1_024.0)?;
        bounded("preload", self.preload as f64, 0.0, 100_000_000.0)?;
        bounded("idle-secs", self.idle_secs as f64, 0.0, 3_600.0)?;
        bounded("poll-rate", self.poll_rate, 0.1, 100_000.0)?;
        bounded("poll-secs", self.poll_secs as f64, 0.0, 3_600.0)?;
        bounded("poll-rate × poll-secs", self.poll_rate * self.poll_secs as f64, 0.0, 2_000_000.0)?;
        bounded("poll-connections", self.poll_connections as f64, 1.0, 1_024.0)?;
        // The server and the bench each hold one descriptor per client, plus some.
        let needed = self.clients as u64 + self.poll_connections as u64 + self.burst_concurrency as u64 + 200;
        if needed > nofile {
            bail!(
                "--clients {} needs about {needed} open files per process, the limit is {nofile} \
                 (raise the hard limit, or use fewer clients)",
                self.clients
            );
        }
        Ok(())
    }
}

fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
}

fn since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c)) {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let argv: Vec<String> = std::env::args().collect();
    let command_line = format!(
        "cargo run --release -p bench --{}   (argv[0] = {})",
        argv.iter().skip(1).map(|a| format!(" {}", shell_quote(a))).collect::<String>(),
        argv.first().map(String::as_str).unwrap_or("bench")
    );
    // Raise the soft open-file limit to the hard limit; the server child inherits it.
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("bench: cannot raise RLIMIT_NOFILE: {e}");
            return ExitCode::from(2);
        }
    };
    let valid = match &args.mode {
        Some(Mode::Soak(_)) if args.instances > 1 => {
            Err(anyhow!("--instances is for the load bench; the soak runs one server"))
        }
        Some(Mode::Soak(soak)) => soak.validate(nofile),
        Some(Mode::Floor(floor)) if floor.sockets as u64 * 2 + 64 > nofile => Err(anyhow!(
            "--sockets {} needs {} open files; the limit is {nofile}",
            floor.sockets,
            floor.sockets * 2 + 64
        )),
        Some(Mode::Floor(_)) => Ok(()),
        None => args.validate(nofile),
    };
    if let Err(e) = valid {
        eprintln!("bench: {e:#}");
        return ExitCode::from(2);
    }
    let nofile_pair = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((nofile, nofile));
    let tck = procstat::clk_tck();
    let machine = Machine::detect(nofile_pair, tck);
    let db_choice = match &args.mode {
        Some(Mode::Soak(soak)) => soak.db,
        Some(Mode::Floor(_)) | None => args.db,
    };
    let kinds = match db_choice {
        DbChoice::Sqlite => vec![DbKind::Sqlite],
        DbChoice::Postgres => vec![DbKind::Postgres],
        DbChoice::Both => vec![DbKind::Sqlite, DbKind::Postgres],
    };
    let root = repo_root();
    let out_dir = args.out_dir.clone().unwrap_or_else(|| root.join("target/bench"));
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("bench: creating {}: {e}", out_dir.display());
        return ExitCode::from(2);
    }
    let server_bin = args.server_bin.clone().unwrap_or_else(|| match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("release/server"),
        None => root.join("target/release/server"),
    });

    if let Some(Mode::Floor(floor)) = &args.mode {
        return match floor::run(floor, tck, &out_dir).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench floor: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Mode::Soak(soak)) = &args.mode {
        return soak_main(&args, soak, &kinds, &server_bin, &out_dir, &machine, tck, &command_line).await;
    }
    let mut code = 0;
    for kind in kinds {
        println!(
            "bench: {} — {} clients on {} server instance(s), server {}",
            kind.name(),
            args.clients,
            args.instances,
            server_bin.display()
        );
        let run = run_db(&args, kind, &server_bin, &out_dir, &machine, tck, &command_line);
        let name = file_stem(kind.name(), args.instances);
        let files = Written {
            json: out_dir.join(format!("report-{name}.json")),
            md: out_dir.join(format!("summary-{name}.md")),
            shown: format!("{}/{{report,summary,latency}}-{name}.*", out_dir.display()),
        };
        code = code.max(finish_run("bench", &name, &files, args.max_run_secs, run).await);
    }
    ExitCode::from(code)
}

/// `bench soak`: each database in turn; exit 1 when a run found a failure, 2 on an error.
#[allow(clippy::too_many_arguments)]
async fn soak_main(
    args: &Args,
    soak: &SoakArgs,
    kinds: &[DbKind],
    server_bin: &Path,
    out_dir: &Path,
    machine: &Machine,
    tck: u64,
    command_line: &str,
) -> ExitCode {
    let mut code = 0;
    for &kind in kinds {
        println!(
            "bench soak: {} — {} clients, {} s at {}/s, server {}",
            kind.name(),
            soak.clients,
            soak.secs,
            soak.rate,
            server_bin.display()
        );
        let run = soak::run_db(args, soak, kind, server_bin, out_dir, machine, tck, command_line);
        let name = kind.name();
        let files = Written {
            json: out_dir.join(format!("soak-{name}.json")),
            md: out_dir.join(format!("soak-{name}.md")),
            shown: format!("{}/soak-{name}.{{json,md}}", out_dir.display()),
        };
        code = code.max(finish_run("bench soak", name, &files, args.max_run_secs, run).await);
    }
    ExitCode::from(code)
}

/// What a finished run reports, in both modes.
trait RunReport: serde::Serialize {
    fn markdown(&self) -> String;
    /// The failures found; empty when the run passed.
    fn failures(&self) -> &[String];
}

impl RunReport for Report {
    fn markdown(&self) -> String {
        Report::markdown(self)
    }
    fn failures(&self) -> &[String] {
        if self.ok { &[] } else { &self.failures }
    }
}

impl RunReport for soak::SoakReport {
    fn markdown(&self) -> String {
        soak::SoakReport::markdown(self)
    }
    fn failures(&self) -> &[String] {
        if self.ok { &[] } else { &self.failures }
    }
}

/// Where a run's report goes, and how to name it on the console.
struct Written {
    json: PathBuf,
    md: PathBuf,
    shown: String,
}

/// Runs one database's run within `--max-run-secs` and until SIGINT/SIGTERM (dropping the
/// run kills its servers and drops its database, whatever happened), prints and writes its
/// report. Exit code: 0 passed, 1 the run found a failure, 2 an error.
async fn finish_run<R: RunReport>(
    mode: &str,
    name: &str,
    files: &Written,
    max_run_secs: u64,
    run: impl Future<Output = Result<R>>,
) -> u8 {
    let outcome = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(max_run_secs), run) => match r {
            Ok(r) => r,
            Err(_) => Err(anyhow!("the run exceeded --max-run-secs {max_run_secs}")),
        },
        _ = interrupted() => Err(anyhow!("interrupted")),
    };
    let report = match outcome {
        Ok(report) => report,
        Err(e) => {
            eprintln!("{mode}: {name}: error: {e:#}");
            return 2;
        }
    };
    let md = report.markdown();
    println!("\n{md}");
    let written = std::fs::write(&files.json, serde_json::to_string_pretty(&report).unwrap_or_default())
        .and_then(|()| std::fs::write(&files.md, md));
    let mut code = 0;
    if let Err(e) = written {
        eprintln!("{mode}: writing the report: {e}");
        code = 2;
    }
    println!("{mode}: wrote {}", files.shown);
    if !report.failures().is_empty() {
        eprintln!("{mode}: {name}: FAILED: {}", report.failures().join("; "));
        code = code.max(1);
    }
    code
}

/// SIGINT or SIGTERM: the run is dropped, which kills the server and drops the database.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

#[allow(clippy::too_many_lines)]
async fn run_db(
    args: &Args,
    kind: DbKind,
    server_bin: &Path,
    out_dir: &Path,
    machine: &Machine,
    tck: u64,
    command_line: &str,
) -> Result<Report> {
    let base = Instant::now();
    let started_at_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut failures = Vec::new();
    let db = BenchDb::create(kind, &args.pg_admin_url)?;
    let n = args.instances;
    let stem = file_stem(kind.name(), n);
    let cfg = ServerConfig::for_fleet(
        server_bin,
        db.url(),
        ADMIN,
        args.clients,
        args.heartbeat_secs,
        args.workers,
        out_dir.join(format!("server-{stem}.log")),
    );
    for i in 0..n {
        let _ = std::fs::remove_file(cfg.instance(i, n).log_path);
    }
    // Declared after `db`: dropped first, so every instance is killed before the database goes.
    let mut cluster = Cluster::start(&cfg, n).await?;
    let pool = args.burst_concurrency.max(16);
    let mut api = Api::login(cluster.first().base(), ADMIN, &cfg.admin_password, pool).await?;
    let sample = |c: &Cluster| ClusterSample::take(c.servers().iter().map(|s| s.pid()), tck);

    // --- Preload -------------------------------------------------------------------------
    let t = Instant::now();
    let method = if args.preload == 0 {
        "none"
    } else if args.preload <= API_PRELOAD_MAX {
        progress(&format!("preloading {} tasks through the API", args.preload));
        load::preload_api(&api, args.preload, 64).await?;
        "api"
    } else {
        progress(&format!("preloading {} tasks with a direct insert (server stopped)", args.preload));
        cluster.stop().await?;
        db.bulk_insert_tasks(args.preload, ADMIN)?;
        cluster = Cluster::start(&cfg, n).await?;
        api = api.rebase(cluster.first().base());
        "sql"
    };
    let preload =
        PreloadReport { tasks: args.preload, method: method.into(), secs: t.elapsed().as_secs_f64() };
    let initial = api.tasks_stats().await?;
    if initial.total != i64::try_from(args.preload)? {
        failures
            .push(format!("after the preload the API counts {} tasks, not {}", initial.total, args.preload));
    }
    let mut phases = PhaseCosts::default();
    let s_start = sample(&cluster)?;

    // --- Connect -------------------------------------------------------------------------
    progress(&format!("connecting {} clients", args.clients));
    let fleet_cfg = FleetConfig {
        urls: cluster.ws_urls(api.token()),
        clients: args.clients,
        concurrency: args.connect_concurrency,
        attempt_timeout: Duration::from_secs(30),
        retries: 2,
        keep_log: true,
    };
    let connect_start = since(base);
    let fleet = Fleet::spawn(&fleet_cfg, base);
    let (ready, failed) = fleet.wait_connected(Duration::from_secs(args.connect_timeout_secs)).await;
    let s_conn = sample(&cluster)?;
    phases.record("connect", &s_start, &s_conn);
    cluster.check_running("the connect phase")?;
    if ready < args.clients {
        failures.push(format!(
            "{} of {} clients never got their snapshot",
            args.clients - ready,
            args.clients
        ));
    }
    progress(&format!("{ready} clients ready, {failed} failed"));

    // --- Idle ----------------------------------------------------------------------------
    if args.idle_secs > 0 {
        progress(&format!("idle for {} s", args.idle_secs));
    }
    sleep(Duration::from_secs(args.idle_secs)).await;
    let s_idle = sample(&cluster)?;
    let idle_cost = phases.record("idle", &s_conn, &s_idle);
    let idle = IdleReport {
        secs: idle_cost.wall_secs,
        server_cpu_secs: idle_cost.server_cpu_secs,
        server_cpu_pct_of_core: idle_cost.server_cpu_pct_of_core,
    };
    cluster.check_running("the idle phase")?;

    // --- Paced mutations -----------------------------------------------------------------
    progress(&format!("{} mutations at {}/s", args.mutations, args.rate));
    let before_mutations = api.tasks_stats().await?.total;
    let metrics_before = cluster_metrics(&api, &cluster).await;
    let s_mut0 = sample(&cluster)?;
    let muts = load::paced_mutations(&api, args.mutations, args.rate, base).await;
    let muts_ok = muts.iter().filter(|m| m.ok()).count();
    if muts_ok < muts.len() {
        let statuses: BTreeMap<u16, usize> =
            muts.iter().filter(|m| !m.ok()).fold(BTreeMap::new(), |mut acc, m| {
                *acc.entry(m.status).or_default() += 1;
                acc
            });
        failures.push(format!(
            "{} of {} mutations failed (status: count {statuses:?})",
            muts.len() - muts_ok,
            muts.len()
        ));
    }
    let after_mutations = before_mutations + i64::try_from(muts_ok)?;
    let settle = Duration::from_secs(args.settle_timeout_secs);
    let with_last = fleet.wait_all_at_least(after_mutations, settle).await;
    let mutations_end_us = since(base);
    let mutation_counters =
        counter_deltas(metrics_before.as_ref(), cluster_metrics(&api, &cluster).await.as_ref());
    let s_mut1 = sample(&cluster)?;
    let mut_cost = phases.record("mutations", &s_mut0, &s_mut1);
    let server_cpu_ms_per_mutation = 1000.0 * mut_cost.server_cpu_secs / muts.len().max(1) as f64;
    cluster.check_running("the mutations")?;

    // --- Burst ---------------------------------------------------------------------------
    let mut burst_data = None;
    let mut expected_total = after_mutations;
    if args.burst > 0 {
        progress(&format!("burst of {} creations, {} in flight", args.burst, args.burst_concurrency));
        let metrics_before = cluster_metrics(&api, &cluster).await;
        let s_b0 = sample(&cluster)?;
        let b = load::burst(&api, args.burst, args.burst_concurrency, base).await;
        if b.failed > 0 {
            failures.push(format!(
                "{} of {} burst creations failed (HTTP status: count, 0 = no response: {:?})",
                b.failed, args.burst, b.failed_statuses
            ));
        }
        expected_total = after_mutations + i64::try_from(b.ok)?;
        let with_final = fleet.wait_all_at_least(expected_total, settle).await;
        let metrics_after = cluster_metrics(&api, &cluster).await;
        let s_b1 = sample(&cluster)?;
        phases.record("burst", &s_b0, &s_b1);
        cluster.check_running("the burst")?;
        let counters = counter_deltas(metrics_before.as_ref(), metrics_after.as_ref());
        burst_data = Some((b, with_final, counters));
    }

    // --- Final check, disconnect -----------------------------------------------------------
    let api_stats = api.tasks_stats().await?;
    progress("closing the clients");
    let s_close0 = sample(&cluster)?;
    let outcomes = fleet.finish(Duration::from_secs(60)).await;
    // Give the server a moment to release the connections before measuring it again.
    sleep(Duration::from_millis(500)).await;
    let s_close1 = sample(&cluster)?;
    phases.record("disconnect", &s_close0, &s_close1);
    cluster.check_running("the disconnect")?;

    // --- Polling -------------------------------------------------------------------------
    let mut polling = None;
    if args.poll_secs > 0 {
        progress(&format!("polling at {}/s for {} s", args.poll_rate, args.poll_secs));
        let s_p0 = sample(&cluster)?;
        let p = load::poll(
            cluster.first().base(),
            api.token(),
            args.poll_rate,
            args.poll_secs as f64,
            args.poll_connections,
        )
        .await?;
        let s_p1 = sample(&cluster)?;
        phases.record("polling", &s_p0, &s_p1);
        cluster.check_running("the polling")?;
        // Per request: only instance 0 answered them; the others' background work is not theirs.
        let cost = PhaseCost::between("polling", &s_p0.each[0], &s_p1.each[0]);
        let cpu_per_req = cost.server_cpu_secs / p.ok.max(1) as f64;
        let req_per_sec = args.clients as f64 / 10.0;
        let mut lat = p.latencies_us.clone();
        polling = Some(PollReport {
            target_rate: args.poll_rate,
            requests: p.requests,
            ok: p.ok,
            achieved_rate: p.requests as f64 / p.wall_secs.max(1e-9),
            latency_ms: Pcts::from_us(&mut lat),
            server_cpu_secs: cost.server_cpu_secs,
            server_cpu_us_per_request: cpu_per_req * 1e6,
            dashboards: args.clients,
            extrapolated_requests_per_sec: req_per_sec,
            extrapolated_cpu_pct_of_core: 100.0 * req_per_sec * cpu_per_req,
        });
        if p.ok < p.requests {
            failures.push(format!("{} of {} poll requests failed", p.requests - p.ok, p.requests));
        }
    }
    let s_end = sample(&cluster)?;
    phases.record("whole run (server up to here)", &s_start, &s_end);
    cluster.stop().await?;
    drop(db);

    // --- Analysis ------------------------------------------------------------------------
    let connect = connect_report(&outcomes, connect_start, &s_start.total, &s_conn.total, args.clients);
    let pair_timeout_us = args.pair_timeout_secs * 1_000_000;
    let (mut latencies, pairs_missing) = pair_latencies(&outcomes, &muts, before_mutations, pair_timeout_us);
    let cross_instance = split_local_remote(&outcomes, n).map(|g| LocalRemote {
        local: group_latency(&g.local, &muts, before_mutations, pair_timeout_us),
        remote: group_latency(&g.remote, &muts, before_mutations, pair_timeout_us),
    });
    let first_send = muts.first().map(|m| m.sent_us).unwrap_or(mutations_end_us);
    let delivered: u64 = outcomes
        .iter()
        .map(|o| o.log.iter().filter(|(t, _)| *t >= first_send && *t <= mutations_end_us).count() as u64)
        .sum();
    let window = (mutations_end_us.saturating_sub(first_send)) as f64 / 1e6;
    let mut http: Vec<u64> = muts.iter().map(|m| m.done_us.saturating_sub(m.sent_us)).collect();
    let last_send = muts.last().map(|m| m.sent_us).unwrap_or(first_send);
    let histogram = if latencies.is_empty() {
        None
    } else {
        latencies.sort_unstable();
        let (p50, p99) = (Pcts::rank(&latencies, 50.0), Pcts::rank(&latencies, 99.0));
        Some(plot::histogram(&out_dir.join(format!("latency-{stem}.png")), &latencies, p50, p99)?)
    };
    let mutations = MutationReport {
        method: "Mutations are sent one at a time (the next waits for the previous response and its slot in \
                 the fixed-rate schedule), so the tasks total right after mutation i is exactly \
                 total_before + (successful mutations up to i). Latency of a (client, mutation) pair = arrival \
                 of the first stats:tasks on that client whose total ≥ that number, minus the time the \
                 request was sent (so it includes the HTTP request and commit); a conflated later value \
                 counts, as it reflects the change. Arrival times are taken by the bench's client tasks, \
                 which share the cores with the server."
            .into(),
        sent: muts.len(),
        ok: muts_ok,
        achieved_rate: if muts.len() > 1 {
            (muts.len() - 1) as f64 / ((last_send - first_send) as f64 / 1e6).max(1e-9)
        } else {
            0.0
        },
        http_ms: Pcts::from_us(&mut http),
        latency_ms: Pcts::from_us(&mut latencies),
        pairs: (outcomes.len() * muts_ok) as u64,
        pairs_missing,
        messages_delivered: delivered,
        messages_per_sec: delivered as f64 / window.max(1e-9),
        delivery_ratio: delivered as f64 / (outcomes.len() * muts_ok).max(1) as f64,
        clients_with_last_value: with_last,
        server_cpu_ms_per_mutation,
        server_counters: mutation_counters,
        histogram,
        cross_instance,
    };
    let burst = burst_data.map(|(b, with_final, counters)| {
        burst_report(&outcomes, n, &b, after_mutations, with_final, counters, args.burst)
    });
    let verify = verify_report(&outcomes, n, api_stats, expected_total);
    if api_stats.total != expected_total {
        failures
            .push(format!("the API counts {} tasks, the bench expected {expected_total}", api_stats.total));
    }
    if verify.clients_mismatched > 0 {
        failures.push(format!(
            "{} clients' last stats:tasks differs from GET /api/v1/tasks/stats",
            verify.clients_mismatched
        ));
    }
    Ok(Report {
        db: kind.name().into(),
        command_line: command_line.to_owned(),
        started_at_unix,
        machine: machine.clone(),
        settings: Settings {
            server_bin: server_bin.display().to_string(),
            instances: n,
            server_env: cfg.env_summary(),
            clients: args.clients,
            connect_concurrency: args.connect_concurrency,
            preload: args.preload,
            rate: args.rate,
            mutations: args.mutations,
            burst: args.burst,
            burst_concurrency: args.burst_concurrency,
            idle_secs: args.idle_secs,
            poll_rate: args.poll_rate,
            poll_secs: args.poll_secs,
            heartbeat_secs: args.heartbeat_secs,
            pair_timeout_secs: args.pair_timeout_secs,
        },
        ok: failures.is_empty(),
        failures,
        preload,
        initial_total: initial.total,
        connect,
        idle,
        mutations,
        burst,
        verify,
        polling,
        phases: phases.total,
        phases_by_instance: phases.per_instance,
    })
}

/// The counters of `GET /metrics` summed over every instance (see [`Api::metrics`]), or None
/// when an instance has no such endpoint.
async fn cluster_metrics(api: &Api, cluster: &Cluster) -> Option<BTreeMap<String, f64>> {
    let each = futures_util::future::join_all(
        cluster.servers().iter().map(|s| async move { api.rebase(s.base()).metrics().await }),
    )
    .await;
    let mut sum = BTreeMap::new();
    for metrics in each {
        for (name, v) in metrics? {
            *sum.entry(name).or_insert(0.0) += v;
        }
    }
    Some(sum)
}

/// The clients of instance 0, which took the mutations (local), and of the others (remote);
/// None with one instance.
fn split_local_remote(
    outcomes: &[ClientOutcome],
    instances: usize,
) -> Option<LocalRemote<Vec<&ClientOutcome>>> {
    if instances < 2 {
        return None;
    }
    let mut groups = LocalRemote::<Vec<&ClientOutcome>>::default();
    for (i, o) in outcomes.iter().enumerate() {
        if clients::instance_of(i, instances) == 0 { &mut groups.local } else { &mut groups.remote }.push(o);
    }
    Some(groups)
}

/// Paced-mutation latency and missing pairs of one group of clients.
fn group_latency(
    clients: &[&ClientOutcome],
    muts: &[load::Mutation],
    before: i64,
    timeout_us: u64,
) -> GroupLatency {
    let (mut latencies, pairs_missing) = pair_latencies(clients.iter().copied(), muts, before, timeout_us);
    GroupLatency {
        clients: clients.len(),
        pairs: (clients.len() * muts.iter().filter(|m| m.ok()).count()) as u64,
        pairs_missing,
        latency_ms: Pcts::from_us(&mut latencies),
    }
}

fn connect_report(
    outcomes: &[ClientOutcome],
    start_us: u64,
    before: &Sample,
    after: &Sample,
    clients: usize,
) -> ConnectReport {
    let ready = outcomes.iter().filter(|o| o.connect_us.is_some()).count();
    let mut per_client: Vec<u64> = outcomes.iter().filter_map(|o| o.connect_us).collect();
    let last_ready = outcomes.iter().filter_map(|o| o.ready_at_us).max().unwrap_or(start_us);
    let mut errors = BTreeMap::new();
    for e in outcomes.iter().flat_map(|o| &o.errors) {
        *errors.entry(e.clone()).or_insert(0) += 1;
    }
    let rss_delta_kib = after.rss_kib as f64 - before.rss_kib as f64;
    ConnectReport {
        clients,
        ready,
        failed: clients - ready,
        total_secs: last_ready.saturating_sub(start_us) as f64 / 1e6,
        per_client_ms: Pcts::from_us(&mut per_client),
        attempts: outcomes.iter().map(|o| u64::from(o.attempts)).sum(),
        errors,
        snapshot_order_violations: outcomes
            .iter()
            .filter(|o| o.connect_us.is_some() && !o.snapshot_order_ok)
            .count(),
        rss_before_mib: before.rss_kib as f64 / 1024.0,
        rss_after_mib: after.rss_kib as f64 / 1024.0,
        rss_per_connection_kib: rss_delta_kib / ready.max(1) as f64,
    }
}

/// The server counters of interest (`GET /metrics`) that changed over a phase.
fn counter_deltas(
    before: Option<&BTreeMap<String, f64>>,
    after: Option<&BTreeMap<String, f64>>,
) -> Option<BTreeMap<String, f64>> {
    const NAMES: [&str; 6] = [
        "pulse_stats_recomputes_total",
        "pulse_stats_recompute_failures_total",
        "pulse_stats_values_published_total",
        "pulse_stats_values_unchanged_total",
        "pulse_ws_messages_sent_total",
        "pulse_ws_messages_conflated_total",
    ];
    let (before, after) = (before?, after?);
    Some(
        NAMES
            .iter()
            .filter_map(|&n| Some((n.to_owned(), after.get(n)? - before.get(n).copied().unwrap_or(0.0))))
            .collect(),
    )
}

/// Latency of every (client, successful mutation) pair, µs, and how many pairs are missing
/// (no value, or later than `timeout_us`).
fn pair_latencies<'a>(
    outcomes: impl IntoIterator<Item = &'a ClientOutcome>,
    muts: &[load::Mutation],
    before: i64,
    timeout_us: u64,
) -> (Vec<u64>, u64) {
    let mut expected = Vec::with_capacity(muts.len());
    let mut total = before;
    for m in muts.iter().filter(|m| m.ok()) {
        total += 1;
        expected.push((m.sent_us, total));
    }
    let mut out = Vec::new();
    let mut missing = 0u64;
    for o in outcomes {
        let mut j = 0;
        for &(sent, target) in &expected {
            while j < o.log.len() && o.log[j].1 < target {
                j += 1;
            }
            match o.log.get(j) {
                Some(&(arrived, _)) if arrived.saturating_sub(sent) <= timeout_us => {
                    out.push(arrived.saturating_sub(sent));
                }
                _ => missing += 1,
            }
        }
    }
    (out, missing)
}

/// For each client that got it: when it first held `target`, µs relative to `last_ok_us`
/// (negative: before the bench saw the last response); and whether every client got it.
fn final_value_arrivals<'a>(
    outcomes: impl IntoIterator<Item = &'a ClientOutcome>,
    target: i64,
    last_ok_us: u64,
) -> (Vec<i64>, bool) {
    let last = i64::try_from(last_ok_us).unwrap_or(i64::MAX);
    let mut per_client = Vec::new();
    let mut all = true;
    for o in outcomes {
        match o.log.iter().find(|(_, total)| *total >= target) {
            Some(&(t, _)) => per_client.push(i64::try_from(t).unwrap_or(i64::MAX) - last),
            None => all = false,
        }
    }
    (per_client, all)
}

fn burst_report(
    outcomes: &[ClientOutcome],
    instances: usize,
    b: &load::Burst,
    before: i64,
    with_final: usize,
    counters: Option<BTreeMap<String, f64>>,
    requested: usize,
) -> BurstReport {
    let target = before + i64::try_from(b.ok).unwrap_or(i64::MAX);
    let (mut per_client, all) = final_value_arrivals(outcomes, target, b.last_ok_us);
    let group = |clients: &[&ClientOutcome]| {
        Pcts::from_signed_us(&mut final_value_arrivals(clients.iter().copied(), target, b.last_ok_us).0)
    };
    let cross_instance = split_local_remote(outcomes, instances)
        .map(|g| LocalRemote { local: group(&g.local), remote: group(&g.remote) });
    let counts: Vec<u64> = outcomes
        .iter()
        .map(|o| o.log.iter().filter(|(_, total)| *total > before && *total <= target).count() as u64)
        .collect();
    let worst = per_client.iter().copied().max();
    let secs = b.last_ok_us.saturating_sub(b.start_us) as f64 / 1e6;
    BurstReport {
        requested,
        ok: b.ok,
        failed: b.failed,
        secs,
        creations_per_sec: b.ok as f64 / secs.max(1e-9),
        last_commit_to_all_clients_ms: if all { worst.map(|w| w as f64 / 1000.0) } else { None },
        per_client_ms: Pcts::from_signed_us(&mut per_client),
        clients_with_final_value: with_final,
        messages_per_client_mean: counts.iter().sum::<u64>() as f64 / counts.len().max(1) as f64,
        messages_per_client_min: counts.iter().copied().min().unwrap_or(0),
        messages_per_client_max: counts.iter().copied().max().unwrap_or(0),
        stats_recomputes: counters
            .as_ref()
            .and_then(|c| c.get("pulse_stats_recomputes_total"))
            .map(|&v| v.max(0.0) as u64),
        failed_statuses: b.failed_statuses.clone(),
        server_counters: counters,
        cross_instance,
    }
}

fn verify_report(
    outcomes: &[ClientOutcome],
    instances: usize,
    api: clients::TasksStats,
    expected_total: i64,
) -> VerifyReport {
    let mut v = VerifyReport { api_stats: Some(api), expected_total, ..Default::default() };
    for (i, o) in outcomes.iter().enumerate() {
        if o.dropped.is_some() {
            v.clients_dropped += 1;
        }
        if o.last_tasks == Some(api) {
            v.clients_matching += 1;
        } else {
            v.clients_mismatched += 1;
            if v.examples.len() < 5 {
                v.examples.push(format!(
                    "client {i} (instance {}): last value {:?}, dropped: {:?}, connect errors: {:?}",
                    clients::instance_of(i, instances),
                    o.last_tasks,
                    o.dropped,
                    o.errors
                ));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(log: Vec<(u64, i64)>) -> ClientOutcome {
        ClientOutcome { log, ..Default::default() }
    }

    fn mutation(sent_us: u64) -> load::Mutation {
        load::Mutation { sent_us, done_us: sent_us + 1, status: 201 }
    }

    #[test]
    fn pairs_use_the_first_value_that_includes_the_mutation() {
        let muts = [mutation(100), mutation(200), mutation(300)];
        // Snapshot 10, then 11, then a conflated 13 (12 skipped).
        let o = outcome(vec![(0, 10), (150, 11), (450, 13)]);
        let (lat, missing) = pair_latencies(&[o], &muts, 10, 1_000);
        assert_eq!(lat, vec![50, 250, 150]);
        assert_eq!(missing, 0);
    }

    #[test]
    fn late_or_absent_values_are_missing() {
        let muts = [mutation(100), mutation(200)];
        let o = outcome(vec![(0, 10), (5_000, 11)]);
        let (lat, missing) = pair_latencies(&[o], &muts, 10, 1_000);
        assert!(lat.is_empty());
        assert_eq!(missing, 2);
    }

    #[test]
    fn clients_split_round_robin_into_local_and_remote() {
        let outcomes: Vec<ClientOutcome> = (0..5).map(|i| outcome(vec![(0, i)])).collect();
        assert!(split_local_remote(&outcomes, 1).is_none());
        let totals = |g: &[&ClientOutcome]| g.iter().map(|o| o.log[0].1).collect::<Vec<_>>();
        let two = split_local_remote(&outcomes, 2).expect("two instances split");
        assert_eq!((totals(&two.local), totals(&two.remote)), (vec![0, 2, 4], vec![1, 3]));
        let three = split_local_remote(&outcomes, 3).expect("three instances split");
        assert_eq!((totals(&three.local), totals(&three.remote)), (vec![0, 3], vec![1, 2, 4]));
    }

    #[test]
    fn group_latency_counts_only_its_clients() {
        let muts = [mutation(100), mutation(200)];
        let local = outcome(vec![(0, 10), (110, 11), (210, 12)]);
        let remote = outcome(vec![(0, 10), (150, 11)]);
        let l = group_latency(&[&local], &muts, 10, 1_000);
        let r = group_latency(&[&remote], &muts, 10, 1_000);
        assert_eq!((l.clients, l.pairs, l.pairs_missing, l.latency_ms.max), (1, 2, 0, 0.01));
        assert_eq!((r.clients, r.pairs, r.pairs_missing, r.latency_ms.max), (1, 2, 1, 0.05));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        let p = Pcts::from_us(&mut v);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
    }
}
