//! Conversations with guests: `active ⇄ escalated → resolved`.

use std::sync::Arc;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::{Actor, Conversation, ConversationState, ConversationStats};
use domain_events::{DomainEvent, EventPublisher};
use serde::Deserialize;

use crate::db::{Conn, Database, db_run};
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
    #[cfg_attr(feature = "openapi", schema(max_length = 200, pattern = "{visible_text}"))]
    pub guest_name: String,
    /// Where it happens (`email`, `phone`, `chat`, …).
    #[cfg_attr(feature = "openapi", schema(max_length = 64, pattern = "{visible_text}"))]
    pub channel: String,
    /// What it is about.
    #[cfg_attr(feature = "openapi", schema(max_length = 1000, pattern = "{visible_text}"))]
    pub subject: String,
}

/// `PATCH /api/v1/conversations/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationChanges {
    /// New subject.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1000, pattern = "{visible_text}"))]
    pub subject: Option<String>,
    /// New guest name.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 200, pattern = "{visible_text}"))]
    pub guest_name: Option<String>,
    /// New channel.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64, pattern = "{visible_text}"))]
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

/// What a change of a conversation writes; `None` leaves a column as it is.
#[derive(AsChangeset)]
#[diesel(table_name = conversations)]
struct ConversationChange {
    state: Option<&'static str>,
    subject: Option<String>,
    guest_name: Option<String>,
    channel: Option<String>,
    escalation_reason: Option<String>,
    updated_at: NaiveDateTime,
    resolved_at: Option<NaiveDateTime>,
    /// Set by an escalation only (`escalatedAt`: when it was last escalated).
    escalated_at: Option<NaiveDateTime>,
}

impl ConversationChange {
    /// A move to `state` at `at`, nothing else.
    fn to_state(state: ConversationState, at: NaiveDateTime) -> Self {
        Self {
            state: Some(state.as_str()),
            subject: None,
            guest_name: None,
            channel: None,
            escalation_reason: None,
            updated_at: at,
            resolved_at: None,
            escalated_at: None,
        }
    }
}

/// A move in the life cycle: the states it starts from, its name in a refusal, and the event
/// that announces it.
#[derive(Clone, Copy)]
struct Transition {
    from: &'static [ConversationState],
    action: &'static str,
    announce: fn(Conversation) -> DomainEvent,
}

const UPDATE: Transition = Transition {
    from: &[ConversationState::Active, ConversationState::Escalated],
    action: "update",
    announce: DomainEvent::ConversationUpdated,
};
const ESCALATE: Transition = Transition {
    from: &[ConversationState::Active],
    action: "escalate",
    announce: DomainEvent::ConversationEscalated,
};
const DEESCALATE: Transition = Transition {
    from: &[ConversationState::Escalated],
    action: "de-escalate",
    announce: DomainEvent::ConversationUpdated,
};
const RESOLVE: Transition = Transition {
    from: &[ConversationState::Active, ConversationState::Escalated],
    action: "resolve",
    announce: DomainEvent::ConversationResolved,
};

/// Opens, edits, escalates and resolves guest conversations.
#[derive(Clone)]
pub struct ConversationService {
    db: Database,
    publisher: Arc<dyn EventPublisher>,
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
        commit_and_announce(&self.db, &*self.publisher, async |conn| {
            let conversation =
                Conversation::try_from(db_run!(conn, |c| diesel::insert_into(conversations::table)
                    .values(&row)
                    .returning(ConversationRow::as_returning())
                    .get_result(c)
                    .await)?)?;
            let events =
                record_events(conn, actor, at, [DomainEvent::ConversationCreated(conversation.clone())])
                    .await?;
            Ok((conversation, events))
        })
        .await
    }

    /// One conversation.
    pub async fn get(&self, id: i64) -> ServiceResult<Conversation> {
        let row: Option<ConversationRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| conversations::table
                    .find(id)
                    .select(ConversationRow::as_select())
                    .first(c)
                    .await
                    .optional())
            })
            .await?;
        row.ok_or(ServiceError::not_found("conversation", id))?.try_into()
    }

    /// Conversations, optionally in one state, newest first.
    pub async fn list(
        &self,
        state: Option<ConversationState>,
        page: PageRequest,
    ) -> ServiceResult<Page<Conversation>> {
        let (limit, cursor) = page.validated()?;
        let rows: Vec<ConversationRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| {
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
                    query.limit(limit + 1).load(c).await
                })
            })
            .await?;
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
        let set = ConversationChange {
            state: None,
            escalation_reason: None,
            resolved_at: None,
            escalated_at: None,
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
        self.apply(actor, id, &UPDATE, set).await
    }

    /// Escalates an active conversation to a manager, with a reason. Emits `conversation.escalated`.
    pub async fn escalate(&self, actor: &Actor, id: i64, reason: &str) -> ServiceResult<Conversation> {
        let reason = validate::required_text("reason", reason, limits::LINE)?;
        let at = now();
        let change = ConversationChange {
            escalation_reason: Some(reason),
            escalated_at: Some(at),
            ..ConversationChange::to_state(ConversationState::Escalated, at)
        };
        self.apply(actor, id, &ESCALATE, change).await
    }

    /// Takes an escalated conversation back to `active` (the `⇄` of the life cycle).
    /// Emits `conversation.updated`.
    pub async fn deescalate(&self, actor: &Actor, id: i64) -> ServiceResult<Conversation> {
        let change = ConversationChange::to_state(ConversationState::Active, now());
        self.apply(actor, id, &DEESCALATE, change).await
    }

    /// Resolves an active or escalated conversation. Emits `conversation.resolved`.
    pub async fn resolve(&self, actor: &Actor, id: i64) -> ServiceResult<Conversation> {
        let at = now();
        let change = ConversationChange {
            resolved_at: Some(at),
            ..ConversationChange::to_state(ConversationState::Resolved, at)
        };
        self.apply(actor, id, &RESOLVE, change).await
    }

    /// Applies `change` to conversation `id` if it is in a state `transition` starts from (a
    /// guarded update), records the event that announces it, commits and announces.
    async fn apply(
        &self,
        actor: &Actor,
        id: i64,
        transition: &Transition,
        change: ConversationChange,
    ) -> ServiceResult<Conversation> {
        let Transition { from, action, announce } = *transition;
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        commit_and_announce(&self.db, &*self.publisher, async |conn| {
            let updated: Option<ConversationRow> = db_run!(conn, |c| diesel::update(
                conversations::table.find(id).filter(conversations::state.eq_any(&from))
            )
            .set(&change)
            .returning(ConversationRow::as_returning())
            .get_result(c)
            .await
            .optional())?;
            let Some(row) = updated else { return Err(refusal(conn, id, action).await) };
            let conversation = Conversation::try_from(row)?;
            let events =
                record_events(conn, actor, change.updated_at, [announce(conversation.clone())]).await?;
            Ok((conversation, events))
        })
        .await
    }

    /// Counts by state.
    pub async fn stats(&self) -> ServiceResult<ConversationStats> {
        crate::stats::conversation_stats(&self.db).await
    }
}

/// Why a guarded update of conversation `id` touched nothing: it is missing, or not in a
/// state the action starts from.
async fn refusal(conn: &mut Conn<'_>, id: i64, action: &str) -> ServiceError {
    let state = db_run!(conn, |c| conversations::table
        .find(id)
        .select(conversations::state)
        .first::<String>(c)
        .await
        .optional());
    match state {
        Ok(None) => ServiceError::not_found("conversation", id),
        Ok(Some(state)) => {
            ServiceError::Conflict(format!("cannot {action} conversation {id}: it is {state}"))
        }
        Err(error) => error,
    }
}
