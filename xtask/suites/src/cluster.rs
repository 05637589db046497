//! Several server processes on one PostgreSQL database: the setup of the multi-instance suites
//! (`multi_instance`, and the `cluster` cases of `topics`), kept here so that every suite
//! starts and reaches its instances the same way. The fault suite (`cluster_faults`) starts
//! them on a database of its choice, through a [`PgProxy`] each, or all at once.

use anyhow::{Context, Result, bail};
use futures_util::future::try_join_all;
use serde_json::Value;

use crate::{
    ADMIN_USERNAME, Api, PgProxy, ServerOptions, ServerProcess, TestDatabase, Watcher, psql, random_string,
};

/// How [`Cluster::start_with`] starts the instances.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Each instance reaches PostgreSQL through a [`PgProxy`] of its own
    /// ([`Cluster::proxies`]).
    pub proxied: bool,
    /// Start every instance at the same moment on the (empty) database, instead of the first
    /// alone (it migrates and creates the admin) and then the others.
    pub together: bool,
    /// Extra settings for every instance (applied after the cluster's).
    pub server: ServerOptions,
}

/// What every instance logs once its link to the other instances (its LISTEN connection) is up.
const LISTENING: &str = "listening for other instances' events";

/// Several server processes on one fresh PostgreSQL database, with the same `JWT_SECRET` and
/// admin password, so that one token works on every instance.
#[derive(Debug)]
pub struct Cluster {
    /// The instances. Declared first: dropped (so killed) before the database.
    pub servers: Vec<ServerProcess>,
    /// The admin's client for each instance (one token, valid everywhere).
    pub admins: Vec<Api>,
    /// With [`ClusterOptions::proxied`], instance `i`'s proxy to PostgreSQL (dropped after the
    /// instances).
    pub proxies: Vec<PgProxy>,
    /// The shared database.
    pub db: TestDatabase,
}

impl Cluster {
    /// Starts `n` (at least 1) instances: the first alone (it migrates and creates the admin),
    /// then the others together, each waited for until healthy; logs in as the admin through
    /// instance 0. Fails unless every instance logged that it listens for the other instances'
    /// events: without that line, its health check may have reached another process that took
    /// its port.
    pub async fn start(n: usize) -> Result<Self> {
        let db = TestDatabase::postgres().context("creating a PostgreSQL database")?;
        Self::start_with(n, db, ClusterOptions::default()).await
    }

    /// Starts `n` (at least 1) instances on `db` as `options` say, then as [`Cluster::start`].
    pub async fn start_with(n: usize, db: TestDatabase, options: ClusterOptions) -> Result<Self> {
        if n == 0 {
            bail!("a cluster needs at least one instance");
        }
        let mut opts = ServerOptions::default()
            .env("JWT_SECRET", random_string(48))
            .env("ADMIN_PASSWORD", random_string(20));
        opts.env.extend(options.server.env.iter().cloned());
        opts.unset.extend(options.server.unset.iter().cloned());
        let mut proxies = Vec::new();
        let mut instance_opts = Vec::new();
        for _ in 0..n {
            if options.proxied {
                let proxy = PgProxy::for_url(db.url()).await.context("starting a proxy")?;
                instance_opts.push(opts.clone().env("DATABASE_URL", proxy.url_via(db.url())?));
                proxies.push(proxy);
            } else {
                instance_opts.push(opts.clone());
            }
        }
        let start = |i: usize| {
            let (db, opts) = (&db, instance_opts[i].clone());
            async move { ServerProcess::start(db, opts).await.with_context(|| format!("starting instance {i}")) }
        };
        let servers = if options.together {
            try_join_all((0..n).map(start)).await?
        } else {
            let first = start(0).await?;
            let rest = try_join_all((1..n).map(start)).await?;
            std::iter::once(first).chain(rest).collect()
        };
        let token = servers[0]
            .api()
            .login(ADMIN_USERNAME, servers[0].admin_password())
            .await
            .context("admin login on instance 0")?;
        for (i, server) in servers.iter().enumerate() {
            let log = server.logs();
            if !log.contains(LISTENING) {
                bail!(
                    "instance {i} (pid {}, {}) did not log that it listens for other instances \
                     (did another process take its port?); log:\n{log}",
                    server.pid(),
                    server.base_url()
                );
            }
        }
        let admins = servers.iter().map(|s| s.api().with_token(token.clone())).collect();
        Ok(Self { servers, admins, proxies, db })
    }

    /// Instance `i`'s name (`pulse-<8 hex>`), from its startup log line
    /// `listening for other instances' events instance=pulse-…`. Panics when the line is
    /// missing or the name is not of that form.
    pub fn instance_name(&self, i: usize) -> String {
        let log = self.servers[i].logs();
        let line = log
            .lines()
            .find(|l| l.contains(LISTENING))
            .unwrap_or_else(|| panic!("instance {i} did not log that it listens; log:\n{log}"));
        let name = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("instance="))
            .map(|w| w.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("no instance= in {line:?}"));
        let hex = name.strip_prefix("pulse-").unwrap_or("");
        assert!(
            hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "instance name {name:?} is not pulse-<8 hex> (line {line:?})"
        );
        name
    }

    /// The admin's token (valid on every instance).
    pub fn admin_token(&self) -> &str {
        self.admins[0].token().unwrap_or_default()
    }

    /// A client of instance `i` with `token`.
    pub fn api(&self, i: usize, token: &str) -> Api {
        self.servers[i].api().with_token(token)
    }

    /// Creates a user with `role` through instance 0, logs in as it and returns its client on
    /// instance `i` and its JSON.
    pub async fn user(&self, username: &str, role: &str, i: usize) -> Result<(Api, Value)> {
        let password = format!("pw-{}", random_string(16));
        let user = self.admins[0].create_user(username, &password, role).await.context("creating a user")?;
        let token = self.admins[0].login(username, &password).await.context("user login")?;
        Ok((self.api(i, &token), user))
    }

    /// A checked WebSocket client of instance `i` (see [`Watcher::connect`]).
    pub async fn watcher(&self, i: usize, token: &str, name: &str) -> Watcher {
        Watcher::connect(&self.servers[i], token, name).await
    }

    /// Runs `sql` on the shared database with [`psql`] and returns its output.
    pub async fn psql(&self, sql: &str) -> String {
        psql(self.db.url(), &[sql]).await
    }
}
