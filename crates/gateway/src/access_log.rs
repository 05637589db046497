//! One log line per request, with the `token` query parameter redacted.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// `method path?query status duration`, never a token.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let query = redact_query(req.query_string());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let state = req.app_data::<actix_web::web::Data<crate::AppState>>().cloned();
    let response = next.call(req).await?;
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
