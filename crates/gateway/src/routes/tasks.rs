//! `/api/v1/tasks`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use services::{NewTask, TaskFilter};

use super::parse_filter;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    department: Option<String>,
    assignee: Option<String>,
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
    body: web::Json<NewTask>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(state.services.tasks.create(&auth.actor, body.into_inner()).await?))
}

pub(crate) async fn list(
    state: web::Data<AppState>,
    _auth: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = TaskFilter {
        status: parse_filter("status", query.status.as_deref())?,
        department: query.department.clone().filter(|d| !d.is_empty()),
        assignee: query.assignee.clone().filter(|a| !a.is_empty()),
    };
    Ok(HttpResponse::Ok().json(state.services.tasks.list(&filter, query.page()).await?))
}

pub(crate) async fn get(
    state: web::Data<AppState>,
    _auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.tasks.get(*id).await?))
}

#[derive(Deserialize)]
pub(crate) struct Assign {
    assignee: String,
}

pub(crate) async fn assign(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
    body: web::Json<Assign>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.tasks.assign(&auth.actor, *id, &body.assignee).await?))
}

pub(crate) async fn complete(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.tasks.complete(&auth.actor, *id).await?))
}

pub(crate) async fn stats(state: web::Data<AppState>, _auth: AuthUser) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.tasks.stats().await?))
}
