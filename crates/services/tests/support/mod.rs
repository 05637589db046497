//! A fresh database per test: a temporary SQLite file, or a PostgreSQL database cloned
//! from a migrated template (created once per migration set, under an advisory lock).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};

use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain_events::model::{Actor, Role};
use domain_events::{EventEnvelope, EventPublisher};
use services::{Database, PoolOptions, Services};

/// The admin database of the test server.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test and is removed after it.
pub struct TestDb {
    pub db: Database,
    _guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { name: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Postgres { name } = self {
            let name = name.clone();
            // Drop runs outside async context: a short-lived runtime on its own thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async {
                    if let Ok(mut conn) = AsyncPgConnection::establish(&postgres_admin_url()).await {
                        let _ = conn
                            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("nested/folder/pulse.db").display());
        let db = Database::connect(&url, PoolOptions::default()).await.expect("open sqlite");
        db.migrate().await.expect("migrate sqlite");
        Self { db, _guard: Guard::Sqlite(dir) }
    }

    pub async fn postgres() -> Self {
        let admin_url = postgres_admin_url();
        let mut admin = AsyncPgConnection::establish(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is required for these tests and is not reachable at {admin_url}: {e}")
        });
        let template = ensure_template(&mut admin, &admin_url).await;
        let name = format!("pulse_test_{}", rand::random::<u64>());
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""))
            .await
            .expect("clone template");
        let url = with_database(&admin_url, &name);
        let db = Database::connect(&url, PoolOptions::default()).await.expect("open postgres");
        Self { db, _guard: Guard::Postgres { name } }
    }
}

/// `postgres://…/old` → `postgres://…/name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn ensure_template(admin: &mut AsyncPgConnection, admin_url: &str) -> String {
    let template = format!("pulse_tpl_{:016x}", migrations_hash());
    admin.batch_execute("SELECT pg_advisory_lock(4242001)").await.expect("lock");
    let found: Exists = diesel::sql_query(format!(
        "SELECT count(*)::bigint AS n FROM pg_database WHERE datname = '{template}'"
    ))
    .get_result(admin)
    .await
    .expect("look up template");
    if found.n == 0 {
        admin.batch_execute(&format!("CREATE DATABASE \"{template}\"")).await.expect("create template");
        let db = Database::connect(&with_database(admin_url, &template), PoolOptions::default())
            .await
            .expect("open template");
        db.migrate().await.expect("migrate template");
        drop(db);
        // Pool connections close asynchronously; a template must have no sessions to be cloned.
        admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{template}'"
            ))
            .await
            .expect("close template sessions");
    }
    admin.batch_execute("SELECT pg_advisory_unlock(4242001)").await.expect("unlock");
    template
}

fn migrations_hash() -> u64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/postgres");
    let mut files = Vec::new();
    for entry in walk(&dir) {
        files.push((entry.clone(), std::fs::read(&entry).expect("read migration")));
    }
    files.sort();
    let mut hasher = DefaultHasher::new();
    files.hash(&mut hasher);
    hasher.finish()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("migrations dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A publisher that remembers what it was given.
#[derive(Default, Clone)]
pub struct Recorder(Arc<Mutex<Vec<EventEnvelope>>>);

impl EventPublisher for Recorder {
    fn publish(&self, events: Vec<EventEnvelope>) {
        self.0.lock().expect("recorder lock").extend(events);
    }
}

impl Recorder {
    /// Names of the events published since the last call.
    pub fn take_names(&self) -> Vec<&'static str> {
        self.take().iter().map(|e| e.event.name()).collect()
    }

    pub fn take(&self) -> Vec<EventEnvelope> {
        std::mem::take(&mut *self.0.lock().expect("recorder lock"))
    }
}

/// Services on a fresh database, with an admin, a manager and a staff member.
pub struct World {
    pub services: Services,
    pub events: Recorder,
    pub admin: Actor,
    pub manager: Actor,
    pub staff: Actor,
    pub _db: TestDb,
}

impl World {
    pub async fn new(db: TestDb) -> Self {
        let events = Recorder::default();
        let services = Services::new(db.db.clone(), Arc::new(events.clone()));
        let admin_user = services
            .users
            .bootstrap_admin("admin", "admin-password")
            .await
            .expect("bootstrap")
            .expect("created");
        let admin = actor(admin_user.id, "admin", Role::Admin);
        let make = async |name: &str, role: &str| {
            let user = services
                .users
                .create(
                    &admin,
                    services::NewUser {
                        username: name.into(),
                        password: format!("{name}-password"),
                        role: role.into(),
                    },
                )
                .await
                .expect("create user");
            actor(user.id, name, user.role)
        };
        let manager = make("maria", "manager").await;
        let staff = make("sam", "staff").await;
        events.take();
        Self { services, events, admin, manager, staff, _db: db }
    }
}

pub fn actor(user_id: i64, username: &str, role: Role) -> Actor {
    Actor { user_id, username: username.into(), role }
}

/// Generates one test per backend from `async fn $name(world: World)`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::support::World::new(super::support::TestDb::sqlite().await).await).await; })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::support::World::new(super::support::TestDb::postgres().await).await).await; })+
        }
    };
}
