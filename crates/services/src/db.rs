//! Connecting to SQLite or PostgreSQL, migrating, and running queries on either.
//!
//! Business logic is written once. [`Database::read`] and [`Database::write`] hand a body a
//! [`Conn`], a connection of either backend; inside it, [`db_run!`] — the one macro that
//! knows there are two backends — runs a diesel statement on whichever it is, compiling the
//! statement once per connection type (vaultwarden's `db_run!`; diesel's `MultiConnection`
//! has no async form yet). Only connecting and migrating differ per backend.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use diesel::{Connection, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::{ServiceError, ServiceResult};

/// A connection of either backend, lent to a body by [`Database::read`] or
/// [`Database::write`] (then inside the transaction).
pub(crate) enum Conn<'c> {
    Sqlite(&'c mut SqliteConn),
    Postgres(&'c mut AsyncPgConnection),
}

/// Runs `$body` with `$c` bound to the connection inside `$conn` (a `&mut Conn`), whichever
/// backend it is: the body is written once and compiled for both connection types. Its
/// diesel errors become [`ServiceError`]s.
macro_rules! db_run {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::Conn::Sqlite($c) => {
                let $c: &mut $crate::db::SqliteConn = $c;
                $body.map_err($crate::error::ServiceError::from)
            }
            $crate::db::Conn::Postgres($c) => {
                let $c: &mut diesel_async::AsyncPgConnection = $c;
                $body.map_err($crate::error::ServiceError::from)
            }
        }
    };
}

pub(crate) use db_run;

/// A body for [`Database::read`] and [`Database::write`]: an async closure on a [`Conn`]
/// whose future may move between threads (the bound diesel-async's transactions need,
/// spelled the way diesel-async spells it: an async closure's future has no name).
pub(crate) trait Work<'r, T>:
    AsyncFnOnce(&'r mut Conn<'r>) -> ServiceResult<T> + FnOnce(&'r mut Conn<'r>) -> <Self as Work<'r, T>>::Fut
{
    type Fut: Future<Output = ServiceResult<T>> + Send;
}

impl<'r, T, F, Fut> Work<'r, T> for F
where
    F: AsyncFnOnce(&'r mut Conn<'r>) -> ServiceResult<T> + FnOnce(&'r mut Conn<'r>) -> Fut,
    Fut: Future<Output = ServiceResult<T>> + Send,
{
    type Fut = Fut;
}

/// The longest one database call (a read, or a whole write transaction, once it has a
/// connection) may take. A connection that stops answering — a stalled network, a proxy
/// that accepts and never answers — fails its request with 503 instead of holding it (and a
/// pool slot) for ever; the connection is not reused. Longer than any healthy call,
/// including a SQLite write queued behind a burst.
pub const DB_CALL_DEADLINE: Duration = Duration::from_secs(15);

/// Runs `work` on `conn` within [`DB_CALL_DEADLINE`]; past it, the connection is marked
/// broken (the pool drops it) and the call fails as unavailable.
pub(crate) async fn within_deadline<C, T>(
    conn: &mut C,
    work: impl AsyncFnOnce(&mut C) -> ServiceResult<T>,
) -> ServiceResult<T>
where
    C: diesel_async::AsyncConnection,
{
    let outcome = tokio::time::timeout(DB_CALL_DEADLINE, work(conn)).await;
    match outcome {
        Ok(result) => result,
        Err(_) => {
            use diesel_async::TransactionManager;
            C::TransactionManager::transaction_manager_status_mut(conn).set_in_error();
            Err(ServiceError::Unavailable(
                format!("the database did not answer within {DB_CALL_DEADLINE:?}").into(),
            ))
        }
    }
}

/// An async SQLite connection: diesel's sync connection, run on the blocking pool.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// How long a write may queue for SQLite's single writer connection.
const SQLITE_WRITER_WAIT: Duration = Duration::from_secs(10);

/// The advisory lock key instances take while they migrate and bootstrap ("pulse" in ASCII).
const STARTUP_LOCK_KEY: i64 = 0x70_75_6c_73_65;

/// See [`Database::startup_lock`]; the lock is released when this is dropped (its
/// connection closes), or when the process dies.
pub struct StartupLock(#[allow(dead_code)] Option<AsyncPgConnection>);

impl std::fmt::Debug for StartupLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StartupLock").field(&self.0.is_some()).finish()
    }
}

/// Which database a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// Embedded, single instance.
    Sqlite,
    /// Shared, several instances.
    Postgres,
}

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// PostgreSQL connections, and SQLite reader connections (SQLite always has one writer).
    pub max_connections: u32,
    /// How long a call waits for a connection before it fails as unavailable.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self { max_connections: 8, acquire_timeout: Duration::from_secs(2) }
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is neither `sqlite://PATH` nor `postgres://…` (only its scheme is kept: the
    /// rest may hold a password).
    #[error("unsupported DATABASE_URL scheme {0:?}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The SQLite folder or lock file could not be created.
    #[error("cannot prepare the SQLite file {path}: {source}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process has the SQLite database open.
    #[error(
        "the SQLite database {0} is in use by another Pulse process; SQLite serves one instance \
         (use PostgreSQL to run several)"
    )]
    SqliteInUse(PathBuf),
    /// The server refused or could not be reached.
    #[error("cannot connect to the database: {0}")]
    Connection(#[from] diesel::ConnectionError),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),
}

/// A pool of connections to SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pub(crate) backend: Arc<Backend>,
}

pub(crate) enum Backend {
    Sqlite {
        /// SQLite allows one writer at a time: one connection, so writers queue here
        /// (asynchronously) instead of spinning on the file lock.
        writer: Pool<SqliteConn>,
        readers: Pool<SqliteConn>,
        path: PathBuf,
        /// Held open for the life of the process: its lock keeps a second server out.
        _lock: File,
    },
    Postgres {
        pool: Pool<AsyncPgConnection>,
        url: String,
    },
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("kind", &self.kind()).finish()
    }
}

impl Database {
    /// Opens `url` (`sqlite://PATH` or `postgres://…`). For SQLite the file and its folder
    /// are created if absent, and a lock keeps other processes out.
    pub async fn connect(url: &str, options: PoolOptions) -> Result<Self, ConnectError> {
        let backend = if let Some(path) = sqlite_path(url) {
            connect_sqlite(path, &options).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Recycling without a test query per checkout (a round trip on every request), but
            // never handing out a connection already known dead: after the server terminated
            // its backends or restarted, idle pooled connections are closed, and handing them
            // out made every request and stats recompute fail once per dead connection.
            let mut config = ManagerConfig::<AsyncPgConnection>::default();
            config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
                use diesel_async::pooled_connection::PoolableConnection;
                let broken = conn.is_broken();
                Box::pin(async move {
                    if broken { Err(diesel::result::Error::BrokenTransactionManager) } else { Ok(()) }
                })
            }));
            let pool = Pool::builder()
                .max_size(options.max_connections)
                .connection_timeout(options.acquire_timeout)
                .build(AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config))
                .await?;
            Backend::Postgres { pool, url: url.to_owned() }
        } else {
            let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
            return Err(ConnectError::UnsupportedUrl(scheme.chars().take(32).collect()));
        };
        Ok(Self { backend: Arc::new(backend) })
    }

    /// Which backend this is.
    pub fn kind(&self) -> DatabaseKind {
        match *self.backend {
            Backend::Sqlite { .. } => DatabaseKind::Sqlite,
            Backend::Postgres { .. } => DatabaseKind::Postgres,
        }
    }

    /// The PostgreSQL URL, for components that need a dedicated connection (LISTEN).
    pub fn postgres_url(&self) -> Option<&str> {
        match &*self.backend {
            Backend::Postgres { url, .. } => Some(url),
            Backend::Sqlite { .. } => None,
        }
    }

    /// Applies pending migrations (embedded from `migrations/<backend>`), off the runtime.
    pub async fn migrate(&self) -> Result<(), ConnectError> {
        let job = match &*self.backend {
            Backend::Sqlite { path, .. } => {
                let path = path.to_string_lossy().into_owned();
                tokio::task::spawn_blocking(move || -> Result<(), ConnectError> {
                    let mut conn = SqliteConnection::establish(&path)?;
                    run_migrations(&mut conn, SQLITE_MIGRATIONS)
                })
            }
            Backend::Postgres { url, .. } => {
                let url = url.clone();
                tokio::task::spawn_blocking(move || -> Result<(), ConnectError> {
                    let mut conn =
                        <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)?;
                    run_migrations(&mut conn, POSTGRES_MIGRATIONS)
                })
            }
        };
        job.await.map_err(|e| ConnectError::Migration(e.to_string()))?
    }

    /// Holds PostgreSQL's startup lock until the guard is dropped: instances started
    /// together on one database take turns to migrate and create the first admin, instead
    /// of racing (the loser used to exit). A no-op on SQLite, which one process owns.
    pub async fn startup_lock(&self) -> Result<StartupLock, ConnectError> {
        match &*self.backend {
            Backend::Sqlite { .. } => Ok(StartupLock(None)),
            Backend::Postgres { url, .. } => {
                let mut conn = AsyncPgConnection::establish(url).await?;
                conn.batch_execute(&format!("SELECT pg_advisory_lock({STARTUP_LOCK_KEY})")).await.map_err(
                    |e| ConnectError::Connection(diesel::ConnectionError::CouldntSetupConfiguration(e)),
                )?;
                Ok(StartupLock(Some(conn)))
            }
        }
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> ServiceResult<()> {
        self.read(async |conn| db_run!(conn, |c| c.batch_execute("SELECT 1").await)).await
    }

    /// Runs `work` on a pooled read connection, within [`DB_CALL_DEADLINE`].
    pub(crate) async fn read<T: Send>(&self, work: impl for<'r> Work<'r, T> + Send) -> ServiceResult<T> {
        match &*self.backend {
            Backend::Sqlite { readers, .. } => {
                let mut guard = readers.get().await?;
                within_deadline(&mut *guard, async |c| work(&mut Conn::Sqlite(c)).await).await
            }
            Backend::Postgres { pool, .. } => {
                let mut guard = pool.get().await?;
                within_deadline(&mut *guard, async |c| work(&mut Conn::Postgres(c)).await).await
            }
        }
    }

    /// Runs `work` in a write transaction (`BEGIN IMMEDIATE` on SQLite's one writer), within
    /// [`DB_CALL_DEADLINE`]. An `Err` from `work` rolls back.
    pub(crate) async fn write<T: Send>(&self, work: impl for<'r> Work<'r, T> + Send) -> ServiceResult<T> {
        match &*self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut guard = writer.get().await?;
                within_deadline(&mut *guard, async |c| {
                    c.immediate_transaction(async |tx| work(&mut Conn::Sqlite(tx)).await).await
                })
                .await
            }
            Backend::Postgres { pool, .. } => {
                let mut guard = pool.get().await?;
                within_deadline(&mut *guard, async |c| {
                    c.transaction(async |tx| work(&mut Conn::Postgres(tx)).await).await
                })
                .await
            }
        }
    }
}

fn run_migrations<C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<(), ConnectError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    conn.run_pending_migrations(migrations).map(|_| ()).map_err(|e| ConnectError::Migration(e.to_string()))
}

/// `sqlite://data/pulse.db`, `sqlite:///abs/pulse.db` or `sqlite:data/pulse.db` → the path.
fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
}

async fn connect_sqlite(path: &str, options: &PoolOptions) -> Result<Backend, ConnectError> {
    let path = PathBuf::from(path);
    let io = |source| ConnectError::Io { path: path.clone(), source };
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(io)?;
    }
    let lock = lock_sqlite(&path)?;
    let url = path.to_string_lossy().into_owned();
    // The one writer is a queue, not a scarce resource that may be down: waiting in it is
    // normal under a burst, so it may wait longer than a reader before giving up with 503.
    let writer = Pool::builder()
        .max_size(1)
        .connection_timeout(options.acquire_timeout.max(SQLITE_WRITER_WAIT))
        .build(sqlite_manager(&url))
        .await?;
    let readers = Pool::builder()
        .max_size(options.max_connections.max(1))
        .connection_timeout(options.acquire_timeout)
        .build(sqlite_manager(&url))
        .await?;
    Ok(Backend::Sqlite { writer, readers, path, _lock: lock })
}

/// An exclusive lock on `PATH.lock`, released by the OS when the process ends (even by
/// `kill -9`), so a stale lock never blocks a restart.
fn lock_sqlite(path: &Path) -> Result<File, ConnectError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| ConnectError::Io { path: lock_path.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ConnectError::SqliteInUse(path.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(ConnectError::Io { path: lock_path, source }),
    }
}

fn sqlite_manager(url: &str) -> AsyncDieselConnectionManager<SqliteConn> {
    let mut config = ManagerConfig::<SqliteConn>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        Box::pin(async move {
            let mut conn = SqliteConn::establish(&url).await?;
            // WAL: readers never block the writer. synchronous=NORMAL: a commit is in the WAL
            // before it returns, so it survives the process dying (kill -9), without an fsync
            // per commit (4 ms each here: 250 writes/s at most); the last commits may be lost
            // on power loss — PostgreSQL is the database for that (docs/performance.md).
            // busy_timeout: wait for a lock instead of failing at once.
            conn.batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
            )
            .await
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    AsyncDieselConnectionManager::new_with_config(url, config)
}

impl From<diesel_async::pooled_connection::PoolError> for ConnectError {
    fn from(error: diesel_async::pooled_connection::PoolError) -> Self {
        match error {
            diesel_async::pooled_connection::PoolError::ConnectionError(e) => ConnectError::Connection(e),
            diesel_async::pooled_connection::PoolError::QueryError(e) => {
                ConnectError::Connection(diesel::ConnectionError::CouldntSetupConfiguration(e))
            }
        }
    }
}
