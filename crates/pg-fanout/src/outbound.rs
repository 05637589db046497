//! What this instance tells the others, over one dedicated connection: the events doorbell,
//! typing, and its presence (kept fresh in the `presence` table as a heartbeat).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain_events::{Cluster, ClusterSignal, EventEnvelope, EventPublisher, PresenceEntry, Typing};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::{CHANNEL, PRESENCE_CHANNEL, TYPING_CHANNEL};

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

/// A typing signal on the wire, with the instance it came from.
#[derive(Serialize, Deserialize)]
pub(crate) struct TypingNotice {
    pub origin: String,
    pub typing: Typing,
}

#[derive(Default)]
struct Pending {
    doorbell: bool,
    typing: VecDeque<String>,
    presence: Option<String>,
    presence_dirty: bool,
}

pub(crate) struct Outbound {
    pending: Mutex<Pending>,
    wake: Notify,
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outbound {
    pub(crate) fn start(url: String, instance: String) -> (Arc<Self>, JoinHandle<()>) {
        let outbound = Arc::new(Self { pending: Mutex::new(Pending::default()), wake: Notify::new() });
        let worker = outbound.clone();
        let task = tokio::spawn(async move { worker.run(url, instance).await });
        (outbound, task)
    }

    pub(crate) fn ring(&self) {
        lock(&self.pending).doorbell = true;
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

    fn presence(&self, snapshot: String) {
        let mut pending = lock(&self.pending);
        pending.presence = Some(snapshot);
        pending.presence_dirty = true;
        drop(pending);
        self.wake.notify_one();
    }

    async fn run(&self, url: String, instance: String) {
        let mut conn: Option<AsyncPgConnection> = None;
        let mut heartbeat = tokio::time::interval(PRESENCE_HEARTBEAT);
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = heartbeat.tick() => lock(&self.pending).presence_dirty = true,
            }
            let (doorbell, typing, presence) = {
                let mut pending = lock(&self.pending);
                let presence = if pending.presence_dirty { pending.presence.clone() } else { None };
                pending.presence_dirty = false;
                (std::mem::take(&mut pending.doorbell), std::mem::take(&mut pending.typing), presence)
            };
            if !doorbell && typing.is_empty() && presence.is_none() {
                continue;
            }
            if conn.is_none() {
                conn = AsyncPgConnection::establish(&url).await.ok();
            }
            let Some(c) = conn.as_mut() else {
                tracing::warn!("outbound connection unavailable; other instances catch up on their timers");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            if let Err(error) = send(c, &instance, doorbell, typing, presence).await {
                tracing::warn!(%error, "telling other instances failed; reconnecting");
                conn = None;
            } else if doorbell {
                tokio::time::sleep(DOORBELL_MIN_INTERVAL).await;
            }
        }
    }
}

async fn send(
    conn: &mut AsyncPgConnection,
    instance: &str,
    doorbell: bool,
    typing: VecDeque<String>,
    presence: Option<String>,
) -> Result<(), diesel::result::Error> {
    if doorbell {
        // The payload names the ringing instance, so its own listener skips the ring.
        diesel::sql_query(format!("SELECT pg_notify('{CHANNEL}', $1)"))
            .bind::<Text, _>(instance)
            .execute(conn)
            .await?;
    }
    for notice in typing {
        diesel::sql_query(format!("SELECT pg_notify('{TYPING_CHANNEL}', $1)"))
            .bind::<Text, _>(notice)
            .execute(conn)
            .await?;
    }
    if let Some(snapshot) = presence {
        diesel::sql_query(
            "INSERT INTO presence (instance, snapshot, updated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (instance) DO UPDATE SET snapshot = EXCLUDED.snapshot, updated_at = now()",
        )
        .bind::<Text, _>(instance)
        .bind::<Text, _>(snapshot)
        .execute(conn)
        .await?;
        conn.batch_execute(&format!(
            "NOTIFY {PRESENCE_CHANNEL}; DELETE FROM presence WHERE updated_at < now() - interval '1 hour'"
        ))
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
}

impl EventPublisher for DoorbellPublisher {
    fn publish(&self, events: Vec<EventEnvelope>) {
        self.local.publish(events);
        self.outbound.ring();
    }

    fn resync(&self) {
        self.local.resync();
    }
}

/// Presence and typing shared through PostgreSQL: typing as `NOTIFY pulse_typing`,
/// presence as a row per instance refreshed every 10 s (`NOTIFY pulse_presence` on change).
pub struct PgCluster {
    pub(crate) instance: String,
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
}
