//! Live operations insight (contract section 9): `GET /api/v1/tasks/stats/departments` and
//! `GET /api/v1/stats/sla`, the REST twins of `stats:departments` and `stats:sla`, and
//! `GET /api/v1/stats/history`, a stats topic's value per minute.
//!
//! Reason to change: section 9's REST surface. Mounted by the route table; the reads are the
//! services' (`services::insight`), the topic names the hub's registry.

use std::fmt::Write as _;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use domain_events::model::{DepartmentStats, SlaStats};
use serde::{Deserialize, Serialize};

use super::Authenticated;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};

/// Task counts per department, sorted by name (code-point order), at most 200.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/stats/departments",
    tag = "tasks",
    responses(
        (status = 200, description = "Task counts per department: the first 200 by name, then `truncated: true`", body = DepartmentStats),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn departments(
    state: web::Data<AppState>,
    _auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    if let Some(body) = published(&state, "stats:departments").await {
        return Ok(body);
    }
    let stats = state.db(async move |s| s.insight.department_stats().await).await?;
    Ok(HttpResponse::Ok().json(stats))
}

/// The value the hub holds for `topic` once it reflects every change already answered (as a
/// socket's snapshot does), so a client polling a twin costs no query: the bridge recomputes
/// the topic on changes and when it changes with time, subscribed or not. `None` until the
/// first value is published.
async fn published(state: &AppState, topic: &str) -> Option<HttpResponse> {
    let id = state.hub.topics().get(topic)?;
    state.hub.wait_fresh(id, std::time::Duration::from_secs(1)).await;
    let payload = state.hub.current(id)?;
    Some(HttpResponse::Ok().insert_header((CONTENT_TYPE, "application/json")).body(payload))
}

/// Overdue tasks (not completed `TASK_SLA_SECONDS` after creation, by the database's clock)
/// and the oldest open task and escalation.
#[utoipa::path(
    get,
    path = "/api/v1/stats/sla",
    tag = "stats",
    responses(
        (status = 200, description = "What is overdue, and the oldest open items", body = SlaStats),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn sla(state: web::Data<AppState>, _auth: AuthUser) -> Result<HttpResponse, ApiError> {
    if let Some(body) = published(&state, "stats:sla").await {
        return Ok(body);
    }
    let stats = state.db(async move |s| s.insight.sla_stats().await).await?;
    Ok(HttpResponse::Ok().json(stats))
}

/// The query of `GET /api/v1/stats/history`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// A stats topic (`stats:tasks`, `stats:approvals`, `stats:conversations`,
    /// `stats:departments`, `stats:sla`).
    #[param(required = true)]
    topic: Option<String>,
    /// RFC 3339: the answer starts with the last point at or before it.
    #[param(required = true, value_type = String, format = DateTime)]
    since: Option<String>,
}

/// One point of a topic's history (documentation of the answer's shape).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryPoint {
    /// The end of a minute in which the value changed (`…:00Z`).
    at: DateTime<Utc>,
    /// The topic's value at that moment, as the topic's messages carry it.
    payload: std::collections::HashMap<String, serde_json::Value>,
}

/// `GET /api/v1/stats/history`'s answer (documentation of its shape).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StatsHistory {
    /// Oldest first: the last point at or before `since`, then every later one.
    points: Vec<HistoryPoint>,
    /// Present (`true`) when the answer stopped at its size limit (8 MiB of payloads): ask
    /// again with `since` set to the last point's `at`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    truncated: bool,
}

/// History answers being built at once in this process; more are answered 429.
static HISTORY_REQUESTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// A stats topic's value at the end of every minute in which it changed, kept 7 days.
#[utoipa::path(
    get,
    path = "/api/v1/stats/history",
    tag = "stats",
    params(HistoryQuery),
    responses(
        (status = 200, description = "The points, oldest first: the last point at or before `since`, then every point after it", body = StatsHistory),
        (status = 400, description = "`topic` or `since` missing, an unknown topic, or `since` not an RFC 3339 time", body = ErrorBody),
        (status = 429, description = "Too many history requests at once on this instance", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn history(
    state: web::Data<AppState>,
    _auth: AuthUser,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let HistoryQuery { topic, since } = query.into_inner();
    let topics = state.hub.topics().clone();
    let known = || topics.ids().map(|id| topics.name(id).to_owned()).collect::<Vec<_>>().join(", ");
    let topic = match topic.filter(|t| !t.is_empty()) {
        None => return Err(ApiError::validation(format!("topic: required; one of {}", known()))),
        Some(topic) if topics.get(&topic).is_none() => {
            let shown: String = topic.chars().take(64).collect();
            return Err(ApiError::validation(format!(
                "topic: unknown stats topic {shown:?}; one of {}",
                known()
            )));
        }
        Some(topic) => topic,
    };
    let since = match since.filter(|s| !s.is_empty()) {
        None => {
            return Err(ApiError::validation(
                "since: required (an RFC 3339 time, e.g. 2026-12-06T00:00:00Z)",
            ));
        }
        Some(since) => DateTime::parse_from_rfc3339(&since)
            .map_err(|_| ApiError::validation("since: not an RFC 3339 time (e.g. 2026-12-06T00:00:00Z)"))?
            .with_timezone(&Utc),
    };
    // An answer can hold up to 8 MiB of payloads (twice, while the body is built): a few at a
    // time per process keep a burst of far-reaching requests from taking the memory.
    let Ok(_permit) = HISTORY_REQUESTS.try_acquire() else {
        return Err(ApiError::too_many_requests("too many history requests at once; try again shortly", 1));
    };
    let history = state.db(async move |s| s.insight.history(&topic, since).await).await?;
    // The payloads are stored as the JSON the topic published: spliced in, not re-parsed.
    let mut body =
        String::with_capacity(32 + history.points.iter().map(|p| p.payload.len() + 48).sum::<usize>());
    body.push_str("{\"points\":[");
    for (i, point) in history.points.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let at = point.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let _ = write!(body, "{{\"at\":\"{at}\",\"payload\":{}}}", point.payload);
    }
    body.push(']');
    if history.truncated {
        body.push_str(",\"truncated\":true");
    }
    body.push('}');
    Ok(HttpResponse::Ok().insert_header((CONTENT_TYPE, "application/json")).body(body))
}
