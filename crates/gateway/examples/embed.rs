//! Pulse mounted inside another actix-web application.
//!
//! ```text
//! cargo run -p gateway --example embed
//! curl localhost:8080/hello                       # the host application's own route
//! curl -XPOST localhost:8080/api/v1/auth/login -H 'content-type: application/json' \
//!      -d '{"username":"admin","password":"embedded-admin-pw"}'
//! wscat -c "ws://localhost:8080/ws?token=$TOKEN&topics=stats:tasks,host:uptime"
//! ```
//!
//! The host also adds a topic of its own, `host:uptime`, served to every dashboard exactly
//! like Pulse's stats (numbered, serialized once, conflated) without touching ws-bridge: a
//! [`TopicSpec`] with a [`TopicSource`] that says which events make it stale (none), how to
//! compute it, and when it next changes by itself (every 10 s).
//!
//! `BIND_ADDR` and `DATABASE_URL` may be set; the defaults are 127.0.0.1:8080 and a SQLite
//! file under `target/embed-example/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use domain_events::DomainEvent;
use futures_util::future::BoxFuture;
use gateway::{JwtKeys, Pulse, PulseOptions};
use services::{Database, PoolOptions};
use ws_bridge::{StatsError, TopicSource, TopicSpec, TopicValue};

/// The host application's own topic: how long it has been up, in whole 10-second steps.
struct Uptime(Instant);

impl TopicSource for Uptime {
    fn dirtied_by(&self, _: &DomainEvent) -> bool {
        false // no domain event changes it; time does
    }

    fn compute(&self) -> BoxFuture<'_, Result<TopicValue, StatsError>> {
        Box::pin(async move {
            let up = self.0.elapsed();
            let step = Duration::from_secs(10);
            let seconds = up.as_secs() / 10 * 10;
            let next = step - Duration::from_nanos((up.as_nanos() % step.as_nanos()) as u64);
            Ok(TopicValue::json(&serde_json::json!({ "seconds": seconds })).changing_in(Some(next)))
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://target/embed-example/pulse.db".into());

    // The host owns its database connection and secrets; Pulse gets them.
    let db = Database::connect(&url, PoolOptions::default()).await?;
    db.migrate().await?;
    let jwt = JwtKeys::new(b"an example secret that is 32+ bytes long", Duration::from_secs(3600))?;
    let mut options = PulseOptions::new(jwt);
    options.topics.push(TopicSpec::new("host:uptime", Arc::new(Uptime(Instant::now()))));
    let pulse = Pulse::start(db, options).await?;
    pulse.services().users.bootstrap_admin("admin", "embedded-admin-pw").await?;

    let state = pulse.state();
    let server = HttpServer::new(move || {
        let state = state.clone();
        App::new()
            // The host's own routes come first …
            .route("/hello", web::get().to(|| async { HttpResponse::Ok().body("hello from the host app\n") }))
            // … then Pulse: /api/v1/*, /ws, /healthz, /readyz.
            .configure(|cfg| gateway::configure(cfg, state))
    })
    .bind(&bind)?
    .run();
    tracing_free_log(&format!("embedded Pulse listening on http://{bind} (admin / embedded-admin-pw)"));
    server.await?;
    Ok(())
}

/// The example keeps its output to one line on stderr.
fn tracing_free_log(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
