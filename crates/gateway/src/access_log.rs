//! One log line per request — with the client's address (behind trusted proxies, the real
//! one) and the `token`/`ticket` query parameters redacted however they are encoded — inside
//! a span that carries the request's id (`X-Request-Id`, taken from the client or
//! generated); WebSocket sessions keep the id of their upgrade request.
//!
//! Reason to change: what a request's log line holds. Must never log a credential.

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
    let client = crate::client_ip::client_address(req.request())
        .map_or_else(|| "-".to_owned(), |address| address.to_string());
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
    let mut suppressed = 0;
    if let Some(state) = &state {
        state.http.record(&method, &route, status, elapsed);
        if status == 429 {
            match state.refusal_log.admit() {
                Some(before) => suppressed = before,
                None => return Ok(response),
            }
        }
    }
    if query.is_empty() {
        tracing::info!(target: "pulse::access", %method, %path, %client, status, micros, suppressed, "request");
    } else {
        tracing::info!(target: "pulse::access", %method, %path, %query, %client, status, micros, suppressed, "request");
    }
    Ok(response)
}

/// Lines for refused requests (`429`) logged per second; beyond that they are only counted
/// (by route and status on `/metrics`, and as `suppressed=N` on the next line logged).
pub const REFUSALS_LOGGED_PER_SECOND: u32 = 20;

/// Keeps a flood of refused requests from costing a log line each: the lines cost the
/// server more CPU than the refusals themselves (and disk, and a pipe that can stall every
/// thread writing to it when its reader falls behind).
#[derive(Debug, Default)]
pub struct RefusalLog {
    state: std::sync::Mutex<RefusalWindow>,
}

#[derive(Debug, Default)]
struct RefusalWindow {
    second: u64,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    /// Whether to log this refusal: `Some(n)` with the refusals left unlogged since the
    /// last line, `None` to leave this one out.
    pub fn admit(&self) -> Option<u64> {
        let second =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut window = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if window.second != second {
            window.second = second;
            window.logged = 0;
        }
        if window.logged >= REFUSALS_LOGGED_PER_SECOND {
            window.suppressed += 1;
            return None;
        }
        window.logged += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

/// Replaces the values of `token`, `ticket` and `access_token` parameters with
/// `[redacted]`, recognising the names however they are encoded (`tok%65n`, `+token`, any
/// case) — the way the server decodes them to authenticate — and any value that is a JWT
/// whatever its name.
///
/// ```
/// assert_eq!(gateway::redact_query("a=1&token=abc.def&b=2"), "a=1&token=[redacted]&b=2");
/// assert_eq!(gateway::redact_query("tok%65n=abc.def"), "tok%65n=[redacted]");
/// ```
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if is_secret(&decode(key)) || looks_like_jwt(&decode(value)) {
                format!("{key}=[redacted]")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A query component as `application/x-www-form-urlencoded` decoding reads it (`+` is a
/// space, `%XX` a byte).
fn decode(component: &str) -> String {
    let spaced = component.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

fn is_secret(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    key == "token" || key == "ticket" || key == "access_token"
}

/// Three base64url segments separated by dots, the first two non-empty: a JWT.
fn looks_like_jwt(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().split('.').collect();
    parts.len() == 3
        && parts[0].len() >= 8
        && parts[1].len() >= 8
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'='))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refusals_are_logged_up_to_a_budget_per_second_and_the_rest_counted() {
        let log = RefusalLog::default();
        // Keep the test inside one second.
        while std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_millis()
            > 500
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let admitted = (0..1000).filter_map(|_| log.admit()).count();
        assert_eq!(admitted, REFUSALS_LOGGED_PER_SECOND as usize);
        std::thread::sleep(std::time::Duration::from_millis(1000));
        assert_eq!(log.admit(), Some(1000 - u64::from(REFUSALS_LOGGED_PER_SECOND)), "the next line tells");
        assert_eq!(log.admit(), Some(0));
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";

    #[test]
    fn secrets_are_redacted_however_their_names_are_written() {
        for key in [
            "token",
            "TOKEN",
            "tok%65n",
            "%74%6F%6B%65%6E",
            "ticket",
            "tick%65t",
            "access_token",
            "access%5Ftoken",
            "+token",
        ] {
            let out = redact_query(&format!("topics=presence&{key}=s3cr3t-value"));
            assert!(!out.contains("s3cr3t-value"), "{key}: {out}");
            assert!(out.starts_with("topics=presence&"), "{out}");
        }
        assert_eq!(redact_query("x=1&token"), "x=1&token=[redacted]");
        // A JWT under any name.
        assert!(!redact_query(&format!("jwt={JWT}")).contains("c2lnbmF0dXJl"));
        assert!(
            !redact_query("t=eyJhbGciOiJIUzI1NiJ9%2EeyJzdWIiOiIxIn0%2Ec2lnbmF0dXJl").contains("c2lnbmF0dXJl")
        );
        // Other parameters stay.
        assert_eq!(redact_query("topics=stats%3Atasks&limit=5"), "topics=stats%3Atasks&limit=5");
    }

    /// Percent-encodes each byte of `text` or not, as `mask` says.
    fn encode_some(text: &str, mask: &[bool]) -> String {
        text.bytes()
            .zip(mask.iter().cycle())
            .map(|(b, encode)| if *encode { format!("%{b:02X}") } else { char::from(b).to_string() })
            .collect()
    }

    proptest! {
        /// Whatever encoding of the name the server would accept, the value never reaches the log.
        #[test]
        fn any_encoding_of_the_name_is_redacted(
            name in prop_oneof![Just("token"), Just("ticket")],
            mask in proptest::collection::vec(any::<bool>(), 1..12),
            value in "[A-Za-z0-9]{12,40}",
            before in "[a-z]{1,8}=[a-z0-9]{0,8}",
        ) {
            let query = format!("{before}&{}={value}", encode_some(name, &mask));
            let out = redact_query(&query);
            prop_assert!(!out.contains(&value), "{} -> {}", query, out);
            // And what the server would decode is the secret parameter.
            let decoded: Vec<(String, String)> =
                serde_urlencoded::from_str(&query).expect("a form-encoded query");
            prop_assert!(decoded.iter().any(|(k, v)| k == name && v == &value));
        }
    }
}
