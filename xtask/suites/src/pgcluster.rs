//! A private PostgreSQL cluster for one test, on its own port, socket folder and data folder,
//! so the test can restart or stop PostgreSQL without touching the shared server that every
//! other test uses.
//!
//! PostgreSQL refuses to run as root, and the suites run as root here: `initdb` and `pg_ctl`
//! then run as the `postgres` user (`runuser`), in a temporary folder that user owns. The
//! cluster trusts local connections and runs with `fsync=off` (its data is thrown away).
//! Dropping it stops PostgreSQL (immediately) and removes the folder.
//!
//! Reason to change: how a throwaway PostgreSQL is made. Never depends on the server's crates.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::{free_port, psql};

/// Environment variable naming the folder of `initdb`, `pg_ctl` and `postgres`, when they are
/// not in `/usr/lib/postgresql/<version>/bin` or `/usr/local/bin`.
pub const PG_BIN_DIR_ENV: &str = "PULSE_PG_BIN_DIR";

/// How [`PgCluster::stop`] shuts PostgreSQL down (`pg_ctl stop -m …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnects every client, checkpoints and stops: an orderly restart.
    Fast,
    /// Kills every process at once, like a crash: the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    fn arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running (or stopped) PostgreSQL cluster of the test's own.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
    /// Removed on drop, after the server stopped.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Creates the cluster (`initdb`) and starts it; waits until it accepts connections.
    pub async fn start() -> Result<Self> {
        let bin = pg_bin_dir()?;
        let as_postgres = running_as_root()?;
        let dir = tempfile::Builder::new().prefix("pulse-pg-").tempdir().context("a temporary folder")?;
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(dir.path()))?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let port = free_port()?;
        let mut cluster = Self { bin, data, log, port, as_postgres, running: false, dir };
        let initdb = cluster.command("initdb");
        let data_arg = cluster.data.clone();
        run_blocking(initdb.map(|mut c| {
            c.arg("-D").arg(data_arg).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
            c
        })?)
        .await
        .context("initdb")?;
        let conf = format!(
            "\n# pulse suites: a throwaway cluster\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = off\nfull_page_writes = off\n\
             shared_buffers = 16MB\nmax_connections = 100\n",
            cluster.dir.path().display()
        );
        let conf_path = cluster.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).context("reading postgresql.conf")?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text).context("writing postgresql.conf")?;
        cluster.start_again().await?;
        Ok(cluster)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Whether it was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// What PostgreSQL logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub async fn start_again(&mut self) -> Result<()> {
        let mut c = self.command("pg_ctl")?;
        c.arg("-D").arg(&self.data).arg("-l").arg(&self.log).args(["-w", "-t", "30", "start"]);
        run_blocking(c).await.with_context(|| format!("pg_ctl start; log:\n{}", self.log()))?;
        self.running = true;
        Ok(())
    }

    /// Stops the cluster with `mode` and waits until it is down.
    pub async fn stop(&mut self, mode: StopMode) -> Result<()> {
        let mut c = self.command("pg_ctl")?;
        c.arg("-D").arg(&self.data).args(["-w", "-t", "30", "-m", mode.arg(), "stop"]);
        run_blocking(c).await.with_context(|| format!("pg_ctl stop; log:\n{}", self.log()))?;
        self.running = false;
        Ok(())
    }

    /// A real restart: stops with `mode`, starts again, and returns once it accepts
    /// connections; returns how long it was down.
    pub async fn restart(&mut self, mode: StopMode) -> Result<Duration> {
        let start = Instant::now();
        self.stop(mode).await?;
        self.start_again().await?;
        Ok(start.elapsed())
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        psql(&self.admin_url(), &[&format!("CREATE DATABASE {name}")]).await;
        Ok(format!("postgres://postgres@127.0.0.1:{}/{name}", self.port))
    }

    fn command(&self, tool: &str) -> Result<Command> {
        let path = self.bin.join(tool);
        if !path.is_file() {
            bail!("{} not found", path.display());
        }
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        c.stdin(Stdio::null()).current_dir(self.dir.path());
        Ok(c)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running
            && let Ok(mut c) = self.command("pg_ctl")
        {
            c.arg("-D").arg(&self.data).args(["-w", "-t", "30", "-m", "immediate", "stop"]);
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

/// Where `initdb` and `pg_ctl` are: `$PULSE_PG_BIN_DIR`, the newest
/// `/usr/lib/postgresql/<version>/bin`, or `/usr/local/bin`.
fn pg_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var(PG_BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|(_, p)| p)
        .chain([PathBuf::from("/usr/local/bin")])
        .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
        .ok_or_else(|| anyhow!("initdb and pg_ctl not found (set {PG_BIN_DIR_ENV})"))
}

fn running_as_root() -> Result<bool> {
    let out = Command::new("id").arg("-u").output().context("running id -u")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn run(c: &mut Command) -> Result<()> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs a command off the async runtime (pg_ctl waits for the server for seconds).
async fn run_blocking(mut c: Command) -> Result<()> {
    tokio::task::spawn_blocking(move || run(&mut c)).await.context("joining a blocking command")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_private_cluster_restarts_for_real_and_is_removed_on_drop() {
        let mut cluster = PgCluster::start().await.expect("a private cluster");
        assert_ne!(cluster.port(), 5432);
        let url = cluster.create_database("restart_probe").await.expect("a database");
        psql(&url, &["CREATE TABLE t (n int)", "INSERT INTO t VALUES (1)"]).await;
        let pid_before = psql(&url, &["SELECT pg_backend_pid()"]).await;
        let postmaster =
            |c: &PgCluster| std::fs::read_to_string(c.data.join("postmaster.pid")).unwrap_or_default();
        let first = postmaster(&cluster).lines().next().unwrap_or_default().to_owned();

        let down = cluster.restart(StopMode::Immediate).await.expect("a restart");
        let second = postmaster(&cluster).lines().next().unwrap_or_default().to_owned();
        assert_ne!(first, second, "the postmaster is the same process after a restart");
        assert_eq!(psql(&url, &["SELECT count(*) FROM t"]).await, "1", "the data survived the restart");
        assert!(!pid_before.is_empty());
        assert!(
            cluster.log().contains("database system was interrupted"),
            "no crash recovery after an immediate stop"
        );

        cluster.stop(StopMode::Fast).await.expect("a stop");
        assert!(!cluster.is_running());
        let dir = cluster.dir.path().to_owned();
        cluster.start_again().await.expect("started again");
        drop(cluster);
        assert!(!dir.exists(), "{} left behind", dir.display());
        eprintln!("private cluster: restart took {down:?}");
    }
}
