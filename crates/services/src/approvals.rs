//! The approval queue: `pending → approved | rejected`, `approved → executed`.
//! Only managers and admins decide and execute.

use std::sync::Arc;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::{Actor, Approval, ApprovalStats, ApprovalStatus, Decision, Role};
use domain_events::{DomainEvent, EventPublisher};
use serde::Deserialize;

use crate::db::{Database, exists, read};
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

/// A guarded update of approval `$id`, allowed only from `$from`; evaluates to the updated
/// approval, or returns the 404/409 that explains why nothing changed.
macro_rules! transition {
    ($conn:expr, $id:expr, $from:expr, $set:expr, $action:literal) => {{
        let updated: Option<ApprovalRow> =
            diesel::update(approvals::table.find($id).filter(approvals::status.eq($from.as_str())))
                .set($set)
                .returning(ApprovalRow::as_returning())
                .get_result($conn)
                .await
                .optional()?;
        match updated {
            Some(row) => Approval::try_from(row)?,
            None if exists!($conn, approvals, $id) => {
                let status: String =
                    approvals::table.find($id).select(approvals::status).first($conn).await?;
                return Err(ServiceError::Conflict(format!(
                    concat!("cannot ", $action, " approval {}: it is {}"),
                    $id, status
                )));
            }
            None => return Err(ServiceError::not_found("approval", $id)),
        }
    }};
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
        commit_and_announce!(self.db, self.publisher, |conn| {
            let approval = Approval::try_from(
                diesel::insert_into(approvals::table)
                    .values(&row)
                    .returning(ApprovalRow::as_returning())
                    .get_result(conn)
                    .await?,
            )?;
            let events = record_events!(conn, actor, at, [DomainEvent::ApprovalQueued(approval.clone())]);
            Ok((approval, events))
        })
    }

    /// One approval.
    pub async fn get(&self, id: i64) -> ServiceResult<Approval> {
        let row: Option<ApprovalRow> = read!(self.db, |conn| approvals::table
            .find(id)
            .select(ApprovalRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(ServiceError::from))?;
        row.ok_or(ServiceError::not_found("approval", id))?.try_into()
    }

    /// Approvals, optionally in one status, newest first.
    pub async fn list(
        &self,
        status: Option<ApprovalStatus>,
        page: PageRequest,
    ) -> ServiceResult<Page<Approval>> {
        let (limit, cursor) = page.validated()?;
        let rows: Vec<ApprovalRow> = read!(self.db, |conn| {
            let mut query =
                approvals::table.select(ApprovalRow::as_select()).order(approvals::id.desc()).into_boxed();
            if let Some(status) = status {
                query = query.filter(approvals::status.eq(status.as_str()));
            }
            if let Some(cursor) = cursor {
                query = query.filter(approvals::id.lt(cursor));
            }
            query.limit(limit + 1).load(conn).await.map_err(ServiceError::from)
        })?;
        let items = rows.into_iter().map(Approval::try_from).collect::<ServiceResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |a| a.id))
    }

    /// Approves or rejects a pending request (managers and admins). Emits `approval.decided`.
    pub async fn decide(
        &self,
        actor: &Actor,
        id: i64,
        decision: Decision,
        reason: Option<&str>,
    ) -> ServiceResult<Approval> {
        ensure_approver(actor, "decide")?;
        let reason = validate::optional_text("reason", reason, limits::LINE)?;
        let status = match decision {
            Decision::Approved => ApprovalStatus::Approved,
            Decision::Rejected => ApprovalStatus::Rejected,
        };
        let at = now();
        commit_and_announce!(self.db, self.publisher, |conn| {
            let approval = transition!(
                conn,
                id,
                ApprovalStatus::Pending,
                (
                    approvals::status.eq(status.as_str()),
                    approvals::decided_by.eq(Some(&actor.username)),
                    approvals::decision_reason.eq(reason.as_deref()),
                    approvals::decided_at.eq(Some(at)),
                    approvals::updated_at.eq(at),
                ),
                "decide"
            );
            let events = record_events!(conn, actor, at, [DomainEvent::ApprovalDecided(approval.clone())]);
            Ok((approval, events))
        })
    }

    /// Carries out an approved request (managers and admins). Emits `approval.executed`.
    pub async fn execute(&self, actor: &Actor, id: i64) -> ServiceResult<Approval> {
        ensure_approver(actor, "execute")?;
        let at = now();
        commit_and_announce!(self.db, self.publisher, |conn| {
            let approval = transition!(
                conn,
                id,
                ApprovalStatus::Approved,
                (
                    approvals::status.eq(ApprovalStatus::Executed.as_str()),
                    approvals::executed_by.eq(Some(&actor.username)),
                    approvals::executed_at.eq(Some(at)),
                    approvals::updated_at.eq(at),
                ),
                "execute"
            );
            let events = record_events!(conn, actor, at, [DomainEvent::ApprovalExecuted(approval.clone())]);
            Ok((approval, events))
        })
    }

    /// Counts by status.
    pub async fn stats(&self) -> ServiceResult<ApprovalStats> {
        crate::stats::approval_stats(&self.db).await
    }
}

fn ensure_approver(actor: &Actor, action: &str) -> ServiceResult<()> {
    match actor.role {
        Role::Admin | Role::Manager => Ok(()),
        Role::Staff => Err(ServiceError::Forbidden(format!("staff may not {action} approvals"))),
    }
}
