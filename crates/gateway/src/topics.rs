//! Pulse's whole-value topics — `stats:tasks`, `stats:approvals`, `stats:conversations`,
//! followed by default, and section 9's `stats:departments` and `stats:sla`, opt-in —
//! registered with ws-bridge like any topic an embedding application adds
//! ([`crate::PulseOptions::topics`]): a name, the events that make it stale, and how its
//! value is read (the counters and indexes the services keep: a handful of rows).
//! `stats:sla` also says when it changes with time alone (a task crossing its deadline),
//! and the bridge recomputes it then.
//!
//! Architecture invariant: the only place that knows which services back which topic.

use std::sync::Arc;

use domain_events::{Aggregate, DomainEvent};
use futures_util::future::BoxFuture;
use services::{Database, InsightService, ServiceError};
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

/// A section 9 topic, made stale by the events of some aggregates.
struct Insight {
    insight: InsightService,
    aggregates: &'static [Aggregate],
    read: for<'a> fn(&'a InsightService) -> BoxFuture<'a, Result<TopicValue, ServiceError>>,
}

impl TopicSource for Insight {
    fn dirtied_by(&self, event: &DomainEvent) -> bool {
        self.aggregates.contains(&event.aggregate())
    }

    fn compute(&self) -> BoxFuture<'_, Result<TopicValue, StatsError>> {
        Box::pin(async move { (self.read)(&self.insight).await.map_err(|e| StatsError(e.to_string())) })
    }
}

/// Pulse's topics, in the contract's snapshot order; section 9's on `insight`.
pub fn pulse_topics(db: &Database, insight: &InsightService) -> Vec<TopicSpec> {
    let insight_spec = |name: &str, aggregates, read| {
        let source = Insight { insight: insight.clone(), aggregates, read };
        TopicSpec::new(name, Arc::new(source))
    };
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
        insight_spec("stats:departments", &[Aggregate::Task], |insight| {
            Box::pin(async move { insight.department_stats().await.map(|v| TopicValue::json(&v)) })
        }),
        insight_spec("stats:sla", &[Aggregate::Task, Aggregate::Conversation], |insight| {
            Box::pin(async move {
                let reading = insight.sla().await?;
                Ok(TopicValue::json(&reading.stats).changing_in(reading.changes_in))
            })
        }),
    ]
}
