//! `/api/v1/users` (admins) and `POST /api/v1/me/password` (everyone): accounts.
//!
//! Every request that hashes or checks a password here goes through the password-attempt
//! limiter (keyed on the caller and the client address) and the services' password gate.

use actix_web::{HttpRequest, HttpResponse, web};
use domain_events::model::User;
use serde::Serialize;
use services::{NewUser, PasswordChange, UserChanges};

use super::{Authenticated, JsonBody};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};

/// `GET /api/v1/users`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UserList {
    /// Every user, by id.
    items: Vec<User>,
}

/// Lists every user, by id (admins only).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    responses(
        (status = 200, description = "Every user, by id", body = UserList),
        (status = 403, description = "Only admins manage users", body = ErrorBody),
        Authenticated,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_users(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, ApiError> {
    let actor = auth.actor;
    let items = state.db(async move |s| s.users.list(&actor).await).await?;
    Ok(HttpResponse::Ok().json(UserList { items }))
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
        (status = 403, description = "Only admins manage users", body = ErrorBody),
        (status = 409, description = "The username is taken", body = ErrorBody),
        (status = 429, description = "Too many password checks at once, or too many failed attempts from this admin or address", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let (actor, body) = (auth.actor, body.into_inner());
    let attempt =
        state.logins.begin_acting(&actor.username, crate::client_ip::client_address(&req), &state.limits)?;
    let outcome = state.db(async move |s| Ok(s.users.create(&actor, body).await)).await?;
    attempt.settle(&outcome);
    Ok(HttpResponse::Created().json(outcome?))
}

/// Changes a user's role, activity or password (admins only).
///
/// Every field is checked before anything changes; `{}` is refused. A `role` or `active`
/// equal to the current value changes nothing. A new role or password retires the user's
/// older tokens and tickets (`401`; open connections closed with `4401`); deactivating
/// refuses all of them (`401`; connections closed with `4403`). Demoting or deactivating the
/// last active admin is refused (`409`).
#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(("id" = i64, Path, description = "The user's id")),
    request_body = services::UserChanges,
    responses(
        (status = 200, description = "The user after the change", body = User),
        (status = 400, description = "Malformed JSON, wrong types, no field given, unknown role, bad password", body = ErrorBody),
        (status = 403, description = "Only admins manage users", body = ErrorBody),
        (status = 404, description = "No user with this id", body = ErrorBody),
        (status = 409, description = "The change would leave no active admin", body = ErrorBody),
        (status = 429, description = "Too many password checks at once, or too many failed attempts from this admin or address", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<i64>,
    body: web::Json<UserChanges>,
) -> Result<HttpResponse, ApiError> {
    let (actor, id, changes) = (auth.actor, id.into_inner(), body.into_inner());
    let attempt = match changes.password {
        Some(_) => Some(state.logins.begin_acting(
            &actor.username,
            crate::client_ip::client_address(&req),
            &state.limits,
        )?),
        None => None,
    };
    let outcome = state.db(async move |s| Ok(s.users.update(&actor, id, changes).await)).await?;
    if let Some(attempt) = attempt {
        attempt.settle(&outcome);
    }
    let user = outcome?;
    // From the next request on, here: the event clears the other instances' caches.
    state.accounts.invalidate(user.id);
    Ok(HttpResponse::Ok().json(user))
}

/// Changes the caller's own password. Every token and ticket the caller was issued before
/// is retired (they log in again).
#[utoipa::path(
    post,
    path = "/api/v1/me/password",
    tag = "auth",
    request_body = services::PasswordChange,
    responses(
        (status = 204, description = "Changed; log in again with the new password"),
        (status = 400, description = "Malformed JSON, wrong types, missing fields, a new password that is not 8–256 characters", body = ErrorBody),
        (status = 403, description = "The current password is wrong", body = ErrorBody),
        (status = 429, description = "Too many failed attempts for this user or address, or too many password checks at once", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let (actor, change) = (auth.actor, body.into_inner());
    let attempt =
        state.logins.begin(&actor.username, crate::client_ip::client_address(&req), &state.limits)?;
    let user_id = actor.user_id;
    let outcome = state.db(async move |s| Ok(s.users.change_password(&actor, change).await)).await?;
    attempt.settle(&outcome);
    outcome?;
    state.accounts.invalidate(user_id);
    Ok(HttpResponse::NoContent().finish())
}
