//! The load bench's report: the run's header and each side's sections as data, serialized
//! as the JSON report and rendered, from the same data, as the markdown summary.
//!
//! Changes when the report's shape changes; the phases own their sections' content.

use serde::Serialize;

use crate::compare::Comparison;
use crate::floor::FloorReport;
use crate::md::{Doc, Table};
use crate::phases::LoadArgs;
use crate::procstat::{Machine, PhaseCost};
use crate::run::{Finished, Sections};

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

    /// A table of percentiles, one row per [`Pcts::row`].
    pub fn table(first: &str) -> Table {
        Table::new([first, "n", "p50", "p95", "p99", "max", "mean"])
    }

    /// Adds `self` as the row `label` of a [`Pcts::table`].
    pub fn row(&self, table: &mut Table, label: impl std::fmt::Display) {
        table.row([
            label.to_string(),
            self.count.to_string(),
            format!("{:.1}", self.p50),
            format!("{:.1}", self.p95),
            format!("{:.1}", self.p99),
            format!("{:.1}", self.max),
            format!("{:.1}", self.mean),
        ]);
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

/// One side's results: the failures, the sections of its phases and its cost per phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SideReport {
    /// No failure.
    pub ok: bool,
    /// What broke (the bench exits non-zero when Pulse's list is not empty).
    pub failures: Vec<String>,
    /// Tasks total before the clients connected.
    pub initial_total: i64,
    /// One field per phase (`preload`, `connect`, `idle`, `mutations`, `burst`, `verify`,
    /// `polling`; `null` when skipped).
    #[serde(flatten)]
    pub sections: Sections,
    /// Server cost per phase, every instance summed (the bench's CPU counted once).
    pub phases: Vec<PhaseCost>,
    /// `phasesByInstance[i]`: instance i's cost per phase (several instances only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases_by_instance: Vec<Vec<PhaseCost>>,
}

impl SideReport {
    /// From a finished run.
    pub fn new(run: Finished) -> (Self, crate::compare::Figures) {
        let side = Self {
            ok: run.failures.is_empty(),
            failures: run.failures,
            initial_total: run.initial_total,
            sections: run.sections,
            phases: run.costs.total,
            phases_by_instance: run.costs.per_instance,
        };
        (side, run.figures)
    }

    /// Its sections, then its cost per phase (`summed`: how several instances are counted).
    fn markdown(&self, doc: &mut Doc, summed: &str) {
        for s in &self.sections.0 {
            doc.append(&s.markdown);
        }
        doc.heading(2, format!("Server cost per phase{summed}"));
        doc.table(&phase_table(&self.phases));
        for (i, phases) in self.phases_by_instance.iter().enumerate() {
            doc.heading(3, format!("Instance {i}{}", if i == 0 { " (mutations, polls)" } else { "" }));
            doc.table(&phase_table(phases));
        }
    }
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
    /// Pulse's side.
    #[serde(flatten)]
    pub pulse: SideReport,
    /// The kernel's floor in the same run (absent with --floor-rounds 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<FloorReport>,
    /// The Node peer under the same clients and changes (absent when it did not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SideReport>,
    /// Both sides, their ratios and issue 15's goals.
    pub comparison: Comparison,
}

impl Report {
    /// The failures that fail the run (Pulse's; the peer's are reported, not judged).
    pub fn failures(&self) -> &[String] {
        &self.pulse.failures
    }

    /// The markdown summary.
    pub fn markdown(&self) -> String {
        let (m, st) = (&self.machine, &self.settings);
        let mut doc = Doc::new();
        doc.heading(1, format!("Pulse load bench — {}{}", self.db, instances_title(st.instances)));
        doc.para(format!("Result: **{}**", if self.pulse.ok { "OK" } else { "FAILED" }));
        doc.bullets(self.pulse.failures.iter().map(|f| format!("failure: {f}")));
        doc.para(format!("Command: `{}`", self.command_line));
        doc.para(format!(
            "Machine: {} cores (nproc), {}, {} MiB RAM ({} MiB available at start), Linux {}, load average at \
             start {}, RLIMIT_NOFILE {}/{}.",
            m.nproc,
            m.cpu_model,
            m.mem_total_mib,
            m.mem_available_mib,
            m.kernel,
            m.load_avg_at_start,
            m.nofile_limit.0,
            m.nofile_limit.1
        ));
        doc.para(format!(
            "Settings: {} clients ({} connecting at once), preload {} tasks, {} mutations at {}/s, burst {} ({} in \
             flight), idle {} s, heartbeat {} s, polling {}/s for {} s. Server: `{}` with {}. Bench and server \
             share the machine: client-side work competes with the server for the cores.{}{}",
            st.load.clients,
            st.connect_concurrency,
            st.load.preload,
            st.load.mutations,
            st.load.rate,
            st.load.burst,
            st.load.burst_concurrency,
            st.load.idle_secs,
            st.heartbeat_secs,
            st.load.poll_rate,
            st.load.poll_secs,
            st.server_bin,
            st.server_env.join(" "),
            if self.db == "postgres" {
                " Server CPU and RSS are the `server` process only: PostgreSQL's own processes are not counted."
            } else {
                ""
            },
            instances_note(st.instances)
        ));
        self.pulse.markdown(&mut doc, &summed(st.instances));
        doc.append(&self.comparison.markdown().finish());
        if let Some(peer) = &self.peer {
            doc.heading(1, "The Node peer, same run");
            doc.para(format!(
                "`{}` on a fresh PostgreSQL database of its own, the same {} clients (tokens minted by the \
                 bench, HS256) and the same paced changes; no burst and no polling (it has no conflation and \
                 serves only the tasks stats). Its failures do not fail the run.",
                st.peer.as_deref().unwrap_or("node src/server.js"),
                st.load.clients
            ));
            doc.bullets(peer.failures.iter().map(|f| format!("peer failure: {f}")));
            peer.markdown(&mut doc, "");
        }
        doc.finish()
    }
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
    /// Connects in flight at once.
    pub connect_concurrency: usize,
    /// `WS_HEARTBEAT_SECS` given to the server.
    pub heartbeat_secs: u64,
    /// The phases' settings (`clients`, `rate`, `mutations`, …).
    #[serde(flatten)]
    pub load: LoadArgs,
    /// How the Node peer was run (absent when it did not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// ` (2 instances on one database)` in the title with several instances.
fn instances_title(instances: usize) -> String {
    match instances {
        1 => String::new(),
        n => format!(" ({n} instances on one database)"),
    }
}

/// How several instances share the work, for the settings paragraph.
fn instances_note(instances: usize) -> String {
    match instances {
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
pub fn summed(instances: usize) -> String {
    match instances {
        1 => String::new(),
        n => format!(" (all {n} instances summed)"),
    }
}

/// The name of a local or remote row: which instances' clients.
pub fn group_label(group: &str, instances: usize) -> String {
    let which = match (group, instances) {
        ("local", _) => "instance 0".to_owned(),
        (_, 2) => "instance 1".to_owned(),
        (_, n) => format!("instances 1–{}", n - 1),
    };
    format!("{group}: clients of {which}")
}

/// The table of server cost per phase.
fn phase_table(phases: &[PhaseCost]) -> Table {
    let mut t = Table::new([
        "phase",
        "wall s",
        "server CPU s",
        "% of a core",
        "bench CPU s",
        "RSS start MiB",
        "RSS end MiB",
        "peak RSS MiB",
        "threads at end",
    ]);
    for p in phases {
        t.row([
            p.name.clone(),
            format!("{:.2}", p.wall_secs),
            format!("{:.3}", p.server_cpu_secs),
            format!("{:.1}", p.server_cpu_pct_of_core),
            format!("{:.3}", p.bench_cpu_secs),
            format!("{:.1}", p.rss_start_mib),
            format!("{:.1}", p.rss_end_mib),
            format!("{:.1}", p.peak_rss_mib),
            p.threads_end.to_string(),
        ]);
    }
    t
}
