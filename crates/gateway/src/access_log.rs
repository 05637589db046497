//! One log line per request, with the `token` query parameter redacted, inside a span that
//! carries the request's id (`X-Request-Id`, taken from the client or generated); WebSocket
//! sessions keep the id of their upgrade request.

use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// The id of the request being served (in the request's extensions).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// `method path?query status duration`, never a token, in a `request{id}` span.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id);
    let method = req.method().clone();
    let path = req.path().to_owned();
    let query = redact_query(req.query_string());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let state = req.app_data::<actix_web::web::Data<crate::AppState>>().cloned();
    // The handler runs as its own task, to completion, even if the client goes away
    // mid-request: a change is never abandoned half-way, and a database call is never
    // cancelled (diesel-async's SQLite wrapper cannot be cancelled on actix's runtime).
    let mut response =
        actix_web::rt::spawn(next.call(req).instrument(span.clone())).await.map_err(|e| {
            tracing::error!(error = %e, "request handler panicked");
            actix_web::error::ErrorInternalServerError("internal error")
        })??;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
    }
    let _entered = span.enter();
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let micros = elapsed.as_micros() as u64;
    if let Some(state) = state {
        state.http.record(method.as_str(), &route, status, elapsed);
    }
    if query.is_empty() {
        tracing::info!(target: "pulse::access", %method, %path, status, micros, "request");
    } else {
        tracing::info!(target: "pulse::access", %method, %path, %query, status, micros, "request");
    }
    Ok(response)
}

/// Replaces the values of `token` and `ticket` parameters with `[redacted]`.
///
/// ```
/// assert_eq!(gateway::redact_query("a=1&token=abc.def&b=2"), "a=1&token=[redacted]&b=2");
/// ```
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret(key) => format!("{key}=[redacted]"),
            _ if is_secret(pair) => format!("{pair}=[redacted]"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "token" || key == "ticket" || key == "access_token"
}
