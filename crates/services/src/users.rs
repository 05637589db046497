//! Users, roles and passwords (argon2id hashes only; a password is never stored or logged).

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::{Actor, Role, User};
use serde::Deserialize;

use crate::db::{Database, read, write_tx};
use crate::error::{ServiceError, ServiceResult};
use crate::outbox::now;
use crate::schema::users;
use crate::validate;

/// `POST /api/v1/users`.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewUser {
    /// Login name: 3–64 letters, digits, `.`, `_`, `-`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{3,64}$"))]
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

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
struct UserRow {
    id: i64,
    username: String,
    password_hash: String,
    role: String,
}

impl TryFrom<UserRow> for User {
    type Error = ServiceError;
    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        Ok(User {
            id: row.id,
            username: row.username,
            role: row.role.parse().map_err(|e| ServiceError::Internal(Box::new(e)))?,
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

/// Accounts: creation (admins only), login checks, look-ups.
#[derive(Clone)]
pub struct UserService {
    db: Database,
}

impl UserService {
    /// A service on `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Creates a user. Only admins may; a taken username is a conflict.
    pub async fn create(&self, actor: &Actor, input: NewUser) -> ServiceResult<User> {
        if actor.role != Role::Admin {
            return Err(ServiceError::Forbidden("only admins manage users".into()));
        }
        self.insert(input).await
    }

    /// Creates the first admin when there is no user at all; returns `None` otherwise.
    pub async fn bootstrap_admin(&self, username: &str, password: &str) -> ServiceResult<Option<User>> {
        let count: i64 =
            read!(self.db, |conn| users::table.count().get_result(conn).await.map_err(ServiceError::from))?;
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
        let hash = hash_password(input.password).await?;
        let row =
            NewUserRow { username: &username, password_hash: &hash, role: role.as_str(), created_at: now() };
        let inserted: ServiceResult<UserRow> = write_tx!(self.db, |conn| {
            Ok(diesel::insert_into(users::table)
                .values(&row)
                .returning(UserRow::as_returning())
                .get_result(conn)
                .await?)
        });
        match inserted {
            Ok(row) => row.try_into(),
            Err(ServiceError::Conflict(_)) => {
                Err(ServiceError::Conflict(format!("the username {username:?} is taken")))
            }
            Err(other) => Err(other),
        }
    }

    /// Checks a username and password. Takes as long for an unknown user as for a wrong
    /// password, and says the same.
    pub async fn authenticate(&self, username: &str, password: &str) -> ServiceResult<User> {
        if password.len() > validate::limits::PASSWORD_MAX * 4
            || username.len() > validate::limits::USERNAME * 4
        {
            return Err(ServiceError::InvalidCredentials);
        }
        let row: Option<UserRow> = read!(self.db, |conn| users::table
            .filter(users::username.eq(username))
            .select(UserRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(ServiceError::from))?;
        let hash = match &row {
            Some(row) => row.password_hash.clone(),
            None => dummy_hash().to_owned(),
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok()
        })
        .await
        .map_err(|e| ServiceError::Internal(Box::new(e)))?;
        match row {
            Some(row) if ok => row.try_into(),
            _ => Err(ServiceError::InvalidCredentials),
        }
    }

    /// A user by id.
    pub async fn get(&self, id: i64) -> ServiceResult<User> {
        let row: Option<UserRow> = read!(self.db, |conn| users::table
            .find(id)
            .select(UserRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(ServiceError::from))?;
        row.ok_or(ServiceError::not_found("user", id))?.try_into()
    }

    /// Every user, by id.
    pub async fn list(&self) -> ServiceResult<Vec<User>> {
        let rows: Vec<UserRow> = read!(self.db, |conn| users::table
            .select(UserRow::as_select())
            .order(users::id)
            .load(conn)
            .await
            .map_err(ServiceError::from))?;
        rows.into_iter().map(User::try_from).collect()
    }
}

/// Hashes a password with argon2id (random salt, PHC string), off the async runtime.
pub async fn hash_password(password: String) -> ServiceResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| ServiceError::internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| ServiceError::Internal(Box::new(e)))?
}

/// Checks `password` against a PHC hash string.
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), hash).is_ok()
}

/// A hash to verify against when the user does not exist, so both cases cost the same.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        Argon2::default().hash_password(b"pulse-timing-equaliser").map(|h| h.to_string()).unwrap_or_default()
    })
}
