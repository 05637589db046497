//! The event log (transactional outbox): every event is written in the transaction of the
//! change that caused it, so an event exists if and only if its change committed.
//! Services publish the returned envelopes on the bus after the commit.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::Actor;
use domain_events::{DomainEvent, EventEnvelope};

use crate::error::ServiceError;
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
    pub(crate) fn into_envelope(self) -> Result<EventEnvelope, ServiceError> {
        Ok(EventEnvelope {
            seq: self.seq,
            at: utc(self.created_at),
            actor: serde_json::from_str(&self.actor).map_err(|e| ServiceError::Internal(Box::new(e)))?,
            event: serde_json::from_str(&self.event).map_err(|e| ServiceError::Internal(Box::new(e)))?,
        })
    }
}

pub(crate) fn new_event_row(
    actor: &Actor,
    event: &DomainEvent,
    at: NaiveDateTime,
) -> Result<NewEventRow, ServiceError> {
    Ok(NewEventRow {
        name: event.name(),
        actor: serde_json::to_string(actor).map_err(|e| ServiceError::Internal(Box::new(e)))?,
        event: serde_json::to_string(event).map_err(|e| ServiceError::Internal(Box::new(e)))?,
        created_at: at,
    })
}

/// Appends `$events` (a `Vec<DomainEvent>`) to the log on `$conn`, inside the current
/// transaction, and evaluates to the envelopes to publish once it commits.
macro_rules! record_events {
    ($conn:expr, $actor:expr, $at:expr, $events:expr) => {{
        let mut envelopes = Vec::new();
        for event in $events {
            let row = $crate::outbox::new_event_row($actor, &event, $at)?;
            let seq: i64 = diesel::insert_into($crate::schema::events::table)
                .values(&row)
                .returning($crate::schema::events::seq)
                .get_result($conn)
                .await?;
            envelopes.push(domain_events::EventEnvelope {
                seq,
                at: $crate::outbox::utc($at),
                actor: $actor.clone(),
                event,
            });
        }
        envelopes
    }};
}

pub(crate) use record_events;

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
    pub async fn after(&self, after: i64, limit: i64) -> crate::error::ServiceResult<Vec<EventEnvelope>> {
        let rows: Vec<EventRow> = crate::db::read!(self.db, |conn| events::table
            .filter(events::seq.gt(after))
            .order(events::seq)
            .limit(limit)
            .select(EventRow::as_select())
            .load(conn)
            .await
            .map_err(ServiceError::from))?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// Deletes events logged before `before`; returns how many.
    pub async fn prune(&self, before: DateTime<Utc>) -> crate::error::ServiceResult<usize> {
        let before = before.naive_utc();
        crate::db::write_tx!(self.db, |conn| Ok(diesel::delete(
            events::table.filter(events::created_at.lt(before))
        )
        .execute(conn)
        .await?))
    }
}
