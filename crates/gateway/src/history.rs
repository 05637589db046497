//! The history recorder (contract section 9): at the end of every minute, by the database's
//! clock, each whole-value topic's value is written if it changed in that minute
//! (`services::insight::InsightService::record_history`). Every instance does it; the
//! database keeps one point per minute (`INSERT … ON CONFLICT DO NOTHING`). It runs on a
//! timer, beside the write path: a change never waits for it.
//!
//! Reason to change: when and what is recorded. Knows the topics' sources and the insight
//! service; nothing of HTTP.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use services::InsightService;
use services::insight::HistoryBucket;
use tokio::task::JoinHandle;
use ws_bridge::Topics;

/// How long after a minute's end the value is read: past the boundary on every instance's
/// timer, so the point holds what committed by then.
const AFTER_BOUNDARY: Duration = Duration::from_millis(20);
/// How long to wait before asking a database that did not answer again.
const RETRY: Duration = Duration::from_secs(1);
/// How often old points are pruned.
const PRUNE_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Starts recording every topic of `topics` once per `bucket` (a minute in the product).
pub fn spawn_recorder(topics: Arc<Topics>, insight: InsightService, bucket: HistoryBucket) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pruned_at: Option<DateTime<Utc>> = None;
        loop {
            let now = match insight.database_now().await {
                Ok(now) => now,
                Err(error) => {
                    tracing::warn!(%error, "history: cannot read the database's clock; trying again");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let end = bucket.next_end(now);
            let wait = (end - now).to_std().unwrap_or_default() + AFTER_BOUNDARY;
            tokio::time::sleep(wait).await;
            record(&topics, &insight, end).await;
            if pruned_at.is_none_or(|at| end - at >= PRUNE_EVERY) {
                prune(&topics, &insight, end).await;
                pruned_at = Some(end);
            }
        }
    })
}

/// Writes each topic's current value as the point of the minute ending at `end`.
async fn record(topics: &Topics, insight: &InsightService, end: DateTime<Utc>) {
    for topic in topics.ids() {
        let name = topics.name(topic);
        let value = match topics.source(topic).compute().await {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(topic = name, %error, "history: cannot read the topic; this minute has no point");
                continue;
            }
        };
        match insight.record_history(name, end, &value.payload).await {
            Ok(added) => tracing::debug!(topic = name, %end, added, "history point"),
            Err(error) => tracing::warn!(topic = name, %error, "history: cannot write the point"),
        }
    }
}

async fn prune(topics: &Topics, insight: &InsightService, now: DateTime<Utc>) {
    for topic in topics.ids() {
        if let Err(error) = insight.prune_history(topics.name(topic), now).await {
            tracing::warn!(topic = topics.name(topic), %error, "history: cannot prune");
        }
    }
}
