//! Stats topics and the events that change them.

use domain_events::model::{ApprovalStats, ConversationStats, TaskStats};
use domain_events::{Aggregate, DomainEvent};
use serde::Serialize;

/// A stats topic of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// The topic whose value `event` changes, if any (a user change touches no stats).
    pub fn dirtied_by(event: &DomainEvent) -> Option<StatsTopic> {
        match event.aggregate() {
            Aggregate::Task => Some(StatsTopic::Tasks),
            Aggregate::Approval => Some(StatsTopic::Approvals),
            Aggregate::Conversation => Some(StatsTopic::Conversations),
            Aggregate::User => None,
        }
    }
}

/// Anything a connection may subscribe to. Ordered as acknowledgements list them:
/// stats in contract order, then presence, then conversations by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `stats:tasks`, `stats:approvals`, `stats:conversations`
    Stats(StatsTopic),
    /// `presence`: who is online and what they view.
    Presence,
    /// `conversation:{id}`: typing in that conversation.
    Conversation(i64),
}

impl Topic {
    /// The topics a connection starts with when it names none: the three stats topics.
    pub const DEFAULT: [Topic; 3] = [
        Topic::Stats(StatsTopic::Tasks),
        Topic::Stats(StatsTopic::Approvals),
        Topic::Stats(StatsTopic::Conversations),
    ];

    /// Parses a topic name.
    ///
    /// ```
    /// use ws_bridge::topic::{StatsTopic, Topic};
    /// assert_eq!(Topic::parse("stats:tasks"), Some(Topic::Stats(StatsTopic::Tasks)));
    /// assert_eq!(Topic::parse("conversation:12"), Some(Topic::Conversation(12)));
    /// assert_eq!(Topic::parse("conversation:x"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Topic> {
        if let Some(stats) = StatsTopic::from_name(name) {
            return Some(Topic::Stats(stats));
        }
        if name == "presence" {
            return Some(Topic::Presence);
        }
        let id = name.strip_prefix("conversation:")?;
        if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) || id.starts_with('0') {
            return None;
        }
        id.parse().ok().map(Topic::Conversation)
    }

    /// The topic's name.
    pub fn name(&self) -> String {
        match self {
            Topic::Stats(stats) => stats.name().to_owned(),
            Topic::Presence => "presence".to_owned(),
            Topic::Conversation(id) => format!("conversation:{id}"),
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
