//! The REST routes of the contract (sections 2, 4 and 9) and health checks.

pub mod approvals;
pub mod auth;
pub mod conversations;
pub mod health;
pub mod insight;
pub mod tasks;
pub mod users;

use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::error::ApiError;

/// The answer for a known path with a method it does not support: 405 with the `Allow`
/// header RFC 9110 requires, listing the methods the OpenAPI document gives the route.
pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut response = ApiError::method_not_allowed().error_response();
    let allow = req.match_pattern().and_then(|pattern| crate::openapi::allowed_methods(&pattern));
    if let Some(value) = allow.and_then(|a| HeaderValue::from_str(a).ok()) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

/// A resource whose unsupported methods answer 405 in the contract's error shape.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

// Listing queries keep `limit` and `cursor` as plain fields: serde's `flatten` would turn
// them into strings and reject every number.

/// An optional enum filter from the query string; an unknown value is a 400.
pub(crate) fn parse_filter<T>(field: &'static str, value: Option<&str>) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr<Err = domain_events::model::UnknownValue>,
{
    value
        .filter(|v| !v.is_empty())
        .map(|v| services::validate::enum_value(field, v))
        .transpose()
        .map_err(|e| ApiError::validation(e.to_string()))
}
