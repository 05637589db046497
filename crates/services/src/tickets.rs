//! Single-use WebSocket tickets: a short-lived secret that stands for a logged-in user once,
//! so long-lived tokens stay out of URLs (and out of proxy logs and browser history).

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::Actor;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{Database, db_run};
use crate::error::{ServiceError, ServiceResult};
use crate::outbox::{now, utc};
use crate::schema::ws_tickets;

/// How long a ticket may wait to be used.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

#[derive(Insertable)]
#[diesel(table_name = ws_tickets)]
struct NewTicket<'a> {
    ticket_hash: &'a str,
    user_id: i64,
    username: &'a str,
    role: &'static str,
    session_expires_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    token_issued_at_ms: i64,
}

/// What a ticket stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketGrant {
    /// The user it was issued to, with the role they had.
    pub actor: Actor,
    /// When the connection it opens must end (the issuing token's expiry).
    pub session_expires_at: DateTime<Utc>,
    /// The issuing token's `iat`, in milliseconds: the ticket is retired with its token.
    pub token_issued_at_ms: i64,
}

/// Issues and redeems tickets, in the database so any instance can redeem them.
#[derive(Clone)]
pub struct TicketService {
    db: Database,
    ttl: Duration,
}

impl TicketService {
    /// Tickets on `db`, valid for [`TICKET_TTL`].
    pub fn new(db: Database) -> Self {
        Self { db, ttl: TICKET_TTL }
    }

    /// The same, with another validity (for tests).
    pub fn with_ttl(self, ttl: Duration) -> Self {
        Self { ttl, ..self }
    }

    /// A new ticket for `actor`, valid for the service's TTL but never beyond
    /// `session_expires_at` (the issuing token's expiry), which is also when the connection it
    /// opens ends. `token_issued_at_ms` is the issuing token's `iat`. Returns the ticket and
    /// its expiry.
    pub async fn issue(
        &self,
        actor: &Actor,
        session_expires_at: DateTime<Utc>,
        token_issued_at_ms: i64,
    ) -> ServiceResult<(String, DateTime<Utc>)> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let ticket: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let hash = digest(&ticket);
        let at = now();
        let expires_at = (at + chrono::Duration::from_std(self.ttl).unwrap_or_default())
            .min(session_expires_at.naive_utc());
        let row = NewTicket {
            ticket_hash: &hash,
            user_id: actor.user_id,
            username: &actor.username,
            role: actor.role.as_str(),
            session_expires_at: session_expires_at.naive_utc(),
            expires_at,
            token_issued_at_ms,
        };
        self.db
            .write(async |conn| {
                db_run!(conn, |c| {
                    diesel::delete(ws_tickets::table.filter(ws_tickets::expires_at.lt(at)))
                        .execute(c)
                        .await?;
                    diesel::insert_into(ws_tickets::table).values(&row).execute(c).await
                })
            })
            .await?;
        Ok((ticket, utc(expires_at)))
    }

    /// What a ticket stands for, without using it up (`None`: unknown, used or expired), so
    /// the upgrade's other checks can run before it is spent with [`TicketService::redeem`].
    pub async fn peek(&self, ticket: &str) -> ServiceResult<Option<TicketGrant>> {
        if ticket.len() != 64 {
            return Ok(None);
        }
        let hash = digest(ticket);
        let at = now();
        let row: Option<GrantRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| ws_tickets::table
                    .filter(ws_tickets::ticket_hash.eq(&hash))
                    .filter(ws_tickets::expires_at.gt(at))
                    .select(GRANT_COLUMNS)
                    .first(c)
                    .await
                    .optional())
            })
            .await?;
        row.map(grant).transpose()
    }

    /// Uses a ticket up: what it stands for, or `None` for an unknown, used or expired ticket.
    /// Of two concurrent redemptions, one wins.
    pub async fn redeem(&self, ticket: &str) -> ServiceResult<Option<TicketGrant>> {
        if ticket.len() != 64 {
            return Ok(None);
        }
        let hash = digest(ticket);
        let at = now();
        let row: Option<GrantRow> = self
            .db
            .write(async |conn| {
                db_run!(conn, |c| diesel::delete(
                    ws_tickets::table
                        .filter(ws_tickets::ticket_hash.eq(&hash))
                        .filter(ws_tickets::expires_at.gt(at)),
                )
                .returning(GRANT_COLUMNS)
                .get_result(c)
                .await
                .optional())
            })
            .await?;
        row.map(grant).transpose()
    }
}

type GrantRow = (i64, String, String, NaiveDateTime, i64);

const GRANT_COLUMNS: (
    ws_tickets::user_id,
    ws_tickets::username,
    ws_tickets::role,
    ws_tickets::session_expires_at,
    ws_tickets::token_issued_at_ms,
) = (
    ws_tickets::user_id,
    ws_tickets::username,
    ws_tickets::role,
    ws_tickets::session_expires_at,
    ws_tickets::token_issued_at_ms,
);

fn grant((user_id, username, role, session, token_issued_at_ms): GrantRow) -> ServiceResult<TicketGrant> {
    let role = role.parse().map_err(|e| ServiceError::Internal(Box::new(e)))?;
    Ok(TicketGrant {
        actor: Actor { user_id, username, role },
        session_expires_at: utc(session),
        token_issued_at_ms,
    })
}

fn digest(ticket: &str) -> String {
    Sha256::digest(ticket.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
