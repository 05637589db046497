//! The approval queue: `pending → approved | rejected`, `approved → executed`.
//! Only managers and admins decide and execute.

use std::sync::Arc;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::{Actor, Approval, ApprovalStats, ApprovalStatus, Decision, Role};
use domain_events::{DomainEvent, EventPublisher};
use serde::Deserialize;

use crate::db::{Conn, Database, db_run};
use crate::error::{ServiceError, ServiceResult, ValidationError};
use crate::outbox::{commit_and_announce, now, record_events, utc};
use crate::schema::approvals;
use crate::validate::{self, Page, PageRequest, limits};

/// `POST /api/v1/approvals`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewApproval {
    /// What kind of request (`refund`, `upgrade`, …).
    #[cfg_attr(feature = "openapi", schema(max_length = 64, pattern = "{visible_text}"))]
    pub kind: String,
    /// One line for the approver.
    #[cfg_attr(feature = "openapi", schema(max_length = 1000, pattern = "{visible_text}"))]
    pub summary: String,
    /// Any JSON to keep with the request (at most 32 KiB serialized).
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = approvals)]
struct ApprovalRow {
    id: i64,
    kind: String,
    summary: String,
    payload: Option<String>,
    status: String,
    requested_by: String,
    decided_by: Option<String>,
    decision_reason: Option<String>,
    decided_at: Option<NaiveDateTime>,
    executed_by: Option<String>,
    executed_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl TryFrom<ApprovalRow> for Approval {
    type Error = ServiceError;
    fn try_from(row: ApprovalRow) -> Result<Self, Self::Error> {
        let internal = |e: Box<dyn std::error::Error + Send + Sync>| ServiceError::Internal(e);
        Ok(Approval {
            id: row.id,
            kind: row.kind,
            summary: row.summary,
            payload: row
                .payload
                .map(|p| serde_json::from_str(&p))
                .transpose()
                .map_err(|e| internal(Box::new(e)))?,
            status: row.status.parse().map_err(|e| internal(Box::new(e)))?,
            requested_by: row.requested_by,
            decided_by: row.decided_by,
            decision_reason: row.decision_reason,
            decided_at: row.decided_at.map(utc),
            executed_by: row.executed_by,
            executed_at: row.executed_at.map(utc),
            created_at: utc(row.created_at),
            updated_at: utc(row.updated_at),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = approvals)]
struct NewApprovalRow<'a> {
    kind: &'a str,
    summary: &'a str,
    payload: Option<String>,
    status: &'static str,
    requested_by: &'a str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// What a decision or an execution writes; `None` leaves a column as it is.
#[derive(AsChangeset)]
#[diesel(table_name = approvals)]
struct ApprovalChange<'a> {
    status: &'static str,
    decided_by: Option<&'a str>,
    /// `Some(None)` writes NULL: a decision without a reason.
    decision_reason: Option<Option<&'a str>>,
    decided_at: Option<NaiveDateTime>,
    executed_by: Option<&'a str>,
    executed_at: Option<NaiveDateTime>,
    updated_at: NaiveDateTime,
}

impl ApprovalChange<'_> {
    /// A move to `status` at `at`, nothing else.
    fn to_status(status: ApprovalStatus, at: NaiveDateTime) -> Self {
        Self {
            status: status.as_str(),
            decided_by: None,
            decision_reason: None,
            decided_at: None,
            executed_by: None,
            executed_at: None,
            updated_at: at,
        }
    }
}

/// Queues, decides and executes approvals.
#[derive(Clone)]
pub struct ApprovalQueue {
    db: Database,
    publisher: Arc<dyn EventPublisher>,
}

impl ApprovalQueue {
    /// A queue writing to `db` and announcing on `publisher`.
    pub fn new(db: Database, publisher: Arc<dyn EventPublisher>) -> Self {
        Self { db, publisher }
    }

    /// Queues a request (`pending`). Anyone may. Emits `approval.queued`.
    pub async fn queue(&self, actor: &Actor, input: NewApproval) -> ServiceResult<Approval> {
        let kind = validate::required_text("kind", &input.kind, limits::SHORT_TEXT)?;
        let summary = validate::required_text("summary", &input.summary, limits::LINE)?;
        let payload = match input.payload {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => {
                let text = value.to_string();
                if text.len() > limits::PAYLOAD_BYTES {
                    return Err(ValidationError::new(
                        "payload",
                        format!("must be at most {} bytes of JSON", limits::PAYLOAD_BYTES),
                    )
                    .into());
                }
                Some(text)
            }
        };
        let at = now();
        let row = NewApprovalRow {
            kind: &kind,
            summary: &summary,
            payload,
            status: ApprovalStatus::Pending.as_str(),
            requested_by: &actor.username,
            created_at: at,
            updated_at: at,
        };
        commit_and_announce(&self.db, &*self.publisher, async |conn| {
            let approval = Approval::try_from(db_run!(conn, |c| diesel::insert_into(approvals::table)
                .values(&row)
                .returning(ApprovalRow::as_returning())
                .get_result(c)
                .await)?)?;
            let events =
                record_events(conn, actor, at, [DomainEvent::ApprovalQueued(approval.clone())]).await?;
            Ok((approval, events))
        })
        .await
    }

    /// One approval.
    pub async fn get(&self, id: i64) -> ServiceResult<Approval> {
        let row: Option<ApprovalRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| approvals::table
                    .find(id)
                    .select(ApprovalRow::as_select())
                    .first(c)
                    .await
                    .optional())
            })
            .await?;
        row.ok_or(ServiceError::not_found("approval", id))?.try_into()
    }

    /// Approvals, optionally in one status, newest first.
    pub async fn list(
        &self,
        status: Option<ApprovalStatus>,
        page: PageRequest,
    ) -> ServiceResult<Page<Approval>> {
        let (limit, cursor) = page.validated()?;
        let rows: Vec<ApprovalRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| {
                    let mut query = approvals::table
                        .select(ApprovalRow::as_select())
                        .order(approvals::id.desc())
                        .into_boxed();
                    if let Some(status) = status {
                        query = query.filter(approvals::status.eq(status.as_str()));
                    }
                    if let Some(cursor) = cursor {
                        query = query.filter(approvals::id.lt(cursor));
                    }
                    query.limit(limit + 1).load(c).await
                })
            })
            .await?;
        let items = rows.into_iter().map(Approval::try_from).collect::<ServiceResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |a| a.id))
    }

    /// Approves or rejects a pending request (managers and admins): `decision` is `approved`
    /// or `rejected`. The role is checked before anything else, so staff learn nothing about
    /// approvals they may not decide. Emits `approval.decided`.
    pub async fn decide(
        &self,
        actor: &Actor,
        id: i64,
        decision: &str,
        reason: Option<&str>,
    ) -> ServiceResult<Approval> {
        ensure_approver(actor, "decide")?;
        let decision: Decision = validate::enum_value("decision", decision)?;
        let reason = validate::optional_text("reason", reason, limits::LINE)?;
        let status = match decision {
            Decision::Approved => ApprovalStatus::Approved,
            Decision::Rejected => ApprovalStatus::Rejected,
        };
        let at = now();
        let change = ApprovalChange {
            decided_by: Some(&actor.username),
            decision_reason: Some(reason.as_deref()),
            decided_at: Some(at),
            ..ApprovalChange::to_status(status, at)
        };
        self.apply(actor, id, ApprovalStatus::Pending, change, "decide", DomainEvent::ApprovalDecided).await
    }

    /// Carries out an approved request (managers and admins). Emits `approval.executed`.
    pub async fn execute(&self, actor: &Actor, id: i64) -> ServiceResult<Approval> {
        ensure_approver(actor, "execute")?;
        let at = now();
        let change = ApprovalChange {
            executed_by: Some(&actor.username),
            executed_at: Some(at),
            ..ApprovalChange::to_status(ApprovalStatus::Executed, at)
        };
        self.apply(actor, id, ApprovalStatus::Approved, change, "execute", DomainEvent::ApprovalExecuted)
            .await
    }

    /// Applies `change` to approval `id` if it is `from` (a guarded update), records the event
    /// `announce` makes of the result, commits and announces; `action` names it in a refusal.
    async fn apply(
        &self,
        actor: &Actor,
        id: i64,
        from: ApprovalStatus,
        change: ApprovalChange<'_>,
        action: &str,
        announce: fn(Approval) -> DomainEvent,
    ) -> ServiceResult<Approval> {
        commit_and_announce(&self.db, &*self.publisher, async |conn| {
            let updated: Option<ApprovalRow> = db_run!(conn, |c| diesel::update(
                approvals::table.find(id).filter(approvals::status.eq(from.as_str()))
            )
            .set(&change)
            .returning(ApprovalRow::as_returning())
            .get_result(c)
            .await
            .optional())?;
            let Some(row) = updated else { return Err(refusal(conn, id, action).await) };
            let approval = Approval::try_from(row)?;
            let events = record_events(conn, actor, change.updated_at, [announce(approval.clone())]).await?;
            Ok((approval, events))
        })
        .await
    }

    /// Counts by status.
    pub async fn stats(&self) -> ServiceResult<ApprovalStats> {
        crate::stats::approval_stats(&self.db).await
    }
}

/// Why a guarded update of approval `id` touched nothing: it is missing, or not in the
/// status the action starts from.
async fn refusal(conn: &mut Conn<'_>, id: i64, action: &str) -> ServiceError {
    let status = db_run!(conn, |c| approvals::table
        .find(id)
        .select(approvals::status)
        .first::<String>(c)
        .await
        .optional());
    match status {
        Ok(None) => ServiceError::not_found("approval", id),
        Ok(Some(status)) => ServiceError::Conflict(format!("cannot {action} approval {id}: it is {status}")),
        Err(error) => error,
    }
}

fn ensure_approver(actor: &Actor, action: &str) -> ServiceResult<()> {
    match actor.role {
        Role::Admin | Role::Manager => Ok(()),
        Role::Staff => Err(ServiceError::Forbidden(format!("staff may not {action} approvals"))),
    }
}
