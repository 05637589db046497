//! The abuse suite: what a flood of bad logins does to one server (`docs/protocol.md` §7,
//! issue 13). 2,000 logins with wrong passwords are sent at once while a logged-in client
//! goes on with ordinary requests (reading stats, creating tasks) and a WebSocket client
//! follows the pushes. The server must refuse what is over its password bound at once
//! (`429` with `Retry-After`), its RSS must grow by less than 64 MiB, the ordinary requests
//! must keep a p99 under 100 ms (asserted: 500 ms, see [`MAX_ORDINARY_P99`]), and the WebSocket client must keep receiving pushes.
//!
//! - Directly, from 2,000 distinct source addresses (127.0.x.y) and usernames, so neither
//!   limit of the login limiter applies and only the password gate's bound protects the
//!   server — on SQLite (where the blocking pool also runs every database call) and on
//!   PostgreSQL.
//! - Through a real nginx (Debian's, as a child process running `deploy/nginx/pulse.conf`)
//!   with `TRUSTED_PROXIES` set: the 2,000 come from one abusive address, which is limited
//!   after 50 attempts, while clients from other addresses (each bound to its own 127.0.0.x)
//!   log in and fail logins unhindered.
//!
//! Timing is a property of an optimised build: the suite runs the server named by
//! `PULSE_RELEASE_SERVER_BIN` when set (`cargo xtask integration` builds one), else
//! `PULSE_SERVER_BIN`.
//!
//! ```text
//! PULSE_RELEASE_SERVER_BIN=target/release/server PULSE_SERVER_BIN=target/debug/server \
//!     cargo test -p suites --test abuse -- --nocapture
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use suites::{Api, Incoming, Nginx, Pulse, ServerOptions, TestDatabase, connect, get_ok, random_string};

/// Logins sent at once.
const FLOOD: usize = 2_000;
/// Largest RSS growth allowed during the flood.
const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;
/// Largest p99 allowed for the logged-in client's ordinary requests during the flood. The
/// goal is 100 ms, and quiet runs stay under it (docs/reliability.md gives the figures); the
/// assertion allows for a CI machine whose two cores are shared with other work, while
/// still failing a server whose gate stalls the API (before the gate: seconds, then 503s).
const MAX_ORDINARY_P99: Duration = Duration::from_millis(500);

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// The `i`-th of 2,000 distinct loopback addresses, never 127.0.0.x (the proxy and the
/// ordinary clients live there).
fn flood_address(i: usize) -> IpAddr {
    ip(&format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250))
}

/// The server under test: an optimised build when one is named.
fn server_options() -> ServerOptions {
    match std::env::var("PULSE_RELEASE_SERVER_BIN") {
        Ok(bin) if !bin.is_empty() => ServerOptions::default().binary(bin),
        _ => ServerOptions::default(),
    }
}

/// The flood: one bad login from each source address, sent by a few threads over plain
/// blocking sockets — each thread connects and sends its share as fast as it can, then reads
/// the answers — so 2,000 logins are in flight at once and sending them costs the test (on
/// the same two cores as the server) a few system calls each: what is measured is the server.
struct Flood {
    logins: Vec<(IpAddr, Vec<u8>)>,
    server: SocketAddr,
}

/// One answer of the flood: its status, whether `Retry-After` came with it, and when it had
/// been read (from the start of the flood).
type Answer = std::io::Result<(u16, bool, Duration)>;

impl Flood {
    /// One login from each of `sources` to `server` (`127.0.0.1:port`), each for an unknown
    /// username with a wrong password.
    fn new(sources: &[IpAddr], server: &str) -> Self {
        let server: SocketAddr = server.parse().expect("a socket address");
        let logins = sources
            .iter()
            .enumerate()
            .map(|(i, source)| {
                let username = format!("flood-{i}-{}", random_string(6).to_lowercase());
                let body = json!({"username": username, "password": "not-the-password"}).to_string();
                let request = format!(
                    "POST /api/v1/auth/login HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                (*source, request.into_bytes())
            })
            .collect();
        Self { logins, server }
    }

    /// Sends every login (four threads) and reads every answer.
    fn send(self) -> Vec<Answer> {
        const THREADS: usize = 4;
        let start = Arc::new(std::sync::Barrier::new(THREADS + 1));
        let mut shares: Vec<Vec<(IpAddr, Vec<u8>)>> = (0..THREADS).map(|_| Vec::new()).collect();
        for (i, login) in self.logins.into_iter().enumerate() {
            shares[i % THREADS].push(login);
        }
        let server = self.server;
        let threads: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    let began = Instant::now();
                    let sent: Vec<_> = share
                        .into_iter()
                        .map(|(source, request)| send_one(source, server, &request))
                        .collect();
                    sent.into_iter().map(|stream| read_answer(stream, began)).collect::<Vec<_>>()
                })
            })
            .collect();
        start.wait();
        threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect()
    }
}

/// Connects from `source` and writes `request`, without waiting for the answer.
fn send_one(source: IpAddr, server: SocketAddr, request: &[u8]) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&server.into())?;
    let mut stream: TcpStream = socket.into();
    stream.write_all(request)?;
    Ok(stream)
}

fn read_answer(stream: std::io::Result<TcpStream>, began: Instant) -> Answer {
    let mut stream = stream?;
    let mut answer = Vec::with_capacity(512);
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    Ok((status, text.contains("\r\nretry-after:"), began.elapsed()))
}

/// What one flood did, for the assertions and for `docs/reliability.md`.
#[derive(Debug, Default)]
struct Figures {
    refused_429: usize,
    refused_429_without_retry_after: usize,
    unauthorized_401: usize,
    other: Vec<String>,
    /// From the first login sent to the last answer read.
    flood_duration: Duration,
    /// When the 429 answers had been read: p50, p99, max.
    refusal_latency: [Duration; 3],
    /// CPU time the server used during the flood.
    server_cpu: Duration,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    rss_after_kib: u64,
    /// Ordinary requests during the flood: count, p50, p99, max.
    ordinary: (usize, [Duration; 3]),
    /// `stats:tasks` pushes the WebSocket client received during the flood.
    pushes: usize,
}

impl Figures {
    fn growth_kib(&self) -> u64 {
        self.rss_peak_kib.saturating_sub(self.rss_before_kib)
    }

    fn report(&self, name: &str) -> String {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        format!(
            "{name}: {FLOOD} bad logins answered in {} ms ({:.0}/s; server CPU {} ms): {} × 429 (answered by \
             p50 {} / p99 {} / max {} ms), {} × 401, {} other; RSS {} → peak {} → {} MiB (growth {} MiB); \
             ordinary requests during the flood: {} (p50 {} / p99 {} / max {} ms); {} stats:tasks pushes received",
            ms(self.flood_duration),
            FLOOD as f64 / self.flood_duration.as_secs_f64(),
            ms(self.server_cpu),
            self.refused_429,
            ms(self.refusal_latency[0]),
            ms(self.refusal_latency[1]),
            ms(self.refusal_latency[2]),
            self.unauthorized_401,
            self.other.len(),
            mib(self.rss_before_kib),
            mib(self.rss_peak_kib),
            mib(self.rss_after_kib),
            mib(self.growth_kib()),
            self.ordinary.0,
            ms(self.ordinary.1[0]),
            ms(self.ordinary.1[1]),
            ms(self.ordinary.1[2]),
            self.pushes,
        )
    }
}

/// p50, p99 and max of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> [Duration; 3] {
    if samples.is_empty() {
        return [Duration::ZERO; 3];
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    [at(0.50), at(0.99), samples[samples.len() - 1]]
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User and system CPU time of a process so far (`/proc/<pid>/stat`, in clock ticks of
/// 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Where the flood and the bystanders go.
struct Target<'a> {
    /// The server process (for its memory and CPU).
    pid: u32,
    /// `127.0.0.1:port` of what clients talk to (the server, or nginx in front of it).
    addr: String,
    /// The WebSocket URL, given a query.
    ws_url: Box<dyn Fn(&str) -> String + 'a>,
}

/// Runs the flood — one bad login from each of `sources`, all at once, on connections opened
/// beforehand — while `ordinary` (a logged-in client) reads stats and creates tasks and a
/// WebSocket client with `token` counts the pushes. Returns the figures.
async fn flood(target: &Target<'_>, ordinary: &Api, token: &str, sources: Vec<IpAddr>) -> Figures {
    let mut figures = Figures::default();
    let mut ws = connect(&(target.ws_url)(&format!("token={token}"))).await.expect("WebSocket");
    for _ in 0..4 {
        ws.next_json(Duration::from_secs(5)).await.expect("opening messages");
    }
    let flooding = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (flooding, stop) = (flooding.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut pushes, mut last) = (0usize, Value::Null);
            while !stop.load(Ordering::SeqCst) {
                match ws.next_incoming(Duration::from_millis(100)).await {
                    Some(Incoming::Json(v)) if v["type"] == "stats:tasks" => {
                        if flooding.load(Ordering::SeqCst) {
                            pushes += 1;
                        }
                        last = v["payload"].clone();
                    }
                    Some(Incoming::Json(_)) | None => {}
                    Some(other) => panic!("the WebSocket client was cut off: {other:?}"),
                }
            }
            (pushes, last, ws)
        })
    };
    let bystander = {
        let (api, flooding, stop) = (ordinary.clone(), flooding.clone(), stop.clone());
        tokio::spawn(async move {
            let mut during = Vec::new();
            let body = json!({"type": "housekeeping", "department": "rooms", "description": "Fresh towels"});
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let began = Instant::now();
                let in_flood = flooding.load(Ordering::SeqCst);
                let status = if n.is_multiple_of(2) {
                    api.get("/api/v1/tasks/stats").await.expect("request").status
                } else {
                    api.post("/api/v1/tasks", &body).await.expect("request").status
                };
                assert!(
                    status == 200 || status == 201,
                    "an ordinary request failed during the flood: HTTP {status}"
                );
                if in_flood && flooding.load(Ordering::SeqCst) {
                    during.push(began.elapsed());
                }
                // Back to back during the flood (enough samples for a p99), calmly otherwise.
                if !flooding.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            during
        })
    };
    // Memory: the baseline once everything is warm, then sampled until the end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = target.pid;
    let (rss_before, hwm_before) = memory_kib(pid);
    figures.rss_before_kib = rss_before;
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(memory_kib(pid).0);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };

    let logins = Flood::new(&sources, &target.addr);
    let cpu_before = cpu_time(pid);
    flooding.store(true, Ordering::SeqCst);
    let answers = tokio::task::spawn_blocking(move || logins.send()).await.expect("the flood");
    flooding.store(false, Ordering::SeqCst);
    figures.server_cpu = cpu_time(pid).saturating_sub(cpu_before);
    let mut refusals = Vec::new();
    for answer in answers {
        match answer {
            Ok((429, retry_after, at)) => {
                figures.refused_429 += 1;
                figures.refused_429_without_retry_after += usize::from(!retry_after);
                refusals.push(at);
                figures.flood_duration = figures.flood_duration.max(at);
            }
            Ok((401, _, at)) => {
                figures.unauthorized_401 += 1;
                figures.flood_duration = figures.flood_duration.max(at);
            }
            Ok((status, _, _)) => figures.other.push(format!("HTTP {status}")),
            Err(e) => figures.other.push(e.to_string()),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let sampled_peak = sampler.join().expect("sampler");
    let (rss_after, hwm_after) = memory_kib(pid);
    // VmHWM is exact but counts from the start: it says something only when it moved.
    figures.rss_peak_kib =
        sampled_peak.max(rss_after).max(if hwm_after > hwm_before { hwm_after } else { 0 });
    figures.rss_after_kib = rss_after;
    figures.refusal_latency = percentiles(refusals);
    let during = bystander.await.expect("the ordinary client");
    figures.ordinary = (during.len(), percentiles(during));
    let (pushes, mut last, mut ws) = watcher.await.expect("the WebSocket client");
    figures.pushes = pushes;
    // Once changes stop, the socket converges to what REST says (the last creation's push
    // may still be on its way).
    let stats = get_ok(ordinary, "/api/v1/tasks/stats").await;
    let deadline = Instant::now() + suites::WAIT;
    while last != stats && Instant::now() < deadline {
        match ws.next_incoming(deadline.saturating_duration_since(Instant::now())).await {
            Some(Incoming::Json(v)) if v["type"] == "stats:tasks" => last = v["payload"].clone(),
            Some(Incoming::Json(_)) => {}
            other => panic!("the WebSocket client was cut off: {other:?}"),
        }
    }
    assert_eq!(last, stats, "the WebSocket client's last stats:tasks differs from GET /api/v1/tasks/stats");
    ws.close().await;
    figures
}

/// The assertions every flood must pass.
fn assert_harmless(figures: &Figures) {
    let other = &figures.other;
    assert!(other.is_empty(), "answers other than 401/429: {:?}", &other[..other.len().min(5)]);
    assert_eq!(figures.refused_429 + figures.unauthorized_401, FLOOD);
    assert!(figures.refused_429 > 0, "nothing was refused: the bound did not hold");
    assert_eq!(figures.refused_429_without_retry_after, 0, "a 429 without Retry-After");
    assert!(
        figures.growth_kib() < MAX_RSS_GROWTH_KIB,
        "RSS grew by {:.1} MiB (limit 64 MiB)",
        figures.growth_kib() as f64 / 1024.0
    );
    assert!(figures.ordinary.0 >= 3, "too few ordinary requests during the flood ({})", figures.ordinary.0);
    assert!(
        figures.ordinary.1[1] < MAX_ORDINARY_P99,
        "ordinary requests during the flood: p99 {:?} (limit {MAX_ORDINARY_P99:?})",
        figures.ordinary.1[1]
    );
    assert!(figures.pushes > 0, "the WebSocket client received no push during the flood");
}

/// A staff member who goes on working during the flood: their client (from `address`, to
/// `base`) and token.
async fn bystander(p: &Pulse, base: &str, address: &str) -> (Api, String) {
    p.admin.create_user("ops", "ops-password", "staff").await.expect("user");
    let api = Api::bound_to(base, ip(address)).expect("client");
    let token = api.login("ops", "ops-password").await.expect("login");
    (api.with_token(&token), token)
}

/// One flood at a time: each measures latency on the machine's two cores, which a second
/// flood running beside it would take (the tests of this file otherwise run in parallel).
static ONE_FLOOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// The figures are this suite's report (docs/reliability.md), printed before they are checked.
#[allow(clippy::print_stderr)]
async fn from_2000_addresses(db: TestDatabase, name: &str) {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    let p = Pulse::start_with(db, server_options()).await.expect("starting the server");
    let base = p.server.base_url();
    let (ordinary, token) = bystander(&p, &base, "127.0.0.2").await;
    let addr = base.trim_start_matches("http://").to_owned();
    let target = Target {
        pid: p.server.pid(),
        addr: addr.clone(),
        ws_url: Box::new(|q: &str| format!("ws://{addr}/ws?{q}")),
    };
    let figures = flood(&target, &ordinary, &token, (0..FLOOD).map(flood_address).collect()).await;
    eprintln!("{}", figures.report(name));
    assert_harmless(&figures);
    // Afterwards a real login works at once, from anywhere.
    Api::bound_to(&base, ip("127.0.9.9")).expect("client").login("ops", "ops-password").await.expect("login");
    let refused =
        p.server.metric("pulse_password_checks_refused_total").await.expect("metrics").unwrap_or(0.0);
    assert!(refused as usize >= figures.refused_429, "/metrics counts {refused} refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_2000_addresses_is_refused_at_once_on_sqlite() {
    from_2000_addresses(TestDatabase::sqlite().expect("db"), "direct, SQLite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_2000_addresses_is_refused_at_once_on_postgres() {
    from_2000_addresses(TestDatabase::postgres().expect("db"), "direct, PostgreSQL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_one_abusive_address_is_limited_and_the_others_are_not() {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    let p = Pulse::start_with(
        TestDatabase::sqlite().expect("db"),
        server_options().env("TRUSTED_PROXIES", "127.0.0.1"),
    )
    .await
    .expect("starting the server");
    let nginx =
        Nginx::start(&[p.server.base_url().trim_start_matches("http://").to_owned()]).await.expect("nginx");
    let base = nginx.base_url();
    let (ordinary, token) = bystander(&p, &base, "127.0.0.2").await;
    // Every flood login comes from one address, through the proxy.
    let addr = base.trim_start_matches("http://").to_owned();
    let target = Target { pid: p.server.pid(), addr, ws_url: Box::new(|q: &str| nginx.ws_url(q)) };
    let figures = flood(&target, &ordinary, &token, vec![ip("127.0.0.66"); FLOOD]).await;
    eprintln!("{}", figures.report("through nginx, one address, SQLite"));
    assert_harmless(&figures);
    assert!(
        figures.unauthorized_401 <= 50,
        "{} of the abusive address's logins were checked (its limit is 50)",
        figures.unauthorized_401
    );
    // The abusive address is limited, even with the right password …
    let abusive = Api::bound_to(&base, ip("127.0.0.66")).expect("client");
    let limited = abusive.login_response("ops", "ops-password").await.expect("request");
    limited.expect_error(429, &["too_many_requests"]);
    assert!(limited.retry_after.is_some());
    // … the others are not: they log in, and their bad logins are just wrong.
    for i in 10..20 {
        let other = Api::bound_to(&base, ip(&format!("127.0.0.{i}"))).expect("client");
        other
            .login("ops", "ops-password")
            .await
            .unwrap_or_else(|e| panic!("127.0.0.{i} could not log in: {e}"));
        let wrong = other.login_response(&format!("someone-{i}"), "not-the-password").await.expect("request");
        wrong.expect_error(401, &["unauthorized"]);
    }
    // The address limit refused what the bound did not.
    let throttled =
        p.server.metric("pulse_password_attempts_throttled_total").await.expect("metrics").unwrap_or(0.0);
    let busy = p.server.metric("pulse_password_checks_refused_total").await.expect("metrics").unwrap_or(0.0);
    eprintln!("through nginx: {throttled} refused by the address limit, {busy} by the password bound");
    assert!(throttled as usize >= FLOOD - 50, "only {throttled} refused by the address limit");
    // The server saw the clients' addresses, not the proxy's.
    let log = p.server.logs();
    assert!(log.contains("client=127.0.0.66"), "the access log does not name the abusive client");
    assert!(log.contains("client=127.0.0.12"), "the access log does not name the other clients");
    let proxied = nginx.access_log();
    assert!(proxied.lines().filter(|l| l.starts_with("127.0.0.66 ")).count() >= FLOOD, "nginx saw the flood");
}
