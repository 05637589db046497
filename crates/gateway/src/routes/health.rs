//! `/healthz` (the process serves) and `/readyz` (the database answers).

use actix_web::{HttpResponse, web};

use crate::AppState;
use crate::error::ApiError;

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.services.db.ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))),
        Err(_) => Err(ApiError::unavailable("the database cannot be reached")),
    }
}
