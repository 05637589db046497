//! What can go wrong in a service call. The gateway maps each variant to an HTTP status;
//! nothing here knows about HTTP.

use std::fmt;

/// A service call's failure. A call that fails changed nothing and emitted no event.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input broke a rule (required, length, enum value, …). Maps to 400.
    #[error("{0}")]
    Validation(#[from] ValidationError),
    /// Wrong username or password; the same answer whether the user exists or not. Maps to 401.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The caller's own current password was wrong (changing it). Maps to 403.
    #[error("the current password is wrong")]
    WrongPassword,
    /// The actor's role may not do this. Maps to 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such record. Maps to 404.
    #[error("{entity} {id} not found")]
    NotFound {
        /// Which kind of record.
        entity: &'static str,
        /// The id asked for.
        id: i64,
    },
    /// The change is not allowed from the record's current state, or clashes with another
    /// record (a taken username). Maps to 409.
    #[error("{0}")]
    Conflict(String),
    /// Every password check the process allows at once is running; nothing was done, try
    /// again in a moment. Maps to 429 with `Retry-After`.
    #[error("too many password checks at once; try again in a moment")]
    Busy,
    /// The database cannot be reached right now. Maps to 503.
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A bug or a broken invariant. Maps to 500; the cause is logged, not shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// One input that broke a rule, named by its wire (camelCase) field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The field, as clients spell it (`guestName`).
    pub field: &'static str,
    /// What is wrong with it, in plain words.
    pub message: String,
}

impl ValidationError {
    /// A rule broken by `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl ServiceError {
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ServiceError::Internal(message.into().into())
    }

    pub(crate) fn not_found(entity: &'static str, id: i64) -> Self {
        ServiceError::NotFound { entity, id }
    }
}

impl From<diesel::result::Error> for ServiceError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match error {
            // The database's own text names its constraints and values: logged, never shown.
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                tracing::debug!(constraint = ?info.constraint_name(), detail = %info.message(), "unique violation");
                ServiceError::Conflict("a record with these values already exists".into())
            }
            // Every other reference is checked before writing; only the acting user can be
            // missing (a token for a user that does not exist).
            Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                ServiceError::Forbidden("the acting user does not exist".into())
            }
            // Closed or unreachable; a transient conflict the client may simply retry; a
            // server that became a read-only replica (a failover in progress).
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::SerializationFailure
                | DatabaseErrorKind::ReadOnlyTransaction,
                _,
            )
            | Error::BrokenTransactionManager => ServiceError::Unavailable(Box::new(error)),
            // SQLite answers "database is locked" when the busy timeout runs out; PostgreSQL
            // ends a session it terminates, or shuts down, with an error of its own
            // (SQLSTATE 57P01-57P03, which diesel does not expose: told by its text).
            Error::DatabaseError(DatabaseErrorKind::Unknown, ref info)
                if means_unavailable(info.message()) =>
            {
                ServiceError::Unavailable(Box::new(error))
            }
            other => ServiceError::Internal(Box::new(other)),
        }
    }
}

/// Whether a database's error message says it cannot serve right now (rather than that
/// the query was wrong).
fn means_unavailable(message: &str) -> bool {
    // PostgreSQL's texts in English (its default `lc_messages`); with another language these
    // answer 500 instead of 503.
    const SIGNS: [&str; 6] = [
        "is locked", // SQLite: "database is locked", "database table is locked"
        "terminating connection",
        "the database system is shutting down",
        "the database system is starting up",
        "the database system is in recovery mode",
        "deadlock detected",
    ];
    SIGNS.iter().any(|sign| message.contains(sign))
}

impl From<diesel::ConnectionError> for ServiceError {
    fn from(error: diesel::ConnectionError) -> Self {
        ServiceError::Unavailable(Box::new(error))
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<bb8::RunError<E>> for ServiceError {
    fn from(error: bb8::RunError<E>) -> Self {
        ServiceError::Unavailable(Box::new(error))
    }
}

/// Shorthand for service results.
pub type ServiceResult<T> = Result<T, ServiceError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_that_cannot_serve_now_is_unavailable_not_a_bug() {
        for message in [
            "database is locked",
            "database table is locked",
            "terminating connection due to administrator command",
            "terminating connection because of crash of another server process",
            "the database system is shutting down",
            "the database system is starting up",
            "deadlock detected",
        ] {
            assert!(means_unavailable(message), "{message}");
        }
        for message in ["syntax error at or near \"x\"", "column \"x\" does not exist", "locked out"] {
            assert!(!means_unavailable(message), "{message}");
        }
    }
}
