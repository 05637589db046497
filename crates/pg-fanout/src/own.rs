//! Rows this instance wrote itself. The writer announces them on the local bus right after
//! its commit, so the listener skips them — except a commit whose acknowledgement was lost
//! (the connection died during `COMMIT`): the writer cannot tell whether it committed, the
//! listener can. Whichever of the two learns second announces the row, exactly once:
//! the listener, when it reads a row the writer said was in doubt; the writer, when it
//! says so about a row the listener already read (it is then read again, by number).
//!
//! Architecture invariant: pure bookkeeping, no I/O.

use std::collections::{HashSet, VecDeque};

/// How many numbers each side remembers. A doubt is raised when a commit fails or when a
/// service call hits its deadline (`services::DB_CALL_DEADLINE`, 15 s), so the listener
/// may have read this instance's rows for that long in between: this covers over 4,000 own
/// rows a second (about 2 MiB at most).
pub(crate) const REMEMBERED: usize = 65_536;

/// A bounded set that forgets its oldest members first.
#[derive(Debug, Default)]
struct Recent {
    members: HashSet<i64>,
    order: VecDeque<i64>,
}

impl Recent {
    fn insert(&mut self, seq: i64) {
        if self.members.insert(seq) {
            self.order.push_back(seq);
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.members.remove(&old);
            }
        }
    }

    fn remove(&mut self, seq: i64) -> bool {
        // The order queue keeps the number until it ages out; `members` decides.
        self.members.remove(&seq)
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct OwnCommits {
    /// Numbers the writer reported in doubt that the listener has not read yet.
    in_doubt: Recent,
    /// Numbers of own rows the listener read and skipped.
    skipped: Recent,
}

impl OwnCommits {
    /// The listener read own row `seq`: `true` if it must announce it.
    pub(crate) fn listener_read(&mut self, seq: i64) -> bool {
        if self.in_doubt.remove(seq) {
            return true;
        }
        self.skipped.insert(seq);
        false
    }

    /// The writer reports `seqs` in doubt; returns those the listener already read and
    /// skipped, which must now be read again and announced.
    pub(crate) fn commit_unknown(&mut self, seqs: &[i64]) -> Vec<i64> {
        let mut read_again = Vec::new();
        for &seq in seqs {
            if self.skipped.remove(seq) {
                read_again.push(seq);
            } else {
                self.in_doubt.insert(seq);
            }
        }
        read_again
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_doubt_raised_before_the_read_is_announced_by_the_listener() {
        let mut own = OwnCommits::default();
        assert_eq!(own.commit_unknown(&[5, 6]), Vec::<i64>::new());
        assert!(own.listener_read(5));
        assert!(own.listener_read(6));
        assert!(!own.listener_read(7), "an acknowledged commit: its writer announced it");
    }

    #[test]
    fn a_doubt_raised_after_the_read_is_read_again_once() {
        let mut own = OwnCommits::default();
        assert!(!own.listener_read(5));
        assert_eq!(own.commit_unknown(&[5]), vec![5]);
        assert!(!own.listener_read(5), "announced once, by the writer's side");
    }

    #[test]
    fn the_newest_numbers_are_remembered_up_to_the_bound() {
        let mut own = OwnCommits::default();
        for seq in 0..=REMEMBERED as i64 {
            own.listener_read(seq);
        }
        assert_eq!(own.commit_unknown(&[0]), Vec::<i64>::new(), "the oldest was forgotten");
        assert_eq!(own.commit_unknown(&[1]), vec![1], "the bound keeps exactly REMEMBERED numbers");
    }

    #[test]
    fn memory_stays_bounded() {
        let mut own = OwnCommits::default();
        for seq in 0..(REMEMBERED as i64 * 3) {
            own.listener_read(seq);
            own.commit_unknown(&[-seq - 1]);
        }
        assert!(own.skipped.members.len() <= REMEMBERED && own.skipped.order.len() <= REMEMBERED);
        assert!(own.in_doubt.members.len() <= REMEMBERED && own.in_doubt.order.len() <= REMEMBERED);
    }

    proptest! {
        /// Whatever the interleaving of reads and doubts, a row in doubt is announced
        /// exactly once, and an acknowledged one never by the listener.
        #[test]
        fn each_row_in_doubt_is_announced_once(
            steps in prop::collection::vec((0i64..20, any::<bool>()), 0..200),
            doubted in prop::collection::hash_set(0i64..20, 0..20),
        ) {
            let mut own = OwnCommits::default();
            let mut announced = std::collections::HashMap::<i64, u32>::new();
            let mut read = HashSet::new();
            let mut reported = HashSet::new();
            for (seq, is_read) in steps {
                if is_read {
                    if read.insert(seq) && own.listener_read(seq) {
                        *announced.entry(seq).or_default() += 1;
                    }
                } else if doubted.contains(&seq) && reported.insert(seq) {
                    for again in own.commit_unknown(&[seq]) {
                        *announced.entry(again).or_default() += 1;
                    }
                }
            }
            for (seq, n) in &announced {
                prop_assert_eq!(*n, 1);
                prop_assert!(doubted.contains(seq), "an acknowledged row was announced by the listener");
            }
            for seq in read.intersection(&reported) {
                prop_assert_eq!(announced.get(seq).copied(), Some(1), "row {} read and doubted, not announced", seq);
            }
        }
    }
}
