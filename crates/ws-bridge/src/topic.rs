//! What a connection can subscribe to: the whole-value topics an application registers
//! (`stats:tasks` and the others are Pulse's; an application that embeds the crates adds its
//! own the same way), `presence`, and `conversation:{id}` (typing).
//!
//! A whole-value topic is added in one place: a [`TopicSpec`] names it, says whether
//! connections follow it by default, and gives its [`TopicSource`] — which events make its
//! value stale, how the value is computed, and, for a value that changes with time alone,
//! when it next changes. Nothing else in the bridge names a topic.
//!
//! Architecture invariant: no I/O and no knowledge of where values come from (the
//! application's sources do); depends on `domain-events` only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use domain_events::DomainEvent;
use futures_util::future::BoxFuture;
use serde::Serialize;

/// Where a whole-value topic's value comes from; the application implements it.
pub trait TopicSource: Send + Sync + 'static {
    /// Whether `event` (a change committed on any instance) may change the value.
    fn dirtied_by(&self, event: &DomainEvent) -> bool;

    /// The current value.
    fn compute(&self) -> BoxFuture<'_, Result<TopicValue, StatsError>>;
}

/// A computed value: its payload, serialized once, and when it changes next without any
/// event (a deadline passing), if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicValue {
    /// The payload's JSON.
    pub payload: String,
    /// The value changes by itself after this long (it is then recomputed).
    pub changes_in: Option<Duration>,
}

impl TopicValue {
    /// A value that changes only with events.
    pub fn json(payload: &impl Serialize) -> Self {
        // Serializing plain data structures to a string cannot fail.
        Self { payload: serde_json::to_string(payload).unwrap_or_default(), changes_in: None }
    }

    /// The same value, which changes by itself after `delay`.
    pub fn changing_in(self, delay: Option<Duration>) -> Self {
        Self { changes_in: delay, ..self }
    }
}

/// A source that failed; the bridge logs it and retries.
#[derive(Debug, thiserror::Error)]
#[error("stats unavailable: {0}")]
pub struct StatsError(pub String);

/// One whole-value topic: its name, whether connections follow it unless they ask for
/// others, and its source.
#[derive(Clone)]
pub struct TopicSpec {
    name: String,
    default: bool,
    source: Arc<dyn TopicSource>,
}

impl TopicSpec {
    /// An opt-in topic (clients subscribe to it by name).
    pub fn new(name: impl Into<String>, source: Arc<dyn TopicSource>) -> Self {
        Self { name: name.into(), default: false, source }
    }

    /// Followed by every connection that names no topics.
    pub fn followed_by_default(self) -> Self {
        Self { default: true, ..self }
    }
}

impl std::fmt::Debug for TopicSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSpec").field("name", &self.name).field("default", &self.default).finish()
    }
}

/// A registered whole-value topic, by its place in [`Topics`] (registration order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub(crate) usize);

impl TopicId {
    /// Its index in registration order.
    pub fn index(self) -> usize {
        self.0
    }
}

/// Why a set of topics was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Two topics share a name.
    #[error("the topic {0:?} is registered twice")]
    Duplicate(String),
    /// The name is taken by the protocol, empty, too long or not printable ASCII.
    #[error(
        "the topic name {0:?} is not allowed (1-64 printable ASCII characters, not \"presence\" or conversation:…)"
    )]
    BadName(String),
}

/// Every whole-value topic of a server, in registration order (the order a snapshot sends
/// them in).
#[derive(Debug, Default)]
pub struct Topics {
    specs: Vec<TopicSpec>,
    by_name: HashMap<String, TopicId>,
}

impl Topics {
    /// The topics `specs` name, checked.
    pub fn new(specs: impl IntoIterator<Item = TopicSpec>) -> Result<Self, TopicError> {
        let mut topics = Topics::default();
        for spec in specs {
            let name = spec.name.as_str();
            let allowed = (1..=64).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_graphic())
                && name != "presence"
                && !name.starts_with("conversation:");
            if !allowed {
                return Err(TopicError::BadName(spec.name));
            }
            if topics.by_name.contains_key(name) {
                return Err(TopicError::Duplicate(spec.name));
            }
            topics.by_name.insert(spec.name.clone(), TopicId(topics.specs.len()));
            topics.specs.push(spec);
        }
        Ok(topics)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Every topic, in registration order.
    pub fn ids(&self) -> impl Iterator<Item = TopicId> + '_ {
        (0..self.specs.len()).map(TopicId)
    }

    /// The topic named `name`.
    pub fn get(&self, name: &str) -> Option<TopicId> {
        self.by_name.get(name).copied()
    }

    /// Its name.
    pub fn name(&self, id: TopicId) -> &str {
        &self.specs[id.0].name
    }

    /// Its source.
    pub fn source(&self, id: TopicId) -> &Arc<dyn TopicSource> {
        &self.specs[id.0].source
    }

    /// The topics `event` makes stale.
    pub fn dirtied_by<'a>(&'a self, event: &'a DomainEvent) -> impl Iterator<Item = TopicId> + 'a {
        self.ids().filter(move |id| self.specs[id.0].source.dirtied_by(event))
    }

    /// What a connection that names no topics follows, in registration order.
    pub fn defaults(&self) -> Vec<Topic> {
        self.ids().filter(|id| self.specs[id.0].default).map(Topic::Value).collect()
    }
}

/// Anything a connection may subscribe to. Ordered as acknowledgements list them: the
/// whole-value topics in registration order, then presence, then conversations by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// A registered whole-value topic (`stats:tasks`, …).
    Value(TopicId),
    /// `presence`: who is online and what they view.
    Presence,
    /// `conversation:{id}`: typing in that conversation.
    Conversation(i64),
}

impl Topic {
    /// Parses a topic name against the registered ones.
    ///
    /// ```
    /// use ws_bridge::topic::{Topic, Topics};
    /// let topics = Topics::default();
    /// assert_eq!(Topic::parse("presence", &topics), Some(Topic::Presence));
    /// assert_eq!(Topic::parse("conversation:12", &topics), Some(Topic::Conversation(12)));
    /// assert_eq!(Topic::parse("conversation:x", &topics), None);
    /// assert_eq!(Topic::parse("stats:tasks", &topics), None, "not registered here");
    /// ```
    pub fn parse(name: &str, topics: &Topics) -> Option<Topic> {
        if let Some(id) = topics.get(name) {
            return Some(Topic::Value(id));
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
    pub fn name(&self, topics: &Topics) -> String {
        match self {
            Topic::Value(id) => topics.name(*id).to_owned(),
            Topic::Presence => "presence".to_owned(),
            Topic::Conversation(id) => format!("conversation:{id}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A source whose value a test sets, and the contract's three stats topics on it.

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use domain_events::Aggregate;
    use tokio::sync::Semaphore;

    use super::*;

    /// Counts and holds calls; its value is `{"n": <value>}`.
    pub(crate) struct FakeSource {
        pub(crate) aggregate: Aggregate,
        pub(crate) value: AtomicU64,
        pub(crate) calls: AtomicU64,
        pub(crate) gate: Semaphore,
        pub(crate) fail: AtomicBool,
        pub(crate) changes_in: Mutex<Option<Duration>>,
    }

    pub(crate) const GATE: usize = 1_000_000;

    impl FakeSource {
        pub(crate) fn new(aggregate: Aggregate) -> Arc<Self> {
            Arc::new(Self {
                aggregate,
                value: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                gate: Semaphore::new(GATE),
                fail: AtomicBool::new(false),
                changes_in: Mutex::new(None),
            })
        }
    }

    impl TopicSource for FakeSource {
        fn dirtied_by(&self, event: &DomainEvent) -> bool {
            event.aggregate() == self.aggregate
        }

        fn compute(&self) -> BoxFuture<'_, Result<TopicValue, StatsError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let _permit = self.gate.acquire().await.map_err(|e| StatsError(e.to_string()))?;
                if self.fail.load(Ordering::SeqCst) {
                    return Err(StatsError("database down".into()));
                }
                let value = serde_json::json!({ "n": self.value.load(Ordering::SeqCst) });
                let changes_in = *self.changes_in.lock().unwrap_or_else(|p| p.into_inner());
                Ok(TopicValue::json(&value).changing_in(changes_in))
            })
        }
    }

    /// `stats:tasks`, `stats:approvals`, `stats:conversations` (default) and `stats:extra`
    /// (opt-in), each on its own fake source.
    pub(crate) fn topics() -> (Arc<Topics>, [Arc<FakeSource>; 4]) {
        let sources = [
            FakeSource::new(Aggregate::Task),
            FakeSource::new(Aggregate::Approval),
            FakeSource::new(Aggregate::Conversation),
            FakeSource::new(Aggregate::Task),
        ];
        let spec = |name: &str, source: &Arc<FakeSource>| {
            TopicSpec::new(name, source.clone() as Arc<dyn TopicSource>)
        };
        let topics = Topics::new([
            spec("stats:tasks", &sources[0]).followed_by_default(),
            spec("stats:approvals", &sources[1]).followed_by_default(),
            spec("stats:conversations", &sources[2]).followed_by_default(),
            spec("stats:extra", &sources[3]),
        ])
        .expect("valid topics");
        (Arc::new(topics), sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_unique() {
        let (topics, sources) = testing::topics();
        assert_eq!(topics.len(), 4);
        assert_eq!(topics.get("stats:approvals"), Some(TopicId(1)));
        assert_eq!(
            topics.defaults(),
            vec![Topic::Value(TopicId(0)), Topic::Value(TopicId(1)), Topic::Value(TopicId(2))]
        );
        let source = sources[0].clone() as Arc<dyn TopicSource>;
        for bad in ["", "presence", "conversation:1", "has space", "é", &"x".repeat(65)] {
            let refused = Topics::new([TopicSpec::new(bad, source.clone())]);
            assert_eq!(refused.err(), Some(TopicError::BadName(bad.to_owned())), "{bad:?}");
        }
        let twice = Topics::new([TopicSpec::new("a", source.clone()), TopicSpec::new("a", source)]);
        assert_eq!(twice.err(), Some(TopicError::Duplicate("a".into())));
    }

    #[test]
    fn parsing_knows_the_registered_topics_and_the_protocol_ones() {
        let (topics, _) = testing::topics();
        assert_eq!(Topic::parse("stats:extra", &topics), Some(Topic::Value(TopicId(3))));
        assert_eq!(Topic::parse("stats:nope", &topics), None);
        assert_eq!(Topic::parse("conversation:0", &topics), None);
        assert_eq!(Topic::parse("conversation:007", &topics), None);
        assert_eq!(Topic::parse("conversation:1234567890123456789", &topics), None);
        assert_eq!(Topic::Value(TopicId(3)).name(&topics), "stats:extra");
        assert_eq!(Topic::Conversation(9).name(&topics), "conversation:9");
        let mut ordered = vec![Topic::Conversation(2), Topic::Presence, Topic::Value(TopicId(1))];
        ordered.sort();
        assert_eq!(ordered, [Topic::Value(TopicId(1)), Topic::Presence, Topic::Conversation(2)]);
    }
}
