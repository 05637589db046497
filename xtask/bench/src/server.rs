//! The server under test as a child process, alone or as several instances on one database.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::future::{join_all, try_join_all};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::db::random_name;

/// How the server is started (the same for every restart within a run).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The `server` binary.
    pub bin: PathBuf,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `JWT_SECRET`.
    pub jwt_secret: String,
    /// `ADMIN_USERNAME`.
    pub admin_username: String,
    /// `ADMIN_PASSWORD`.
    pub admin_password: String,
    /// `WS_HEARTBEAT_SECS`.
    pub heartbeat_secs: u64,
    /// `WORKERS`, if set.
    pub workers: Option<usize>,
    /// Where its stdout and stderr go (appended).
    pub log_path: PathBuf,
    /// More environment variables (set last).
    pub extra_env: Vec<(String, String)>,
}

impl ServerConfig {
    /// A server for a fleet of `clients` dashboards that all log in as `admin` (a fresh
    /// secret and password): the per-user and per-process WebSocket limits are lifted above
    /// the fleet (servers without them ignore these variables).
    pub fn for_fleet(
        bin: &Path,
        database_url: &str,
        admin: &str,
        clients: usize,
        heartbeat_secs: u64,
        workers: Option<usize>,
        log_path: PathBuf,
    ) -> Self {
        Self {
            bin: bin.to_owned(),
            database_url: database_url.to_owned(),
            jwt_secret: random_name(48),
            admin_username: admin.to_owned(),
            admin_password: random_name(20),
            heartbeat_secs,
            workers,
            log_path,
            extra_env: vec![
                ("WS_MAX_CONNECTIONS_PER_USER".into(), (clients + 100).to_string()),
                ("WS_MAX_CONNECTIONS".into(), (clients + 100).max(15_000).to_string()),
            ],
        }
    }

    /// The environment a report shows: everything set besides the URL, secrets and log.
    pub fn env_summary(&self) -> Vec<String> {
        self.extra_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain([format!("WS_HEARTBEAT_SECS={}", self.heartbeat_secs)])
            .chain(self.workers.map(|w| format!("WORKERS={w}")))
            .collect()
    }

    /// The configuration of instance `i` of `n`: the same except for the log, which gets the
    /// instance number (`server-postgres-2-instances-1.log`) when there are several, so each instance's
    /// log stays readable on its own.
    pub fn instance(&self, i: usize, n: usize) -> Self {
        let mut cfg = self.clone();
        if n > 1 {
            let stem = self.log_path.file_stem().unwrap_or_default().to_string_lossy();
            cfg.log_path.set_file_name(format!("{stem}-{i}.log"));
        }
        cfg
    }
}

/// A running server; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pid: u32,
    base: String,
    log_path: PathBuf,
}

/// A free TCP port on 127.0.0.1 (the listener is closed before the server binds it).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The last `n` bytes of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(n);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

impl Server {
    /// Starts the binary on a free port and waits (at most 60 s) until `/healthz` answers 200.
    pub async fn start(cfg: &ServerConfig) -> Result<Self> {
        if !cfg.bin.is_file() {
            bail!(
                "server binary {} not found: build it with `cargo build --release -p server`, \
                 or pass --server-bin / PULSE_SERVER_BIN",
                cfg.bin.display()
            );
        }
        let port = free_port()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.log_path)
            .with_context(|| format!("opening {}", cfg.log_path.display()))?;
        let mut cmd = Command::new(&cfg.bin);
        cmd.env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &cfg.database_url)
            .env("JWT_SECRET", &cfg.jwt_secret)
            .env("ADMIN_USERNAME", &cfg.admin_username)
            .env("ADMIN_PASSWORD", &cfg.admin_password)
            .env("RUST_LOG", "warn")
            .env("WS_HEARTBEAT_SECS", cfg.heartbeat_secs.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(w) = cfg.workers {
            cmd.env("WORKERS", w.to_string());
        }
        cmd.envs(cfg.extra_env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().with_context(|| format!("starting {}", cfg.bin.display()))?;
        let pid = child.id().context("server pid")?;
        let mut server =
            Self { child, pid, base: format!("http://127.0.0.1:{port}"), log_path: cfg.log_path.clone() };
        server.wait_until_ok("/healthz").await?;
        Ok(server)
    }

    /// Polls `GET path` until it answers 2xx, at most 60 s; fails at once if the process exits.
    async fn wait_until_ok(&mut self, path: &str) -> Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited while the bench waited for {path} ({status}); its log:\n{}",
                    self.log_tail(3000)
                );
            }
            if let Ok(r) = http.get(format!("{}{path}", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the server did not answer {path} with 2xx within 60 s; its log:\n{}",
                    self.log_tail(3000)
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn ws_base(&self) -> String {
        self.base.replacen("http://", "ws://", 1)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_path, n)
    }

    /// SIGTERM (graceful: WebSockets closed with 1001), then SIGKILL after 10 s.
    pub async fn stop(mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // `kill` the command: the workspace forbids the unsafe libc call.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.kill().await.context("killing the server")?;
            }
        }
        Ok(())
    }
}

/// Every server of a run: one, or several instances on one PostgreSQL database sharing
/// `DATABASE_URL` and `JWT_SECRET` (so one login's token works on all), each on its own port.
/// Dropping it kills them all, which is how an error or an interruption stops every instance.
#[derive(Debug)]
pub struct Cluster {
    servers: Vec<Server>,
}

impl Cluster {
    /// Starts `n` instances of `cfg`: the first alone (it runs the migrations and creates the
    /// admin), then the others together. With several, it also waits until every instance's
    /// `/readyz` answers 2xx, i.e. its cross-instance listener is connected: a change committed
    /// before that would reach the instance through its catch-up or 1 s safety poll instead of
    /// the doorbell, and skew the remote latency.
    pub async fn start(cfg: &ServerConfig, n: usize) -> Result<Self> {
        let mut servers = vec![Server::start(&cfg.instance(0, n)).await?];
        servers.extend(
            try_join_all((1..n).map(|i| async move { Server::start(&cfg.instance(i, n)).await })).await?,
        );
        if n > 1 {
            try_join_all(servers.iter_mut().map(|s| s.wait_until_ok("/readyz"))).await?;
        }
        Ok(Self { servers })
    }

    /// Instance 0: the one the bench logs in to and sends every mutation and poll to.
    pub fn first(&self) -> &Server {
        &self.servers[0]
    }

    /// Every instance, in order.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// `ws://127.0.0.1:PORT/ws?token=…` of every instance, in order.
    pub fn ws_urls(&self, token: &str) -> Vec<String> {
        self.servers.iter().map(|s| format!("{}/ws?token={token}", s.ws_base())).collect()
    }

    /// Fails, with the log's end, if an instance is no longer running after `phase`.
    pub fn check_running(&mut self, phase: &str) -> Result<()> {
        let several = self.servers.len() > 1;
        for (i, server) in self.servers.iter_mut().enumerate() {
            if !server.is_running() {
                let which = if several { format!("server instance {i}") } else { "server".to_owned() };
                bail!("the {which} exited during {phase}; its log:\n{}", server.log_tail(3000));
            }
        }
        Ok(())
    }

    /// Stops every instance (see [`Server::stop`]) at once; the first error, if any, after all
    /// were stopped.
    pub async fn stop(self) -> Result<()> {
        join_all(self.servers.into_iter().map(Server::stop)).await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_instances_get_numbered_logs() {
        let cfg = ServerConfig {
            bin: PathBuf::from("server"),
            database_url: String::new(),
            jwt_secret: String::new(),
            admin_username: String::new(),
            admin_password: String::new(),
            heartbeat_secs: 25,
            workers: None,
            log_path: PathBuf::from("/out/server-postgres-2-instances.log"),
            extra_env: Vec::new(),
        };
        assert_eq!(cfg.instance(0, 1).log_path, cfg.log_path);
        assert_eq!(cfg.instance(1, 2).log_path, PathBuf::from("/out/server-postgres-2-instances-1.log"));
    }
}
