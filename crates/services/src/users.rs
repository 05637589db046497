//! Users: accounts, roles, activity and passwords (argon2id hashes only, through the one
//! [`PasswordGate`]; a password is never stored or logged).
//!
//! A change to a user's role, activity or password is announced as `user.updated`, recorded
//! in the event log with the change like every other event, carrying the instant before
//! which the user's credentials (tokens, tickets) are retired — so every instance can refuse
//! them and close the user's connections.
//!
//! Reason to change: the rules of accounts. Must never depend on HTTP or know how tokens
//! are carried.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::{Actor, Role, User, UserUpdate};
use domain_events::{DomainEvent, EventPublisher};
use serde::Deserialize;

use crate::db::{Conn, Database, db_run};
use crate::error::{ServiceError, ServiceResult, ValidationError};
use crate::outbox::{commit_and_announce, now, record_events, utc};
use crate::passwords::{PasswordGate, PasswordPermit};
use crate::schema::{users, ws_tickets};
use crate::validate::{self, limits};

/// `POST /api/v1/users`.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewUser {
    /// Login name: 3–64 letters, digits, `.`, `_`, `-`.
    #[cfg_attr(feature = "openapi", schema(pattern = "{username}"))]
    pub username: String,
    /// 8–256 characters; only its hash is kept.
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 256, format = Password))]
    pub password: String,
    /// `admin`, `manager` or `staff`.
    #[cfg_attr(feature = "openapi", schema(value_type = domain_events::model::Role))]
    pub role: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// `PATCH /api/v1/users/{id}`: what an admin changes; absent fields stay as they are.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserChanges {
    /// The new role (a change retires the user's older tokens).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<domain_events::model::Role>))]
    pub role: Option<String>,
    /// `false` deactivates (no login; tokens, tickets and connections refused), `true`
    /// reactivates.
    pub active: Option<bool>,
    /// A new password, 8–256 characters (retires the user's older tokens).
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 256, format = Password))]
    pub password: Option<String>,
}

impl std::fmt::Debug for UserChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserChanges")
            .field("role", &self.role)
            .field("active", &self.active)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `POST /api/v1/me/password`.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasswordChange {
    /// The caller's password now.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256, format = Password))]
    pub current_password: String,
    /// The new one, 8–256 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 256, format = Password))]
    pub new_password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChange").finish_non_exhaustive()
    }
}

/// What authenticating a request needs to know about its user now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// The login name.
    pub username: String,
    /// The current role (a token claiming another one predates a role change).
    pub role: Role,
    /// Whether the user may use the API at all.
    pub active: bool,
    /// Credentials issued before this instant (milliseconds since the epoch) are retired.
    pub tokens_valid_after_ms: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
struct UserRow {
    id: i64,
    username: String,
    password_hash: String,
    role: String,
    created_at: NaiveDateTime,
    active: bool,
    tokens_valid_after_ms: i64,
}

impl UserRow {
    fn role(&self) -> ServiceResult<Role> {
        self.role.parse().map_err(|e| ServiceError::Internal(Box::new(e)))
    }
}

impl TryFrom<UserRow> for User {
    type Error = ServiceError;
    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        Ok(User {
            id: row.id,
            role: row.role()?,
            username: row.username,
            active: row.active,
            created_at: utc(row.created_at),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUserRow<'a> {
    username: &'a str,
    password_hash: &'a str,
    role: &'static str,
    created_at: NaiveDateTime,
}

#[derive(AsChangeset)]
#[diesel(table_name = users)]
struct UserChangeset<'a> {
    role: &'static str,
    active: bool,
    tokens_valid_after_ms: i64,
    /// `None` leaves the hash as it is.
    password_hash: Option<&'a str>,
}

/// Serializes the transactions that may change who the active admins are, so two admins
/// demoting or deactivating each other at the same moment cannot both succeed.
async fn lock_user_changes(conn: &mut Conn<'_>) -> ServiceResult<()> {
    match conn {
        // Write transactions are `BEGIN IMMEDIATE` on the one writer: already serialized.
        Conn::Sqlite(_) => Ok(()),
        // Held until the transaction ends. Under READ COMMITTED each statement after it sees
        // every change committed before it was granted.
        Conn::Postgres(c) => {
            diesel::sql_query("SELECT pg_advisory_xact_lock(7316900213)").execute(*c).await?;
            Ok(())
        }
    }
}

/// Accounts: creation and changes (admins only), password changes (the user), login checks,
/// look-ups.
#[derive(Clone)]
pub struct UserService {
    db: Database,
    publisher: Arc<dyn EventPublisher>,
    gate: PasswordGate,
}

impl UserService {
    /// A service on `db`, announcing changes on `publisher`, hashing through `gate`.
    pub fn new(db: Database, publisher: Arc<dyn EventPublisher>, gate: PasswordGate) -> Self {
        Self { db, publisher, gate }
    }

    /// The bound every password check and hash goes through.
    pub fn gate(&self) -> &PasswordGate {
        &self.gate
    }

    /// Creates a user. Only admins may; a taken username is a conflict.
    pub async fn create(&self, actor: &Actor, input: NewUser) -> ServiceResult<User> {
        require_admin(actor)?;
        self.insert(input).await
    }

    /// Creates the first admin when there is no user at all; returns `None` otherwise.
    pub async fn bootstrap_admin(&self, username: &str, password: &str) -> ServiceResult<Option<User>> {
        let count: i64 =
            self.db.read(async |conn| db_run!(conn, |c| users::table.count().get_result(c).await)).await?;
        if count > 0 {
            return Ok(None);
        }
        let input = NewUser { username: username.into(), password: password.into(), role: "admin".into() };
        self.insert(input).await.map(Some)
    }

    async fn insert(&self, input: NewUser) -> ServiceResult<User> {
        let username = validate::username("username", &input.username)?;
        validate::password(&input.password)?;
        let role: Role = validate::enum_value("role", &input.role)?;
        let hash = self.gate.hash(input.password).await?;
        let row =
            NewUserRow { username: &username, password_hash: &hash, role: role.as_str(), created_at: now() };
        let inserted: ServiceResult<UserRow> = self
            .db
            .write(async |conn| {
                db_run!(conn, |c| diesel::insert_into(users::table)
                    .values(&row)
                    .returning(UserRow::as_returning())
                    .get_result(c)
                    .await)
            })
            .await;
        match inserted {
            Ok(row) => row.try_into(),
            Err(ServiceError::Conflict(_)) => {
                Err(ServiceError::Conflict(format!("the username {username:?} is taken")))
            }
            Err(other) => Err(other),
        }
    }

    /// Checks a username and password. An unknown user costs the same as a wrong password
    /// (a dummy hash is verified), and both, like a deactivated user, get the same answer.
    pub async fn authenticate(&self, username: &str, password: &str) -> ServiceResult<User> {
        // The permit first: a check refused by the bound costs no database read either.
        let permit = self.gate.try_permit()?;
        self.authenticate_with(permit, username, password).await
    }

    /// [`UserService::authenticate`] with a permit of the gate the caller already took (so a
    /// refusal costs it nothing more than asking).
    pub async fn authenticate_with(
        &self,
        permit: PasswordPermit,
        username: &str,
        password: &str,
    ) -> ServiceResult<User> {
        if password.len() > limits::PASSWORD_MAX * 4 || username.len() > limits::USERNAME * 4 {
            return Err(ServiceError::InvalidCredentials);
        }
        let row: Option<UserRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| users::table
                    .filter(users::username.eq(username))
                    .select(UserRow::as_select())
                    .first(c)
                    .await
                    .optional())
            })
            .await?;
        let hash = row.as_ref().map(|r| r.password_hash.clone());
        let password = password.to_owned();
        let matches = permit.run(move |h| h.verify(&password, hash.as_deref())).await?;
        match row {
            Some(row) if matches && row.active => row.try_into(),
            _ => Err(ServiceError::InvalidCredentials),
        }
    }

    /// A user by id.
    pub async fn get(&self, id: i64) -> ServiceResult<User> {
        self.row(id).await?.ok_or(ServiceError::not_found("user", id))?.try_into()
    }

    async fn row(&self, id: i64) -> ServiceResult<Option<UserRow>> {
        self.db
            .read(async |conn| {
                db_run!(conn, |c| users::table
                    .find(id)
                    .select(UserRow::as_select())
                    .first(c)
                    .await
                    .optional())
            })
            .await
    }

    /// What a request authenticated as user `id` must be checked against; `None` when there
    /// is no such user.
    pub async fn account_state(&self, id: i64) -> ServiceResult<Option<AccountState>> {
        let Some(row) = self.row(id).await? else { return Ok(None) };
        Ok(Some(AccountState {
            role: row.role()?,
            username: row.username,
            active: row.active,
            tokens_valid_after_ms: row.tokens_valid_after_ms,
        }))
    }

    /// Every user, by id (admins only).
    pub async fn list(&self, actor: &Actor) -> ServiceResult<Vec<User>> {
        require_admin(actor)?;
        let rows: Vec<UserRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| users::table.select(UserRow::as_select()).order(users::id).load(c).await)
            })
            .await?;
        rows.into_iter().map(User::try_from).collect()
    }

    /// Changes a user's role, activity or password (admins only). Every field is checked
    /// before anything changes; `{}` is a validation error. A `role` or `active` equal to the
    /// current value changes nothing. A role change, a new password or a deactivation retires
    /// the user's credentials issued before it (and deletes their unredeemed tickets).
    /// Demoting or deactivating the last active admin is a conflict, also when two admins try
    /// at once. Emits `user.updated` when something changed.
    pub async fn update(&self, actor: &Actor, id: i64, changes: UserChanges) -> ServiceResult<User> {
        require_admin(actor)?;
        let role: Option<Role> =
            changes.role.as_deref().map(|r| validate::enum_value("role", r)).transpose()?;
        if let Some(password) = &changes.password {
            validate::password(password)?;
        }
        if role.is_none() && changes.active.is_none() && changes.password.is_none() {
            return Err(ValidationError::new("body", "give at least one of role, active, password").into());
        }
        let hash = match changes.password {
            Some(password) => Some(self.gate.hash(password).await?),
            None => None,
        };
        let at = now();
        let at_ms = utc(at).timestamp_millis();
        commit_and_announce(&self.db, &*self.publisher, async |conn| {
            lock_user_changes(conn).await?;
            let current = user_row(conn, id).await?;
            let Some(current) = current else { return Err(ServiceError::not_found("user", id)) };
            let role_now = current.role()?;
            let new_role = role.unwrap_or(role_now);
            let new_active = changes.active.unwrap_or(current.active);
            let role_changed = new_role != role_now;
            let deactivated = current.active && !new_active;
            if !role_changed && new_active == current.active && hash.is_none() {
                return Ok((User::try_from(current)?, Vec::new()));
            }
            if role_now == Role::Admin && current.active && (new_role != Role::Admin || !new_active) {
                let other_admins: i64 = db_run!(conn, |c| users::table
                    .filter(users::role.eq(Role::Admin.as_str()))
                    .filter(users::active.eq(true))
                    .filter(users::id.ne(id))
                    .count()
                    .get_result(c)
                    .await)?;
                if other_admins == 0 {
                    return Err(ServiceError::Conflict(format!(
                        "{} is the last active admin: make another user admin first",
                        current.username
                    )));
                }
            }
            let retire = role_changed || hash.is_some() || deactivated;
            let valid_after =
                if retire { at_ms.max(current.tokens_valid_after_ms) } else { current.tokens_valid_after_ms };
            let changeset = UserChangeset {
                role: new_role.as_str(),
                active: new_active,
                tokens_valid_after_ms: valid_after,
                password_hash: hash.as_deref(),
            };
            let row: UserRow = db_run!(conn, |c| diesel::update(users::table.find(id))
                .set(&changeset)
                .returning(UserRow::as_returning())
                .get_result(c)
                .await)?;
            if !new_active {
                delete_tickets(conn, id, i64::MAX).await?;
            } else if retire {
                delete_tickets(conn, id, valid_after).await?;
            }
            let user = User::try_from(row)?;
            let event = DomainEvent::UserUpdated(UserUpdate {
                user: user.clone(),
                tokens_valid_after: millis_to_utc(valid_after),
            });
            let events = record_events(conn, actor, at, [event]).await?;
            Ok((user, events))
        })
        .await
    }

    /// Changes the actor's own password, given the current one (wrong: [`ServiceError::WrongPassword`]).
    /// Retires every credential the user was issued before (their other tokens and tickets):
    /// they log in again. Emits `user.updated`.
    pub async fn change_password(&self, actor: &Actor, change: PasswordChange) -> ServiceResult<()> {
        validate::password_field("newPassword", &change.new_password)?;
        let current_len = change.current_password.chars().count();
        if current_len == 0 || current_len > limits::PASSWORD_MAX {
            return Err(ValidationError::new(
                "currentPassword",
                format!("must be 1 to {} characters", limits::PASSWORD_MAX),
            )
            .into());
        }
        // One permit for both, taken first: checking the old password, hashing the new one.
        let permit = self.gate.try_permit()?;
        let row = self.row(actor.user_id).await?.filter(|r| r.active).ok_or(ServiceError::WrongPassword)?;
        let stored = row.password_hash;
        let PasswordChange { current_password, new_password } = change;
        let hash = permit
            .run(move |h| match h.verify(&current_password, Some(&stored)) {
                true => h.hash(&new_password).map(Some),
                false => Ok(None),
            })
            .await??
            .ok_or(ServiceError::WrongPassword)?;
        let at = now();
        let at_ms = utc(at).timestamp_millis();
        let id = actor.user_id;
        commit_and_announce(&self.db, &*self.publisher, async |conn| {
            let current = user_row(conn, id).await?;
            let Some(current) = current.filter(|r| r.active) else { return Err(ServiceError::WrongPassword) };
            let valid_after = at_ms.max(current.tokens_valid_after_ms);
            let row: UserRow = db_run!(conn, |c| diesel::update(users::table.find(id))
                .set((users::password_hash.eq(&hash), users::tokens_valid_after_ms.eq(valid_after)))
                .returning(UserRow::as_returning())
                .get_result(c)
                .await)?;
            delete_tickets(conn, id, valid_after).await?;
            let user = User::try_from(row)?;
            let event =
                DomainEvent::UserUpdated(UserUpdate { user, tokens_valid_after: millis_to_utc(valid_after) });
            Ok(((), record_events(conn, actor, at, [event]).await?))
        })
        .await
    }
}

/// User `id`'s row, if there is one.
async fn user_row(conn: &mut Conn<'_>, id: i64) -> ServiceResult<Option<UserRow>> {
    db_run!(conn, |c| users::table.find(id).select(UserRow::as_select()).first(c).await.optional())
}

/// Deletes user `id`'s unredeemed tickets issued by tokens from before `issued_before_ms`
/// (`i64::MAX`: all of them).
async fn delete_tickets(conn: &mut Conn<'_>, id: i64, issued_before_ms: i64) -> ServiceResult<()> {
    db_run!(conn, |c| diesel::delete(
        ws_tickets::table
            .filter(ws_tickets::user_id.eq(id))
            .filter(ws_tickets::token_issued_at_ms.lt(issued_before_ms)),
    )
    .execute(c)
    .await)?;
    Ok(())
}

fn require_admin(actor: &Actor) -> ServiceResult<()> {
    if actor.role == Role::Admin {
        Ok(())
    } else {
        Err(ServiceError::Forbidden("only admins manage users".into()))
    }
}

fn millis_to_utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
