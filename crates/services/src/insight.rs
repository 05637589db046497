//! Live operations insight (contract section 9): task counts per department, what is
//! overdue, and each stats topic's value per minute (the history).
//!
//! Every read costs the same whatever the size of the tables: department counts come from
//! counters the database keeps in the writing transaction; the oldest open task and the
//! oldest escalation are the first entries of partial indexes; overdue tasks are the open
//! count (kept) minus the open tasks younger than the deadline (a range of the partial
//! index no longer than the open tasks created within one SLA period), or counted directly
//! when they are the fewer. Deadlines follow the
//! database's clock, read in the same statement, so every instance reaches the same value.
//!
//! Reason to change: what section 9 reports, or how it is read. Never depends on HTTP,
//! WebSocket or the topics' machinery (the gateway registers the topics on these reads).

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamp};
use diesel_async::RunQueryDsl;
use domain_events::model::{DepartmentStats, SlaStats};

use crate::db::{Database, DatabaseKind, db_run};
use crate::error::{ServiceError, ServiceResult, ValidationError};
use crate::outbox::utc;
use crate::schema::{cluster_settings, stats_history};

pub mod clock;

pub use clock::{HistoryBucket, TaskSla};

/// How long history points are kept.
pub const HISTORY_RETENTION: TimeDelta = TimeDelta::days(7);

/// The most payload bytes one history answer carries; past it the answer stops early and
/// says so (`truncated`), and the client asks again from its last point.
pub const HISTORY_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Rows read per round trip while answering a history request.
const HISTORY_PAGE: i64 = 500;

/// The `cluster_settings` row that holds `TASK_SLA_SECONDS`.
const TASK_SLA_SETTING: &str = "task_sla_seconds";

/// `stats:sla`'s value and when it changes with time alone (the next open task to cross its
/// deadline), measured on the database's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaReading {
    /// The value.
    pub stats: SlaStats,
    /// It changes by itself after this long, unless an event changes it first.
    pub changes_in: Option<Duration>,
}

/// One point of a topic's history: its value at the end of a minute in which it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPoint {
    /// The minute's end.
    pub at: DateTime<Utc>,
    /// The topic's payload (JSON), as it was published.
    pub payload: String,
}

/// `GET /api/v1/stats/history`'s points, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The points.
    pub points: Vec<HistoryPoint>,
    /// The answer stopped at [`HISTORY_MAX_BYTES`]; more points follow the last one.
    pub truncated: bool,
}

/// An instance configured with a `TASK_SLA_SECONDS` other than its cluster's.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// The cluster stored another value.
    #[error(
        "TASK_SLA_SECONDS is {configured} here, but this PostgreSQL database's instances use {stored}: \
         a cluster uses one value (start this instance with TASK_SLA_SECONDS={stored}, or stop every \
         instance and run `UPDATE cluster_settings SET value = '{configured}' WHERE name = '{TASK_SLA_SETTING}'`)"
    )]
    TaskSlaMismatch {
        /// This instance's value.
        configured: u64,
        /// The cluster's value.
        stored: String,
    },
    /// The database could not be asked.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Section 9's reads and the history's writes, on one database with one SLA.
#[derive(Clone, Debug)]
pub struct InsightService {
    db: Database,
    task_sla: TaskSla,
}

#[derive(QueryableByName)]
struct DepartmentRow {
    #[diesel(sql_type = Text)]
    department: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct SlaRow {
    #[diesel(sql_type = Timestamp)]
    now: NaiveDateTime,
    #[diesel(sql_type = BigInt)]
    open: i64,
    #[diesel(sql_type = BigInt)]
    young: i64,
    #[diesel(sql_type = BigInt)]
    overdue: i64,
    #[diesel(sql_type = Nullable<Timestamp>)]
    oldest_open: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    oldest_young: Option<NaiveDateTime>,
    #[diesel(sql_type = BigInt)]
    escalated: i64,
    #[diesel(sql_type = Nullable<Timestamp>)]
    oldest_escalation: Option<NaiveDateTime>,
}

#[derive(QueryableByName)]
struct NowRow {
    #[diesel(sql_type = Timestamp)]
    now: NaiveDateTime,
}

/// The first `limit` departments (by name, code-point order) with any task, and their
/// counts per status. `department` is `COLLATE "C"` on PostgreSQL; SQLite's BINARY
/// collation is code-point order for UTF-8.
const DEPARTMENTS_POSTGRES: &str = "\
    SELECT department, status, sum(n)::BIGINT AS n FROM department_counters \
    WHERE department IN (SELECT department FROM department_counters GROUP BY department \
                         HAVING sum(n) > 0 ORDER BY department LIMIT $1) \
    GROUP BY department, status";
const DEPARTMENTS_SQLITE: &str = "\
    SELECT department, status, sum(n) AS n FROM department_counters \
    WHERE department IN (SELECT department FROM department_counters GROUP BY department \
                         HAVING sum(n) > 0 ORDER BY department LIMIT ?) \
    GROUP BY department, status";

/// One statement (one snapshot, one clock reading): the open count the counters keep, the
/// open tasks younger than the deadline and the oldest of them, the oldest open task, the
/// escalated count and the oldest escalation. The open tasks on each side of the deadline are
/// counted up to a cap (the second parameter): whichever side is under it gives the overdue
/// count exactly (`clock::overdue`), else the cap doubles — so the cost follows the smaller
/// side, never more than the tasks created within one SLA period. (SQLite's planner prefers `(state, id)` for
/// the last one, a scan of every escalated conversation: it is told the partial index.)
const SLA_POSTGRES: &str = "\
    SELECT c.now AS now, \
      (SELECT coalesce(sum(n), 0)::BIGINT FROM stats_counters \
       WHERE topic = 'tasks' AND bucket IN ('pending', 'in_progress')) AS open, \
      (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status <> 'completed' AND created_at > c.cutoff \
                             LIMIT $2) AS y) AS young, \
      (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status <> 'completed' AND created_at <= c.cutoff \
                             LIMIT $2) AS o) AS overdue, \
      (SELECT min(created_at) FROM tasks WHERE status <> 'completed') AS oldest_open, \
      (SELECT min(created_at) FROM tasks WHERE status <> 'completed' AND created_at > c.cutoff) AS oldest_young, \
      (SELECT coalesce(sum(n), 0)::BIGINT FROM stats_counters \
       WHERE topic = 'conversations' AND bucket = 'escalated') AS escalated, \
      (SELECT min(escalated_at) FROM conversations WHERE state = 'escalated') AS oldest_escalation \
    FROM (SELECT now() AT TIME ZONE 'UTC' AS now, \
                 (now() AT TIME ZONE 'UTC') - make_interval(secs => $1) AS cutoff) AS c";
const SLA_SQLITE: &str = "\
    SELECT c.now AS now, \
      (SELECT coalesce(sum(n), 0) FROM stats_counters \
       WHERE topic = 'tasks' AND bucket IN ('pending', 'in_progress')) AS open, \
      (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status <> 'completed' AND created_at > c.cutoff \
                             LIMIT ?2) AS y) AS young, \
      (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status <> 'completed' AND created_at <= c.cutoff \
                             LIMIT ?2) AS o) AS overdue, \
      (SELECT min(created_at) FROM tasks WHERE status <> 'completed') AS oldest_open, \
      (SELECT min(created_at) FROM tasks WHERE status <> 'completed' AND created_at > c.cutoff) AS oldest_young, \
      (SELECT coalesce(sum(n), 0) FROM stats_counters \
       WHERE topic = 'conversations' AND bucket = 'escalated') AS escalated, \
      (SELECT min(escalated_at) FROM conversations INDEXED BY conversations_escalated_at \
       WHERE state = 'escalated') AS oldest_escalation \
    FROM (SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now, \
                 strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%f seconds', ?1)) AS cutoff) AS c";

impl InsightService {
    /// Reads on `db`, with tasks overdue `task_sla` after their creation.
    pub fn new(db: Database, task_sla: TaskSla) -> Self {
        Self { db, task_sla }
    }

    /// When an open task becomes overdue.
    pub fn task_sla(&self) -> TaskSla {
        self.task_sla
    }

    /// `GET /api/v1/tasks/stats/departments`, `stats:departments`.
    pub async fn department_stats(&self) -> ServiceResult<DepartmentStats> {
        let sql = match self.db.kind() {
            DatabaseKind::Postgres => DEPARTMENTS_POSTGRES,
            DatabaseKind::Sqlite => DEPARTMENTS_SQLITE,
        };
        let limit = DepartmentStats::MAX_DEPARTMENTS as i64 + 1;
        let rows: Vec<DepartmentRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| diesel::sql_query(sql).bind::<BigInt, _>(limit).load(c).await)
            })
            .await?;
        Ok(clock::departments(rows.into_iter().map(|r| (r.department, r.status, r.n))))
    }

    /// `stats:sla`'s value and when it next changes with time alone.
    pub async fn sla(&self) -> ServiceResult<SlaReading> {
        let sla_seconds = self.task_sla.duration().as_secs_f64();
        let mut cap = clock::FIRST_COUNT_CAP;
        loop {
            let sql = match self.db.kind() {
                DatabaseKind::Postgres => SLA_POSTGRES,
                DatabaseKind::Sqlite => SLA_SQLITE,
            };
            let row: SlaRow = self
                .db
                .read(async |conn| {
                    db_run!(conn, |c| diesel::sql_query(sql)
                        .bind::<Double, _>(sla_seconds)
                        .bind::<BigInt, _>(cap)
                        .get_result(c)
                        .await)
                })
                .await?;
            let Some(overdue_tasks) = clock::overdue(row.open, row.young, row.overdue, cap) else {
                cap = cap.saturating_mul(4);
                continue;
            };
            let stats = SlaStats {
                overdue_tasks,
                oldest_open_task_created_at: row.oldest_open.map(utc),
                escalated_conversations: u64::try_from(row.escalated).unwrap_or(0),
                oldest_escalation_at: row.oldest_escalation.map(utc),
            };
            let changes_in = clock::sla_changes_in(row.now, self.task_sla, row.oldest_young);
            return Ok(SlaReading { stats, changes_in });
        }
    }

    /// `GET /api/v1/stats/sla`.
    pub async fn sla_stats(&self) -> ServiceResult<SlaStats> {
        Ok(self.sla().await?.stats)
    }

    /// The database's clock (UTC).
    pub async fn database_now(&self) -> ServiceResult<DateTime<Utc>> {
        let sql = match self.db.kind() {
            DatabaseKind::Postgres => "SELECT now() AT TIME ZONE 'UTC' AS now",
            DatabaseKind::Sqlite => "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now",
        };
        let row: NowRow =
            self.db.read(async |conn| db_run!(conn, |c| diesel::sql_query(sql).get_result(c).await)).await?;
        Ok(utc(row.now))
    }

    /// On PostgreSQL, makes this instance's `TASK_SLA_SECONDS` the cluster's if none is
    /// stored yet, and refuses it if the cluster stored another. SQLite serves one
    /// instance: nothing to agree on.
    pub async fn agree_on_task_sla(&self) -> Result<(), SettingError> {
        if self.db.kind() != DatabaseKind::Postgres {
            return Ok(());
        }
        let configured = self.task_sla.duration().as_secs();
        let mine = configured.to_string();
        let stored: String = self
            .db
            .write(async |conn| {
                db_run!(conn, |c| {
                    diesel::insert_into(cluster_settings::table)
                        .values((
                            cluster_settings::name.eq(TASK_SLA_SETTING),
                            cluster_settings::value.eq(&mine),
                        ))
                        .on_conflict_do_nothing()
                        .execute(c)
                        .await?;
                    cluster_settings::table
                        .find(TASK_SLA_SETTING)
                        .select(cluster_settings::value)
                        .first::<String>(c)
                        .await
                })
            })
            .await?;
        if stored == mine { Ok(()) } else { Err(SettingError::TaskSlaMismatch { configured, stored }) }
    }

    /// Writes `topic`'s value at the end of the minute ending at `minute`, unless it equals
    /// the last point before it (the value did not change in that minute) or another
    /// instance wrote that minute first. Returns whether a point was added.
    pub async fn record_history(
        &self,
        topic: &str,
        minute: DateTime<Utc>,
        payload: &str,
    ) -> ServiceResult<bool> {
        let minute = minute.naive_utc();
        let last: Option<String> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| stats_history::table
                    .filter(stats_history::topic.eq(topic))
                    .filter(stats_history::minute.lt(minute))
                    .order(stats_history::minute.desc())
                    .select(stats_history::payload)
                    .first(c)
                    .await
                    .optional())
            })
            .await?;
        if last.as_deref() == Some(payload) {
            return Ok(false);
        }
        let added = self
            .db
            .write(async |conn| {
                db_run!(conn, |c| diesel::insert_into(stats_history::table)
                    .values((
                        stats_history::topic.eq(topic),
                        stats_history::minute.eq(minute),
                        stats_history::payload.eq(payload),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)
                    .await)
            })
            .await?;
        Ok(added > 0)
    }

    /// Deletes `topic`'s points older than [`HISTORY_RETENTION`] before `now`, but never
    /// the newest one before that horizon (the start of every chart that begins there).
    pub async fn prune_history(&self, topic: &str, now: DateTime<Utc>) -> ServiceResult<usize> {
        let horizon = (now - HISTORY_RETENTION).naive_utc();
        self.db
            .write(async |conn| {
                db_run!(conn, |c| {
                    let keep: Option<NaiveDateTime> = stats_history::table
                        .filter(stats_history::topic.eq(topic))
                        .filter(stats_history::minute.le(horizon))
                        .order(stats_history::minute.desc())
                        .select(stats_history::minute)
                        .first(c)
                        .await
                        .optional()?;
                    let Some(keep) = keep else { return Ok(0) };
                    diesel::delete(
                        stats_history::table
                            .filter(stats_history::topic.eq(topic))
                            .filter(stats_history::minute.lt(keep)),
                    )
                    .execute(c)
                    .await
                })
            })
            .await
    }

    /// `topic`'s points from `since` (contract section 9): the last point at or before
    /// `since`, then every later one, oldest first, up to [`HISTORY_MAX_BYTES`] of payload.
    /// Whether `topic` exists is the caller's to check.
    pub async fn history(&self, topic: &str, since: DateTime<Utc>) -> ServiceResult<History> {
        if topic.is_empty() || topic.len() > 64 {
            return Err(ValidationError::new("topic", "give a stats topic").into());
        }
        let since = since.naive_utc();
        let start: Option<(NaiveDateTime, String)> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| stats_history::table
                    .filter(stats_history::topic.eq(topic))
                    .filter(stats_history::minute.le(since))
                    .order(stats_history::minute.desc())
                    .select((stats_history::minute, stats_history::payload))
                    .first(c)
                    .await
                    .optional())
            })
            .await?;
        let mut history = History::default();
        let mut bytes = 0;
        let mut after = since;
        if let Some((at, payload)) = start {
            bytes += payload.len();
            history.points.push(HistoryPoint { at: utc(at), payload });
        }
        loop {
            let page: Vec<(NaiveDateTime, String)> = self
                .db
                .read(async |conn| {
                    db_run!(conn, |c| stats_history::table
                        .filter(stats_history::topic.eq(topic))
                        .filter(stats_history::minute.gt(after))
                        .order(stats_history::minute)
                        .limit(HISTORY_PAGE)
                        .select((stats_history::minute, stats_history::payload))
                        .load(c)
                        .await)
                })
                .await?;
            let full = page.len() as i64 == HISTORY_PAGE;
            for (at, payload) in page {
                if bytes + payload.len() > HISTORY_MAX_BYTES {
                    history.truncated = true;
                    return Ok(history);
                }
                bytes += payload.len();
                after = at;
                history.points.push(HistoryPoint { at: utc(at), payload });
            }
            if !full {
                return Ok(history);
            }
        }
    }
}
