//! `GET /metrics`: Prometheus text format (0.0.4), encoded by `prometheus-client`. Open to a
//! client on loopback — the real client, behind trusted proxies, and never a request forwarded
//! by a proxy Pulse does not trust — elsewhere only when configured public.
//!
//! Reason to change: what an operator can measure. The hot paths only bump atomics (the hub's,
//! the connection counter's, the password gate's); this module reads them when scraped, so a
//! scrape costs the hot paths nothing. Must never hold business rules.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use ws_bridge::Hub;
use ws_bridge::metrics::LATENCY_BUCKETS;

use crate::AppState;
use crate::error::ApiError;
use crate::limits::{ConnectionCounter, ConnectionOutcome, LoginThrottle, REFUSAL_LABELS, TransportKind};

pub use prometheus_client;

/// Everything `/metrics` serves, registered once at start.
pub struct Metrics {
    registry: Registry,
}

/// What the metrics read, besides the HTTP counters.
pub(crate) struct Sources {
    pub hub: Hub,
    pub bridge: Arc<ws_bridge::BridgeMetrics>,
    pub passwords: services::PasswordGate,
    pub logins: Arc<LoginThrottle>,
    pub connections: Arc<ConnectionCounter>,
}

impl Metrics {
    /// Registers Pulse's metrics (prefix `pulse_`), the process's (`process_`) and `more`
    /// (e.g. the cross-instance link's; their names are theirs, under the `pulse_` prefix).
    pub(crate) fn new(sources: Sources, http: &HttpMetrics, more: Vec<Box<dyn Collector>>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let pulse = registry.sub_registry_with_prefix("pulse");
        // The registry ends registered help texts with a period; collectors' are written whole.
        pulse.register("http_requests", "HTTP requests by method, route and status", http.requests.clone());
        pulse.register_with_unit(
            "http_request_duration",
            "HTTP request latency by method and route, until the response head is ready",
            Unit::Seconds,
            http.duration.clone(),
        );
        pulse.register_with_unit(
            "stats_query_duration",
            "Stats recompute latency (one database query each)",
            Unit::Seconds,
            sources.bridge.recompute_seconds.handle(),
        );
        pulse.register_with_unit(
            "broadcast_latency",
            "From an event reaching the bridge to the value reflecting it being broadcast",
            Unit::Seconds,
            sources.bridge.broadcast_seconds.handle(),
        );
        pulse.register_collector(Box::new(LiveCounters { sources, started: SystemTime::now() }));
        for collector in more {
            pulse.register_collector(collector);
        }
        Self { registry }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Requests by route, method and status, and their latency by route and method.
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: HttpMethod,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: HttpMethod,
    route: String,
}

/// The request method as a label: a closed set, so a client cannot grow the label space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
enum HttpMethod {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OPTIONS,
    OTHER,
}

impl From<&Method> for HttpMethod {
    fn from(method: &Method) -> Self {
        match *method {
            Method::GET => HttpMethod::GET,
            Method::HEAD => HttpMethod::HEAD,
            Method::POST => HttpMethod::POST,
            Method::PUT => HttpMethod::PUT,
            Method::PATCH => HttpMethod::PATCH,
            Method::DELETE => HttpMethod::DELETE,
            Method::OPTIONS => HttpMethod::OPTIONS,
            _ => HttpMethod::OTHER,
        }
    }
}

impl HttpMetrics {
    /// Counts one request. `route` is the matched pattern (`/api/v1/tasks/{id}`), never the
    /// raw path, so ids do not explode the label set.
    pub fn record(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let method = HttpMethod::from(method);
        let route = route.to_owned();
        self.duration
            .get_or_create(&RouteLabels { method, route: route.clone() })
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    }
}

/// The hub's, the bridge's, the connection counter's and the password gate's atomics, read
/// at each scrape.
struct LiveCounters {
    sources: Sources,
    started: SystemTime,
}

impl fmt::Debug for LiveCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveCounters").finish_non_exhaustive()
    }
}

fn load(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

/// Writes one unlabelled counter (`name` without `_total`: the encoder adds it).
pub fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes one unlabelled gauge.
pub fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for LiveCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Sources { hub, bridge, passwords, logins, connections } = &self.sources;
        let e = &mut encoder;

        let mut family = e.encode_descriptor(
            "connections",
            "Realtime connections open now, by transport (ws: WebSocket, sse: Server-Sent Events).",
            None,
            MetricType::Gauge,
        )?;
        for transport in TransportKind::ALL {
            let value = ConstGauge::new(connections.open(transport) as i64);
            value.encode(family.encode_family(&[("transport", transport.label())])?)?;
        }
        let mut family = e.encode_descriptor(
            "connections_opened",
            "Realtime connections admitted by the connection limits, by transport.",
            None,
            MetricType::Counter,
        )?;
        for transport in TransportKind::ALL {
            let value = ConstCounter::new(connections.opened(transport));
            value.encode(family.encode_family(&[("transport", transport.label())])?)?;
        }
        let mut family = e.encode_descriptor(
            "connections_closed",
            "Realtime connections ended, by transport and reason (too_slow: dropped for not reading; \
             flooding: closed 1008; not_started: refused after admission, e.g. a spent ticket).",
            None,
            MetricType::Counter,
        )?;
        for transport in TransportKind::ALL {
            for (reason, label) in ConnectionOutcome::LABELS.iter().enumerate() {
                let value = ConstCounter::new(connections.closed(transport, reason));
                value
                    .encode(family.encode_family(&[("transport", transport.label()), ("reason", *label)])?)?;
            }
        }
        let mut family = e.encode_descriptor(
            "connections_refused",
            "Realtime connections refused with 503 by the connection limits, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (reason, label) in REFUSAL_LABELS.iter().enumerate() {
            let value = ConstCounter::new(connections.refused(reason));
            value.encode(family.encode_family(&[("reason", *label)])?)?;
        }

        let h = hub.metrics();
        gauge(
            e,
            "sessions",
            "Realtime sessions registered with the hub now (presence, personal events), every transport.",
            None,
            h.connections.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            e,
            "messages_sent",
            "Messages written to realtime clients (every transport).",
            load(&h.frames_sent),
        )?;
        counter(
            e,
            "messages_conflated",
            "Personal or typing messages replaced by a newer one before sending.",
            load(&h.mailbox_conflated),
        )?;
        counter(
            e,
            "stats_values_published",
            "New stats values broadcast (each serialized once).",
            load(&h.stats_published),
        )?;
        counter(
            e,
            "stats_values_unchanged",
            "Recomputed stats equal to the last value, not sent.",
            load(&h.stats_unchanged),
        )?;
        counter(e, "presence_published", "Presence messages broadcast.", load(&h.presence_published))?;
        counter(e, "stats_recomputes", "Stats recomputes (one query each).", load(&bridge.recomputes))?;
        counter(e, "stats_recompute_failures", "Stats recomputes that failed.", load(&bridge.failures))?;

        let p = passwords.metrics();
        counter(e, "password_checks", "Argon2id hashes and verifications computed.", load(&p.computed))?;
        counter(
            e,
            "password_checks_refused",
            "Password checks refused at once (429) because the bound was reached.",
            load(&p.refused),
        )?;
        counter(
            e,
            "password_attempts_throttled",
            "Password attempts refused (429) by the per-username or per-address limit.",
            logins.refused(),
        )?;

        let mut info =
            e.encode_descriptor("build", "This server's version (always 1).", None, MetricType::Info)?;
        info.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        let started = self.started.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        gauge(e, "start_time", "When this instance started (Unix time).", Some(&Unit::Seconds), started)
    }
}

/// The process's memory and file descriptors (Linux `/proc`; nothing elsewhere), named as
/// Prometheus's client libraries name them.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        if let Some(kib) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(str::to_owned))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<i64>().ok()))
        {
            gauge(e, "process_resident_memory", "Resident memory size.", Some(&Unit::Bytes), kib * 1024)?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                e,
                "process_open_fds",
                "Open file descriptors (sockets included).",
                None,
                fds.count() as i64,
            )?;
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse::<i64>().ok()))
        }) {
            gauge(e, "process_max_fds", "The limit on open file descriptors (soft).", None, max)?;
        }
        Ok(())
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
    let body = state.metrics.encode().map_err(|_| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "cannot encode the metrics")
    })?;
    Ok(HttpResponse::Ok().content_type(prometheus_client::encoding::prometheus_text::CONTENT_TYPE).body(body))
}
