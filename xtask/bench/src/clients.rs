//! A fleet of WebSocket dashboards: each connects, waits for its snapshot, then records the
//! arrival time and value of every `stats:tasks` message until told to stop. It also keeps
//! the last value and `seq` of every stats topic, counts `task:assigned` messages, messages
//! it cannot parse and `seq` going backwards (the soak mode checks these). What a client saw
//! is readable while the fleet runs, so each phase analyses its own window.
//!
//! Changes when what a dashboard records changes; depends on nothing of the bench but the
//! wire format of the stats messages.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The `stats:tasks` payload, also the body of `GET /api/v1/tasks/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TasksStats {
    /// Pending tasks.
    pub pending: i64,
    /// Tasks in progress.
    pub in_progress: i64,
    /// Completed tasks.
    pub completed: i64,
    /// All tasks.
    pub total: i64,
}

/// The `stats:approvals` payload, also `GET /api/v1/approvals/stats` → `{"stats": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalsStats {
    /// Waiting for a decision.
    pub pending: i64,
    /// Approved, not executed.
    pub approved: i64,
    /// Rejected.
    pub rejected: i64,
    /// Approved and carried out.
    pub executed: i64,
    /// All approvals.
    pub total: i64,
}

/// The `stats:conversations` payload, also the body of `GET /api/v1/conversations/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationsStats {
    /// Open.
    pub active: i64,
    /// Waiting for a manager.
    pub escalated: i64,
    /// Closed.
    pub resolved: i64,
    /// All conversations.
    pub total: i64,
}

/// The last value of each stats topic a client holds (or the API's answers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllStats {
    /// `stats:tasks`.
    pub tasks: Option<TasksStats>,
    /// `stats:approvals`.
    pub approvals: Option<ApprovalsStats>,
    /// `stats:conversations`.
    pub conversations: Option<ConversationsStats>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    pending: Option<i64>,
    in_progress: Option<i64>,
    completed: Option<i64>,
    total: Option<i64>,
    approved: Option<i64>,
    rejected: Option<i64>,
    executed: Option<i64>,
    active: Option<i64>,
    escalated: Option<i64>,
    resolved: Option<i64>,
}

/// The stats topics, in the order of `seq` slots.
const TOPICS: [&str; 3] = ["stats:tasks", "stats:approvals", "stats:conversations"];

const READY: u8 = 1;
const FAILED: u8 = 2;
const GONE: u8 = 3;

/// What the driver can see of a client while it runs (state 0: connecting).
#[derive(Debug, Default)]
pub struct Live {
    /// `total` of the last `stats:tasks` received (-1 before the first).
    latest_total: AtomicI64,
    state: AtomicU8,
    /// Everything the client saw so far; locked once per message, by the client, and by
    /// the driver between phases.
    outcome: Mutex<ClientOutcome>,
    /// Text frames received.
    messages: AtomicU64,
    /// Frames that are not the JSON the protocol describes (a stats message without `seq`
    /// or a field, a binary frame, …).
    parse_errors: AtomicU64,
    /// Stats messages whose `seq` is below the previous one of the same topic.
    seq_backwards: AtomicU64,
    /// `task:assigned` messages.
    assigned: AtomicU64,
}

impl Live {
    fn outcome(&self) -> MutexGuard<'_, ClientOutcome> {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counters summed over the fleet, read while it runs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetTotals {
    /// Clients with their snapshot, still connected.
    pub ready: usize,
    /// Clients that never got a snapshot.
    pub failed: usize,
    /// Clients whose connection the server closed or that failed after the snapshot.
    pub dropped: usize,
    /// Text frames received.
    pub messages: u64,
    /// Frames that failed to parse.
    pub parse_errors: u64,
    /// `seq` going backwards within a topic on a client.
    pub seq_backwards: u64,
    /// `task:assigned` messages.
    pub assigned: u64,
}

/// Everything one client saw.
#[derive(Debug, Clone, Default)]
pub struct ClientOutcome {
    /// From starting to connect (after waiting for a concurrency slot) to the complete snapshot.
    pub connect_us: Option<u64>,
    /// When the snapshot was complete, µs since the run's base instant.
    pub ready_at_us: Option<u64>,
    /// Connection attempts made (1 unless an attempt failed).
    pub attempts: u32,
    /// Why attempts failed.
    pub errors: Vec<String>,
    /// Whether the first message was `connected`, followed by the three stats.
    pub snapshot_order_ok: bool,
    /// Every `stats:tasks`: (arrival, µs since base; `total`), in arrival order.
    pub log: Vec<(u64, i64)>,
    /// The last `stats:tasks` payload.
    pub last_tasks: Option<TasksStats>,
    /// Messages other than `stats:*` after the snapshot (`pong`, `error`, …).
    pub other_messages: u64,
    /// Set when the server closed the connection or it failed before the bench stopped it.
    pub dropped: Option<String>,
    /// The last value of every stats topic.
    pub last: AllStats,
    /// Frames that failed to parse (see [`Live`]).
    pub parse_errors: u64,
    /// `seq` going backwards within a topic.
    pub seq_backwards: u64,
    /// Stats messages repeating the previous `seq` of their topic (not an error: a value sent
    /// again during the connect keeps its number).
    pub seq_repeats: u64,
    /// `task:assigned` messages.
    pub assigned: u64,
    /// Up to 3 examples of frames that failed to parse or went backwards.
    pub bad_examples: Vec<String>,
    /// The last `seq` of each stats topic on the current connection.
    pub last_seq: [Option<u64>; 3],
}

/// Connection settings for every client.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// `ws://127.0.0.1:PORT/ws?token=…` of each server instance (at least one); clients are
    /// dealt round-robin, see [`FleetConfig::url_of`].
    pub urls: Vec<String>,
    /// Clients.
    pub clients: usize,
    /// Connects (handshake + snapshot) in flight at once.
    pub concurrency: usize,
    /// Limit for one attempt (TCP connect, upgrade, snapshot).
    pub attempt_timeout: Duration,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Keep every `stats:tasks` arrival in [`ClientOutcome::log`] (latency analysis); a long
    /// soak turns it off, or the log would grow without bound.
    pub keep_log: bool,
    /// A stats message must carry a `seq` (Pulse's contract); the Node peer sends none.
    pub require_seq: bool,
}

/// The server instance client `index` of a fleet connects to: clients are dealt round-robin,
/// so they spread evenly and the analysis knows afterwards which instance each one was on.
pub fn instance_of(index: usize, instances: usize) -> usize {
    index % instances.max(1)
}

impl FleetConfig {
    /// The URL client `index` connects to: that of its instance, see [`instance_of`].
    pub fn url_of(&self, index: usize) -> &str {
        self.urls.get(instance_of(index, self.urls.len())).map_or("", String::as_str)
    }
}

/// The running clients.
pub struct Fleet {
    live: Arc<Vec<Live>>,
    handles: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    /// Spawns every client at once; at most `concurrency` connect at a time.
    pub fn spawn(cfg: &FleetConfig, base: Instant) -> Self {
        let live: Arc<Vec<Live>> = Arc::new((0..cfg.clients).map(|_| Live::default()).collect());
        for l in live.iter() {
            l.latest_total.store(-1, Ordering::Relaxed);
        }
        let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        let (stop, stop_rx) = watch::channel(false);
        let handles = (0..cfg.clients)
            .map(|i| {
                let (cfg, live, sem, stop_rx) = (cfg.clone(), live.clone(), sem.clone(), stop_rx.clone());
                tokio::spawn(async move { run_client(i, &cfg, &live, &sem, stop_rx, base).await })
            })
            .collect();
        Self { live, handles, stop }
    }

    /// (ready, failed) right now.
    pub fn counts(&self) -> (usize, usize) {
        let mut ready = 0;
        let mut failed = 0;
        for l in self.live.iter() {
            match l.state.load(Ordering::Relaxed) {
                READY => ready += 1,
                FAILED | GONE => failed += 1,
                _ => {}
            }
        }
        (ready, failed)
    }

    /// Waits until every client has its snapshot or gave up, at most `limit`.
    pub async fn wait_connected(&self, limit: Duration) -> (usize, usize) {
        let deadline = Instant::now() + limit;
        loop {
            let (ready, failed) = self.counts();
            if ready + failed >= self.live.len() || Instant::now() >= deadline {
                return (ready, failed);
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// A handle on the live state for another task.
    pub fn probe(&self) -> Probe {
        Probe { live: self.live.clone() }
    }

    /// Clients whose last `stats:tasks` has `total >= target`.
    pub fn at_least(&self, target: i64) -> usize {
        self.live.iter().filter(|l| l.latest_total.load(Ordering::Relaxed) >= target).count()
    }

    /// Waits until every client holds `total >= target`, at most `limit`; returns how many do.
    pub async fn wait_all_at_least(&self, target: i64, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.at_least(target);
            if n >= self.live.len() || Instant::now() >= deadline {
                return n;
            }
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// What every client saw so far, with only the `stats:tasks` arrivals at or after
    /// `since_us` in the log (a copy: the clients go on).
    pub fn seen_since(&self, since_us: u64) -> Vec<ClientOutcome> {
        self.live
            .iter()
            .map(|l| {
                let o = l.outcome();
                let mut copy = o.clone_meta();
                copy.log = o.log[o.log.partition_point(|(t, _)| *t < since_us)..].to_vec();
                copy
            })
            .collect()
    }

    /// Closes every connection (close frame, bounded wait) and collects what each client saw.
    pub async fn finish(self, limit: Duration) -> Vec<ClientOutcome> {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + limit;
        for (h, l) in self.handles.into_iter().zip(self.live.iter()) {
            let abort = h.abort_handle();
            match tokio::time::timeout_at(deadline, h).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => l.outcome().dropped = Some(format!("client task failed: {e}")),
                Err(_) => {
                    abort.abort();
                    l.outcome().dropped = Some("did not stop in time".into());
                }
            }
        }
        self.live.iter().map(|l| std::mem::take(&mut *l.outcome())).collect()
    }
}

impl ClientOutcome {
    /// Everything but the log.
    fn clone_meta(&self) -> Self {
        Self {
            connect_us: self.connect_us,
            ready_at_us: self.ready_at_us,
            attempts: self.attempts,
            errors: self.errors.clone(),
            snapshot_order_ok: self.snapshot_order_ok,
            log: Vec::new(),
            last_tasks: self.last_tasks,
            other_messages: self.other_messages,
            dropped: self.dropped.clone(),
            last: self.last,
            parse_errors: self.parse_errors,
            seq_backwards: self.seq_backwards,
            seq_repeats: self.seq_repeats,
            assigned: self.assigned,
            bad_examples: self.bad_examples.clone(),
            last_seq: self.last_seq,
        }
    }
}

/// The fleet's live state, readable from any task while the fleet runs.
#[derive(Debug, Clone)]
pub struct Probe {
    live: Arc<Vec<Live>>,
}

impl Probe {
    /// Sums of the live counters.
    pub fn totals(&self) -> FleetTotals {
        let mut t = FleetTotals::default();
        for l in self.live.iter() {
            match l.state.load(Ordering::Relaxed) {
                READY => t.ready += 1,
                FAILED => t.failed += 1,
                GONE => t.dropped += 1,
                _ => {}
            }
            t.messages += l.messages.load(Ordering::Relaxed);
            t.parse_errors += l.parse_errors.load(Ordering::Relaxed);
            t.seq_backwards += l.seq_backwards.load(Ordering::Relaxed);
            t.assigned += l.assigned.load(Ordering::Relaxed);
        }
        t
    }

    /// Clients that hold every stats topic and whose values all equal `expected`.
    pub fn holding(&self, expected: &AllStats) -> usize {
        self.live.iter().filter(|l| l.outcome().last == *expected).count()
    }
}

fn since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Notes a frame that is not what the protocol describes.
fn bad(out: &mut ClientOutcome, live: &Live, what: String) {
    out.parse_errors += 1;
    live.parse_errors.fetch_add(1, Ordering::Relaxed);
    if out.bad_examples.len() < 3 {
        out.bad_examples.push(what);
    }
}

/// At most 200 characters of a frame, for examples.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The value of stats topic `slot` in `p`, stored in `last`; false when a field is missing.
fn store_value(slot: usize, p: &Payload, last: &mut AllStats) -> bool {
    match slot {
        0 => {
            let (Some(pending), Some(in_progress), Some(completed), Some(total)) =
                (p.pending, p.in_progress, p.completed, p.total)
            else {
                return false;
            };
            last.tasks = Some(TasksStats { pending, in_progress, completed, total });
        }
        1 => {
            let (Some(pending), Some(approved), Some(rejected), Some(executed), Some(total)) =
                (p.pending, p.approved, p.rejected, p.executed, p.total)
            else {
                return false;
            };
            last.approvals = Some(ApprovalsStats { pending, approved, rejected, executed, total });
        }
        _ => {
            let (Some(active), Some(escalated), Some(resolved), Some(total)) =
                (p.active, p.escalated, p.resolved, p.total)
            else {
                return false;
            };
            last.conversations = Some(ConversationsStats { active, escalated, resolved, total });
        }
    }
    true
}

/// Records a text frame; returns its type (None when it does not parse).
fn record(text: &str, base: Instant, live: &Live, cfg: &FleetConfig) -> Option<String> {
    let arrived = since(base);
    live.messages.fetch_add(1, Ordering::Relaxed);
    let out = &mut *live.outcome();
    let frame: Frame<'_> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            bad(out, live, format!("unparsable ({e}): {}", clip(text)));
            return None;
        }
    };
    if let Some(slot) = TOPICS.iter().position(|t| *t == frame.kind) {
        let seq = match frame.seq {
            Some(seq) => Some(seq),
            None if cfg.require_seq => {
                bad(out, live, format!("stats message without seq: {}", clip(text)));
                return None;
            }
            None => None,
        };
        let mut last = out.last;
        if !frame.payload.as_ref().is_some_and(|p| store_value(slot, p, &mut last)) {
            bad(out, live, format!("stats message with a missing field: {}", clip(text)));
            return None;
        }
        out.last = last;
        if let Some(t) = last.tasks
            && slot == 0
        {
            if cfg.keep_log {
                out.log.push((arrived, t.total));
            }
            out.last_tasks = Some(t);
            live.latest_total.store(t.total, Ordering::Relaxed);
        }
        if let Some(seq) = seq {
            match out.last_seq[slot] {
                Some(prev) if seq < prev => {
                    out.seq_backwards += 1;
                    live.seq_backwards.fetch_add(1, Ordering::Relaxed);
                    if out.bad_examples.len() < 3 {
                        out.bad_examples.push(format!("{} seq {prev} then {seq}", TOPICS[slot]));
                    }
                }
                Some(prev) if seq == prev => out.seq_repeats += 1,
                _ => {}
            }
            out.last_seq[slot] = Some(seq);
        }
    } else if frame.kind == "task:assigned" {
        out.assigned += 1;
        live.assigned.fetch_add(1, Ordering::Relaxed);
    }
    Some(frame.kind.into_owned())
}

/// A small read buffer: tungstenite zero-fills its whole read buffer (128 KiB by default)
/// before every read, which made that memset 60 % of the bench's CPU and the bench, not the
/// server, the bottleneck of a fan-out to thousands of sockets. Pulse's frames are small.
fn client_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024)
}

/// Opens the socket and reads until the snapshot (connected + the three stats) is complete.
async fn connect_and_snapshot(url: &str, base: Instant, live: &Live, cfg: &FleetConfig) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(resp) => anyhow!("upgrade refused: HTTP {}", resp.status()),
            e => anyhow!("{e}"),
        })?;
    // The contract's order; a repeated topic (a change committed during the connect) is fine.
    const ORDER: [&str; 4] = ["connected", "stats:tasks", "stats:approvals", "stats:conversations"];
    let mut seen = 0;
    let mut order_ok = true;
    while seen < ORDER.len() {
        let msg = ws.next().await.ok_or_else(|| anyhow!("closed during the snapshot"))??;
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(f) => bail!("closed during the snapshot: {f:?}"),
            _ => continue,
        };
        let kind = record(text.as_str(), base, live, cfg).unwrap_or_default();
        if kind == ORDER[seen] {
            seen += 1;
        } else if !ORDER[1..seen.max(1)].contains(&kind.as_str()) {
            order_ok = false;
            if let Some(i) = ORDER.iter().position(|k| *k == kind) {
                seen = seen.max(i + 1);
            }
        }
    }
    live.outcome().snapshot_order_ok = order_ok;
    Ok(ws)
}

async fn run_client(
    index: usize,
    cfg: &FleetConfig,
    live: &[Live],
    sem: &Semaphore,
    mut stop: watch::Receiver<bool>,
    base: Instant,
) {
    let live = &live[index];
    let permit = sem.acquire().await.ok();
    let started = Instant::now();
    let mut ws = None;
    for attempt in 0..=cfg.retries {
        {
            let mut out = live.outcome();
            out.attempts += 1;
            out.log.clear();
            // A new connection starts new sequences.
            out.last_seq = [None; 3];
        }
        let error = match timeout(
            cfg.attempt_timeout,
            connect_and_snapshot(cfg.url_of(index), base, live, cfg),
        )
        .await
        {
            Ok(Ok(s)) => {
                ws = Some(s);
                break;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no snapshot within {:?}", cfg.attempt_timeout),
        };
        live.outcome().errors.push(error);
        if attempt < cfg.retries {
            sleep(Duration::from_millis(200 << attempt.min(5))).await;
        }
    }
    drop(permit);
    let Some(mut ws) = ws else {
        live.state.store(FAILED, Ordering::Relaxed);
        return;
    };
    {
        let mut out = live.outcome();
        out.connect_us = Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        out.ready_at_us = Some(since(base));
    }
    live.state.store(READY, Ordering::Relaxed);
    // Created once: a fresh `changed()` per message registered and dropped a waiter each
    // time, ~5 % of the bench's CPU at 10,000 clients.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let dropped = loop {
        tokio::select! {
            _ = &mut stopped => {
                // Polite close; the server answers with its own close frame.
                let _ = timeout(Duration::from_secs(5), async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                break None;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some(kind) = record(t.as_str(), base, live, cfg)
                        && !kind.starts_with("stats:")
                    {
                        live.outcome().other_messages += 1;
                    }
                }
                Some(Ok(Message::Close(f))) => break Some(format!("closed by the server: {f:?}")),
                Some(Ok(Message::Binary(b))) => {
                    bad(&mut live.outcome(), live, format!("binary frame of {} bytes", b.len()));
                }
                // Pings are answered by tungstenite on the next read.
                Some(Ok(_)) => {}
                Some(Err(e)) => break Some(format!("connection failed: {e}")),
                None => break Some("connection ended".into()),
            }
        }
    };
    if dropped.is_some() {
        live.outcome().dropped = dropped;
        live.state.store(GONE, Ordering::Relaxed);
    }
}
