//! Limits at the edge: WebSocket origins and connection counts, login throttling.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header;

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
    /// Failed logins per client address in [`Limits::login_window`] before 429. Loopback
    /// is not counted: behind a reverse proxy on the same host every client would share it.
    pub login_failures_per_address: u32,
    /// The window login failures are counted over.
    pub login_window: Duration,
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

/// Counts connections per user on this process.
#[derive(Default)]
pub struct ConnectionCounter {
    per_user: Mutex<HashMap<i64, usize>>,
    total: AtomicUsize,
}

impl ConnectionCounter {
    /// Takes a place for `user_id`, or explains with 503 why there is none.
    pub fn acquire(&self, user_id: i64, limits: &Limits) -> Result<OwnedSlot, ApiError> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= limits.max_connections {
            return Err(ApiError::unavailable(
                "this server has no room for more connections; try again later",
            ));
        }
        let mine = per_user.entry(user_id).or_default();
        if *mine >= limits.max_connections_per_user {
            return Err(ApiError::unavailable(format!(
                "too many connections for this user (at most {}); close some tabs or devices",
                limits.max_connections_per_user
            )));
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(OwnedSlot { user_id })
    }

    fn release(&self, user_id: i64) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_user.get_mut(&user_id) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(&user_id);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections counted now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Frees `slot`'s place.
    pub fn release_slot(&self, slot: OwnedSlot) {
        self.release(slot.user_id);
    }
}

/// A place taken by [`ConnectionCounter::acquire`]; give it back with
/// [`ConnectionCounter::release_slot`].
#[derive(Debug)]
pub struct OwnedSlot {
    user_id: i64,
}

/// Failed logins per username and per address, in fixed windows.
#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginThrottle {
    /// 429 with the seconds to wait if `username` or `address` failed too often.
    pub fn check(&self, username: &str, address: Option<IpAddr>, limits: &Limits) -> Result<(), ApiError> {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let blocked = |key: &str, max: u32| {
            failures.get(key).and_then(|(count, since)| {
                let left = limits.login_window.checked_sub(now.duration_since(*since))?;
                (*count >= max).then_some(left)
            })
        };
        let wait = blocked(&user_key(username), limits.login_failures_per_username)
            .into_iter()
            .chain(address.and_then(|a| blocked(&address_key(a), limits.login_failures_per_address)))
            .max();
        match wait {
            Some(left) => Err(ApiError::too_many_requests(
                "too many failed logins; wait before trying again",
                left.as_secs().max(1),
            )),
            None => Ok(()),
        }
    }

    /// Counts a failed login.
    pub fn failed(&self, username: &str, address: Option<IpAddr>, limits: &Limits) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() > 100_000 {
            failures.retain(|_, (_, since)| now.duration_since(*since) < limits.login_window);
        }
        let address = address.filter(|a| !a.is_loopback());
        for key in std::iter::once(user_key(username)).chain(address.map(address_key)) {
            let entry = failures.entry(key).or_insert((0, now));
            if now.duration_since(entry.1) >= limits.login_window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    /// Forgets a username's failures after a successful login.
    pub fn succeeded(&self, username: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&user_key(username));
    }
}

fn user_key(username: &str) -> String {
    format!("user:{}", username.to_lowercase())
}

fn address_key(address: IpAddr) -> String {
    format!("addr:{address}")
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
    fn logins_are_throttled_per_username_and_address() {
        let limits =
            Limits { login_failures_per_username: 3, login_failures_per_address: 5, ..Limits::default() };
        let throttle = LoginThrottle::default();
        let here: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            throttle.check("ana", Some(here), &limits).expect("allowed");
            throttle.failed("ana", Some(here), &limits);
        }
        assert!(throttle.check("ana", Some(here), &limits).is_err());
        assert!(throttle.check("ANA", None, &limits).is_err(), "usernames are case-insensitive here");
        throttle.check("bob", Some(here), &limits).expect("another user from the same address");
        throttle.failed("bob", Some(here), &limits);
        throttle.failed("carl", Some(here), &limits);
        assert!(throttle.check("dave", Some(here), &limits).is_err(), "the address is throttled");
        throttle.succeeded("ana");
        assert!(throttle.check("ana", None, &limits).is_ok());
    }
}
