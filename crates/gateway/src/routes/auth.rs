//! `POST /auth/login`, `GET /me`, `POST /users`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use domain_events::model::User;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;

#[derive(Deserialize)]
pub(crate) struct Login {
    username: String,
    password: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginAnswer {
    token: String,
    expires_at: DateTime<Utc>,
    user: User,
}

pub(crate) async fn login(
    state: web::Data<AppState>,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let user = state.services.users.authenticate(&body.username, &body.password).await?;
    let (token, expires_at) = state.jwt.issue(&user)?;
    tracing::info!(user = %user.username, "login");
    Ok(HttpResponse::Ok().json(LoginAnswer { token, expires_at, user }))
}

pub(crate) async fn me(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, ApiError> {
    match state.services.users.get(auth.actor.user_id).await {
        Ok(user) => Ok(HttpResponse::Ok().json(user)),
        Err(services::ServiceError::NotFound { .. }) => {
            Err(ApiError::unauthorized("the token's user does not exist"))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn create_user(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<services::NewUser>,
) -> Result<HttpResponse, ApiError> {
    let user = state.services.users.create(&auth.actor, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(user))
}

pub(crate) async fn list_users(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, ApiError> {
    auth.require(&[domain_events::model::Role::Admin], "list users")?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"items": state.services.users.list().await?})))
}
