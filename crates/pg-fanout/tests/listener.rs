//! The listener against a real PostgreSQL database: slow commits, rollbacks, commits in
//! doubt and the fixed safety poll. (Whole instances under faults: xtask/suites.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use domain_events::{BusMessage, DomainEvent, EventStream, EventSubscriber, InProcessBus};
use pg_fanout::{FanoutConfig, PgFanout};

mod support;
use support::{Scratch, connection_named, insert_event};

#[derive(QueryableByName)]
struct Seq {
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

/// Appends a `task.created` for `id` on `conn` (inside whatever transaction it has open).
async fn append(conn: &mut AsyncPgConnection, id: i64) -> i64 {
    let row: Seq = diesel::sql_query(format!("{} RETURNING seq", insert_event(id)))
        .get_result(conn)
        .await
        .expect("insert event");
    row.seq
}

/// What a bus subscriber received, by task id, until `quiet` passes without anything new.
async fn collect(stream: &mut EventStream, quiet: Duration) -> (HashMap<i64, u32>, u32) {
    let (mut seen, mut resyncs) = (HashMap::new(), 0);
    while let Ok(Some(message)) = tokio::time::timeout(quiet, stream.recv()).await {
        match message {
            BusMessage::Event(envelope) => match &envelope.event {
                DomainEvent::TaskCreated(task) => *seen.entry(task.id).or_default() += 1,
                other => panic!("unexpected {other:?}"),
            },
            BusMessage::Lagged { .. } => resyncs += 1,
        }
    }
    (seen, resyncs)
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    std::sync::atomic::AtomicU64::load(counter, Ordering::Relaxed)
}

async fn start(scratch: &Scratch, name: &str, bus: &InProcessBus) -> PgFanout {
    PgFanout::start(&scratch.url, name, Arc::new(bus.clone()), FanoutConfig::default())
        .await
        .expect("fan-out starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_commit_is_published_once_however_long_it_held_its_number() {
    let scratch = Scratch::create().await;
    let bus = InProcessBus::default();
    let mut stream = bus.subscribe();
    let reader = start(&scratch, "reader", &bus).await;

    let mut slow = connection_named(&scratch.url, "writer").await;
    slow.batch_execute("BEGIN").await.expect("begin");
    let held = append(&mut slow, 1).await;
    let mut quick = connection_named(&scratch.url, "writer").await;
    for id in 2..=4 {
        append(&mut quick, id).await;
    }
    let (seen, _) = collect(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(seen, HashMap::from([(2, 1), (3, 1), (4, 1)]), "later numbers do not wait for the held one");
    assert_eq!(count(&reader.metrics().open_gaps), 1, "number {held} is awaited");

    // Longer than several safety polls: a clock would have given the number up by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    slow.batch_execute("COMMIT").await.expect("commit");
    let (seen, resyncs) = collect(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(seen, HashMap::from([(1, 1)]), "the slow commit arrives, once");
    assert_eq!(resyncs, 0);
    assert_eq!(count(&reader.metrics().gaps_abandoned), 0);
    assert_eq!(count(&reader.metrics().open_gaps), 0);
    drop(reader);
    scratch.drop_database().await;
}

/// The holder of a missing number has a *higher* transaction id than the writer of the row
/// after it, so a snapshot taken before anything later completes does not list it (its
/// `xmax` is one past the latest completed transaction). The gap must stay open anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_with_a_higher_transaction_id_keeps_its_gap_open() {
    let scratch = Scratch::create().await;
    let bus = InProcessBus::default();
    let mut stream = bus.subscribe();
    let reader = start(&scratch, "reader", &bus).await;

    let mut first = connection_named(&scratch.url, "writer").await;
    let mut second = connection_named(&scratch.url, "writer").await;
    first.batch_execute("BEGIN; SELECT pg_current_xact_id()").await.expect("first takes its id");
    second.batch_execute("BEGIN; SELECT pg_current_xact_id()").await.expect("second takes a higher id");
    append(&mut second, 1).await;
    append(&mut first, 2).await;
    first.batch_execute("COMMIT").await.expect("commit the lower id");
    let (seen, _) = collect(&mut stream, Duration::from_millis(2500)).await;
    assert_eq!(seen, HashMap::from([(2, 1)]));
    assert_eq!(count(&reader.metrics().gaps_abandoned), 0, "not given up while its holder runs");
    second.batch_execute("COMMIT").await.expect("commit the higher id");
    let (seen, resyncs) = collect(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(seen, HashMap::from([(1, 1)]), "the held row arrives, once");
    assert_eq!(resyncs, 0);
    drop(reader);
    scratch.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_number_is_given_up_once_its_transaction_ended_without_a_resync() {
    let scratch = Scratch::create().await;
    let bus = InProcessBus::default();
    let mut stream = bus.subscribe();
    let reader = start(&scratch, "reader", &bus).await;

    let mut doomed = connection_named(&scratch.url, "writer").await;
    doomed.batch_execute("BEGIN").await.expect("begin");
    append(&mut doomed, 1).await;
    let mut quick = connection_named(&scratch.url, "writer").await;
    append(&mut quick, 2).await;
    let (seen, _) = collect(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(seen, HashMap::from([(2, 1)]));
    doomed.batch_execute("ROLLBACK").await.expect("rollback");
    append(&mut quick, 3).await;
    let (seen, mut resyncs) = collect(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(seen, HashMap::from([(3, 1)]));
    // Given up once no transaction of the whole server that was running when the gap was
    // seen still runs: other tests' transactions can hold that back for a few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while count(&reader.metrics().open_gaps) > 0 && tokio::time::Instant::now() < deadline {
        resyncs += collect(&mut stream, Duration::from_millis(200)).await.1;
    }
    assert_eq!(resyncs, 0, "a rollback is no reason to resync");
    assert_eq!(count(&reader.metrics().gaps_abandoned), 1);
    assert_eq!(count(&reader.metrics().open_gaps), 0);
    drop(reader);
    scratch.drop_database().await;
}

/// A row this instance wrote whose commit was in doubt (the acknowledgement was lost) is
/// announced by its own listener exactly once, whether the doubt is raised before or after
/// the listener read the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_doubt_is_announced_once_by_the_writers_own_listener() {
    let scratch = Scratch::create().await;
    let bus = InProcessBus::default();
    let mut stream = bus.subscribe();
    let me = start(&scratch, "me", &bus).await;
    let publisher = me.publisher();
    let mut mine = connection_named(&scratch.url, "me").await;

    // Acknowledged: the writer announced it itself, the listener does not repeat it.
    append(&mut mine, 1).await;
    // In doubt, reported before the listener reads it.
    let doubted_early = append(&mut mine, 2).await;
    publisher.commit_unknown(&[doubted_early]);
    let (seen, _) = collect(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(seen, HashMap::from([(2, 1)]));

    // In doubt, reported after the listener read (and skipped) it.
    let reads = count(&me.metrics().reads);
    let doubted_late = append(&mut mine, 3).await;
    while count(&me.metrics().reads) < reads + 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(collect(&mut stream, Duration::from_millis(100)).await.0.is_empty(), "skipped as its own");
    publisher.commit_unknown(&[doubted_late]);
    let (seen, _) = collect(&mut stream, Duration::from_millis(1500)).await;
    assert_eq!(seen, HashMap::from([(3, 1)]));
    drop(me);
    scratch.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_safety_poll_runs_on_a_fixed_interval_that_notifications_do_not_postpone() {
    let scratch = Scratch::create().await;
    let bus = InProcessBus::default();
    let mut stream = bus.subscribe();
    let config = FanoutConfig { safety_poll: Duration::from_millis(500), ..FanoutConfig::default() };
    let reader = PgFanout::start(&scratch.url, "reader", Arc::new(bus.clone()), config).await.expect("start");
    // A stream of notices that are not doorbells (another instance's typing): before, each
    // one restarted the poll's timer, so the poll never ran.
    let mut noisy = connection_named(&scratch.url, "noisy").await;
    let noise = tokio::spawn(async move {
        for _ in 0..40 {
            let _ = noisy.batch_execute("NOTIFY pulse_typing, '{}'").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        noisy
    });
    // A row written without a doorbell (its writer "died" after the commit).
    let mut quiet = connection_named(&scratch.url, "writer").await;
    append(&mut quiet, 7).await;
    let (seen, _) = collect(&mut stream, Duration::from_millis(1200)).await;
    assert_eq!(seen, HashMap::from([(7, 1)]), "found by the safety poll despite the noise");
    noise.await.expect("noise");
    drop(reader);
    scratch.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_a_row_whose_transaction_ran_during_the_previous_pruning() {
    let scratch = Scratch::create().await;
    let db = services::Database::connect(&scratch.url, services::PoolOptions::default()).await.expect("db");
    let log = services::EventLog::new(db);
    let mut horizon = services::PruneHorizon::default();
    let mut late = connection_named(&scratch.url, "writer").await;
    late.batch_execute("BEGIN").await.expect("begin");
    let seq = append(&mut late, 1).await;
    log.prune(chrono::Utc::now() + chrono::Duration::hours(1), &mut horizon).await.expect("prune");
    late.batch_execute("COMMIT").await.expect("commit");
    let mut other = connection_named(&scratch.url, "writer").await;
    append(&mut other, 2).await;
    // Everything is older than the cut-off; the late row still stays a pruning period.
    log.prune(chrono::Utc::now() + chrono::Duration::hours(1), &mut horizon).await.expect("prune");
    let left = log.after(0, 10).await.expect("log");
    assert!(left.iter().any(|e| e.seq == seq), "the late row survived: {left:?}");
    scratch.drop_database().await;
}
