//! Cross-instance fan-out over one PostgreSQL database.
//!
//! Every service transaction appends its events to the `events` table (the transactional
//! outbox), so an event exists if and only if its change committed. After the commit the
//! services publish on a [`DoorbellPublisher`]: it hands the events to the local bus and
//! rings `NOTIFY pulse_events` from its own connection (coalesced: at most one in flight and
//! one per [`DOORBELL_MIN_INTERVAL`]; the payload is the ringing instance's name; a ring that
//! fails is rung again once the connection is back). The doorbell is rung *outside* the
//! writing transaction on purpose: a NOTIFY inside it takes PostgreSQL's global notify lock
//! at commit and serializes every committing writer (measured in `examples/notify_cost.rs`,
//! see docs/scaling.md).
//!
//! Each instance keeps one dedicated `LISTEN` connection ([`listener`]): on every doorbell,
//! on a fixed safety poll, and when its own writer reports a commit in doubt, it reads the
//! outbox in one consistent snapshot and publishes on the local bus what the [`cursor`]
//! says is new — other instances' rows, and its own only when their commit's
//! acknowledgement was lost ([`own`]). Sequence gaps are settled by transaction
//! visibility, not by a clock, so a slow commit is never lost; a row that may have been
//! pruned unread asks the subscribers to resync.
//!
//! Presence and typing travel the same way ([`PgCluster`]): typing as `NOTIFY pulse_typing`,
//! presence as a row per instance, written when it changes and refreshed as a heartbeat;
//! client messages relayed to the instance holding their SSE connection, and the answers,
//! as `NOTIFY pulse_relay` ([`relay`]).
//!
//! Architecture invariant: depends on `domain-events` and diesel-async's PostgreSQL
//! driver only; services and ws-bridge know nothing of it (the bus trait is the seam).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain_events::{Cluster, ClusterSignal, EventPublisher};
use tokio::task::JoinHandle;

pub mod cursor;
mod listener;
mod outbound;
mod own;
mod relay;

pub use outbound::{
    DOORBELL_MIN_INTERVAL, DoorbellPublisher, PRESENCE_HEARTBEAT, PRESENCE_TTL_SECS, PgCluster,
};

/// The NOTIFY channel the events doorbell rings.
pub const CHANNEL: &str = "pulse_events";
/// The NOTIFY channel of typing signals (payload: JSON with the origin instance).
pub const TYPING_CHANNEL: &str = "pulse_typing";
/// The NOTIFY channel rung when an instance's presence changes (payload: the instance).
pub const PRESENCE_CHANNEL: &str = "pulse_presence";
/// The NOTIFY channel of client messages relayed to the instance holding their connection,
/// and of the answers (see [`relay`]).
pub const RELAY_CHANNEL: &str = "pulse_relay";

/// Timings and bounds of the listener.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Read the outbox this often whatever notifications say (a fixed interval: a doorbell
    /// lost with its writer is found within this).
    pub safety_poll: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Deadline of every database call; a call that takes longer drops the connection (a
    /// stalled connection is replaced, not waited on).
    pub query_timeout: Duration,
    /// Most sequence gaps tracked one by one (see [`cursor::Cursor`]).
    pub max_gaps: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            safety_poll: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            query_timeout: Duration::from_secs(3),
            max_gaps: 10_000,
        }
    }
}

/// Counters, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct FanoutMetrics {
    /// Events from the outbox published locally (other instances', and own rows whose
    /// commit was in doubt).
    pub delivered: AtomicU64,
    /// Outbox reads (one snapshot each).
    pub reads: AtomicU64,
    /// LISTEN connections (re)established.
    pub connects: AtomicU64,
    /// Sequence numbers given up as never coming (rolled back, or pruned).
    pub gaps_abandoned: AtomicU64,
    /// Sequence gap ranges open now.
    pub open_gaps: AtomicU64,
    /// Resyncs requested because rows may have been pruned unread, or gaps overflowed.
    pub resyncs: AtomicU64,
}

/// Why the fan-out could not start, or lost its connection.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The database refused the connection.
    #[error("cannot connect the fan-out listener: {0}")]
    Connect(#[from] diesel::ConnectionError),
    /// A query failed.
    #[error("fan-out query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A database call took longer than its deadline.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection ended.
    #[error("the listen connection closed")]
    Closed,
    /// `pg_current_snapshot()` or `pg_current_xact_id()` said something unreadable.
    #[error("unreadable snapshot or transaction id {0:?}")]
    Snapshot(String),
    /// `pulse_event_seq` hands out numbers in cached blocks.
    #[error("pulse_event_seq must not be cached (CACHE {0}): the fan-out needs numbers in time order")]
    CachedSequence(i64),
}

/// The running link of one instance: its listener and its outbound connection.
pub struct PgFanout {
    instance: String,
    url: String,
    healthy: Arc<AtomicBool>,
    metrics: Arc<FanoutMetrics>,
    task: JoinHandle<()>,
    outbound: Arc<outbound::Outbound>,
    outbound_task: JoinHandle<()>,
    local: Arc<dyn EventPublisher>,
    writer: Arc<listener::LocalWriter>,
    signals: tokio::sync::broadcast::Sender<ClusterSignal>,
}

impl PgFanout {
    /// Starts listening. `url` must carry this instance's `application_name` (the value the
    /// outbox records as `origin`). Events committed before this call are not replayed: the
    /// caller reads its initial state after.
    pub async fn start(
        url: &str,
        instance: &str,
        publisher: Arc<dyn EventPublisher>,
        config: FanoutConfig,
    ) -> Result<Self, FanoutError> {
        let listener_url = with_application_name(url, &format!("{instance}-listener"));
        let (conn, cursor) = listener::open(&listener_url, &config).await?;
        let signals = tokio::sync::broadcast::channel(1024).0;
        let (outbound, outbound_task) = outbound::Outbound::start(
            with_application_name(url, &format!("{instance}-outbound")),
            instance.to_owned(),
            config.query_timeout,
        );
        let healthy = Arc::new(AtomicBool::new(true));
        let metrics = Arc::new(FanoutMetrics::default());
        let writer = Arc::new(listener::LocalWriter::default());
        let mut listener = listener::Listener {
            url: listener_url,
            instance: instance.to_owned(),
            publisher: publisher.clone(),
            config,
            cursor,
            healthy: healthy.clone(),
            metrics: metrics.clone(),
            signals: signals.clone(),
            writer: writer.clone(),
            relay: relay::Reassembly::default(),
        };
        let task = tokio::spawn(async move { listener.run(conn).await });
        Ok(Self {
            instance: instance.to_owned(),
            url: url.to_owned(),
            healthy,
            metrics,
            task,
            outbound,
            outbound_task,
            local: publisher,
            writer,
            signals,
        })
    }

    /// What services should publish on: the local bus, then the doorbell.
    pub fn publisher(&self) -> Arc<dyn EventPublisher> {
        Arc::new(DoorbellPublisher {
            local: self.local.clone(),
            outbound: self.outbound.clone(),
            writer: self.writer.clone(),
        })
    }

    /// Presence and typing shared with the other instances.
    pub fn cluster(&self) -> Arc<dyn Cluster> {
        Arc::new(PgCluster {
            instance: self.instance.clone(),
            relay_sequence: std::sync::atomic::AtomicU64::new(0),
            outbound: self.outbound.clone(),
            signals: self.signals.clone(),
        })
    }

    /// Takes this instance's users out of presence at once (on graceful shutdown).
    pub async fn leave(&self) {
        self.outbound_task.abort();
        let leave = async {
            let mut conn = AsyncPgConnection::establish(&self.url).await.ok()?;
            diesel::sql_query("DELETE FROM presence WHERE instance = $1")
                .bind::<Text, _>(&self.instance)
                .execute(&mut conn)
                .await
                .ok()?;
            conn.batch_execute(&format!("NOTIFY {PRESENCE_CHANNEL}")).await.ok()
        };
        // Shutting down does not wait on a database that does not answer: the row expires.
        if tokio::time::timeout(Duration::from_secs(3), leave).await.ok().flatten().is_none() {
            tracing::warn!("could not remove this instance's presence; it expires within 30 s");
        }
    }

    /// Whether the LISTEN connection is up (for `/readyz`).
    pub fn is_healthy(&self) -> bool {
        AtomicBool::load(&self.healthy, std::sync::atomic::Ordering::Relaxed)
    }

    /// A shared handle on the health flag.
    pub fn health_flag(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// Counters.
    pub fn metrics(&self) -> Arc<FanoutMetrics> {
        self.metrics.clone()
    }

    /// Stops listening.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for PgFanout {
    fn drop(&mut self) {
        self.task.abort();
        self.outbound_task.abort();
    }
}

/// `url` with `application_name` set (replacing any given).
pub fn with_application_name(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && !p.starts_with("application_name=")).collect();
    let name_param = format!("application_name={name}");
    params.push(&name_param);
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_name_is_set_once() {
        assert_eq!(with_application_name("postgres://h/db", "a"), "postgres://h/db?application_name=a");
        assert_eq!(
            with_application_name("postgres://h/db?sslmode=disable&application_name=x", "a"),
            "postgres://h/db?sslmode=disable&application_name=a"
        );
    }
}
