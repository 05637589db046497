//! One connection's mailbox: the messages meant for it alone (personal events, typing in
//! the conversations it follows), and the order to close it (its user was deactivated or
//! its credential retired).
//!
//! Bounded and conflating: a newer message about the same thing replaces the one waiting
//! ([`MailKey`]), and a client that lets more than [`MAILBOX_CAPACITY`] things pile up
//! counts as too slow instead of growing the queue.
//!
//! It also holds the connection's *gate* for a transport that writes board values itself
//! ([`crate::direct_session`]): one word saying whether the session waits with nothing to
//! send, whether it was poked, and whether a close is due — so the transport's check per
//! connection and per change reads one cache line.
//!
//! Architecture invariant: a queue and signals; knows nothing of users, topics or sockets.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, Ordering};

use tokio::sync::Notify;

use crate::protocol::Frame;

/// Personal and typing messages a client may have waiting before it counts as too slow.
pub const MAILBOX_CAPACITY: usize = 256;

/// What a mailbox entry is about: a newer entry about the same thing replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailKey {
    /// `task:assigned` for this task.
    TaskAssigned(i64),
    /// `typing` of this user in this conversation.
    Typing {
        /// Conversation id.
        conversation: i64,
        /// User id.
        user: i64,
    },
}

/// Why a mailbox will not be emptied any more: its connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The client let too much pile up.
    TooSlow,
    /// The server closes it with this code (4403 deactivated, 4401 credential retired).
    Code(u16),
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Mailbox {
    entries: Mutex<Vec<(MailKey, Frame)>>,
    ready: Notify,
    overflowed: AtomicBool,
    close_code: AtomicU16,
    /// [`GATE_CLOSING`], [`GATE_IDLE`], [`GATE_POKED`].
    gate: AtomicU8,
}

/// A close is due (an order, or an overflow): nothing but the close may be written.
const GATE_CLOSING: u8 = 1;
/// The session waits with nothing to send.
const GATE_IDLE: u8 = 2;
/// The transport could not write newer board values: the session takes them itself.
const GATE_POKED: u8 = 4;

/// Whether [`Mailbox::put`] replaced a waiting message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Added,
    Replaced,
    Overflowed,
}

impl Mailbox {
    pub(crate) fn put(&self, key: MailKey, frame: Frame) -> Put {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let put = if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = frame;
            Put::Replaced
        } else if entries.len() >= MAILBOX_CAPACITY {
            self.overflowed.store(true, Ordering::Relaxed);
            self.gate.fetch_or(GATE_CLOSING, Ordering::SeqCst);
            Put::Overflowed
        } else {
            entries.push((key, frame));
            Put::Added
        };
        drop(entries);
        self.ready.notify_one();
        put
    }

    /// Orders the connection closed with `code` (the first order wins).
    pub(crate) fn close(&self, code: u16) {
        if self.close_code.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.gate.fetch_or(GATE_CLOSING, Ordering::SeqCst);
            self.ready.notify_one();
        }
    }

    /// Whether the connection is to close (an order, or an overflow): nothing more may be
    /// written to it but the close.
    pub fn is_closing(&self) -> bool {
        self.gate.load(Ordering::SeqCst) & GATE_CLOSING != 0
    }

    /// Whether the session waits with nothing to send and no close is due: a transport may
    /// then write board values to the connection itself.
    pub(crate) fn open_to_direct_writes(&self) -> bool {
        self.gate.load(Ordering::Acquire) & (GATE_IDLE | GATE_CLOSING) == GATE_IDLE
    }

    /// Marks the session as waiting with nothing to send, or not.
    pub(crate) fn set_idle(&self, idle: bool) {
        if idle {
            self.gate.fetch_or(GATE_IDLE, Ordering::AcqRel);
        } else {
            self.gate.fetch_and(!GATE_IDLE, Ordering::AcqRel);
        }
    }

    /// Asks the session to take the newer board values itself.
    pub(crate) fn poke(&self) {
        self.gate.fetch_or(GATE_POKED, Ordering::AcqRel);
    }

    /// Whether the session was poked since the last call (and clears it).
    pub(crate) fn take_poke(&self) -> bool {
        self.gate.load(Ordering::Acquire) & GATE_POKED != 0
            && self.gate.fetch_and(!GATE_POKED, Ordering::AcqRel) & GATE_POKED != 0
    }

    /// Waits until something is waiting (or the connection must close). Cancel-safe.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Everything waiting, oldest first — or why the connection must end (a close order
    /// wins over what is waiting: a deactivated user gets nothing more).
    pub fn take(&self) -> Result<Vec<Frame>, Closing> {
        match self.close_code.load(Ordering::SeqCst) {
            0 => {}
            code => return Err(Closing::Code(code)),
        }
        if self.overflowed.load(Ordering::Relaxed) {
            return Err(Closing::TooSlow);
        }
        let entries = std::mem::take(&mut *self.entries.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(entries.into_iter().map(|(_, frame)| frame).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_newest_message_per_key_is_kept_and_overflow_ends_the_connection() {
        let mailbox = Mailbox::default();
        assert_eq!(mailbox.put(MailKey::TaskAssigned(1), Frame::from_static("old")), Put::Added);
        assert_eq!(mailbox.put(MailKey::TaskAssigned(1), Frame::from_static("new")), Put::Replaced);
        assert_eq!(mailbox.take(), Ok(vec![Frame::from_static("new")]));
        assert_eq!(mailbox.take(), Ok(vec![]));
        for i in 0..MAILBOX_CAPACITY as i64 {
            assert_eq!(mailbox.put(MailKey::TaskAssigned(i), Frame::from_static("x")), Put::Added);
        }
        assert!(!mailbox.is_closing());
        assert_eq!(mailbox.put(MailKey::TaskAssigned(-1), Frame::from_static("x")), Put::Overflowed);
        assert!(mailbox.is_closing());
        assert_eq!(mailbox.take(), Err(Closing::TooSlow));
    }

    #[tokio::test]
    async fn a_close_order_wakes_the_connection_and_wins_over_waiting_messages() {
        let mailbox = Mailbox::default();
        mailbox.put(MailKey::TaskAssigned(1), Frame::from_static("x"));
        mailbox.take().expect("taken");
        mailbox.close(4403);
        assert!(mailbox.is_closing());
        mailbox.close(4401);
        tokio::time::timeout(Duration::from_millis(50), mailbox.ready()).await.expect("woken");
        mailbox.put(MailKey::TaskAssigned(2), Frame::from_static("y"));
        assert_eq!(mailbox.take(), Err(Closing::Code(4403)), "the first order wins");
    }

    #[test]
    fn the_gate_opens_only_for_an_idle_connection_with_no_close_due() {
        let mailbox = Mailbox::default();
        assert!(!mailbox.open_to_direct_writes(), "busy until it waits");
        mailbox.set_idle(true);
        assert!(mailbox.open_to_direct_writes());
        mailbox.poke();
        assert!(mailbox.open_to_direct_writes(), "a poke leaves it idle");
        assert!(mailbox.take_poke());
        assert!(!mailbox.take_poke(), "taken once");
        mailbox.set_idle(false);
        assert!(!mailbox.open_to_direct_writes());
        mailbox.set_idle(true);
        mailbox.close(4403);
        assert!(!mailbox.open_to_direct_writes(), "a close order shuts it");
        mailbox.set_idle(false);
        mailbox.set_idle(true);
        assert!(!mailbox.open_to_direct_writes(), "for good");
        assert!(mailbox.is_closing());
    }
}
