//! The doorbell against a real PostgreSQL database: however fast commits come, an instance
//! rings at most once per `DOORBELL_MIN_INTERVAL`, and its rings name it (so its own
//! listener can skip them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use domain_events::{EventSubscriber, InProcessBus};
use futures_util::StreamExt;
use pg_fanout::{CHANNEL, DOORBELL_MIN_INTERVAL, FanoutConfig, PgFanout};

mod support;
use support::Scratch;

#[tokio::test]
async fn a_stream_of_commits_rings_at_most_once_per_interval_and_names_the_instance() {
    let scratch = Scratch::create().await;
    let bus = InProcessBus::default();
    let _local = bus.subscribe();
    let link = PgFanout::start(&scratch.url, "ringer", Arc::new(bus), FanoutConfig::default())
        .await
        .expect("fan-out starts");
    let mut listener = AsyncPgConnection::establish(&scratch.url).await.expect("listener");
    listener.batch_execute(&format!("LISTEN {CHANNEL}")).await.expect("LISTEN");

    // Commits as fast as a busy instance could announce them: far more than one per interval.
    let publisher = link.publisher();
    let ringing = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < until {
            publisher.publish(Vec::new());
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });

    let mut rings = Vec::new();
    {
        let mut notifications = std::pin::pin!(listener.notifications_stream());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
        while let Ok(Some(notification)) = tokio::time::timeout_at(deadline, notifications.next()).await {
            let notification = notification.expect("notification");
            rings.push((Instant::now(), notification.payload));
        }
    }
    ringing.await.expect("ringing task");

    assert!(!rings.is_empty(), "the doorbell rang");
    assert!(rings.iter().all(|(_, payload)| payload == "ringer"), "every ring names its instance: {rings:?}");
    // The listener sees rings no closer than the ringer sent them; allow one interval of
    // delivery jitter at each end.
    let span = rings.last().map(|l| l.0).unwrap_or_else(Instant::now) - rings[0].0;
    let allowed = (span.as_secs_f64() / DOORBELL_MIN_INTERVAL.as_secs_f64()).floor() as usize + 3;
    assert!(
        rings.len() <= allowed,
        "{} rings in {span:?}: more than one per {DOORBELL_MIN_INTERVAL:?} (allowed {allowed})",
        rings.len()
    );
    link.stop();
    drop(link);
    scratch.drop_database().await;
}
