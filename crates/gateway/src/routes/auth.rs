//! `POST /auth/login`, `GET /me`, `POST /users`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use domain_events::model::User;
use serde::{Deserialize, Serialize};

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

/// `GET /api/v1/users`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UserList {
    /// Every user, by username.
    items: Vec<User>,
}

/// Exchanges a username and password for a token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "Logged in", body = LoginAnswer),
        (status = 400, description = "Malformed JSON, wrong types, missing, empty or over-long fields", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 401, description = "Wrong username or password (the same answer for both)", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this username or address", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The database cannot be reached", body = ErrorBody),
    )
)]
pub(crate) async fn login(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let address = req.peer_addr().map(|a| a.ip());
    let Login { username, password } = body.into_inner();
    state.logins.check(&username, address, &state.limits)?;
    // The service's answer comes back as a value: a wrong password also counts against the
    // throttle, which only this handler knows about.
    let name = username.clone();
    let outcome = state.db(async move |s| Ok(s.users.authenticate(&name, &password).await)).await?;
    let user = match outcome {
        Ok(user) => user,
        Err(services::ServiceError::InvalidCredentials) => {
            state.logins.failed(&username, address, &state.limits);
            return Err(services::ServiceError::InvalidCredentials.into());
        }
        Err(other) => return Err(other.into()),
    };
    state.logins.succeeded(&user.username);
    let (token, expires_at) = state.jwt.issue(&user)?;
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
        (status = 401, description = "Missing, malformed, expired or badly signed token, or its user no longer exists", body = ErrorBody),
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

/// Creates a user (admins only).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    request_body = services::NewUser,
    responses(
        (status = 201, description = "The new user", body = User),
        (status = 400, description = "Malformed JSON, wrong types, missing, empty or over-long fields, bad username, password or role", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 403, description = "Only admins manage users", body = ErrorBody),
        (status = 409, description = "The username is taken", body = ErrorBody),
        (status = 503, description = "The database cannot be reached", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_user(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<services::NewUser>,
) -> Result<HttpResponse, ApiError> {
    let (actor, body) = (auth.actor, body.into_inner());
    let user = state.db(async move |s| s.users.create(&actor, body).await).await?;
    Ok(HttpResponse::Created().json(user))
}

/// Lists every user (admins only).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    responses(
        (status = 200, description = "Every user", body = UserList),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 403, description = "Only admins manage users", body = ErrorBody),
        (status = 503, description = "The database cannot be reached", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_users(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, ApiError> {
    auth.require(&[domain_events::model::Role::Admin], "list users")?;
    let items = state.db(async move |s| s.users.list().await).await?;
    Ok(HttpResponse::Ok().json(UserList { items }))
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
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 503, description = "The database cannot be reached", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn ws_ticket(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, ApiError> {
    let session_end = DateTime::<Utc>::from(auth.claims.expires_at());
    let actor = auth.actor;
    let (ticket, expires_at) = state.db(async move |s| s.tickets.issue(&actor, session_end).await).await?;
    Ok(HttpResponse::Ok().json(Ticket { ticket, expires_at }))
}
