//! One side's load run as a list of phases. A phase is a function of the run's state that
//! does its work, measures what the server spent on it ([`Run::begin`] / [`Run::end`]) and
//! returns its [`Section`] of the report: the data (serialized into the JSON under the
//! section's key) and the markdown rendered from that same data. The runner calls the phases
//! in order, then records the whole run's cost and stops the side.
//!
//! Changes when how phases are run or measured changes; never depends on a particular phase.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::time::Instant;

use crate::Args;
use crate::clients::{ClientOutcome, Fleet};
use crate::compare::Figures;
use crate::md::Doc;
use crate::procstat::{ClusterSample, PhaseCost, PhaseCosts};
use crate::target::Target;

/// What a phase returns, borrowing the run.
pub type PhaseFuture<'r> = Pin<Box<dyn Future<Output = Result<Section>> + 'r>>;

/// A named step of a run.
#[derive(Clone, Copy)]
pub struct Phase {
    /// For errors (`phase connect: …`).
    pub name: &'static str,
    /// Does the work and returns its section.
    pub run: for<'r> fn(&'r mut Run) -> PhaseFuture<'r>,
}

/// One phase's part of the report.
#[derive(Debug, Clone)]
pub struct Section {
    /// Its key in the JSON report.
    pub key: &'static str,
    /// Its data (`null`: the phase was skipped).
    pub data: serde_json::Value,
    /// The markdown rendered from the same data.
    pub markdown: String,
}

impl Section {
    /// `data` under `key`, rendered as `doc`.
    pub fn new(key: &'static str, data: &impl Serialize, doc: Doc) -> Self {
        let data = serde_json::to_value(data).unwrap_or(serde_json::Value::Null);
        Self { key, data, markdown: doc.finish() }
    }

    /// A skipped phase (`null` in the JSON, nothing in the summary).
    pub fn skipped(key: &'static str) -> Self {
        Self { key, data: serde_json::Value::Null, markdown: String::new() }
    }
}

/// The sections of a run, serialized as one field each (flattened into the report).
#[derive(Debug, Clone, Default)]
pub struct Sections(pub Vec<Section>);

impl Serialize for Sections {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for s in &self.0 {
            map.serialize_entry(s.key, &s.data)?;
        }
        map.end()
    }
}

/// The state a run's phases share.
pub struct Run {
    /// The bench's settings.
    pub args: Args,
    /// The side under test.
    pub target: Target,
    /// The clients, from the connect phase until they are closed.
    pub fleet: Option<Fleet>,
    /// What every client saw, once closed.
    pub outcomes: Vec<ClientOutcome>,
    /// Times in the clients' logs are µs since this.
    pub base: Instant,
    /// Clock ticks per second of /proc's CPU times.
    pub tck: u64,
    /// Where files go.
    pub out_dir: PathBuf,
    /// The stem of this side's file names (`sqlite`, `postgres-2-instances`, `peer`).
    pub stem: String,
    /// What broke.
    pub failures: Vec<String>,
    /// Server cost per phase.
    pub costs: PhaseCosts,
    /// The first reading of a measured phase: the whole run is measured from it.
    first: Option<ClusterSample>,
    /// The figures the comparison and the goals read.
    pub figures: Figures,
    /// Tasks counted before the clients connected.
    pub initial_total: i64,
    /// The tasks total the bench expects now.
    pub expected_total: i64,
    /// Server RSS before the first fleet connected, MiB.
    pub rss_without_clients_mib: Option<f64>,
}

/// Two readings of every server process around a phase, and the cost between them.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Summed over the instances.
    pub cost: PhaseCost,
    /// At the start.
    pub start: ClusterSample,
    /// At the end.
    pub end: ClusterSample,
}

impl Run {
    /// A run of `target` that has not started its phases.
    pub fn new(args: &Args, target: Target, tck: u64, out_dir: PathBuf, stem: String) -> Self {
        Self {
            args: args.clone(),
            target,
            fleet: None,
            outcomes: Vec::new(),
            base: Instant::now(),
            tck,
            out_dir,
            stem,
            failures: Vec::new(),
            costs: PhaseCosts::default(),
            first: None,
            figures: Figures::default(),
            initial_total: 0,
            expected_total: 0,
            rss_without_clients_mib: None,
        }
    }

    /// Reads every server process now.
    pub fn sample(&self) -> Result<ClusterSample> {
        ClusterSample::take(self.target.pids(), self.tck)
    }

    /// The reading a measured phase starts from.
    pub fn begin(&mut self) -> Result<ClusterSample> {
        let s = self.sample()?;
        self.first.get_or_insert_with(|| s.clone());
        Ok(s)
    }

    /// Ends phase `name` begun at `start`: reads the processes again, records the cost under
    /// `name`, and fails if a process exited meanwhile.
    pub fn end(&mut self, name: &str, start: ClusterSample) -> Result<Measured> {
        let end = self.sample()?;
        let cost = self.costs.record(name, &start, &end);
        self.target.check_running(&format!("the {name} phase"))?;
        Ok(Measured { cost, start, end })
    }

    /// The clients; an error before the connect phase.
    pub fn fleet(&self) -> Result<&Fleet> {
        self.fleet.as_ref().ok_or_else(|| anyhow!("no clients: the connect phase comes first"))
    }

    /// µs since [`Run::base`].
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Runs `phases` in order, then records the whole run and stops the side.
    pub async fn run(mut self, phases: &[Phase]) -> Result<Finished> {
        let mut sections = Sections::default();
        for phase in phases {
            let section = (phase.run)(&mut self).await.with_context(|| format!("phase {}", phase.name))?;
            sections.0.push(section);
        }
        if let Some(first) = self.first.take() {
            let last = self.sample()?;
            self.costs.record("whole run (server up to here)", &first, &last);
        }
        let Run { target, failures, costs, figures, initial_total, .. } = self;
        target.stop().await?;
        Ok(Finished { failures, costs, figures, initial_total, sections })
    }
}

/// What a run leaves once its side is stopped.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What broke.
    pub failures: Vec<String>,
    /// Server cost per phase.
    pub costs: PhaseCosts,
    /// For the comparison and the goals.
    pub figures: Figures,
    /// Tasks counted before the clients connected.
    pub initial_total: i64,
    /// Every phase's section, in order.
    pub sections: Sections,
}

/// `bench: msg` on stderr.
pub fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}
