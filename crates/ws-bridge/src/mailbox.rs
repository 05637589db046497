//! One connection's mailbox: the messages meant for it alone (personal events, typing in
//! the conversations it follows), and the order to close it (its user was deactivated or
//! its credential retired).
//!
//! Bounded and conflating: a newer message about the same thing replaces the one waiting
//! ([`MailKey`]), and a client that lets more than [`MAILBOX_CAPACITY`] things pile up
//! counts as too slow instead of growing the queue.
//!
//! Architecture invariant: a queue and a signal; knows nothing of users, topics or sockets.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

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
}

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
            self.ready.notify_one();
        }
    }

    /// Whether the connection is to close (an order, or an overflow): nothing more may be
    /// written to it but the close.
    pub fn is_closing(&self) -> bool {
        self.close_code.load(Ordering::SeqCst) != 0 || self.overflowed.load(Ordering::Relaxed)
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
        assert_eq!(mailbox.put(MailKey::TaskAssigned(-1), Frame::from_static("x")), Put::Overflowed);
        assert_eq!(mailbox.take(), Err(Closing::TooSlow));
    }

    #[tokio::test]
    async fn a_close_order_wakes_the_connection_and_wins_over_waiting_messages() {
        let mailbox = Mailbox::default();
        mailbox.put(MailKey::TaskAssigned(1), Frame::from_static("x"));
        mailbox.take().expect("taken");
        mailbox.close(4403);
        mailbox.close(4401);
        tokio::time::timeout(Duration::from_millis(50), mailbox.ready()).await.expect("woken");
        mailbox.put(MailKey::TaskAssigned(2), Frame::from_static("y"));
        assert_eq!(mailbox.take(), Err(Closing::Code(4403)), "the first order wins");
    }
}
