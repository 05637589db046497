//! Stats per topic, one function each, read from the counters the database maintains in
//! every writing transaction (see the migrations): the cost is a handful of rows whatever
//! the size of the tables.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::{ApprovalStats, ConversationStats, TaskStats};

use crate::db::{Database, db_run};
use crate::error::ServiceResult;
use crate::schema::stats_counters;

/// Counts per bucket for one topic, summed over shards.
async fn counts(db: &Database, topic: &'static str) -> ServiceResult<Vec<(String, u64)>> {
    let rows: Vec<(String, i64)> = db
        .read(async |conn| {
            db_run!(conn, |c| stats_counters::table
                .filter(stats_counters::topic.eq(topic))
                .select((stats_counters::bucket, stats_counters::n))
                .load(c)
                .await)
        })
        .await?;
    let mut sums: Vec<(String, i64)> = Vec::new();
    for (bucket, n) in rows {
        match sums.iter_mut().find(|(b, _)| *b == bucket) {
            Some((_, sum)) => *sum += n,
            None => sums.push((bucket, n)),
        }
    }
    Ok(sums.into_iter().map(|(b, n)| (b, n.max(0) as u64)).collect())
}

fn get(counts: &[(String, u64)], bucket: &str) -> u64 {
    counts.iter().find(|(b, _)| b == bucket).map_or(0, |(_, n)| *n)
}

/// `GET /api/v1/tasks/stats`, `stats:tasks`.
pub async fn task_stats(db: &Database) -> ServiceResult<TaskStats> {
    let c = counts(db, "tasks").await?;
    let (pending, in_progress, completed) =
        (get(&c, "pending"), get(&c, "in_progress"), get(&c, "completed"));
    Ok(TaskStats { pending, in_progress, completed, total: pending + in_progress + completed })
}

/// `GET /api/v1/conversations/stats`, `stats:conversations`.
pub async fn conversation_stats(db: &Database) -> ServiceResult<ConversationStats> {
    let c = counts(db, "conversations").await?;
    let (active, escalated, resolved) = (get(&c, "active"), get(&c, "escalated"), get(&c, "resolved"));
    Ok(ConversationStats { active, escalated, resolved, total: active + escalated + resolved })
}

/// `GET /api/v1/approvals/stats`, `stats:approvals`.
pub async fn approval_stats(db: &Database) -> ServiceResult<ApprovalStats> {
    let c = counts(db, "approvals").await?;
    let (pending, approved, rejected, executed) =
        (get(&c, "pending"), get(&c, "approved"), get(&c, "rejected"), get(&c, "executed"));
    Ok(ApprovalStats {
        pending,
        approved,
        rejected,
        executed,
        total: pending + approved + rejected + executed,
    })
}
