//! Pulse's whole-value topics — `stats:tasks`, `stats:approvals`, `stats:conversations`,
//! followed by default — registered with ws-bridge like any topic an embedding application
//! adds ([`crate::PulseOptions::topics`]): a name, the events that make it stale, and how
//! its value is read (the counters the services keep, a handful of rows).
//!
//! Architecture invariant: the only place that knows which services back which topic.

use std::sync::Arc;

use domain_events::{Aggregate, DomainEvent};
use futures_util::future::BoxFuture;
use services::{Database, ServiceError};
use ws_bridge::{StatsError, TopicSource, TopicSpec, TopicValue};

/// A topic read from the database, made stale by the events of one aggregate.
struct Counters {
    db: Database,
    aggregate: Aggregate,
    read: for<'a> fn(&'a Database) -> BoxFuture<'a, Result<TopicValue, ServiceError>>,
}

impl TopicSource for Counters {
    fn dirtied_by(&self, event: &DomainEvent) -> bool {
        event.aggregate() == self.aggregate
    }

    fn compute(&self) -> BoxFuture<'_, Result<TopicValue, StatsError>> {
        Box::pin(async move { (self.read)(&self.db).await.map_err(|e| StatsError(e.to_string())) })
    }
}

/// Pulse's topics, in the contract's snapshot order.
pub fn pulse_topics(db: &Database) -> Vec<TopicSpec> {
    let spec = |name: &str, aggregate, read| {
        let source = Counters { db: db.clone(), aggregate, read };
        TopicSpec::new(name, Arc::new(source)).followed_by_default()
    };
    vec![
        spec("stats:tasks", Aggregate::Task, |db| {
            Box::pin(async move { services::stats::task_stats(db).await.map(|v| TopicValue::json(&v)) })
        }),
        spec("stats:approvals", Aggregate::Approval, |db| {
            Box::pin(async move { services::stats::approval_stats(db).await.map(|v| TopicValue::json(&v)) })
        }),
        spec("stats:conversations", Aggregate::Conversation, |db| {
            Box::pin(
                async move { services::stats::conversation_stats(db).await.map(|v| TopicValue::json(&v)) },
            )
        }),
    ]
}
