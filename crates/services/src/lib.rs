//! Pulse's domain services: tasks, conversations, approvals and users, on SQLite or
//! PostgreSQL through diesel-async.
//!
//! Every committed change writes its events to the event log in the same transaction and
//! publishes them on the bus after the commit; a refused or rolled-back change emits none.
//! Stats come from counters the database keeps in the writing transaction.
//!
//! Architecture invariant: services know the [`domain_events::EventPublisher`] trait and
//! nothing of HTTP, WebSocket or other instances (no actix, no ws-bridge, no gateway).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use domain_events::InProcessBus;
//! use services::{Database, PoolOptions, Services};
//!
//! let db = Database::connect("sqlite://data/pulse.db", PoolOptions::default()).await?;
//! db.migrate().await?;
//! let services = Services::new(db, Arc::new(InProcessBus::default()));
//! let stats = services.tasks.stats().await?;
//! # Ok(()) }
//! ```

mod db;
mod error;
pub mod outbox;
mod schema;

pub mod approvals;
pub mod conversations;
pub mod insight;
pub mod passwords;
pub mod stats;
pub mod tasks;
pub mod tickets;
pub mod users;
pub mod validate;

use std::sync::Arc;

use domain_events::EventPublisher;

pub use approvals::{ApprovalQueue, NewApproval};
pub use conversations::{ConversationChanges, ConversationService, NewConversation};
pub use db::{ConnectError, Database, DatabaseKind, PoolOptions, StartupLock};
pub use error::{ServiceError, ServiceResult, ValidationError};
pub use insight::{InsightService, TaskSla};
pub use outbox::{EventLog, PruneHorizon};
pub use passwords::{PasswordGate, PasswordPermit};
pub use tasks::{NewTask, TaskFilter, TaskService};
pub use tickets::{TicketGrant, TicketService};
pub use users::{AccountState, NewUser, PasswordChange, UserChanges, UserService};
pub use validate::{Page, PageRequest};

/// Every service on one database and one publisher.
#[derive(Clone)]
pub struct Services {
    /// Tasks.
    pub tasks: TaskService,
    /// Guest conversations.
    pub conversations: ConversationService,
    /// The approval queue.
    pub approvals: ApprovalQueue,
    /// Users and passwords.
    pub users: UserService,
    /// Single-use WebSocket tickets.
    pub tickets: TicketService,
    /// Live operations insight: departments, SLA, history (default SLA unless replaced).
    pub insight: InsightService,
    /// The database they share.
    pub db: Database,
}

impl Services {
    /// Builds every service on `db`, announcing committed changes on `publisher`, with a
    /// password gate as wide as the machine has cores.
    pub fn new(db: Database, publisher: Arc<dyn EventPublisher>) -> Self {
        Self::with_password_gate(db, publisher, PasswordGate::sized_to_cores())
    }

    /// The same, with the given password gate (e.g. a narrower one in tests).
    pub fn with_password_gate(db: Database, publisher: Arc<dyn EventPublisher>, gate: PasswordGate) -> Self {
        Self {
            tasks: TaskService::new(db.clone(), publisher.clone()),
            conversations: ConversationService::new(db.clone(), publisher.clone()),
            approvals: ApprovalQueue::new(db.clone(), publisher.clone()),
            users: UserService::new(db.clone(), publisher, gate),
            tickets: TicketService::new(db.clone()),
            insight: InsightService::new(db.clone(), TaskSla::default()),
            db,
        }
    }
}
