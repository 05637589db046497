//! A fresh, migrated PostgreSQL database per test, and rows written as a service would.

#![allow(dead_code)]

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use services::{Database, PoolOptions};

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, migrated database, dropped at the end of the test.
pub struct Scratch {
    pub name: String,
    pub url: String,
}

impl Scratch {
    pub async fn create() -> Self {
        let name = format!("pulse_doorbell_{}", rand::random::<u32>());
        let admin = admin_url();
        let mut conn = AsyncPgConnection::establish(&admin).await.expect("PostgreSQL is reachable");
        conn.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.expect("create database");
        let url = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base));
        let db = Database::connect(&url, PoolOptions::default()).await.expect("connect");
        db.migrate().await.expect("migrate");
        Self { name, url }
    }

    pub async fn drop_database(self) {
        let mut conn = AsyncPgConnection::establish(&admin_url()).await.expect("admin connection");
        conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .await
            .expect("drop database");
    }
}

/// SQL that appends a `task.created` event for task `id` to the outbox, as a service's
/// transaction does (its origin is the connection's `application_name`).
pub fn insert_event(id: i64) -> String {
    use domain_events::model::{Actor, Role, Task, TaskStatus};
    let now = chrono::Utc::now();
    let actor = Actor { user_id: 1, username: "admin".into(), role: Role::Admin };
    let task = Task {
        id,
        kind: "k".into(),
        department: "d".into(),
        description: "x".into(),
        status: TaskStatus::Pending,
        assignee: None,
        created_by: "admin".into(),
        created_at: now,
        updated_at: now,
        completed_at: None,
    };
    let quote = |json: String| json.replace('\'', "''");
    format!(
        "INSERT INTO events (name, actor, event, created_at) VALUES ('task.created', '{}', '{}', now())",
        quote(serde_json::to_string(&actor).expect("json")),
        quote(serde_json::to_string(&domain_events::DomainEvent::TaskCreated(task)).expect("json")),
    )
}

/// A connection named `name` (its rows' origin).
pub async fn connection_named(url: &str, name: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(&pg_fanout::with_application_name(url, name)).await.expect("connection")
}
