//! The system under test, started through the suites' harness: Pulse (one server binary, or
//! several instances on one PostgreSQL database) or the Node peer, each on a fresh database of
//! its own. Dropping a target kills its processes, then drops its database — which is how an
//! error or an interruption stops everything.
//!
//! Changes when how a side is started or reached changes; never depends on the phases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::future::{join_all, try_join_all};
use suites::{ADMIN_USERNAME, Api, DbKind, ServerOptions, ServerProcess, TestDatabase, random_string};
use tokio::time::{Instant, sleep};

use crate::load;

/// How to start Pulse for a fleet.
#[derive(Debug, Clone)]
pub struct PulseSpec {
    /// The `server` binary.
    pub bin: PathBuf,
    /// Instances on the one database.
    pub instances: usize,
    /// Clients the server must accept from the one bench user.
    pub clients: usize,
    /// `WS_HEARTBEAT_SECS`.
    pub heartbeat_secs: u64,
    /// `WORKERS`, if set.
    pub workers: Option<usize>,
    /// The log of instance 0 (`server-<stem>.log`); with several, `server-<stem>-<i>.log`.
    pub log_path: PathBuf,
}

impl PulseSpec {
    /// The environment a report shows: everything set besides the URL, secrets and log.
    pub fn env_summary(&self) -> Vec<String> {
        self.env().iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Lifted WebSocket limits (all clients are one user), heartbeat and workers.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("WS_MAX_CONNECTIONS_PER_USER".to_owned(), (self.clients + 100).to_string()),
            ("WS_MAX_CONNECTIONS".to_owned(), (self.clients + 100).max(15_000).to_string()),
            ("WS_HEARTBEAT_SECS".to_owned(), self.heartbeat_secs.to_string()),
        ];
        env.extend(self.workers.map(|w| ("WORKERS".to_owned(), w.to_string())));
        env
    }

    /// The log of instance `i`: numbered when there are several, so each stays readable.
    pub fn log_of(&self, i: usize) -> PathBuf {
        if self.instances < 2 {
            return self.log_path.clone();
        }
        let stem = self.log_path.file_stem().unwrap_or_default().to_string_lossy();
        self.log_path.with_file_name(format!("{stem}-{i}.log"))
    }
}

/// How to start the Node peer (`../shared/peers/node-seed`).
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// `node`.
    pub node: PathBuf,
    /// The peer's folder (with `node_modules`).
    pub dir: PathBuf,
    /// Where its output goes.
    pub log_path: PathBuf,
}

/// What was started, and how to start it again.
#[derive(Debug)]
enum Side {
    Pulse { spec: PulseSpec, secret: String, password: String },
    Peer { spec: PeerSpec, secret: String },
}

/// A running side: its processes, its database and a client with the bench user's token.
#[derive(Debug)]
pub struct Target {
    /// Declared first: dropped (so killed) before the database.
    servers: Vec<ServerProcess>,
    db: TestDatabase,
    side: Side,
    api: Api,
    token: String,
}

/// A fresh database: a SQLite file, or a PostgreSQL database on this machine's loopback.
pub fn fresh_database(kind: DbKind, pg_admin_url: &str) -> Result<TestDatabase> {
    match kind {
        DbKind::Sqlite => TestDatabase::sqlite(),
        DbKind::Postgres => {
            check_loopback(pg_admin_url)?;
            TestDatabase::postgres_on(pg_admin_url)
        }
    }
}

impl Target {
    /// Starts Pulse on `db`: instance 0 alone (it migrates and creates the admin), then the
    /// others together; with several, waits until every `/readyz` answers (its link to the
    /// other instances is up), then logs in as the admin.
    pub async fn pulse(spec: &PulseSpec, db: TestDatabase) -> Result<Self> {
        if !spec.bin.is_file() {
            bail!(
                "server binary {} not found: build it with `cargo build --release -p server`, \
                 or pass --server-bin / PULSE_SERVER_BIN",
                spec.bin.display()
            );
        }
        for i in 0..spec.instances {
            let _ = std::fs::remove_file(spec.log_of(i));
        }
        let password = random_string(20);
        let side = Side::Pulse { spec: spec.clone(), secret: random_string(48), password: password.clone() };
        let servers = side.start(&db).await?;
        let token = servers[0].api().login(ADMIN_USERNAME, &password).await?;
        let api = servers[0].api().with_token(&token);
        Ok(Self { servers, db, side, api, token })
    }

    /// Starts the Node peer on `db` (PostgreSQL) with a token the bench mints (HS256).
    pub async fn peer(spec: &PeerSpec, db: TestDatabase) -> Result<Self> {
        let _ = std::fs::remove_file(&spec.log_path);
        let secret = random_string(48);
        let token = suites::mint_token(&secret, 1, ADMIN_USERNAME, "admin", 7 * 24 * 3600)?;
        let side = Side::Peer { spec: spec.clone(), secret };
        let servers = side.start(&db).await?;
        let api = servers[0].api().with_token(&token);
        Ok(Self { servers, db, side, api, token })
    }

    /// Whether this is the Node peer.
    pub fn is_peer(&self) -> bool {
        matches!(self.side, Side::Peer { .. })
    }

    /// The admin's client on instance 0 (every mutation and poll goes there).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Server processes.
    pub fn instances(&self) -> usize {
        self.servers.len()
    }

    /// Their process ids, in instance order.
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(ServerProcess::pid).collect()
    }

    /// `ws://…/ws?token=…` of every instance, in order.
    pub fn ws_urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.ws_url(&self.token)).collect()
    }

    /// Fails, with the end of its log, if a process is no longer running after `phase`.
    pub fn check_running(&mut self, phase: &str) -> Result<()> {
        let several = self.servers.len() > 1;
        for (i, server) in self.servers.iter_mut().enumerate() {
            if let Some(status) = server.exit_status() {
                let which = if several { format!("server instance {i}") } else { "server".to_owned() };
                bail!(
                    "the {which} exited during {phase} ({status}); its log:\n{}",
                    tail(&server.logs(), 3000)
                );
            }
        }
        Ok(())
    }

    /// The counters of `GET /metrics` summed over every instance, or None when an instance
    /// has no such endpoint (the peer).
    pub async fn metrics(&self) -> Option<BTreeMap<String, f64>> {
        let each = join_all(self.servers.iter().map(|s| async move { load::metrics(&s.api()).await })).await;
        let mut sum = BTreeMap::new();
        for metrics in each {
            for (name, v) in metrics? {
                *sum.entry(name).or_insert(0.0) += v;
            }
        }
        Some(sum)
    }

    /// Inserts `n` pending tasks with SQL, bypassing the API (Pulse's counters are kept by
    /// triggers). Pulse's servers are stopped meanwhile (SQLite's file must be free) and
    /// started again; the token stays valid.
    pub async fn bulk_insert_tasks(&mut self, n: u64) -> Result<()> {
        if self.is_peer() {
            return insert_peer_tasks(self.db.url(), n).await;
        }
        stop_all(std::mem::take(&mut self.servers)).await?;
        insert_pulse_tasks(&self.db, n, ADMIN_USERNAME).await?;
        self.servers = self.side.start(&self.db).await?;
        self.api = self.servers[0].api().with_token(&self.token);
        Ok(())
    }

    /// Stops every process (SIGTERM; SIGKILL after 15 s), then drops the database.
    pub async fn stop(mut self) -> Result<()> {
        stop_all(std::mem::take(&mut self.servers)).await
    }
}

impl Side {
    async fn start(&self, db: &TestDatabase) -> Result<Vec<ServerProcess>> {
        match self {
            Side::Pulse { spec, secret, password } => {
                let opts = |i: usize| {
                    let mut o = ServerOptions::default()
                        .program(&spec.bin, &[])
                        .log_file(spec.log_of(i))
                        .env("JWT_SECRET", secret)
                        .env("ADMIN_PASSWORD", password)
                        .env("RUST_LOG", "warn");
                    o.env.extend(spec.env());
                    o
                };
                let first = ServerProcess::start(db, opts(0)).await.context("starting the server")?;
                let mut servers = vec![first];
                servers.extend(
                    try_join_all((1..spec.instances).map(|i| {
                        let o = opts(i);
                        async move {
                            ServerProcess::start(db, o)
                                .await
                                .with_context(|| format!("starting instance {i}"))
                        }
                    }))
                    .await?,
                );
                if servers.len() > 1 {
                    try_join_all(servers.iter_mut().map(wait_ready)).await?;
                }
                Ok(servers)
            }
            Side::Peer { spec, secret } => {
                let port = suites::free_port()?.to_string();
                let opts = ServerOptions::default()
                    .program(&spec.node, &["src/server.js"])
                    .current_dir(&spec.dir)
                    .log_file(&spec.log_path)
                    .env("BIND_ADDR", format!("127.0.0.1:{port}"))
                    .env("PORT", port)
                    .env("JWT_SECRET", secret);
                Ok(vec![ServerProcess::start(db, opts).await.context("starting the Node peer")?])
            }
        }
    }
}

/// Polls `/readyz` until it answers 2xx, at most 60 s; fails at once if the process exits.
async fn wait_ready(server: &mut ServerProcess) -> Result<()> {
    let api = server.api();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.exit_status() {
            bail!(
                "the server exited while the bench waited for /readyz ({status}); its log:\n{}",
                server.logs()
            );
        }
        if api.get("/readyz").await.is_ok_and(|r| (200..300).contains(&r.status)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not answer /readyz with 2xx within 60 s; its log:\n{}",
                tail(&server.logs(), 3000)
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM to every process at once (WebSockets closed with 1001), SIGKILL to any still
/// running after 15 s; the first error, if any, after all were stopped.
async fn stop_all(servers: Vec<ServerProcess>) -> Result<()> {
    join_all(servers.into_iter().map(|mut s| async move {
        if s.exit_status().is_some() {
            return Ok(());
        }
        if s.stop_graceful().await.is_err() {
            s.kill().await?;
        }
        Ok(())
    }))
    .await
    .into_iter()
    .collect()
}

/// The last `n` bytes of a log (on a character boundary).
fn tail(log: &str, n: usize) -> String {
    let mut start = log.len().saturating_sub(n);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_owned()
}

/// Pulse's `tasks`: one batch of 2,000 rows per transaction on PostgreSQL — within a single
/// transaction every row's trigger updates the same counter row again and walks the chain of
/// its earlier versions (30,000 rows took 13 s in one statement; 1,000,000 would take hours).
/// SQLite: one statement through the `sqlite3` CLI.
async fn insert_pulse_tasks(db: &TestDatabase, n: u64, created_by: &str) -> Result<()> {
    if !created_by.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        bail!("unexpected username {created_by:?}");
    }
    match db.kind() {
        DbKind::Postgres => {
            let batches: Vec<String> = batches(n)
                .map(|(from, to)| {
                    format!(
                        "INSERT INTO tasks (kind, department, description, status, created_by, created_at, updated_at) \
                         SELECT 'bench', 'preload', 'preloaded task ' || g, 'pending', '{created_by}', \
                         now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' FROM generate_series({from}, {to}) AS g"
                    )
                })
                .collect();
            suites::try_psql(db.url(), &batches).await.map(drop)
        }
        DbKind::Sqlite => {
            let path = db.sqlite_path().ok_or_else(|| anyhow!("no SQLite path"))?;
            let sql = format!(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
                 INSERT INTO tasks (kind, department, description, status, created_by, created_at, updated_at) \
                 SELECT 'bench', 'preload', 'preloaded task ' || x, 'pending', '{created_by}', \
                 strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now') FROM c;"
            );
            let out = tokio::process::Command::new("sqlite3")
                .arg(&path)
                .arg(&sql)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .context("running sqlite3 (install it: apt-get install sqlite3)")?;
            if !out.status.success() {
                bail!("sqlite3 failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        }
    }
}

/// The peer's own `tasks` table (no triggers; its stats are a grouped count).
async fn insert_peer_tasks(url: &str, n: u64) -> Result<()> {
    let batches: Vec<String> = batches(n)
        .map(|(from, to)| {
            format!(
                "INSERT INTO tasks (type, department, description) \
                 SELECT 'bench', 'preload', 'preloaded task ' || g FROM generate_series({from}, {to}) AS g"
            )
        })
        .collect();
    suites::try_psql(url, &batches).await.map(drop)
}

/// `1..=n` in ranges of 2,000.
fn batches(n: u64) -> impl Iterator<Item = (u64, u64)> {
    const BATCH: u64 = 2_000;
    (0..n.div_ceil(BATCH)).map(move |k| (k * BATCH + 1, ((k + 1) * BATCH).min(n)))
}

/// Refuses a PostgreSQL URL that does not point at this machine's loopback.
fn check_loopback(url: &str) -> Result<()> {
    let rest = url.split_once("://").map(|(_, r)| r).ok_or_else(|| anyhow!("not a URL: {url}"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let host = host_port.rsplit_once(':').map(|(h, _)| h).unwrap_or(host_port);
    if host == "127.0.0.1" || host == "localhost" {
        Ok(())
    } else {
        bail!("the bench only targets 127.0.0.1; refusing PostgreSQL host {host:?}")
    }
}

/// `node` on `PATH`, if any.
pub fn find_node() -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("node")).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_instances_get_numbered_logs() {
        let spec = PulseSpec {
            bin: PathBuf::from("server"),
            instances: 1,
            clients: 10,
            heartbeat_secs: 25,
            workers: None,
            log_path: PathBuf::from("/out/server-postgres-2-instances.log"),
        };
        assert_eq!(spec.log_of(0), spec.log_path);
        let two = PulseSpec { instances: 2, ..spec };
        assert_eq!(two.log_of(1), PathBuf::from("/out/server-postgres-2-instances-1.log"));
    }

    #[test]
    fn batches_cover_every_row_once() {
        assert_eq!(batches(0).count(), 0);
        assert_eq!(batches(4_001).collect::<Vec<_>>(), vec![(1, 2_000), (2_001, 4_000), (4_001, 4_001)]);
    }

    #[test]
    fn only_loopback_databases() {
        assert!(check_loopback("postgres://postgres@127.0.0.1:5432/postgres").is_ok());
        assert!(check_loopback("postgres://u:p@localhost/x").is_ok());
        assert!(check_loopback("postgres://u@db.example:5432/x").is_err());
    }
}
