//! The server under test as a child process.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

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
        let mut child = cmd.spawn().with_context(|| format!("starting {}", cfg.bin.display()))?;
        let pid = child.id().context("server pid")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the server exited during start-up ({status}); its log:\n{}",
                    tail(&cfg.log_path, 3000)
                );
            }
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the server did not answer /healthz within 60 s; its log:\n{}",
                    tail(&cfg.log_path, 3000)
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { child, pid, base, log_path: cfg.log_path.clone() })
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
