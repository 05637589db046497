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
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let address = req.peer_addr().map(|a| a.ip());
    state.logins.check(&body.username, address, &state.limits)?;
    let user = match state.services.users.authenticate(&body.username, &body.password).await {
        Ok(user) => user,
        Err(services::ServiceError::InvalidCredentials) => {
            state.logins.failed(&body.username, address, &state.limits);
            return Err(services::ServiceError::InvalidCredentials.into());
        }
        Err(other) => return Err(other.into()),
    };
    state.logins.succeeded(&user.username);
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ticket {
    ticket: String,
    expires_at: DateTime<Utc>,
}

/// `POST /api/v1/ws-ticket`: a single-use ticket for `/ws?ticket=`, valid 30 s.
pub(crate) async fn ws_ticket(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, ApiError> {
    let session_end = DateTime::<Utc>::from(auth.claims.expires_at());
    let (ticket, expires_at) = state.services.tickets.issue(&auth.actor, session_end).await?;
    Ok(HttpResponse::Ok().json(Ticket { ticket, expires_at }))
}
