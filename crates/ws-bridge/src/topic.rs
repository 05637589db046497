//! Stats topics and the events that change them.

use domain_events::model::{ApprovalStats, ConversationStats, TaskStats};
use domain_events::{Aggregate, DomainEvent};
use serde::Serialize;

/// A stats topic of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatsTopic {
    /// `stats:tasks`
    Tasks,
    /// `stats:approvals`
    Approvals,
    /// `stats:conversations`
    Conversations,
}

impl StatsTopic {
    /// Every stats topic, in snapshot order (tasks, approvals, conversations).
    pub const ALL: [StatsTopic; 3] = [StatsTopic::Tasks, StatsTopic::Approvals, StatsTopic::Conversations];

    /// The message type and topic name, e.g. `stats:tasks`.
    pub fn name(self) -> &'static str {
        match self {
            StatsTopic::Tasks => "stats:tasks",
            StatsTopic::Approvals => "stats:approvals",
            StatsTopic::Conversations => "stats:conversations",
        }
    }

    /// The topic named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub(crate) fn index(self) -> usize {
        match self {
            StatsTopic::Tasks => 0,
            StatsTopic::Approvals => 1,
            StatsTopic::Conversations => 2,
        }
    }

    /// The topic whose value `event` changes.
    pub fn dirtied_by(event: &DomainEvent) -> StatsTopic {
        match event.aggregate() {
            Aggregate::Task => StatsTopic::Tasks,
            Aggregate::Approval => StatsTopic::Approvals,
            Aggregate::Conversation => StatsTopic::Conversations,
        }
    }
}

/// A whole stats value of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StatsValue {
    /// `stats:tasks`
    Tasks(TaskStats),
    /// `stats:approvals`
    Approvals(ApprovalStats),
    /// `stats:conversations`
    Conversations(ConversationStats),
}

impl StatsValue {
    /// The topic this value belongs to.
    pub fn topic(&self) -> StatsTopic {
        match self {
            StatsValue::Tasks(_) => StatsTopic::Tasks,
            StatsValue::Approvals(_) => StatsTopic::Approvals,
            StatsValue::Conversations(_) => StatsTopic::Conversations,
        }
    }
}
