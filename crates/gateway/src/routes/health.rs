//! `/healthz` (the process serves) and `/readyz` (the database answers).

use actix_web::{HttpResponse, web};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// The body of a health answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct HealthStatus {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "Serving", body = HealthStatus),
    )
)]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthStatus { status: "ok" })
}

/// The database (and every other dependency) answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthStatus),
        (status = 503, description = "The database or another dependency cannot be reached", body = ErrorBody),
    )
)]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.db(async move |s| s.db.ping().await).await.is_err() {
        return Err(ApiError::unavailable("the database cannot be reached"));
    }
    if let Some(check) = state.readiness.iter().find(|c| !c.is_ready()) {
        return Err(ApiError::unavailable(format!("{} is not ready", check.name())));
    }
    Ok(HttpResponse::Ok().json(HealthStatus { status: "ready" }))
}
