//! `bench soak`: N dashboards connected for a long time while a mix of REST mutations (tasks,
//! conversations, approvals) runs at a fixed rate. Every `--sample-secs` the server's RSS,
//! CPU and open WebSocket connections are sampled and the errors counted; at the end every
//! client's last value of every stats topic must equal the REST stats, and the server's RSS
//! must not have grown by more than max(20 MiB, 10 %) after the warm-up.
//!
//! Writes `soak-<db>.json`, `soak-<db>.md` and the server's log `soak-server-<db>.log`.
//!
//! Changes when the soak's load or judgement changes; the server and database come from the
//! shared [`Target`], the clients from [`Fleet`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use suites::{Api, DbKind, Method};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

use crate::clients::{
    AllStats, ApprovalsStats, ClientOutcome, ConversationsStats, Fleet, FleetConfig, Probe, TasksStats,
};
use crate::md::{Doc, Table, opt};
use crate::procstat::{self, Machine, Sample};
use crate::report::Pcts;
use crate::run::progress;
use crate::target::{self, PulseSpec, Target};
use crate::{ADMIN, DbChoice, load};

/// Below this, RSS growth after the warm-up is never a failure, MiB.
const MEMORY_SLACK_MIB: f64 = 20.0;
/// Above [`MEMORY_SLACK_MIB`], the growth allowed as a fraction of the warm-up RSS.
const MEMORY_SLACK_FRACTION: f64 = 0.10;
/// The warm-up is this fraction of the run …
const WARMUP_FRACTION: f64 = 0.20;
/// … and at least this long, s.
const WARMUP_MIN_SECS: f64 = 30.0;
/// Dispatching stops this long after the planned end when the server cannot keep up, s.
const DISPATCH_GRACE_SECS: u64 = 10;

/// `bench soak`: a long run with a mix of mutations; zero errors, flat memory, every client
/// converged.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Database backend; `both` runs SQLite then PostgreSQL.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub db: DbChoice,
    /// WebSocket clients (all with one token from one login).
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Duration of the mutation phase, s.
    #[arg(long, default_value_t = 600)]
    pub secs: u64,
    /// Mutations per second (a mix over tasks, conversations and approvals).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Mutations in flight at most (never two on the same entity).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds between two samples of the server.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// Seed of the operation mix (the same seed gives the same sequence of operations).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl SoakArgs {
    /// Checks the bounds; `nofile` is the open-file limit.
    pub fn validate(&self, nofile: u64) -> Result<()> {
        let bounded = |name: &str, v: f64, lo: f64, hi: f64| -> Result<()> {
            if !(lo..=hi).contains(&v) {
                anyhow::bail!("--{name} must be within {lo}..={hi}");
            }
            Ok(())
        };
        bounded("clients", self.clients as f64, 1.0, 100_000.0)?;
        bounded("secs", self.secs as f64, 1.0, 86_400.0)?;
        bounded("rate", self.rate, 0.1, 10_000.0)?;
        bounded("concurrency", self.concurrency as f64, 1.0, 1_024.0)?;
        bounded("sample-secs", self.sample_secs as f64, 1.0, 3_600.0)?;
        let needed = self.clients as u64 + self.concurrency as u64 + 200;
        if needed > nofile {
            anyhow::bail!(
                "--clients {} needs about {needed} open files per process, the limit is {nofile}",
                self.clients
            );
        }
        Ok(())
    }
}

// --- The operation mix -------------------------------------------------------------------

/// The state of an entity, as the stats count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    TaskPending,
    TaskInProgress,
    TaskCompleted,
    ConvActive,
    ConvEscalated,
    ConvResolved,
    ApprovalPending,
    ApprovalApproved,
    ApprovalRejected,
    ApprovalExecuted,
}

const STATES: usize = 10;

/// One REST mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    TaskCreate,
    TaskCreateAssigned,
    TaskAssign,
    TaskComplete,
    ConversationCreate,
    ConversationUpdate,
    ConversationEscalate,
    ConversationDeescalate,
    ConversationResolve,
    ApprovalCreate,
    ApprovalApprove,
    ApprovalReject,
    ApprovalExecute,
}

/// The mix: (operation, weight). An operation with nothing to act on becomes the creation of
/// its kind. Creations and transitions roughly balance, so the open pools stay small.
const MIX: [(Op, u32); 13] = [
    (Op::TaskCreate, 10),
    (Op::TaskCreateAssigned, 5),
    (Op::TaskAssign, 8),
    (Op::TaskComplete, 14),
    (Op::ConversationCreate, 10),
    (Op::ConversationUpdate, 3),
    (Op::ConversationEscalate, 6),
    (Op::ConversationDeescalate, 2),
    (Op::ConversationResolve, 8),
    (Op::ApprovalCreate, 12),
    (Op::ApprovalApprove, 7),
    (Op::ApprovalReject, 4),
    (Op::ApprovalExecute, 6),
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::TaskCreate => "POST /tasks",
            Op::TaskCreateAssigned => "POST /tasks (assignee admin)",
            Op::TaskAssign => "POST /tasks/{id}/assign",
            Op::TaskComplete => "POST /tasks/{id}/complete",
            Op::ConversationCreate => "POST /conversations",
            Op::ConversationUpdate => "PATCH /conversations/{id}",
            Op::ConversationEscalate => "POST /conversations/{id}/escalate",
            Op::ConversationDeescalate => "POST /conversations/{id}/deescalate",
            Op::ConversationResolve => "POST /conversations/{id}/resolve",
            Op::ApprovalCreate => "POST /approvals",
            Op::ApprovalApprove => "POST /approvals/{id}/decide (approved)",
            Op::ApprovalReject => "POST /approvals/{id}/decide (rejected)",
            Op::ApprovalExecute => "POST /approvals/{id}/execute",
        }
    }

    /// The entity's state after the operation (`from`: its state before, for an update).
    fn to(self, from: Option<State>) -> State {
        match self {
            Op::TaskCreate => State::TaskPending,
            Op::TaskCreateAssigned | Op::TaskAssign => State::TaskInProgress,
            Op::TaskComplete => State::TaskCompleted,
            Op::ConversationCreate | Op::ConversationDeescalate => State::ConvActive,
            Op::ConversationUpdate => from.unwrap_or(State::ConvActive),
            Op::ConversationEscalate => State::ConvEscalated,
            Op::ConversationResolve => State::ConvResolved,
            Op::ApprovalCreate => State::ApprovalPending,
            Op::ApprovalApprove => State::ApprovalApproved,
            Op::ApprovalReject => State::ApprovalRejected,
            Op::ApprovalExecute => State::ApprovalExecuted,
        }
    }

    /// Whether it sends `task:assigned` to the admin's connections.
    fn assigns(self) -> bool {
        matches!(self, Op::TaskCreateAssigned | Op::TaskAssign)
    }
}

fn pick(rng: &mut StdRng) -> Op {
    let sum: u32 = MIX.iter().map(|m| m.1).sum();
    let mut r = rng.random_range(0..sum);
    for (op, w) in MIX {
        if r < w {
            return op;
        }
        r -= w;
    }
    Op::TaskCreate
}

/// An operation on one entity, taken out of its pool while in flight.
#[derive(Debug, Clone, Copy)]
struct Claim {
    op: Op,
    id: Option<i64>,
    from: Option<State>,
}

impl Claim {
    fn request(&self, n: u64) -> (Method, String, Option<serde_json::Value>) {
        let id = self.id.unwrap_or(0);
        match self.op {
            Op::TaskCreate => (
                Method::POST,
                "/api/v1/tasks".into(),
                Some(json!({"type": "soak", "department": "ops", "description": format!("soak task {n}")})),
            ),
            Op::TaskCreateAssigned => (
                Method::POST,
                "/api/v1/tasks".into(),
                Some(json!({"type": "soak", "department": "ops", "description": format!("soak task {n}"),
                            "assignee": ADMIN})),
            ),
            Op::TaskAssign => {
                (Method::POST, format!("/api/v1/tasks/{id}/assign"), Some(json!({"assignee": ADMIN})))
            }
            Op::TaskComplete => (Method::POST, format!("/api/v1/tasks/{id}/complete"), None),
            Op::ConversationCreate => (
                Method::POST,
                "/api/v1/conversations".into(),
                Some(json!({"guestName": format!("Guest {n}"), "channel": "chat", "subject": "soak"})),
            ),
            Op::ConversationUpdate => (
                Method::PATCH,
                format!("/api/v1/conversations/{id}"),
                Some(json!({"subject": format!("soak, edit {n}")})),
            ),
            Op::ConversationEscalate => (
                Method::POST,
                format!("/api/v1/conversations/{id}/escalate"),
                Some(json!({"reason": "soak"})),
            ),
            Op::ConversationDeescalate => {
                (Method::POST, format!("/api/v1/conversations/{id}/deescalate"), None)
            }
            Op::ConversationResolve => (Method::POST, format!("/api/v1/conversations/{id}/resolve"), None),
            Op::ApprovalCreate => (
                Method::POST,
                "/api/v1/approvals".into(),
                Some(json!({"kind": "refund", "summary": format!("soak approval {n}"), "payload": {"n": n}})),
            ),
            Op::ApprovalApprove => (
                Method::POST,
                format!("/api/v1/approvals/{id}/decide"),
                Some(json!({"decision": "approved"})),
            ),
            Op::ApprovalReject => (
                Method::POST,
                format!("/api/v1/approvals/{id}/decide"),
                Some(json!({"decision": "rejected", "reason": "soak"})),
            ),
            Op::ApprovalExecute => (Method::POST, format!("/api/v1/approvals/{id}/execute"), None),
        }
    }
}

/// Per operation: outcomes and response times.
#[derive(Debug, Clone, Default)]
struct OpStats {
    ok: u64,
    failed: BTreeMap<u16, u64>,
    latencies_us: Vec<u64>,
}

/// What the driver and its requests share.
#[derive(Debug, Clone, Default)]
struct Shared {
    /// Ids of the entities in each state that no request is acting on.
    pools: [Vec<i64>; STATES],
    /// Changes to each state's count implied by the successful requests.
    delta: [i64; STATES],
    ops: BTreeMap<Op, OpStats>,
    /// Successful assignments to the admin (each sends one `task:assigned` to every client).
    assignments: u64,
    /// Up to 5 failed requests.
    examples: Vec<String>,
}

impl Shared {
    fn take(&mut self, state: State, rng: &mut StdRng) -> Option<i64> {
        let pool = &mut self.pools[state as usize];
        if pool.is_empty() {
            return None;
        }
        let i = rng.random_range(0..pool.len());
        Some(pool.swap_remove(i))
    }

    /// Turns `op` into a claim on an entity it can act on, or into a creation.
    fn claim(&mut self, op: Op, rng: &mut StdRng) -> Claim {
        let (sources, fallback): (&[State], Op) = match op {
            Op::TaskCreate | Op::TaskCreateAssigned | Op::ConversationCreate | Op::ApprovalCreate => {
                return Claim { op, id: None, from: None };
            }
            Op::TaskAssign => (&[State::TaskPending], Op::TaskCreate),
            Op::TaskComplete => (&[State::TaskInProgress, State::TaskPending], Op::TaskCreate),
            Op::ConversationUpdate => (&[State::ConvActive, State::ConvEscalated], Op::ConversationCreate),
            Op::ConversationEscalate => (&[State::ConvActive], Op::ConversationCreate),
            Op::ConversationDeescalate => (&[State::ConvEscalated], Op::ConversationCreate),
            Op::ConversationResolve => (&[State::ConvEscalated, State::ConvActive], Op::ConversationCreate),
            Op::ApprovalApprove | Op::ApprovalReject => (&[State::ApprovalPending], Op::ApprovalCreate),
            Op::ApprovalExecute => (&[State::ApprovalApproved], Op::ApprovalCreate),
        };
        for &s in sources {
            if let Some(id) = self.take(s, rng) {
                return Claim { op, id: Some(id), from: Some(s) };
            }
        }
        Claim { op: fallback, id: None, from: None }
    }

    /// Books a response. A failed request's entity is not used again (its state is unknown).
    fn complete(&mut self, c: Claim, status: u16, new_id: Option<i64>, us: u64, path: &str) {
        let stats = self.ops.entry(c.op).or_default();
        stats.latencies_us.push(us);
        if !(200..300).contains(&status) {
            *stats.failed.entry(status).or_default() += 1;
            if self.examples.len() < 5 {
                self.examples.push(format!("{} {path}: HTTP {status} (0 = no response)", c.op.name()));
            }
            return;
        }
        stats.ok += 1;
        let to = c.op.to(c.from);
        if let Some(from) = c.from {
            self.delta[from as usize] -= 1;
        }
        self.delta[to as usize] += 1;
        if c.op.assigns() {
            self.assignments += 1;
        }
        let terminal = matches!(
            to,
            State::TaskCompleted | State::ConvResolved | State::ApprovalRejected | State::ApprovalExecuted
        );
        if !terminal && let Some(id) = c.id.or(new_id) {
            self.pools[to as usize].push(id);
        }
    }

    /// The stats the successful requests imply, from those at the start.
    fn expected(&self, initial: &AllStats) -> AllStats {
        let d = |s: State| self.delta[s as usize];
        let t = initial.tasks.unwrap_or(TasksStats { pending: 0, in_progress: 0, completed: 0, total: 0 });
        let a = initial.approvals.unwrap_or(ApprovalsStats {
            pending: 0,
            approved: 0,
            rejected: 0,
            executed: 0,
            total: 0,
        });
        let c = initial.conversations.unwrap_or(ConversationsStats {
            active: 0,
            escalated: 0,
            resolved: 0,
            total: 0,
        });
        let tasks = TasksStats {
            pending: t.pending + d(State::TaskPending),
            in_progress: t.in_progress + d(State::TaskInProgress),
            completed: t.completed + d(State::TaskCompleted),
            total: t.total + d(State::TaskPending) + d(State::TaskInProgress) + d(State::TaskCompleted),
        };
        let approvals = ApprovalsStats {
            pending: a.pending + d(State::ApprovalPending),
            approved: a.approved + d(State::ApprovalApproved),
            rejected: a.rejected + d(State::ApprovalRejected),
            executed: a.executed + d(State::ApprovalExecuted),
            total: a.total
                + d(State::ApprovalPending)
                + d(State::ApprovalApproved)
                + d(State::ApprovalRejected)
                + d(State::ApprovalExecuted),
        };
        let conversations = ConversationsStats {
            active: c.active + d(State::ConvActive),
            escalated: c.escalated + d(State::ConvEscalated),
            resolved: c.resolved + d(State::ConvResolved),
            total: c.total + d(State::ConvActive) + d(State::ConvEscalated) + d(State::ConvResolved),
        };
        AllStats { tasks: Some(tasks), approvals: Some(approvals), conversations: Some(conversations) }
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Request counters the sampler reads.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

/// What the driver did.
#[derive(Debug, Clone, Default)]
struct Drive {
    planned: u64,
    sent: u64,
    /// Planned operations not sent because the run was more than the grace behind.
    skipped: u64,
    /// Largest delay of a send behind its slot in the schedule, ms.
    max_lag_ms: f64,
    /// First send → last response, s.
    secs: f64,
}

/// Sends `rate × secs` operations, the i-th at `start + i / rate` (or when a slot among
/// `concurrency` frees up), each on an entity no other request is touching.
async fn drive(api: &Api, a: &SoakArgs, shared: &Arc<Mutex<Shared>>, counters: &Arc<Counters>) -> Drive {
    let planned = (a.rate * a.secs as f64).round() as u64;
    let start = Instant::now();
    let give_up = start + Duration::from_secs(a.secs + DISPATCH_GRACE_SECS);
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut rng = StdRng::seed_from_u64(a.seed);
    let mut set = JoinSet::new();
    let mut out = Drive { planned, ..Default::default() };
    for i in 0..planned {
        let slot = start + Duration::from_secs_f64(i as f64 / a.rate);
        sleep_until(slot).await;
        let Ok(permit) = sem.clone().acquire_owned().await else { break };
        let now = Instant::now();
        if now > give_up {
            out.skipped = planned - i;
            break;
        }
        out.max_lag_ms = out.max_lag_ms.max(now.duration_since(slot).as_secs_f64() * 1000.0);
        while set.try_join_next().is_some() {}
        let claim = lock(shared).claim(pick(&mut rng), &mut rng);
        let (method, path, body) = claim.request(i);
        let (api, shared, counters) = (api.clone(), shared.clone(), counters.clone());
        counters.sent.fetch_add(1, Ordering::Relaxed);
        out.sent += 1;
        set.spawn(async move {
            let t = Instant::now();
            let (status, id) = load::send(&api, method, &path, body.as_ref()).await;
            let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
            let ok = (200..300).contains(&status);
            lock(&shared).complete(claim, status, id, us, &path);
            let counter = if ok { &counters.ok } else { &counters.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    while set.join_next().await.is_some() {}
    out.secs = start.elapsed().as_secs_f64();
    out
}

// --- Samples -----------------------------------------------------------------------------

/// One sample of the server and the fleet.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SoakSample {
    /// Seconds since the first mutation was due (negative: before).
    pub t_secs: f64,
    /// `connected` (clients ready, before the mutations), `mutations`, or `settled` (after
    /// the convergence wait, clients still connected).
    pub phase: String,
    /// Server VmRSS, MiB.
    pub rss_mib: f64,
    /// Server VmHWM (peak), MiB.
    pub peak_rss_mib: f64,
    /// Server threads.
    pub threads: u64,
    /// Server CPU since the previous sample, % of one core.
    pub server_cpu_pct: f64,
    /// Bench CPU since the previous sample, % of one core.
    pub bench_cpu_pct: f64,
    /// `pulse_connections` (every transport) from `GET /metrics` (None: not available).
    pub ws_connections: Option<u64>,
    /// Requests answered 2xx so far.
    pub requests_ok: u64,
    /// Requests that failed so far (non-2xx or no response).
    pub requests_failed: u64,
    /// Messages received by all clients so far.
    pub messages: u64,
    /// Clients dropped by the server so far.
    pub dropped: usize,
    /// Frames that failed to parse so far.
    pub parse_errors: u64,
    /// `seq` going backwards so far.
    pub seq_backwards: u64,
}

struct Sampler {
    pid: u32,
    tck: u64,
    api: Api,
    probe: Probe,
    counters: Arc<Counters>,
    zero: Instant,
    prev: Sample,
}

impl Sampler {
    async fn take(&mut self, phase: &str) -> Result<SoakSample> {
        let s = procstat::sample(self.pid, self.tck)?;
        let metrics = load::metrics(&self.api).await;
        let f = self.probe.totals();
        let wall = s.at.duration_since(self.prev.at).as_secs_f64().max(1e-9);
        let at = Instant::from_std(s.at);
        let t_secs = if at >= self.zero {
            at.duration_since(self.zero).as_secs_f64()
        } else {
            -self.zero.duration_since(at).as_secs_f64()
        };
        let out = SoakSample {
            t_secs,
            phase: phase.to_owned(),
            rss_mib: s.rss_kib as f64 / 1024.0,
            peak_rss_mib: s.hwm_kib as f64 / 1024.0,
            threads: s.threads,
            server_cpu_pct: 100.0 * (s.cpu_secs - self.prev.cpu_secs).max(0.0) / wall,
            bench_cpu_pct: 100.0 * (s.bench_cpu_secs - self.prev.bench_cpu_secs).max(0.0) / wall,
            ws_connections: metrics.and_then(|m| m.get("pulse_connections").map(|&v| v as u64)),
            requests_ok: self.counters.ok.load(Ordering::Relaxed),
            requests_failed: self.counters.failed.load(Ordering::Relaxed),
            messages: f.messages,
            dropped: f.dropped,
            parse_errors: f.parse_errors,
            seq_backwards: f.seq_backwards,
        };
        self.prev = s;
        progress(&format!(
            "soak t={:>6.1}s {:<9} RSS {:>7.1} MiB, CPU {:>5.1} %, bench {:>5.1} %, ws {}, requests {} ok / {} failed, \
             messages {}, dropped {}, parse errors {}, seq backwards {}",
            out.t_secs,
            out.phase,
            out.rss_mib,
            out.server_cpu_pct,
            out.bench_cpu_pct,
            out.ws_connections.map(|c| c.to_string()).unwrap_or_else(|| "n/a".into()),
            out.requests_ok,
            out.requests_failed,
            out.messages,
            out.dropped,
            out.parse_errors,
            out.seq_backwards
        ));
        Ok(out)
    }
}

// --- Report --------------------------------------------------------------------------------

/// Per operation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpReport {
    /// Method and path.
    pub op: String,
    /// Sent.
    pub sent: u64,
    /// 2xx.
    pub ok: u64,
    /// Failures by HTTP status (0: no response).
    pub failed: BTreeMap<u16, u64>,
    /// Response times, ms.
    pub latency_ms: Pcts,
}

/// The flat-memory check.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    /// How it is judged.
    pub criterion: String,
    /// Warm-up: max(20 % of the run, 30 s), s.
    pub warmup_secs: f64,
    /// Whether the run was long enough to judge (a sample after the warm-up and at least one
    /// sampling interval after it).
    pub assessed: bool,
    /// The first sample at or after the warm-up: t, s.
    pub warmup_sample_t_secs: Option<f64>,
    /// Its RSS, MiB.
    pub warmup_rss_mib: Option<f64>,
    /// The last sample (`settled`): t, s.
    pub end_t_secs: Option<f64>,
    /// Its RSS, MiB.
    pub end_rss_mib: Option<f64>,
    /// end − warm-up, MiB.
    pub growth_mib: Option<f64>,
    /// max(20 MiB, 10 % of the warm-up RSS).
    pub limit_mib: Option<f64>,
    /// Largest RSS from the warm-up sample on, MiB.
    pub max_after_warmup_mib: Option<f64>,
    /// Least-squares slope of RSS over the samples from the warm-up on (3 or more), MiB per
    /// minute.
    pub slope_mib_per_min: Option<f64>,
    /// Growth within the limit (or not assessed).
    pub ok: bool,
}

/// Errors over the run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReport {
    /// Requests that should have succeeded and did not (non-2xx or no response).
    pub http_failed: u64,
    /// Up to 5 of them.
    pub http_examples: Vec<String>,
    /// Clients that never got their snapshot.
    pub connect_failed: usize,
    /// Failed connection attempts by reason.
    pub connect_errors: BTreeMap<String, u64>,
    /// Clients whose connection the server closed, or that failed, before the bench closed it.
    pub dropped: usize,
    /// … by reason.
    pub drop_reasons: BTreeMap<String, u64>,
    /// Frames that failed to parse (including stats messages without `seq` or a field).
    pub parse_errors: u64,
    /// Stats messages whose `seq` was below the previous one of the topic on that client.
    pub seq_backwards: u64,
    /// Stats messages repeating the previous `seq` (not counted as an error).
    pub seq_repeats: u64,
    /// Up to 5 examples of bad frames.
    pub frame_examples: Vec<String>,
}

/// The final check.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConvergenceReport {
    /// The three REST stats after the run.
    pub api: AllStats,
    /// What the successful requests imply (stats at the start + their changes).
    pub expected_from_requests: AllStats,
    /// api == expected_from_requests.
    pub api_matches_requests: bool,
    /// Every client held the API's values this long after the last response (checked every
    /// 200 ms; the wait then goes on until no message came for 1 s), s (None: not within the
    /// settle timeout).
    pub converged_after_secs: Option<f64>,
    /// Clients.
    pub clients: usize,
    /// Clients whose last value of every stats topic equals the API's.
    pub clients_matching: usize,
    /// Clients with at least one topic different (or missing).
    pub clients_mismatched: usize,
    /// Per topic: clients whose last value differs.
    pub mismatched_by_topic: BTreeMap<String, usize>,
    /// Up to 5 examples.
    pub examples: Vec<String>,
    /// Successful assignments to the admin = `task:assigned` messages each client should get.
    pub assigned_expected: u64,
    /// Fewest `task:assigned` a client received.
    pub assigned_min: u64,
    /// Most.
    pub assigned_max: u64,
    /// Clients that did not receive exactly `assigned_expected`.
    pub assigned_wrong_clients: usize,
}

/// Settings of a soak run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SoakSettings {
    /// Server binary.
    pub server_bin: String,
    /// Environment given to the server besides the database, secrets and `RUST_LOG=warn`.
    pub server_env: Vec<String>,
    /// Clients.
    pub clients: usize,
    /// Mutation phase, s.
    pub secs: u64,
    /// Mutations per second.
    pub rate: f64,
    /// In flight at most.
    pub concurrency: usize,
    /// Sampling interval, s.
    pub sample_secs: u64,
    /// Seed of the mix.
    pub seed: u64,
    /// The mix: operation → weight.
    pub mix: BTreeMap<String, u32>,
    /// Settle timeout, s.
    pub settle_timeout_secs: u64,
}

/// The whole soak report of one database.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SoakReport {
    /// `sqlite` or `postgres`.
    pub db: String,
    /// How the bench was invoked.
    pub command_line: String,
    /// Start, Unix seconds.
    pub started_at_unix: u64,
    /// The machine.
    pub machine: Machine,
    /// Settings.
    pub settings: SoakSettings,
    /// No failure.
    pub ok: bool,
    /// What broke (the bench exits non-zero when this is not empty).
    pub failures: Vec<String>,
    /// Worth a look, not a failure (the rate not sustained, …).
    pub warnings: Vec<String>,
    /// Clients ready, and how long the connect took, s.
    pub connect_secs: f64,
    /// Clients with their snapshot.
    pub clients_ready: usize,
    /// Operations planned (rate × secs).
    pub planned: u64,
    /// Sent.
    pub sent: u64,
    /// Not sent: the run fell more than 10 s behind its schedule.
    pub skipped: u64,
    /// sent / (first send → last response).
    pub achieved_rate: f64,
    /// Largest delay of a send behind its slot, ms.
    pub max_lag_ms: f64,
    /// Per operation.
    pub ops: Vec<OpReport>,
    /// Every sample.
    pub samples: Vec<SoakSample>,
    /// Flat memory.
    pub memory: MemoryReport,
    /// Errors.
    pub errors: ErrorReport,
    /// Convergence.
    pub convergence: ConvergenceReport,
    /// Server counters (`/metrics`) over the mutation phase and the settle wait.
    pub server_counters: Option<BTreeMap<String, f64>>,
    /// Lines of the server's log (RUST_LOG=warn) with WARN / ERROR, and the first few.
    pub server_log_warn: usize,
    /// …
    pub server_log_error: usize,
    /// Up to 10 such lines.
    pub server_log_examples: Vec<String>,
}

/// Judges the RSS series: from the first sample at or after the warm-up to the last one.
fn memory_report(samples: &[SoakSample], secs: u64, every: u64) -> MemoryReport {
    let warmup = (WARMUP_FRACTION * secs as f64).max(WARMUP_MIN_SECS);
    let mut m = MemoryReport {
        criterion: format!(
            "RSS of the last sample (after the settle wait, clients still connected) minus RSS of the first \
             sample at or after the warm-up (max({:.0} % of the run, {WARMUP_MIN_SECS:.0} s) = {warmup:.0} s) \
             must not exceed max({MEMORY_SLACK_MIB:.0} MiB, {:.0} % of the warm-up RSS). Judged only when the \
             last sample is at least one sampling interval after the warm-up sample.",
            WARMUP_FRACTION * 100.0,
            MEMORY_SLACK_FRACTION * 100.0
        ),
        warmup_secs: warmup,
        ok: true,
        ..Default::default()
    };
    let Some(wi) = samples.iter().position(|s| s.phase != "connected" && s.t_secs >= warmup - 0.5) else {
        return m;
    };
    let (w, end) = (&samples[wi], &samples[samples.len() - 1]);
    let after = &samples[wi..];
    m.warmup_sample_t_secs = Some(w.t_secs);
    m.warmup_rss_mib = Some(w.rss_mib);
    m.end_t_secs = Some(end.t_secs);
    m.end_rss_mib = Some(end.rss_mib);
    m.max_after_warmup_mib = after.iter().map(|s| s.rss_mib).reduce(f64::max);
    if after.len() >= 3 {
        let n = after.len() as f64;
        let mt = after.iter().map(|s| s.t_secs).sum::<f64>() / n;
        let mr = after.iter().map(|s| s.rss_mib).sum::<f64>() / n;
        let cov: f64 = after.iter().map(|s| (s.t_secs - mt) * (s.rss_mib - mr)).sum();
        let var: f64 = after.iter().map(|s| (s.t_secs - mt).powi(2)).sum();
        if var > 0.0 {
            m.slope_mib_per_min = Some(60.0 * cov / var);
        }
    }
    let limit = MEMORY_SLACK_MIB.max(MEMORY_SLACK_FRACTION * w.rss_mib);
    m.growth_mib = Some(end.rss_mib - w.rss_mib);
    m.limit_mib = Some(limit);
    m.assessed = end.t_secs - w.t_secs >= every as f64 - 0.5;
    m.ok = !m.assessed || end.rss_mib - w.rss_mib <= limit;
    m
}

fn diff_topics(client: &AllStats, api: &AllStats) -> Vec<&'static str> {
    let mut out = Vec::new();
    if client.tasks != api.tasks {
        out.push("stats:tasks");
    }
    if client.approvals != api.approvals {
        out.push("stats:approvals");
    }
    if client.conversations != api.conversations {
        out.push("stats:conversations");
    }
    out
}

/// Counts the WARN and ERROR lines of the server's log; keeps the first 10.
fn scan_log(path: &Path) -> (usize, usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut warn, mut error, mut examples) = (0, 0, Vec::new());
    for line in text.lines() {
        let (w, e) = (line.contains("WARN"), line.contains("ERROR"));
        warn += usize::from(w);
        error += usize::from(e);
        if (w || e) && examples.len() < 10 {
            examples.push(line.chars().take(300).collect());
        }
    }
    (warn, error, examples)
}

/// What a soak report says about where it ran.
#[derive(Debug, Clone)]
pub struct Header {
    /// `sqlite` or `postgres`.
    pub db: String,
    /// How the bench was invoked.
    pub command_line: String,
    /// The machine.
    pub machine: Machine,
    /// The server binary.
    pub server_bin: String,
}

/// The server and the connected clients.
struct Connected {
    target: Target,
    api: Api,
    fleet: Option<Fleet>,
    /// The REST stats before the first mutation.
    initial: AllStats,
    connect_secs: f64,
    ready: usize,
}

/// What the mutations left.
struct Mutated {
    drive: Drive,
    shared: Shared,
    samples: Vec<SoakSample>,
    metrics_before: Option<BTreeMap<String, f64>>,
}

/// What the settle wait and the close left.
struct Settled {
    converged_after_secs: Option<f64>,
    metrics_after: Option<BTreeMap<String, f64>>,
    api_stats: AllStats,
    outcomes: Vec<ClientOutcome>,
}

/// What the analysis needs besides the phases' results.
struct Facts {
    initial: AllStats,
    connect_secs: f64,
    ready: usize,
    started_at_unix: u64,
}

/// Runs the soak on one database: start and connect, the mutations (sampled), the settle wait
/// and the close, then the analysis. Dropping it (an error, an interruption) kills the server
/// and drops the database.
pub async fn run_db(
    args: &crate::Args,
    a: &SoakArgs,
    kind: DbKind,
    spec: &PulseSpec,
    header: Header,
    tck: u64,
) -> Result<SoakReport> {
    let started_at_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut c = connect(args, a, kind, spec).await?;
    let pid = c.target.pids()[0];
    let mut sampler = Sampler {
        pid,
        tck,
        api: c.api.clone(),
        probe: c.fleet()?.probe(),
        counters: Arc::new(Counters::default()),
        zero: Instant::now() + Duration::from_millis(200),
        prev: procstat::sample(pid, tck)?,
    };
    let mut m = mutate(&mut c, a, &mut sampler).await?;
    let settled = settle(&mut c, args, a, &mut sampler, &mut m.samples).await?;
    let Connected { target, initial, connect_secs, ready, .. } = c;
    target.stop().await?;
    let facts = Facts { initial, connect_secs, ready, started_at_unix };
    Ok(analyse(args, a, spec, header, facts, m, settled))
}

impl Connected {
    fn fleet(&self) -> Result<&Fleet> {
        self.fleet.as_ref().ok_or_else(|| anyhow::anyhow!("the clients are closed"))
    }
}

/// Starts the server on a fresh database, logs in and connects the clients.
async fn connect(args: &crate::Args, a: &SoakArgs, kind: DbKind, spec: &PulseSpec) -> Result<Connected> {
    let mut target = Target::pulse(spec, target::fresh_database(kind, &args.pg_admin_url)?).await?;
    let api = target.api().clone();
    let initial = load::all_stats(&api).await?;
    progress(&format!("soak: connecting {} clients", a.clients));
    let cfg = FleetConfig {
        urls: target.ws_urls(),
        clients: a.clients,
        concurrency: args.connect_concurrency,
        attempt_timeout: Duration::from_secs(30),
        retries: 2,
        keep_log: false,
        require_seq: true,
    };
    let t = Instant::now();
    let fleet = Fleet::spawn(&cfg, t);
    let (ready, _) = fleet.wait_connected(Duration::from_secs(args.connect_timeout_secs)).await;
    let connect_secs = t.elapsed().as_secs_f64();
    target.check_running("the connect")?;
    progress(&format!("soak: {ready} of {} clients ready in {connect_secs:.1} s", a.clients));
    Ok(Connected { target, api, fleet: Some(fleet), initial, connect_secs, ready })
}

/// `rate × secs` mutations from the mix, sampled every `--sample-secs`.
async fn mutate(c: &mut Connected, a: &SoakArgs, sampler: &mut Sampler) -> Result<Mutated> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let counters = sampler.counters.clone();
    let mut samples = vec![sampler.take("connected").await?];
    let metrics_before = load::metrics(&c.api).await;
    let zero = sampler.zero;
    sleep_until(zero).await;
    let every = Duration::from_secs(a.sample_secs);
    let sampling = async {
        let mut out = Vec::new();
        let mut k = 0u32;
        loop {
            let at = zero + every * k;
            if at > zero + Duration::from_secs(a.secs) {
                break;
            }
            sleep_until(at).await;
            match sampler.take("mutations").await {
                Ok(s) => out.push(s),
                Err(e) => {
                    progress(&format!("soak: sampling failed: {e:#}"));
                    break;
                }
            }
            k += 1;
        }
        out
    };
    let (drive, series) = tokio::join!(drive(&c.api, a, &shared, &counters), sampling);
    samples.extend(series);
    c.target.check_running("the mutations")?;
    let shared = Arc::try_unwrap(shared)
        .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .unwrap_or_else(|arc| lock(&arc).clone());
    Ok(Mutated { drive, shared, samples, metrics_before })
}

/// Polls the REST stats every 200 ms until every client holds them and no message came for
/// 1 s (at most `--settle-timeout-secs`), takes the `settled` sample and closes the clients.
async fn settle(
    c: &mut Connected,
    args: &crate::Args,
    a: &SoakArgs,
    sampler: &mut Sampler,
    samples: &mut Vec<SoakSample>,
) -> Result<Settled> {
    progress("soak: waiting until every client holds the API's values");
    let probe = c.fleet()?.probe();
    let settle = Duration::from_secs(args.settle_timeout_secs);
    let t_settle = Instant::now();
    let mut last_messages = probe.totals().messages;
    let mut quiet_since = Instant::now();
    let mut all_hold_since: Option<f64> = None;
    let converged_after_secs = loop {
        let api_now = load::all_stats(&c.api).await?;
        let totals = probe.totals();
        if totals.messages != last_messages {
            last_messages = totals.messages;
            quiet_since = Instant::now();
        }
        if probe.holding(&api_now) >= a.clients {
            let first = *all_hold_since.get_or_insert(t_settle.elapsed().as_secs_f64());
            if quiet_since.elapsed() >= Duration::from_secs(1) {
                break Some(first);
            }
        } else {
            all_hold_since = None;
        }
        if t_settle.elapsed() >= settle {
            break None;
        }
        sleep(Duration::from_millis(200)).await;
    };
    samples.push(sampler.take("settled").await?);
    let metrics_after = load::metrics(&c.api).await;
    let api_stats = load::all_stats(&c.api).await?;
    progress("soak: closing the clients");
    let fleet = c.fleet.take().ok_or_else(|| anyhow::anyhow!("the clients are closed"))?;
    let outcomes = fleet.finish(Duration::from_secs(60)).await;
    c.target.check_running("the run")?;
    Ok(Settled { converged_after_secs, metrics_after, api_stats, outcomes })
}

/// Judges the run: errors, convergence, memory; the report.
fn analyse(
    args: &crate::Args,
    a: &SoakArgs,
    spec: &PulseSpec,
    header: Header,
    facts: Facts,
    m: Mutated,
    st: Settled,
) -> SoakReport {
    let (shared, d, outcomes, api_stats) = (&m.shared, &m.drive, &st.outcomes, st.api_stats);
    let mut ops = Vec::new();
    let mut http_failed = 0;
    for (op, stats) in &shared.ops {
        let mut lat = stats.latencies_us.clone();
        let failed: u64 = stats.failed.values().sum();
        http_failed += failed;
        ops.push(OpReport {
            op: op.name().into(),
            sent: stats.ok + failed,
            ok: stats.ok,
            failed: stats.failed.clone(),
            latency_ms: Pcts::from_us(&mut lat),
        });
    }
    let mut errors = ErrorReport {
        http_failed,
        http_examples: shared.examples.clone(),
        connect_failed: outcomes.iter().filter(|o| o.connect_us.is_none()).count(),
        ..Default::default()
    };
    let expected = shared.expected(&facts.initial);
    let mut conv = ConvergenceReport {
        api: api_stats,
        expected_from_requests: expected,
        api_matches_requests: api_stats == expected,
        converged_after_secs: st.converged_after_secs,
        clients: outcomes.len(),
        assigned_expected: shared.assignments,
        assigned_min: u64::MAX,
        ..Default::default()
    };
    for (i, o) in outcomes.iter().enumerate() {
        for e in &o.errors {
            *errors.connect_errors.entry(e.clone()).or_default() += 1;
        }
        if let Some(d) = &o.dropped {
            errors.dropped += 1;
            *errors.drop_reasons.entry(d.clone()).or_default() += 1;
        }
        errors.parse_errors += o.parse_errors;
        errors.seq_backwards += o.seq_backwards;
        errors.seq_repeats += o.seq_repeats;
        for e in &o.bad_examples {
            if errors.frame_examples.len() < 5 {
                errors.frame_examples.push(format!("client {i}: {e}"));
            }
        }
        let differ = diff_topics(&o.last, &api_stats);
        if differ.is_empty() {
            conv.clients_matching += 1;
        } else {
            conv.clients_mismatched += 1;
            for t in &differ {
                *conv.mismatched_by_topic.entry((*t).to_owned()).or_default() += 1;
            }
            if conv.examples.len() < 5 {
                conv.examples.push(format!(
                    "client {i}: differs in {}: holds {}, dropped: {:?}",
                    differ.join(", "),
                    serde_json::to_string(&o.last).unwrap_or_default(),
                    o.dropped
                ));
            }
        }
        conv.assigned_min = conv.assigned_min.min(o.assigned);
        conv.assigned_max = conv.assigned_max.max(o.assigned);
        if o.assigned != shared.assignments {
            conv.assigned_wrong_clients += 1;
        }
    }
    if outcomes.is_empty() {
        conv.assigned_min = 0;
    }
    let memory = memory_report(&m.samples, a.secs, a.sample_secs);
    let achieved_rate = d.sent as f64 / d.secs.max(1e-9);
    let (failures, warnings) = judge(a, d, &errors, &conv, &memory, achieved_rate);
    let server_counters = match (&m.metrics_before, &st.metrics_after) {
        (Some(b), Some(a)) => Some(
            a.iter()
                .filter(|(k, _)| k.ends_with("_total"))
                .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
                .collect(),
        ),
        _ => None,
    };
    let (server_log_warn, server_log_error, server_log_examples) = scan_log(&spec.log_path);
    SoakReport {
        db: header.db,
        command_line: header.command_line,
        started_at_unix: facts.started_at_unix,
        machine: header.machine,
        settings: SoakSettings {
            server_bin: header.server_bin,
            server_env: spec.env_summary(),
            clients: a.clients,
            secs: a.secs,
            rate: a.rate,
            concurrency: a.concurrency,
            sample_secs: a.sample_secs,
            seed: a.seed,
            mix: MIX.iter().map(|(op, w)| (op.name().to_owned(), *w)).collect(),
            settle_timeout_secs: args.settle_timeout_secs,
        },
        ok: failures.is_empty(),
        failures,
        warnings,
        connect_secs: facts.connect_secs,
        clients_ready: facts.ready,
        planned: d.planned,
        sent: d.sent,
        skipped: d.skipped,
        achieved_rate,
        max_lag_ms: d.max_lag_ms,
        ops,
        samples: m.samples,
        memory,
        errors,
        convergence: conv,
        server_counters,
        server_log_warn,
        server_log_error,
        server_log_examples,
    }
}

/// The failures and the warnings of a run.
fn judge(
    a: &SoakArgs,
    d: &Drive,
    errors: &ErrorReport,
    conv: &ConvergenceReport,
    memory: &MemoryReport,
    achieved_rate: f64,
) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    if errors.connect_failed > 0 {
        failures.push(format!("{} of {} clients never got their snapshot", errors.connect_failed, a.clients));
    }
    if errors.http_failed > 0 {
        failures.push(format!("{} requests failed: {}", errors.http_failed, errors.http_examples.join("; ")));
    }
    if errors.dropped > 0 {
        failures.push(format!("{} clients dropped by the server: {:?}", errors.dropped, errors.drop_reasons));
    }
    if errors.parse_errors > 0 {
        failures.push(format!("{} frames failed to parse", errors.parse_errors));
    }
    if errors.seq_backwards > 0 {
        failures.push(format!("seq went backwards {} times", errors.seq_backwards));
    }
    if conv.clients_mismatched > 0 {
        failures.push(format!(
            "{} of {} clients did not converge to the REST stats ({:?})",
            conv.clients_mismatched, conv.clients, conv.mismatched_by_topic
        ));
    }
    if !conv.api_matches_requests {
        failures.push(format!(
            "the REST stats {} differ from what the successful requests imply {}",
            serde_json::to_string(&conv.api).unwrap_or_default(),
            serde_json::to_string(&conv.expected_from_requests).unwrap_or_default()
        ));
    }
    if conv.assigned_wrong_clients > 0 {
        failures.push(format!(
            "{} clients did not receive exactly {} task:assigned (min {}, max {})",
            conv.assigned_wrong_clients, conv.assigned_expected, conv.assigned_min, conv.assigned_max
        ));
    }
    if !memory.ok {
        failures.push(format!(
            "server RSS grew by {:.1} MiB after the warm-up (limit {:.1} MiB)",
            memory.growth_mib.unwrap_or(0.0),
            memory.limit_mib.unwrap_or(0.0)
        ));
    }
    if !memory.assessed {
        warnings.push(format!(
            "memory growth not judged: the run is too short for a sample one interval after the {:.0} s warm-up",
            memory.warmup_secs
        ));
    }
    if d.skipped > 0 || (d.sent as f64) < 0.99 * d.planned as f64 {
        warnings.push(format!(
            "the rate was not sustained: {} of {} planned operations sent ({} skipped)",
            d.sent, d.planned, d.skipped
        ));
    }
    if achieved_rate < 0.95 * a.rate {
        warnings.push(format!("achieved {achieved_rate:.1} operations/s of {} planned", a.rate));
    }
    (failures, warnings)
}

impl SoakReport {
    /// The markdown summary.
    pub fn markdown(&self) -> String {
        let (m, st) = (&self.machine, &self.settings);
        let mut doc = Doc::new();
        doc.heading(1, format!("Pulse soak — {}", self.db))
            .para(format!("Result: **{}**", if self.ok { "OK" } else { "FAILED" }))
            .bullets(
                self.failures
                    .iter()
                    .map(|f| format!("failure: {f}"))
                    .chain(self.warnings.iter().map(|w| format!("warning: {w}"))),
            )
            .para(format!("Command: `{}`", self.command_line))
            .para(format!(
                "Machine: {} cores, {}, {} MiB RAM ({} MiB available at start), Linux {}, load average at start {}.",
                m.nproc, m.cpu_model, m.mem_total_mib, m.mem_available_mib, m.kernel, m.load_avg_at_start
            ))
            .para(format!(
                "Settings: {} clients (one user), {} s of mutations at {}/s ({} in flight at most, seed {}), a sample \
                 every {} s, settle timeout {} s. Server: `{}` with {}. The bench shares the machine with the server.{}",
                st.clients,
                st.secs,
                st.rate,
                st.concurrency,
                st.seed,
                st.sample_secs,
                st.settle_timeout_secs,
                st.server_bin,
                st.server_env.join(" "),
                if self.db == "postgres" { " RSS and CPU are the `server` process only (not PostgreSQL)." } else { "" }
            ));
        self.operations(&mut doc);
        self.samples_table(&mut doc);
        self.memory_and_errors(&mut doc);
        self.convergence_and_log(&mut doc);
        doc.finish()
    }

    fn operations(&self, doc: &mut Doc) {
        doc.heading(2, "Operations").para(format!(
            "{} of {} clients ready in {:.1} s. {} operations planned, {} sent ({} skipped), {:.1}/s achieved, \
             largest delay behind the schedule {:.0} ms.",
            self.clients_ready,
            self.settings.clients,
            self.connect_secs,
            self.planned,
            self.sent,
            self.skipped,
            self.achieved_rate,
            self.max_lag_ms
        ));
        let mut t =
            Table::new(["operation", "weight", "sent", "2xx", "failed", "p50 ms", "p99 ms", "max ms"]);
        for o in &self.ops {
            t.row([
                format!("`{}`", o.op),
                self.settings.mix.get(&o.op).copied().unwrap_or(0).to_string(),
                o.sent.to_string(),
                o.ok.to_string(),
                if o.failed.is_empty() { "0".to_owned() } else { format!("{:?}", o.failed) },
                format!("{:.1}", o.latency_ms.p50),
                format!("{:.1}", o.latency_ms.p99),
                format!("{:.1}", o.latency_ms.max),
            ]);
        }
        doc.table(&t);
    }

    fn samples_table(&self, doc: &mut Doc) {
        doc.heading(2, "Samples").para(
            "t = seconds since the first mutation was due. CPU = % of one core since the previous sample.",
        );
        let mut t = Table::new([
            "t s",
            "phase",
            "RSS MiB",
            "peak MiB",
            "threads",
            "server CPU %",
            "bench CPU %",
            "ws connections",
            "requests ok",
            "failed",
            "messages",
            "dropped",
            "parse errors",
            "seq backwards",
        ]);
        for x in &self.samples {
            t.row([
                format!("{:.1}", x.t_secs),
                x.phase.clone(),
                format!("{:.1}", x.rss_mib),
                format!("{:.1}", x.peak_rss_mib),
                x.threads.to_string(),
                format!("{:.1}", x.server_cpu_pct),
                format!("{:.1}", x.bench_cpu_pct),
                x.ws_connections.map_or_else(|| "n/a".to_owned(), |c| c.to_string()),
                x.requests_ok.to_string(),
                x.requests_failed.to_string(),
                x.messages.to_string(),
                x.dropped.to_string(),
                x.parse_errors.to_string(),
                x.seq_backwards.to_string(),
            ]);
        }
        doc.table(&t);
    }

    fn memory_and_errors(&self, doc: &mut Doc) {
        let mem = &self.memory;
        doc.heading(2, "Memory").para(&mem.criterion).para(format!(
            "Warm-up sample t = {}: {} → last sample t = {}: {}; growth **{}** (limit {}), {}. Largest RSS after the \
             warm-up {}; slope {}.",
            opt(mem.warmup_sample_t_secs, 1, " s"),
            opt(mem.warmup_rss_mib, 1, " MiB"),
            opt(mem.end_t_secs, 1, " s"),
            opt(mem.end_rss_mib, 1, " MiB"),
            opt(mem.growth_mib, 1, " MiB"),
            opt(mem.limit_mib, 1, " MiB"),
            if !mem.assessed {
                "not judged (run too short)"
            } else if mem.ok {
                "flat"
            } else {
                "GROWING"
            },
            opt(mem.max_after_warmup_mib, 1, " MiB"),
            opt(mem.slope_mib_per_min, 1, " MiB/min")
        ));
        let e = &self.errors;
        let mut t = Table::new(["kind", "count"]);
        for (kind, n) in [
            ("HTTP requests failed (non-2xx or no response)", e.http_failed),
            ("clients without a snapshot", e.connect_failed as u64),
            ("clients dropped or closed by the server", e.dropped as u64),
            ("frames that failed to parse", e.parse_errors),
            ("`seq` going backwards", e.seq_backwards),
            ("`seq` repeated (not an error)", e.seq_repeats),
        ] {
            t.row([kind.to_owned(), n.to_string()]);
        }
        doc.heading(2, "Errors")
            .table(&t)
            .bullets(e.http_examples.iter().chain(&e.frame_examples))
            .bullets(e.drop_reasons.iter().chain(&e.connect_errors).map(|(r, n)| format!("{n} × {r}")));
    }

    fn convergence_and_log(&self, doc: &mut Doc) {
        let c = &self.convergence;
        doc.heading(2, "Convergence")
            .para(format!(
                "REST stats after the run: `{}`; implied by the successful requests: {}.",
                serde_json::to_string(&c.api).unwrap_or_default(),
                if c.api_matches_requests {
                    "the same".to_owned()
                } else {
                    format!("`{}` (DIFFERENT)", serde_json::to_string(&c.expected_from_requests).unwrap_or_default())
                }
            ))
            .para(format!(
                "**{} of {} clients** hold the REST value of every stats topic ({} mismatched{}); every client held \
                 them {} after the last response. `task:assigned`: {} assignments, per client min {} / max {}, {} \
                 clients with a different count.",
                c.clients_matching,
                c.clients,
                c.clients_mismatched,
                if c.mismatched_by_topic.is_empty() { String::new() } else { format!(": {:?}", c.mismatched_by_topic) },
                c.converged_after_secs
                    .map_or_else(|| "never within the settle timeout".to_owned(), |v| format!("{v:.2} s")),
                c.assigned_expected,
                c.assigned_min,
                c.assigned_max,
                c.assigned_wrong_clients
            ))
            .bullets(&c.examples);
        if let Some(counters) = &self.server_counters {
            doc.heading(2, "Server counters over the mutations and the settle wait (/metrics)")
                .bullets(counters.iter().map(|(k, v)| format!("{k} +{v:.0}")));
        }
        doc.para(format!(
            "Server log (RUST_LOG=warn): {} WARN lines, {} ERROR lines.",
            self.server_log_warn, self.server_log_error
        ))
        .bullets(self.server_log_examples.iter().map(|l| format!("`{l}`")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, rss: f64) -> SoakSample {
        SoakSample {
            t_secs: t,
            phase: "mutations".into(),
            rss_mib: rss,
            peak_rss_mib: rss,
            threads: 1,
            server_cpu_pct: 0.0,
            bench_cpu_pct: 0.0,
            ws_connections: None,
            requests_ok: 0,
            requests_failed: 0,
            messages: 0,
            dropped: 0,
            parse_errors: 0,
            seq_backwards: 0,
        }
    }

    #[test]
    fn memory_is_judged_from_the_warmup_sample_to_the_last() {
        // 100 s run: warm-up 30 s.
        let flat: Vec<_> =
            (0..=10).map(|k| sample(10.0 * k as f64, if k < 3 { 50.0 } else { 200.0 })).collect();
        let m = memory_report(&flat, 100, 10);
        assert!(m.assessed && m.ok);
        assert_eq!(m.warmup_sample_t_secs, Some(30.0));
        let growing: Vec<_> = (0..=10).map(|k| sample(10.0 * k as f64, 200.0 + 3.0 * k as f64)).collect();
        let m = memory_report(&growing, 100, 10);
        // 209 → 230: 21 MiB > max(20, 20.9).
        assert!(m.assessed && !m.ok, "{m:?}");
        // 30 s run: the warm-up covers it all.
        let short: Vec<_> = (0..=3).map(|k| sample(10.0 * k as f64, 100.0 * k as f64)).collect();
        let m = memory_report(&short, 30, 10);
        assert!(!m.assessed && m.ok);
    }

    #[test]
    fn claims_fall_back_to_creations_and_pools_follow_the_responses() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut sh = Shared::default();
        let c = sh.claim(Op::TaskComplete, &mut rng);
        assert_eq!((c.op, c.id), (Op::TaskCreate, None));
        sh.complete(c, 201, Some(7), 1, "/");
        let c = sh.claim(Op::TaskAssign, &mut rng);
        assert_eq!((c.op, c.id, c.from), (Op::TaskAssign, Some(7), Some(State::TaskPending)));
        sh.complete(c, 200, Some(7), 1, "/");
        let c = sh.claim(Op::TaskComplete, &mut rng);
        assert_eq!(c.from, Some(State::TaskInProgress));
        sh.complete(c, 409, None, 1, "/");
        let e = sh.expected(&AllStats::default());
        assert_eq!(e.tasks, Some(TasksStats { pending: 0, in_progress: 1, completed: 0, total: 1 }));
        assert_eq!(sh.assignments, 1);
        assert_eq!(sh.ops[&Op::TaskComplete].failed[&409], 1);
    }
}
