//! Domain events: what a committed change announces.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Actor, Approval, Conversation, Task, UserUpdate};

/// One committed change, carrying the record as it is after the change.
///
/// Serialized with its contract name in `type` and the record in `data`:
///
/// ```
/// # use domain_events::DomainEvent;
/// let json = r#"{"type":"approval.queued","data":{"id":1,"kind":"refund","summary":"Room 12",
///   "payload":null,"status":"pending","requestedBy":"ana","decidedBy":null,"decisionReason":null,
///   "decidedAt":null,"executedBy":null,"executedAt":null,
///   "createdAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z"}}"#;
/// let event: DomainEvent = serde_json::from_str(json).unwrap();
/// assert_eq!(event.name(), "approval.queued");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum DomainEvent {
    /// A task was created.
    #[serde(rename = "task.created")]
    TaskCreated(Task),
    /// A task was given to someone (at creation or later).
    #[serde(rename = "task.assigned")]
    TaskAssigned(Task),
    /// A task was completed.
    #[serde(rename = "task.completed")]
    TaskCompleted(Task),
    /// A conversation was opened.
    #[serde(rename = "conversation.created")]
    ConversationCreated(Conversation),
    /// A conversation's details changed.
    #[serde(rename = "conversation.updated")]
    ConversationUpdated(Conversation),
    /// A conversation was escalated to a manager.
    #[serde(rename = "conversation.escalated")]
    ConversationEscalated(Conversation),
    /// A conversation was resolved.
    #[serde(rename = "conversation.resolved")]
    ConversationResolved(Conversation),
    /// An approval was requested.
    #[serde(rename = "approval.queued")]
    ApprovalQueued(Approval),
    /// An approval was approved or rejected.
    #[serde(rename = "approval.decided")]
    ApprovalDecided(Approval),
    /// An approved request was carried out.
    #[serde(rename = "approval.executed")]
    ApprovalExecuted(Approval),
    /// A user's role, activity or password changed (carries no password or hash).
    #[serde(rename = "user.updated")]
    UserUpdated(UserUpdate),
}

/// The kind of record an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregate {
    /// [`Task`]
    Task,
    /// [`Conversation`]
    Conversation,
    /// [`Approval`]
    Approval,
    /// [`crate::model::User`]
    User,
}

impl DomainEvent {
    /// The contract name, e.g. `task.created`.
    pub fn name(&self) -> &'static str {
        match self {
            DomainEvent::TaskCreated(_) => "task.created",
            DomainEvent::TaskAssigned(_) => "task.assigned",
            DomainEvent::TaskCompleted(_) => "task.completed",
            DomainEvent::ConversationCreated(_) => "conversation.created",
            DomainEvent::ConversationUpdated(_) => "conversation.updated",
            DomainEvent::ConversationEscalated(_) => "conversation.escalated",
            DomainEvent::ConversationResolved(_) => "conversation.resolved",
            DomainEvent::ApprovalQueued(_) => "approval.queued",
            DomainEvent::ApprovalDecided(_) => "approval.decided",
            DomainEvent::ApprovalExecuted(_) => "approval.executed",
            DomainEvent::UserUpdated(_) => "user.updated",
        }
    }

    /// Which kind of record changed.
    pub fn aggregate(&self) -> Aggregate {
        match self {
            DomainEvent::TaskCreated(_) | DomainEvent::TaskAssigned(_) | DomainEvent::TaskCompleted(_) => {
                Aggregate::Task
            }
            DomainEvent::ConversationCreated(_)
            | DomainEvent::ConversationUpdated(_)
            | DomainEvent::ConversationEscalated(_)
            | DomainEvent::ConversationResolved(_) => Aggregate::Conversation,
            DomainEvent::ApprovalQueued(_)
            | DomainEvent::ApprovalDecided(_)
            | DomainEvent::ApprovalExecuted(_) => Aggregate::Approval,
            DomainEvent::UserUpdated(_) => Aggregate::User,
        }
    }
}

/// An event as it travels: with its place in the global order, when and by whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope {
    /// Position in the event log; increases with every committed event of a database.
    pub seq: i64,
    /// Commit time.
    pub at: DateTime<Utc>,
    /// Who made the change.
    pub actor: Actor,
    /// What changed.
    pub event: DomainEvent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, TaskStatus};

    fn task() -> Task {
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("valid").to_utc();
        Task {
            id: 7,
            kind: "housekeeping".into(),
            department: "housekeeping".into(),
            description: "Room 12".into(),
            status: TaskStatus::Pending,
            assignee: None,
            created_by: "admin".into(),
            created_at: at,
            updated_at: at,
            completed_at: None,
        }
    }

    #[test]
    fn serde_names_are_the_contract_names() {
        let events = [
            DomainEvent::TaskCreated(task()),
            DomainEvent::TaskAssigned(task()),
            DomainEvent::TaskCompleted(task()),
        ];
        for event in events {
            let json = serde_json::to_value(&event).expect("serializes");
            assert_eq!(json["type"], event.name());
            assert_eq!(json["data"]["type"], "housekeeping");
            let back: DomainEvent = serde_json::from_value(json).expect("deserializes");
            assert_eq!(back, event);
        }
    }

    #[test]
    fn user_updated_round_trips_with_millisecond_retirement() {
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.123Z").expect("valid").to_utc();
        let event = DomainEvent::UserUpdated(crate::model::UserUpdate {
            user: crate::model::User {
                id: 4,
                username: "ana".into(),
                role: Role::Staff,
                active: false,
                created_at: at,
            },
            tokens_valid_after: at,
        });
        let json = serde_json::to_value(&event).expect("serializes");
        assert_eq!(json["type"], "user.updated");
        assert_eq!(json["data"]["user"]["active"], false);
        assert_eq!(json["data"]["tokensValidAfter"], "2026-01-01T00:00:00.123Z");
        assert_eq!(event.aggregate(), Aggregate::User);
        assert_eq!(serde_json::from_value::<DomainEvent>(json).expect("parses"), event);
    }

    #[test]
    fn envelope_round_trips() {
        let envelope = EventEnvelope {
            seq: 3,
            at: Utc::now(),
            actor: Actor { user_id: 1, username: "admin".into(), role: Role::Admin },
            event: DomainEvent::TaskCreated(task()),
        };
        let json = serde_json::to_string(&envelope).expect("serializes");
        assert_eq!(serde_json::from_str::<EventEnvelope>(&json).expect("parses"), envelope);
    }
}
