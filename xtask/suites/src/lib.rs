//! Harness for Pulse's black-box suites.
//!
//! Everything here talks to the real `server` binary from the outside, exactly as a browser,
//! `curl` or `wscat` would:
//!
//! - [`TestDatabase`]: a fresh SQLite file or a fresh PostgreSQL database per test.
//! - [`ServerProcess`]: the binary named by `PULSE_SERVER_BIN`, on a free port, with its
//!   stdout and stderr captured so tests can assert on the log.
//! - [`Api`]: a small JSON-over-HTTP client (reqwest) that keeps a bearer token.
//! - [`Ws`]: a WebSocket client (tokio-tungstenite) with bounded waits for messages and close
//!   codes.
//! - [`mint_token`] and friends: JWTs made by the test itself, valid or deliberately broken.
//! - [`Cluster`]: several servers on one PostgreSQL database, for the multi-instance suites.
//! - [`Watcher`]: a WebSocket client that checks every stats message and waits for values.
//! - [`PgProxy`]: a TCP proxy between an instance and PostgreSQL that cuts, refuses, stalls or
//!   delays its connections, or loses a commit's acknowledgement.
//! - [`PgCluster`]: a private PostgreSQL cluster a test may restart.
//! - [`get_ok`], [`psql`] ([`try_psql`]), the request bodies and [`WAIT`]: small helpers the
//!   suites share instead of each keeping a copy; [`both_databases!`] makes a case one test per
//!   backend.
//!
//! The load bench (`xtask/bench`) uses the same library for its databases, server processes
//! (its release build, or the Node peer, through [`ServerOptions::program`]) and HTTP client.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use rand::distr::Alphanumeric;
pub use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tokio_tungstenite::tungstenite;
use tungstenite::Message;

mod cluster;
pub mod nginx;
pub mod pgcluster;
pub mod pgproxy;
pub mod sse;
mod watcher;

pub use cluster::{Cluster, ClusterOptions};
pub use nginx::Nginx;
pub use pgcluster::{PgCluster, StopMode};
pub use pgproxy::{Filter, PgProxy, ProxyStats};
pub use sse::{SseClient, SseItem};
pub use watcher::{STATS_TOPICS, Watcher, matches};

/// Environment variable that names the server binary under test.
pub const SERVER_BIN_ENV: &str = "PULSE_SERVER_BIN";
/// Environment variable with the PostgreSQL admin URL used to create throwaway databases.
pub const TEST_DATABASE_URL_ENV: &str = "TEST_DATABASE_URL";
/// Admin URL used when [`TEST_DATABASE_URL_ENV`] is not set.
pub const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Username of the bootstrap admin every test server starts with.
pub const ADMIN_USERNAME: &str = "admin";
/// Longest wait for a message or value that must come (the suites' common bound).
pub const WAIT: Duration = Duration::from_secs(5);

/// A random alphanumeric string of `len` characters.
pub fn random_string(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------------------------

/// Which backend a [`TestDatabase`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL database on the local server.
    Postgres,
}

impl DbKind {
    /// `sqlite` or `postgres` (file names, reports).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A fresh, empty database for one test. Dropping it removes it.
#[derive(Debug)]
pub struct TestDatabase {
    kind: DbKind,
    url: String,
    /// Keeps the SQLite folder alive.
    _dir: Option<tempfile::TempDir>,
    /// `(admin url, database name)` of a PostgreSQL database to drop.
    pg: Option<(String, String)>,
}

impl TestDatabase {
    /// A SQLite database file in a new temporary folder: `sqlite://<tempdir>/pulse.db`.
    pub fn sqlite() -> Result<Self> {
        let dir =
            tempfile::Builder::new().prefix("pulse-it-").tempdir().context("creating a temporary folder")?;
        let path: PathBuf = dir.path().join("pulse.db");
        Ok(Self {
            kind: DbKind::Sqlite,
            url: format!("sqlite://{}", path.display()),
            _dir: Some(dir),
            pg: None,
        })
    }

    /// A new PostgreSQL database `pulse_it_<random>`, created through `psql` with the admin URL
    /// in `TEST_DATABASE_URL` (default [`DEFAULT_PG_ADMIN_URL`]) and dropped `WITH (FORCE)` on
    /// drop.
    pub fn postgres() -> Result<Self> {
        let admin = std::env::var(TEST_DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned());
        Self::postgres_on(&admin)
    }

    /// A new PostgreSQL database `pulse_it_<random>` on the server of the admin URL `admin`
    /// (e.g. a [`PgCluster`]'s), dropped `WITH (FORCE)` on drop.
    pub fn postgres_on(admin: &str) -> Result<Self> {
        let admin = admin.to_owned();
        let name = format!("pulse_it_{}", random_string(12).to_lowercase());
        run_psql(&admin, &format!("CREATE DATABASE {name}"))
            .with_context(|| format!("creating PostgreSQL database {name} via {admin}"))?;
        let url = replace_database(&admin, &name)?;
        Ok(Self { kind: DbKind::Postgres, url, _dir: None, pg: Some((admin, name)) })
    }

    /// Drops a PostgreSQL database now, `WITH (FORCE)` (its open connections are terminated),
    /// to test how the server behaves when its database is gone. Fails on SQLite.
    pub fn drop_postgres_now(&self) -> Result<()> {
        let (admin, name) = self.pg.as_ref().ok_or_else(|| anyhow!("not a PostgreSQL database"))?;
        run_psql(admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    }

    /// The backend.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// The `DATABASE_URL` to give the server.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg {
            // Best effort: a leftover database only costs disk space.
            let _ = run_psql(admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn run_psql(admin_url: &str, sql: &str) -> Result<()> {
    let out = std::process::Command::new("psql")
        .arg(admin_url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (is it installed?)")?;
    if !out.status.success() {
        bail!("psql {sql:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// `postgres://user@host:port/olddb?x=y` → `postgres://user@host:port/<name>?x=y`.
fn replace_database(admin_url: &str, name: &str) -> Result<String> {
    let scheme_end = admin_url.find("://").ok_or_else(|| anyhow!("not a URL: {admin_url}"))? + 3;
    let (head, rest) = admin_url.split_at(scheme_end);
    let (authority, path_and_query) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let query = path_and_query.find('?').map(|i| &path_and_query[i..]).unwrap_or("");
    Ok(format!("{head}{authority}/{name}{query}"))
}

/// Runs each of `sqls` (one `-c` each, in order) on `url` with `psql` and returns the
/// unaligned, tuples-only output of the last one, trimmed. For tests that read or poke at the
/// database behind a server (the multi-instance and fault suites). Panics when psql fails.
pub async fn psql(url: &str, sqls: &[&str]) -> String {
    try_psql(url, sqls).await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`psql`] for callers that handle the failure (the bench): each of `sqls` in its own
/// transaction (one `-c` each); the trimmed output of the last one.
pub async fn try_psql(url: &str, sqls: &[impl AsRef<str>]) -> Result<String> {
    let mut cmd = Command::new("psql");
    cmd.arg(url).args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    for sql in sqls {
        cmd.args(["-c", sql.as_ref()]);
    }
    let out = cmd.stdin(Stdio::null()).output().await.context("running psql (is it installed?)")?;
    if !out.status.success() {
        let shown: Vec<&str> = sqls.iter().map(|s| s.as_ref()).take(2).collect();
        bail!("psql {shown:?}… failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One `#[tokio::test]` per case and backend: `mod sqlite { fn case() }` and `mod postgres {
/// fn case() }` beside the invocation, each calling the case (`case`, or `module::case`, as
/// seen from the invoking module) with a fresh [`TestDatabase`] of its kind.
///
/// ```ignore
/// suites::both_databases!(login_works, tasks_are_counted);
/// suites::both_databases!(cases => login_works, tasks_are_counted);
/// ```
#[macro_export]
macro_rules! both_databases {
    ($module:ident => $($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$module::$name($crate::TestDatabase::sqlite().expect("creating a SQLite database")).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$module::$name(
                        $crate::TestDatabase::postgres().expect("creating a PostgreSQL database"),
                    )
                    .await;
                }
            )+
        }
    };
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestDatabase::sqlite().expect("creating a SQLite database")).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestDatabase::postgres().expect("creating a PostgreSQL database")).await;
                }
            )+
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------

/// Extra settings for [`ServerProcess::start`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra environment variables, applied last (they override the defaults).
    pub env: Vec<(String, String)>,
    /// Variables not to set at all (neither the harness's default nor an inherited value).
    pub unset: Vec<String>,
    /// Working directory of the process (default: the test's).
    pub current_dir: Option<PathBuf>,
    /// The program to run instead of `PULSE_SERVER_BIN` (the bench's release build, or a peer
    /// server speaking the same contract), with its arguments.
    pub program: Option<(PathBuf, Vec<String>)>,
    /// Also append everything the process writes to this file, as it comes (the bench keeps
    /// each server's log beside its report).
    pub log_file: Option<PathBuf>,
}

impl ServerOptions {
    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Leaves `key` unset (e.g. `JWT_SECRET`, to test the server's default).
    pub fn unset(mut self, key: impl Into<String>) -> Self {
        self.unset.push(key.into());
        self
    }

    /// Runs the server in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Runs `program` with `args` instead of the binary named by `PULSE_SERVER_BIN`.
    pub fn program(mut self, program: impl Into<PathBuf>, args: &[&str]) -> Self {
        self.program = Some((program.into(), args.iter().map(|a| (*a).to_owned()).collect()));
        self
    }

    /// Appends the process's output to `path` too.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Runs this binary instead of `PULSE_SERVER_BIN`'s (e.g. an optimised build).
    pub fn binary(mut self, bin: impl Into<PathBuf>) -> Self {
        self.program = Some((bin.into(), Vec::new()));
        self
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.env.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn is_unset(&self, key: &str) -> bool {
        self.unset.iter().any(|k| k == key)
    }
}

/// The server binary, running on its own port and database.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pid: u32,
    addr: String,
    jwt_secret: String,
    admin_password: String,
    logs: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts the binary named by `PULSE_SERVER_BIN` (or [`ServerOptions::program`]) on a free
    /// port (or on the `BIND_ADDR` the options give), with `DATABASE_URL`, a random
    /// `JWT_SECRET` and `ADMIN_PASSWORD`, and waits (30 s at most) until `/healthz` answers 200.
    pub async fn start(db: &TestDatabase, opts: ServerOptions) -> Result<Self> {
        let (bin, args) = match &opts.program {
            Some((program, args)) => (program.clone(), args.clone()),
            None => (server_bin()?, Vec::new()),
        };
        let addr = match opts.value("BIND_ADDR") {
            Some(addr) => addr.to_owned(),
            None => format!("127.0.0.1:{}", free_port()?),
        };
        let jwt_secret = opts.value("JWT_SECRET").map_or_else(|| random_string(48), str::to_owned);
        let admin_password = opts.value("ADMIN_PASSWORD").map_or_else(|| random_string(20), str::to_owned);
        let defaults = [
            ("BIND_ADDR", addr.as_str()),
            ("DATABASE_URL", db.url()),
            ("JWT_SECRET", jwt_secret.as_str()),
            ("ADMIN_USERNAME", ADMIN_USERNAME),
            ("ADMIN_PASSWORD", admin_password.as_str()),
            ("RUST_LOG", "info"),
            ("PULSE_SKIP_DASHBOARD_BUILD", "1"),
        ];

        let mut cmd = Command::new(&bin);
        cmd.args(&args);
        for (k, v) in defaults {
            if !opts.is_unset(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        for k in &opts.unset {
            cmd.env_remove(k);
        }
        if let Some(dir) = &opts.current_dir {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("server exited at once"))?;

        let logs = Arc::new(Mutex::new(String::new()));
        let file = match &opts.log_file {
            Some(path) => Some(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ))),
            None => None,
        };
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(capture(out, Arc::clone(&logs), file.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(capture(err, Arc::clone(&logs), file)));
        }

        let jwt_secret = if opts.is_unset("JWT_SECRET") { String::new() } else { jwt_secret };
        let admin_password = if opts.is_unset("ADMIN_PASSWORD") { String::new() } else { admin_password };
        let mut server = Self { child, pid, addr, jwt_secret, admin_password, logs, readers };
        server.wait_healthy(Duration::from_secs(30)).await?;
        Ok(server)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let url = format!("{}/healthz", self.base_url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!("server exited before becoming healthy ({status}); log:\n{}", self.logs());
            }
            if let Ok(resp) = client.get(&url).send().await
                && resp.status().as_u16() == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("server not healthy after {timeout:?}; log:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:<port>/ws?token=<token>`.
    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }

    /// `ws://127.0.0.1:<port>/ws` with no query.
    pub fn ws_url_bare(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Opens a WebSocket with `token`; a refused upgrade is `Err(Error::Http(response))`.
    pub async fn connect_ws(&self, token: &str) -> Result<Ws, tungstenite::Error> {
        connect(&self.ws_url(token)).await
    }

    /// The server's `JWT_SECRET` (empty when the test left it unset).
    pub fn jwt_secret(&self) -> &str {
        &self.jwt_secret
    }

    /// The bootstrap admin's password (empty when the test left it unset).
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// An [`Api`] client without a token for this server.
    pub fn api(&self) -> Api {
        Api::new(self.base_url())
    }

    /// Sends SIGTERM and waits (15 s at most) for the process to exit.
    pub async fn stop_graceful(&mut self) -> Result<ExitStatus> {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.pid);
        }
        let exit = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .map_err(|_| anyhow!("server did not exit within 15 s of SIGTERM; log:\n{}", self.logs()))??;
        self.join_readers().await;
        Ok(exit)
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGKILL and waits for the process to exit.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.start_kill().context("SIGKILL")?;
        self.child.wait().await?;
        self.join_readers().await;
        Ok(())
    }

    async fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn capture(
    stream: impl AsyncRead + Unpin,
    logs: Arc<Mutex<String>>,
    file: Option<Arc<Mutex<std::fs::File>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Some(file) = &file {
                    use std::io::Write as _;
                    // Best effort: the in-memory copy below is what the harness reads.
                    let _ = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write_all(&line);
                }
                let text = String::from_utf8_lossy(&line);
                match logs.lock() {
                    Ok(mut l) => l.push_str(&text),
                    Err(p) => p.into_inner().push_str(&text),
                }
            }
        }
    }
}

/// The server binary: `PULSE_SERVER_BIN`, absolute, or relative to the current folder or to the
/// workspace root (cargo runs tests from the package folder). Public for tests that run the
/// binary themselves, e.g. to see it refuse to start.
pub fn server_bin() -> Result<PathBuf> {
    let bin = std::env::var(SERVER_BIN_ENV).map_err(|_| {
        anyhow!(
            "{SERVER_BIN_ENV} is not set: point it at the server binary, e.g. \
             {SERVER_BIN_ENV}=$PWD/target/debug/server cargo test -p suites --test integration"
        )
    })?;
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    [PathBuf::from(&bin), workspace.join(&bin)]
        .into_iter()
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .ok_or_else(|| anyhow!("{SERVER_BIN_ENV}={bin} is not a file (build the server first)"))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// One HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The raw body.
    pub text: String,
    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub json: Value,
}

impl Response {
    /// `true` when the body parsed as JSON.
    pub fn is_json(&self) -> bool {
        serde_json::from_str::<Value>(&self.text).is_ok()
    }

    /// Panics unless the status is `status`.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {} with body {}",
            self.status, self.text
        );
        &self.json
    }

    /// Panics unless this is an error answer with `status`, a JSON content type, and the body
    /// `{"error": {"code": <one of codes>, "message": <non-empty string>}}`. An empty `codes`
    /// accepts any non-empty code.
    #[track_caller]
    pub fn expect_error(&self, status: u16, codes: &[&str]) {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {} with body {}",
            self.status, self.text
        );
        let ct = self.content_type.as_deref().unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "error response content type {ct:?} (body {})",
            self.text
        );
        let code = self.json.pointer("/error/code").and_then(Value::as_str);
        let message = self.json.pointer("/error/message").and_then(Value::as_str);
        let Some(code) = code else {
            panic!("error body has no string error.code: {}", self.text);
        };
        assert!(!code.is_empty(), "empty error.code: {}", self.text);
        assert!(
            codes.is_empty() || codes.contains(&code),
            "error.code {code:?} not one of {codes:?} (HTTP {}, body {})",
            self.status,
            self.text
        );
        assert!(message.is_some_and(|m| !m.is_empty()), "error.message missing or empty: {}", self.text);
    }
}

/// Body of a raw request.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body at all.
    None,
    /// A JSON value, sent as `application/json`.
    Json(Value),
    /// Bytes with an explicit content type (`None`: no `Content-Type` header).
    Raw {
        /// `Content-Type` header value.
        content_type: Option<String>,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// A JSON-over-HTTP client for one server, with an optional bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Sent with every request (e.g. `X-Forwarded-For`).
    headers: Vec<(String, String)>,
    /// Where the connections leave from, if bound ([`Api::bound_to`]).
    local: Option<std::net::IpAddr>,
}

/// How long a pooled connection may idle before it is dropped: well under the server's 5 s
/// keep-alive, or a request sent just as the server closes an idle connection fails with
/// "connection closed before message completed" (a POST cannot be retried).
const POOL_IDLE: Duration = Duration::from_secs(2);

fn http_client(local: Option<std::net::IpAddr>) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(POOL_IDLE)
        .local_address(local)
        .build()
        .context("building an HTTP client")
}

impl Api {
    /// A client without a token.
    pub fn new(base_url: impl Into<String>) -> Self {
        let client = http_client(None).unwrap_or_else(|_| reqwest::Client::new());
        Self { client, base: base_url.into(), token: None, headers: Vec::new(), local: None }
    }

    /// A client without a token whose connections leave from `local` (any 127.x.y.z works on
    /// Linux's loopback), so a test can be many clients at once.
    pub fn bound_to(base_url: impl Into<String>, local: std::net::IpAddr) -> Result<Self> {
        Ok(Self {
            client: http_client(Some(local))?,
            base: base_url.into(),
            token: None,
            headers: Vec::new(),
            local: Some(local),
        })
    }

    /// The same settings with connections of its own: for use on another runtime (a pooled
    /// connection belongs to the runtime that opened it).
    pub fn with_own_connections(&self) -> Result<Self> {
        Ok(Self { client: http_client(self.local)?, ..self.clone() })
    }

    /// The same client with `token` as bearer.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self { token: Some(token.into()), ..self.clone() }
    }

    /// The same client without a token.
    pub fn anonymous(&self) -> Self {
        Self { token: None, ..self.clone() }
    }

    /// The same client, also sending `name: value` with every request.
    pub fn with_header(&self, name: &str, value: &str) -> Self {
        let mut api = self.clone();
        api.headers.push((name.to_owned(), value.to_owned()));
        api
    }

    /// The bearer token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Any request. `authorization`, when given, is sent as the `Authorization` header instead
    /// of the one made from the token (use [`Api::anonymous`] to send none).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
        authorization: Option<&str>,
    ) -> Result<Response> {
        let mut req = self.client.request(method, format!("{}{}", self.base, path));
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        match (authorization, &self.token) {
            (Some(auth), _) => req = req.header("Authorization", auth),
            (None, Some(token)) => req = req.header("Authorization", format!("Bearer {token}")),
            (None, None) => {}
        }
        match body {
            Body::None => {}
            Body::Json(v) => {
                req = req.header("Content-Type", "application/json").body(serde_json::to_vec(&v)?)
            }
            Body::Raw { content_type, bytes } => {
                if let Some(ct) = content_type {
                    req = req.header("Content-Type", ct);
                }
                req = req.body(bytes);
            }
        }
        let resp = req.send().await.context("sending request")?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = header("content-type");
        let retry_after = header("retry-after");
        let text = resp.text().await.context("reading body")?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Response { status, retry_after, content_type, text, json })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Response> {
        self.request(Method::GET, path, Body::None, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Response> {
        self.request(Method::POST, path, Body::Json(body.clone()), None).await
    }

    /// `POST path` without a body.
    pub async fn post_empty(&self, path: &str) -> Result<Response> {
        self.request(Method::POST, path, Body::None, None).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Response> {
        self.request(Method::PATCH, path, Body::Json(body.clone()), None).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Response> {
        self.request(Method::DELETE, path, Body::None, None).await
    }

    /// `POST /api/v1/auth/login`, whatever the answer.
    pub async fn login_response(&self, username: &str, password: &str) -> Result<Response> {
        self.anonymous()
            .post("/api/v1/auth/login", &json!({"username": username, "password": password}))
            .await
    }

    /// Logs in and returns the token (fails unless the answer is 200 with a token).
    pub async fn login(&self, username: &str, password: &str) -> Result<String> {
        let resp = self.login_response(username, password).await?;
        if resp.status != 200 {
            bail!("login as {username} failed: HTTP {} {}", resp.status, resp.text);
        }
        resp.json
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("login answer has no token: {}", resp.text))
    }

    /// Creates a user (needs an admin token) and returns the user JSON.
    pub async fn create_user(&self, username: &str, password: &str, role: &str) -> Result<Value> {
        let resp = self
            .post("/api/v1/users", &json!({"username": username, "password": password, "role": role}))
            .await?;
        if resp.status != 201 {
            bail!("creating user {username} failed: HTTP {} {}", resp.status, resp.text);
        }
        Ok(resp.json)
    }
}

// ---------------------------------------------------------------------------------------------
// Checked requests and request bodies shared by the suites
// ---------------------------------------------------------------------------------------------

/// `GET path`; panics unless the answer is 200, and returns its JSON.
pub async fn get_ok(api: &Api, path: &str) -> Value {
    api.get(path).await.expect("request").expect_status(200).clone()
}

/// The integer `id` of a created resource; panics when there is none.
#[track_caller]
pub fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no integer id in {v}"))
}

/// A valid `POST /api/v1/conversations` body for guest `guest`.
pub fn conversation_body(guest: &str) -> Value {
    json!({"guestName": guest, "channel": "whatsapp", "subject": "Late checkout"})
}

/// A valid `POST /api/v1/approvals` body.
pub fn approval_body() -> Value {
    json!({"kind": "refund", "summary": "Refund the minibar charge", "payload": {"amount": 12.5}})
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// The standard claims of a Pulse token.
pub fn claims(sub: i64, username: &str, role: &str, exp: i64) -> Value {
    json!({"sub": sub.to_string(), "username": username, "role": role, "iat": now_secs(), "exp": exp})
}

/// An HS256 token for `claims` signed with `secret`.
pub fn mint_token_claims(secret: &str, claims: &Value) -> Result<String> {
    mint_token_alg(jsonwebtoken::Algorithm::HS256, secret, claims)
}

/// A token for `claims` signed with `secret` using the HMAC algorithm `alg`.
pub fn mint_token_alg(alg: jsonwebtoken::Algorithm, secret: &str, claims: &Value) -> Result<String> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("encoding JWT")
}

/// An HS256 token with the standard claims, expiring `expires_in` seconds from now
/// (negative: already expired).
pub fn mint_token(secret: &str, sub: i64, username: &str, role: &str, expires_in: i64) -> Result<String> {
    mint_token_claims(secret, &claims(sub, username, role, now_secs() + expires_in))
}

/// An unsigned token (`{"alg": "none"}`, empty signature) carrying `claims`.
pub fn unsigned_token(claims: &Value) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let body = base64url(claims.to_string().as_bytes());
    format!("{header}.{body}.")
}

/// The header and claims of a JWT, decoded without checking the signature.
pub fn decode_unverified(token: &str) -> Result<(Value, Value)> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a JWT (three dot-separated parts): {token}");
    };
    let decode = |part: &str| -> Result<Value> {
        let bytes = base64url_decode(part).ok_or_else(|| anyhow!("bad base64url in {token}"))?;
        serde_json::from_slice(&bytes).context("JWT part is not JSON")
    };
    Ok((decode(header)?, decode(claims)?))
}

/// Decodes unpadded (or padded) base64url; `None` on a bad character.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// Unpadded base64url.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------------------------

/// What [`Ws::next_incoming`] saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A text message that is JSON.
    Json(Value),
    /// A text message that is not JSON, or a binary message (lossy text).
    Other(String),
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
    /// The stream ended (or failed) without a close frame.
    Ended(String),
}

/// A WebSocket client connection.
#[derive(Debug)]
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pings: usize,
    closed: bool,
}

/// Connects to `url`. A refused upgrade comes back as `Err(Error::Http(response))`.
pub async fn connect(url: &str) -> Result<Ws, tungstenite::Error> {
    let (stream, _) = tokio_tungstenite::connect_async(url).await?;
    Ok(Ws { stream, pings: 0, closed: false })
}

/// The HTTP status of a refused upgrade, or `None` when the error is something else.
pub fn refused_status(err: &tungstenite::Error) -> Option<u16> {
    match err {
        tungstenite::Error::Http(resp) => Some(resp.status().as_u16()),
        _ => None,
    }
}

/// The body of a refused upgrade, if any.
pub fn refused_body(err: &tungstenite::Error) -> Option<String> {
    match err {
        tungstenite::Error::Http(resp) => {
            resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
        }
        _ => None,
    }
}

impl Ws {
    /// The next message, close or end within `timeout`; `None` on timeout. WebSocket pings and
    /// pongs are counted and skipped (tungstenite answers pings by itself).
    pub async fn next_incoming(&mut self, timeout: Duration) -> Option<Incoming> {
        if self.closed {
            return Some(Incoming::Ended("already closed".into()));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()?;
            let incoming = match next {
                None => Incoming::Ended("stream ended".into()),
                Some(Err(e)) => Incoming::Ended(e.to_string()),
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) => Incoming::Json(v),
                    Err(_) => Incoming::Other(t.as_str().to_owned()),
                },
                Some(Ok(Message::Binary(b))) => Incoming::Other(String::from_utf8_lossy(&b).into_owned()),
                Some(Ok(Message::Ping(_))) => {
                    self.pings += 1;
                    continue;
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => Incoming::Close(frame.map(|f| u16::from(f.code))),
            };
            if matches!(incoming, Incoming::Close(_) | Incoming::Ended(_)) {
                self.closed = true;
            }
            return Some(incoming);
        }
    }

    /// The next JSON message within `timeout`; an error on timeout, close or anything else.
    pub async fn next_json(&mut self, timeout: Duration) -> Result<Value> {
        match self.next_incoming(timeout).await {
            Some(Incoming::Json(v)) => Ok(v),
            Some(other) => bail!("expected a JSON message, got {other:?}"),
            None => bail!("no message within {timeout:?}"),
        }
    }

    /// The next JSON message whose `type` is `ty`, skipping others, within `timeout` overall.
    pub async fn next_of_type(&mut self, ty: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_incoming(left).await {
                Some(Incoming::Json(v)) if v.get("type").and_then(Value::as_str) == Some(ty) => return Ok(v),
                Some(Incoming::Json(v)) => skipped.push(v),
                Some(other) => bail!("waiting for {ty:?}, got {other:?} (skipped {skipped:?})"),
                None => bail!("no {ty:?} message within {timeout:?} (skipped {skipped:?})"),
            }
        }
    }

    /// Every JSON (or other text) message received during `duration`. Stops early at a close.
    pub async fn drain_for(&mut self, duration: Duration) -> Vec<Value> {
        let deadline = Instant::now() + duration;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next_incoming(left).await {
                Some(Incoming::Json(v)) => out.push(v),
                Some(Incoming::Other(s)) => out.push(Value::String(s)),
                Some(Incoming::Close(code)) => {
                    out.push(json!({"__close": code}));
                    return out;
                }
                Some(Incoming::Ended(why)) => {
                    out.push(json!({"__ended": why}));
                    return out;
                }
                None => return out,
            }
        }
    }

    /// Reads until a close frame and returns its code (skipping messages), within `timeout`.
    /// Fails on timeout or when the stream ends without a close frame.
    pub async fn close_frame(&mut self, timeout: Duration) -> Result<Option<u16>> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_incoming(left).await {
                Some(Incoming::Close(code)) => return Ok(code),
                Some(Incoming::Ended(why)) => {
                    bail!("connection ended without a close frame: {why} (skipped {skipped:?})")
                }
                Some(Incoming::Json(v)) => skipped.push(v),
                Some(Incoming::Other(s)) => skipped.push(Value::String(s)),
                None => bail!("no close frame within {timeout:?} (skipped {skipped:?})"),
            }
        }
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), tungstenite::Error> {
        self.stream.send(Message::Text(text.into())).await
    }

    /// Sends a JSON value as a text message.
    pub async fn send_json(&mut self, value: &Value) -> Result<(), tungstenite::Error> {
        self.send_text(&value.to_string()).await
    }

    /// How many WebSocket pings the server has sent so far (seen while reading).
    pub fn pings_seen(&self) -> usize {
        self.pings
    }

    /// Sends a normal close (best effort).
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    /// The underlying stream, for tests that need raw access.
    pub fn stream_mut(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.stream
    }
}

// ---------------------------------------------------------------------------------------------
// A whole test environment
// ---------------------------------------------------------------------------------------------

/// A running server on a fresh database, with an admin client already logged in.
#[derive(Debug)]
pub struct Pulse {
    /// The server (declared first: dropped, so killed, before the database).
    pub server: ServerProcess,
    /// An [`Api`] client with the admin's token.
    pub admin: Api,
    /// The admin user as the login answer gave it.
    pub admin_user: Value,
    /// The database.
    pub db: TestDatabase,
}

impl Pulse {
    /// Starts a server on `db` with default options and logs in as admin.
    pub async fn start(db: TestDatabase) -> Result<Self> {
        Self::start_with(db, ServerOptions::default()).await
    }

    /// Starts a server on `db` with `opts` and logs in as admin.
    pub async fn start_with(db: TestDatabase, opts: ServerOptions) -> Result<Self> {
        let server = ServerProcess::start(&db, opts).await?;
        let api = server.api();
        let resp = api.login_response(ADMIN_USERNAME, server.admin_password()).await?;
        if resp.status != 200 {
            bail!("admin login failed: HTTP {} {}\nlog:\n{}", resp.status, resp.text, server.logs());
        }
        let token = resp.json.get("token").and_then(Value::as_str).ok_or_else(|| anyhow!("no token"))?;
        let admin = api.with_token(token);
        let admin_user = resp.json.get("user").cloned().unwrap_or(Value::Null);
        Ok(Self { server, admin, admin_user, db })
    }

    /// The admin's user id.
    pub fn admin_id(&self) -> i64 {
        self.admin_user.get("id").and_then(Value::as_i64).unwrap_or(0)
    }

    /// Creates a user with `role` (through the admin API), logs in as it and returns its client
    /// and user JSON.
    pub async fn user(&self, username: &str, role: &str) -> Result<(Api, Value)> {
        let password = format!("pw-{}", random_string(16));
        let user = self.admin.create_user(username, &password, role).await?;
        let token = self.admin.login(username, &password).await?;
        Ok((self.admin.with_token(token), user))
    }

    /// Connects a WebSocket with `token`.
    pub async fn ws(&self, token: &str) -> Result<Ws> {
        connect(&self.server.ws_url(token)).await.map_err(|e| anyhow!("WebSocket connect failed: {e}"))
    }

    /// Connects a WebSocket with `token` and reads the four opening messages
    /// (`connected`, then the three stats), returning them.
    pub async fn ws_ready(&self, token: &str) -> Result<(Ws, Vec<Value>)> {
        let mut ws = self.ws(token).await?;
        let mut first = Vec::with_capacity(4);
        for _ in 0..4 {
            first.push(ws.next_json(Duration::from_secs(5)).await?);
        }
        Ok((ws, first))
    }
}

// ---------------------------------------------------------------------------------------------
// Fault-test helpers
// ---------------------------------------------------------------------------------------------

impl TestDatabase {
    /// `(admin url, database name)` of a PostgreSQL database; `None` on SQLite.
    pub fn postgres_admin(&self) -> Option<(&str, &str)> {
        self.pg.as_ref().map(|(admin, name)| (admin.as_str(), name.as_str()))
    }

    /// The file of a SQLite database; `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match self.kind {
            DbKind::Sqlite => self.url.strip_prefix("sqlite://").map(PathBuf::from),
            DbKind::Postgres => None,
        }
    }
}

impl ServerProcess {
    /// The process's resident set size in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn vm_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("reading /proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", self.pid))
    }

    /// The value of the sample `name` on `GET /metrics` (`None` when absent); a labelled sample
    /// is named as `/metrics` writes it (`pulse_connections{transport="ws"}`).
    pub async fn metric(&self, name: &str) -> Result<Option<f64>> {
        let resp = self.api().get("/metrics").await?;
        if resp.status != 200 {
            bail!("GET /metrics: HTTP {} {}", resp.status, resp.text);
        }
        Ok(resp.text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        }))
    }
}

#[cfg(test)]
mod both_databases_macro {
    use crate::{DbKind, TestDatabase};

    /// Called once with each kind; the URL must be of that kind.
    pub async fn gets_a_fresh_database_of_each_kind(db: TestDatabase) {
        let scheme = match db.kind() {
            DbKind::Sqlite => "sqlite://",
            DbKind::Postgres => "postgres://",
        };
        assert!(db.url().starts_with(scheme), "{:?}: {}", db.kind(), db.url());
    }

    crate::both_databases!(gets_a_fresh_database_of_each_kind);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        for input in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0xfb, 0xff, 0x00]] {
            assert_eq!(base64url_decode(&base64url(input)).unwrap(), input);
        }
    }

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u:p@h/db?sslmode=disable", "y").unwrap(),
            "postgres://u:p@h/y?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://h:1", "z").unwrap(), "postgres://h:1/z");
    }

    #[test]
    fn unsigned_token_has_alg_none_and_empty_signature() {
        let t = unsigned_token(&json!({"sub": "1"}));
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], base64url(br#"{"alg":"none","typ":"JWT"}"#));
        assert_eq!(parts[2], "");
    }
}
