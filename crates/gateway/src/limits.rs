//! Limits at the edge: WebSocket origins and connection counts, password-attempt
//! throttling, socket tuning. Reason to change: a limit's policy. Must never depend on the
//! services' internals (only their error kinds) or keep unbounded state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header;
use lru::LruCache;

use crate::client_ip::TrustedProxies;
use crate::error::ApiError;

/// Edge limits; see `docs/protocol.md`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// WebSocket connections this process accepts.
    pub max_connections: usize,
    /// WebSocket connections one user may hold on this process.
    pub max_connections_per_user: usize,
    /// Origins allowed besides the server's own (`https://ops.example.com`); `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Failed logins per username in [`Limits::login_window`] before 429.
    pub login_failures_per_username: u32,
    /// Failed logins per client address in [`Limits::login_window`] before 429. The address
    /// is the real client's behind [`Limits::trusted_proxies`] (loopback included: a proxy on
    /// the same host must be listed, not exempted).
    pub login_failures_per_address: u32,
    /// The window login failures are counted over.
    pub login_window: Duration,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 15_000,
            max_connections_per_user: 50,
            allowed_origins: Vec::new(),
            login_failures_per_username: 10,
            login_failures_per_address: 50,
            login_window: Duration::from_secs(300),
            trusted_proxies: TrustedProxies::none(),
        }
    }
}

/// Refuses a browser upgrade from a foreign origin (cross-site WebSocket hijacking).
/// Clients that send no `Origin` are not browsers and are allowed.
pub fn check_origin(req: &HttpRequest, limits: &Limits) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let same_origin = !host.is_empty() && origin_host.eq_ignore_ascii_case(host);
    let listed = limits
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin));
    if same_origin || listed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("WebSocket connections from origin {origin:?} are not allowed")))
    }
}

/// The transport a realtime connection uses: both count toward the same limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// `GET /ws`.
    WebSocket,
    /// `GET /sse` (contract section 8).
    ServerSentEvents,
}

impl TransportKind {
    /// Every transport, in the order of [`TransportKind::index`].
    pub const ALL: [TransportKind; 2] = [TransportKind::WebSocket, TransportKind::ServerSentEvents];

    /// The `transport` label on `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "ws",
            TransportKind::ServerSentEvents => "sse",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a counted connection ended, as `/metrics` labels it (`reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionOutcome {
    /// Released before its session started (the upgrade failed, or its ticket was spent).
    NotStarted,
    /// Its session ended this way.
    Ended(ws_bridge::ConnectionEnd),
}

impl ConnectionOutcome {
    /// Every `reason` label, in the order of [`ConnectionOutcome::index`].
    pub const LABELS: [&'static str; 11] = [
        "not_started",
        "client_closed",
        "socket_gone",
        "shutdown",
        "token_expired",
        "credential_retired",
        "user_deactivated",
        "heartbeat_timeout",
        "too_large",
        "too_slow",
        "flooding",
    ];

    /// The position of this outcome's label in [`ConnectionOutcome::LABELS`].
    pub fn index(self) -> usize {
        use ws_bridge::ConnectionEnd as End;
        match self {
            ConnectionOutcome::NotStarted => 0,
            ConnectionOutcome::Ended(end) => match end {
                End::ClientClosed => 1,
                End::SocketGone => 2,
                End::Shutdown => 3,
                End::TokenExpired => 4,
                End::CredentialRetired => 5,
                End::UserDeactivated => 6,
                End::HeartbeatTimeout => 7,
                End::TooLarge => 8,
                End::TooSlow => 9,
                End::Flooding => 10,
            },
        }
    }
}

/// Why an upgrade was refused for lack of room (503), as `/metrics` labels it (`reason`).
pub const REFUSAL_LABELS: [&str; 2] = ["server_full", "user_full"];

/// Counts connections per user on this process (every transport against the same limits),
/// and, for `/metrics`, per transport: open now, admitted, ended by reason, refused. Plain
/// atomics: nothing allocates per connection beyond the per-user entry.
#[derive(Default)]
pub struct ConnectionCounter {
    per_user: Mutex<HashMap<i64, usize>>,
    total: AtomicUsize,
    open: [AtomicU64; TransportKind::ALL.len()],
    opened: [AtomicU64; TransportKind::ALL.len()],
    closed: [[AtomicU64; ConnectionOutcome::LABELS.len()]; TransportKind::ALL.len()],
    refused: [AtomicU64; REFUSAL_LABELS.len()],
}

impl ConnectionCounter {
    /// Takes a place for a WebSocket of `user_id`, or explains with 503 why there is none.
    pub fn acquire(&self, user_id: i64, limits: &Limits) -> Result<OwnedSlot, ApiError> {
        self.acquire_for(TransportKind::WebSocket, user_id, limits)
    }

    /// Takes a place for a connection of `user_id` over `transport`, or explains with 503 why
    /// there is none.
    pub fn acquire_for(
        &self,
        transport: TransportKind,
        user_id: i64,
        limits: &Limits,
    ) -> Result<OwnedSlot, ApiError> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= limits.max_connections {
            self.refused[0].fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unavailable(
                "this server has no room for more connections; try again later",
            ));
        }
        let mine = per_user.entry(user_id).or_default();
        if *mine >= limits.max_connections_per_user {
            self.refused[1].fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unavailable(format!(
                "too many connections for this user (at most {}); close some tabs or devices",
                limits.max_connections_per_user
            )));
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        self.open[transport.index()].fetch_add(1, Ordering::Relaxed);
        self.opened[transport.index()].fetch_add(1, Ordering::Relaxed);
        Ok(OwnedSlot { user_id, transport })
    }

    fn release(&self, slot: OwnedSlot, outcome: ConnectionOutcome) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_user.get_mut(&slot.user_id) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(&slot.user_id);
            }
        }
        drop(per_user);
        self.total.fetch_sub(1, Ordering::Relaxed);
        let t = slot.transport.index();
        self.open[t].fetch_sub(1, Ordering::Relaxed);
        self.closed[t][outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections counted now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Frees the place of a connection whose session never started.
    pub fn release_slot(&self, slot: OwnedSlot) {
        self.release(slot, ConnectionOutcome::NotStarted);
    }

    /// Frees the place of a connection whose session ended with `end`.
    pub fn finish(&self, slot: OwnedSlot, end: ws_bridge::ConnectionEnd) {
        self.release(slot, ConnectionOutcome::Ended(end));
    }

    /// Connections over `transport` open now.
    pub fn open(&self, transport: TransportKind) -> u64 {
        self.open[transport.index()].load(Ordering::Relaxed)
    }

    /// Connections over `transport` admitted since start.
    pub fn opened(&self, transport: TransportKind) -> u64 {
        self.opened[transport.index()].load(Ordering::Relaxed)
    }

    /// Connections over `transport` that ended with the outcome labelled
    /// `ConnectionOutcome::LABELS[reason]`, since start.
    pub fn closed(&self, transport: TransportKind, reason: usize) -> u64 {
        self.closed[transport.index()].get(reason).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Upgrades refused (503) for the reason `REFUSAL_LABELS[reason]`, since start.
    pub fn refused(&self, reason: usize) -> u64 {
        self.refused.get(reason).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// A place taken by [`ConnectionCounter::acquire`]; give it back with
/// [`ConnectionCounter::release_slot`] or [`ConnectionCounter::finish`].
#[derive(Debug)]
pub struct OwnedSlot {
    user_id: i64,
    transport: TransportKind,
}

/// Password attempts (logins, password changes, users created with a password) per
/// username and per client address, in fixed windows, with bounded memory.
///
/// An attempt is recorded *before* its password is checked and counts as a failure until it
/// succeeds ([`Attempt::succeeded`] forgives it): so N parallel attempts cannot all slip in
/// before the first failure is counted, and an attempt refused by the password gate (busy)
/// still counts. Each map is an LRU of at most [`LoginThrottle::CAPACITY`] keys, each at most a
/// 64-character username or an address (IPv6 by /64, which one client usually holds whole):
/// a flood of distinct keys evicts the least recently seen ones, it never grows memory, and
/// every operation is O(1) under a short lock (no sweep).
///
/// Hand-written rather than `governor`: its GCRA cannot give back a cell, and forgiving a
/// success is the rule here; and its keyed store grows until `retain_recent` is called, while
/// this one is bounded at every insert.
pub struct LoginThrottle {
    usernames: Mutex<LruCache<String, Window>>,
    addresses: Mutex<LruCache<AddressKey, Window>>,
    refused: AtomicU64,
}

/// Failures counted since `since`.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Instant,
    count: u32,
}

/// A client address as the limiter counts it: IPv4 whole, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl AddressKey {
    fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => AddressKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                AddressKey::V6Prefix(prefix)
            }
        }
    }
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }
}

impl LoginThrottle {
    /// Keys remembered per map (usernames, addresses): a few MiB at most.
    pub const CAPACITY: usize = 16_384;

    /// A throttle remembering at most `capacity` usernames and `capacity` addresses.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            usernames: Mutex::new(LruCache::new(capacity)),
            addresses: Mutex::new(LruCache::new(capacity)),
            refused: AtomicU64::new(0),
        }
    }

    /// Records an attempt for `username` from `address`, or refuses it with 429 (and the
    /// seconds until the window ends) when either has failed too often. `username` must
    /// already be validated (at most 64 characters).
    pub fn begin(
        &self,
        username: &str,
        address: Option<IpAddr>,
        limits: &Limits,
    ) -> Result<Attempt<'_>, ApiError> {
        let now = Instant::now();
        let user_key = username.to_lowercase();
        let refused = |error| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            error
        };
        count(
            &self.usernames,
            user_key.clone(),
            limits.login_failures_per_username,
            limits.login_window,
            now,
        )
        .map_err(refused)?;
        let address = address.map(AddressKey::of);
        if let Some(key) = address
            && let Err(error) =
                count(&self.addresses, key, limits.login_failures_per_address, limits.login_window, now)
        {
            forgive(&self.usernames, &user_key, now, limits.login_window);
            return Err(refused(error));
        }
        Ok(Attempt { throttle: self, username: user_key, address, window: limits.login_window })
    }

    /// Attempts refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Records an attempt that hashes a password on behalf of an authenticated admin
    /// (creating a user, resetting a password): counted against the client address and the
    /// admin under a key of its own, so a login attack on the admin's username does not also
    /// lock the logged-in admin out of managing users.
    pub fn begin_acting(
        &self,
        username: &str,
        address: Option<IpAddr>,
        limits: &Limits,
    ) -> Result<Attempt<'_>, ApiError> {
        // `@` is never part of a username: no login key can collide with it.
        self.begin(&format!("@{username}"), address, limits)
    }

    /// Usernames and addresses remembered now.
    pub fn len(&self) -> (usize, usize) {
        (lock(&self.usernames).len(), lock(&self.addresses).len())
    }
}

/// One recorded attempt; it stays counted as a failure unless [`Attempt::succeeded`] is called.
#[must_use = "an attempt counts as a failure unless it succeeds"]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    username: String,
    address: Option<AddressKey>,
    window: Duration,
}

impl Attempt<'_> {
    /// The password was right (or the request failed for a reason unrelated to it): the
    /// attempt is forgiven.
    pub fn succeeded(self) {
        let now = Instant::now();
        forgive(&self.throttle.usernames, &self.username, now, self.window);
        if let Some(key) = &self.address {
            forgive(&self.throttle.addresses, key, now, self.window);
        }
    }

    /// Settles the attempt by the outcome of its service call: a wrong password or bad
    /// credentials stay counted; a refusal by the busy password gate stays counted against
    /// the address only (the client hammered the server, but no password was guessed, and an
    /// honest user must not lose their username to someone else's flood); anything else is
    /// forgiven.
    pub fn settle<T>(self, outcome: &Result<T, services::ServiceError>) {
        use services::ServiceError as E;
        match outcome {
            Err(E::InvalidCredentials | E::WrongPassword) => {}
            Err(E::Busy) => forgive(&self.throttle.usernames, &self.username, Instant::now(), self.window),
            _ => self.succeeded(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts one failure for `key`, unless it already has `max` in the current window.
fn count<K: std::hash::Hash + Eq>(
    map: &Mutex<LruCache<K, Window>>,
    key: K,
    max: u32,
    window: Duration,
    now: Instant,
) -> Result<(), ApiError> {
    let mut map = lock(map);
    let entry = map.get_or_insert_mut(key, || Window { since: now, count: 0 });
    if now.duration_since(entry.since) >= window {
        *entry = Window { since: now, count: 0 };
    }
    if entry.count >= max {
        let left = window.saturating_sub(now.duration_since(entry.since));
        return Err(ApiError::too_many_requests(
            "too many failed password attempts; wait before trying again",
            left.as_secs().max(1),
        ));
    }
    entry.count += 1;
    Ok(())
}

/// Takes back one failure of `key`, if its window is still the one it was counted in.
fn forgive<K, Q>(map: &Mutex<LruCache<K, Window>>, key: &Q, now: Instant, window: Duration)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(entry) = lock(map).peek_mut(key)
        && now.duration_since(entry.since) < window
    {
        entry.count = entry.count.saturating_sub(1);
    }
}

/// How long a connection may sit with data the client does not take (its receive window
/// stays shut) before the kernel aborts it — so a client dropped as too slow, or one that
/// stopped reading, does not keep a socket and its buffers forever.
pub const STALLED_SOCKET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The kernel send buffer per connection: small enough that a client that stops reading is
/// noticed (and its memory bounded) after a few hundred KiB, large enough for any message.
pub const SEND_BUFFER_BYTES: usize = 256 * 1024;

/// Tunes an accepted TCP connection (`HttpServer::on_connect`): a bounded send buffer and
/// [`STALLED_SOCKET_TIMEOUT`].
///
/// ```no_run
/// actix_web::HttpServer::new(|| actix_web::App::new()).on_connect(gateway::limits::tune_socket);
/// ```
pub fn tune_socket(connection: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let socket = socket2::SockRef::from(stream);
        let tuned = socket.set_send_buffer_size(SEND_BUFFER_BYTES).and_then(|()| tune_timeout(&socket));
        if let Err(error) = tuned {
            tracing::debug!(%error, "could not tune a connection's socket");
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn tune_timeout(socket: &socket2::SockRef<'_>) -> std::io::Result<()> {
    socket.set_tcp_user_timeout(Some(STALLED_SOCKET_TIMEOUT))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn tune_timeout(_: &socket2::SockRef<'_>) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn same_origin_listed_origins_and_non_browsers_pass() {
        let limits = Limits { allowed_origins: vec!["https://ops.example.com".into()], ..Limits::default() };
        let req = |origin: Option<&str>| {
            let mut r = TestRequest::get().insert_header((header::HOST, "pulse.local:3000"));
            if let Some(o) = origin {
                r = r.insert_header((header::ORIGIN, o));
            }
            r.to_http_request()
        };
        assert!(check_origin(&req(None), &limits).is_ok());
        assert!(check_origin(&req(Some("http://pulse.local:3000")), &limits).is_ok());
        assert!(check_origin(&req(Some("https://ops.example.com")), &limits).is_ok());
        assert!(check_origin(&req(Some("http://evil.example")), &limits).is_err());
        assert!(check_origin(&req(Some("http://pulse.local:3001")), &limits).is_err());
    }

    #[test]
    fn connection_limits_per_user_and_process() {
        let limits = Limits { max_connections: 3, max_connections_per_user: 2, ..Limits::default() };
        let counter = ConnectionCounter::default();
        let a1 = counter.acquire(1, &limits).expect("first");
        let _a2 = counter.acquire(1, &limits).expect("second");
        assert!(counter.acquire(1, &limits).is_err(), "third for one user");
        let _b1 = counter.acquire(2, &limits).expect("another user");
        assert!(counter.acquire(3, &limits).is_err(), "process full");
        counter.release_slot(a1);
        counter.acquire(3, &limits).expect("room again");
    }

    #[test]
    fn every_transport_counts_toward_the_limits_and_is_counted_apart() {
        use ws_bridge::ConnectionEnd;
        let limits = Limits { max_connections: 3, max_connections_per_user: 2, ..Limits::default() };
        let counter = ConnectionCounter::default();
        let ws = counter.acquire(1, &limits).expect("a socket");
        let sse = counter.acquire_for(TransportKind::ServerSentEvents, 1, &limits).expect("a stream");
        assert!(counter.acquire_for(TransportKind::ServerSentEvents, 1, &limits).is_err(), "user full");
        let other = counter.acquire_for(TransportKind::ServerSentEvents, 2, &limits).expect("another user");
        assert!(counter.acquire(3, &limits).is_err(), "server full");
        assert_eq!(
            (counter.open(TransportKind::WebSocket), counter.open(TransportKind::ServerSentEvents)),
            (1, 2)
        );
        assert_eq!((counter.refused(0), counter.refused(1)), (1, 1), "server_full, user_full");
        counter.finish(sse, ConnectionEnd::TooSlow);
        counter.finish(ws, ConnectionEnd::ClientClosed);
        counter.release_slot(other);
        let too_slow = ConnectionOutcome::LABELS.iter().position(|l| *l == "too_slow").expect("label");
        let closed = ConnectionOutcome::LABELS.iter().position(|l| *l == "client_closed").expect("label");
        assert_eq!(ConnectionOutcome::Ended(ConnectionEnd::TooSlow).index(), too_slow);
        assert_eq!(counter.closed(TransportKind::ServerSentEvents, too_slow), 1);
        assert_eq!(counter.closed(TransportKind::ServerSentEvents, 0), 1, "not_started");
        assert_eq!(counter.closed(TransportKind::WebSocket, closed), 1);
        assert_eq!(counter.opened(TransportKind::ServerSentEvents), 2);
        assert_eq!((counter.total(), counter.open(TransportKind::ServerSentEvents)), (0, 0));
    }

    #[test]
    fn attempts_are_throttled_per_username_and_address_and_successes_forgiven() {
        let limits =
            Limits { login_failures_per_username: 3, login_failures_per_address: 5, ..Limits::default() };
        let throttle = LoginThrottle::default();
        let here: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            // Recorded before the check of the password: nothing to call afterwards.
            drop(throttle.begin("ana", Some(here), &limits).expect("allowed"));
        }
        let refused = throttle.begin("ana", Some(here), &limits).err().expect("fourth refused");
        assert_eq!(refused.code(), "too_many_requests");
        assert!(throttle.begin("ANA", None, &limits).is_err(), "usernames are case-insensitive here");
        drop(throttle.begin("bob", Some(here), &limits).expect("another user from the same address"));
        drop(throttle.begin("carl", Some(here), &limits).expect("the fifth from this address"));
        assert!(throttle.begin("dave", Some(here), &limits).is_err(), "the address is throttled");
        let elsewhere: IpAddr = "10.0.0.2".parse().expect("ip");
        throttle.begin("dave", Some(elsewhere), &limits).expect("another address").succeeded();
        // A success is forgiven: it never counts.
        for _ in 0..10 {
            throttle.begin("erin", Some(elsewhere), &limits).expect("successes").succeeded();
        }
        // Loopback counts like any address.
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        for i in 0..5 {
            drop(throttle.begin(&format!("u{i}"), Some(local), &limits).expect("allowed"));
        }
        assert!(throttle.begin("u9", Some(local), &limits).is_err(), "loopback is limited too");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let limits = Limits { login_failures_per_address: 2, ..Limits::default() };
        let throttle = LoginThrottle::default();
        drop(throttle.begin("a1", Some("2001:db8:1:2::1".parse().expect("ip")), &limits).expect("1"));
        drop(throttle.begin("a2", Some("2001:db8:1:2::ffff".parse().expect("ip")), &limits).expect("2"));
        assert!(throttle.begin("a3", Some("2001:db8:1:2:9::1".parse().expect("ip")), &limits).is_err());
        drop(throttle.begin("a4", Some("2001:db8:1:3::1".parse().expect("ip")), &limits).expect("other /64"));
    }

    proptest::proptest! {
        /// Whatever sequence of usernames and addresses arrives, the maps never hold more than
        /// their capacity, and a key seen last is still limited.
        #[test]
        fn memory_is_bounded_whatever_the_keys(
            attempts in proptest::collection::vec(("[a-z0-9._-]{3,64}", proptest::prelude::any::<[u8; 4]>()), 1..400),
        ) {
            let limits = Limits { login_failures_per_username: 1, login_failures_per_address: 1000, ..Limits::default() };
            let throttle = LoginThrottle::with_capacity(32);
            for (name, octets) in &attempts {
                drop(throttle.begin(name, Some(IpAddr::from(*octets)), &limits));
                let (users, addresses) = throttle.len();
                proptest::prop_assert!(users <= 32 && addresses <= 32);
            }
            let (last, octets) = attempts.last().expect("one");
            proptest::prop_assert!(throttle.begin(last, Some(IpAddr::from(*octets)), &limits).is_err());
        }
    }
}
