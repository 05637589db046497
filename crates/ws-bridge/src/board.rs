//! The board: the newest value of every whole-value topic and of presence, each serialized
//! once, in one `watch` channel — and each connection's [`ClientFeed`] on it.
//!
//! One channel for everything a connection follows as a whole: a change wakes each
//! connection once (one waiter per connection, not one per topic: with 10,000 connections
//! the waiter bookkeeping was a tenth of the server's CPU per broadcast); cloning a value
//! for a client costs a reference count; a client that falls behind skips straight to the
//! newest value.
//!
//! Architecture invariant: values and versions only; knows nothing of sockets, users or
//! where values come from.

use std::collections::VecDeque;

use smallvec::SmallVec;
use tokio::sync::watch;

use crate::protocol::{Frame, server};
use crate::topic::{TopicId, TopicValue, Topics};

/// The newest value of a topic: its payload (to skip an equal one), number and message.
#[derive(Debug, Clone)]
struct Published {
    payload: String,
    seq: u64,
    frame: Frame,
}

#[derive(Debug, Clone)]
struct Board {
    values: Vec<Option<Published>>,
    /// The numbers given so far per topic (a value may be replaced; its number never reused).
    seqs: Vec<u64>,
    /// The newest `presence` message and its version (1 for the first).
    presence: (u64, Frame),
    /// The directory change count the presence message was built from.
    presence_built: u64,
    shutdown: bool,
}

/// The sending side of the board.
#[derive(Debug)]
pub(crate) struct BoardWriter {
    board: watch::Sender<Board>,
}

impl BoardWriter {
    pub(crate) fn new(topics: usize) -> Self {
        let board = Board {
            values: vec![None; topics],
            seqs: vec![0; topics],
            presence: (1, server::presence(&[])),
            presence_built: 0,
            shutdown: false,
        };
        Self { board: watch::channel(board).0 }
    }

    /// Publishes `topic`'s new value unless it equals the last one; returns whether it did.
    pub(crate) fn publish(&self, topics: &Topics, topic: TopicId, value: &TopicValue) -> bool {
        self.board.send_if_modified(|board| {
            if board.values[topic.0].as_ref().is_some_and(|p| p.payload == value.payload) {
                return false;
            }
            board.seqs[topic.0] += 1;
            let seq = board.seqs[topic.0];
            let frame = server::value(topics.name(topic), seq, &value.payload);
            board.values[topic.0] = Some(Published { payload: value.payload.clone(), seq, frame });
            true
        })
    }

    /// Publishes a presence message built from the directory's change count `built`, unless
    /// a newer build is already there (two builds may race) or it equals the current one.
    pub(crate) fn publish_presence(&self, built: u64, frame: Frame) -> bool {
        self.board.send_if_modified(|board| {
            if built < board.presence_built {
                return false;
            }
            board.presence_built = built;
            if board.presence.1 == frame {
                return false;
            }
            board.presence = (board.presence.0 + 1, frame);
            true
        })
    }

    /// The payload of `topic`'s newest value.
    pub(crate) fn current(&self, topic: TopicId) -> Option<String> {
        self.board.borrow().values[topic.0].as_ref().map(|p| p.payload.clone())
    }

    /// Tells every feed the server is going away.
    pub(crate) fn shut_down(&self) {
        self.board.send_modify(|board| board.shutdown = true);
    }

    pub(crate) fn changes(&self) -> BoardChanges {
        BoardChanges { board: self.board.subscribe() }
    }

    pub(crate) fn feed(&self) -> ClientFeed {
        let board = self.board.subscribe();
        let topics = board.borrow().values.len();
        ClientFeed {
            board,
            sent: SmallVec::from_elem(UNFOLLOWED, topics),
            presence_sent: None,
            pending: VecDeque::new(),
        }
    }
}

/// A topic's `sent` when it is not followed: no value's seq is greater.
const UNFOLLOWED: u64 = u64::MAX;

/// What a connection's feed yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// A followed topic has a new value: send this frame.
    Frame(Frame),
    /// The server is shutting down.
    Shutdown,
}

/// One connection's subscriptions to the board: what it follows, and the version of each
/// it was last given.
#[derive(Debug)]
pub struct ClientFeed {
    board: watch::Receiver<Board>,
    /// Per topic: the `seq` last given (0: none yet), [`UNFOLLOWED`] when not followed.
    /// Inline (a server has 5 topics): a fan-out reads it for every connection on every
    /// change, and a pointer to follow would be one more cache miss each.
    sent: SmallVec<[u64; 8]>,
    /// `None` when presence is not followed, else the version last given.
    presence_sent: Option<u64>,
    /// Frames found newer than what was given, not yet handed out.
    pending: VecDeque<Frame>,
}

impl ClientFeed {
    /// Starts following `topic`; returns its current value, marked as given.
    pub fn follow(&mut self, topic: TopicId) -> Option<Frame> {
        let board = self.board.borrow();
        let current = board.values[topic.0].as_ref();
        self.sent[topic.0] = current.map_or(0, |p| p.seq);
        current.map(|p| p.frame.clone())
    }

    /// Stops following `topic`.
    pub fn unfollow(&mut self, topic: TopicId) {
        self.sent[topic.0] = UNFOLLOWED;
    }

    /// Starts following presence; returns the current value, marked as given.
    pub fn follow_presence(&mut self) -> Frame {
        let board = self.board.borrow();
        self.presence_sent = Some(board.presence.0);
        board.presence.1.clone()
    }

    /// Stops following presence.
    pub fn unfollow_presence(&mut self) {
        self.presence_sent = None;
    }

    /// Waits for the next value not yet given of a followed topic (only the newest of each),
    /// or for shutdown. Cancel-safe: what was found stays pending.
    pub async fn next(&mut self) -> FeedEvent {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return FeedEvent::Frame(frame);
            }
            {
                let board = self.board.borrow_and_update();
                if board.shutdown {
                    return FeedEvent::Shutdown;
                }
                let pending = &mut self.pending;
                mark_newer(&mut self.sent, &mut self.presence_sent, &board, |frame| pending.push_back(frame));
            }
            if self.pending.is_empty() && self.board.changed().await.is_err() {
                // The hub is gone: nothing more will come.
                return FeedEvent::Shutdown;
            }
        }
    }

    /// Without waiting: appends to `out` the followed values not yet given (only the newest
    /// of each) and marks them given. `false` once the server is shutting down (nothing is
    /// appended then).
    pub fn take_newer(&mut self, out: &mut Vec<Frame>) -> bool {
        let board = self.board.borrow();
        if board.shutdown {
            return false;
        }
        out.extend(self.pending.drain(..));
        mark_newer(&mut self.sent, &mut self.presence_sent, &board, |frame| out.push(frame));
        true
    }
}

impl ClientFeed {
    /// Like [`ClientFeed::take_newer`], from `view` (the board at one moment, possibly older
    /// than what this feed has already given — then nothing of it is newer): appends to
    /// `out` the indexes in `view` ([`BoardView::frames`]) of the followed values not yet
    /// given, and marks them given. `false` (nothing appended) when the feed's owner must
    /// take them itself: the server is shutting down, or values it found wait in the feed.
    pub fn take_newer_in(&mut self, view: &BoardView, out: &mut Vec<u32>) -> bool {
        if view.shutdown || !self.pending.is_empty() {
            return false;
        }
        mark_newer_seqs(
            &mut self.sent,
            &mut self.presence_sent,
            view.values.iter().map(|value| value.as_ref().map(|(seq, _)| *seq)),
            view.presence.0,
            |index| out.push(index as u32),
        );
        true
    }
}

/// The board's values at one moment, read by a transport that writes them to many
/// connections ([`BoardChanges::view`], [`BoardChanges::newer_view`]): one read of the shared
/// board at the start of a pass and one per change during it, not one per connection.
#[derive(Debug, Clone)]
pub struct BoardView {
    /// Per topic, the newest value's seq and frame.
    values: SmallVec<[Option<(u64, Frame)>; 8]>,
    /// Presence's version and message.
    presence: (u64, Frame),
    shutdown: bool,
}

impl BoardView {
    /// The frames [`ClientFeed::take_newer_in`] gives indexes of: every topic's newest value
    /// (`None` before the first), then presence.
    pub fn frames(&self) -> impl Iterator<Item = Option<&Frame>> {
        self.values
            .iter()
            .map(|value| value.as_ref().map(|(_, frame)| frame))
            .chain(std::iter::once(Some(&self.presence.1)))
    }
}

/// Hands every followed value newer than the one given to `give`, marking it given.
fn mark_newer(sent: &mut [u64], presence_sent: &mut Option<u64>, board: &Board, mut give: impl FnMut(Frame)) {
    let seqs = board.values.iter().map(|value| value.as_ref().map(|p| p.seq));
    mark_newer_seqs(sent, presence_sent, seqs, board.presence.0, |index| {
        give(
            board
                .values
                .get(index)
                .and_then(Option::as_ref)
                .map_or_else(|| board.presence.1.clone(), |p| p.frame.clone()),
        )
    });
}

/// Marks as given every followed value whose seq (`seqs`, per topic; `presence`, its
/// version) is newer than the one given, handing `give` its index: the topics in order,
/// then presence at `seqs.len()`.
fn mark_newer_seqs(
    sent: &mut [u64],
    presence_sent: &mut Option<u64>,
    seqs: impl ExactSizeIterator<Item = Option<u64>>,
    presence: u64,
    mut give: impl FnMut(usize),
) {
    let topics = seqs.len();
    for (index, (sent, current)) in sent.iter_mut().zip(seqs).enumerate() {
        if let Some(seq) = current
            && seq > *sent
        {
            *sent = seq;
            give(index);
        }
    }
    if let Some(sent) = presence_sent.as_mut()
        && presence > *sent
    {
        *sent = presence;
        give(topics);
    }
}

/// Tells a transport that delivers many feeds itself when the board changed: one waiter for
/// all of them, instead of one per connection ([`crate::connection::DirectFeed`]).
#[derive(Debug)]
pub struct BoardChanges {
    board: watch::Receiver<Board>,
}

impl BoardChanges {
    /// Waits for a change after the last one seen; `false` once the hub is gone.
    pub async fn changed(&mut self) -> bool {
        self.board.changed().await.is_ok()
    }

    /// The board as it is now, if it changed since the last change seen (`None` also once the
    /// hub is gone); that change is then seen, so [`BoardChanges::changed`] will not report it.
    /// A transport that takes it in the middle of a pass writes the rest of the pass from it
    /// and must then pass again over the connections it had already written.
    pub fn newer_view(&mut self) -> Option<BoardView> {
        if !self.board.has_changed().unwrap_or(false) {
            return None;
        }
        self.board.mark_unchanged();
        Some(self.view())
    }

    /// The board as it is now.
    pub fn view(&self) -> BoardView {
        let board = self.board.borrow();
        BoardView {
            values: board
                .values
                .iter()
                .map(|value| value.as_ref().map(|p| (p.seq, p.frame.clone())))
                .collect(),
            presence: board.presence.clone(),
            shutdown: board.shutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::topic::testing;

    fn value(n: u64) -> TopicValue {
        TopicValue::json(&serde_json::json!({ "n": n }))
    }

    fn parse(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_str()).expect("json")
    }

    const TASKS: TopicId = TopicId(0);
    const APPROVALS: TopicId = TopicId(1);

    #[tokio::test]
    async fn a_value_is_serialized_once_with_a_growing_seq_and_equal_values_are_skipped() {
        let (topics, _) = testing::topics();
        let board = BoardWriter::new(topics.len());
        let (mut a, mut b) = (board.feed(), board.feed());
        a.follow(TASKS);
        b.follow(TASKS);
        assert!(board.publish(&topics, TASKS, &value(1)));
        assert!(!board.publish(&topics, TASKS, &value(1)), "equal value skipped");
        assert!(board.publish(&topics, TASKS, &value(2)));
        let (FeedEvent::Frame(fa), FeedEvent::Frame(fb)) = (a.next().await, b.next().await) else {
            panic!("frames expected")
        };
        // The same shared text: one serialization for every client.
        assert_eq!(fa.as_str().as_ptr(), fb.as_str().as_ptr());
        assert_eq!(parse(&fa), serde_json::json!({"type": "stats:tasks", "seq": 2, "payload": {"n": 2}}));
        assert_eq!(board.current(TASKS).as_deref(), Some(r#"{"n":2}"#));
    }

    #[tokio::test]
    async fn a_slow_client_gets_only_the_newest_value() {
        let (topics, _) = testing::topics();
        let board = BoardWriter::new(topics.len());
        let mut slow = board.feed();
        slow.follow(TASKS);
        for n in 1..=1000 {
            board.publish(&topics, TASKS, &value(n));
        }
        let FeedEvent::Frame(frame) = slow.next().await else { panic!("frame expected") };
        assert_eq!(parse(&frame)["payload"]["n"], 1000);
        assert_eq!(parse(&frame)["seq"], 1000);
        assert!(tokio::time::timeout(Duration::from_millis(20), slow.next()).await.is_err());
    }

    #[tokio::test]
    async fn a_feed_only_gets_the_topics_it_follows() {
        let (topics, _) = testing::topics();
        let board = BoardWriter::new(topics.len());
        let mut feed = board.feed();
        assert_eq!(feed.follow(APPROVALS), None);
        board.publish(&topics, TASKS, &value(1));
        assert!(tokio::time::timeout(Duration::from_millis(20), feed.next()).await.is_err());
        board.publish(&topics, APPROVALS, &value(5));
        let FeedEvent::Frame(frame) = feed.next().await else { panic!("frame expected") };
        assert_eq!(parse(&frame)["type"], "stats:approvals");
        feed.unfollow(APPROVALS);
        board.publish(&topics, APPROVALS, &value(6));
        assert!(tokio::time::timeout(Duration::from_millis(20), feed.next()).await.is_err());
        let current = feed.follow(TASKS).expect("current value");
        assert_eq!(parse(&current)["payload"]["n"], 1);
    }

    #[tokio::test]
    async fn presence_from_an_older_build_never_replaces_a_newer_one() {
        let board = BoardWriter::new(0);
        let mut feed = board.feed();
        let first = feed.follow_presence();
        assert_eq!(parse(&first)["payload"]["online"], serde_json::json!([]));
        let newer = Frame::from_static(r#"{"type":"presence","payload":{"online":["newer"]}}"#);
        let older = Frame::from_static(r#"{"type":"presence","payload":{"online":["older"]}}"#);
        assert!(board.publish_presence(5, newer.clone()));
        assert!(!board.publish_presence(4, older), "built from an older state");
        assert!(!board.publish_presence(6, newer.clone()), "equal");
        assert_eq!(feed.next().await, FeedEvent::Frame(newer));
        feed.unfollow_presence();
        board.publish_presence(7, Frame::from_static("{}"));
        assert!(tokio::time::timeout(Duration::from_millis(20), feed.next()).await.is_err());
    }

    /// A transport in the middle of a pass gets a newer view once per change, and that change
    /// is then seen: no pass waits for it, so the transport must pass again by itself.
    #[tokio::test]
    async fn a_newer_view_comes_once_per_change_and_counts_it_as_seen() {
        use futures_util::FutureExt;
        let (topics, _) = testing::topics();
        let board = BoardWriter::new(topics.len());
        let mut changes = board.changes();
        assert!(changes.newer_view().is_none(), "nothing published yet");
        board.publish(&topics, TASKS, &value(1));
        assert!(changes.changed().await, "a pass starts");
        assert!(changes.newer_view().is_none(), "the pass's own change is not newer");
        // A change in the middle of the pass: the rest of it is written from the newer view.
        board.publish(&topics, TASKS, &value(2));
        let newer = changes.newer_view().expect("a newer view");
        let frame = newer.frames().nth(TASKS.0).flatten().expect("a value");
        assert_eq!(parse(frame)["payload"]["n"], 2);
        assert!(changes.newer_view().is_none(), "once per change");
        // It is seen: no pass waits for it (the transport passes again by itself).
        assert_eq!(changes.changed().now_or_never(), None, "seen");
        board.publish(&topics, TASKS, &value(3));
        assert_eq!(changes.changed().now_or_never(), Some(true), "a later change starts a pass");
    }

    /// What a fan-out takes from one view of the board: the followed values newer than
    /// given (presence too), each once, nothing from a view older than what was given, and
    /// nothing (the owner takes them) once shutting down or when values wait in the feed.
    #[tokio::test]
    async fn a_view_gives_each_newer_followed_value_once() {
        let (topics, _) = testing::topics();
        let board = BoardWriter::new(topics.len());
        let changes = board.changes();
        let mut feed = board.feed();
        feed.follow(TASKS);
        feed.follow_presence();
        board.publish(&topics, TASKS, &value(1));
        board.publish(&topics, APPROVALS, &value(1));
        let first = changes.view();
        let frames: Vec<Option<&Frame>> = first.frames().collect();
        assert_eq!(frames.len(), topics.len() + 1, "every topic, then presence");
        let mut picks = Vec::new();
        assert!(feed.take_newer_in(&first, &mut picks));
        assert_eq!(picks, [TASKS.0 as u32], "only the followed topic");
        assert_eq!(parse(frames[TASKS.0].expect("a value"))["payload"]["n"], 1);
        picks.clear();
        assert!(feed.take_newer_in(&first, &mut picks));
        assert!(picks.is_empty(), "given once");

        board.publish(&topics, TASKS, &value(2));
        let presence = Frame::from_static(r#"{"type":"presence","payload":{"online":["ana"]}}"#);
        assert!(board.publish_presence(1, presence.clone()));
        let second = changes.view();
        assert!(feed.take_newer_in(&second, &mut picks));
        assert_eq!(picks, [TASKS.0 as u32, topics.len() as u32], "the newer value and presence");
        let frames: Vec<Option<&Frame>> = second.frames().collect();
        assert_eq!(frames[topics.len()], Some(&presence));
        picks.clear();
        assert!(feed.take_newer_in(&first, &mut picks));
        assert!(picks.is_empty(), "an older view gives nothing");

        // Values the feed found itself wait in it: the owner sends them, not the view.
        feed.follow(APPROVALS);
        board.publish(&topics, TASKS, &value(3));
        board.publish(&topics, APPROVALS, &value(3));
        assert!(matches!(feed.next().await, FeedEvent::Frame(_)));
        assert!(!feed.take_newer_in(&changes.view(), &mut picks), "one is still pending");
        assert!(picks.is_empty());
        assert!(matches!(feed.next().await, FeedEvent::Frame(_)));

        board.publish(&topics, TASKS, &value(4));
        board.shut_down();
        assert!(!feed.take_newer_in(&changes.view(), &mut picks), "shutting down");
        assert!(picks.is_empty());
    }

    #[tokio::test]
    async fn shutdown_reaches_every_feed() {
        let board = BoardWriter::new(1);
        let mut feed = board.feed();
        board.shut_down();
        assert_eq!(feed.next().await, FeedEvent::Shutdown);
        assert_eq!(board.feed().next().await, FeedEvent::Shutdown);
    }
}
