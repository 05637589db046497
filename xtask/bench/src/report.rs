//! The report: figures computed from what the clients saw, as JSON and as markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::clients::TasksStats;
use crate::plot::HistogramInfo;
use crate::procstat::{Machine, PhaseCost};

/// Percentiles of a set of durations, in milliseconds (nearest rank).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pcts {
    /// Values.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Pcts {
    /// From microseconds (sorts them).
    pub fn from_us(values: &mut [u64]) -> Self {
        values.sort_unstable();
        let ms: Vec<f64> = values.iter().map(|&v| v as f64 / 1000.0).collect();
        Self::from_sorted_ms(&ms)
    }

    /// From signed microseconds (sorts them).
    pub fn from_signed_us(values: &mut [i64]) -> Self {
        values.sort_unstable();
        let ms: Vec<f64> = values.iter().map(|&v| v as f64 / 1000.0).collect();
        Self::from_sorted_ms(&ms)
    }

    fn from_sorted_ms(ms: &[f64]) -> Self {
        if ms.is_empty() {
            return Self::default();
        }
        let at = |p: f64| ms[((p / 100.0 * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Self {
            count: ms.len(),
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
            max: ms[ms.len() - 1],
        }
    }

    /// The value at a nearest-rank percentile of sorted µs.
    pub fn rank(sorted_us: &[u64], p: f64) -> u64 {
        if sorted_us.is_empty() {
            return 0;
        }
        sorted_us[((p / 100.0 * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len()) - 1]
    }

    fn row(&self) -> String {
        format!(
            "{} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}",
            self.count, self.p50, self.p95, self.p99, self.max, self.mean
        )
    }
}

/// The stem of a run's file names: `postgres`, or `postgres-2-instances` with several instances,
/// so a multi-instance run does not overwrite the single-instance report.
pub fn file_stem(db: &str, instances: usize) -> String {
    if instances > 1 { format!("{db}-{instances}-instances") } else { db.to_owned() }
}

/// A figure for the clients of the instance that took the mutations over HTTP (`local`) and
/// for the clients of every other instance (`remote`: the change reached them through the
/// outbox, the `NOTIFY` doorbell, their instance's `LISTEN` and its catch-up read). Only with
/// several instances.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocalRemote<T> {
    /// Clients of instance 0.
    pub local: T,
    /// Clients of instances 1 and up.
    pub remote: T,
}

/// Paced-mutation latency of one group of clients.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupLatency {
    /// Clients in the group.
    pub clients: usize,
    /// clients × successful mutations.
    pub pairs: u64,
    /// Pairs without a value within the pair timeout.
    pub pairs_missing: u64,
    /// Send → client holds a value including it, ms.
    pub latency_ms: Pcts,
}

/// The bench's settings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Server binary.
    pub server_bin: String,
    /// Server instances on the one database (clients dealt round-robin; mutations and polls
    /// to instance 0).
    pub instances: usize,
    /// Environment given to the server besides the database, secrets and `RUST_LOG=warn`.
    pub server_env: Vec<String>,
    /// WebSocket clients.
    pub clients: usize,
    /// Connects in flight at once.
    pub connect_concurrency: usize,
    /// Tasks created before the clients connect.
    pub preload: u64,
    /// Paced mutations per second.
    pub rate: f64,
    /// Paced mutations.
    pub mutations: usize,
    /// Burst creations.
    pub burst: usize,
    /// Burst requests in flight.
    pub burst_concurrency: usize,
    /// Idle measurement, s.
    pub idle_secs: u64,
    /// Poller request rate, /s.
    pub poll_rate: f64,
    /// Poller duration, s.
    pub poll_secs: u64,
    /// `WS_HEARTBEAT_SECS` given to the server.
    pub heartbeat_secs: u64,
    /// A (client, mutation) pair later than this counts as not delivered, s.
    pub pair_timeout_secs: u64,
}

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
}

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
    /// Changes of the server's own counters over the phase, when `GET /metrics` exists.
    pub server_counters: Option<BTreeMap<String, f64>>,
    /// The PNG's layout.
    pub histogram: Option<HistogramInfo>,
    /// Latency and missing pairs of local and remote clients (several instances only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_instance: Option<LocalRemote<GroupLatency>>,
}

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

/// The whole report of one database.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `sqlite` or `postgres`.
    pub db: String,
    /// How the bench was invoked.
    pub command_line: String,
    /// Start, Unix seconds.
    pub started_at_unix: u64,
    /// The machine.
    pub machine: Machine,
    /// Settings.
    pub settings: Settings,
    /// No failure.
    pub ok: bool,
    /// What broke (the bench exits non-zero when this is not empty).
    pub failures: Vec<String>,
    /// Preload.
    pub preload: PreloadReport,
    /// Tasks total before the clients connected.
    pub initial_total: i64,
    /// Connect.
    pub connect: ConnectReport,
    /// Idle.
    pub idle: IdleReport,
    /// Paced mutations.
    pub mutations: MutationReport,
    /// Burst (absent with --burst 0).
    pub burst: Option<BurstReport>,
    /// Final check.
    pub verify: VerifyReport,
    /// Polling comparison (absent with --poll-secs 0).
    pub polling: Option<PollReport>,
    /// Server cost per phase, every instance summed (the bench's CPU counted once).
    pub phases: Vec<PhaseCost>,
    /// `phasesByInstance[i]`: instance i's cost per phase (several instances only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases_by_instance: Vec<Vec<PhaseCost>>,
}

fn counters_line(c: Option<&BTreeMap<String, f64>>) -> String {
    match c {
        None => "Server counters: n/a (no /metrics).".into(),
        Some(c) => format!(
            "Server counters over the phase (/metrics): {}.",
            c.iter().map(|(k, v)| format!("{k} +{v:.0}")).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "n/a".into())
}

impl Report {
    /// The markdown summary.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let st = &self.settings;
        let _ = writeln!(s, "# Pulse load bench — {}{}\n", self.db, self.instances_title());
        let _ = writeln!(s, "Result: **{}**", if self.ok { "OK" } else { "FAILED" });
        for f in &self.failures {
            let _ = writeln!(s, "- failure: {f}");
        }
        let _ = writeln!(s, "\nCommand: `{}`\n", self.command_line);
        let _ = writeln!(
            s,
            "Machine: {} cores (nproc), {}, {} MiB RAM ({} MiB available at start), Linux {}, \
             load average at start {}, RLIMIT_NOFILE {}/{}.\n",
            m.nproc,
            m.cpu_model,
            m.mem_total_mib,
            m.mem_available_mib,
            m.kernel,
            m.load_avg_at_start,
            m.nofile_limit.0,
            m.nofile_limit.1
        );
        let _ = writeln!(
            s,
            "Settings: {} clients ({} connecting at once), preload {} tasks ({}, {:.1} s), {} mutations at {}/s, \
             burst {} ({} in flight), idle {} s, heartbeat {} s, polling {}/s for {} s. Server: `{}` with {}. \
             Bench and server share the machine: client-side work competes with the server for the cores.{}{}\n",
            st.clients,
            st.connect_concurrency,
            self.preload.tasks,
            self.preload.method,
            self.preload.secs,
            st.mutations,
            st.rate,
            st.burst,
            st.burst_concurrency,
            st.idle_secs,
            st.heartbeat_secs,
            st.poll_rate,
            st.poll_secs,
            st.server_bin,
            st.server_env.join(" "),
            if self.db == "postgres" {
                " Server CPU and RSS are the `server` process only: PostgreSQL's own processes are not counted."
            } else {
                ""
            },
            self.instances_note()
        );

        let c = &self.connect;
        let _ = writeln!(s, "## Connect\n");
        let _ = writeln!(
            s,
            "{} of {} clients got their snapshot ({} failed, {} attempts) in **{:.2} s** total; \
             snapshot order violations: {}.\n",
            c.ready, c.clients, c.failed, c.attempts, c.total_secs, c.snapshot_order_violations
        );
        let _ = writeln!(
            s,
            "| per client (ms) | n | p50 | p95 | p99 | max | mean |\n|---|---|---|---|---|---|---|"
        );
        let _ = writeln!(s, "| connect + snapshot | {} |\n", c.per_client_ms.row());
        for (e, n) in &c.errors {
            let _ = writeln!(s, "- failed attempts: {n} × {e}");
        }
        let _ = writeln!(
            s,
            "Server RSS{} {:.1} MiB → {:.1} MiB with the clients: **{:.1} KiB per connection**.\n",
            self.summed(),
            c.rss_before_mib,
            c.rss_after_mib,
            c.rss_per_connection_kib
        );

        let i = &self.idle;
        let _ = writeln!(s, "## Idle ({} clients, no changes, heartbeats included)\n", c.ready);
        let _ = writeln!(
            s,
            "{:.3} CPU s over {:.1} s = **{:.2} % of one core**.\n",
            i.server_cpu_secs, i.secs, i.server_cpu_pct_of_core
        );

        let mu = &self.mutations;
        let _ = writeln!(s, "## Paced mutations\n");
        let _ = writeln!(s, "{}\n", mu.method);
        let _ = writeln!(
            s,
            "{} of {} mutations succeeded at {:.1}/s achieved; {} (client, mutation) pairs, \
             **{} not delivered** within the pair timeout; {} of {} clients hold the last value.\n",
            mu.ok,
            mu.sent,
            mu.achieved_rate,
            mu.pairs,
            mu.pairs_missing,
            mu.clients_with_last_value,
            c.clients
        );
        let _ = writeln!(s, "| ms | n | p50 | p95 | p99 | max | mean |\n|---|---|---|---|---|---|---|");
        let _ = writeln!(s, "| send → client has value | {} |", mu.latency_ms.row());
        if let Some(x) = &mu.cross_instance {
            let _ = writeln!(s, "| … {} | {} |", self.group_label("local"), x.local.latency_ms.row());
            let _ = writeln!(s, "| … {} | {} |", self.group_label("remote"), x.remote.latency_ms.row());
        }
        let _ = writeln!(s, "| HTTP response (POST /api/v1/tasks) | {} |\n", mu.http_ms.row());
        let _ = writeln!(
            s,
            "Messages delivered: {} stats:tasks ({:.0} per second; {:.3} of clients × mutations). \
             Server CPU per mutation (push to every client included): {:.2} ms. {}\n",
            mu.messages_delivered,
            mu.messages_per_sec,
            mu.delivery_ratio,
            mu.server_cpu_ms_per_mutation,
            counters_line(mu.server_counters.as_ref())
        );
        if let Some(x) = &mu.cross_instance {
            let _ = writeln!(
                s,
                "Cross-instance: remote clients got a change **{:+.1} ms** later than local ones at p50 \
                 ({:+.1} ms at p99); pairs not delivered: local {} of {} ({} clients), remote {} of {} \
                 ({} clients).\n",
                x.remote.latency_ms.p50 - x.local.latency_ms.p50,
                x.remote.latency_ms.p99 - x.local.latency_ms.p99,
                x.local.pairs_missing,
                x.local.pairs,
                x.local.clients,
                x.remote.pairs_missing,
                x.remote.pairs,
                x.remote.clients
            );
        }
        if let Some(h) = &mu.histogram {
            let _ = writeln!(
                s,
                "Histogram `latency-{}.png` (all clients): x = send → client latency, 0 to {} ms in {} bins of {:.3} ms \
                 (tick labels in ms), red bar on the right = {} pairs above {} ms; y = pairs per bin \
                 (top = {}); dashed green = p50, dashed orange = p99.\n",
                file_stem(&self.db, self.settings.instances),
                h.x_max_ms,
                h.bins,
                h.bin_ms,
                h.overflow,
                h.x_max_ms,
                h.max_count
            );
        }

        if let Some(b) = &self.burst {
            let _ = writeln!(s, "## Burst\n");
            let _ = writeln!(
                s,
                "{} creations ({} failed{}) in {:.2} s = {:.0}/s. Last commit (last 2xx) → every client holds \
                 the final value: **{}** ({} of {} clients have it). Stats recomputes: {}.\n",
                b.ok,
                b.failed,
                if b.failed_statuses.is_empty() {
                    String::new()
                } else {
                    format!(", HTTP status: count {:?}", b.failed_statuses)
                },
                b.secs,
                b.creations_per_sec,
                opt_ms(b.last_commit_to_all_clients_ms),
                b.clients_with_final_value,
                c.clients,
                b.stats_recomputes.map(|n| n.to_string()).unwrap_or_else(|| "n/a (no /metrics)".into())
            );
            let _ = writeln!(s, "| ms | n | p50 | p95 | p99 | max | mean |\n|---|---|---|---|---|---|---|");
            let _ = writeln!(
                s,
                "| last 2xx → client has final value (negative: before the bench saw the response) | {} |",
                b.per_client_ms.row()
            );
            if let Some(x) = &b.cross_instance {
                let _ = writeln!(s, "| … {} | {} |", self.group_label("local"), x.local.row());
                let _ = writeln!(s, "| … {} | {} |", self.group_label("remote"), x.remote.row());
            }
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "stats:tasks messages per client during the burst: mean {:.1}, min {}, max {} \
                 (for {} creations: conflation). {}\n",
                b.messages_per_client_mean,
                b.messages_per_client_min,
                b.messages_per_client_max,
                b.ok,
                counters_line(b.server_counters.as_ref())
            );
        }

        let v = &self.verify;
        let _ = writeln!(s, "## Final check\n");
        let _ = writeln!(
            s,
            "`GET /api/v1/tasks/stats` = {} (expected total {}); clients matching: {}, mismatched: {}, \
             dropped by the server: {}.\n",
            v.api_stats
                .map(|a| serde_json::to_string(&a).unwrap_or_default())
                .unwrap_or_else(|| "n/a".into()),
            v.expected_total,
            v.clients_matching,
            v.clients_mismatched,
            v.clients_dropped
        );
        for e in &v.examples {
            let _ = writeln!(s, "- {e}");
        }

        if let Some(p) = &self.polling {
            let _ = writeln!(s, "## Polling comparison\n");
            let _ = writeln!(
                s,
                "Real pollers (keep-alive, cycling over the three stats endpoints, no WebSocket clients): \
                 {} requests ({} ok) at {:.0}/s, {:.3} CPU s of the server that answered them = \
                 **{:.1} µs CPU per request**.\n",
                p.requests, p.ok, p.achieved_rate, p.server_cpu_secs, p.server_cpu_us_per_request
            );
            let _ = writeln!(s, "| ms | n | p50 | p95 | p99 | max | mean |\n|---|---|---|---|---|---|---|");
            let _ = writeln!(s, "| poll response | {} |\n", p.latency_ms.row());
            let _ = writeln!(
                s,
                "{} polling dashboards (3 requests every 30 s each) = **{:.0} requests/s ≈ {:.2} % of one core**, \
                 against **{:.2} % of one core** for {} idle WebSocket dashboards (plus {:.2} ms per change \
                 pushed to all of them).\n",
                p.dashboards,
                p.extrapolated_requests_per_sec,
                p.extrapolated_cpu_pct_of_core,
                self.idle.server_cpu_pct_of_core,
                c.ready,
                mu.server_cpu_ms_per_mutation
            );
        }

        let _ = writeln!(s, "## Server cost per phase{}\n", self.summed());
        phase_table(&mut s, &self.phases);
        for (i, phases) in self.phases_by_instance.iter().enumerate() {
            let _ = writeln!(s, "\n### Instance {i}{}\n", if i == 0 { " (mutations, polls)" } else { "" });
            phase_table(&mut s, phases);
        }
        s
    }

    /// ` (2 instances on one database)` in the title with several instances.
    fn instances_title(&self) -> String {
        match self.settings.instances {
            1 => String::new(),
            n => format!(" ({n} instances on one database)"),
        }
    }

    /// How several instances share the work, for the settings paragraph.
    fn instances_note(&self) -> String {
        match self.settings.instances {
            1 => String::new(),
            n => format!(
                " {n} server instances on the one database (own port and log each, the same DATABASE_URL \
                 and JWT_SECRET); client i is on instance i mod {n}; every mutation (paced and burst), \
                 the login and the polls go to instance 0. Local = clients of instance 0, remote = clients of \
                 the others (outbox → NOTIFY → LISTEN → catch-up). Server CPU, RSS and counters are summed \
                 over the instances unless a table says otherwise."
            ),
        }
    }

    /// ` (all N instances summed)` after a server figure's name, with several instances.
    fn summed(&self) -> String {
        match self.settings.instances {
            1 => String::new(),
            n => format!(" (all {n} instances summed)"),
        }
    }

    /// The name of a local or remote row: which instances' clients.
    fn group_label(&self, group: &str) -> String {
        let which = match (group, self.settings.instances) {
            ("local", _) => "instance 0".to_owned(),
            (_, 2) => "instance 1".to_owned(),
            (_, n) => format!("instances 1–{}", n - 1),
        };
        format!("{group}: clients of {which}")
    }
}

/// The table of server cost per phase.
fn phase_table(s: &mut String, phases: &[PhaseCost]) {
    let _ = writeln!(
        s,
        "| phase | wall s | server CPU s | % of a core | bench CPU s | RSS start MiB | RSS end MiB | peak RSS MiB | threads at end |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for p in phases {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.3} | {:.1} | {:.3} | {:.1} | {:.1} | {:.1} | {} |",
            p.name,
            p.wall_secs,
            p.server_cpu_secs,
            p.server_cpu_pct_of_core,
            p.bench_cpu_secs,
            p.rss_start_mib,
            p.rss_end_mib,
            p.peak_rss_mib,
            p.threads_end
        );
    }
}
