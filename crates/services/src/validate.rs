//! Input rules shared by every service: required, non-empty, maximum lengths, enum values.

use std::str::FromStr;

use domain_events::model::UnknownValue;

use crate::error::ValidationError;

/// Longest accepted value of each kind of field, in characters.
pub mod limits {
    /// `type`, `department`, `kind`, `channel`.
    pub const SHORT_TEXT: usize = 64;
    /// `guestName`.
    pub const NAME: usize = 200;
    /// `subject`, `summary`, `reason`.
    pub const LINE: usize = 1000;
    /// `description`.
    pub const DESCRIPTION: usize = 4000;
    /// An approval's JSON `payload`, serialized, in bytes.
    pub const PAYLOAD_BYTES: usize = 32 * 1024;
    /// Usernames: 3 to 64 of `A–Z a–z 0–9 . _ -`.
    pub const USERNAME: usize = 64;
    /// Passwords: 8 to 256 characters.
    pub const PASSWORD_MIN: usize = 8;
    /// See [`PASSWORD_MIN`].
    pub const PASSWORD_MAX: usize = 256;
    /// Page size.
    pub const PAGE_MAX: i64 = 200;
    /// Page size when none is asked for.
    pub const PAGE_DEFAULT: i64 = 50;
}

/// The OpenAPI `pattern` of each rule here, named once. A schema attribute takes only a
/// string literal, so a field writes the name in braces (`pattern = "{visible_text}"`) and the
/// gateway puts the expression in its place when it builds the document ([`patterns::named`]).
pub mod patterns {
    /// [`super::required_text`]: at least one visible character, and no control characters
    /// other than tab, line feed and carriage return.
    pub const VISIBLE_TEXT: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";
    /// [`super::username`]: 3 to 64 letters, digits, `.`, `_` or `-`.
    pub const USERNAME: &str = r"^[A-Za-z0-9._-]{3,64}$";

    /// The expression a named pattern (`{visible_text}`, `{username}`) stands for.
    pub fn named(pattern: &str) -> Option<&'static str> {
        match pattern {
            "{visible_text}" => Some(VISIBLE_TEXT),
            "{username}" => Some(USERNAME),
            _ => None,
        }
    }
}

/// A required text field: trimmed, non-empty, at most `max` characters, no control characters
/// other than line breaks and tabs.
pub fn required_text(field: &'static str, value: &str, max: usize) -> Result<String, ValidationError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    let count = value.chars().count();
    if count > max {
        return Err(ValidationError::new(field, format!("must be at most {max} characters (got {count})")));
    }
    if value.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// An optional text field: absent stays absent; present follows [`required_text`].
pub fn optional_text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    value.map(|v| required_text(field, v, max)).transpose()
}

/// A username: 3–64 characters of letters, digits, `.`, `_` and `-`.
pub fn username(field: &'static str, value: &str) -> Result<String, ValidationError> {
    let ok_chars = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let len = value.chars().count();
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if !ok_chars || !(3..=limits::USERNAME).contains(&len) {
        return Err(ValidationError::new(
            field,
            format!("must be 3 to {} letters, digits, '.', '_' or '-'", limits::USERNAME),
        ));
    }
    Ok(value.to_owned())
}

/// A new password: 8–256 characters.
pub fn password(value: &str) -> Result<(), ValidationError> {
    password_field("password", value)
}

/// A new password in a field with another name (`newPassword`): 8–256 characters.
pub fn password_field(field: &'static str, value: &str) -> Result<(), ValidationError> {
    let len = value.chars().count();
    if !(limits::PASSWORD_MIN..=limits::PASSWORD_MAX).contains(&len) {
        return Err(ValidationError::new(
            field,
            format!("must be {} to {} characters", limits::PASSWORD_MIN, limits::PASSWORD_MAX),
        ));
    }
    Ok(())
}

/// The shape of a login: a username that could exist (as [`username`]) and a password of at
/// most 256 characters. Checked before a login touches the limiter or the hash, so a request
/// that cannot succeed costs nothing and leaves no trace (no 64 KiB limiter keys).
pub fn login(username_value: &str, password_value: &str) -> Result<(), ValidationError> {
    username("username", username_value)?;
    let len = password_value.chars().count();
    if len == 0 || len > limits::PASSWORD_MAX {
        return Err(ValidationError::new(
            "password",
            format!("must be 1 to {} characters", limits::PASSWORD_MAX),
        ));
    }
    Ok(())
}

/// One of an enum's wire values.
///
/// ```
/// use domain_events::model::TaskStatus;
/// let err = services::validate::enum_value::<TaskStatus>("status", "done").unwrap_err();
/// assert_eq!(err.field, "status");
/// ```
pub fn enum_value<T: FromStr<Err = UnknownValue>>(
    field: &'static str,
    value: &str,
) -> Result<T, ValidationError> {
    value.parse().map_err(|e: UnknownValue| ValidationError::new(field, e.to_string()))
}

/// Which page of a listing: newest first, `cursor` is the last id of the previous page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page: 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// Only items with an id below this one.
    pub cursor: Option<i64>,
}

impl PageRequest {
    /// Checks the page: `limit` 1–200 (default 50) and a positive `cursor`.
    pub fn validated(self) -> Result<(i64, Option<i64>), ValidationError> {
        let limit = self.limit.unwrap_or(limits::PAGE_DEFAULT);
        if !(1..=limits::PAGE_MAX).contains(&limit) {
            return Err(ValidationError::new("limit", format!("must be between 1 and {}", limits::PAGE_MAX)));
        }
        if let Some(cursor) = self.cursor
            && cursor < 1
        {
            return Err(ValidationError::new("cursor", "must be a positive id"));
        }
        Ok((limit, self.cursor))
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_cursor: Option<i64>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` items fetched newest first.
    pub(crate) fn from_overfetch(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Self {
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        let next_cursor = if more { items.last().map(id) } else { None };
        Self { items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_text_rules() {
        assert_eq!(required_text("type", "  clean  ", 10), Ok("clean".into()));
        assert_eq!(required_text("type", "   ", 10).unwrap_err().message, "must not be empty");
        assert!(required_text("type", "ééééééééééé", 10).unwrap_err().message.contains("at most 10"));
        assert_eq!(required_text("type", "éééééééééé", 10), Ok("éééééééééé".into()));
        assert!(required_text("type", "a\u{0}b", 10).is_err());
        assert_eq!(required_text("type", "a\nb", 10), Ok("a\nb".into()));
    }

    #[test]
    fn username_and_password_rules() {
        assert!(username("username", "ana.m-1_x").is_ok());
        assert!(username("username", "ab").is_err());
        assert!(username("username", "ana maria").is_err());
        assert!(username("username", &"a".repeat(65)).is_err());
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(password(&"x".repeat(257)).is_err());
    }

    #[test]
    fn page_rules() {
        assert_eq!(PageRequest::default().validated(), Ok((50, None)));
        assert_eq!(PageRequest { limit: Some(200), cursor: Some(9) }.validated(), Ok((200, Some(9))));
        assert_eq!(PageRequest { limit: Some(201), cursor: None }.validated().unwrap_err().field, "limit");
        assert_eq!(PageRequest { limit: Some(0), cursor: None }.validated().unwrap_err().field, "limit");
        assert_eq!(PageRequest { limit: None, cursor: Some(0) }.validated().unwrap_err().field, "cursor");
        let page = Page::from_overfetch(vec![5, 4, 3], 2, |i| *i);
        assert_eq!(page, Page { items: vec![5, 4], next_cursor: Some(4) });
        let last = Page::from_overfetch(vec![2, 1], 2, |i| *i);
        assert_eq!(last.next_cursor, None);
    }
}
