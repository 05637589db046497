//! `/api/v1/approvals`.

use actix_web::{HttpResponse, web};
use domain_events::model::{Approval, ApprovalStats, ApprovalStatus, Decision};
use serde::{Deserialize, Serialize};
use services::{NewApproval, Page};

use super::{Authenticated, JsonBody, parse_filter};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};

/// Filter and page of `GET /api/v1/approvals`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only approvals with this status.
    #[param(value_type = Option<ApprovalStatus>)]
    status: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// The previous page's `nextCursor`.
    #[param(minimum = 1)]
    cursor: Option<i64>,
}

impl ListQuery {
    fn page(&self) -> services::PageRequest {
        services::PageRequest { limit: self.limit, cursor: self.cursor }
    }
}

/// Queues a request for approval (`pending`).
#[utoipa::path(
    post,
    path = "/api/v1/approvals",
    tag = "approvals",
    request_body = NewApproval,
    responses(
        (status = 201, description = "The new approval", body = Approval),
        (status = 400, description = "Malformed JSON, wrong types, missing, empty or over-long fields, payload over 32 KiB", body = ErrorBody),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<NewApproval>,
) -> Result<HttpResponse, ApiError> {
    let (actor, body) = (auth.actor, body.into_inner());
    let approval = state.db(async move |s| s.approvals.queue(&actor, body).await).await?;
    Ok(HttpResponse::Created().json(approval))
}

/// Lists approvals, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/approvals",
    tag = "approvals",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of approvals", body = Page<Approval>),
        (status = 400, description = "Unknown status, bad `limit` or `cursor`", body = ErrorBody),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    state: web::Data<AppState>,
    _auth: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = parse_filter("status", query.status.as_deref())?;
    let page = query.page();
    let approvals = state.db(async move |s| s.approvals.list(filter, page).await).await?;
    Ok(HttpResponse::Ok().json(approvals))
}

/// One approval.
#[utoipa::path(
    get,
    path = "/api/v1/approvals/{id}",
    tag = "approvals",
    params(("id" = i64, Path, description = "The approval's id")),
    responses(
        (status = 200, description = "The approval", body = Approval),
        (status = 404, description = "No approval with this id", body = ErrorBody),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    state: web::Data<AppState>,
    _auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let approval = state.db(async move |s| s.approvals.get(id).await).await?;
    Ok(HttpResponse::Ok().json(approval))
}

/// `POST /api/v1/approvals/{id}/decide`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Decide {
    /// The verdict.
    #[schema(value_type = Decision)]
    decision: String,
    /// Why.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = "{visible_text}")]
    reason: Option<String>,
}

/// Approves or rejects a `pending` approval (managers and admins).
#[utoipa::path(
    post,
    path = "/api/v1/approvals/{id}/decide",
    tag = "approvals",
    params(("id" = i64, Path, description = "The approval's id")),
    request_body = Decide,
    responses(
        (status = 200, description = "The approval, `approved` or `rejected`", body = Approval),
        (status = 400, description = "Malformed JSON, wrong types, missing, empty or over-long fields, unknown decision", body = ErrorBody),
        (status = 403, description = "Staff may not decide or execute approvals", body = ErrorBody),
        (status = 404, description = "No approval with this id", body = ErrorBody),
        (status = 409, description = "The approval is not `pending`", body = ErrorBody),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn decide(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
    body: web::Json<Decide>,
) -> Result<HttpResponse, ApiError> {
    let (actor, id, Decide { decision, reason }) = (auth.actor, id.into_inner(), body.into_inner());
    let approval =
        state.db(async move |s| s.approvals.decide(&actor, id, &decision, reason.as_deref()).await).await?;
    Ok(HttpResponse::Ok().json(approval))
}

/// Carries out an `approved` approval (managers and admins).
#[utoipa::path(
    post,
    path = "/api/v1/approvals/{id}/execute",
    tag = "approvals",
    params(("id" = i64, Path, description = "The approval's id")),
    responses(
        (status = 200, description = "The approval, `executed`", body = Approval),
        (status = 403, description = "Staff may not decide or execute approvals", body = ErrorBody),
        (status = 404, description = "No approval with this id", body = ErrorBody),
        (status = 409, description = "The approval is not `approved`", body = ErrorBody),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn execute(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (actor, id) = (auth.actor, id.into_inner());
    let approval = state.db(async move |s| s.approvals.execute(&actor, id).await).await?;
    Ok(HttpResponse::Ok().json(approval))
}

/// `GET /api/v1/approvals/stats`: wrapped, as the dashboard has always read it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct WrappedApprovalStats {
    /// The counts.
    stats: ApprovalStats,
}

/// Approval counts by status, wrapped in `{"stats": …}`.
#[utoipa::path(
    get,
    path = "/api/v1/approvals/stats",
    tag = "approvals",
    responses(
        (status = 200, description = "Approval counts", body = WrappedApprovalStats),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn stats(state: web::Data<AppState>, _auth: AuthUser) -> Result<HttpResponse, ApiError> {
    let stats = state.db(async move |s| s.approvals.stats().await).await?;
    Ok(HttpResponse::Ok().json(WrappedApprovalStats { stats }))
}
