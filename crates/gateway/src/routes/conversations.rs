//! `/api/v1/conversations`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use services::{ConversationChanges, NewConversation};

use super::parse_filter;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
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
    body: web::Json<NewConversation>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created()
        .json(state.services.conversations.create(&auth.actor, body.into_inner()).await?))
}

pub(crate) async fn list(
    state: web::Data<AppState>,
    _auth: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = parse_filter("state", query.state.as_deref())?;
    Ok(HttpResponse::Ok().json(state.services.conversations.list(filter, query.page()).await?))
}

pub(crate) async fn get(
    state: web::Data<AppState>,
    _auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.conversations.get(*id).await?))
}

pub(crate) async fn update(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
    body: web::Json<ConversationChanges>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok()
        .json(state.services.conversations.update(&auth.actor, *id, body.into_inner()).await?))
}

#[derive(Deserialize)]
pub(crate) struct Escalate {
    reason: String,
}

pub(crate) async fn escalate(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
    body: web::Json<Escalate>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.conversations.escalate(&auth.actor, *id, &body.reason).await?))
}

pub(crate) async fn deescalate(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.conversations.deescalate(&auth.actor, *id).await?))
}

pub(crate) async fn resolve(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.conversations.resolve(&auth.actor, *id).await?))
}

pub(crate) async fn stats(state: web::Data<AppState>, _auth: AuthUser) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.conversations.stats().await?))
}
