//! The records of the domain, as every layer and every client sees them.
//!
//! They serialize to the camelCase JSON of the wire contract, so the gateway returns them
//! as they are and events carry them whole.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Defines a closed string enum: serde names, `as_str`, `FromStr` and `ALL`, kept in one place.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        // utoipa does not read the `rename = $text` below (a macro fragment); every wire name
        // is the snake_case of its variant, which the gateway's OpenAPI test checks.
        #[cfg_attr(feature = "openapi", schema(rename_all = "snake_case"))]
        pub enum $name {
            $($(#[$vmeta])* #[doc = concat!("`", $text, "`")] #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire (and database) spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        value: s.chars().take(64).collect(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {value:?} (expected one of: {})", expected.join(", "))]
pub struct UnknownValue {
    /// What was given (cut to 64 characters).
    pub value: String,
    /// The accepted spellings.
    pub expected: &'static [&'static str],
}

string_enum! {
    /// What a user may do. Admins manage users; staff may not decide or execute approvals.
    Role { Admin = "admin", Manager = "manager", Staff = "staff" }
}

string_enum! {
    /// A task's place in `pending → in_progress → completed`.
    TaskStatus { Pending = "pending", InProgress = "in_progress", Completed = "completed" }
}

string_enum! {
    /// A conversation's place in `active ⇄ escalated → resolved`.
    ConversationState { Active = "active", Escalated = "escalated", Resolved = "resolved" }
}

string_enum! {
    /// An approval's place in `pending → approved | rejected`, `approved → executed`.
    ApprovalStatus { Pending = "pending", Approved = "approved", Rejected = "rejected", Executed = "executed" }
}

string_enum! {
    /// The verdict on a pending approval.
    Decision { Approved = "approved", Rejected = "rejected" }
}

/// A user as clients see it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Unique login name.
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// Whether the user may log in; a deactivated user's tokens and tickets are refused.
    pub active: bool,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
}

/// What `user.updated` announces: the account as it is now, and the instant before which
/// its credentials (tokens, tickets) were issued and are no longer accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserUpdate {
    /// The account after the change.
    pub user: User,
    /// Credentials issued before this instant (millisecond precision) are retired: a role
    /// change, a password change or a deactivation moves it to the time of the change.
    pub tokens_valid_after: DateTime<Utc>,
}

/// Who made a change: the authenticated user behind a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub username: String,
    /// The user's role when the request was authenticated.
    pub role: Role,
}

/// A piece of work for a department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    /// Database id.
    pub id: i64,
    /// What kind of work (`housekeeping`, `maintenance`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The department that does it.
    pub department: String,
    /// Free text.
    pub description: String,
    /// Where it is in its life cycle.
    pub status: TaskStatus,
    /// Username of the person doing it, once assigned.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub assignee: Option<String>,
    /// Username of its creator.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was completed.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub completed_at: Option<DateTime<Utc>>,
}

/// A conversation with a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversation {
    /// Database id.
    pub id: i64,
    /// The guest's name.
    pub guest_name: String,
    /// Where it happens (`email`, `phone`, `chat`, …).
    pub channel: String,
    /// What it is about.
    pub subject: String,
    /// Where it is in its life cycle.
    pub state: ConversationState,
    /// Why it was last escalated.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub escalation_reason: Option<String>,
    /// Username of its creator.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was resolved.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub resolved_at: Option<DateTime<Utc>>,
    /// When it was last escalated (kept after it is de-escalated or resolved), or never.
    /// Absent from events written before it existed.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub escalated_at: Option<DateTime<Utc>>,
}

/// A request that a manager must approve before it is carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    /// Database id.
    pub id: i64,
    /// What kind of request (`refund`, `upgrade`, …).
    pub kind: String,
    /// One line for the approver.
    pub summary: String,
    /// Any JSON the requester attached.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub payload: Option<serde_json::Value>,
    /// Where it is in its life cycle.
    pub status: ApprovalStatus,
    /// Username of the requester.
    pub requested_by: String,
    /// Username of the manager who decided.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub decided_by: Option<String>,
    /// The reason given with the decision.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub decision_reason: Option<String>,
    /// When it was decided.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub decided_at: Option<DateTime<Utc>>,
    /// Username of the manager who executed it.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub executed_by: Option<String>,
    /// When it was executed.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub executed_at: Option<DateTime<Utc>>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Task counts by status (`GET /api/v1/tasks/stats`, `stats:tasks`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStats {
    /// Tasks waiting for someone.
    pub pending: u64,
    /// Tasks being done.
    pub in_progress: u64,
    /// Tasks done.
    pub completed: u64,
    /// All tasks.
    pub total: u64,
}

/// Conversation counts by state (`GET /api/v1/conversations/stats`, `stats:conversations`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationStats {
    /// Open conversations.
    pub active: u64,
    /// Conversations that need a manager.
    pub escalated: u64,
    /// Closed conversations.
    pub resolved: u64,
    /// All conversations.
    pub total: u64,
}

/// Approval counts by status (`GET /api/v1/approvals/stats` wraps it in `{"stats": …}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalStats {
    /// Waiting for a decision.
    pub pending: u64,
    /// Approved, not yet executed.
    pub approved: u64,
    /// Rejected.
    pub rejected: u64,
    /// Approved and carried out.
    pub executed: u64,
    /// All approvals.
    pub total: u64,
}

/// One department's task counts (an entry of `stats:departments`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DepartmentCounts {
    /// The department's name, as tasks give it.
    pub department: String,
    /// Tasks waiting for someone.
    pub pending: u64,
    /// Tasks being done.
    pub in_progress: u64,
    /// Tasks done.
    pub completed: u64,
    /// All the department's tasks.
    pub total: u64,
}

/// Task counts per department (`GET /api/v1/tasks/stats/departments`, `stats:departments`):
/// sorted by name in code-point order, at most 200 (`DepartmentStats::MAX_DEPARTMENTS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DepartmentStats {
    /// The first departments by name.
    pub departments: Vec<DepartmentCounts>,
    /// Present (`true`) when there are more departments than listed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub truncated: bool,
}

impl DepartmentStats {
    /// How many departments a value lists at most.
    pub const MAX_DEPARTMENTS: usize = 200;
}

/// What is overdue and the oldest open items (`GET /api/v1/stats/sla`, `stats:sla`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlaStats {
    /// Tasks not completed `TASK_SLA_SECONDS` after their creation.
    pub overdue_tasks: u64,
    /// When the oldest task that is not completed was created.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub oldest_open_task_created_at: Option<DateTime<Utc>>,
    /// Conversations escalated now (equals `stats:conversations.escalated`).
    pub escalated_conversations: u64,
    /// The earliest `escalatedAt` among conversations escalated now.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub oldest_escalation_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_their_wire_names() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(*status));
            assert_eq!(
                serde_json::to_string(status).expect("serializes"),
                format!("\"{}\"", status.as_str())
            );
        }
        assert_eq!(TaskStatus::InProgress.as_str(), "in_progress");
        let err = "done".parse::<TaskStatus>().expect_err("unknown value");
        assert!(err.to_string().contains("pending, in_progress, completed"));
    }

    #[test]
    fn stats_serialize_in_camel_case() {
        let json = serde_json::to_value(TaskStats { pending: 1, in_progress: 2, completed: 3, total: 6 })
            .expect("serializes");
        assert_eq!(json, serde_json::json!({"pending": 1, "inProgress": 2, "completed": 3, "total": 6}));
    }
}
