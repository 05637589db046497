//! A TCP proxy between a server instance and PostgreSQL that a test can fault, as toxiproxy
//! does: cut connections, refuse new ones, stall them (accept but never answer), delay them,
//! or lose the acknowledgement of a commit.
//!
//! Every byte is forwarded unchanged. The proxy reads just enough of the PostgreSQL wire
//! protocol to name each connection by the `application_name` of its StartupMessage (the
//! server names its connections `pulse-<8 hex>` for the pool, `…-listener` and `…-outbound`)
//! and to count what crosses it: transactions (as PostgreSQL counts them in
//! `pg_stat_database`, but exactly and at once) and executed statements. The protocol is read by hand because the maintained
//! crates (postgres-protocol) parse only the server's messages, not the client's, and
//! toxiproxy is a separate Go service that cannot tell connections apart by name.
//!
//! Reason to change: a fault or a count the suites need. Must never depend on the server's
//! crates: it sees an instance only through the wire protocol, as PostgreSQL does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Protocol codes of the untagged packets a client may send first.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Longest first packet accepted (PostgreSQL itself allows 10,000 bytes).
const MAX_STARTUP: usize = 10_000;
/// Longest message body kept to read a statement's text; longer ones are only forwarded.
const MAX_KEPT_BODY: usize = 64 * 1024;
/// Bound on the distinct `(connection name, statement)` pairs counted.
const MAX_STATEMENT_KEYS: usize = 4096;
/// Bound on the prepared statements and portals remembered per connection.
const MAX_NAMED: usize = 1024;
/// Bound on the query cycles a client may have in flight (pipelined) that are remembered.
const MAX_CYCLES: usize = 4096;
/// Statement texts are counted by their first this many characters.
const STATEMENT_CHARS: usize = 160;

/// Which connections a control applies to, by their `application_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Every connection.
    All,
    /// An instance's pool connections: `pulse-<8 hex>` with no role suffix.
    Pool,
    /// Names ending with this, e.g. `-listener`.
    Suffix(String),
    /// Names containing this.
    Contains(String),
}

impl Filter {
    /// The LISTEN connection of an instance (`pulse-<8 hex>-listener`).
    pub fn listener() -> Self {
        Filter::Suffix("-listener".into())
    }

    /// The doorbell and presence connection of an instance (`pulse-<8 hex>-outbound`).
    pub fn outbound() -> Self {
        Filter::Suffix("-outbound".into())
    }

    /// Whether a connection named `name` is concerned.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Pool => {
                name.strip_prefix("pulse-").is_some_and(|rest| !rest.is_empty() && !rest.contains('-'))
            }
            Filter::Suffix(s) => name.ends_with(s.as_str()),
            Filter::Contains(s) => name.contains(s.as_str()),
        }
    }
}

/// The role of a server connection, from its name: `pool`, `listener`, `outbound` or `other`.
pub fn role_of(name: &str) -> &'static str {
    if Filter::Pool.matches(name) {
        "pool"
    } else if Filter::listener().matches(name) {
        "listener"
    } else if Filter::outbound().matches(name) {
        "outbound"
    } else {
        "other"
    }
}

/// What the proxy has seen so far.
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Connections accepted, by name (`(none)` without an `application_name`, `(cancel)` for
    /// cancel requests, `(encrypted)` when the session went TLS and could not be read).
    pub seen: BTreeMap<String, usize>,
    /// Connections closed at once by [`PgProxy::refuse`], by name.
    pub refused: BTreeMap<String, usize>,
    /// Connections closed by [`PgProxy::cut`].
    pub cut: usize,
    /// Connections closed by [`PgProxy::cut_after_commit`] after forwarding a `COMMIT`.
    pub commits_cut: usize,
    /// Transactions ended (committed or rolled back), by connection name: every
    /// `ReadyForQuery` that reports the session idle and answers a query, or a `Sync` after
    /// extended-protocol messages that start a transaction (`Parse`, `Bind`, `Describe`,
    /// `Execute`), and each session's startup. A `Sync` after only a `Close` is a round trip
    /// but no transaction. This is what PostgreSQL counts in `xact_commit` and
    /// `xact_rollback`.
    pub transactions: BTreeMap<String, u64>,
    /// Statements executed (simple queries and extended-protocol `Execute`s), by connection
    /// name and statement text (whitespace collapsed, cut to 160 characters).
    pub statements: BTreeMap<(String, String), u64>,
}

impl ProxyStats {
    /// Transactions of the connections whose name matches `filter`.
    pub fn transactions_of(&self, filter: &Filter) -> u64 {
        self.transactions.iter().filter(|(n, _)| filter.matches(n)).map(|(_, c)| c).sum()
    }

    /// Connections accepted whose name matches `filter`.
    pub fn seen_of(&self, filter: &Filter) -> usize {
        self.seen.iter().filter(|(n, _)| filter.matches(n)).map(|(_, c)| c).sum()
    }

    /// Executions of the statements (on connections matching `filter`) for which `pick`
    /// returns true, given the statement text.
    pub fn executions(&self, filter: &Filter, pick: impl Fn(&str) -> bool) -> u64 {
        self.statements.iter().filter(|((n, sql), _)| filter.matches(n) && pick(sql)).map(|(_, c)| c).sum()
    }
}

/// What applies to one connection now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Ctl {
    stalled: bool,
    delay: Duration,
    cut: bool,
}

#[derive(Default)]
struct State {
    next_id: u64,
    closed: bool,
    open: HashMap<u64, (String, watch::Sender<Ctl>)>,
    refuse: Option<Filter>,
    stall: Option<Filter>,
    delay: Option<(Filter, Duration)>,
    cut_after_commit: Option<Filter>,
    /// Like `cut_after_commit`, but the connection stays open and silent.
    stall_after_commit: bool,
    stats: ProxyStats,
}

impl State {
    fn ctl_for(&self, name: &str) -> Ctl {
        Ctl {
            stalled: self.stall.as_ref().is_some_and(|f| f.matches(name)),
            delay: self.delay.as_ref().filter(|(f, _)| f.matches(name)).map_or(Duration::ZERO, |(_, d)| *d),
            cut: self.closed,
        }
    }

    /// Recomputes every open connection's controls after a change of the global ones.
    fn apply(&self) {
        for (name, ctl) in self.open.values() {
            let next = Ctl { cut: ctl.borrow().cut, ..self.ctl_for(name) };
            ctl.send_if_modified(|c| {
                let changed = *c != next;
                *c = next;
                changed
            });
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    commit_cut: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fault-injecting proxy on `127.0.0.1:<free port>` in front of one PostgreSQL server.
/// Dropping it closes every connection it carries.
pub struct PgProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for PgProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgProxy").field("addr", &self.addr).field("upstream", &self.shared.upstream).finish()
    }
}

impl PgProxy {
    /// Starts a proxy to `upstream` (PostgreSQL's address).
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let shared =
            Arc::new(Shared { upstream, state: Mutex::new(State::default()), commit_cut: Notify::new() });
        let accepting = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(Arc::clone(&accepting), client));
            }
        });
        Ok(Self { addr, shared, accept })
    }

    /// Starts a proxy to the server of the PostgreSQL URL `url`.
    pub async fn for_url(url: &str) -> Result<Self> {
        Self::start(upstream_of(url)?).await
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_via(&self, url: &str) -> Result<String> {
        replace_authority_host(url, &self.addr.to_string())
    }

    /// Closes the matching open connections now, both sides; returns how many.
    pub fn cut(&self, filter: &Filter) -> usize {
        let mut state = self.shared.lock();
        let mut n = 0;
        for (name, ctl) in state.open.values() {
            if filter.matches(name) && !ctl.borrow().cut {
                ctl.send_modify(|c| c.cut = true);
                n += 1;
            }
        }
        state.stats.cut += n;
        n
    }

    /// While `Some`, new matching connections are closed as soon as their name is known
    /// (an outage window); `None` lets them through again. Open connections are untouched.
    pub fn refuse(&self, filter: Option<Filter>) {
        self.shared.lock().refuse = filter;
    }

    /// Stops forwarding, both ways, on the matching connections, open and new, until
    /// [`PgProxy::resume`]: their sockets stay open and nothing comes back ("accept but never
    /// answer"). Returns how many open connections it stalled.
    pub fn stall(&self, filter: Filter) -> usize {
        let mut state = self.shared.lock();
        let n = state.open.values().filter(|(name, _)| filter.matches(name)).count();
        state.stall = Some(filter);
        state.apply();
        n
    }

    /// Ends a [`PgProxy::stall`]: what was held is forwarded.
    pub fn resume(&self) {
        let mut state = self.shared.lock();
        state.stall = None;
        state.apply();
    }

    /// Adds `delay` before each chunk forwarded, both ways, on the matching connections, open
    /// and new; `Duration::ZERO` removes it.
    pub fn delay(&self, filter: Filter, delay: Duration) {
        let mut state = self.shared.lock();
        state.delay = (!delay.is_zero()).then_some((filter, delay));
        state.apply();
    }

    /// Arms a lost commit acknowledgement, once: the next time a client sends a simple-query
    /// `COMMIT` on a matching connection, the proxy forwards it, waits for the server's
    /// answer (so the transaction has committed), drops that answer and closes the connection.
    pub fn cut_after_commit(&self, filter: Filter) {
        let mut state = self.shared.lock();
        state.cut_after_commit = Some(filter);
        state.stall_after_commit = false;
    }

    /// Like [`PgProxy::cut_after_commit`], but the connection is not closed: it stays open
    /// and the client never hears back (a stalled `COMMIT` that did commit). Counted by
    /// [`PgProxy::wait_commits_cut`] too.
    pub fn stall_after_commit(&self, filter: Filter) {
        let mut state = self.shared.lock();
        state.cut_after_commit = Some(filter);
        state.stall_after_commit = true;
    }

    /// Waits (at most `timeout`) until [`PgProxy::cut_after_commit`] has fired `n` times in
    /// all; returns whether it has.
    pub async fn wait_commits_cut(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.commit_cut.notified();
            if self.shared.lock().stats.commits_cut >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return self.shared.lock().stats.commits_cut >= n;
            }
        }
    }

    /// The names of the open connections matching `filter`.
    pub fn open(&self, filter: &Filter) -> Vec<String> {
        let state = self.shared.lock();
        let mut names: Vec<String> =
            state.open.values().filter(|(n, _)| filter.matches(n)).map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    }

    /// Everything counted so far.
    pub fn stats(&self) -> ProxyStats {
        self.shared.lock().stats.clone()
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        let mut state = self.shared.lock();
        state.closed = true;
        for (_, ctl) in state.open.values() {
            ctl.send_modify(|c| c.cut = true);
        }
    }
}

/// The `host:port` of a `postgres://` URL, resolved (port 5432 when absent).
pub fn upstream_of(url: &str) -> Result<SocketAddr> {
    let authority = authority(url)?;
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let with_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .ok_or_else(|| anyhow!("{with_port} resolves to nothing"))
}

fn authority(url: &str) -> Result<&str> {
    let start = url.find("://").ok_or_else(|| anyhow!("not a URL: {url}"))? + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Ok(&rest[..end])
}

/// `postgres://user@host:port/db?x` → `postgres://user@<host_port>/db?x`.
fn replace_authority_host(url: &str, host_port: &str) -> Result<String> {
    let authority = authority(url)?;
    let start = url.find(authority).ok_or_else(|| anyhow!("no authority in {url}"))?;
    let user = authority.rfind('@').map_or("", |i| &authority[..=i]);
    Ok(format!("{}{user}{host_port}{}", &url[..start], &url[start + authority.len()..]))
}

// ---------------------------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------------------------

/// How a session began.
struct Startup {
    name: String,
    /// The packet to forward once the connection may go on (empty: already forwarded).
    packet: Vec<u8>,
    /// Whether what follows is plain framed protocol the proxy can read.
    readable: bool,
}

/// Takes the connection out of the open set when it ends, however it ends.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock().open.remove(&self.id);
    }
}

async fn serve(shared: Arc<Shared>, mut client: TcpStream) {
    let Ok(mut server) = TcpStream::connect(shared.upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let Ok(startup) = startup(&mut client, &mut server).await else { return };
    let (registration, ctl) = {
        let mut state = shared.lock();
        *state.stats.seen.entry(startup.name.clone()).or_default() += 1;
        if state.closed || state.refuse.as_ref().is_some_and(|f| f.matches(&startup.name)) {
            *state.stats.refused.entry(startup.name.clone()).or_default() += 1;
            return;
        }
        state.next_id += 1;
        let id = state.next_id;
        let (tx, rx) = watch::channel(state.ctl_for(&startup.name));
        state.open.insert(id, (startup.name.clone(), tx));
        (Registration { shared: Arc::clone(&shared), id }, rx)
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let mut held = ctl.clone();
    if !startup.packet.is_empty() {
        if !ready(&mut held).await {
            return;
        }
        if server_write.write_all(&startup.packet).await.is_err() {
            return;
        }
    }
    let conn = Arc::new(ConnState {
        shared: Arc::clone(&shared),
        name: startup.name,
        stall_on_lost_answer: std::sync::atomic::AtomicBool::new(false),
        cycles: Mutex::new(VecDeque::new()),
    });
    let upstream = pump(
        client_read,
        server_write,
        ctl.clone(),
        Arc::clone(&conn),
        Direction::ToServer,
        startup.readable,
    );
    let downstream =
        pump(server_read, client_write, ctl, Arc::clone(&conn), Direction::ToClient, startup.readable);
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
    drop(registration);
}

/// Reads the client's first packet(s): answers an SSL or GSS encryption request through the
/// server, then returns the StartupMessage with the connection's name.
async fn startup(client: &mut TcpStream, server: &mut TcpStream) -> Result<Startup> {
    for _ in 0..3 {
        let packet = read_packet(client).await?;
        let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                server.write_all(&packet).await?;
                let mut answer = [0u8; 1];
                server.read_exact(&mut answer).await?;
                client.write_all(&answer).await?;
                if answer[0] == b'S' || answer[0] == b'G' {
                    return Ok(Startup { name: "(encrypted)".into(), packet: Vec::new(), readable: false });
                }
            }
            CANCEL_REQUEST => return Ok(Startup { name: "(cancel)".into(), packet, readable: false }),
            _ => {
                let name = startup_parameter(&packet[8..], "application_name")
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "(none)".into());
                return Ok(Startup { name, packet, readable: true });
            }
        }
    }
    bail!("no StartupMessage after three encryption requests")
}

async fn read_packet(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if !(8..=MAX_STARTUP).contains(&n) {
        bail!("first packet of {n} bytes");
    }
    let mut packet = vec![0u8; n];
    packet[..4].copy_from_slice(&len);
    stream.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}

/// The value of `key` in a StartupMessage's `key\0value\0…\0` parameters.
fn startup_parameter(params: &[u8], key: &str) -> Option<String> {
    let mut fields = params.split(|b| *b == 0);
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        if k.is_empty() {
            return None;
        }
        if k == key.as_bytes() {
            return Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    None
}

/// Waits while the connection is stalled; `false` when it is cut (or the proxy is gone).
async fn ready(ctl: &mut watch::Receiver<Ctl>) -> bool {
    loop {
        let now = *ctl.borrow_and_update();
        if now.cut {
            return false;
        }
        if !now.stalled {
            return true;
        }
        if ctl.changed().await.is_err() {
            return false;
        }
    }
}

/// Returns when the connection is cut.
async fn cut(ctl: &mut watch::Receiver<Ctl>) {
    loop {
        if ctl.borrow_and_update().cut || ctl.changed().await.is_err() {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

struct ConnState {
    shared: Arc<Shared>,
    name: String,
    /// Its lost `COMMIT` answer leaves it open and silent instead of closed.
    stall_on_lost_answer: std::sync::atomic::AtomicBool,
    /// The query cycles the client has sent (a simple query, or extended-protocol messages
    /// up to a `Sync`) and the server has not answered with `ReadyForQuery` yet.
    cycles: Mutex<VecDeque<Cycle>>,
}

/// One query cycle in flight.
#[derive(Debug, Clone, Copy, Default)]
struct Cycle {
    /// It starts a transaction (PostgreSQL counts it in `xact_commit` or `xact_rollback`).
    transaction: bool,
    /// It is the `COMMIT` whose answer [`PgProxy::cut_after_commit`] loses.
    lose_answer: bool,
}

impl ConnState {
    fn cycle_sent(&self, cycle: Cycle) {
        let mut cycles = self.cycles.lock().unwrap_or_else(|p| p.into_inner());
        if cycles.len() == MAX_CYCLES {
            cycles.pop_front();
        }
        cycles.push_back(cycle);
    }

    /// The cycle a `ReadyForQuery` answers (`None`: the one that ends the startup).
    fn cycle_answered(&self) -> Option<Cycle> {
        self.cycles.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    /// Whether a `COMMIT` on this connection is to lose its answer (once).
    fn take_commit_cut(&self) -> bool {
        let mut state = self.shared.lock();
        let armed = state.cut_after_commit.as_ref().is_some_and(|f| f.matches(&self.name));
        if armed {
            state.cut_after_commit = None;
            self.stall_on_lost_answer.store(state.stall_after_commit, std::sync::atomic::Ordering::SeqCst);
        }
        armed
    }
}

/// Forwards one direction until EOF, an error or a cut, reading the messages on the way.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut ctl: watch::Receiver<Ctl>,
    conn: Arc<ConnState>,
    direction: Direction,
    readable: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut reader = Reader::new(direction);
    let mut on_cut = ctl.clone();
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = cut(&mut on_cut) => return,
        };
        let chunk = &buf[..n];
        if readable && reader.read(chunk, &conn) {
            // The server has answered the COMMIT (so it committed): the chunk with that
            // answer is lost, and the connection with it.
            conn.shared.lock().stats.commits_cut += 1;
            conn.shared.commit_cut.notify_waiters();
            if conn.stall_on_lost_answer.load(std::sync::atomic::Ordering::SeqCst) {
                cut(&mut on_cut).await;
            }
            return;
        }
        if !ready(&mut ctl).await {
            return;
        }
        let delay = ctl.borrow().delay;
        let send = async {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            to.write_all(chunk).await
        };
        tokio::select! {
            r = send => if r.is_err() { return },
            _ = cut(&mut on_cut) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the protocol
// ---------------------------------------------------------------------------------------------

/// Splits one direction of a session (after its first packet) into messages: a type byte, a
/// big-endian length that counts itself, then the body. Bodies of the `interesting` types up
/// to [`MAX_KEPT_BODY`] are handed over whole; others only by type.
#[derive(Default)]
struct Framer {
    head: [u8; 5],
    head_len: usize,
    remaining: usize,
    keep: bool,
    body: Vec<u8>,
}

impl Framer {
    fn feed(
        &mut self,
        mut data: &[u8],
        interesting: impl Fn(u8) -> bool,
        mut out: impl FnMut(u8, Option<&[u8]>),
    ) {
        while !data.is_empty() {
            if self.head_len < 5 {
                let take = (5 - self.head_len).min(data.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&data[..take]);
                self.head_len += take;
                data = &data[take..];
                if self.head_len == 5 {
                    let len = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]);
                    self.remaining = (len as usize).saturating_sub(4);
                    self.keep = interesting(self.head[0]) && self.remaining <= MAX_KEPT_BODY;
                    self.body.clear();
                    if self.remaining == 0 {
                        out(self.head[0], Some(&[]));
                        self.head_len = 0;
                    }
                }
                continue;
            }
            let take = self.remaining.min(data.len());
            if self.keep {
                self.body.extend_from_slice(&data[..take]);
            }
            self.remaining -= take;
            data = &data[take..];
            if self.remaining == 0 {
                out(self.head[0], self.keep.then_some(self.body.as_slice()));
                self.head_len = 0;
            }
        }
    }
}

/// What one direction of a session says: statements executed (client to server) and
/// transactions ended (server to client).
struct Reader {
    direction: Direction,
    framer: Framer,
    /// Prepared statement name → text.
    statements: HashMap<String, String>,
    /// Portal name → statement text.
    portals: HashMap<String, String>,
    /// Whether the client's current extended-protocol cycle starts a transaction.
    work: bool,
}

impl Reader {
    fn new(direction: Direction) -> Self {
        Self {
            direction,
            framer: Framer::default(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            work: false,
        }
    }

    /// Reads `chunk`; returns whether it holds the server's answer to a `COMMIT` whose
    /// answer is to be lost.
    fn read(&mut self, chunk: &[u8], conn: &ConnState) -> bool {
        let mut executed = Vec::new();
        let mut transactions = 0u64;
        let mut lose = false;
        let direction = self.direction;
        let interesting = move |tag: u8| match direction {
            Direction::ToServer => matches!(tag, b'Q' | b'P' | b'B' | b'E'),
            Direction::ToClient => tag == b'Z',
        };
        let (statements, portals, work) = (&mut self.statements, &mut self.portals, &mut self.work);
        self.framer.feed(chunk, interesting, |tag, body| {
            match (direction, tag, body) {
                // A simple query too long to be kept: a cycle all the same.
                (Direction::ToServer, b'Q', None) | (Direction::ToServer, b'F', _) => {
                    conn.cycle_sent(Cycle { transaction: true, lose_answer: false })
                }
                (Direction::ToServer, b'P' | b'B' | b'D' | b'E', _) => *work = true,
                (Direction::ToServer, b'S', _) => {
                    conn.cycle_sent(Cycle { transaction: std::mem::take(work), lose_answer: false })
                }
                _ => {}
            }
            let Some(body) = body else { return };
            let mut fields = body.split(|b| *b == 0).map(|f| String::from_utf8_lossy(f).into_owned());
            match (direction, tag) {
                (Direction::ToServer, b'Q') => {
                    let sql = fields.next().unwrap_or_default();
                    let lose_answer = is_commit(&sql) && conn.take_commit_cut();
                    conn.cycle_sent(Cycle { transaction: true, lose_answer });
                    executed.push(sql);
                }
                (Direction::ToServer, b'P') => {
                    let (name, sql) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
                    if statements.len() < MAX_NAMED || statements.contains_key(&name) {
                        statements.insert(name, sql);
                    }
                }
                (Direction::ToServer, b'B') => {
                    let (portal, statement) =
                        (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
                    let sql =
                        statements.get(&statement).cloned().unwrap_or_else(|| "(unknown statement)".into());
                    if portals.len() < MAX_NAMED || portals.contains_key(&portal) {
                        portals.insert(portal, sql);
                    }
                }
                (Direction::ToServer, b'E') => {
                    let portal = fields.next().unwrap_or_default();
                    executed.push(portals.get(&portal).cloned().unwrap_or_else(|| "(unknown portal)".into()));
                }
                (Direction::ToClient, b'Z') => match conn.cycle_answered() {
                    Some(Cycle { lose_answer: true, .. }) => lose = true,
                    Some(Cycle { transaction: true, .. }) if body.first() == Some(&b'I') && !lose => {
                        transactions += 1
                    }
                    // The end of the startup: PostgreSQL counts the session's initialization
                    // as a transaction.
                    None => transactions += 1,
                    _ => {}
                },
                _ => {}
            }
        });
        if !executed.is_empty() || transactions > 0 {
            let mut state = conn.shared.lock();
            if transactions > 0 {
                *state.stats.transactions.entry(conn.name.clone()).or_default() += transactions;
            }
            for sql in executed {
                let key = (conn.name.clone(), normalize(&sql));
                let statements = &mut state.stats.statements;
                if statements.len() < MAX_STATEMENT_KEYS || statements.contains_key(&key) {
                    *statements.entry(key).or_default() += 1;
                } else {
                    *statements.entry((conn.name.clone(), "(other)".into())).or_default() += 1;
                }
            }
        }
        lose
    }
}

fn is_commit(sql: &str) -> bool {
    let sql = sql.trim().trim_end_matches(';').trim();
    ["COMMIT", "END", "COMMIT TRANSACTION", "COMMIT WORK"].iter().any(|c| sql.eq_ignore_ascii_case(c))
}

fn normalize(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(STATEMENT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PgCluster, TestDatabase, psql};
    use tokio_postgres::{Client, NoTls};

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn framer_reads_messages_split_anywhere() {
        let mut stream = message(b'Q', b"COMMIT\0");
        stream.extend(message(b'S', b""));
        stream.extend(message(b'P', b"s1\0SELECT 1\0\0\0"));
        stream.extend(message(b'D', &[7u8; 300]));
        for split in 0..stream.len() {
            let mut framer = Framer::default();
            let mut got = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                framer.feed(part, |t| t != b'D', |tag, body| got.push((tag, body.map(<[u8]>::to_vec))));
            }
            assert_eq!(
                got,
                vec![
                    (b'Q', Some(b"COMMIT\0".to_vec())),
                    (b'S', Some(Vec::new())),
                    (b'P', Some(b"s1\0SELECT 1\0\0\0".to_vec())),
                    (b'D', None),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn filters_and_urls() {
        assert!(Filter::Pool.matches("pulse-0a1b2c3d"));
        assert!(!Filter::Pool.matches("pulse-0a1b2c3d-listener"));
        assert!(!Filter::Pool.matches("psql"));
        assert!(Filter::listener().matches("pulse-0a1b2c3d-listener"));
        assert!(Filter::outbound().matches("pulse-0a1b2c3d-outbound"));
        assert_eq!(role_of("pulse-0a1b2c3d-outbound"), "outbound");
        assert!(is_commit(" commit; ") && !is_commit("COMMITTED"));
        assert_eq!(
            replace_authority_host("postgres://postgres@127.0.0.1:5432/db?application_name=x", "127.0.0.1:9")
                .unwrap(),
            "postgres://postgres@127.0.0.1:9/db?application_name=x"
        );
        assert_eq!(
            replace_authority_host("postgres://h/db", "127.0.0.1:9").unwrap(),
            "postgres://127.0.0.1:9/db"
        );
        assert_eq!(
            upstream_of("postgres://postgres@127.0.0.1:5432/x").unwrap(),
            "127.0.0.1:5432".parse().unwrap()
        );
        assert_eq!(
            startup_parameter(b"user\0postgres\0application_name\0pulse-1\0\0", "application_name")
                .as_deref(),
            Some("pulse-1")
        );
    }

    /// A fresh database on the shared server, and a proxy in front of that server.
    async fn setup() -> (TestDatabase, PgProxy) {
        let db = TestDatabase::postgres().expect("a PostgreSQL database");
        let proxy = PgProxy::for_url(db.url()).await.expect("starting the proxy");
        (db, proxy)
    }

    async fn connect(url: &str, name: &str) -> Result<Client, tokio_postgres::Error> {
        let sep = if url.contains('?') { '&' } else { '?' };
        let (client, connection) =
            tokio_postgres::connect(&format!("{url}{sep}application_name={name}"), NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn backends(db: &TestDatabase, name: &str) -> i64 {
        let direct = connect(db.url(), "pgproxy-test-observer").await.expect("direct connection");
        let row = direct
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", &[&name])
            .await
            .expect("pg_stat_activity");
        row.get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_ends_the_session_on_both_sides() {
        let (db, proxy) = setup().await;
        let url = proxy.url_via(db.url()).unwrap();
        let listener = connect(&url, "pulse-0000000a-listener").await.expect("via the proxy");
        let pool = connect(&url, "pulse-0000000a").await.expect("via the proxy");
        listener.simple_query("SELECT 1").await.expect("a query through the proxy");
        assert_eq!(backends(&db, "pulse-0000000a-listener").await, 1);
        assert_eq!(proxy.open(&Filter::All), vec!["pulse-0000000a", "pulse-0000000a-listener"]);

        assert_eq!(proxy.cut(&Filter::listener()), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while backends(&db, "pulse-0000000a-listener").await != 0 {
            assert!(Instant::now() < deadline, "the backend survived the cut for 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(listener.simple_query("SELECT 1").await.is_err(), "the client's side survived the cut");
        pool.simple_query("SELECT 1").await.expect("the other connection was not cut");
        let stats = proxy.stats();
        assert_eq!(stats.cut, 1);
        assert_eq!(stats.seen.get("pulse-0000000a-listener"), Some(&1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stall_holds_everything_until_resumed() {
        let (db, proxy) = setup().await;
        let url = proxy.url_via(db.url()).unwrap();
        let client = connect(&url, "pulse-0000000b-listener").await.expect("via the proxy");
        assert_eq!(proxy.stall(Filter::listener()), 1);
        let query = tokio::spawn(async move {
            let rows = client.simple_query("SELECT 42").await;
            (client, rows)
        });
        // A new matching connection is held too, before its startup is answered.
        let late = tokio::spawn({
            let url = url.clone();
            async move { connect(&url, "pulse-0000000b-listener").await }
        });
        // Other connections go on.
        let other = connect(&url, "pulse-0000000b").await.expect("an unstalled connection");
        other.simple_query("SELECT 1").await.expect("an unstalled query");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!query.is_finished(), "a stalled query was answered");
        assert!(!late.is_finished(), "a stalled connection was answered");
        proxy.resume();
        let (client, rows) =
            tokio::time::timeout(Duration::from_secs(5), query).await.expect("resumed").unwrap();
        rows.expect("the held query is answered after the resume");
        client.simple_query("SELECT 1").await.expect("and the session goes on");
        let late = tokio::time::timeout(Duration::from_secs(5), late).await.expect("resumed").unwrap();
        late.expect("the held connection completes").simple_query("SELECT 1").await.expect("a query");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_connections_close_at_once_and_delay_adds_latency() {
        let (db, proxy) = setup().await;
        let url = proxy.url_via(db.url()).unwrap();
        proxy.refuse(Some(Filter::All));
        assert!(connect(&url, "pulse-0000000c").await.is_err(), "a connection got through a refusal");
        proxy.refuse(None);
        let client = connect(&url, "pulse-0000000c").await.expect("connections allowed again");
        assert_eq!(proxy.stats().refused.get("pulse-0000000c"), Some(&1));

        proxy.delay(Filter::Pool, Duration::from_millis(150));
        let start = Instant::now();
        client.simple_query("SELECT 1").await.expect("a delayed query");
        let slow = start.elapsed();
        assert!(slow >= Duration::from_millis(300), "a round trip with 150 ms each way took {slow:?}");
        proxy.delay(Filter::Pool, Duration::ZERO);
        let start = Instant::now();
        client.simple_query("SELECT 1").await.expect("a query");
        assert!(start.elapsed() < Duration::from_millis(150), "the delay stayed: {:?}", start.elapsed());
    }

    /// Also shows what a driver sends for `COMMIT`: tokio-postgres (under diesel-async, whose
    /// transaction manager calls `batch_execute("COMMIT")`) sends the simple query `COMMIT`,
    /// here right behind the `Close` + `Sync` of the insert's unnamed statement (pipelined):
    /// the proxy must lose the COMMIT's own answer, not the first answer after it, or it
    /// closes the connection before PostgreSQL has read the COMMIT (and the row is gone).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_commit_acknowledgement_still_commits() {
        let (db, proxy) = setup().await;
        let direct = connect(db.url(), "pgproxy-test-direct").await.expect("direct");
        direct.batch_execute("CREATE TABLE t (n int)").await.expect("a table");
        let url = proxy.url_via(db.url()).unwrap();
        let mut client = connect(&url, "pulse-0000000d").await.expect("via the proxy");
        let before = proxy.stats().transactions_of(&Filter::Pool);

        let tx = client.transaction().await.expect("BEGIN");
        tx.execute("INSERT INTO t VALUES (1)", &[]).await.expect("an insert");
        proxy.cut_after_commit(Filter::Pool);
        let commit = tx.commit().await;
        assert!(commit.is_err(), "the COMMIT was acknowledged through a cut");
        assert!(proxy.wait_commits_cut(1, Duration::from_secs(1)).await);
        let rows: i64 = direct.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
        assert_eq!(rows, 1, "the transaction whose acknowledgement was lost did not commit");

        let stats = proxy.stats();
        assert_eq!(
            stats.statements.get(&("pulse-0000000d".to_owned(), "COMMIT".to_owned())),
            Some(&1),
            "{stats:?}"
        );
        assert_eq!(stats.executions(&Filter::Pool, |s| s.starts_with("INSERT INTO t")), 1);
        // The committed transaction's ReadyForQuery was never relayed.
        assert_eq!(stats.transactions_of(&Filter::Pool), before);

        // Armed once: the next COMMIT goes through.
        let mut again = connect(&url, "pulse-0000000d").await.expect("via the proxy");
        let tx = again.transaction().await.expect("BEGIN");
        tx.execute("INSERT INTO t VALUES (2)", &[]).await.expect("an insert");
        tx.commit().await.expect("a normal commit");
        // Its startup and its transaction.
        assert_eq!(proxy.stats().transactions_of(&Filter::Pool), before + 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactions_are_counted_as_postgresql_counts_them() {
        // A private cluster: its `postgres` database reads the test database's counters
        // without adding to them, and nothing else runs there.
        let pg = PgCluster::start().await.expect("a private PostgreSQL");
        let db = TestDatabase::postgres_on(&pg.admin_url()).expect("a database");
        let name = db.postgres_admin().expect("PostgreSQL").1.to_owned();
        let proxy = PgProxy::for_url(db.url()).await.expect("a proxy");
        let xact = format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{name}'");
        let before: u64 = psql(&pg.admin_url(), &[&xact]).await.parse().expect("a count");

        let mut client =
            connect(&proxy.url_via(db.url()).unwrap(), "pulse-0000000e").await.expect("a client");
        for _ in 0..3 {
            client.simple_query("SELECT 1").await.expect("a simple query");
        }
        let statement = client.prepare("SELECT $1::int").await.expect("a prepared statement");
        for i in 0..2 {
            client.query(&statement, &[&i]).await.expect("an execution");
        }
        drop(statement);
        client.execute("SELECT 2", &[]).await.expect("an unnamed statement");
        let tx = client.transaction().await.expect("BEGIN");
        tx.execute("SELECT 3", &[]).await.expect("in a transaction");
        tx.commit().await.expect("COMMIT");
        drop(client);
        // A backend flushes its counters when it exits.
        let gone = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pulse-0000000e'";
        let deadline = Instant::now() + Duration::from_secs(5);
        while psql(&pg.admin_url(), &[gone]).await != "0" {
            assert!(Instant::now() < deadline, "the client's backend did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after: u64 = psql(&pg.admin_url(), &[&xact]).await.parse().expect("a count");
        let counted = proxy.stats().transactions_of(&Filter::Pool);
        // The startup, 3 simple queries, 1 prepare, 2 executions, 2 for the unnamed statement
        // (its prepare and its execution), 1 transaction block.
        assert_eq!(counted, 10, "{:?}", proxy.stats());
        assert_eq!(after - before, counted, "PostgreSQL and the proxy disagree");
    }
}
