//! Cross-instance fan-out over one PostgreSQL database.
//!
//! Every service transaction appends its events to the `events` table (the transactional
//! outbox), so an event exists if and only if its change committed. After the commit the
//! services publish on a [`DoorbellPublisher`]: it hands the events to the local bus and
//! rings `NOTIFY pulse_events` from its own connection (coalesced: at most one in flight and
//! one per [`DOORBELL_MIN_INTERVAL`]; the payload is the ringing instance's name).
//! The doorbell is rung *outside* the writing transaction on purpose: a NOTIFY inside it
//! takes PostgreSQL's global notify lock at commit and serializes every committing writer
//! (measured in `examples/notify_cost.rs`, see docs/scaling.md).
//!
//! Each instance keeps one dedicated `LISTEN` connection; on every doorbell, and on a short
//! safety timer (which covers a writer that died between its commit and its doorbell), it
//! reads the rows it has not seen, by sequence, and publishes the ones written by *other*
//! instances on its local bus. A dropped `LISTEN` connection catches up from the last
//! sequence seen; two transactions that commit out of sequence order leave a gap that is
//! re-checked until it fills or times out (a rolled-back transaction leaves a permanent
//! gap). If rows were pruned before an instance could read them, it asks its subscribers
//! to resync instead.
//!
//! Architecture invariant: depends on `domain-events` and diesel-async's PostgreSQL
//! driver only; services and ws-bridge know nothing of it (the bus trait is the seam).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Text, Timestamp};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain_events::{Cluster, ClusterSignal, EventEnvelope, EventPublisher, PresenceEntry};
use futures_util::{FutureExt, StreamExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod outbound;

pub use outbound::{
    DOORBELL_MIN_INTERVAL, DoorbellPublisher, PRESENCE_HEARTBEAT, PRESENCE_TTL_SECS, PgCluster,
};

/// The NOTIFY channel the events doorbell rings.
pub const CHANNEL: &str = "pulse_events";
/// The NOTIFY channel of typing signals (payload: JSON with the origin instance).
pub const TYPING_CHANNEL: &str = "pulse_typing";
/// The NOTIFY channel rung when an instance's presence changes.
pub const PRESENCE_CHANNEL: &str = "pulse_presence";

/// Timings of the listener.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Read the outbox at least this often even without a doorbell.
    pub safety_poll: Duration,
    /// While sequence gaps are open, re-check them this often.
    pub gap_poll: Duration,
    /// A gap still open after this long was a rolled-back transaction.
    pub gap_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            safety_poll: Duration::from_secs(1),
            gap_poll: Duration::from_millis(50),
            gap_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Counters, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct FanoutMetrics {
    /// Events from other instances published locally.
    pub delivered: AtomicU64,
    /// Outbox reads.
    pub reads: AtomicU64,
    /// LISTEN connections (re)established.
    pub connects: AtomicU64,
    /// Sequence gaps given up as rolled back.
    pub gaps_expired: AtomicU64,
    /// Resyncs requested because events were pruned before they could be read.
    pub resyncs: AtomicU64,
}

/// Why the fan-out could not start.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The database refused the connection.
    #[error("cannot connect the fan-out listener: {0}")]
    Connect(#[from] diesel::ConnectionError),
    /// A query failed.
    #[error("fan-out query failed: {0}")]
    Query(#[from] diesel::result::Error),
}

/// The running listener of one instance.
pub struct PgFanout {
    instance: String,
    url: String,
    healthy: Arc<AtomicBool>,
    metrics: Arc<FanoutMetrics>,
    task: JoinHandle<()>,
    outbound: Arc<outbound::Outbound>,
    outbound_task: JoinHandle<()>,
    local: Arc<dyn EventPublisher>,
    signals: tokio::sync::broadcast::Sender<ClusterSignal>,
}

impl PgFanout {
    /// Starts listening. `url` must carry this instance's `application_name` (the value the
    /// outbox records as `origin`); events of that origin are not republished. Events
    /// committed before this call are not replayed: the caller reads its initial state after.
    pub async fn start(
        url: &str,
        instance: &str,
        publisher: Arc<dyn EventPublisher>,
        config: FanoutConfig,
    ) -> Result<Self, FanoutError> {
        let listener_url = with_application_name(url, &format!("{instance}-listener"));
        let mut conn = AsyncPgConnection::establish(&listener_url).await?;
        let high = max_seq(&mut conn).await?;
        conn.batch_execute(LISTEN).await?;
        let signals = tokio::sync::broadcast::channel(1024).0;
        let (outbound, outbound_task) = outbound::Outbound::start(
            with_application_name(url, &format!("{instance}-outbound")),
            instance.to_owned(),
        );
        let healthy = Arc::new(AtomicBool::new(true));
        let metrics = Arc::new(FanoutMetrics::default());
        metrics.connects.fetch_add(1, Ordering::Relaxed);
        let mut listener = Listener {
            url: listener_url,
            instance: instance.to_owned(),
            publisher: publisher.clone(),
            config,
            cursor: Cursor { high, missing: BTreeMap::new() },
            healthy: healthy.clone(),
            metrics: metrics.clone(),
            signals: signals.clone(),
            presence_read: Instant::now(),
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
            signals,
        })
    }

    /// What services should publish on: the local bus, then the doorbell.
    pub fn publisher(&self) -> Arc<dyn EventPublisher> {
        Arc::new(DoorbellPublisher { local: self.local.clone(), outbound: self.outbound.clone() })
    }

    /// Presence and typing shared with the other instances.
    pub fn cluster(&self) -> Arc<dyn Cluster> {
        Arc::new(PgCluster {
            instance: self.instance.clone(),
            outbound: self.outbound.clone(),
            signals: self.signals.clone(),
        })
    }

    /// Takes this instance's users out of presence at once (on graceful shutdown).
    pub async fn leave(&self) {
        self.outbound_task.abort();
        if let Ok(mut conn) = AsyncPgConnection::establish(&self.url).await {
            let _ = diesel::sql_query("DELETE FROM presence WHERE instance = $1")
                .bind::<Text, _>(&self.instance)
                .execute(&mut conn)
                .await;
            let _ = conn.batch_execute(&format!("NOTIFY {PRESENCE_CHANNEL}")).await;
        }
    }

    /// Whether the LISTEN connection is up (for `/readyz`).
    pub fn is_healthy(&self) -> bool {
        AtomicBool::load(&self.healthy, Ordering::Relaxed)
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

/// Every channel the listener follows.
const LISTEN: &str = "LISTEN pulse_events; LISTEN pulse_typing; LISTEN pulse_presence";

/// `url` with `application_name` set (replacing any given).
pub fn with_application_name(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && !p.starts_with("application_name=")).collect();
    let name_param = format!("application_name={name}");
    params.push(&name_param);
    format!("{base}?{}", params.join("&"))
}

/// What has been read: every sequence up to `high` except the open gaps in `missing`
/// (sequence → when the gap was first seen).
struct Cursor {
    high: i64,
    missing: BTreeMap<i64, Instant>,
}

/// At most this many open gaps are tracked; beyond, the oldest are given up and a resync
/// covers them.
const MAX_OPEN_GAPS: usize = 10_000;
const READ_BATCH: i64 = 1_000;

struct Listener {
    url: String,
    instance: String,
    publisher: Arc<dyn EventPublisher>,
    config: FanoutConfig,
    cursor: Cursor,
    healthy: Arc<AtomicBool>,
    metrics: Arc<FanoutMetrics>,
    signals: tokio::sync::broadcast::Sender<ClusterSignal>,
    presence_read: Instant,
}

#[derive(QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = Text)]
    snapshot: String,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    origin: String,
    #[diesel(sql_type = Text)]
    actor: String,
    #[diesel(sql_type = Text)]
    event: String,
    #[diesel(sql_type = Timestamp)]
    created_at: NaiveDateTime,
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn max_seq(conn: &mut AsyncPgConnection) -> Result<i64, diesel::result::Error> {
    let row: Number =
        diesel::sql_query("SELECT coalesce(max(seq), 0)::bigint AS n FROM events").get_result(conn).await?;
    Ok(row.n)
}

impl Listener {
    async fn run(&mut self, first: AsyncPgConnection) {
        let mut conn = Some(first);
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = match conn.take() {
                Some(c) => self.serve(c).await,
                None => match self.connect().await {
                    Ok(c) => {
                        backoff = Duration::from_millis(100);
                        self.serve(c).await
                    }
                    Err(e) => Err(e),
                },
            };
            self.healthy.store(false, Ordering::Relaxed);
            if let Err(error) = result {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "fan-out listener lost its connection");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    async fn connect(&mut self) -> Result<AsyncPgConnection, FanoutError> {
        let mut conn = AsyncPgConnection::establish(&self.url).await?;
        conn.batch_execute(LISTEN).await?;
        self.metrics.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!("fan-out listener reconnected; catching up");
        // Rows pruned while we were away cannot be read: have every topic recomputed.
        let oldest: Number = diesel::sql_query("SELECT coalesce(min(seq), 0)::bigint AS n FROM events")
            .get_result(&mut conn)
            .await?;
        let pruned_gap = oldest.n > self.cursor.high + 1
            || self.cursor.missing.keys().next().is_some_and(|first| *first < oldest.n);
        if pruned_gap {
            self.cursor.missing.retain(|seq, _| *seq >= oldest.n);
            self.request_resync("events were pruned before this instance read them");
        }
        Ok(conn)
    }

    /// Answers every notification until the connection fails: events are read from the
    /// outbox, typing is passed on, presence is re-read.
    async fn serve(&mut self, mut conn: AsyncPgConnection) -> Result<(), FanoutError> {
        self.healthy.store(true, Ordering::Relaxed);
        self.catch_up(&mut conn).await?;
        self.read_presence(&mut conn).await?;
        loop {
            let wait =
                if self.cursor.missing.is_empty() { self.config.safety_poll } else { self.config.gap_poll };
            let (mut events, mut presence) = (false, false);
            {
                let mut notifications = std::pin::pin!(conn.notifications_stream());
                let first = match tokio::time::timeout(wait, notifications.next()).await {
                    Ok(Some(Ok(n))) => Some(n),
                    Err(_) => None,
                    Ok(Some(Err(e))) => return Err(e.into()),
                    Ok(None) => return Err(diesel::result::Error::BrokenTransactionManager.into()),
                };
                events |= first.is_none();
                // Everything that arrived meanwhile is answered together.
                let rest = std::iter::from_fn(|| match notifications.next().now_or_never() {
                    Some(Some(Ok(n))) => Some(n),
                    _ => None,
                });
                for notification in first.into_iter().chain(rest) {
                    match notification.channel.as_str() {
                        TYPING_CHANNEL => self.typing(&notification.payload),
                        PRESENCE_CHANNEL => presence = true,
                        // Our own ring: the rows are ours, read with the next catch-up.
                        _ if notification.payload == self.instance => {}
                        _ => events = true,
                    }
                }
            }
            if events {
                self.catch_up(&mut conn).await?;
            }
            if presence || self.presence_read.elapsed() >= PRESENCE_HEARTBEAT {
                self.read_presence(&mut conn).await?;
            }
        }
    }

    fn typing(&self, payload: &str) {
        match serde_json::from_str::<outbound::TypingNotice>(payload) {
            Ok(notice) if notice.origin != self.instance => {
                let _ = self.signals.send(ClusterSignal::Typing(notice.typing));
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "unreadable typing notice"),
        }
    }

    /// The users of every other live instance (rows refreshed within the TTL).
    async fn read_presence(&mut self, conn: &mut AsyncPgConnection) -> Result<(), FanoutError> {
        self.presence_read = Instant::now();
        let rows: Vec<Snapshot> = diesel::sql_query(format!(
            "SELECT snapshot FROM presence WHERE instance <> $1 \
             AND updated_at > now() - interval '{PRESENCE_TTL_SECS} seconds'"
        ))
        .bind::<Text, _>(&self.instance)
        .load(conn)
        .await?;
        let entries: Vec<PresenceEntry> = rows
            .iter()
            .filter_map(|r| serde_json::from_str::<Vec<PresenceEntry>>(&r.snapshot).ok())
            .flatten()
            .collect();
        let _ = self.signals.send(ClusterSignal::RemotePresence(entries));
        Ok(())
    }

    async fn catch_up(&mut self, conn: &mut AsyncPgConnection) -> Result<(), FanoutError> {
        let mut found = Vec::new();
        if !self.cursor.missing.is_empty() {
            let gaps: Vec<i64> = self.cursor.missing.keys().copied().collect();
            let rows: Vec<Row> = diesel::sql_query(
                "SELECT seq, origin, actor, event, created_at FROM events WHERE seq = ANY($1) ORDER BY seq",
            )
            .bind::<Array<BigInt>, _>(gaps)
            .load(conn)
            .await?;
            for row in &rows {
                self.cursor.missing.remove(&row.seq);
            }
            found.extend(rows);
        }
        loop {
            self.metrics.reads.fetch_add(1, Ordering::Relaxed);
            let rows: Vec<Row> = diesel::sql_query(
                "SELECT seq, origin, actor, event, created_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind::<BigInt, _>(self.cursor.high)
            .bind::<BigInt, _>(READ_BATCH)
            .load(conn)
            .await?;
            let full = rows.len() as i64 == READ_BATCH;
            let now = Instant::now();
            for row in &rows {
                for gap in self.cursor.high + 1..row.seq {
                    self.cursor.missing.insert(gap, now);
                }
                self.cursor.high = row.seq;
            }
            found.extend(rows);
            if !full {
                break;
            }
        }
        self.expire_gaps();
        self.publish(found);
        Ok(())
    }

    fn expire_gaps(&mut self) {
        let timeout = self.config.gap_timeout;
        let before = self.cursor.missing.len();
        self.cursor.missing.retain(|_, since| since.elapsed() < timeout);
        let mut expired = before - self.cursor.missing.len();
        let mut overflow = false;
        while self.cursor.missing.len() > MAX_OPEN_GAPS {
            self.cursor.missing.pop_first();
            expired += 1;
            overflow = true;
        }
        self.metrics.gaps_expired.fetch_add(expired as u64, Ordering::Relaxed);
        if overflow {
            self.request_resync("too many open sequence gaps");
        }
    }

    fn publish(&self, rows: Vec<Row>) {
        let mut events = Vec::new();
        for row in rows.into_iter().filter(|r| r.origin != self.instance) {
            match envelope(&row) {
                Ok(event) => events.push(event),
                Err(error) => {
                    tracing::error!(seq = row.seq, %error, "unreadable event in the outbox; skipped")
                }
            }
        }
        if !events.is_empty() {
            self.metrics.delivered.fetch_add(events.len() as u64, Ordering::Relaxed);
            self.publisher.publish(events);
        }
    }

    fn request_resync(&self, why: &str) {
        tracing::warn!(why, "fan-out asks every subscriber to resync");
        self.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
        self.publisher.resync();
    }
}

fn envelope(row: &Row) -> Result<EventEnvelope, serde_json::Error> {
    Ok(EventEnvelope {
        seq: row.seq,
        at: row.created_at.and_utc(),
        actor: serde_json::from_str(&row.actor)?,
        event: serde_json::from_str(&row.event)?,
    })
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
