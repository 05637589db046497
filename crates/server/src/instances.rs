//! Several instances on one PostgreSQL database: each names itself (its connections'
//! `application_name`, which the outbox records as an event's origin) and listens for the
//! others' events. SQLite is single-instance (its file lock refuses a second server).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use domain_events::{Cluster, EventPublisher, InProcessBus};
use gateway::ReadinessCheck;
use gateway::metrics;
use pg_fanout::{FanoutConfig, FanoutMetrics, PgFanout};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use services::{Database, EventLog, PruneHorizon};

/// This process's identity on a shared database.
pub struct Instance {
    /// `pulse-<random>`.
    pub name: String,
    /// The database URL, with `application_name` set to `name` on PostgreSQL.
    pub database_url: String,
}

impl Instance {
    /// Names this process and tags its PostgreSQL connections with the name.
    pub fn new(database_url: &str) -> Self {
        let name = format!("pulse-{:08x}", rand::random::<u32>());
        let database_url = if database_url.starts_with("postgres") {
            pg_fanout::with_application_name(database_url, &name)
        } else {
            database_url.to_owned()
        };
        Self { name, database_url }
    }
}

/// The cross-instance fan-out of a PostgreSQL server.
pub struct Fanout {
    /// The listener and the outbound connection (stop when dropped).
    pub link: PgFanout,
    /// What services publish on: the local bus, then the doorbell.
    pub publisher: Arc<dyn EventPublisher>,
    /// Presence and typing shared with the other instances.
    pub cluster: Arc<dyn Cluster>,
    /// The listener's health, for `/readyz`.
    pub readiness: Arc<dyn ReadinessCheck>,
    /// The link's counters, for `/metrics` (taken once, when the server is wired).
    pub metrics: Option<Box<dyn Collector>>,
}

/// Starts the cross-instance link on PostgreSQL (nothing on SQLite). Call it before the
/// first stats are read, so nothing committed in between is missed.
pub async fn start_fanout(
    db: &Database,
    instance: &Instance,
    bus: &InProcessBus,
) -> anyhow::Result<Option<Fanout>> {
    let Some(url) = db.postgres_url() else { return Ok(None) };
    let local: Arc<dyn EventPublisher> = Arc::new(bus.clone());
    let link = PgFanout::start(url, &instance.name, local, FanoutConfig::default()).await?;
    tracing::info!(instance = %instance.name, "listening for other instances' events");
    Ok(Some(Fanout {
        readiness: Arc::new(ListenerHealth(link.health_flag())),
        metrics: Some(Box::new(LinkMetrics { counters: link.metrics(), listening: link.health_flag() })),
        publisher: link.publisher(),
        cluster: link.cluster(),
        link,
    }))
}

struct ListenerHealth(Arc<AtomicBool>);

/// The link's counters on `/metrics` (`pulse_fanout_…`), read at each scrape.
struct LinkMetrics {
    counters: Arc<FanoutMetrics>,
    listening: Arc<AtomicBool>,
}

impl std::fmt::Debug for LinkMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkMetrics").finish_non_exhaustive()
    }
}

impl Collector for LinkMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, value) in [
            ("fanout_events_delivered", "Events of other instances published here.", get(&m.delivered)),
            ("fanout_outbox_reads", "Outbox reads by the listener.", get(&m.reads)),
            ("fanout_connects", "LISTEN connections established.", get(&m.connects)),
            (
                "fanout_gap_numbers_abandoned",
                "Sequence numbers given up as never coming (rolled back, or pruned: then a resync).",
                get(&m.gaps_abandoned),
            ),
            (
                "fanout_resyncs",
                "Resyncs asked for (rows maybe pruned unread, too many gaps): every topic recomputed.",
                get(&m.resyncs),
            ),
        ] {
            metrics::counter(&mut encoder, name, help, value)?;
        }
        metrics::gauge(
            &mut encoder,
            "fanout_open_gaps",
            "Sequence gap ranges the listener waits on.",
            None,
            get(&m.open_gaps) as i64,
        )?;
        metrics::gauge(
            &mut encoder,
            "fanout_listening",
            "1 while the listener is connected and caught up (what /readyz checks), else 0.",
            None,
            i64::from(self.listening.load(Ordering::Relaxed)),
        )
    }
}

impl ReadinessCheck for ListenerHealth {
    fn name(&self) -> &'static str {
        "the cross-instance listener"
    }

    fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Deletes logged events older than `retention`, every minute (a row also outlives the
/// minute after its transaction ended: see `EventLog::prune`). Listeners that were away
/// longer than that resync instead of catching up.
pub fn spawn_outbox_pruning(db: Database, retention: Duration) {
    tokio::spawn(async move {
        let log = EventLog::new(db);
        let mut horizon = PruneHorizon::default();
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let before = chrono::Utc::now()
                - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::hours(1));
            match log.prune(before, &mut horizon).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(pruned = n, "pruned the event log"),
                Err(error) => tracing::warn!(%error, "pruning the event log failed"),
            }
        }
    });
}
