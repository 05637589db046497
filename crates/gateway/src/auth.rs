//! JWT authentication: HS256 only, `exp` enforced, roles from the token's claims.

use std::future::{Ready, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use chrono::{DateTime, Utc};
use domain_events::model::{Actor, Role, User};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// The claims of a Pulse token (contract section 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string.
    pub sub: String,
    /// The username.
    pub username: String,
    /// The role.
    pub role: Role,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
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

    /// A token for `user`, and when it expires.
    pub fn issue(&self, user: &User) -> Result<(String, DateTime<Utc>), ApiError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let exp = now + self.ttl.as_secs();
        let claims = Claims {
            sub: user.id.to_string(),
            username: user.username.clone(),
            role: user.role,
            iat: now,
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
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiError> {
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
    let actor = claims.actor()?;
    Ok(AuthUser { claims, actor })
}

impl AuthUser {
    /// Fails with 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if roles.contains(&self.actor.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("{} may not {what}", self.actor.role)))
        }
    }
}
