//! `/api/v1/tasks`.

use actix_web::{HttpResponse, web};
use domain_events::model::{Task, TaskStats, TaskStatus};
use serde::Deserialize;
use services::{NewTask, Page, TaskFilter};

use super::{Authenticated, JsonBody, parse_filter};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};

/// Filters and page of `GET /api/v1/tasks`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only tasks with this status.
    #[param(value_type = Option<TaskStatus>)]
    status: Option<String>,
    /// Only tasks of this department.
    department: Option<String>,
    /// Only tasks assigned to this username.
    assignee: Option<String>,
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

/// Creates a task (`in_progress` when an assignee is given, else `pending`).
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    tag = "tasks",
    request_body = NewTask,
    responses(
        (status = 201, description = "The new task", body = Task),
        (status = 400, description = "Malformed JSON, wrong types, missing, empty or over-long fields, unknown assignee", body = ErrorBody),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<NewTask>,
) -> Result<HttpResponse, ApiError> {
    let (actor, body) = (auth.actor, body.into_inner());
    let task = state.db(async move |s| s.tasks.create(&actor, body).await).await?;
    Ok(HttpResponse::Created().json(task))
}

/// Lists tasks, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of tasks", body = Page<Task>),
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
    let filter = TaskFilter {
        status: parse_filter("status", query.status.as_deref())?,
        department: query.department.clone().filter(|d| !d.is_empty()),
        assignee: query.assignee.clone().filter(|a| !a.is_empty()),
    };
    let page = query.page();
    let tasks = state.db(async move |s| s.tasks.list(&filter, page).await).await?;
    Ok(HttpResponse::Ok().json(tasks))
}

/// One task.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 404, description = "No task with this id", body = ErrorBody),
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
    let task = state.db(async move |s| s.tasks.get(id).await).await?;
    Ok(HttpResponse::Ok().json(task))
}

/// `POST /api/v1/tasks/{id}/assign`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Assign {
    /// An existing username.
    #[schema(max_length = 64, pattern = "{username}")]
    assignee: String,
}

/// Assigns (or reassigns) a task; it goes `in_progress`.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/assign",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    request_body = Assign,
    responses(
        (status = 200, description = "The task, `in_progress`", body = Task),
        (status = 400, description = "Malformed JSON, wrong types, missing, empty or over-long fields, unknown assignee", body = ErrorBody),
        (status = 404, description = "No task with this id", body = ErrorBody),
        (status = 409, description = "The task is completed", body = ErrorBody),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn assign(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
    body: web::Json<Assign>,
) -> Result<HttpResponse, ApiError> {
    let (actor, id, assignee) = (auth.actor, id.into_inner(), body.into_inner().assignee);
    let task = state.db(async move |s| s.tasks.assign(&actor, id, &assignee).await).await?;
    Ok(HttpResponse::Ok().json(task))
}

/// Completes a task.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/complete",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task, `completed`", body = Task),
        (status = 404, description = "No task with this id", body = ErrorBody),
        (status = 409, description = "The task is already completed", body = ErrorBody),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn complete(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (actor, id) = (auth.actor, id.into_inner());
    let task = state.db(async move |s| s.tasks.complete(&actor, id).await).await?;
    Ok(HttpResponse::Ok().json(task))
}

/// Task counts by status.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/stats",
    tag = "tasks",
    responses(
        (status = 200, description = "Task counts", body = TaskStats),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn stats(state: web::Data<AppState>, _auth: AuthUser) -> Result<HttpResponse, ApiError> {
    let stats = state.db(async move |s| s.tasks.stats().await).await?;
    Ok(HttpResponse::Ok().json(stats))
}
