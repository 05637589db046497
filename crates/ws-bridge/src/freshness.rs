//! Read your writes: whether the value published for a topic reflects every change
//! announced before a given moment.
//!
//! A change marks its topics stale (a generation counter per topic) before its request is
//! answered; a recompute reads the generation when it starts, and once its value is
//! published the topic is settled up to that generation. A snapshot waits until the topic
//! is settled up to the generation it saw — so it never predates a change already
//! answered.
//!
//! Architecture invariant: counters and waits only; knows nothing of values or sockets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::topic::TopicId;

/// Per topic: changes announced, and the generation the published value reflects.
#[derive(Debug)]
pub(crate) struct Freshness {
    stale: Vec<AtomicU64>,
    settled: Vec<watch::Sender<u64>>,
}

impl Freshness {
    pub(crate) fn new(topics: usize) -> Self {
        Self {
            stale: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            settled: (0..topics).map(|_| watch::channel(0).0).collect(),
        }
    }

    /// A change to `topic` committed: its published value is stale until a recompute that
    /// starts after this call settles it.
    pub(crate) fn mark_stale(&self, topic: TopicId) {
        self.stale[topic.0].fetch_add(1, Ordering::SeqCst);
    }

    /// The changes announced so far for `topic` (read when a recompute starts).
    pub(crate) fn generation(&self, topic: TopicId) -> u64 {
        self.stale[topic.0].load(Ordering::SeqCst)
    }

    /// The value now published reflects every change up to `generation`.
    pub(crate) fn settle(&self, topic: TopicId, generation: u64) {
        self.settled[topic.0].send_if_modified(|settled| {
            let newer = generation > *settled;
            if newer {
                *settled = generation;
            }
            newer
        });
    }

    /// Waits (at most `limit`) until the published value reflects every change announced
    /// before this call. Returns at once when nothing is pending.
    pub(crate) async fn wait(&self, topic: TopicId, limit: Duration) {
        let target = self.generation(topic);
        let mut settled = self.settled[topic.0].subscribe();
        let _ = tokio::time::timeout(limit, settled.wait_for(|g| *g >= target)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const T: TopicId = TopicId(0);

    #[tokio::test]
    async fn nothing_pending_returns_at_once() {
        let f = Freshness::new(1);
        tokio::time::timeout(Duration::from_millis(50), f.wait(T, Duration::from_secs(10)))
            .await
            .expect("no wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_a_recompute_that_started_after_the_change_settles() {
        let f = Arc::new(Freshness::new(1));
        let before = f.generation(T);
        f.mark_stale(T);
        let waiter = {
            let f = f.clone();
            tokio::spawn(async move { f.wait(T, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A recompute that started before the change does not satisfy the wait.
        f.settle(T, before);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "settled only up to the generation before the change");
        f.settle(T, f.generation(T));
        tokio::time::timeout(Duration::from_millis(10), waiter).await.expect("woken").expect("task");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_gives_up_after_its_limit() {
        let f = Freshness::new(1);
        f.mark_stale(T);
        let started = tokio::time::Instant::now();
        f.wait(T, Duration::from_secs(1)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[test]
    fn settling_never_goes_back() {
        let f = Freshness::new(1);
        f.mark_stale(T);
        f.mark_stale(T);
        f.settle(T, 2);
        f.settle(T, 1);
        assert_eq!(*f.settled[0].borrow(), 2);
        assert_eq!(f.generation(T), 2);
    }
}
