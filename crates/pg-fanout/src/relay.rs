//! Client messages relayed between instances (an SSE client's POST that reached an
//! instance not holding its stream) and their answers, as `NOTIFY pulse_relay`.
//!
//! A notification's payload is limited to 8000 bytes and a client message may be 64 KiB,
//! so a notice is cut into parts sent in one statement (one transaction: delivered
//! together, in order) and put together again by the listener. Every instance hears every
//! notice; the transport decides which are its own (the connection id names its holder).
//!
//! Architecture invariant: wire format only — no connection, no database call.

use std::collections::HashMap;

use domain_events::{ClusterSignal, RelayOutcome, RelayedMessage};
use serde::{Deserialize, Serialize};

/// Most bytes of a notice in one notification (PostgreSQL allows 8000 with the header).
pub(crate) const PART_BYTES: usize = 7_000;
/// Notices being put together at once; beyond it the oldest are dropped (their sender
/// times out and answers as if the connection were unknown).
const MAX_PARTIAL: usize = 256;

/// What travels on the relay channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum RelayNotice {
    Message(RelayedMessage),
    Answer { request_id: String, outcome: RelayOutcome },
}

impl RelayNotice {
    pub(crate) fn into_signal(self) -> ClusterSignal {
        match self {
            RelayNotice::Message(message) => ClusterSignal::Relayed(message),
            RelayNotice::Answer { request_id, outcome } => {
                ClusterSignal::RelayAnswered { request_id, outcome }
            }
        }
    }
}

/// `notice` as notification payloads: `<id> <index> <count> <part>`, each at most
/// [`PART_BYTES`] of the notice (cut between characters).
pub(crate) fn split(id: &str, notice: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = notice;
    while !rest.is_empty() || parts.is_empty() {
        let mut cut = rest.len().min(PART_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (part, tail) = rest.split_at(cut);
        parts.push(part);
        rest = tail;
    }
    let count = parts.len();
    parts.iter().enumerate().map(|(index, part)| format!("{id} {index} {count} {part}")).collect()
}

/// Notices whose parts are arriving.
#[derive(Default)]
pub(crate) struct Reassembly {
    partial: HashMap<String, Vec<Option<String>>>,
    order: std::collections::VecDeque<String>,
}

impl Reassembly {
    /// Takes one payload; returns the notice once all its parts are in.
    pub(crate) fn take(&mut self, payload: &str) -> Option<RelayNotice> {
        let mut fields = payload.splitn(4, ' ');
        let (id, index, count, part) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        let (index, count) = (index.parse::<usize>().ok()?, count.parse::<usize>().ok()?);
        if index >= count || count > 64 {
            return None;
        }
        let text = if count == 1 {
            part.to_owned()
        } else {
            if !self.partial.contains_key(id) {
                if self.order.len() >= MAX_PARTIAL
                    && let Some(oldest) = self.order.pop_front()
                {
                    self.partial.remove(&oldest);
                }
                self.order.push_back(id.to_owned());
                self.partial.insert(id.to_owned(), vec![None; count]);
            }
            let parts = self.partial.get_mut(id)?;
            *parts.get_mut(index)? = Some(part.to_owned());
            if parts.iter().any(Option::is_none) {
                return None;
            }
            let parts = self.partial.remove(id)?;
            self.order.retain(|o| o != id);
            parts.into_iter().flatten().collect()
        };
        match serde_json::from_str(&text) {
            Ok(notice) => Some(notice),
            Err(error) => {
                tracing::debug!(%error, "unreadable relay notice");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(text: &str) -> String {
        serde_json::to_string(&RelayNotice::Message(RelayedMessage {
            request_id: "r1".into(),
            connection_id: "c1".into(),
            user_id: 7,
            text: text.into(),
        }))
        .expect("json")
    }

    #[test]
    fn a_large_notice_is_cut_within_the_limit_and_put_together_in_any_order() {
        let text = format!(r#"{{"type":"ping","pad":"{}"}}"#, "é\"x".repeat(20_000));
        let parts = split("n-1", &notice(&text));
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.len() <= PART_BYTES + 20));
        let mut assembly = Reassembly::default();
        let mut got = None;
        for part in parts.iter().rev() {
            assert!(got.is_none(), "complete before the last part");
            got = assembly.take(part);
        }
        match got {
            Some(RelayNotice::Message(m)) => assert_eq!(m.text, text),
            other => panic!("expected the message, got {other:?}"),
        }
        assert!(assembly.partial.is_empty() && assembly.order.is_empty());
    }

    #[test]
    fn small_notices_pass_in_one_part_and_garbage_is_ignored() {
        let parts = split("n-2", &notice("{}"));
        assert_eq!(parts.len(), 1);
        assert!(matches!(Reassembly::default().take(&parts[0]), Some(RelayNotice::Message(_))));
        let mut assembly = Reassembly::default();
        for junk in ["", "x", "a 0 1", "a 5 2 x", "a 0 1 {not json", "a 0 999 x"] {
            assert!(assembly.take(junk).is_none());
        }
    }

    #[test]
    fn unfinished_notices_are_bounded() {
        let mut assembly = Reassembly::default();
        for n in 0..1_000 {
            assert!(assembly.take(&format!("id{n} 0 2 half")).is_none());
        }
        assert!(assembly.partial.len() <= MAX_PARTIAL && assembly.order.len() <= MAX_PARTIAL);
    }
}
