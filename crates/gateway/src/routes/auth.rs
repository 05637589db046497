//! `POST /auth/login`, `GET /me`, `POST /ws-ticket`: who the caller is.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use domain_events::model::User;
use serde::{Deserialize, Serialize};

use super::{Authenticated, JsonBody};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};

/// `POST /api/v1/auth/login`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Login {
    /// The login name.
    username: String,
    /// The password.
    #[schema(format = Password)]
    password: String,
}

/// A successful login.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LoginAnswer {
    /// An HS256 JWT for `Authorization: Bearer`.
    token: String,
    /// When the token stops being valid.
    expires_at: DateTime<Utc>,
    /// Who logged in.
    user: User,
}

/// Exchanges a username and password for a token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "Logged in", body = LoginAnswer),
        (status = 400, description = "Malformed JSON, wrong types, missing or empty fields, a username no user can have, a password over 256 characters", body = ErrorBody),
        (status = 401, description = "Wrong username or password, or a deactivated user (the same answer for all)", body = ErrorBody),
        (status = 429, description = "Too many failed attempts for this username or address, or too many password checks at once", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The database cannot be reached", body = ErrorBody),
        JsonBody,
    )
)]
pub(crate) async fn login(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let Login { username, password } = body.into_inner();
    // A login that cannot succeed (no such name can exist, or an over-long password) is
    // refused before it touches the limiter or the password gate.
    services::validate::login(&username, &password).map_err(|e| ApiError::validation(e.to_string()))?;
    let client = crate::client_ip::client_address(&req);
    let attempt = state.logins.begin(&username, client, &state.limits)?;
    // Over the password bound: refused here, before any other work.
    let permit = match state.services.users.gate().try_permit() {
        Ok(permit) => permit,
        Err(busy) => {
            attempt.settle::<()>(&Err(services::ServiceError::Busy));
            return Err(busy.into());
        }
    };
    // The token's `iat` is taken before the user is read: a role or password change that
    // commits after this read retires the token, however the two interleave.
    let issued_at = std::time::SystemTime::now();
    let outcome =
        state.db(async move |s| Ok(s.users.authenticate_with(permit, &username, &password).await)).await?;
    attempt.settle(&outcome);
    let user = outcome?;
    let (token, expires_at) = state.jwt.issue_at(&user, issued_at)?;
    tracing::info!(user = %user.username, "login");
    Ok(HttpResponse::Ok().json(LoginAnswer { token, expires_at, user }))
}

/// The caller's user.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "auth",
    responses(
        (status = 200, description = "The caller", body = User),
        (status = 401, description = "Missing, malformed, expired, retired or badly signed token, or a deactivated or deleted user", body = ErrorBody),
        (status = 503, description = "The database cannot be reached", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn me(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, ApiError> {
    let user_id = auth.actor.user_id;
    match state.db(async move |s| Ok(s.users.get(user_id).await)).await? {
        Ok(user) => Ok(HttpResponse::Ok().json(user)),
        Err(services::ServiceError::NotFound { .. }) => {
            Err(ApiError::unauthorized("the token's user does not exist"))
        }
        Err(e) => Err(e.into()),
    }
}

/// A single-use WebSocket ticket.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ticket {
    /// Pass as `/ws?ticket=`; works once.
    ticket: String,
    /// When it stops being valid (30 s, or the token's expiry if sooner).
    expires_at: DateTime<Utc>,
}

/// `POST /api/v1/ws-ticket`: a single-use ticket for `/ws?ticket=`, valid 30 s.
#[utoipa::path(
    post,
    path = "/api/v1/ws-ticket",
    tag = "auth",
    responses(
        (status = 200, description = "A ticket", body = Ticket),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn ws_ticket(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, ApiError> {
    let session_end = DateTime::<Utc>::from(auth.claims.expires_at());
    let issued_at = auth.claims.iat.millis();
    let actor = auth.actor;
    let (ticket, expires_at) =
        state.db(async move |s| s.tickets.issue(&actor, session_end, issued_at).await).await?;
    Ok(HttpResponse::Ok().json(Ticket { ticket, expires_at }))
}
