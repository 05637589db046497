//! `/api/v1/approvals`.

use actix_web::{HttpResponse, web};
use domain_events::model::{Decision, Role};
use serde::Deserialize;
use services::NewApproval;

use super::parse_filter;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<i64>,
}

impl ListQuery {
    fn page(&self) -> services::PageRequest {
        services::PageRequest { limit: self.limit, cursor: self.cursor }
    }
}

pub(crate) async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<NewApproval>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(state.services.approvals.queue(&auth.actor, body.into_inner()).await?))
}

pub(crate) async fn list(
    state: web::Data<AppState>,
    _auth: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = parse_filter("status", query.status.as_deref())?;
    Ok(HttpResponse::Ok().json(state.services.approvals.list(filter, query.page()).await?))
}

pub(crate) async fn get(
    state: web::Data<AppState>,
    _auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.approvals.get(*id).await?))
}

#[derive(Deserialize)]
pub(crate) struct Decide {
    decision: String,
    #[serde(default)]
    reason: Option<String>,
}

pub(crate) async fn decide(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
    body: web::Json<Decide>,
) -> Result<HttpResponse, ApiError> {
    // Role before anything else: staff learn nothing about approvals they may not decide.
    auth.require(&[Role::Admin, Role::Manager], "decide approvals")?;
    let decision: Decision = services::validate::enum_value("decision", &body.decision)
        .map_err(|e| ApiError::validation(e.to_string()))?;
    let approval =
        state.services.approvals.decide(&auth.actor, *id, decision, body.reason.as_deref()).await?;
    Ok(HttpResponse::Ok().json(approval))
}

pub(crate) async fn execute(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    auth.require(&[Role::Admin, Role::Manager], "execute approvals")?;
    Ok(HttpResponse::Ok().json(state.services.approvals.execute(&auth.actor, *id).await?))
}

pub(crate) async fn stats(state: web::Data<AppState>, _auth: AuthUser) -> Result<HttpResponse, ApiError> {
    // Wrapped, as the dashboard has always read it.
    #[derive(serde::Serialize)]
    struct Wrapped {
        stats: domain_events::model::ApprovalStats,
    }
    Ok(HttpResponse::Ok().json(Wrapped { stats: state.services.approvals.stats().await? }))
}
