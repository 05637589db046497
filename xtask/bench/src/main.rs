//! `bench`: Pulse's load bench.
//!
//! Starts the release `server` binary on a fresh database, connects thousands of
//! authenticated WebSocket dashboards, drives task creations over HTTP and measures how fast
//! every dashboard sees them, what the server spends (CPU, memory) in each phase, and what the
//! same number of polling dashboards would cost. Writes `target/bench/report-<db>.json`,
//! `summary-<db>.md` and `latency-<db>.png` under the repository root.
//!
//! In the same run it measures the kernel's floor (module [`floor`]) and, when Node and the
//! peer's folder are there, the Node peer (`../shared/peers/node-seed`) under the same clients
//! and changes, and reports both sides, their ratios and issue 15's goals (module [`compare`]).
//! A side's run is a list of phases (modules [`run`] and [`phases`]); the servers, databases and
//! the HTTP client are the suites' harness (`suites`).
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
mod compare;
mod floor;
mod load;
mod md;
mod phases;
mod plot;
mod procstat;
mod report;
mod run;
mod soak;
mod target;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use suites::DbKind;

use crate::compare::{Comparison, Figures, FloorFigures};
use crate::floor::{FloorArgs, FloorReport};
use crate::procstat::Machine;
use crate::report::{Report, Settings, SideReport, file_stem};
use crate::run::{Run, progress};
use crate::soak::SoakArgs;
use crate::target::{PeerSpec, PulseSpec, Target};

/// The bootstrap admin the bench logs in as.
const ADMIN: &str = suites::ADMIN_USERNAME;

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
    /// Connects (TCP + upgrade + snapshot) in flight at once.
    #[arg(long, default_value_t = 200, global = true)]
    connect_concurrency: usize,
    /// Limit for the whole connect phase, s.
    #[arg(long, default_value_t = 300, global = true)]
    connect_timeout_secs: u64,
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
    /// The Node peer's folder, run beside Pulse when it and `node` are there [default:
    /// ../shared/peers/node-seed beside the repository].
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Do not run the Node peer.
    #[arg(long)]
    no_peer: bool,
    /// Rounds of the kernel's floor measured before the servers start (0: skip); as many
    /// sockets as clients, at most half the open-file limit. The floor is then also paced
    /// like the change phase (`--rate`, `--mutations` rounds) at the fleet's size and the
    /// second fleet's.
    #[arg(long, default_value_t = 30)]
    floor_rounds: usize,
    /// The phases' settings.
    #[command(flatten)]
    load: phases::LoadArgs,
}

impl Args {
    fn validate(&self, nofile: u64) -> Result<()> {
        if !(1..=16).contains(&self.instances) {
            bail!("--instances must be within 1..=16");
        }
        if self.instances > 1 && self.db != DbChoice::Postgres {
            bail!(
                "--instances {} needs --db postgres: SQLite is single-instance (a second server on the \
                 same file refuses to start); run --db sqlite and --db postgres --instances {} separately",
                self.instances,
                self.instances
            );
        }
        if self.instances > self.load.clients {
            bail!(
                "--instances {} is more than --clients {}: an instance would have no client",
                self.instances,
                self.load.clients
            );
        }
        if !(1..=10_000).contains(&self.connect_concurrency) {
            bail!("--connect-concurrency must be within 1..=10000");
        }
        if self.floor_rounds > 10_000 {
            bail!("--floor-rounds must be within 0..=10000");
        }
        self.load.validate(nofile)
    }
}

fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
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
    let ctx = Context {
        machine: Machine::detect(nofile_pair, tck),
        tck,
        nofile,
        root,
        out_dir,
        server_bin,
        command_line,
        started_at_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    };
    match &args.mode {
        Some(Mode::Floor(floor)) => match floor::run(floor, tck, &ctx.out_dir).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench floor: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some(Mode::Soak(soak)) => soak_main(&args, soak, &ctx).await,
        None => load_main(&args, &ctx).await,
    }
}

/// What every run of one invocation shares.
struct Context {
    machine: Machine,
    tck: u64,
    nofile: u64,
    root: PathBuf,
    out_dir: PathBuf,
    server_bin: PathBuf,
    command_line: String,
    started_at_unix: u64,
}

fn kinds(choice: DbChoice) -> Vec<DbKind> {
    match choice {
        DbChoice::Sqlite => vec![DbKind::Sqlite],
        DbChoice::Postgres => vec![DbKind::Postgres],
        DbChoice::Both => vec![DbKind::Sqlite, DbKind::Postgres],
    }
}

/// The load bench: the floor, the peer (once), then Pulse on each database, each report
/// written as soon as its database is done. Exit 1 when a Pulse run found a failure, 2 on an
/// error.
async fn load_main(args: &Args, ctx: &Context) -> ExitCode {
    let floor = match guarded(args.max_run_secs, measure_floor(args, ctx)).await {
        Ok(floor) => floor,
        Err(Stop::Interrupted) => return ExitCode::from(2),
        Err(Stop::Failed(e)) => {
            eprintln!("bench: the floor: error: {e:#} (the report goes on without it)");
            None
        }
    };
    let peer = match peer_spec(args, ctx) {
        Ok(spec) => {
            println!(
                "bench: the Node peer — {} clients, node {} in {}",
                args.load.clients,
                spec.node.display(),
                spec.dir.display()
            );
            match guarded(args.max_run_secs, run_peer(args, ctx, &spec)).await {
                Ok(side) => Some((side, format!("node src/server.js in {}", spec.dir.display()))),
                Err(Stop::Interrupted) => return ExitCode::from(2),
                Err(Stop::Failed(e)) => {
                    eprintln!("bench: the Node peer: error: {e:#} (the report goes on without it)");
                    None
                }
            }
        }
        Err(why) => {
            println!("bench: the Node peer is skipped: {why}");
            None
        }
    };
    let mut code = 0;
    for kind in kinds(args.db) {
        println!(
            "bench: {} — {} clients on {} server instance(s), server {}",
            kind.name(),
            args.load.clients,
            args.instances,
            ctx.server_bin.display()
        );
        let name = file_stem(kind.name(), args.instances);
        let files = Written {
            json: ctx.out_dir.join(format!("report-{name}.json")),
            md: ctx.out_dir.join(format!("summary-{name}.md")),
            shown: format!("{}/{{report,summary,latency}}-{name}.*", ctx.out_dir.display()),
        };
        let report = async {
            let (pulse, figures) = run_pulse(args, ctx, kind).await?;
            Ok(load_report(args, ctx, kind, pulse, figures, floor.as_ref(), peer.as_ref()))
        };
        code = code.max(finish_run("bench", &name, &files, args.max_run_secs, report).await);
    }
    ExitCode::from(code)
}

/// The floor with as many sockets as clients (at most what the open-file limit allows: both
/// ends are in this process), before any server runs.
async fn measure_floor(args: &Args, ctx: &Context) -> Result<Option<FloorReport>> {
    if args.floor_rounds == 0 {
        return Ok(None);
    }
    let sockets =
        args.load.clients.min(usize::try_from(ctx.nofile.saturating_sub(64) / 2).unwrap_or(usize::MAX));
    progress(&format!("the kernel's floor: {sockets} loopback sockets, {} rounds", args.floor_rounds));
    let load = &args.load;
    // The second fleet runs only when smaller than the first (phases::second_fleet).
    let second = Some(load.second_fleet).filter(|s| *s > 0 && *s < load.clients);
    let paced_sockets: Vec<usize> =
        std::iter::once(load.clients).chain(second).map(|s| s.min(sockets)).collect();
    let floor_args = FloorArgs {
        sockets,
        rounds: args.floor_rounds,
        writers: 2,
        pause_ms: 100,
        paced_rate: load.rate,
        paced_rounds: load.mutations.min(floor::MAX_PACED_ROUNDS),
        paced_sockets,
    };
    let report = floor::measure(&floor_args, ctx.tck).await?;
    println!("bench: {}", report.line());
    Ok(Some(report))
}

/// Pulse on a fresh database of `kind`: every phase.
async fn run_pulse(args: &Args, ctx: &Context, kind: DbKind) -> Result<(SideReport, Figures)> {
    let stem = file_stem(kind.name(), args.instances);
    let spec = pulse_spec(args, ctx, &stem);
    let target = Target::pulse(&spec, target::fresh_database(kind, &args.pg_admin_url)?).await?;
    let run = Run::new(args, target, ctx.tck, ctx.out_dir.clone(), stem);
    Ok(SideReport::new(run.run(phases::PULSE).await?))
}

fn pulse_spec(args: &Args, ctx: &Context, stem: &str) -> PulseSpec {
    PulseSpec {
        bin: ctx.server_bin.clone(),
        instances: args.instances,
        clients: args.load.clients,
        heartbeat_secs: args.heartbeat_secs,
        workers: args.workers,
        log_path: ctx.out_dir.join(format!("server-{stem}.log")),
    }
}

/// The Node peer on a fresh PostgreSQL database: the same clients and changes.
async fn run_peer(args: &Args, ctx: &Context, spec: &PeerSpec) -> Result<(SideReport, Figures)> {
    let target = Target::peer(spec, target::fresh_database(DbKind::Postgres, &args.pg_admin_url)?).await?;
    let run = Run::new(args, target, ctx.tck, ctx.out_dir.clone(), "peer".to_owned());
    let (side, figures) = SideReport::new(run.run(phases::PEER).await?);
    for f in &side.failures {
        eprintln!("bench: the Node peer: {f}");
    }
    Ok((side, figures))
}

/// Where the peer is and how to run it, or why it does not run.
fn peer_spec(args: &Args, ctx: &Context) -> Result<PeerSpec, String> {
    if args.no_peer {
        return Err("--no-peer".into());
    }
    let dir = args.peer.clone().unwrap_or_else(|| ctx.root.join("../shared/peers/node-seed"));
    let dir = dir.canonicalize().unwrap_or(dir);
    if !dir.join("src/server.js").is_file() {
        return Err(format!("no {}", dir.join("src/server.js").display()));
    }
    let node = target::find_node().ok_or("no `node` on PATH")?;
    if !dir.join("node_modules").is_dir() {
        return Err(format!(
            "{}/node_modules is missing: `cd {} && npm ci --omit=dev` installs it",
            dir.display(),
            dir.display()
        ));
    }
    Ok(PeerSpec { node, dir, log_path: ctx.out_dir.join("server-peer.log") })
}

fn load_report(
    args: &Args,
    ctx: &Context,
    kind: DbKind,
    pulse: SideReport,
    figures: Figures,
    floor: Option<&FloorReport>,
    peer: Option<&((SideReport, Figures), String)>,
) -> Report {
    let spec = pulse_spec(args, ctx, "");
    let comparison = Comparison::new(
        figures,
        peer.map(|((_, f), _)| f.clone()),
        floor.map(FloorFigures::from),
        args.load.rate,
    );
    Report {
        db: kind.name().into(),
        command_line: ctx.command_line.clone(),
        started_at_unix: ctx.started_at_unix,
        machine: ctx.machine.clone(),
        settings: Settings {
            server_bin: ctx.server_bin.display().to_string(),
            instances: args.instances,
            server_env: spec.env_summary(),
            connect_concurrency: args.connect_concurrency,
            heartbeat_secs: args.heartbeat_secs,
            load: args.load.clone(),
            peer: peer.map(|(_, how)| how.clone()),
        },
        pulse,
        floor: floor.cloned(),
        peer: peer.map(|((side, _), _)| side.clone()),
        comparison,
    }
}

/// `bench soak`: each database in turn; exit 1 when a run found a failure, 2 on an error.
async fn soak_main(args: &Args, soak: &SoakArgs, ctx: &Context) -> ExitCode {
    let mut code = 0;
    for kind in kinds(soak.db) {
        println!(
            "bench soak: {} — {} clients, {} s at {}/s, server {}",
            kind.name(),
            soak.clients,
            soak.secs,
            soak.rate,
            ctx.server_bin.display()
        );
        let name = kind.name();
        let files = Written {
            json: ctx.out_dir.join(format!("soak-{name}.json")),
            md: ctx.out_dir.join(format!("soak-{name}.md")),
            shown: format!("{}/soak-{name}.{{json,md}}", ctx.out_dir.display()),
        };
        let spec = PulseSpec {
            bin: ctx.server_bin.clone(),
            instances: 1,
            clients: soak.clients,
            heartbeat_secs: args.heartbeat_secs,
            workers: args.workers,
            log_path: ctx.out_dir.join(format!("soak-server-{name}.log")),
        };
        let header = soak::Header {
            db: name.to_owned(),
            command_line: ctx.command_line.clone(),
            machine: ctx.machine.clone(),
            server_bin: ctx.server_bin.display().to_string(),
        };
        let run = soak::run_db(args, soak, kind, &spec, header, ctx.tck);
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
        Report::failures(self)
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

/// Why a guarded run stopped.
enum Stop {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// An error, or `--max-run-secs` exceeded.
    Failed(anyhow::Error),
}

/// Runs `run` within `max_run_secs` and until SIGINT/SIGTERM; dropping the run on either kills
/// its servers and drops its database, whatever happened.
async fn guarded<T>(max_run_secs: u64, run: impl Future<Output = Result<T>>) -> Result<T, Stop> {
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(max_run_secs), run) => match r {
            Ok(r) => r.map_err(Stop::Failed),
            Err(_) => Err(Stop::Failed(anyhow!("the run exceeded --max-run-secs {max_run_secs}"))),
        },
        _ = interrupted() => {
            eprintln!("bench: interrupted");
            Err(Stop::Interrupted)
        }
    }
}

/// Runs one database's run (see [`guarded`]), prints and writes its report. Exit code: 0
/// passed, 1 the run found a failure, 2 an error.
async fn finish_run<R: RunReport>(
    mode: &str,
    name: &str,
    files: &Written,
    max_run_secs: u64,
    run: impl Future<Output = Result<R>>,
) -> u8 {
    let report = match guarded(max_run_secs, run).await {
        Ok(report) => report,
        Err(Stop::Interrupted) => return 2,
        Err(Stop::Failed(e)) => {
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
