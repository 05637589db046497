//! The event bus: publisher and subscriber traits and the in-process implementation.
//!
//! # Lagging subscribers
//!
//! The in-process bus is a bounded ring ([`tokio::sync::broadcast`]). Publishing never
//! waits for subscribers, and memory never grows past the ring's capacity. A subscriber
//! that falls more than `capacity` events behind loses the oldest ones and is told so,
//! once, with [`BusMessage::Lagged`] before it receives the newest events. A lagged
//! subscriber must treat everything it derived from events as stale and resynchronise
//! from the source of truth (the WebSocket bridge recomputes every stats topic).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::event::EventEnvelope;

/// Hands committed events to whoever listens.
///
/// Called after the change committed, never inside the transaction. Implementations
/// must not block and must not fail the caller: the change is already durable, and
/// a subscriber that misses an event is told so by its stream ([`BusMessage::Lagged`]).
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes the events of one committed change, in order.
    fn publish(&self, events: Vec<EventEnvelope>);

    /// Tells subscribers that events may have been lost upstream (a transport could not
    /// cover a gap): they receive [`BusMessage::Lagged`] and resynchronise.
    fn resync(&self) {}

    /// A change recorded the events numbered `seqs` and was ready to commit, but the
    /// commit's acknowledgement never came (the connection died during `COMMIT`): it may
    /// have committed. A publisher that can read the event log announces those events if
    /// they are there (`docs/protocol.md` §3: such a change is announced like any other); the
    /// in-process bus cannot know, and does nothing.
    fn commit_unknown(&self, seqs: &[i64]) {
        let _ = seqs;
    }
}

/// Opens streams of events.
pub trait EventSubscriber: Send + Sync + 'static {
    /// A stream of every event published from now on.
    fn subscribe(&self) -> EventStream;
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// The next event.
    Event(Arc<EventEnvelope>),
    /// Events were lost for this subscriber (it fell behind, or a transport reported a
    /// gap it could not cover): resync.
    Lagged {
        /// How many events were lost; 0 when unknown.
        missed: u64,
    },
}

/// A subscription to a bus; see [`EventSubscriber::subscribe`].
#[derive(Debug)]
pub struct EventStream {
    receiver: broadcast::Receiver<Item>,
}

/// What travels in the ring.
#[derive(Debug, Clone)]
enum Item {
    Event(Arc<EventEnvelope>),
    Resync,
}

impl EventStream {
    /// The next message, or `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        match self.receiver.recv().await {
            Ok(Item::Event(event)) => Some(BusMessage::Event(event)),
            Ok(Item::Resync) => Some(BusMessage::Lagged { missed: 0 }),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(BusMessage::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The in-process bus: one bounded ring shared by every subscriber.
///
/// ```
/// use domain_events::{BusMessage, EventSubscriber, InProcessBus};
///
/// let bus = InProcessBus::new(1024);
/// let mut stream = bus.subscribe();
/// # drop(stream);
/// ```
#[derive(Debug, Clone)]
pub struct InProcessBus {
    sender: broadcast::Sender<Item>,
}

impl InProcessBus {
    /// The default ring size: room for a burst of a few thousand changes.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A bus that keeps at most `capacity` events for its slowest subscriber.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// How many subscribers are listening.
    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl EventPublisher for InProcessBus {
    fn publish(&self, events: Vec<EventEnvelope>) {
        for event in events {
            // An error only means nobody listens right now: nothing to do.
            let _ = self.sender.send(Item::Event(Arc::new(event)));
        }
    }

    fn resync(&self) {
        let _ = self.sender.send(Item::Resync);
    }
}

impl EventSubscriber for InProcessBus {
    fn subscribe(&self) -> EventStream {
        EventStream { receiver: self.sender.subscribe() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DomainEvent;
    use crate::model::{Actor, Conversation, ConversationState, Role};
    use chrono::Utc;

    fn envelope(seq: i64) -> EventEnvelope {
        let now = Utc::now();
        EventEnvelope {
            seq,
            at: now,
            actor: Actor { user_id: 1, username: "admin".into(), role: Role::Admin },
            event: DomainEvent::ConversationCreated(Conversation {
                id: seq,
                guest_name: "Guest".into(),
                channel: "chat".into(),
                subject: "Late checkout".into(),
                state: ConversationState::Active,
                escalation_reason: None,
                created_by: "admin".into(),
                created_at: now,
                updated_at: now,
                resolved_at: None,
                escalated_at: None,
            }),
        }
    }

    fn seq_of(message: Option<BusMessage>) -> i64 {
        match message {
            Some(BusMessage::Event(event)) => event.seq,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let bus = InProcessBus::new(16);
        let mut first = bus.subscribe();
        let mut second = bus.subscribe();
        bus.publish(vec![envelope(1), envelope(2)]);
        bus.publish(vec![envelope(3)]);
        for stream in [&mut first, &mut second] {
            assert_eq!(seq_of(stream.recv().await), 1);
            assert_eq!(seq_of(stream.recv().await), 2);
            assert_eq!(seq_of(stream.recv().await), 3);
        }
    }

    #[tokio::test]
    async fn publishing_without_subscribers_is_fine() {
        let bus = InProcessBus::new(4);
        bus.publish(vec![envelope(1)]);
        assert_eq!(bus.subscriber_count(), 0);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_then_gets_the_newest_events() {
        let bus = InProcessBus::new(4);
        let mut slow = bus.subscribe();
        let mut fast = bus.subscribe();
        // The publisher never waits: ten events into a ring of four return at once.
        for seq in 1..=10 {
            bus.publish(vec![envelope(seq)]);
            assert_eq!(seq_of(fast.recv().await), seq);
        }
        match slow.recv().await {
            Some(BusMessage::Lagged { missed }) => assert_eq!(missed, 6),
            other => panic!("expected a lag signal, got {other:?}"),
        }
        for seq in 7..=10 {
            assert_eq!(seq_of(slow.recv().await), seq);
        }
    }

    #[tokio::test]
    async fn a_resync_request_reaches_subscribers_as_a_lag() {
        let bus = InProcessBus::new(4);
        let mut stream = bus.subscribe();
        bus.resync();
        bus.publish(vec![envelope(1)]);
        assert!(matches!(stream.recv().await, Some(BusMessage::Lagged { missed: 0 })));
        assert_eq!(seq_of(stream.recv().await), 1);
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_bus_is_dropped() {
        let bus = InProcessBus::new(4);
        let mut stream = bus.subscribe();
        drop(bus);
        assert!(stream.recv().await.is_none());
    }
}
