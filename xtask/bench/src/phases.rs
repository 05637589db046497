//! The load bench's phases, each a function of the [`Run`] returning its section of the
//! report (data and markdown from that data), and the lists that make a side's run. Adding a
//! phase: a function and its data here, and its place in [`PULSE`] (and [`PEER`]).
//!
//! Changes when what a phase measures changes; never depends on how a side is started.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio::time::{Instant, sleep};

use crate::clients::{self, ClientOutcome, Fleet, FleetConfig, TasksStats};
use crate::compare::SecondFleet;
use crate::load::{self, Mutation};
use crate::md::{Doc, opt};
use crate::plot::{self, HistogramInfo};
use crate::procstat::PhaseCost;
use crate::report::{GroupLatency, LocalRemote, Pcts, group_label, summed};
use crate::run::{Phase, Run, Section, progress};

/// The phases' settings (flags of the load bench, and the report's settings).
#[derive(Debug, Clone, clap::Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadArgs {
    /// WebSocket clients (all with one token from one login).
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Tasks created before the clients connect (API up to 20,000, a direct SQL insert above).
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
    /// Paced mutations per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Paced mutations (task creations, one at a time).
    #[arg(long, default_value_t = 200)]
    pub mutations: usize,
    /// Burst: task creations as fast as the API takes them (0: skip).
    #[arg(long, default_value_t = 2_000)]
    pub burst: usize,
    /// Burst requests in flight.
    #[arg(long, default_value_t = 64)]
    pub burst_concurrency: usize,
    /// Idle measurement with every client connected and no change, s.
    #[arg(long, default_value_t = 30)]
    pub idle_secs: u64,
    /// Poller request rate, requests/s.
    #[arg(long, default_value_t = 200.0)]
    pub poll_rate: f64,
    /// Poller duration, s (0: skip).
    #[arg(long, default_value_t = 10)]
    pub poll_secs: u64,
    /// Poller keep-alive connections.
    #[arg(long, default_value_t = 16)]
    pub poll_connections: usize,
    /// A (client, mutation) pair not delivered within this counts as missing, s.
    #[arg(long, default_value_t = 10)]
    pub pair_timeout_secs: u64,
    /// After the final check, a second fleet of this many clients connects and the paced
    /// mutations run again (issue 15's p99 at 5,000 clients in the same run as 10,000); 0, or
    /// not fewer than --clients, skips it.
    #[arg(long, default_value_t = 5_000)]
    pub second_fleet: usize,
}

impl LoadArgs {
    /// Checks the bounds; `nofile` is the open-file limit.
    pub fn validate(&self, nofile: u64) -> Result<()> {
        let bounded = |name: &str, v: f64, lo: f64, hi: f64| -> Result<()> {
            if !(lo..=hi).contains(&v) {
                anyhow::bail!("--{name} must be within {lo}..={hi}");
            }
            Ok(())
        };
        bounded("clients", self.clients as f64, 1.0, 100_000.0)?;
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
        bounded("second-fleet", self.second_fleet as f64, 0.0, 100_000.0)?;
        // The server and the bench each hold one descriptor per client, plus some.
        let needed = self.clients as u64 + self.poll_connections as u64 + self.burst_concurrency as u64 + 200;
        if needed > nofile {
            anyhow::bail!(
                "--clients {} needs about {needed} open files per process, the limit is {nofile} \
                 (raise the hard limit, or use fewer clients)",
                self.clients
            );
        }
        Ok(())
    }
}

/// Above this, `--preload` inserts directly into the database instead of going through the API.
pub const API_PRELOAD_MAX: u64 = 20_000;

/// Pulse's run: every phase.
pub const PULSE: &[Phase] = &[PRELOAD, CONNECT, IDLE, MUTATIONS, BURST, VERIFY, SECOND_FLEET, POLLING];
/// The peer's run: the same clients and changes; no burst (it has no conflation: every change
/// goes to every client) and no polling (it serves only the tasks stats).
pub const PEER: &[Phase] = &[PRELOAD, CONNECT, IDLE, MUTATIONS, VERIFY, SECOND_FLEET];

const PRELOAD: Phase = Phase { name: "preload", run: |r| Box::pin(preload(r)) };
const CONNECT: Phase = Phase { name: "connect", run: |r| Box::pin(connect(r)) };
const IDLE: Phase = Phase { name: "idle", run: |r| Box::pin(idle(r)) };
const MUTATIONS: Phase = Phase { name: "mutations", run: |r| Box::pin(mutations(r)) };
const BURST: Phase = Phase { name: "burst", run: |r| Box::pin(burst(r)) };
const VERIFY: Phase = Phase { name: "final check", run: |r| Box::pin(verify(r)) };
const SECOND_FLEET: Phase = Phase { name: "second fleet", run: |r| Box::pin(second_fleet(r)) };
const POLLING: Phase = Phase { name: "polling", run: |r| Box::pin(polling(r)) };

// --- Preload -------------------------------------------------------------------------------

/// Preload.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreloadReport {
    /// Tasks.
    pub tasks: u64,
    /// `none`, `api` or `sql` (direct insert, server stopped).
    pub method: String,
    /// Wall-clock seconds (including the restart for `sql`).
    pub secs: f64,
}

/// Up to [`API_PRELOAD_MAX`] tasks through the API (64 in flight), above that a direct insert;
/// then the tasks total every later phase counts from.
async fn preload(run: &mut Run) -> Result<Section> {
    let n = run.args.load.preload;
    let t = Instant::now();
    let method = if n == 0 {
        "none"
    } else if n <= API_PRELOAD_MAX {
        progress(&format!("preloading {n} tasks through the API"));
        load::preload_api(run.target.api(), n, 64).await?;
        "api"
    } else {
        progress(&format!("preloading {n} tasks with a direct insert"));
        run.target.bulk_insert_tasks(n).await?;
        "sql"
    };
    let report = PreloadReport { tasks: n, method: method.into(), secs: t.elapsed().as_secs_f64() };
    let initial = load::tasks_stats(run.target.api()).await?;
    if initial.total != i64::try_from(n)? {
        run.failures.push(format!("after the preload the API counts {} tasks, not {n}", initial.total));
    }
    run.initial_total = initial.total;
    run.expected_total = initial.total;
    let mut doc = Doc::new();
    if n > 0 {
        doc.para(format!("Preload: {n} tasks ({method}, {:.1} s).", report.secs));
    }
    Ok(Section::new("preload", &report, doc))
}

// --- Connect -------------------------------------------------------------------------------

/// Connect phase.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectReport {
    /// Clients started.
    pub clients: usize,
    /// Clients with their snapshot.
    pub ready: usize,
    /// Clients that never got it.
    pub failed: usize,
    /// From the first connect to the last complete snapshot, s.
    pub total_secs: f64,
    /// Per client: connect + upgrade + snapshot, ms.
    pub per_client_ms: Pcts,
    /// Connection attempts (more than `clients` when some were retried).
    pub attempts: u64,
    /// Failed attempts by reason.
    pub errors: BTreeMap<String, u64>,
    /// Snapshots not in the order connected, stats:tasks, stats:approvals, stats:conversations.
    pub snapshot_order_violations: usize,
    /// Server VmRSS before the clients connected, MiB.
    pub rss_before_mib: f64,
    /// Server VmRSS with every client connected, MiB.
    pub rss_after_mib: f64,
    /// (after - before) / ready, KiB.
    pub rss_per_connection_kib: f64,
}

/// Every client opens its socket with the one token, `--connect-concurrency` at a time, and
/// is ready with `connected` and the three stats.
async fn connect(run: &mut Run) -> Result<Section> {
    let clients = run.args.load.clients;
    let report = open_fleet(run, clients, "connect").await?;
    let f = &mut run.figures;
    f.clients = clients;
    f.clients_ready = report.ready;
    f.connect_secs = report.total_secs;
    f.connect_p99_ms = report.per_client_ms.p99;
    f.rss_per_connection_kib = report.rss_per_connection_kib;
    run.rss_without_clients_mib = Some(report.rss_before_mib);
    let mut doc = Doc::new();
    doc.heading(2, "Connect");
    connect_markdown(&report, run.target.instances(), &mut doc);
    Ok(Section::new("connect", &report, doc))
}

/// Connects `clients` clients as phase `name` (the fleet stays in the run).
async fn open_fleet(run: &mut Run, clients: usize, name: &str) -> Result<ConnectReport> {
    progress(&format!("connecting {clients} clients"));
    let cfg = FleetConfig {
        urls: run.target.ws_urls(),
        clients,
        concurrency: run.args.connect_concurrency,
        attempt_timeout: Duration::from_secs(30),
        retries: 2,
        keep_log: true,
        require_seq: !run.target.is_peer(),
    };
    let start = run.begin()?;
    let connect_start = run.now_us();
    let fleet = Fleet::spawn(&cfg, run.base);
    let (ready, failed) = fleet.wait_connected(Duration::from_secs(run.args.connect_timeout_secs)).await;
    let outcomes = fleet.seen_since(u64::MAX);
    run.fleet = Some(fleet);
    let m = run.end(name, start)?;
    if ready < clients {
        run.failures
            .push(format!("{name}: {} of {clients} clients never got their snapshot", clients - ready));
    }
    progress(&format!("{ready} clients ready, {failed} failed"));
    Ok(connect_report(&outcomes, connect_start, &m.cost, clients))
}

fn connect_markdown(c: &ConnectReport, instances: usize, doc: &mut Doc) {
    doc.para(format!(
        "{} of {} clients got their snapshot ({} failed, {} attempts) in **{:.2} s** total; snapshot order \
         violations: {}.",
        c.ready, c.clients, c.failed, c.attempts, c.total_secs, c.snapshot_order_violations
    ));
    let mut t = Pcts::table("per client (ms)");
    c.per_client_ms.row(&mut t, "connect + snapshot");
    doc.table(&t).bullets(c.errors.iter().map(|(e, n)| format!("failed attempts: {n} × {e}"))).para(format!(
        "Server RSS{} {:.1} MiB → {:.1} MiB with the clients: **{:.1} KiB per connection**.",
        summed(instances),
        c.rss_before_mib,
        c.rss_after_mib,
        c.rss_per_connection_kib
    ));
}

fn connect_report(
    outcomes: &[ClientOutcome],
    start_us: u64,
    cost: &PhaseCost,
    clients: usize,
) -> ConnectReport {
    let ready = outcomes.iter().filter(|o| o.connect_us.is_some()).count();
    let mut per_client: Vec<u64> = outcomes.iter().filter_map(|o| o.connect_us).collect();
    let last_ready = outcomes.iter().filter_map(|o| o.ready_at_us).max().unwrap_or(start_us);
    let mut errors = BTreeMap::new();
    for e in outcomes.iter().flat_map(|o| &o.errors) {
        *errors.entry(e.clone()).or_insert(0) += 1;
    }
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
        rss_before_mib: cost.rss_start_mib,
        rss_after_mib: cost.rss_end_mib,
        rss_per_connection_kib: (cost.rss_end_mib - cost.rss_start_mib) * 1024.0 / ready.max(1) as f64,
    }
}

// --- Idle ----------------------------------------------------------------------------------

/// Idle phase.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleReport {
    /// Seconds measured.
    pub secs: f64,
    /// Server CPU seconds.
    pub server_cpu_secs: f64,
    /// As % of one core.
    pub server_cpu_pct_of_core: f64,
    /// Server VmRSS at the end, MiB.
    pub rss_end_mib: f64,
    /// (RSS at the end − RSS before the clients connected) / clients, KiB: what an idle
    /// connection holds once the heartbeats have run, not only right after its snapshot.
    pub rss_per_connection_kib: Option<f64>,
}

/// Every client connected, no change: what the heartbeats and the idle sessions cost.
async fn idle(run: &mut Run) -> Result<Section> {
    let secs = run.args.load.idle_secs;
    if secs > 0 {
        progress(&format!("idle for {secs} s"));
    }
    let start = run.begin()?;
    sleep(Duration::from_secs(secs)).await;
    let cost = run.end("idle", start)?.cost;
    let ready = run.figures.clients_ready;
    let report = IdleReport {
        secs: cost.wall_secs,
        server_cpu_secs: cost.server_cpu_secs,
        server_cpu_pct_of_core: cost.server_cpu_pct_of_core,
        rss_end_mib: cost.rss_end_mib,
        rss_per_connection_kib: run
            .rss_without_clients_mib
            .filter(|_| secs > 0 && ready > 0)
            .map(|before| (cost.rss_end_mib - before) * 1024.0 / ready as f64),
    };
    run.figures.idle_cpu_pct_of_core = report.server_cpu_pct_of_core;
    // Steady idle memory only once every connection has been through a heartbeat (the peer's
    // interval is its own: its figure is information, not a goal).
    let covered_heartbeat = run.target.is_peer() || secs > run.args.heartbeat_secs;
    run.figures.rss_per_connection_after_idle_kib =
        report.rss_per_connection_kib.filter(|_| covered_heartbeat);
    let mut doc = Doc::new();
    doc.heading(2, format!("Idle ({ready} clients, no changes, heartbeats included)")).para(format!(
        "{:.3} CPU s over {:.1} s = **{:.2} % of one core**.",
        report.server_cpu_secs, report.secs, report.server_cpu_pct_of_core
    ));
    if let Some(kib) = report.rss_per_connection_kib {
        let heartbeats = if run.target.is_peer() {
            "the peer's own heartbeat"
        } else if covered_heartbeat {
            "after a heartbeat round: every connection read a pong"
        } else {
            "before the first heartbeat: --idle-secs is not above --heartbeat-secs"
        };
        doc.para(format!(
            "Server RSS at the end {:.1} MiB: **{kib:.1} KiB per connection** once idle for {:.0} s ({heartbeats}).",
            report.rss_end_mib, report.secs
        ));
    }
    Ok(Section::new("idle", &report, doc))
}

// --- Paced mutations -----------------------------------------------------------------------

/// Paced mutations.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MutationReport {
    /// How latency is measured.
    pub method: String,
    /// Mutations sent.
    pub sent: usize,
    /// 201 responses.
    pub ok: usize,
    /// Achieved rate, /s.
    pub achieved_rate: f64,
    /// HTTP response time of the mutations, ms.
    pub http_ms: Pcts,
    /// Send → client holds a value including it, ms, over every (client, mutation) pair.
    pub latency_ms: Pcts,
    /// clients × successful mutations.
    pub pairs: u64,
    /// Pairs without a value within the pair timeout.
    pub pairs_missing: u64,
    /// stats:tasks messages received by all clients from the first send until all had the last value.
    pub messages_delivered: u64,
    /// messages_delivered / that time.
    pub messages_per_sec: f64,
    /// messages_delivered / (clients × mutations): below 1 when values were conflated.
    pub delivery_ratio: f64,
    /// Clients holding the last value when the bench stopped waiting.
    pub clients_with_last_value: usize,
    /// Server CPU seconds per mutation (the push to every client included).
    pub server_cpu_ms_per_mutation: f64,
    /// Server CPU over the phase, s.
    pub server_cpu_secs: f64,
    /// Server CPU over the phase / messages_delivered, µs.
    pub server_cpu_us_per_delivered_message: Option<f64>,
    /// Server CPU over the phase / (clients × successful mutations), µs.
    pub server_cpu_us_per_change_and_client: Option<f64>,
    /// Clients connected.
    pub clients: usize,
    /// Changes of the server's own counters over the phase, when `GET /metrics` exists.
    pub server_counters: Option<BTreeMap<String, f64>>,
    /// The PNG's layout.
    pub histogram: Option<HistogramInfo>,
    /// Latency and missing pairs of local and remote clients (several instances only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_instance: Option<LocalRemote<GroupLatency>>,
}

const LATENCY_METHOD: &str = "Mutations are sent one at a time (the next waits for the previous response and its \
     slot in the fixed-rate schedule), so the tasks total right after mutation i is exactly total_before + \
     (successful mutations up to i). Latency of a (client, mutation) pair = arrival of the first stats:tasks on \
     that client whose total ≥ that number, minus the time the request was sent (so it includes the HTTP request \
     and commit); a conflated later value counts, as it reflects the change. The mutations are sent from a \
     thread and runtime of their own, so a send is not delayed behind the clients' reads; arrival times are \
     taken by the bench's client tasks, which share the cores with the server (their queueing is in the \
     latency).";

/// `--mutations` task creations at `--rate`, one at a time; then the latency of every
/// (client, mutation) pair and what the server spent per mutation and per delivered message.
async fn mutations(run: &mut Run) -> Result<Section> {
    let report = paced(run, "mutations", true).await?;
    let f = &mut run.figures;
    f.changes = report.ok;
    f.achieved_rate = report.achieved_rate;
    f.change_phase_cpu_secs = report.server_cpu_secs;
    f.messages_delivered = report.messages_delivered;
    f.cpu_us_per_delivered_message = report.server_cpu_us_per_delivered_message;
    f.cpu_us_per_change_and_client = report.server_cpu_us_per_change_and_client;
    f.latency_p50_ms = report.latency_ms.p50;
    f.latency_p99_ms = report.latency_ms.p99;
    f.pairs_missing = report.pairs_missing;
    let mut doc = Doc::new();
    doc.heading(2, "Paced mutations").para(&report.method);
    mutations_markdown(&report, run, &mut doc);
    Ok(Section::new("mutations", &report, doc))
}

/// The paced mutations as phase `name` against the fleet in the run; the histogram when
/// `histogram`.
async fn paced(run: &mut Run, name: &str, histogram: bool) -> Result<MutationReport> {
    let (n, rate) = (run.args.load.mutations, run.args.load.rate);
    progress(&format!("{n} mutations at {rate}/s"));
    let api = run.target.api().clone();
    let before = load::tasks_stats(&api).await?.total;
    let metrics_before = run.target.metrics().await;
    let start = run.begin()?;
    let muts = load::paced_mutations_apart(&api, n, rate, run.base).await?;
    let ok = muts.iter().filter(|m| m.ok()).count();
    if ok < muts.len() {
        let mut statuses = BTreeMap::<u16, usize>::new();
        for m in muts.iter().filter(|m| !m.ok()) {
            *statuses.entry(m.status).or_default() += 1;
        }
        run.failures.push(format!(
            "{name}: {} of {} mutations failed (status: count {statuses:?})",
            muts.len() - ok,
            muts.len()
        ));
    }
    let after = before + i64::try_from(ok)?;
    let settle = Duration::from_secs(run.args.settle_timeout_secs);
    let with_last = run.fleet()?.wait_all_at_least(after, settle).await;
    let end_us = run.now_us();
    let counters = counter_deltas(metrics_before.as_ref(), run.target.metrics().await.as_ref());
    let cost = run.end(name, start)?.cost;
    run.expected_total = after;

    let first_send = muts.first().map_or(end_us, |m| m.sent_us);
    let seen = run.fleet()?.seen_since(first_send);
    let instances = run.target.instances();
    let timeout_us = run.args.load.pair_timeout_secs * 1_000_000;
    let (mut latencies, pairs_missing) = pair_latencies(&seen, &muts, before, timeout_us);
    let cross_instance = split_local_remote(&seen, instances).map(|g| LocalRemote {
        local: group_latency(&g.local, &muts, before, timeout_us),
        remote: group_latency(&g.remote, &muts, before, timeout_us),
    });
    let delivered: u64 = seen.iter().map(|o| o.log.iter().filter(|(t, _)| *t <= end_us).count() as u64).sum();
    let window = end_us.saturating_sub(first_send) as f64 / 1e6;
    let mut http: Vec<u64> = muts.iter().map(|m| m.done_us.saturating_sub(m.sent_us)).collect();
    let last_send = muts.last().map_or(first_send, |m| m.sent_us);
    let histogram = if latencies.is_empty() || !histogram {
        None
    } else {
        latencies.sort_unstable();
        let (p50, p99) = (Pcts::rank(&latencies, 50.0), Pcts::rank(&latencies, 99.0));
        Some(plot::histogram(&run.out_dir.join(format!("latency-{}.png", run.stem)), &latencies, p50, p99)?)
    };
    let clients = seen.len();
    let per_message = (delivered > 0).then(|| 1e6 * cost.server_cpu_secs / delivered as f64);
    let report = MutationReport {
        method: LATENCY_METHOD.into(),
        sent: muts.len(),
        ok,
        achieved_rate: if muts.len() > 1 {
            (muts.len() - 1) as f64 / ((last_send - first_send) as f64 / 1e6).max(1e-9)
        } else {
            0.0
        },
        http_ms: Pcts::from_us(&mut http),
        latency_ms: Pcts::from_us(&mut latencies),
        pairs: (clients * ok) as u64,
        pairs_missing,
        messages_delivered: delivered,
        messages_per_sec: delivered as f64 / window.max(1e-9),
        delivery_ratio: delivered as f64 / (clients * ok).max(1) as f64,
        clients_with_last_value: with_last,
        server_cpu_ms_per_mutation: 1000.0 * cost.server_cpu_secs / muts.len().max(1) as f64,
        server_cpu_secs: cost.server_cpu_secs,
        server_cpu_us_per_delivered_message: per_message,
        server_cpu_us_per_change_and_client: (ok * clients > 0)
            .then(|| 1e6 * cost.server_cpu_secs / (ok * clients) as f64),
        clients,
        server_counters: counters,
        histogram,
        cross_instance,
    };
    Ok(report)
}

fn mutations_markdown(mu: &MutationReport, run: &Run, doc: &mut Doc) {
    let instances = run.target.instances();
    doc.para(format!(
        "{} of {} mutations succeeded at {:.1}/s achieved; {} (client, mutation) pairs, **{} not delivered** \
         within the pair timeout; {} of {} clients hold the last value.",
        mu.ok, mu.sent, mu.achieved_rate, mu.pairs, mu.pairs_missing, mu.clients_with_last_value, mu.clients
    ));
    let mut t = Pcts::table("ms");
    mu.latency_ms.row(&mut t, "send → client has value");
    if let Some(x) = &mu.cross_instance {
        x.local.latency_ms.row(&mut t, format!("… {}", group_label("local", instances)));
        x.remote.latency_ms.row(&mut t, format!("… {}", group_label("remote", instances)));
    }
    mu.http_ms.row(&mut t, "HTTP response (POST /api/v1/tasks)");
    doc.table(&t).para(format!(
        "Messages delivered: {} stats:tasks ({:.0} per second; {:.3} of clients × mutations). Server CPU per \
         mutation (push to every client included): {:.2} ms; per delivered message: {} µs. {}",
        mu.messages_delivered,
        mu.messages_per_sec,
        mu.delivery_ratio,
        mu.server_cpu_ms_per_mutation,
        opt(mu.server_cpu_us_per_delivered_message, 2, ""),
        counters_line(mu.server_counters.as_ref())
    ));
    if let Some(x) = &mu.cross_instance {
        doc.para(format!(
            "Cross-instance: remote clients got a change **{:+.1} ms** later than local ones at p50 ({:+.1} ms at \
             p99); pairs not delivered: local {} of {} ({} clients), remote {} of {} ({} clients).",
            x.remote.latency_ms.p50 - x.local.latency_ms.p50,
            x.remote.latency_ms.p99 - x.local.latency_ms.p99,
            x.local.pairs_missing,
            x.local.pairs,
            x.local.clients,
            x.remote.pairs_missing,
            x.remote.pairs,
            x.remote.clients
        ));
    }
    if let Some(h) = &mu.histogram {
        doc.para(format!(
            "Histogram `latency-{}.png` (all clients): x = send → client latency, 0 to {} ms in {} bins of {:.3} ms, \
             red bar on the right = {} pairs above {} ms; y = pairs per bin (tallest bar {}); dashed green = p50, \
             dashed orange = p99.",
            run.stem, h.x_max_ms, h.bins, h.bin_ms, h.overflow, h.x_max_ms, h.max_count
        ));
    }
}

// --- Burst ---------------------------------------------------------------------------------

/// Burst.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BurstReport {
    /// Creations sent.
    pub requested: usize,
    /// 201 responses.
    pub ok: u64,
    /// Other outcomes.
    pub failed: u64,
    /// First send → last 2xx, s.
    pub secs: f64,
    /// ok / secs.
    pub creations_per_sec: f64,
    /// Last 2xx → every client holds the final value, ms (negative: before the response).
    pub last_commit_to_all_clients_ms: Option<f64>,
    /// Per client: last 2xx → final value, ms.
    pub per_client_ms: Pcts,
    /// Clients holding the final value.
    pub clients_with_final_value: usize,
    /// stats:tasks messages per client during the burst: mean.
    pub messages_per_client_mean: f64,
    /// … min.
    pub messages_per_client_min: u64,
    /// … max.
    pub messages_per_client_max: u64,
    /// `pulse_stats_recomputes_total` after − before, when `GET /metrics` exists.
    pub stats_recomputes: Option<u64>,
    /// Failed creations by HTTP status (0: no response).
    pub failed_statuses: BTreeMap<u16, u64>,
    /// Changes of the server's own counters over the phase, when `GET /metrics` exists.
    pub server_counters: Option<BTreeMap<String, f64>>,
    /// Per client: last 2xx → final value, ms, for local and remote clients (several
    /// instances only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_instance: Option<LocalRemote<Pcts>>,
}

/// `--burst` creations as fast as the API takes them; then how long until every client holds
/// the final value, and how many messages that took (conflation).
async fn burst(run: &mut Run) -> Result<Section> {
    let (n, concurrency) = (run.args.load.burst, run.args.load.burst_concurrency);
    if n == 0 {
        return Ok(Section::skipped("burst"));
    }
    progress(&format!("burst of {n} creations, {concurrency} in flight"));
    let api = run.target.api().clone();
    let before = run.expected_total;
    let metrics_before = run.target.metrics().await;
    let start = run.begin()?;
    let b = load::burst(&api, n, concurrency, run.base).await;
    if b.failed > 0 {
        run.failures.push(format!(
            "{} of {n} burst creations failed (HTTP status: count, 0 = no response: {:?})",
            b.failed, b.failed_statuses
        ));
    }
    let target = before + i64::try_from(b.ok)?;
    run.expected_total = target;
    let with_final =
        run.fleet()?.wait_all_at_least(target, Duration::from_secs(run.args.settle_timeout_secs)).await;
    let counters = counter_deltas(metrics_before.as_ref(), run.target.metrics().await.as_ref());
    run.end("burst", start)?;
    let seen = run.fleet()?.seen_since(b.start_us);
    let report = burst_report(&seen, run.target.instances(), &b, before, with_final, counters, n);

    let instances = run.target.instances();
    let mut doc = Doc::new();
    doc.heading(2, "Burst").para(format!(
        "{} creations ({} failed{}) in {:.2} s = {:.0}/s. Last commit (last 2xx) → every client holds the final \
         value: **{}** ({} of {} clients have it). Stats recomputes: {}.",
        report.ok,
        report.failed,
        if report.failed_statuses.is_empty() {
            String::new()
        } else {
            format!(", HTTP status: count {:?}", report.failed_statuses)
        },
        report.secs,
        report.creations_per_sec,
        opt(report.last_commit_to_all_clients_ms, 1, " ms"),
        report.clients_with_final_value,
        run.args.load.clients,
        report.stats_recomputes.map_or_else(|| "n/a (no /metrics)".to_owned(), |n| n.to_string())
    ));
    let mut t = Pcts::table("ms");
    report
        .per_client_ms
        .row(&mut t, "last 2xx → client has final value (negative: before the bench saw the response)");
    if let Some(x) = &report.cross_instance {
        x.local.row(&mut t, format!("… {}", group_label("local", instances)));
        x.remote.row(&mut t, format!("… {}", group_label("remote", instances)));
    }
    doc.table(&t).para(format!(
        "stats:tasks messages per client during the burst: mean {:.1}, min {}, max {} (for {} creations: \
         conflation). {}",
        report.messages_per_client_mean,
        report.messages_per_client_min,
        report.messages_per_client_max,
        report.ok,
        counters_line(report.server_counters.as_ref())
    ));
    Ok(Section::new("burst", &report, doc))
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

// --- Final check, disconnect ---------------------------------------------------------------

/// Final check against the API.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// `GET /api/v1/tasks/stats` after the run.
    pub api_stats: Option<TasksStats>,
    /// Total the bench expects (initial + successful creations).
    pub expected_total: i64,
    /// Clients whose last stats:tasks equals api_stats.
    pub clients_matching: usize,
    /// Clients whose last value differs (or who have none).
    pub clients_mismatched: usize,
    /// Clients whose connection was closed or failed before the bench closed it.
    pub clients_dropped: usize,
    /// Up to 5 examples of what went wrong.
    pub examples: Vec<String>,
}

/// Every client's last `stats:tasks` must equal `GET /api/v1/tasks/stats`; then the clients
/// are closed.
async fn verify(run: &mut Run) -> Result<Section> {
    let api_stats = load::tasks_stats(run.target.api()).await?;
    run.outcomes = close_fleet(run, "disconnect").await?;
    let report = verify_report(&run.outcomes, run.target.instances(), api_stats, run.expected_total);
    if api_stats.total != run.expected_total {
        run.failures.push(format!(
            "the API counts {} tasks, the bench expected {}",
            api_stats.total, run.expected_total
        ));
    }
    if report.clients_mismatched > 0 {
        run.failures.push(format!(
            "{} clients' last stats:tasks differs from GET /api/v1/tasks/stats",
            report.clients_mismatched
        ));
    }
    let mut doc = Doc::new();
    doc.heading(2, "Final check")
        .para(format!(
            "`GET /api/v1/tasks/stats` = {} (expected total {}); clients matching: {}, mismatched: {}, dropped by \
             the server: {}.",
            serde_json::to_string(&api_stats).unwrap_or_default(),
            report.expected_total,
            report.clients_matching,
            report.clients_mismatched,
            report.clients_dropped
        ))
        .bullets(&report.examples);
    Ok(Section::new("verify", &report, doc))
}

/// Closes the clients as phase `name`; what each saw.
async fn close_fleet(run: &mut Run, name: &str) -> Result<Vec<ClientOutcome>> {
    progress("closing the clients");
    let start = run.begin()?;
    let Some(fleet) = run.fleet.take() else { anyhow::bail!("no clients: the connect phase comes first") };
    let outcomes = fleet.finish(Duration::from_secs(60)).await;
    // Give the server a moment to release the connections before measuring it again.
    sleep(Duration::from_millis(500)).await;
    run.end(name, start)?;
    Ok(outcomes)
}

fn verify_report(
    outcomes: &[ClientOutcome],
    instances: usize,
    api: TasksStats,
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

// --- A second, smaller fleet --------------------------------------------------------------

/// The paced mutations again with a second, smaller fleet.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondFleetReport {
    /// Its connect.
    pub connect: ConnectReport,
    /// Its paced mutations (the same number, at the same rate).
    pub mutations: MutationReport,
    /// Its clients closed by the server before the bench closed them.
    pub clients_dropped: usize,
}

/// `--second-fleet` clients connect after the first fleet is closed and the paced mutations
/// run again: latency and cost at a second fleet size in the same run (issue 15 asks for p99
/// at 5,000 clients beside the figures at 10,000).
async fn second_fleet(run: &mut Run) -> Result<Section> {
    let clients = run.args.load.second_fleet;
    if clients == 0 || clients >= run.args.load.clients {
        return Ok(Section::skipped("secondFleet"));
    }
    progress(&format!("a second fleet of {clients} clients"));
    let connect = open_fleet(run, clients, "connect (second fleet)").await?;
    let mutations = paced(run, "mutations (second fleet)", false).await?;
    let outcomes = close_fleet(run, "disconnect (second fleet)").await?;
    let clients_dropped = outcomes.iter().filter(|o| o.dropped.is_some()).count();
    if clients_dropped > 0 {
        run.failures.push(format!("second fleet: {clients_dropped} clients were closed by the server"));
    }
    run.figures.second_fleet = Some(SecondFleet {
        clients,
        latency_p50_ms: mutations.latency_ms.p50,
        latency_p99_ms: mutations.latency_ms.p99,
        cpu_us_per_delivered_message: mutations.server_cpu_us_per_delivered_message,
    });
    let report = SecondFleetReport { connect, mutations, clients_dropped };
    let mut doc = Doc::new();
    doc.heading(2, format!("Paced mutations with a second fleet of {clients} clients")).para(format!(
        "After the first fleet was closed, {clients} clients connected and the same paced mutations ran again ({} clients closed by the server).",
        report.clients_dropped
    ));
    connect_markdown(&report.connect, run.target.instances(), &mut doc);
    mutations_markdown(&report.mutations, run, &mut doc);
    Ok(Section::new("secondFleet", &report, doc))
}

// --- Polling -------------------------------------------------------------------------------

/// Polling comparison.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollReport {
    /// Target rate, requests/s.
    pub target_rate: f64,
    /// Requests sent.
    pub requests: u64,
    /// 200 responses.
    pub ok: u64,
    /// Achieved rate, /s.
    pub achieved_rate: f64,
    /// Response times, ms.
    pub latency_ms: Pcts,
    /// CPU seconds over the phase of the server that answered the polls (instance 0), no
    /// WebSocket clients connected.
    pub server_cpu_secs: f64,
    /// Server CPU per request, µs.
    pub server_cpu_us_per_request: f64,
    /// Dashboards polled (= clients).
    pub dashboards: usize,
    /// 3 requests every 30 s per dashboard = dashboards / 10 requests/s.
    pub extrapolated_requests_per_sec: f64,
    /// extrapolated_requests_per_sec × CPU per request, % of one core.
    pub extrapolated_cpu_pct_of_core: f64,
}

/// Keep-alive pollers over the three stats endpoints, no WebSocket client connected: what the
/// same dashboards would cost if they polled.
async fn polling(run: &mut Run) -> Result<Section> {
    let a = &run.args.load;
    let (rate, secs, connections, dashboards) = (a.poll_rate, a.poll_secs, a.poll_connections, a.clients);
    if secs == 0 {
        return Ok(Section::skipped("polling"));
    }
    progress(&format!("polling at {rate}/s for {secs} s"));
    let api = run.target.api().clone();
    let start = run.begin()?;
    let p = load::poll(&api, rate, secs as f64, connections).await?;
    let m = run.end("polling", start)?;
    // Per request: only instance 0 answered them; the others' background work is not theirs.
    let cost = PhaseCost::between("polling", &m.start.each[0], &m.end.each[0]);
    let cpu_per_req = cost.server_cpu_secs / p.ok.max(1) as f64;
    let req_per_sec = dashboards as f64 / 10.0;
    let mut lat = p.latencies_us.clone();
    let report = PollReport {
        target_rate: rate,
        requests: p.requests,
        ok: p.ok,
        achieved_rate: p.requests as f64 / p.wall_secs.max(1e-9),
        latency_ms: Pcts::from_us(&mut lat),
        server_cpu_secs: cost.server_cpu_secs,
        server_cpu_us_per_request: cpu_per_req * 1e6,
        dashboards,
        extrapolated_requests_per_sec: req_per_sec,
        extrapolated_cpu_pct_of_core: 100.0 * req_per_sec * cpu_per_req,
    };
    if p.ok < p.requests {
        run.failures.push(format!("{} of {} poll requests failed", p.requests - p.ok, p.requests));
    }
    let f = &run.figures;
    let mut doc = Doc::new();
    doc.heading(2, "Polling comparison").para(format!(
        "Real pollers (keep-alive, cycling over the three stats endpoints, no WebSocket clients): {} requests ({} \
         ok) at {:.0}/s, {:.3} CPU s of the server that answered them = **{:.1} µs CPU per request**.",
        report.requests, report.ok, report.achieved_rate, report.server_cpu_secs, report.server_cpu_us_per_request
    ));
    let mut t = Pcts::table("ms");
    report.latency_ms.row(&mut t, "poll response");
    doc.table(&t).para(format!(
        "{} polling dashboards (3 requests every 30 s each) = **{:.0} requests/s ≈ {:.2} % of one core**, against \
         **{:.2} % of one core** for {} idle WebSocket dashboards (plus {:.2} ms per change pushed to all of them).",
        report.dashboards,
        report.extrapolated_requests_per_sec,
        report.extrapolated_cpu_pct_of_core,
        f.idle_cpu_pct_of_core,
        f.clients_ready,
        1000.0 * f.change_phase_cpu_secs / f.changes.max(1) as f64
    ));
    Ok(Section::new("polling", &report, doc))
}

// --- Analysis shared by the phases ---------------------------------------------------------

fn counters_line(c: Option<&BTreeMap<String, f64>>) -> String {
    match c {
        None => "Server counters: n/a (no /metrics).".into(),
        Some(c) => format!(
            "Server counters over the phase (/metrics): {}.",
            c.iter().map(|(k, v)| format!("{k} +{v:.0}")).collect::<Vec<_>>().join(", ")
        ),
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
        "pulse_messages_sent_total",
        "pulse_messages_conflated_total",
    ];
    let (before, after) = (before?, after?);
    Some(
        NAMES
            .iter()
            .filter_map(|&n| Some((n.to_owned(), after.get(n)? - before.get(n).copied().unwrap_or(0.0))))
            .collect(),
    )
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
    muts: &[Mutation],
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

/// Latency of every (client, successful mutation) pair, µs, and how many pairs are missing
/// (no value, or later than `timeout_us`).
fn pair_latencies<'a>(
    outcomes: impl IntoIterator<Item = &'a ClientOutcome>,
    muts: &[Mutation],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(log: Vec<(u64, i64)>) -> ClientOutcome {
        ClientOutcome { log, ..Default::default() }
    }

    fn mutation(sent_us: u64) -> Mutation {
        Mutation { sent_us, done_us: sent_us + 1, status: 201 }
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

    #[test]
    fn a_burst_reports_the_last_commit_to_every_client() {
        let b = load::Burst {
            start_us: 100,
            last_ok_us: 1_000,
            ok: 3,
            failed: 0,
            failed_statuses: BTreeMap::new(),
        };
        let fast = outcome(vec![(900, 13)]);
        let slow = outcome(vec![(500, 12), (3_000, 13)]);
        let r = burst_report(&[fast, slow], 1, &b, 10, 2, None, 3);
        assert_eq!(r.last_commit_to_all_clients_ms, Some(2.0));
        assert_eq!((r.messages_per_client_min, r.messages_per_client_max), (1, 2));
    }
}
