//! `/healthz` (the process serves) and `/readyz` (the database answers).

use actix_web::{HttpResponse, web};

use crate::AppState;
use crate::error::ApiError;

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.services.db.ping().await.is_err() {
        return Err(ApiError::unavailable("the database cannot be reached"));
    }
    if let Some(check) = state.readiness.iter().find(|c| !c.is_ready()) {
        return Err(ApiError::unavailable(format!("{} is not ready", check.name())));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}
