//! Counters and latency histograms; the gateway serves them on `/metrics`. Never renders text
//! itself (the gateway does, with `prometheus-client`).

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

/// What the hub counts, for operators and benches.
#[derive(Debug, Default)]
pub struct HubMetrics {
    /// New topic values published (each one serialized once).
    pub stats_published: AtomicU64,
    /// Recomputed values equal to the last one, not sent.
    pub stats_unchanged: AtomicU64,
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections opened since start.
    pub connections_total: AtomicU64,
    /// Frames handed to client sockets.
    pub frames_sent: AtomicU64,
    /// Presence messages published.
    pub presence_published: AtomicU64,
    /// Personal and typing messages that replaced an older one still waiting.
    pub mailbox_conflated: AtomicU64,
}

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A latency histogram in seconds ([`LATENCY_BUCKETS`]): `prometheus-client`'s, which the
/// gateway registers for `/metrics` ([`Histogram::handle`]).
#[derive(Debug, Clone)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Default for Histogram {
    fn default() -> Self {
        Self(prometheus_client::metrics::histogram::Histogram::new(LATENCY_BUCKETS))
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }

    /// The histogram itself, to register (a handle on the same buckets).
    pub fn handle(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.0.clone()
    }
}
