//! `GET /metrics`: Prometheus text format. Open to a client on loopback — the real client,
//! behind trusted proxies, and never a request forwarded by a proxy Pulse does not trust —
//! elsewhere only when configured public.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use ws_bridge::metrics::{Histogram, render_value};

use crate::AppState;
use crate::error::ApiError;

/// Anything else that wants its lines on `/metrics` (e.g. the cross-instance link).
pub trait MetricsSource: Send + Sync + 'static {
    /// Appends Prometheus text.
    fn render(&self, out: &mut String);
}

/// Requests by route, method and status, and their latency.
#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    latency: Histogram,
}

impl HttpMetrics {
    /// Counts one request. `route` is the matched pattern (`/api/v1/tasks/{id}`), never the
    /// raw path, so ids do not explode the label set.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry((method.to_owned(), route.to_owned(), status)).or_default() += 1;
        drop(requests);
        self.latency.observe(elapsed);
    }

    fn render(&self, out: &mut String) {
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<_> = requests.iter().collect();
        rows.sort();
        let _ = writeln!(out, "# HELP pulse_http_requests_total HTTP requests by route, method and status.");
        let _ = writeln!(out, "# TYPE pulse_http_requests_total counter");
        for ((method, route, status), count) in rows {
            let _ = writeln!(
                out,
                "pulse_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        drop(requests);
        self.latency.render(out, "pulse_http_request_duration_seconds", "HTTP request latency.", "");
    }
}

pub(crate) async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let loopback = crate::client_ip::client_address(&req).is_some_and(|a| a.is_loopback())
        && !crate::client_ip::forwarded_by_untrusted_peer(&req);
    if !loopback && !state.metrics_public {
        return Err(ApiError::forbidden(
            "/metrics is served on loopback only (set METRICS_PUBLIC=true to open it)",
        ));
    }
    let mut out = String::with_capacity(8 * 1024);
    let hub = state.hub.metrics();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    render_value(
        &mut out,
        "pulse_ws_connections",
        "gauge",
        "Open WebSocket connections.",
        hub.connections.load(Ordering::Relaxed) as u64,
    );
    render_value(
        &mut out,
        "pulse_ws_connections_opened_total",
        "counter",
        "WebSocket connections opened.",
        load(&hub.connections_total),
    );
    render_value(
        &mut out,
        "pulse_ws_messages_sent_total",
        "counter",
        "Messages written to client sockets.",
        load(&hub.frames_sent),
    );
    render_value(
        &mut out,
        "pulse_stats_values_published_total",
        "counter",
        "New stats values broadcast (each serialized once).",
        load(&hub.stats_published),
    );
    render_value(
        &mut out,
        "pulse_stats_values_unchanged_total",
        "counter",
        "Recomputed stats equal to the last value, not sent.",
        load(&hub.stats_unchanged),
    );
    render_value(
        &mut out,
        "pulse_presence_published_total",
        "counter",
        "Presence messages broadcast.",
        load(&hub.presence_published),
    );
    render_value(
        &mut out,
        "pulse_ws_messages_conflated_total",
        "counter",
        "Personal or typing messages replaced by a newer one before sending.",
        load(&hub.mailbox_conflated),
    );
    if let Some(bridge) = &state.bridge {
        render_value(
            &mut out,
            "pulse_stats_recomputes_total",
            "counter",
            "Stats recomputes (one query each).",
            load(&bridge.recomputes),
        );
        render_value(
            &mut out,
            "pulse_stats_recompute_failures_total",
            "counter",
            "Stats recomputes that failed.",
            load(&bridge.failures),
        );
        bridge.recompute_seconds.render(
            &mut out,
            "pulse_db_stats_query_seconds",
            "Stats query latency (database latency).",
            "",
        );
        bridge.broadcast_seconds.render(
            &mut out,
            "pulse_broadcast_latency_seconds",
            "From an event reaching the bridge to its value being broadcast.",
            "",
        );
    }
    let passwords = state.services.users.gate().metrics();
    render_value(
        &mut out,
        "pulse_password_checks_total",
        "counter",
        "Argon2id hashes and verifications computed.",
        load(&passwords.computed),
    );
    render_value(
        &mut out,
        "pulse_password_checks_refused_total",
        "counter",
        "Password checks refused at once (429) because the bound was reached.",
        load(&passwords.refused),
    );
    render_value(
        &mut out,
        "pulse_password_attempts_throttled_total",
        "counter",
        "Password attempts refused (429) by the per-username or per-address limit.",
        state.logins.refused(),
    );
    state.http.render(&mut out);
    for source in &state.metrics_sources {
        source.render(&mut out);
    }
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(out))
}
