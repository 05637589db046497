//! `/api/v1/conversations`.

use actix_web::{HttpResponse, web};
use domain_events::model::{Conversation, ConversationState, ConversationStats};
use serde::Deserialize;
use services::{ConversationChanges, NewConversation, Page};

use super::{Authenticated, JsonBody, parse_filter};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};

/// Filter and page of `GET /api/v1/conversations`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only conversations in this state.
    #[param(value_type = Option<ConversationState>)]
    state: Option<String>,
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

/// Opens a conversation (`active`).
#[utoipa::path(
    post,
    path = "/api/v1/conversations",
    tag = "conversations",
    request_body = NewConversation,
    responses(
        (status = 201, description = "The new conversation", body = Conversation),
        (status = 400, description = "Malformed JSON, wrong types, missing, empty or over-long fields", body = ErrorBody),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<NewConversation>,
) -> Result<HttpResponse, ApiError> {
    let (actor, body) = (auth.actor, body.into_inner());
    let conversation = state.db(async move |s| s.conversations.create(&actor, body).await).await?;
    Ok(HttpResponse::Created().json(conversation))
}

/// Lists conversations, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/conversations",
    tag = "conversations",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of conversations", body = Page<Conversation>),
        (status = 400, description = "Unknown state, bad `limit` or `cursor`", body = ErrorBody),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    state: web::Data<AppState>,
    _auth: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = parse_filter("state", query.state.as_deref())?;
    let page = query.page();
    let conversations = state.db(async move |s| s.conversations.list(filter, page).await).await?;
    Ok(HttpResponse::Ok().json(conversations))
}

/// One conversation.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = i64, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation", body = Conversation),
        (status = 404, description = "No conversation with this id", body = ErrorBody),
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
    let conversation = state.db(async move |s| s.conversations.get(id).await).await?;
    Ok(HttpResponse::Ok().json(conversation))
}

/// Changes the subject, guest name or channel (at least one).
#[utoipa::path(
    patch,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = i64, Path, description = "The conversation's id")),
    request_body = ConversationChanges,
    responses(
        (status = 200, description = "The updated conversation", body = Conversation),
        (status = 400, description = "Malformed JSON, wrong types, missing, empty or over-long fields, no field to change", body = ErrorBody),
        (status = 404, description = "No conversation with this id", body = ErrorBody),
        (status = 409, description = "The conversation is resolved", body = ErrorBody),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
    body: web::Json<ConversationChanges>,
) -> Result<HttpResponse, ApiError> {
    let (actor, id, changes) = (auth.actor, id.into_inner(), body.into_inner());
    let conversation = state.db(async move |s| s.conversations.update(&actor, id, changes).await).await?;
    Ok(HttpResponse::Ok().json(conversation))
}

/// `POST /api/v1/conversations/{id}/escalate`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Escalate {
    /// Why a manager is needed.
    #[schema(max_length = 1000, pattern = "{visible_text}")]
    reason: String,
}

/// Escalates an `active` conversation.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/escalate",
    tag = "conversations",
    params(("id" = i64, Path, description = "The conversation's id")),
    request_body = Escalate,
    responses(
        (status = 200, description = "The conversation, `escalated`", body = Conversation),
        (status = 400, description = "Malformed JSON, wrong types, missing, empty or over-long fields", body = ErrorBody),
        (status = 404, description = "No conversation with this id", body = ErrorBody),
        (status = 409, description = "The conversation is not `active`", body = ErrorBody),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn escalate(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
    body: web::Json<Escalate>,
) -> Result<HttpResponse, ApiError> {
    let (actor, id, reason) = (auth.actor, id.into_inner(), body.into_inner().reason);
    let conversation = state.db(async move |s| s.conversations.escalate(&actor, id, &reason).await).await?;
    Ok(HttpResponse::Ok().json(conversation))
}

/// Takes an `escalated` conversation back to `active`.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/deescalate",
    tag = "conversations",
    params(("id" = i64, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation, `active`", body = Conversation),
        (status = 404, description = "No conversation with this id", body = ErrorBody),
        (status = 409, description = "The conversation is not `escalated`", body = ErrorBody),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn deescalate(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (actor, id) = (auth.actor, id.into_inner());
    let conversation = state.db(async move |s| s.conversations.deescalate(&actor, id).await).await?;
    Ok(HttpResponse::Ok().json(conversation))
}

/// Resolves an `active` or `escalated` conversation.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/resolve",
    tag = "conversations",
    params(("id" = i64, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation, `resolved`", body = Conversation),
        (status = 404, description = "No conversation with this id", body = ErrorBody),
        (status = 409, description = "The conversation is already resolved", body = ErrorBody),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resolve(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (actor, id) = (auth.actor, id.into_inner());
    let conversation = state.db(async move |s| s.conversations.resolve(&actor, id).await).await?;
    Ok(HttpResponse::Ok().json(conversation))
}

/// Conversation counts by state.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/stats",
    tag = "conversations",
    responses(
        (status = 200, description = "Conversation counts", body = ConversationStats),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn stats(state: web::Data<AppState>, _auth: AuthUser) -> Result<HttpResponse, ApiError> {
    let stats = state.db(async move |s| s.conversations.stats().await).await?;
    Ok(HttpResponse::Ok().json(stats))
}
