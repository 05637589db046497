//! `bench floor`: what a fan-out costs when nothing but the kernel and a minimal reader take
//! part — the floor under any WebSocket server on this machine.
//!
//! N loopback TCP connections inside this process. Each round, `--writers` plain threads write
//! one ready-made WebSocket text frame (a `stats:tasks` message) to every server-side socket,
//! one `write` each, as a server that already holds the encoded frame would; tokio tasks read
//! every frame on the client side (raw reads, no WebSocket parsing). A round lasts from the
//! first write until the last frame is read. Reported: that fan-out time, the writers' CPU per
//! frame (the send path, which on loopback includes the receiving side's TCP processing) and
//! the readers' CPU per frame. Pulse's own figures (`bench`) are read against these; the
//! load bench measures the floor in the same run ([`measure`]).
//!
//! Changes when the floor's method changes; never depends on the server or the phases.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args as ClapArgs;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::procstat;
use crate::report::Pcts;

/// `bench floor` options.
#[derive(Debug, Clone, ClapArgs)]
pub struct FloorArgs {
    /// Connections (both ends live in this process, so two descriptors each: 9,900 fit the
    /// 20,000 open files a process may have here; costs are reported per frame).
    #[arg(long, default_value_t = 9_900)]
    pub sockets: usize,
    /// Fan-out rounds measured.
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    /// Writer threads, each writing to its share of the sockets (Pulse runs one actix worker
    /// per core).
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Pause between rounds, ms.
    #[arg(long, default_value_t = 100)]
    pub pause_ms: u64,
    /// After the rounds, the floor paced like the load bench's change phase: this many rounds
    /// per second, started on schedule whether or not the last one is done (0: skip).
    #[arg(long, default_value_t = 0.0)]
    pub paced_rate: f64,
    /// Paced rounds, per series.
    #[arg(long, default_value_t = 200)]
    pub paced_rounds: usize,
    /// One paced series per value: the sockets written to (at most `--sockets`).
    #[arg(long, value_delimiter = ',')]
    pub paced_sockets: Vec<usize>,
}

/// The floor paced like a change phase: a round starts every 1/rate s on schedule; a writer
/// that is behind writes only the newest round (as a server that conflates would), and a
/// reader that gets round k holds every round up to k.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PacedFloor {
    /// Sockets written each round.
    pub sockets: usize,
    /// Rounds asked per second.
    pub rate: f64,
    /// Rounds started per second, first to last (the pacer is a thread of its own, so this
    /// stays at `rate` unless the machine starves it).
    pub rate_reached: f64,
    /// Rounds started.
    pub rounds: usize,
    /// Frames written (fewer than rounds × sockets when writers fell behind).
    pub frames_written: u64,
    /// Round start → a reader holds it, over every (socket, round) pair, ms.
    pub latency_p50_ms: f64,
    /// … p99, ms.
    pub latency_p99_ms: f64,
    /// … max, ms.
    pub latency_max_ms: f64,
    /// (socket, round) pairs no reader got within the series' wait (none when the floor
    /// keeps up).
    pub pairs_missing: u64,
}

impl PacedFloor {
    /// One line for the console.
    pub fn line(&self) -> String {
        format!(
            "floor paced at {}/s ({:.1}/s reached), {} sockets, {} rounds: round start → reader p50 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms; {} frames written of {}, {} pairs missing",
            self.rate,
            self.rate_reached,
            self.sockets,
            self.rounds,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.latency_max_ms,
            self.frames_written,
            self.rounds * self.sockets,
            self.pairs_missing
        )
    }
}

/// What `bench floor` measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FloorReport {
    /// Loopback connections.
    pub sockets: usize,
    /// Rounds measured.
    pub rounds: usize,
    /// Writer threads.
    pub writers: usize,
    /// Bytes of the frame.
    pub frame_bytes: usize,
    /// First write → last frame read, per round, ms (sorted).
    pub fan_out_ms: Vec<f64>,
    /// Writer threads' CPU per frame written, µs.
    pub writer_cpu_us_per_frame: f64,
    /// The rest of the process (readers, runtime) per frame read, µs.
    pub reader_cpu_us_per_frame: f64,
    /// The paced series, in the order asked for.
    pub paced: Vec<PacedFloor>,
    /// Why the paced series are missing, when they failed (the unpaced figures stand).
    pub paced_error: Option<String>,
}

impl FloorReport {
    /// The fan-out time at quantile `q` (0–1) of the rounds, ms.
    pub fn fan_out_at(&self, q: f64) -> f64 {
        let n = self.fan_out_ms.len();
        if n == 0 {
            return 0.0;
        }
        self.fan_out_ms[((n - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize]
    }

    /// The median fan-out time, ms.
    pub fn fan_out_p50_ms(&self) -> f64 {
        self.fan_out_at(0.5)
    }

    /// The lines for the console.
    pub fn line(&self) -> String {
        let mut line = format!(
            "floor: {} sockets, {} writers, {}-byte frames, {} rounds: fan-out p50 {:.1} ms, max {:.1} ms; \
             CPU per frame: writers {:.2} µs, readers {:.2} µs",
            self.sockets,
            self.writers,
            self.frame_bytes,
            self.rounds,
            self.fan_out_at(0.5),
            self.fan_out_at(1.0),
            self.writer_cpu_us_per_frame,
            self.reader_cpu_us_per_frame
        );
        for p in &self.paced {
            line.push_str("\nbench: ");
            line.push_str(&p.line());
        }
        if let Some(e) = &self.paced_error {
            line.push_str(&format!("\nbench: the paced floor failed: {e}"));
        }
        line
    }
}

/// The `seq` of round 0; a round's number is added to it, so every frame has the same length
/// while rounds stay below 900,000.
const SEQ_BASE: u32 = 100_000;

/// A server → client text frame holding a typical `stats:tasks` message whose `seq` tells the
/// round (six digits at [`seq_offset`]).
fn frame(round: u32) -> Vec<u8> {
    let payload = format!(
        r#"{{"type":"stats:tasks","seq":{},"payload":{{"pending":1234,"inProgress":56,"completed":7890,"total":9180}}}}"#,
        SEQ_BASE + round
    );
    let mut frame = vec![0x81, u8::try_from(payload.len()).unwrap_or(125)];
    frame.extend_from_slice(payload.as_bytes());
    frame
}

/// Where a frame's six `seq` digits start.
fn seq_offset() -> usize {
    let f = frame(0);
    f.windows(6).position(|w| w == b"\"seq\":").map_or(0, |i| i + 6)
}

/// The round a frame is from.
fn round_of(frame: &[u8], offset: usize) -> Option<u32> {
    let digits = std::str::from_utf8(frame.get(offset..offset + 6)?).ok()?;
    digits.parse::<u32>().ok()?.checked_sub(SEQ_BASE)
}

/// `bench floor`: measures, prints a summary and writes `floor.json` under `out_dir`.
pub async fn run(args: &FloorArgs, tck: u64, out_dir: &std::path::Path) -> Result<()> {
    let report = measure(args, tck).await?;
    println!("{}", report.line());
    std::fs::write(out_dir.join("floor.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

/// A writer's order: write round `round` to the first `sockets` sockets of its share.
#[derive(Debug, Clone, Copy)]
struct Order {
    round: u32,
    sockets: usize,
}

/// A writer's answer: the round written, its thread CPU for it (s) and frames written.
type Done = Result<(u32, f64, u64)>;

/// Paced rounds per series at most: the p99 over 10,000 sockets × 1,000 rounds is stable, and
/// the samples (8 bytes a pair) stay within ~100 MB.
pub const MAX_PACED_ROUNDS: usize = 1_000;

/// What the readers share with the driver.
struct Shared {
    /// When each round started, µs since `base` (0: not yet).
    started_us: Vec<AtomicU64>,
    base: Instant,
    /// Rounds below this are the unpaced ones (counted, not timed).
    paced_from: u32,
    /// The last round of the running paced series.
    series_last: AtomicU32,
    /// Frames of the unpaced rounds read.
    read: AtomicUsize,
    /// Readers that got the running paced series' last round.
    series_done: AtomicUsize,
    round_done: Notify,
    last_read: Mutex<Option<Instant>>,
}

/// A reader's (round, round start → read in µs) samples of the paced series.
type Samples = Arc<Mutex<Vec<(u32, u32)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Opens the sockets, runs the rounds and closes everything again.
pub async fn measure(args: &FloorArgs, tck: u64) -> Result<FloorReport> {
    let frame_len = frame(0).len();
    let offset = seq_offset();
    let n = args.sockets;
    let series: Vec<usize> = if args.paced_rate > 0.0 {
        args.paced_sockets.iter().map(|s| (*s).min(n)).collect()
    } else {
        Vec::new()
    };
    let paced_rounds = args.paced_rounds.clamp(1, MAX_PACED_ROUNDS);
    if args.rounds > 10_000 {
        return Err(anyhow!("at most 10,000 rounds"));
    }
    let total_rounds = args.rounds + series.len() * paced_rounds;
    if total_rounds >= 900_000 {
        return Err(anyhow!("at most 899,999 rounds in all"));
    }
    eprintln!("bench floor: {n} loopback connections, {} writer thread(s)", args.writers);
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    let accepting = tokio::task::spawn_blocking(move || {
        (0..n).map(|_| listener.accept().map(|(socket, _)| socket)).collect::<std::io::Result<Vec<_>>>()
    });
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(TcpStream::connect(addr).await.context("connecting")?);
    }
    let servers = accepting.await??;
    for socket in &servers {
        socket.set_nodelay(true)?;
    }

    let shared = Arc::new(Shared {
        started_us: (0..total_rounds).map(|_| AtomicU64::new(0)).collect(),
        base: Instant::now(),
        paced_from: u32::try_from(args.rounds)?,
        series_last: AtomicU32::new(u32::MAX),
        read: AtomicUsize::new(0),
        series_done: AtomicUsize::new(0),
        round_done: Notify::new(),
        last_read: Mutex::new(None),
    });
    // Readers: in the unpaced rounds, the one that reads a round's last frame records the
    // time; in a paced series, each notes when it got every round it now holds.
    let mut samples: Vec<Samples> = Vec::with_capacity(n);
    for mut client in clients {
        let (shared, mine) = (shared.clone(), Samples::default());
        samples.push(mine.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; frame_len];
            let mut held: Option<u32> = None;
            while client.read_exact(&mut buf).await.is_ok() {
                let Some(round) = round_of(&buf, offset) else { continue };
                if round < shared.paced_from {
                    if (shared.read.fetch_add(1, Ordering::AcqRel) + 1) % n == 0 {
                        *lock(&shared.last_read) = Some(Instant::now());
                        shared.round_done.notify_one();
                    }
                    continue;
                }
                let now = u64::try_from(shared.base.elapsed().as_micros()).unwrap_or(u64::MAX);
                let first = held.map_or(shared.paced_from, |h| (h + 1).max(shared.paced_from));
                {
                    let mut mine = lock(&mine);
                    for r in first..=round {
                        let started =
                            shared.started_us.get(r as usize).map_or(0, |s| s.load(Ordering::Acquire));
                        if started > 0 {
                            mine.push((r, u32::try_from(now.saturating_sub(started)).unwrap_or(u32::MAX)));
                        }
                    }
                }
                held = Some(held.map_or(round, |h| h.max(round)));
                if round == shared.series_last.load(Ordering::Acquire) {
                    shared.series_done.fetch_add(1, Ordering::AcqRel);
                    shared.round_done.notify_one();
                }
            }
        });
    }

    // Writers: plain threads, each owning its share of the sockets; one behind on a paced
    // series writes only the newest round it was given.
    let share = n.div_ceil(args.writers.max(1));
    // Tokio's channel, so the driver waits for writers without holding a runtime thread.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let mut orders = Vec::new();
    let mut shares = Vec::new();
    let mut chunks = servers.into_iter().peekable();
    while chunks.peek().is_some() {
        let mut mine: Vec<std::net::TcpStream> = chunks.by_ref().take(share).collect();
        shares.push(mine.len());
        let (order_tx, order_rx) = mpsc::channel::<Order>();
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            while let Ok(mut order) = order_rx.recv() {
                while let Ok(newer) = order_rx.try_recv() {
                    order = newer;
                }
                let result = (|| {
                    let frame = frame(order.round);
                    let before = procstat::thread_cpu_secs(tck)?;
                    let mut written = 0u64;
                    for socket in mine.iter_mut().take(order.sockets) {
                        socket.write_all(&frame)?;
                        written += 1;
                    }
                    Ok((order.round, procstat::thread_cpu_secs(tck)? - before, written))
                })();
                if done_tx.send(result).is_err() {
                    return;
                }
            }
        });
        orders.push(order_tx);
    }

    let process_before = procstat::cpu_secs("self", tck)?;
    let mut writer_cpu = 0.0;
    let mut fan_out_ms = Vec::with_capacity(args.rounds);
    for round in 0..shared.paced_from {
        let started = Instant::now();
        start_round(&shared, round);
        for (order, sockets) in orders.iter().zip(&shares) {
            order.send(Order { round, sockets: *sockets }).map_err(|_| anyhow!("a writer thread stopped"))?;
        }
        for _ in &orders {
            writer_cpu += done_rx.recv().await.ok_or_else(|| anyhow!("a writer thread stopped"))??.1;
        }
        tokio::time::timeout(Duration::from_secs(30), shared.round_done.notified())
            .await
            .map_err(|_| anyhow!("a round was not read within 30 s"))?;
        let finished = lock(&shared.last_read).take().unwrap_or_else(Instant::now);
        fan_out_ms.push(finished.duration_since(started).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    let process_cpu = procstat::cpu_secs("self", tck)? - process_before;

    let pacing =
        Pacing { orders: &orders, shares: &shares, samples: &samples, shared: &shared, rounds: paced_rounds };
    let (paced, paced_error) = match pace(&pacing, args, &series, &mut done_rx).await {
        Ok(paced) => (paced, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    drop(orders);

    let frames = (n * args.rounds).max(1) as f64;
    fan_out_ms.sort_by(f64::total_cmp);
    Ok(FloorReport {
        sockets: n,
        rounds: args.rounds,
        writers: args.writers,
        frame_bytes: frame_len,
        writer_cpu_us_per_frame: writer_cpu / frames * 1e6,
        reader_cpu_us_per_frame: (process_cpu - writer_cpu).max(0.0) / frames * 1e6,
        fan_out_ms,
        paced,
        paced_error,
    })
}

/// What the paced series share with [`measure`].
struct Pacing<'a> {
    orders: &'a [mpsc::Sender<Order>],
    shares: &'a [usize],
    samples: &'a [Samples],
    shared: &'a Arc<Shared>,
    rounds: usize,
}

/// The paced series, one per entry of `series` (sockets written each round).
async fn pace(
    p: &Pacing<'_>,
    args: &FloorArgs,
    series: &[usize],
    done_rx: &mut tokio::sync::mpsc::UnboundedReceiver<Done>,
) -> Result<Vec<PacedFloor>> {
    let shared = p.shared;
    let mut paced = Vec::with_capacity(series.len());
    let mut next_round = shared.paced_from;
    for &sockets in series {
        let first = next_round;
        let last = first + u32::try_from(p.rounds)? - 1;
        next_round = last + 1;
        let per_writer = spread(sockets, p.shares);
        shared.series_done.store(0, Ordering::Release);
        shared.series_last.store(last, Ordering::Release);
        // The schedule runs on a thread of its own: on the runtime it would wake late behind the
        // readers, and the floor would pace itself slower than the changes are paced.
        let (scheduled, schedule) = tokio::sync::oneshot::channel::<Result<f64>>();
        let (shared_for_pacer, orders, rate) = (shared.clone(), p.orders.to_vec(), args.paced_rate);
        std::thread::Builder::new().name("floor-pacer".into()).spawn(move || {
            let began = std::time::Instant::now();
            let mut last_start = began;
            let result = (|| {
                for round in first..=last {
                    let due = began + Duration::from_secs_f64(f64::from(round - first) / rate);
                    if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    last_start = std::time::Instant::now();
                    start_round(&shared_for_pacer, round);
                    for (order, sockets) in orders.iter().zip(&per_writer) {
                        order
                            .send(Order { round, sockets: *sockets })
                            .map_err(|_| anyhow!("a writer thread stopped"))?;
                    }
                }
                let span = last_start.duration_since(began).as_secs_f64();
                Ok(if span > 0.0 { f64::from(last - first) / span } else { rate })
            })();
            let _ = scheduled.send(result);
        })?;
        let rate_reached = schedule.await.map_err(|_| anyhow!("the floor's pacer stopped"))??;
        // Every reader of the series gets its last round (never skipped: nothing comes after).
        let wait = Instant::now() + Duration::from_secs(30);
        while shared.series_done.load(Ordering::Acquire) < sockets {
            if tokio::time::timeout_at(wait, shared.round_done.notified()).await.is_err() {
                break;
            }
        }
        let mut frames_written = 0u64;
        let mut writers_done = 0;
        while writers_done < p.orders.len() {
            let done = tokio::time::timeout(Duration::from_secs(5), done_rx.recv())
                .await
                .map_err(|_| anyhow!("a writer did not finish the paced series"))?
                .ok_or_else(|| anyhow!("a writer thread stopped"))?;
            let (round, _, written) = done?;
            frames_written += written;
            if round == last {
                writers_done += 1;
            }
        }
        let mut latencies: Vec<u64> = Vec::with_capacity(sockets * p.rounds);
        for s in p.samples {
            latencies.extend(
                lock(s).drain(..).filter(|(r, _)| (first..=last).contains(r)).map(|(_, us)| u64::from(us)),
            );
        }
        let pairs = (sockets * p.rounds) as u64;
        let missing = pairs.saturating_sub(latencies.len() as u64);
        let pcts = Pcts::from_us(&mut latencies);
        paced.push(PacedFloor {
            sockets,
            rate: args.paced_rate,
            rate_reached,
            rounds: p.rounds,
            frames_written,
            latency_p50_ms: pcts.p50,
            latency_p99_ms: pcts.p99,
            latency_max_ms: pcts.max,
            pairs_missing: missing,
        });
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    Ok(paced)
}

/// Marks `round` as started now.
fn start_round(shared: &Shared, round: u32) {
    if let Some(s) = shared.started_us.get(round as usize) {
        s.store(
            u64::try_from(shared.base.elapsed().as_micros()).unwrap_or(u64::MAX).max(1),
            Ordering::Release,
        );
    }
}

/// `sockets` spread over writers holding `shares`, in proportion (each writer's first ones);
/// what rounding leaves goes to writers with room.
fn spread(sockets: usize, shares: &[usize]) -> Vec<usize> {
    let total: usize = shares.iter().sum();
    let sockets = sockets.min(total);
    let mut out: Vec<usize> =
        shares.iter().map(|share| (sockets * share / total.max(1)).min(*share)).collect();
    let mut left = sockets - out.iter().sum::<usize>();
    for (taken, share) in out.iter_mut().zip(shares) {
        let more = left.min(share - *taken);
        *taken += more;
        left -= more;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_has_the_same_length_and_tells_its_round() {
        let offset = seq_offset();
        for round in [0, 1, 42, 899_999] {
            let f = frame(round);
            assert_eq!(f.len(), frame(0).len(), "round {round}");
            assert_eq!(usize::from(f[1]), f.len() - 2, "the header's length");
            assert_eq!(round_of(&f, offset), Some(round));
        }
    }

    #[test]
    fn a_series_is_spread_over_the_writers_in_proportion() {
        assert_eq!(spread(5_000, &[4_950, 4_950]), vec![2_500, 2_500]);
        assert_eq!(spread(10_000, &[4_950, 4_950]), vec![4_950, 4_950]);
        assert_eq!(spread(3, &[2, 1]), vec![2, 1]);
        assert_eq!(spread(0, &[5, 5]), vec![0, 0]);
        assert_eq!(spread(7, &[5, 5]).iter().sum::<usize>(), 7);
        assert_eq!(spread(9, &[4, 4, 2]), vec![4, 4, 1], "rounding leaves none out");
        assert_eq!(spread(99, &[4, 4, 2]), vec![4, 4, 2], "at most every socket");
    }
}
