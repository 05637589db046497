//! What the NOTIFY doorbell costs committing writers: 8 concurrent writers create tasks
//! through the services on a fresh PostgreSQL database, in rounds of three modes — no
//! doorbell, the doorbell Pulse uses (after the commit, from its own connection), and a
//! NOTIFY inside every writing transaction (a trigger, for comparison). A second instance
//! listens and catches up from the outbox on every ring throughout.
//!
//! ```text
//! cargo run --release -p pg-fanout --example notify_cost [-- SECONDS_PER_ROUND ROUNDS WRITERS]
//! ```
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names the
//! server; a database `pulse_notify_cost` is created and dropped there.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use domain_events::model::{Actor, Role};
use domain_events::{EventPublisher, EventSubscriber, InProcessBus};
use pg_fanout::{FanoutConfig, PgFanout};
use services::{Database, NewTask, PoolOptions, Services};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (secs, rounds, writers) = (
        args.first().copied().unwrap_or(5),
        args.get(1).copied().unwrap_or(3),
        args.get(2).copied().unwrap_or(8),
    );
    let admin_url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = AsyncPgConnection::establish(&admin_url).await?;
    admin.batch_execute("DROP DATABASE IF EXISTS pulse_notify_cost WITH (FORCE)").await?;
    admin.batch_execute("CREATE DATABASE pulse_notify_cost").await?;
    let url =
        format!("{}/pulse_notify_cost", admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b));

    let db = Database::connect(&url, PoolOptions { max_connections: writers as u32, ..Default::default() })
        .await?;
    db.migrate().await?;
    let bus: Arc<dyn EventPublisher> = Arc::new(InProcessBus::default());
    let plain = Services::new(db.clone(), bus.clone());
    let link = PgFanout::start(&url, "notify-cost", bus.clone(), FanoutConfig::default()).await?;
    let doorbell = Services::new(db, link.publisher());
    let user = plain.users.bootstrap_admin("admin", "admin-password").await?.ok_or("no admin")?;
    let actor = Actor { user_id: user.id, username: user.username, role: Role::Admin };
    let mut control = AsyncPgConnection::establish(&url).await?;
    control
        .batch_execute(
            "CREATE FUNCTION ring() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_notify('pulse_events', ''); RETURN NULL; END $$; \
             CREATE TRIGGER ring AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION ring(); \
             ALTER TABLE events DISABLE TRIGGER ring;",
        )
        .await?;
    // A second instance listens and reads the outbox on every ring, as in production (an
    // instance skips its own rings, so without a peer the doorbell would cost only the NOTIFY).
    let peer_bus = InProcessBus::default();
    let _peer_events = peer_bus.subscribe();
    let peer = PgFanout::start(&url, "notify-cost-peer", Arc::new(peer_bus), FanoutConfig::default()).await?;

    println!("{writers} writers, {rounds} rounds of {secs} s per mode");
    let modes = ["none", "after-commit doorbell", "in-transaction NOTIFY"];
    let mut totals = [0.0f64; 3];
    for round in 0..rounds {
        for (i, mode) in modes.iter().enumerate() {
            let toggle = if i == 2 { "ENABLE" } else { "DISABLE" };
            control.batch_execute(&format!("ALTER TABLE events {toggle} TRIGGER ring")).await?;
            let services = if i == 1 { &doorbell } else { &plain };
            let rate = run_round(services, &actor, writers, Duration::from_secs(secs)).await;
            totals[i] += rate;
            println!("round {round} {mode:<22} {rate:8.0} commits/s");
        }
    }
    let base = totals[0] / rounds as f64;
    for (i, mode) in modes.iter().enumerate() {
        let rate = totals[i] / rounds as f64;
        println!("mean {mode:<22} {rate:8.0} commits/s  cost {:5.1}%", (1.0 - rate / base) * 100.0);
    }
    drop((plain, doorbell, control, peer, link));
    admin.batch_execute("DROP DATABASE IF EXISTS pulse_notify_cost WITH (FORCE)").await?;
    Ok(())
}

async fn run_round(services: &Services, actor: &Actor, writers: u64, length: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (services, actor, done, stop) = (services.clone(), actor.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let task = NewTask {
                    kind: "bench".into(),
                    department: "bench".into(),
                    description: "notify cost".into(),
                    assignee: None,
                };
                if services.tasks.create(&actor, task).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
