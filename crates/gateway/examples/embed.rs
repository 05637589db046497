//! Pulse mounted inside another actix-web application.
//!
//! ```text
//! cargo run -p gateway --example embed
//! curl localhost:8080/hello                       # the host application's own route
//! curl -XPOST localhost:8080/api/v1/auth/login -H 'content-type: application/json' \
//!      -d '{"username":"admin","password":"embedded-admin-pw"}'
//! ```
//!
//! `BIND_ADDR` and `DATABASE_URL` may be set; the defaults are 127.0.0.1:8080 and a SQLite
//! file under `target/embed-example/`.

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use gateway::{JwtKeys, Pulse, PulseOptions};
use services::{Database, PoolOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://target/embed-example/pulse.db".into());

    // The host owns its database connection and secrets; Pulse gets them.
    let db = Database::connect(&url, PoolOptions::default()).await?;
    db.migrate().await?;
    let jwt = JwtKeys::new(b"an example secret that is 32+ bytes long", Duration::from_secs(3600))?;
    let pulse = Pulse::start(db, PulseOptions::new(jwt)).await?;
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
