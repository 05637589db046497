//! Fresh databases for one bench run, and direct bulk inserts for large preloads.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use rand::Rng;
use rand::distr::Alphanumeric;

/// The backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL on 127.0.0.1.
    Postgres,
}

impl DbKind {
    /// `sqlite` or `postgres` (used in file names).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A random lowercase alphanumeric string.
pub fn random_name(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect::<String>().to_lowercase()
}

/// A fresh database; dropping it removes it (the SQLite folder, or the PostgreSQL database
/// `WITH (FORCE)`).
#[derive(Debug)]
pub struct BenchDb {
    kind: DbKind,
    url: String,
    sqlite_path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl BenchDb {
    /// Creates an empty database (the server creates the SQLite file and runs the migrations).
    pub fn create(kind: DbKind, pg_admin_url: &str) -> Result<Self> {
        match kind {
            DbKind::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("pulse-bench-")
                    .tempdir()
                    .context("creating a temporary folder")?;
                let path = dir.path().join("pulse.db");
                Ok(Self {
                    kind,
                    url: format!("sqlite://{}", path.display()),
                    sqlite_path: Some(path),
                    _dir: Some(dir),
                    pg: None,
                })
            }
            DbKind::Postgres => {
                check_loopback(pg_admin_url)?;
                let name = format!("pulse_bench_{}", random_name(10));
                psql(pg_admin_url, &format!("CREATE DATABASE {name}"))
                    .with_context(|| format!("creating PostgreSQL database {name}"))?;
                let url = replace_database(pg_admin_url, &name)?;
                Ok(Self {
                    kind,
                    url,
                    sqlite_path: None,
                    _dir: None,
                    pg: Some((pg_admin_url.to_owned(), name)),
                })
            }
        }
    }

    /// `DATABASE_URL` for the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Inserts `n` pending tasks created by `created_by` in one statement, bypassing the API.
    /// The `stats_counters` triggers run for every row, so the stats stay right. On SQLite
    /// the server must be stopped.
    pub fn bulk_insert_tasks(&self, n: u64, created_by: &str) -> Result<()> {
        if !created_by.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            bail!("unexpected username {created_by:?}");
        }
        match self.kind {
            DbKind::Postgres => {
                // One transaction per batch: within a single transaction every row's trigger
                // updates the same counter row again, and each update walks the chain of that
                // row's earlier versions (30,000 rows took 13 s in one statement, 1,000,000
                // would take hours). Each `-c` runs in its own transaction.
                const BATCH: u64 = 2_000;
                let mut cmd = Command::new("psql");
                cmd.arg(&self.url).args(["-v", "ON_ERROR_STOP=1", "-q"]);
                let mut from = 1;
                while from <= n {
                    let to = (from + BATCH - 1).min(n);
                    cmd.arg("-c").arg(format!(
                        "INSERT INTO tasks (kind, department, description, status, created_by, created_at, updated_at) \
                         SELECT 'bench', 'preload', 'preloaded task ' || g, 'pending', '{created_by}', \
                         now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' FROM generate_series({from}, {to}) AS g"
                    ));
                    from = to + 1;
                }
                let out = cmd.stdin(Stdio::null()).output().context("running psql (is it installed?)")?;
                if !out.status.success() {
                    bail!("psql failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
                }
                Ok(())
            }
            DbKind::Sqlite => {
                let path = self.sqlite_path.as_ref().ok_or_else(|| anyhow!("no SQLite path"))?;
                let sql = format!(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
                     INSERT INTO tasks (kind, department, description, status, created_by, created_at, updated_at) \
                     SELECT 'bench', 'preload', 'preloaded task ' || x, 'pending', '{created_by}', \
                     strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now') FROM c;"
                );
                let out = Command::new("sqlite3")
                    .arg(path)
                    .arg(&sql)
                    .stdin(Stdio::null())
                    .output()
                    .context("running sqlite3 (install it: apt-get install sqlite3)")?;
                if !out.status.success() {
                    bail!("sqlite3 failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
                }
                Ok(())
            }
        }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg {
            // Best effort: a leftover database only costs disk space.
            let _ = psql(admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
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

fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (is it installed?)")?;
    if !out.status.success() {
        bail!("psql failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
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
