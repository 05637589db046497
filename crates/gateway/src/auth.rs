//! JWT authentication: HS256 only, `exp` enforced, millisecond `iat`; and the check every
//! authenticated request and socket passes: the token's user exists, is active, has the
//! role the token claims, and changed neither role nor password since the token was issued.
//!
//! Reason to change: what makes a credential acceptable. Must never decide what a role may
//! do (services do).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use chrono::{DateTime, Utc};
use domain_events::model::{Actor, Role, User};
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::AppState;
use crate::error::ApiError;

/// The claims of a Pulse token (`docs/protocol.md` §2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string.
    pub sub: String,
    /// The username.
    pub username: String,
    /// The role.
    pub role: Role,
    /// Issued at: seconds since the epoch, fractional in the tokens Pulse issues.
    pub iat: IssuedAt,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
}

impl Claims {
    /// The acting user these claims describe.
    pub fn actor(&self) -> Result<Actor, ApiError> {
        let user_id =
            self.sub.parse().map_err(|_| ApiError::unauthorized("the token's subject is not a user id"))?;
        Ok(Actor { user_id, username: self.username.clone(), role: self.role })
    }

    /// When the token stops being valid.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

/// A token's `iat`, kept in milliseconds. A JWT NumericDate may be fractional: Pulse issues
/// `1767225600.123`, so a token issued just after a role or password change is told apart
/// from one issued just before it; an integer `iat` (tokens others mint) reads as its whole
/// second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IssuedAt(i64);

impl IssuedAt {
    /// The latest `iat` accepted: year 5138, far beyond any real token, small enough that
    /// milliseconds never overflow.
    pub const MAX_SECONDS: f64 = 1e11;

    /// At `millis` since the epoch.
    pub fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// At `at`.
    pub fn at(at: SystemTime) -> Self {
        Self(at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Reads a NumericDate given as seconds (whole or fractional).
    pub fn from_seconds(seconds: f64) -> Option<Self> {
        (seconds.is_finite() && (0.0..Self::MAX_SECONDS).contains(&seconds))
            .then(|| Self((seconds * 1000.0).round() as i64))
    }
}

impl Serialize for IssuedAt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Exactly representable to the millisecond: 13 significant digits of 17.
        serializer.serialize_f64(self.0 as f64 / 1000.0)
    }
}

impl<'de> Deserialize<'de> for IssuedAt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Seconds;
        impl serde::de::Visitor<'_> for Seconds {
            type Value = IssuedAt;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a NumericDate (seconds since the epoch)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IssuedAt, E> {
                i64::try_from(v)
                    .ok()
                    .filter(|v| (*v as f64) < IssuedAt::MAX_SECONDS)
                    .map(|v| IssuedAt(v * 1000))
                    .ok_or_else(|| E::custom("iat out of range"))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IssuedAt, E> {
                u64::try_from(v).map_err(|_| E::custom("iat out of range")).and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<IssuedAt, E> {
                IssuedAt::from_seconds(v).ok_or_else(|| E::custom("iat out of range"))
            }
        }
        deserializer.deserialize_any(Seconds)
    }
}

/// Signs and checks tokens with one HS256 secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// The secret is too short to be safe.
#[derive(Debug, thiserror::Error)]
#[error("JWT secret must be at least 32 bytes (got {0})")]
pub struct WeakSecret(pub usize);

impl JwtKeys {
    /// Keys for `secret` (at least 32 bytes), issuing tokens valid for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Result<Self, WeakSecret> {
        if secret.len() < 32 {
            return Err(WeakSecret(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        })
    }

    /// A token for `user` issued now, and when it expires.
    pub fn issue(&self, user: &User) -> Result<(String, DateTime<Utc>), ApiError> {
        self.issue_at(user, SystemTime::now())
    }

    /// A token for `user` issued at `at` (its `iat`, to the millisecond), and when it expires.
    pub fn issue_at(&self, user: &User, at: SystemTime) -> Result<(String, DateTime<Utc>), ApiError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let exp = now + self.ttl.as_secs();
        let claims = Claims {
            sub: user.id.to_string(),
            username: user.username.clone(),
            role: user.role,
            iat: IssuedAt::at(at),
            exp,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| {
                tracing::error!(error = %e, "token signing failed");
                ApiError::unavailable("cannot issue a token right now")
            })?;
        let expires_at = DateTime::<Utc>::from_timestamp(exp as i64, 0).unwrap_or_else(Utc::now);
        Ok((token, expires_at))
    }

    /// Checks signature (HS256 only), expiry and claims.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("the token has expired")
                }
                _ => ApiError::unauthorized("the token is invalid"),
            })?;
        // RFC 7519: not accepted *on* or after `exp` (the library accepts `exp == now`).
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if claims.exp <= now {
            return Err(ApiError::unauthorized("the token has expired"));
        }
        Ok(claims)
    }
}

/// The authenticated caller of a request (`Authorization: Bearer <JWT>`).
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The verified claims.
    pub claims: Claims,
    /// The caller as services see it.
    pub actor: Actor,
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await })
    }
}

async fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::unavailable("the server is not configured"))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be: Bearer <token>"))?;
    let claims = state.jwt.verify(token)?;
    let claimed = claims.actor()?;
    let actor = current_actor(state, claimed.user_id, claimed.role, claims.iat.millis()).await?;
    Ok(AuthUser { claims, actor })
}

/// The user behind a credential (a token, or a ticket's token) issued to `user_id` with
/// `role` at `issued_at_ms`, as the services must see them — if it may still be used: the
/// user exists and is active, and has neither changed role nor had its credentials retired
/// (a role or password change) since. Read through [`AppState::accounts`]: no query per
/// request on a warm cache.
pub(crate) async fn current_actor(
    state: &AppState,
    user_id: i64,
    role: Role,
    issued_at_ms: i64,
) -> Result<Actor, ApiError> {
    let load = || state.db(async move |s| s.users.account_state(user_id).await);
    let Some(account) = state.accounts.get(user_id, load).await? else {
        return Err(ApiError::unauthorized("the token's user does not exist"));
    };
    if !account.active {
        return Err(ApiError::unauthorized("this account is deactivated"));
    }
    if issued_at_ms < account.tokens_valid_after_ms {
        return Err(ApiError::unauthorized(
            "this token was retired by a role or password change; log in again",
        ));
    }
    if role != account.role {
        return Err(ApiError::unauthorized("the token's role is out of date; log in again"));
    }
    Ok(Actor { user_id, username: account.username, role: account.role })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(json: &str) -> Result<IssuedAt, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn iat_reads_whole_and_fractional_seconds_and_refuses_nonsense() {
        assert_eq!(parse("1767225600").expect("integer").millis(), 1_767_225_600_000);
        assert_eq!(parse("1767225600.123").expect("fraction").millis(), 1_767_225_600_123);
        assert_eq!(parse("1767225600.1239").expect("rounded").millis(), 1_767_225_600_124);
        assert_eq!(parse("0").expect("epoch").millis(), 0);
        for bad in ["-1", "-0.5", "1e300", "\"1767225600\"", "null", "true"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let issued = IssuedAt::from_millis(1_767_225_600_123);
        assert_eq!(serde_json::to_string(&issued).expect("json"), "1767225600.123");
    }

    #[test]
    fn issued_tokens_carry_a_millisecond_iat_and_verify() {
        let keys = JwtKeys::new(&[9u8; 32], Duration::from_secs(60)).expect("keys");
        let user =
            User { id: 3, username: "ana".into(), role: Role::Staff, active: true, created_at: Utc::now() };
        let at = UNIX_EPOCH + Duration::from_millis(1_767_225_600_042);
        let (token, _) = keys.issue_at(&user, at).expect("issued");
        let claims = keys.verify(&token).expect("verifies");
        assert_eq!(claims.iat.millis(), 1_767_225_600_042);
        let raw = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&token).expect("decodes");
        assert_eq!(raw.claims["iat"].to_string(), "1767225600.042", "fractional seconds on the wire");
    }

    proptest! {
        /// Every millisecond instant survives the trip through a token's JSON.
        #[test]
        fn millisecond_iat_round_trips(millis in 0i64..100_000_000_000_000) {
            let json = serde_json::to_string(&IssuedAt::from_millis(millis)).expect("json");
            prop_assert_eq!(parse(&json).expect("parses").millis(), millis);
        }

        /// Whole seconds (tokens minted elsewhere) read as their second, to the millisecond.
        #[test]
        fn integer_iat_is_its_whole_second(seconds in 0u64..99_999_999_999) {
            prop_assert_eq!(parse(&seconds.to_string()).expect("parses").millis(), seconds as i64 * 1000);
        }

        /// Any number either parses to its rounded millisecond or is refused; never panics.
        #[test]
        fn any_number_parses_or_is_refused(seconds in proptest::num::f64::ANY) {
            let json = serde_json::to_string(&seconds).unwrap_or_else(|_| "null".into());
            match parse(&json) {
                Ok(iat) => prop_assert_eq!(iat.millis(), (seconds * 1000.0).round() as i64),
                Err(_) => prop_assert!(!(0.0..IssuedAt::MAX_SECONDS).contains(&seconds) || !seconds.is_finite()),
            }
        }
    }
}
