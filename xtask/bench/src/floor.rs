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
use std::sync::atomic::{AtomicUsize, Ordering};
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

    /// One line for the console.
    pub fn line(&self) -> String {
        format!(
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
        )
    }
}

/// A server → client text frame holding a typical `stats:tasks` message.
fn frame() -> Vec<u8> {
    let payload =
        br#"{"type":"stats:tasks","seq":123456,"payload":{"pending":1234,"inProgress":56,"completed":7890,"total":9180}}"#;
    let mut frame = vec![0x81, u8::try_from(payload.len()).unwrap_or(125)];
    frame.extend_from_slice(payload);
    frame
}

/// `bench floor`: measures, prints a summary and writes `floor.json` under `out_dir`.
pub async fn run(args: &FloorArgs, tck: u64, out_dir: &std::path::Path) -> Result<()> {
    let report = measure(args, tck).await?;
    println!("{}", report.line());
    std::fs::write(out_dir.join("floor.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

/// Opens the sockets, runs the rounds and closes everything again.
pub async fn measure(args: &FloorArgs, tck: u64) -> Result<FloorReport> {
    let frame = frame();
    let n = args.sockets;
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

    // Readers: the one that reads the round's last frame records the time.
    let read = Arc::new(AtomicUsize::new(0));
    let round_done = Arc::new(Notify::new());
    let last_read = Arc::new(Mutex::new(None::<Instant>));
    for mut client in clients {
        let (read, round_done, last_read, len) =
            (read.clone(), round_done.clone(), last_read.clone(), frame.len());
        tokio::spawn(async move {
            let mut buf = vec![0u8; len];
            while client.read_exact(&mut buf).await.is_ok() {
                if (read.fetch_add(1, Ordering::AcqRel) + 1) % n == 0 {
                    *last_read.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    round_done.notify_one();
                }
            }
        });
    }

    // Writers: plain threads, each owning its share of the sockets.
    let share = n.div_ceil(args.writers.max(1));
    let (done_tx, done_rx) = mpsc::channel::<Result<f64>>();
    let mut starts = Vec::new();
    let mut chunks = servers.into_iter().peekable();
    while chunks.peek().is_some() {
        let mut mine: Vec<std::net::TcpStream> = chunks.by_ref().take(share).collect();
        let (start_tx, start_rx) = mpsc::channel::<()>();
        let (done_tx, frame) = (done_tx.clone(), frame.clone());
        std::thread::spawn(move || {
            while start_rx.recv().is_ok() {
                let result = (|| {
                    let before = procstat::thread_cpu_secs(tck)?;
                    for socket in &mut mine {
                        socket.write_all(&frame)?;
                    }
                    Ok(procstat::thread_cpu_secs(tck)? - before)
                })();
                if done_tx.send(result).is_err() {
                    return;
                }
            }
        });
        starts.push(start_tx);
    }

    let process_before = procstat::cpu_secs("self", tck)?;
    let mut writer_cpu = 0.0;
    let mut fan_out_ms = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        let started = Instant::now();
        for start in &starts {
            start.send(()).map_err(|_| anyhow!("a writer thread stopped"))?;
        }
        for _ in &starts {
            writer_cpu += done_rx.recv().map_err(|_| anyhow!("a writer thread stopped"))??;
        }
        tokio::time::timeout(Duration::from_secs(30), round_done.notified())
            .await
            .map_err(|_| anyhow!("a round was not read within 30 s"))?;
        let finished =
            last_read.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(Instant::now);
        fan_out_ms.push(finished.duration_since(started).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    let process_cpu = procstat::cpu_secs("self", tck)? - process_before;
    drop(starts);

    let frames = (n * args.rounds) as f64;
    fan_out_ms.sort_by(f64::total_cmp);
    Ok(FloorReport {
        sockets: n,
        rounds: args.rounds,
        writers: args.writers,
        frame_bytes: frame.len(),
        writer_cpu_us_per_frame: writer_cpu / frames * 1e6,
        reader_cpu_us_per_frame: (process_cpu - writer_cpu).max(0.0) / frames * 1e6,
        fan_out_ms,
    })
}
