//! What this instance tells the others, over one dedicated connection: the events doorbell,
//! typing, and its presence (kept fresh in the `presence` table as a heartbeat).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain_events::{
    Cluster, ClusterSignal, EventEnvelope, EventPublisher, PresenceEntry, RelayOutcome, RelayedMessage,
    Typing,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::relay::{RelayNotice, split};
use crate::{CHANNEL, PRESENCE_CHANNEL, RELAY_CHANNEL, TYPING_CHANNEL};

/// How often an instance refreshes its presence row; rows older than
/// [`PRESENCE_TTL_SECS`] are ignored, so a dead instance's users leave within that.
pub const PRESENCE_HEARTBEAT: Duration = Duration::from_secs(10);
/// The doorbell rings at most this often; rings meanwhile fold into the next one. Without
/// it a busy instance rang once per round trip (thousands per second at full write speed)
/// and every ring cost each listener a catch-up read: 20 % of 8 writers' throughput in
/// `examples/notify_cost.rs`. A quiet instance still rings at once.
pub const DOORBELL_MIN_INTERVAL: Duration = Duration::from_millis(5);
/// See [`PRESENCE_HEARTBEAT`].
pub const PRESENCE_TTL_SECS: i64 = 30;
const MAX_QUEUED_TYPING: usize = 256;
/// Relay notification parts waiting to be sent; beyond it a notice is dropped (its sender
/// times out).
const MAX_QUEUED_RELAY: usize = 1_024;
/// Presence changes are written at most this often (the heartbeat and the last change
/// always are).
const PRESENCE_MIN_WRITE_INTERVAL: Duration = Duration::from_millis(200);

/// A typing signal on the wire, with the instance it came from.
#[derive(Serialize, Deserialize)]
pub(crate) struct TypingNotice {
    pub origin: String,
    pub typing: Typing,
}

#[derive(Default)]
struct Pending {
    /// A ring naming this instance is due (its own listener skips it).
    doorbell: bool,
    /// A ring every listener answers, this instance's too (a commit in doubt).
    anonymous_ring: bool,
    typing: VecDeque<String>,
    /// Relay notices, each as its notification payloads (sent in one statement).
    relay: VecDeque<Vec<String>>,
    relay_parts: usize,
    /// This instance's users as last reported, and whether that differs from what the
    /// table holds (shared only when it changed; the heartbeat keeps the row fresh).
    presence: Option<String>,
    presence_changed: bool,
}

pub(crate) struct Outbound {
    pending: Mutex<Pending>,
    wake: Notify,
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one round of the outbound connection sends.
#[derive(Default)]
struct Batch {
    doorbell: bool,
    anonymous_ring: bool,
    typing: VecDeque<String>,
    relay: VecDeque<Vec<String>>,
    /// The snapshot to write, and whether other instances must be told it changed.
    presence: Option<(String, bool)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        !self.doorbell
            && !self.anonymous_ring
            && self.typing.is_empty()
            && self.relay.is_empty()
            && self.presence.is_none()
    }
}

impl Outbound {
    pub(crate) fn start(url: String, instance: String, timeout: Duration) -> (Arc<Self>, JoinHandle<()>) {
        let outbound = Arc::new(Self { pending: Mutex::new(Pending::default()), wake: Notify::new() });
        let worker = outbound.clone();
        let task = tokio::spawn(async move { worker.run(url, instance, timeout).await });
        (outbound, task)
    }

    pub(crate) fn ring(&self) {
        lock(&self.pending).doorbell = true;
        self.wake.notify_one();
    }

    pub(crate) fn ring_for_everyone(&self) {
        lock(&self.pending).anonymous_ring = true;
        self.wake.notify_one();
    }

    fn typing(&self, notice: String) {
        let mut pending = lock(&self.pending);
        if pending.typing.len() < MAX_QUEUED_TYPING {
            pending.typing.push_back(notice);
        }
        drop(pending);
        self.wake.notify_one();
    }

    fn relay(&self, parts: Vec<String>) {
        let mut pending = lock(&self.pending);
        if pending.relay_parts + parts.len() > MAX_QUEUED_RELAY {
            tracing::warn!("too many relayed client messages queued; dropping one");
            return;
        }
        pending.relay_parts += parts.len();
        pending.relay.push_back(parts);
        drop(pending);
        self.wake.notify_one();
    }

    fn presence(&self, snapshot: String) {
        let mut pending = lock(&self.pending);
        if pending.presence.as_deref() == Some(snapshot.as_str()) {
            return;
        }
        pending.presence = Some(snapshot);
        pending.presence_changed = true;
        drop(pending);
        self.wake.notify_one();
    }

    /// Takes what is due; `heartbeat` also refreshes an unchanged presence row; a presence
    /// change waits (stays pending) unless `presence_allowed`.
    fn take(&self, heartbeat: bool, presence_allowed: bool) -> Batch {
        let mut pending = lock(&self.pending);
        let due = presence_allowed && (pending.presence_changed || heartbeat);
        let changed = due && std::mem::take(&mut pending.presence_changed);
        let presence = pending.presence.clone().filter(|_| due).map(|p| (p, changed));
        Batch {
            doorbell: std::mem::take(&mut pending.doorbell),
            anonymous_ring: std::mem::take(&mut pending.anonymous_ring),
            typing: std::mem::take(&mut pending.typing),
            relay: {
                pending.relay_parts = 0;
                std::mem::take(&mut pending.relay)
            },
            presence,
        }
    }

    /// Puts back what could not be sent: rings and a presence change are sent again once
    /// the connection is back (typing is ephemeral and expires on its own).
    fn retry(&self, batch: Batch) {
        let mut pending = lock(&self.pending);
        pending.doorbell |= batch.doorbell;
        pending.anonymous_ring |= batch.anonymous_ring;
        if let Some((_, changed)) = batch.presence {
            pending.presence_changed |= changed;
        }
        // A relayed message waits for the connection too (its sender waits ~2 s at most).
        for parts in batch.relay.into_iter().rev() {
            pending.relay_parts += parts.len();
            pending.relay.push_front(parts);
        }
    }

    async fn run(&self, url: String, instance: String, timeout: Duration) {
        let mut conn: Option<AsyncPgConnection> = None;
        let mut heartbeat = tokio::time::interval(PRESENCE_HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::from_millis(100);
        let mut presence_written: Option<Instant> = None;
        let mut presence_due: Option<Instant> = None;
        loop {
            let beat = tokio::select! {
                _ = self.wake.notified() => false,
                _ = heartbeat.tick() => true,
                _ = tokio::time::sleep_until(presence_due.unwrap_or_else(Instant::now)), if presence_due.is_some() => false,
            };
            // Presence changes are written at most every PRESENCE_MIN_WRITE_INTERVAL, however
            // fast a client makes them (each write costs every other instance a read).
            let allowed =
                beat || presence_written.is_none_or(|at| at.elapsed() >= PRESENCE_MIN_WRITE_INTERVAL);
            let batch = self.take(beat, allowed);
            presence_due = (!allowed && lock(&self.pending).presence_changed)
                .then(|| presence_written.map_or_else(Instant::now, |at| at + PRESENCE_MIN_WRITE_INTERVAL));
            if batch.is_empty() {
                continue;
            }
            let sent = async {
                if conn.is_none() {
                    let mut fresh = AsyncPgConnection::establish(&url).await.map_err(|e| e.to_string())?;
                    // Rings, typing and presence need no durability: no WAL flush per NOTIFY.
                    fresh.batch_execute("SET synchronous_commit = off").await.map_err(|e| e.to_string())?;
                    conn = Some(fresh);
                }
                let Some(c) = conn.as_mut() else { return Err("no connection".to_owned()) };
                send(c, &instance, &batch).await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(timeout, sent).await.unwrap_or_else(|_| Err("timed out".to_owned())) {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if batch.presence.is_some() {
                        presence_written = Some(Instant::now());
                    }
                    if batch.doorbell {
                        tokio::time::sleep(DOORBELL_MIN_INTERVAL).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "telling other instances failed; trying again");
                    conn = None;
                    self.retry(batch);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    self.wake.notify_one();
                }
            }
        }
    }
}

async fn send(
    conn: &mut AsyncPgConnection,
    instance: &str,
    batch: &Batch,
) -> Result<(), diesel::result::Error> {
    if batch.doorbell || batch.anonymous_ring {
        // A ring naming this instance is skipped by its own listener; an anonymous one is not.
        let payload = if batch.anonymous_ring { "" } else { instance };
        diesel::sql_query(format!("SELECT pg_notify('{CHANNEL}', $1)"))
            .bind::<Text, _>(payload)
            .execute(conn)
            .await?;
    }
    if !batch.typing.is_empty() {
        let notices: Vec<&String> = batch.typing.iter().collect();
        diesel::sql_query(format!(
            "SELECT pg_notify('{TYPING_CHANNEL}', notice) FROM unnest($1::text[]) AS notice"
        ))
        .bind::<diesel::sql_types::Array<Text>, _>(notices)
        .execute(conn)
        .await?;
    }
    for parts in &batch.relay {
        // One statement per notice: its parts are delivered together, in order.
        diesel::sql_query(format!(
            "SELECT pg_notify('{RELAY_CHANNEL}', part) FROM unnest($1::text[]) WITH ORDINALITY AS p (part, n) ORDER BY n"
        ))
        .bind::<diesel::sql_types::Array<Text>, _>(parts)
        .execute(conn)
        .await?;
    }
    if let Some((snapshot, changed)) = &batch.presence {
        // One statement: the upsert, the clean-up of long-dead rows and, when the content
        // changed, the notice (whose payload lets this instance's listener skip it).
        diesel::sql_query(format!(
            "WITH gone AS (DELETE FROM presence WHERE updated_at < now() - interval '1 hour') \
             INSERT INTO presence (instance, snapshot, updated_at) \
             SELECT $1, $2, now() FROM (SELECT CASE WHEN $3 THEN pg_notify('{PRESENCE_CHANNEL}', $1) END) AS told \
             ON CONFLICT (instance) DO UPDATE SET snapshot = EXCLUDED.snapshot, updated_at = now()"
        ))
        .bind::<Text, _>(instance)
        .bind::<Text, _>(snapshot)
        .bind::<diesel::sql_types::Bool, _>(*changed)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// The publisher services use on PostgreSQL: local bus first, then the doorbell that wakes
/// the other instances' listeners (after the commit, from its own connection: see the crate
/// documentation for why not inside the transaction).
pub struct DoorbellPublisher {
    pub(crate) local: Arc<dyn EventPublisher>,
    pub(crate) outbound: Arc<Outbound>,
    pub(crate) writer: Arc<crate::listener::LocalWriter>,
}

impl EventPublisher for DoorbellPublisher {
    fn publish(&self, events: Vec<EventEnvelope>) {
        self.local.publish(events);
        self.outbound.ring();
    }

    fn resync(&self) {
        self.local.resync();
    }

    /// The rows may be there: this instance's listener announces them if they are (or
    /// reads them again if it already skipped them), and every other instance is rung.
    fn commit_unknown(&self, seqs: &[i64]) {
        self.writer.commit_unknown(seqs);
        self.outbound.ring_for_everyone();
    }
}

/// Presence and typing shared through PostgreSQL: typing as `NOTIFY pulse_typing`,
/// presence as a row per instance written when it changes (with `NOTIFY pulse_presence`)
/// and refreshed every [`PRESENCE_HEARTBEAT`] (one write, no notice).
pub struct PgCluster {
    pub(crate) instance: String,
    /// Numbers this instance's relay notices.
    pub(crate) relay_sequence: std::sync::atomic::AtomicU64,
    pub(crate) outbound: Arc<Outbound>,
    pub(crate) signals: broadcast::Sender<ClusterSignal>,
}

impl Cluster for PgCluster {
    fn share_typing(&self, typing: &Typing) {
        let notice = TypingNotice { origin: self.instance.clone(), typing: typing.clone() };
        if let Ok(json) = serde_json::to_string(&notice) {
            self.outbound.typing(json);
        }
    }

    fn share_presence(&self, local: &[PresenceEntry]) {
        if let Ok(json) = serde_json::to_string(local) {
            self.outbound.presence(json);
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<ClusterSignal> {
        self.signals.subscribe()
    }

    fn relay(&self, message: &RelayedMessage) {
        self.send_relay(&RelayNotice::Message(message.clone()));
    }

    fn answer_relay(&self, request_id: &str, outcome: RelayOutcome) {
        self.send_relay(&RelayNotice::Answer { request_id: request_id.to_owned(), outcome });
    }
}

impl PgCluster {
    fn send_relay(&self, notice: &RelayNotice) {
        let n = self.relay_sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(json) = serde_json::to_string(notice) {
            self.outbound.relay(split(&format!("{}:{n}", self.instance), &json));
        }
    }
}
