//! Conversations with guests: `active ⇄ escalated → resolved`.

use std::sync::Arc;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::{Actor, Conversation, ConversationState, ConversationStats};
use domain_events::{DomainEvent, EventPublisher};
use serde::Deserialize;

use crate::db::{Database, exists, read};
use crate::error::{ServiceError, ServiceResult, ValidationError};
use crate::outbox::{commit_and_announce, now, record_events, utc};
use crate::schema::conversations;
use crate::validate::{self, Page, PageRequest, limits};

/// `POST /api/v1/conversations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewConversation {
    /// The guest's name.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 200,
            pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
        )
    )]
    pub guest_name: String,
    /// Where it happens (`email`, `phone`, `chat`, …).
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 64,
            pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
        )
    )]
    pub channel: String,
    /// What it is about.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 1000,
            pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
        )
    )]
    pub subject: String,
}

/// `PATCH /api/v1/conversations/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationChanges {
    /// New subject.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 1000,
            pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
        )
    )]
    pub subject: Option<String>,
    /// New guest name.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 200,
            pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
        )
    )]
    pub guest_name: Option<String>,
    /// New channel.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 64,
            pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
        )
    )]
    pub channel: Option<String>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = conversations)]
struct ConversationRow {
    id: i64,
    guest_name: String,
    channel: String,
    subject: String,
    state: String,
    escalation_reason: Option<String>,
    created_by: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    resolved_at: Option<NaiveDateTime>,
    escalated_at: Option<NaiveDateTime>,
}

impl TryFrom<ConversationRow> for Conversation {
    type Error = ServiceError;
    fn try_from(row: ConversationRow) -> Result<Self, Self::Error> {
        Ok(Conversation {
            id: row.id,
            guest_name: row.guest_name,
            channel: row.channel,
            subject: row.subject,
            state: row.state.parse().map_err(|e| ServiceError::Internal(Box::new(e)))?,
            escalation_reason: row.escalation_reason,
            created_by: row.created_by,
            created_at: utc(row.created_at),
            updated_at: utc(row.updated_at),
            resolved_at: row.resolved_at.map(utc),
            escalated_at: row.escalated_at.map(utc),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = conversations)]
struct NewConversationRow<'a> {
    guest_name: &'a str,
    channel: &'a str,
    subject: &'a str,
    state: &'static str,
    created_by: &'a str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(AsChangeset)]
#[diesel(table_name = conversations)]
struct ConversationChangeset {
    subject: Option<String>,
    guest_name: Option<String>,
    channel: Option<String>,
    updated_at: NaiveDateTime,
}

/// Opens, edits, escalates and resolves guest conversations.
#[derive(Clone)]
pub struct ConversationService {
    db: Database,
    publisher: Arc<dyn EventPublisher>,
}

/// A guarded update of conversation `$id` allowed only from `$from` states; evaluates to
/// the updated conversation, or returns the 404/409 that explains why nothing changed.
macro_rules! transition {
    ($conn:expr, $id:expr, $from:expr, $set:expr, $action:literal) => {{
        let from: Vec<&str> = $from.iter().map(|s: &ConversationState| s.as_str()).collect();
        let updated: Option<ConversationRow> =
            diesel::update(conversations::table.find($id).filter(conversations::state.eq_any(from)))
                .set($set)
                .returning(ConversationRow::as_returning())
                .get_result($conn)
                .await
                .optional()?;
        match updated {
            Some(row) => Conversation::try_from(row)?,
            None if exists!($conn, conversations, $id) => {
                let state: String =
                    conversations::table.find($id).select(conversations::state).first($conn).await?;
                return Err(ServiceError::Conflict(format!(
                    concat!("cannot ", $action, " conversation {}: it is {}"),
                    $id, state
                )));
            }
            None => return Err(ServiceError::not_found("conversation", $id)),
        }
    }};
}

impl ConversationService {
    /// A service writing to `db` and announcing on `publisher`.
    pub fn new(db: Database, publisher: Arc<dyn EventPublisher>) -> Self {
        Self { db, publisher }
    }

    /// Opens a conversation (`active`). Emits `conversation.created`.
    pub async fn create(&self, actor: &Actor, input: NewConversation) -> ServiceResult<Conversation> {
        let guest_name = validate::required_text("guestName", &input.guest_name, limits::NAME)?;
        let channel = validate::required_text("channel", &input.channel, limits::SHORT_TEXT)?;
        let subject = validate::required_text("subject", &input.subject, limits::LINE)?;
        let at = now();
        let row = NewConversationRow {
            guest_name: &guest_name,
            channel: &channel,
            subject: &subject,
            state: ConversationState::Active.as_str(),
            created_by: &actor.username,
            created_at: at,
            updated_at: at,
        };
        commit_and_announce!(self.db, self.publisher, |conn| {
            let conversation = Conversation::try_from(
                diesel::insert_into(conversations::table)
                    .values(&row)
                    .returning(ConversationRow::as_returning())
                    .get_result(conn)
                    .await?,
            )?;
            let events =
                record_events!(conn, actor, at, [DomainEvent::ConversationCreated(conversation.clone())]);
            Ok((conversation, events))
        })
    }

    /// One conversation.
    pub async fn get(&self, id: i64) -> ServiceResult<Conversation> {
        let row: Option<ConversationRow> = read!(self.db, |conn| conversations::table
            .find(id)
            .select(ConversationRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(ServiceError::from))?;
        row.ok_or(ServiceError::not_found("conversation", id))?.try_into()
    }

    /// Conversations, optionally in one state, newest first.
    pub async fn list(
        &self,
        state: Option<ConversationState>,
        page: PageRequest,
    ) -> ServiceResult<Page<Conversation>> {
        let (limit, cursor) = page.validated()?;
        let rows: Vec<ConversationRow> = read!(self.db, |conn| {
            let mut query = conversations::table
                .select(ConversationRow::as_select())
                .order(conversations::id.desc())
                .into_boxed();
            if let Some(state) = state {
                query = query.filter(conversations::state.eq(state.as_str()));
            }
            if let Some(cursor) = cursor {
                query = query.filter(conversations::id.lt(cursor));
            }
            query.limit(limit + 1).load(conn).await.map_err(ServiceError::from)
        })?;
        let items = rows.into_iter().map(Conversation::try_from).collect::<ServiceResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |c| c.id))
    }

    /// Changes subject, guest name or channel of an open conversation (not a resolved one).
    /// Emits `conversation.updated`.
    pub async fn update(
        &self,
        actor: &Actor,
        id: i64,
        changes: ConversationChanges,
    ) -> ServiceResult<Conversation> {
        let at = now();
        let set = ConversationChangeset {
            subject: validate::optional_text("subject", changes.subject.as_deref(), limits::LINE)?,
            guest_name: validate::optional_text("guestName", changes.guest_name.as_deref(), limits::NAME)?,
            channel: validate::optional_text("channel", changes.channel.as_deref(), limits::SHORT_TEXT)?,
            updated_at: at,
        };
        if set.subject.is_none() && set.guest_name.is_none() && set.channel.is_none() {
            return Err(
                ValidationError::new("body", "give at least one of subject, guestName, channel").into()
            );
        }
        commit_and_announce!(self.db, self.publisher, |conn| {
            let conversation = transition!(
                conn,
                id,
                [ConversationState::Active, ConversationState::Escalated],
                &set,
                "update"
            );
            let events =
                record_events!(conn, actor, at, [DomainEvent::ConversationUpdated(conversation.clone())]);
            Ok((conversation, events))
        })
    }

    /// Escalates an active conversation to a manager, with a reason. Emits `conversation.escalated`.
    pub async fn escalate(&self, actor: &Actor, id: i64, reason: &str) -> ServiceResult<Conversation> {
        let reason = validate::required_text("reason", reason, limits::LINE)?;
        let at = now();
        commit_and_announce!(self.db, self.publisher, |conn| {
            let conversation = transition!(
                conn,
                id,
                [ConversationState::Active],
                (
                    conversations::state.eq(ConversationState::Escalated.as_str()),
                    conversations::escalation_reason.eq(Some(&reason)),
                    conversations::updated_at.eq(at),
                    conversations::escalated_at.eq(Some(at)),
                ),
                "escalate"
            );
            let events =
                record_events!(conn, actor, at, [DomainEvent::ConversationEscalated(conversation.clone())]);
            Ok((conversation, events))
        })
    }

    /// Takes an escalated conversation back to `active` (the `⇄` of the life cycle).
    /// Emits `conversation.updated`.
    pub async fn deescalate(&self, actor: &Actor, id: i64) -> ServiceResult<Conversation> {
        let at = now();
        commit_and_announce!(self.db, self.publisher, |conn| {
            let conversation = transition!(
                conn,
                id,
                [ConversationState::Escalated],
                (
                    conversations::state.eq(ConversationState::Active.as_str()),
                    conversations::updated_at.eq(at)
                ),
                "de-escalate"
            );
            let events =
                record_events!(conn, actor, at, [DomainEvent::ConversationUpdated(conversation.clone())]);
            Ok((conversation, events))
        })
    }

    /// Resolves an active or escalated conversation. Emits `conversation.resolved`.
    pub async fn resolve(&self, actor: &Actor, id: i64) -> ServiceResult<Conversation> {
        let at = now();
        commit_and_announce!(self.db, self.publisher, |conn| {
            let conversation = transition!(
                conn,
                id,
                [ConversationState::Active, ConversationState::Escalated],
                (
                    conversations::state.eq(ConversationState::Resolved.as_str()),
                    conversations::updated_at.eq(at),
                    conversations::resolved_at.eq(Some(at)),
                ),
                "resolve"
            );
            let events =
                record_events!(conn, actor, at, [DomainEvent::ConversationResolved(conversation.clone())]);
            Ok((conversation, events))
        })
    }

    /// Counts by state.
    pub async fn stats(&self) -> ServiceResult<ConversationStats> {
        crate::stats::conversation_stats(&self.db).await
    }
}
