//! Pulse's HTTP and WebSocket edge, on actix-web: the REST API, JWT auth, `/ws` and `/sse`,
//! health checks and the dashboard's files.
//!
//! Errors become HTTP here and only here ([`error`]). [`Pulse::start`] wires the
//! libraries (bus, services, bridge, hub) on a database; [`configure`] mounts the routes
//! on any actix app, so Pulse can live inside another application
//! (`cargo run -p gateway --example embed`).
//!
//! Architecture invariant: the gateway translates; it holds no business rules (services
//! do) and no fan-out logic (ws-bridge does). Nothing below it depends on it.

pub mod access_log;
pub mod accounts;
pub mod auth;
pub mod client_ip;
pub mod dashboard;
pub mod error;
pub mod history;
mod http_server;
pub mod limits;
pub mod metrics;
mod openapi;
pub mod realtime;
mod routes;
mod socket;
mod sse;
pub mod topics;
mod ws;

use std::sync::Arc;

use actix_web::web::{self, ServiceConfig};
use domain_events::{Cluster, EventPublisher, EventSubscriber, InProcessBus};
use services::{Database, Services};
use ws_bridge::{BridgeHandle, ConnectionConfig, Hub, Topics};

pub use access_log::{access_log, redact_query};
pub use auth::{AuthUser, Claims, JwtKeys};
pub use dashboard::{Asset, DashboardAssets};
pub use error::ApiError;
pub use http_server::{ServerOptions, http_server};
pub use openapi::document as openapi_document;
pub use routes::{Endpoint, endpoints};
pub use ws::MAX_FRAME_BYTES;

/// Largest accepted request body (contract: 64 KiB, else 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
pub struct AppState {
    /// The domain services.
    pub services: Services,
    /// The WebSocket fan-out.
    pub hub: Hub,
    /// Token signing and checking.
    pub jwt: JwtKeys,
    /// WebSocket session timings.
    pub ws: ConnectionConfig,
    /// The dashboard's files, when served.
    pub assets: Option<Arc<dyn DashboardAssets>>,
    /// What `/readyz` checks besides the database.
    pub readiness: Vec<Arc<dyn ReadinessCheck>>,
    /// The bridge's counters, for `/metrics`.
    pub bridge: Option<Arc<ws_bridge::BridgeMetrics>>,
    /// HTTP counters, for `/metrics`.
    pub http: metrics::HttpMetrics,
    /// How many refused requests get a log line.
    pub refusal_log: access_log::RefusalLog,
    /// What `/metrics` serves.
    pub metrics: metrics::Metrics,
    /// Serve `/metrics` to any address, not only loopback.
    pub metrics_public: bool,
    /// Edge limits.
    pub limits: limits::Limits,
    /// Realtime connections (every transport) per user on this process.
    pub connections: Arc<limits::ConnectionCounter>,
    /// This process's SSE connections, reachable from any instance by their id.
    pub inboxes: Arc<realtime::Inboxes>,
    /// Password attempts (logins, password changes, users created with a password).
    pub logins: Arc<limits::LoginThrottle>,
    /// Each user's current role, activity and credential cut-off, for every authentication.
    pub accounts: Arc<accounts::AccountCache>,
    /// The multi-thread runtime database work runs on (see [`AppState::db`]).
    pub runtime: tokio::runtime::Handle,
}

impl AppState {
    /// Runs database work to completion on the multi-thread runtime [`Pulse::start`] ran on,
    /// not on the actix worker serving the request. Every handler (and `/ws`'s ticket
    /// redemption) reaches the services only through here. That worker also drives thousands
    /// of WebSocket sessions: a transaction resuming on it after every query waited behind a
    /// whole broadcast each time, so under fan-out a 1 ms SQLite write held the single writer
    /// for ~50 ms (`docs/performance.md`). The work runs to completion even if the client
    /// goes away, like any other request.
    pub async fn db<T, Fut>(&self, work: impl FnOnce(Services) -> Fut) -> Result<T, ApiError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, services::ServiceError>> + Send + 'static,
    {
        match self.runtime.spawn(work(self.services.clone())).await {
            Ok(result) => Ok(result?),
            Err(join) => {
                tracing::error!(error = %join, "database task failed");
                Err(ApiError::new(
                    actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "something went wrong on our side",
                ))
            }
        }
    }
}

/// A dependency that `/readyz` reports on besides the database (e.g. the cross-instance
/// listener).
pub trait ReadinessCheck: Send + Sync + 'static {
    /// A short name for the `/readyz` body.
    fn name(&self) -> &'static str;
    /// Whether it works right now.
    fn is_ready(&self) -> bool;
}

/// How to run Pulse's edge.
pub struct PulseOptions {
    /// Token keys.
    pub jwt: JwtKeys,
    /// WebSocket timings.
    pub ws: ConnectionConfig,
    /// Dashboard files to serve at `/`, if any.
    pub assets: Option<Arc<dyn DashboardAssets>>,
    /// The bus the bridge listens to; pass one to feed it from elsewhere too (another
    /// instance's events), `None` for a new one.
    pub bus: Option<InProcessBus>,
    /// What services publish committed events on; `None` for the bus itself.
    pub publisher: Option<Arc<dyn EventPublisher>>,
    /// What `/readyz` checks besides the database.
    pub readiness: Vec<Arc<dyn ReadinessCheck>>,
    /// How presence and typing reach other instances; `None` for a single instance.
    pub cluster: Option<Arc<dyn Cluster>>,
    /// Whole-value topics of the embedding application, served after Pulse's own
    /// ([`topics::pulse_topics`]): clients subscribe to them by name like any other.
    pub topics: Vec<ws_bridge::TopicSpec>,
    /// More `/metrics` families (e.g. the cross-instance link's), registered under the
    /// `pulse_` prefix.
    pub metrics_collectors: Vec<Box<dyn metrics::prometheus_client::collector::Collector>>,
    /// Serve `/metrics` to any address, not only loopback.
    pub metrics_public: bool,
    /// Edge limits (origins, connections, logins).
    pub limits: limits::Limits,
    /// Password checks and hashes run at once; more are refused with 429 (`None`: the
    /// services' default, see [`services::PasswordGate::default_concurrency`]).
    pub password_checks: Option<usize>,
    /// When an open task becomes overdue (`TASK_SLA_SECONDS`).
    pub task_sla: services::TaskSla,
    /// How long a history "minute" lasts (60 s; shorter in tests); `None` records no
    /// history.
    pub history: Option<services::insight::HistoryBucket>,
}

impl PulseOptions {
    /// Options with the given keys and defaults for everything else.
    pub fn new(jwt: JwtKeys) -> Self {
        Self {
            jwt,
            ws: ConnectionConfig::default(),
            assets: None,
            bus: None,
            publisher: None,
            readiness: Vec::new(),
            cluster: None,
            topics: Vec::new(),
            metrics_collectors: Vec::new(),
            metrics_public: false,
            limits: limits::Limits::default(),
            password_checks: None,
            task_sla: services::TaskSla::default(),
            history: Some(services::insight::HistoryBucket::default()),
        }
    }
}

/// A wiring failure at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The first stats could not be read.
    #[error("cannot read the initial stats: {0}")]
    Stats(#[from] ws_bridge::StatsError),
    /// The topics cannot be served together (a name used twice, or not allowed).
    #[error(transparent)]
    Topics(#[from] ws_bridge::topic::TopicError),
}

/// Pulse's libraries wired on one database: bus, services, bridge and hub.
pub struct Pulse {
    state: web::Data<AppState>,
    bridge: BridgeHandle,
    bus: InProcessBus,
    history: Option<tokio::task::JoinHandle<()>>,
}

impl Pulse {
    /// Wires everything on `db` (already migrated) and computes the first stats, so the
    /// first client gets a snapshot.
    pub async fn start(db: Database, options: PulseOptions) -> Result<Self, StartError> {
        let bus = options.bus.unwrap_or_default();
        let insight = services::InsightService::new(db.clone(), options.task_sla);
        let topics =
            Arc::new(Topics::new(topics::pulse_topics(&db, &insight).into_iter().chain(options.topics))?);
        let inboxes = Arc::new(realtime::Inboxes::new(options.cluster.is_some()));
        let hub = match options.cluster {
            Some(cluster) => {
                realtime::spawn_relay(inboxes.clone(), cluster.clone());
                Hub::with_cluster(topics, cluster)
            }
            None => Hub::new(topics),
        };
        hub.spawn_worker();
        // A change's topics are marked stale before its request is answered, so a socket
        // opened after the answer waits for a value that includes it (read your writes).
        let publisher = options.publisher.unwrap_or_else(|| Arc::new(bus.clone()));
        let publisher: Arc<dyn EventPublisher> = Arc::new(ws_bridge::MarkStale::new(publisher, hub.clone()));
        let gate =
            options.password_checks.map_or_else(services::PasswordGate::default, services::PasswordGate::new);
        let services = Services {
            insight: insight.clone(),
            ..Services::with_password_gate(db, publisher, gate.clone())
        };
        let accounts = Arc::new(accounts::AccountCache::default());
        spawn_account_invalidation(bus.subscribe(), accounts.clone());
        // Subscribe before the first read, so a change committed in between is not missed.
        let bridge = ws_bridge::start_bridge(bus.subscribe(), hub.clone()).await?;
        let http = metrics::HttpMetrics::default();
        let connections = Arc::new(limits::ConnectionCounter::default());
        let logins = Arc::new(limits::LoginThrottle::default());
        let sources = metrics::Sources {
            hub: hub.clone(),
            bridge: bridge.metrics(),
            passwords: gate,
            logins: logins.clone(),
            connections: connections.clone(),
        };
        let metrics = metrics::Metrics::new(sources, &http, options.metrics_collectors);
        let history =
            options.history.map(|bucket| history::spawn_recorder(hub.topics().clone(), insight, bucket));
        let state = web::Data::new(AppState {
            services,
            hub,
            jwt: options.jwt,
            ws: options.ws,
            assets: options.assets,
            readiness: options.readiness,
            bridge: Some(bridge.metrics()),
            http,
            refusal_log: access_log::RefusalLog::default(),
            metrics,
            metrics_public: options.metrics_public,
            limits: options.limits,
            connections,
            inboxes,
            logins,
            accounts,
            runtime: tokio::runtime::Handle::current(),
        });
        Ok(Self { state, bridge, bus, history })
    }

    /// The shared state, for [`configure`].
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// The services, for bootstrapping (e.g. the first admin).
    pub fn services(&self) -> &Services {
        &self.state.services
    }

    /// The in-process bus every committed change is published on.
    pub fn bus(&self) -> &InProcessBus {
        &self.bus
    }

    /// The bridge (recompute counters, resync).
    pub fn bridge(&self) -> &BridgeHandle {
        &self.bridge
    }

    /// Closes every WebSocket with 1001 and refuses new ones; stops recording history.
    pub fn shutdown(&self) {
        self.state.hub.shutdown();
        if let Some(history) = &self.history {
            history.abort();
        }
    }
}

/// Drops a user's cached account state as soon as a `user.updated` event for them arrives
/// (committed here, or delivered from another instance); everyone's when events may have
/// been missed.
fn spawn_account_invalidation(mut events: domain_events::EventStream, accounts: Arc<accounts::AccountCache>) {
    tokio::spawn(async move {
        while let Some(message) = events.recv().await {
            match message {
                domain_events::BusMessage::Event(envelope) => {
                    if let domain_events::DomainEvent::UserUpdated(update) = &envelope.event {
                        accounts.invalidate(update.user.id);
                    }
                }
                domain_events::BusMessage::Lagged { .. } => accounts.clear(),
            }
        }
    });
}

/// Mounts Pulse's routes on an actix app: `/api/v1/*`, `/ws`, `/healthz`, `/readyz`, and
/// the dashboard (or a JSON 404) for everything else.
///
/// ```no_run
/// # async fn demo(pulse: gateway::Pulse) -> std::io::Result<()> {
/// let state = pulse.state();
/// actix_web::HttpServer::new(move || {
///     actix_web::App::new().configure(|cfg| gateway::configure(cfg, state.clone()))
/// })
/// .bind("127.0.0.1:3000")?
/// .run()
/// .await
/// # }
/// ```
pub fn configure(cfg: &mut ServiceConfig, state: web::Data<AppState>) {
    cfg.app_data(state)
        .app_data(web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(error::json_error))
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .configure(routes::mount)
        // After the table: any other `/api/v1/…` is a JSON 404, not the dashboard.
        .service(web::scope("/api/v1").default_service(web::to(api_not_found)))
        .default_service(web::to(fallback));
}

async fn api_not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(format!("no route for {} {}", req.method(), req.path())))
}

async fn fallback(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<actix_web::HttpResponse, ApiError> {
    dashboard::serve(state.assets.as_deref(), &req)
}
