//! The listener: one dedicated connection that `LISTEN`s for the other instances' doorbells,
//! reads the outbox in consistent snapshots and publishes what the [`Cursor`] says; passes
//! typing on; re-reads presence when it changed elsewhere.
//!
//! It reads on every doorbell, on a fixed one-second safety poll that notifications do not
//! postpone (a doorbell can be lost: its writer died after the commit), and when this
//! instance's writer reports a commit in doubt. Every database call has a deadline: a
//! stalled connection is dropped and replaced, and the cursor carries on from where it was.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamp};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain_events::{ClusterSignal, EventEnvelope, EventPublisher, PresenceEntry};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, broadcast};
use tokio::time::MissedTickBehavior;

use crate::cursor::{Cursor, Read, Seq, Snapshot};
use crate::own::OwnCommits;
use crate::{
    FanoutConfig, FanoutError, FanoutMetrics, PRESENCE_CHANNEL, RELAY_CHANNEL, TYPING_CHANNEL, outbound,
    relay,
};

/// Every channel the listener follows. Its own transactions (fences) need no durability.
const LISTEN: &str = "SET synchronous_commit = off; LISTEN pulse_events; LISTEN pulse_typing; LISTEN pulse_presence; \
     LISTEN pulse_relay";
/// Rows read per query while catching up.
const READ_BATCH: i64 = 1_000;
const COLUMNS: &str = "seq, tx_id::text AS tx_id, origin, actor, event, created_at";

/// One read of the outbox in one statement (one snapshot): the snapshot and pruning's
/// floor, then the rows after the cursor (`$1`, at most `$2`), inside its gaps (`$3`..`$4`)
/// and of the transactions it watches since it started (`$6`, numbered up to `$5`).
const READ: &str = "\
    WITH position AS (\
        SELECT pg_current_snapshot()::text AS snapshot, (SELECT below FROM events_pruned) AS pruned_below\
    ), found AS (\
        (SELECT 0 AS part, seq, tx_id, origin, actor, event, created_at FROM events \
         WHERE seq > $1 ORDER BY seq LIMIT $2) \
        UNION ALL \
        (SELECT 1, seq, tx_id, origin, actor, event, created_at FROM events \
         JOIN unnest($3::bigint[], $4::bigint[]) AS gap (lo, hi) ON seq BETWEEN gap.lo AND gap.hi) \
        UNION ALL \
        (SELECT 2, seq, tx_id, origin, actor, event, created_at FROM events \
         WHERE seq <= $5 AND tx_id = ANY($6::text[]::xid8[]))\
    ) \
    SELECT position.snapshot, position.pruned_below, found.part, found.seq, found.tx_id::text AS tx_id, \
           found.origin, found.actor, found.event, found.created_at \
    FROM position LEFT JOIN found ON true";

/// Which part of [`READ`] a row came from.
struct Part;

impl Part {
    const AFTER: i32 = 0;
    const GAP: i32 = 1;
}

/// A line of [`READ`]: the position, and a row if any was found.
#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    snapshot: String,
    #[diesel(sql_type = BigInt)]
    pruned_below: i64,
    #[diesel(sql_type = Nullable<Integer>)]
    part: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    tx_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    origin: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    actor: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    event: Option<String>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    created_at: Option<NaiveDateTime>,
}

impl Line {
    fn row(&self) -> Option<Row> {
        Some(Row {
            seq: self.seq?,
            tx_id: self.tx_id.clone()?,
            origin: self.origin.clone()?,
            actor: self.actor.clone()?,
            event: self.event.clone()?,
            created_at: self.created_at?,
        })
    }
}

/// What this instance's writer shares with its listener.
#[derive(Default)]
pub(crate) struct LocalWriter {
    pub(crate) own: Mutex<OwnCommits>,
    /// Own rows to read again and announce (their commit was in doubt after the listener
    /// had skipped them).
    pub(crate) read_again: Mutex<Vec<i64>>,
    /// Wakes the listener for a commit in doubt.
    pub(crate) wake: Notify,
}

impl LocalWriter {
    pub(crate) fn commit_unknown(&self, seqs: &[i64]) {
        let again = self.own.lock().unwrap_or_else(|p| p.into_inner()).commit_unknown(seqs);
        self.read_again.lock().unwrap_or_else(|p| p.into_inner()).extend(again);
        self.wake.notify_one();
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    tx_id: String,
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
struct Position {
    #[diesel(sql_type = Text)]
    snapshot: String,
}

#[derive(QueryableByName)]
struct SequenceState {
    #[diesel(sql_type = BigInt)]
    last_value: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    is_called: bool,
    #[diesel(sql_type = BigInt)]
    cache: i64,
}

#[derive(QueryableByName)]
struct Fence {
    #[diesel(sql_type = Text)]
    xid: String,
}

#[derive(QueryableByName)]
struct PresenceRow {
    #[diesel(sql_type = Text)]
    snapshot: String,
}

pub(crate) struct Listener {
    pub(crate) url: String,
    pub(crate) instance: String,
    pub(crate) publisher: Arc<dyn EventPublisher>,
    pub(crate) config: FanoutConfig,
    pub(crate) cursor: Cursor,
    pub(crate) healthy: Arc<AtomicBool>,
    pub(crate) metrics: Arc<FanoutMetrics>,
    pub(crate) signals: broadcast::Sender<ClusterSignal>,
    pub(crate) writer: Arc<LocalWriter>,
    pub(crate) relay: relay::Reassembly,
}

/// Opens the listener's connection and fixes the cursor's start: rows committed before
/// this are not replayed (the caller reads its initial state after); numbers held by
/// transactions running now are watched until they end.
pub(crate) async fn open(
    url: &str,
    config: &FanoutConfig,
) -> Result<(AsyncPgConnection, Cursor), FanoutError> {
    let mut conn = connect(url, config).await?;
    let cursor = deadline(config.query_timeout, start_here(&mut conn, config)).await?;
    Ok((conn, cursor))
}

/// A cursor starting now (see `Cursor::start`): the sequence's position first, then a
/// snapshot, then a fence.
async fn start_here(conn: &mut AsyncPgConnection, config: &FanoutConfig) -> Result<Cursor, FanoutError> {
    let upto = sequence_position(conn).await?;
    let snapshot = parse_snapshot(&position(conn).await?.snapshot)?;
    let fence = fence(conn).await?;
    Ok(Cursor::start(upto, &snapshot, fence, config.max_gaps))
}

/// The last number the sequence handed out. Refuses a cached sequence: numbers handed out
/// in blocks per session no longer follow time across sessions, which the cursor needs.
async fn sequence_position(conn: &mut AsyncPgConnection) -> Result<i64, FanoutError> {
    let sequence: SequenceState = diesel::sql_query(
        "SELECT last_value, is_called, \
                (SELECT seqcache FROM pg_sequence WHERE seqrelid = 'pulse_event_seq'::regclass) AS cache \
         FROM pulse_event_seq",
    )
    .get_result(conn)
    .await?;
    if sequence.cache != 1 {
        return Err(FanoutError::CachedSequence(sequence.cache));
    }
    Ok(if sequence.is_called { sequence.last_value } else { sequence.last_value - 1 })
}

/// Takes a transaction id of the listener's own, committed at once: above every id
/// assigned before (see the cursor's documentation).
async fn fence(conn: &mut AsyncPgConnection) -> Result<u64, FanoutError> {
    let fence: Fence = diesel::sql_query("SELECT pg_current_xact_id()::text AS xid").get_result(conn).await?;
    fence.xid.parse().map_err(|_| FanoutError::Snapshot(fence.xid))
}

async fn connect(url: &str, config: &FanoutConfig) -> Result<AsyncPgConnection, FanoutError> {
    let mut conn =
        deadline(config.query_timeout, async { Ok(AsyncPgConnection::establish(url).await?) }).await?;
    deadline(config.query_timeout, async { Ok(conn.batch_execute(LISTEN).await?) }).await?;
    Ok(conn)
}

async fn position(conn: &mut AsyncPgConnection) -> Result<Position, diesel::result::Error> {
    diesel::sql_query("SELECT pg_current_snapshot()::text AS snapshot").get_result(conn).await
}

fn parse_snapshot(text: &str) -> Result<Snapshot, FanoutError> {
    Snapshot::parse(text).ok_or_else(|| FanoutError::Snapshot(text.to_owned()))
}

/// Runs `work`, or fails with [`FanoutError::Timeout`] when it takes longer than `limit`.
async fn deadline<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, FanoutError>>,
) -> Result<T, FanoutError> {
    tokio::time::timeout(limit, work).await.unwrap_or(Err(FanoutError::Timeout(limit)))
}

impl Listener {
    pub(crate) async fn run(&mut self, first: AsyncPgConnection) {
        let mut conn = Some(first);
        let mut backoff = Duration::from_millis(100);
        loop {
            let connection = match conn.take() {
                Some(c) => Ok(c),
                None => connect(&self.url, &self.config).await.inspect(|_| {
                    tracing::info!("fan-out listener reconnected; catching up");
                }),
            };
            let result = match connection {
                Ok(mut c) => {
                    self.metrics.connects.fetch_add(1, Ordering::Relaxed);
                    match deadline(self.config.query_timeout, self.check_not_rewound(&mut c)).await {
                        Ok(()) => self.serve(c, &mut backoff).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            self.healthy.store(false, Ordering::Relaxed);
            self.cursor.connection_lost();
            if let Err(error) = result {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "fan-out listener lost its connection");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// After a failover or a restore the sequence may stand below numbers this cursor has
    /// seen: new rows would be taken for old ones. Start over from here and resync.
    async fn check_not_rewound(&mut self, conn: &mut AsyncPgConnection) -> Result<(), FanoutError> {
        if sequence_position(conn).await? >= self.cursor.high() {
            return Ok(());
        }
        tracing::error!("the outbox sequence went back (failover or restore?): starting over and resyncing");
        self.cursor = start_here(conn, &self.config).await?;
        self.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
        self.publisher.resync();
        Ok(())
    }

    /// Answers notifications, the safety poll and doubts until the connection fails.
    async fn serve(
        &mut self,
        mut conn: AsyncPgConnection,
        backoff: &mut Duration,
    ) -> Result<(), FanoutError> {
        self.catch_up(&mut conn).await?;
        self.read_presence(&mut conn).await?;
        self.healthy.store(true, Ordering::Relaxed);
        *backoff = Duration::from_millis(100);
        let mut poll = tokio::time::interval(self.config.safety_poll);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        poll.reset();
        let mut presence_poll = tokio::time::interval(outbound::PRESENCE_HEARTBEAT);
        presence_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        presence_poll.reset();
        loop {
            let (mut events, mut presence) = (false, false);
            {
                let mut notifications = std::pin::pin!(conn.notifications_stream());
                tokio::select! {
                    first = notifications.next() => {
                        let first = match first {
                            Some(Ok(n)) => n,
                            Some(Err(e)) => return Err(e.into()),
                            None => return Err(FanoutError::Closed),
                        };
                        // Everything that arrived meanwhile is answered together.
                        let rest = std::iter::from_fn(|| match notifications.next().now_or_never() {
                            Some(Some(Ok(n))) => Some(n),
                            _ => None,
                        });
                        for notification in std::iter::once(first).chain(rest) {
                            match notification.channel.as_str() {
                                TYPING_CHANNEL => self.typing(&notification.payload),
                                RELAY_CHANNEL => {
                                    if let Some(notice) = self.relay.take(&notification.payload) {
                                        let _ = self.signals.send(notice.into_signal());
                                    }
                                }
                                // Our own rings and presence changes: nothing new for us.
                                _ if notification.payload == self.instance => {}
                                PRESENCE_CHANNEL => presence = true,
                                _ => events = true,
                            }
                        }
                    }
                    _ = poll.tick() => events = true,
                    _ = self.writer.wake.notified() => events = true,
                    _ = presence_poll.tick() => presence = true,
                }
            }
            if events {
                self.catch_up(&mut conn).await?;
            }
            if presence {
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
        let query = diesel::sql_query(format!(
            "SELECT snapshot FROM presence WHERE instance <> $1 \
             AND updated_at > now() - interval '{} seconds' ORDER BY instance",
            outbound::PRESENCE_TTL_SECS
        ))
        .bind::<Text, _>(&self.instance);
        let rows: Vec<PresenceRow> =
            deadline(self.config.query_timeout, async { Ok(query.load(conn).await?) }).await?;
        let entries: Vec<PresenceEntry> = rows
            .iter()
            .filter_map(|r| serde_json::from_str::<Vec<PresenceEntry>>(&r.snapshot).ok())
            .flatten()
            .collect();
        let _ = self.signals.send(ClusterSignal::RemotePresence(entries));
        Ok(())
    }

    /// Reads what the cursor awaits and publishes it, batch by batch: each batch is one
    /// statement (one snapshot, one round trip), so an idle poll costs one statement and the
    /// cursor and what was published never disagree, whatever fails in between.
    async fn catch_up(&mut self, conn: &mut AsyncPgConnection) -> Result<(), FanoutError> {
        deadline(self.config.query_timeout, self.read_again(conn)).await?;
        loop {
            let full = deadline(self.config.query_timeout, self.read_batch(conn)).await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// One read; `true` when the batch was full (more may follow).
    async fn read_batch(&mut self, conn: &mut AsyncPgConnection) -> Result<bool, FanoutError> {
        self.metrics.reads.fetch_add(1, Ordering::Relaxed);
        let (lows, highs): (Vec<i64>, Vec<i64>) = self.cursor.gaps_to_read().into_iter().unzip();
        let starters: Vec<String> = self.cursor.start_transactions().iter().map(u64::to_string).collect();
        let lines: Vec<Line> = diesel::sql_query(READ)
            .bind::<BigInt, _>(self.cursor.high())
            .bind::<BigInt, _>(READ_BATCH)
            .bind::<Array<BigInt>, _>(lows)
            .bind::<Array<BigInt>, _>(highs)
            .bind::<BigInt, _>(self.cursor.start_upto())
            .bind::<Array<Text>, _>(starters)
            .load(conn)
            .await?;
        let first = <[Line]>::first(&lines).ok_or(FanoutError::Closed)?;
        let snapshot = parse_snapshot(&first.snapshot)?;
        let pruned_below = first.pruned_below;
        let mut read =
            Read { snapshot, pruned_below, in_gaps: Vec::new(), start_rows: Vec::new(), after: Vec::new() };
        let mut rows: HashMap<Seq, Row> = HashMap::new();
        for line in lines {
            let (Some(part), Some(row)) = (line.part, line.row()) else { continue };
            match part {
                Part::AFTER => read.after.push(row.seq),
                Part::GAP => read.in_gaps.push(row.seq),
                _ => read.start_rows.extend(row.tx_id.parse().ok().map(|xid| (row.seq, xid))),
            }
            rows.insert(row.seq, row);
        }
        read.after.sort_unstable();
        let full = read.after.len() as i64 == READ_BATCH;
        let outcome = self.cursor.apply(read);
        self.metrics.gaps_abandoned.fetch_add(outcome.abandoned, Ordering::Relaxed);
        self.metrics.open_gaps.store(self.cursor.open_gaps() as u64, Ordering::Relaxed);
        let found: Vec<Row> = outcome.publish.iter().filter_map(|seq| rows.remove(seq)).collect();
        self.publish(found);
        if let Some(resync) = outcome.resync {
            tracing::warn!(why = resync.reason(), "fan-out asks every subscriber to resync");
            self.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
            self.publisher.resync();
        }
        if self.cursor.needs_fence() {
            let fence = fence(conn).await?;
            self.cursor.fence(fence);
        }
        Ok(full)
    }

    /// Own rows whose commit was reported in doubt after they were read: read and announce.
    /// The numbers stay queued until the read succeeded (a deadline may drop this future).
    async fn read_again(&mut self, conn: &mut AsyncPgConnection) -> Result<(), FanoutError> {
        let seqs = self.writer.read_again.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if seqs.is_empty() {
            return Ok(());
        }
        let rows: Vec<Row> =
            diesel::sql_query(format!("SELECT {COLUMNS} FROM events WHERE seq = ANY($1) ORDER BY seq"))
                .bind::<Array<BigInt>, _>(&seqs)
                .load(conn)
                .await?;
        self.writer.read_again.lock().unwrap_or_else(|p| p.into_inner()).retain(|seq| !seqs.contains(seq));
        self.publish_envelopes(rows);
        Ok(())
    }

    /// Publishes other instances' rows, and this instance's own only when the writer could
    /// not (its commit was in doubt).
    fn publish(&self, rows: Vec<Row>) {
        let mut own = self.writer.own.lock().unwrap_or_else(|p| p.into_inner());
        let rows: Vec<Row> =
            rows.into_iter().filter(|r| r.origin != self.instance || own.listener_read(r.seq)).collect();
        drop(own);
        self.publish_envelopes(rows);
    }

    fn publish_envelopes(&self, rows: Vec<Row>) {
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
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
}

fn envelope(row: &Row) -> Result<EventEnvelope, serde_json::Error> {
    Ok(EventEnvelope {
        seq: row.seq,
        at: row.created_at.and_utc(),
        actor: serde_json::from_str(&row.actor)?,
        event: serde_json::from_str(&row.event)?,
    })
}
