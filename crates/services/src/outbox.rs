//! The event log (transactional outbox): every event is written in the transaction of the
//! change that caused it, so an event exists if and only if its change committed.
//! Services publish the returned envelopes on the bus after the commit.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::Actor;
use domain_events::{DomainEvent, EventEnvelope, EventPublisher};

use crate::db::{Conn, Database, Work, db_run};
use crate::error::{ServiceError, ServiceResult};
use crate::schema::events;

/// The current time, at the microsecond precision both databases keep.
pub(crate) fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond((now.nanosecond() / 1_000) * 1_000).unwrap_or(now)
}

use chrono::Timelike;

pub(crate) fn utc(at: NaiveDateTime) -> DateTime<Utc> {
    at.and_utc()
}

#[derive(Insertable)]
#[diesel(table_name = events)]
pub(crate) struct NewEventRow {
    pub name: &'static str,
    pub actor: String,
    pub event: String,
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = events)]
pub(crate) struct EventRow {
    pub seq: i64,
    pub actor: String,
    pub event: String,
    pub created_at: NaiveDateTime,
}

impl EventRow {
    /// Reads a logged event back into an envelope.
    fn into_envelope(self) -> Result<EventEnvelope, ServiceError> {
        Ok(EventEnvelope {
            seq: self.seq,
            at: utc(self.created_at),
            actor: serde_json::from_str(&self.actor).map_err(|e| ServiceError::Internal(Box::new(e)))?,
            event: serde_json::from_str(&self.event).map_err(|e| ServiceError::Internal(Box::new(e)))?,
        })
    }
}

fn new_event_row(actor: &Actor, event: &DomainEvent, at: NaiveDateTime) -> Result<NewEventRow, ServiceError> {
    Ok(NewEventRow {
        name: event.name(),
        actor: serde_json::to_string(actor).map_err(|e| ServiceError::Internal(Box::new(e)))?,
        event: serde_json::to_string(event).map_err(|e| ServiceError::Internal(Box::new(e)))?,
        created_at: at,
    })
}

/// Appends `events` to the log on `conn`, inside the current transaction, and returns the
/// envelopes to publish once it commits.
pub(crate) async fn record_events(
    conn: &mut Conn<'_>,
    actor: &Actor,
    at: NaiveDateTime,
    events: impl IntoIterator<Item = DomainEvent>,
) -> ServiceResult<Vec<EventEnvelope>> {
    let mut envelopes = Vec::new();
    for event in events {
        let row = new_event_row(actor, &event, at)?;
        let seq: i64 = db_run!(conn, |c| diesel::insert_into(events::table)
            .values(&row)
            .returning(events::seq)
            .get_result(c)
            .await)?;
        envelopes.push(EventEnvelope { seq, at: utc(at), actor: actor.clone(), event });
    }
    Ok(envelopes)
}

/// Runs `change` — whose value is the record and the envelopes from [`record_events`] — in
/// a write transaction, then announces the envelopes on `publisher` and returns the record.
/// The one way a service commits and announces:
///
/// - committed and acknowledged: the envelopes are published;
/// - refused or rolled back (an `Err` from `change`): nothing is announced;
/// - ready to commit, but the commit's acknowledgement never came (the connection died
///   during `COMMIT`): the change may have committed, and the caller gets the error (503).
///   The publisher is told the numbers of the rows in doubt
///   ([`domain_events::EventPublisher::commit_unknown`]) so a fan-out that reads the outbox
///   announces them if they are there, on this instance too.
pub(crate) async fn commit_and_announce<T: Send>(
    db: &Database,
    publisher: &dyn EventPublisher,
    change: impl for<'r> Work<'r, (T, Vec<EventEnvelope>)> + Send,
) -> ServiceResult<T> {
    let mut ready_to_commit: Option<Vec<i64>> = None;
    let ready = &mut ready_to_commit;
    let result = db
        .write(async |conn| {
            let (record, events) = change(conn).await?;
            *ready = Some(events.iter().map(|e| e.seq).collect());
            Ok((record, events))
        })
        .await;
    match result {
        Ok((record, events)) => {
            if !events.is_empty() {
                publisher.publish(events);
            }
            Ok(record)
        }
        Err(error) => {
            if let Some(seqs) = ready_to_commit.filter(|seqs| !seqs.is_empty()) {
                tracing::warn!(%error, ?seqs, "a commit's outcome is unknown; its events are announced if it committed");
                publisher.commit_unknown(&seqs);
            }
            Err(error)
        }
    }
}

/// Where pruning stands between two runs: the oldest transaction still running when the
/// previous run began (PostgreSQL); see [`EventLog::prune`].
#[derive(Debug, Clone, Default)]
pub struct PruneHorizon(Option<String>);

/// Reads and prunes the event log.
#[derive(Clone)]
pub struct EventLog {
    db: crate::db::Database,
}

impl EventLog {
    /// The log of `db`.
    pub fn new(db: crate::db::Database) -> Self {
        Self { db }
    }

    /// Up to `limit` logged events with `seq` above `after`, oldest first.
    pub async fn after(&self, after: i64, limit: i64) -> ServiceResult<Vec<EventEnvelope>> {
        let rows: Vec<EventRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| events::table
                    .filter(events::seq.gt(after))
                    .order(events::seq)
                    .limit(limit)
                    .select(EventRow::as_select())
                    .load(c)
                    .await)
            })
            .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// Deletes events logged before `before`; returns how many.
    ///
    /// On PostgreSQL other instances read the log by sequence number, so pruning keeps
    /// their reading sound (crates/pg-fanout/src/cursor.rs): it removes a *prefix* of the log
    /// and records in `events_pruned` the number below which rows may be gone; it spares
    /// the newest row; and it spares every row whose transaction had not ended when the
    /// previous pruning began (`horizon`), so a connected listener, which reads every
    /// second, has read a row before pruning may take it. The first call only sets the
    /// horizon.
    pub async fn prune(&self, before: DateTime<Utc>, horizon: &mut PruneHorizon) -> ServiceResult<usize> {
        let before = before.naive_utc();
        match &*self.db.backend {
            crate::db::Backend::Sqlite { writer, .. } => {
                let mut conn = writer.get().await.map_err(ServiceError::from)?;
                Ok(diesel::delete(events::table.filter(events::created_at.lt(before)))
                    .execute(&mut *conn)
                    .await?)
            }
            crate::db::Backend::Postgres { pool, .. } => {
                use diesel::sql_types::{BigInt, Text, Timestamp};
                #[derive(QueryableByName)]
                struct Pruned {
                    #[diesel(sql_type = Text)]
                    xmin: String,
                    #[diesel(sql_type = BigInt)]
                    deleted: i64,
                }
                // One statement (one snapshot): the next horizon, the first row that must
                // stay, the prefix before it, and the floor moved up when anything went.
                let previous = horizon.0.clone().unwrap_or_else(|| "0".to_owned());
                let mut conn = pool.get().await.map_err(ServiceError::from)?;
                let pruned: Pruned = diesel::sql_query(
                    "WITH keep AS (\
                         SELECT coalesce(\
                             (SELECT seq FROM events WHERE created_at >= $1 OR tx_id >= $2::xid8 \
                              ORDER BY seq LIMIT 1), \
                             (SELECT max(seq) FROM events)) AS seq\
                     ), gone AS (\
                         DELETE FROM events WHERE seq < (SELECT seq FROM keep) RETURNING seq\
                     ), floor AS (\
                         UPDATE events_pruned SET below = greatest(below, (SELECT seq FROM keep)) \
                         WHERE EXISTS (SELECT 1 FROM gone)\
                     ) \
                     SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin, \
                            (SELECT count(*) FROM gone) AS deleted",
                )
                .bind::<Timestamp, _>(before)
                .bind::<Text, _>(&previous)
                .get_result(&mut *conn)
                .await?;
                horizon.0 = Some(pruned.xmin);
                Ok(usize::try_from(pruned.deleted).unwrap_or(0))
            }
        }
    }
}
