//! The Pulse server: reads its configuration, opens and migrates the database, wires the
//! libraries, serves HTTP and WebSocket, and shuts down gracefully on SIGINT or SIGTERM.

mod assets;
mod config;
mod instances;
mod secrets;
mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, middleware};
use anyhow::Context;
use clap::Parser;
use domain_events::InProcessBus;
use gateway::limits::Limits;
use gateway::{JwtKeys, Pulse, PulseOptions};
use services::{Database, PoolOptions};
use ws_bridge::ConnectionConfig;

use crate::config::Config;
use crate::instances::Instance;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.log_format);

    let instance = Instance::new(&config.database_url);
    let db = open_database(&config, &instance).await?;
    // Instances started together take turns: one migrates and creates the first admin, the
    // others find it done.
    let startup = db.startup_lock().await.context("taking the startup lock")?;
    db.migrate().await?;
    tracing::info!(kind = ?db.kind(), "database ready");
    let task_sla = services::TaskSla::from_secs(config.task_sla_seconds)?;
    let history = match config.history_bucket_seconds {
        0 => None,
        seconds => Some(services::insight::HistoryBucket::from_secs(seconds)?),
    };
    // A cluster uses one SLA: the first instance stores it, one configured otherwise stops here.
    services::InsightService::new(db.clone(), task_sla).agree_on_task_sla().await?;
    let jwt = JwtKeys::new(
        &secrets::jwt_secret(config.jwt_secret.as_deref(), &config.data_dir())?,
        Duration::from_secs(config.token_ttl_minutes * 60),
    )?;
    let bus = InProcessBus::default();
    let mut fanout = instances::start_fanout(&db, &instance, &bus).await?;
    instances::spawn_outbox_pruning(db.clone(), Duration::from_secs(config.event_retention_minutes * 60));
    let pulse = Pulse::start(
        db,
        PulseOptions {
            jwt,
            ws: ConnectionConfig {
                heartbeat_interval: Duration::from_secs(config.ws_heartbeat_secs.max(1)),
                messages_per_second: config.ws_messages_per_second,
                message_burst: config.ws_messages_per_second.saturating_mul(2),
                ..ConnectionConfig::default()
            },
            assets: Some(match &config.dashboard_dir {
                Some(dir) => Arc::new(assets::DashboardDir(dir.clone())),
                None => Arc::new(assets::EmbeddedDashboard),
            }),
            bus: Some(bus),
            publisher: fanout.as_ref().map(|f| f.publisher.clone()),
            readiness: fanout.iter().map(|f| f.readiness.clone()).collect(),
            cluster: fanout.as_ref().map(|f| f.cluster.clone()),
            topics: Vec::new(),
            metrics_collectors: fanout.iter_mut().filter_map(|f| f.metrics.take()).collect(),
            metrics_public: config.metrics_public,
            limits: Limits {
                max_connections: config.ws_max_connections,
                max_connections_per_user: config.ws_max_connections_per_user,
                allowed_origins: config.allowed_origins.clone(),
                trusted_proxies: config.trusted_proxies.clone(),
                ..Limits::default()
            },
            password_checks: None,
            task_sla,
            history,
        },
    )
    .await?;
    secrets::bootstrap_admin(
        &pulse.services().users,
        &config.admin_username,
        config.admin_password.as_deref(),
    )
    .await?;
    drop(startup);

    let server = serve_http(&config, &pulse)?;
    if !config.trusted_proxies.is_empty() {
        tracing::info!(trusted_proxies = %config.trusted_proxies, "believing X-Forwarded-For from these proxies");
    }
    tracing::info!(addr = %config.bind_addr, "Pulse is listening on http://{}", config.bind_addr);
    let handle = server.handle();
    let running = tokio::spawn(server);

    shutdown_signal().await;
    tracing::info!("shutting down: closing WebSockets with 1001");
    pulse.shutdown();
    wait_for_connections_to_close(&pulse, Duration::from_secs(3)).await;
    handle.stop(true).await;
    running.await.context("HTTP server task")??;
    if let Some(fanout) = &fanout {
        fanout.link.leave().await;
        fanout.link.stop();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Connects (creating the SQLite file and folder if needed).
async fn open_database(config: &Config, instance: &Instance) -> anyhow::Result<Database> {
    let options = PoolOptions { max_connections: config.db_max_connections, ..PoolOptions::default() };
    Ok(Database::connect(&instance.database_url, options).await?)
}

fn serve_http(config: &Config, pulse: &Pulse) -> anyhow::Result<actix_web::dev::Server> {
    let state = pulse.state();
    let app = move || {
        let state = state.clone();
        App::new()
            .wrap(middleware::Compress::default())
            .wrap(middleware::from_fn(gateway::access_log))
            .configure(|cfg| gateway::configure(cfg, state))
    };
    let options = gateway::ServerOptions {
        bind: config.bind_addr,
        workers: config.workers,
        ..gateway::ServerOptions::default()
    };
    let (server, _) =
        gateway::http_server(app, &options).with_context(|| format!("binding {}", config.bind_addr))?;
    Ok(server)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Gives clients a moment to receive their close frames before the listener stops.
async fn wait_for_connections_to_close(pulse: &Pulse, limit: Duration) {
    let started = tokio::time::Instant::now();
    let connections = || pulse.state().hub.metrics().connections.load(std::sync::atomic::Ordering::Relaxed);
    while connections() > 0 && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
