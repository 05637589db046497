//! The cursor against a model of PostgreSQL's outbox: transactions that take an id, then
//! sequence numbers, and commit or roll back in any order; snapshots; pruning by prefix
//! (a row only once its transaction ended before the previous pruning); a listener that
//! starts at any moment, reads in batches, fails in the middle of a read and loses its
//! connection. The properties of the module documentation are checked on every history.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    Running,
    Committed { at: usize },
    Aborted,
}

#[derive(Debug, Clone)]
struct Tx {
    xid: Xid,
    seqs: Vec<Seq>,
    state: TxState,
    /// The step at which it ended (committed or rolled back).
    ended: Option<usize>,
}

/// The database: what is committed, what runs, what was pruned.
#[derive(Debug, Default)]
struct Db {
    next_xid: Xid,
    last_seq: Seq,
    txs: Vec<Tx>,
    /// Committed rows still present: number → index of its transaction.
    rows: BTreeMap<Seq, usize>,
    last_prune: Option<usize>,
    /// The floor pruning records: rows below it may be gone.
    pruned_below: Seq,
}

impl Db {
    fn new() -> Self {
        Self { next_xid: 100, ..Self::default() }
    }

    /// `SELECT pg_current_xact_id()` in a statement of its own: a transaction that takes
    /// the next id and commits at once.
    fn fence(&mut self, step: usize) -> Xid {
        let xid = self.next_xid;
        self.next_xid += 1;
        self.txs.push(Tx {
            xid,
            seqs: Vec::new(),
            state: TxState::Committed { at: step },
            ended: Some(step),
        });
        xid
    }

    fn running(&self) -> Vec<usize> {
        (0..self.txs.len()).filter(|i| self.txs[*i].state == TxState::Running).collect()
    }

    /// As PostgreSQL builds one: `xmax` is one past the latest *completed* transaction (not
    /// the next id to assign), and only running transactions below it are listed — a
    /// transaction with a higher id may be running unlisted.
    fn snapshot(&self) -> Snapshot {
        let xmax = self
            .txs
            .iter()
            .filter(|tx| tx.state != TxState::Running)
            .map(|tx| tx.xid + 1)
            .max()
            .unwrap_or(100);
        let running: Vec<Xid> =
            self.running().iter().map(|i| self.txs[*i].xid).filter(|xid| *xid < xmax).collect();
        Snapshot { xmin: running.iter().copied().min().unwrap_or(xmax), xmax, running }
    }

    /// `DELETE FROM events WHERE seq < K`, K the first row that may not go yet (its
    /// transaction ended after the previous pruning), or the newest row, which always stays.
    fn prune(&mut self, step: usize) {
        let prunable = |tx: &Tx| matches!((tx.ended, self.last_prune), (Some(end), Some(prev)) if end < prev);
        let keep_from = self
            .rows
            .iter()
            .find(|(_, tx)| !prunable(&self.txs[**tx]))
            .map(|(seq, _)| *seq)
            .or_else(|| self.rows.keys().next_back().copied());
        if let Some(keep_from) = keep_from {
            self.rows.retain(|seq, _| *seq >= keep_from);
            self.pruned_below = self.pruned_below.max(keep_from);
        }
        self.last_prune = Some(step);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Begin,
    Alloc(usize),
    Commit(usize),
    Abort(usize),
    /// Read in batches of `batch` rows; fail (connection lost) after `fail_after` batches.
    Read {
        batch: usize,
        fail_after: Option<usize>,
    },
    Prune,
    Disconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Begin),
        4 => any::<usize>().prop_map(Op::Alloc),
        3 => any::<usize>().prop_map(Op::Commit),
        1 => any::<usize>().prop_map(Op::Abort),
        3 => (1usize..5, prop::option::weighted(0.2, 0usize..3))
            .prop_map(|(batch, fail_after)| Op::Read { batch, fail_after }),
        1 => Just(Op::Prune),
        1 => Just(Op::Disconnect),
    ]
}

/// The listener side: the cursor plus what it published and when it asked to resync.
struct Listener {
    cursor: Cursor,
    published: HashMap<Seq, usize>,
    resyncs: Vec<usize>,
    read_since_prune: bool,
    max_gaps: usize,
}

impl Listener {
    fn start(db: &mut Db, max_gaps: usize, step: usize) -> Self {
        // The sequence's position is read before the snapshot is taken, the fence after.
        let upto = db.last_seq;
        let snapshot = db.snapshot();
        let fence = db.fence(step);
        let cursor = Cursor::start(upto, &snapshot, fence, max_gaps);
        Self { cursor, published: HashMap::new(), resyncs: Vec::new(), read_since_prune: true, max_gaps }
    }

    fn take(&mut self, outcome: Outcome, step: usize) {
        for seq in outcome.publish {
            *self.published.entry(seq).or_default() += 1;
        }
        if outcome.resync.is_some() {
            self.resyncs.push(step);
        }
        assert!(self.cursor.open_gaps() <= self.max_gaps, "more gaps open than the bound");
    }

    /// One catch-up, as the listener's I/O does it: reads of `batch` rows after the cursor,
    /// each one statement (one snapshot), until one is not full. `false` if it failed.
    fn read(&mut self, db: &mut Db, batch: usize, fail_after: Option<usize>, step: usize) -> bool {
        let mut batches = 0;
        loop {
            if fail_after == Some(batches) {
                self.cursor.connection_lost();
                return false;
            }
            let ranges = self.cursor.gaps_to_read();
            let starters = self.cursor.start_transactions();
            let upto = self.cursor.start_upto();
            let high = self.cursor.high();
            let after: Vec<Seq> = db.rows.range(high + 1..).map(|(seq, _)| *seq).take(batch).collect();
            let full = after.len() == batch;
            let read = Read {
                snapshot: db.snapshot(),
                pruned_below: db.pruned_below,
                in_gaps: db
                    .rows
                    .keys()
                    .copied()
                    .filter(|seq| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&seq)))
                    .collect(),
                start_rows: db
                    .rows
                    .iter()
                    .filter(|(seq, tx)| **seq <= upto && starters.contains(&db.txs[**tx].xid))
                    .map(|(seq, tx)| (*seq, db.txs[*tx].xid))
                    .collect(),
                after,
            };
            batches += 1;
            let outcome = self.cursor.apply(read);
            self.take(outcome, step);
            if self.cursor.needs_fence() {
                if fail_after == Some(batches) {
                    self.cursor.connection_lost();
                    return false; // the fence is taken after a later read
                }
                let fence = db.fence(step);
                self.cursor.fence(fence);
            }
            if !full {
                self.read_since_prune = true;
                return true;
            }
        }
    }
}

/// Runs a history; checks the cursor's promises on it.
fn check(ops: Vec<Op>, start_at: usize, max_gaps: usize, commit_leftovers: bool) {
    let mut db = Db::new();
    let mut listener: Option<Listener> = None;
    let mut start_step = usize::MAX;
    let start_at = start_at % (ops.len() + 1);
    let mut step = 0;
    let run = |db: &mut Db, listener: &mut Option<Listener>, op: Op, step: usize| {
        let running = db.running();
        let pick = |i: usize| (!running.is_empty()).then(|| running[i % running.len()]);
        match op {
            Op::Begin => {
                db.txs.push(Tx { xid: db.next_xid, seqs: Vec::new(), state: TxState::Running, ended: None });
                db.next_xid += 1;
            }
            Op::Alloc(i) => {
                if let Some(tx) = pick(i) {
                    db.last_seq += 1;
                    let seq = db.last_seq;
                    db.txs[tx].seqs.push(seq);
                }
            }
            Op::Commit(i) => {
                if let Some(tx) = pick(i) {
                    db.txs[tx].state = TxState::Committed { at: step };
                    db.txs[tx].ended = Some(step);
                    for seq in db.txs[tx].seqs.clone() {
                        db.rows.insert(seq, tx);
                    }
                }
            }
            Op::Abort(i) => {
                if let Some(tx) = pick(i) {
                    db.txs[tx].state = TxState::Aborted;
                    db.txs[tx].ended = Some(step);
                }
            }
            Op::Read { batch, fail_after } => {
                if let Some(l) = listener.as_mut() {
                    l.read(db, batch, fail_after, step);
                }
            }
            Op::Prune => {
                if let Some(l) = listener.as_mut() {
                    // A listener that read nothing for a whole pruning period was cut off.
                    if !l.read_since_prune {
                        l.cursor.connection_lost();
                    }
                    l.read_since_prune = false;
                }
                db.prune(step);
            }
            Op::Disconnect => {
                if let Some(l) = listener.as_mut() {
                    l.cursor.connection_lost();
                }
            }
        }
    };
    for (i, op) in ops.into_iter().enumerate() {
        if i == start_at {
            listener = Some(Listener::start(&mut db, max_gaps, step));
            start_step = step;
            step += 1;
        }
        run(&mut db, &mut listener, op, step);
        step += 1;
    }
    if listener.is_none() {
        listener = Some(Listener::start(&mut db, max_gaps, step));
        start_step = step;
        step += 1;
    }
    // Every transaction ends; the listener then reads until nothing is awaited.
    for _ in db.running() {
        let op = if commit_leftovers { Op::Commit(0) } else { Op::Abort(0) };
        run(&mut db, &mut listener, op, step);
        step += 1;
    }
    let mut listener = listener.expect("started");
    for _ in 0..3 {
        assert!(listener.read(&mut db, 1000, None, step), "a read without a fault succeeds");
        step += 1;
    }
    assert!(
        listener.cursor.is_settled(),
        "nothing is awaited once every transaction ended: {:?}",
        listener.cursor
    );

    let committed_at: HashMap<Seq, usize> = db
        .txs
        .iter()
        .filter_map(|tx| match tx.state {
            TxState::Committed { at } => Some(tx.seqs.iter().map(move |seq| (*seq, at))),
            _ => None,
        })
        .flatten()
        .collect();
    for (seq, times) in &listener.published {
        assert_eq!(*times, 1, "row {seq} published {times} times");
        let at = committed_at.get(seq).unwrap_or_else(|| panic!("row {seq} published but never committed"));
        assert!(*at > start_step, "row {seq} committed before the start and was published");
    }
    for (seq, at) in &committed_at {
        if *at > start_step && !listener.published.contains_key(seq) {
            let covered = listener.resyncs.iter().any(|resync| resync > at);
            assert!(
                covered,
                "row {seq} (committed at step {at}) was neither published nor covered by a resync"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_committed_row_is_published_once_or_covered_by_a_resync(
        ops in prop::collection::vec(op(), 0..80),
        start_at in any::<usize>(),
        max_gaps in prop_oneof![1usize..4, Just(1000)],
        commit_leftovers in any::<bool>(),
    ) {
        check(ops, start_at, max_gaps, commit_leftovers);
    }
}

fn snap(xmin: Xid, xmax: Xid, running: &[Xid]) -> Snapshot {
    Snapshot { xmin, xmax, running: running.to_vec() }
}

fn read(snapshot: Snapshot, pruned_below: Seq, in_gaps: Vec<Seq>, after: Vec<Seq>) -> Read {
    Read { snapshot, pruned_below, in_gaps, start_rows: Vec::new(), after }
}

#[test]
fn a_gap_waits_for_its_transaction_however_long_it_runs() {
    let mut cursor = Cursor::start(0, &snap(10, 10, &[]), 10, 100);
    // Transaction 10 holds number 1; 2 and 3 commit.
    let out = cursor.apply(read(snap(10, 12, &[10]), 0, vec![], vec![2, 3]));
    assert_eq!(out.publish, vec![2, 3]);
    assert_eq!(cursor.gaps_to_read(), vec![(1, 1)]);
    assert!(cursor.needs_fence());
    cursor.fence(12);
    assert!(!cursor.needs_fence());
    // Any number of reads while 10 still runs: the gap stays.
    for _ in 0..100 {
        let out = cursor.apply(read(snap(10, 20, &[10]), 0, vec![], vec![]));
        assert_eq!(out, Outcome::default());
    }
    // It commits: row 1 is published.
    let out = cursor.apply(read(snap(20, 20, &[]), 0, vec![1], vec![]));
    assert_eq!(out.publish, vec![1]);
    assert!(cursor.is_settled());
}

/// The holder of the missing number has a *higher* id than the latest completed one, so
/// the snapshot does not list it (PostgreSQL's `xmax` is one past the latest completed
/// transaction): only the fence keeps the gap open.
#[test]
fn a_holder_the_snapshot_does_not_list_keeps_its_gap_open_until_the_fence_passes() {
    let mut cursor = Cursor::start(0, &snap(729, 729, &[]), 729, 100);
    // 730 holds number 1 and runs; 729 wrote number 2 and committed: "730:730:".
    let out = cursor.apply(read(snap(730, 730, &[]), 0, vec![], vec![2]));
    assert_eq!((out.publish, out.abandoned), (vec![2], 0), "not given up without a fence");
    cursor.fence(731);
    let out = cursor.apply(read(snap(730, 732, &[730]), 0, vec![], vec![]));
    assert_eq!(out.abandoned, 0, "730 still runs");
    let out = cursor.apply(read(snap(732, 732, &[]), 0, vec![1], vec![]));
    assert_eq!(out.publish, vec![1], "730 committed: its row arrives");
    assert!(cursor.is_settled());
}

#[test]
fn a_gap_is_given_up_once_no_transaction_below_its_fence_runs() {
    let mut cursor = Cursor::start(0, &snap(10, 10, &[]), 10, 100);
    cursor.apply(read(snap(10, 12, &[10]), 0, vec![], vec![2]));
    cursor.fence(12);
    // Transaction 12 started after the fence: it cannot hold number 1, so 10's end decides.
    let out = cursor.apply(read(snap(12, 13, &[12]), 0, vec![], vec![]));
    assert_eq!(
        (out.publish.len(), out.abandoned, out.resync),
        (0, 1, None),
        "rolled back, nothing to resync"
    );
    assert!(cursor.is_settled());
}

#[test]
fn a_gap_given_up_at_or_above_the_pruning_floor_is_no_reason_to_resync() {
    let mut cursor = Cursor::start(0, &snap(10, 10, &[]), 10, 100);
    cursor.apply(read(snap(10, 12, &[10]), 0, vec![], vec![1, 3]));
    cursor.fence(12);
    // Pruning went up to 2: rows below 2 may be gone, number 2 itself was never pruned.
    let out = cursor.apply(read(snap(13, 13, &[]), 2, vec![], vec![]));
    assert_eq!((out.abandoned, out.resync), (1, None));
}

#[test]
fn resyncs_say_why() {
    assert!(Resync::MaybePruned.reason().contains("pruned"));
    assert!(Resync::TooManyGaps.reason().contains("gaps"));
}

#[test]
fn a_gap_given_up_below_the_pruning_floor_asks_for_a_resync() {
    let mut cursor = Cursor::start(0, &snap(10, 10, &[]), 10, 100);
    cursor.apply(read(snap(10, 12, &[10]), 0, vec![], vec![2]));
    cursor.fence(12);
    // Row 1 committed and was pruned before this read: pruning's floor is now 2.
    let out = cursor.apply(read(snap(13, 13, &[]), 2, vec![], vec![]));
    assert_eq!(out.resync, Some(Resync::MaybePruned));
}

#[test]
fn an_empty_pruned_outbox_costs_one_range_not_one_entry_per_number() {
    let mut cursor = Cursor::start(0, &snap(5, 5, &[]), 5, 100);
    let out = cursor.apply(read(snap(5, 6, &[5]), 1_000_000, vec![], vec![1_000_000]));
    assert_eq!(out.publish, vec![1_000_000]);
    assert_eq!(cursor.gaps_to_read(), vec![(1, 999_999)]);
    cursor.fence(6);
    let out = cursor.apply(read(snap(7, 7, &[]), 1_000_000, vec![], vec![]));
    assert_eq!(out.resync, Some(Resync::MaybePruned), "the missing numbers may have been pruned unread");
    assert!(cursor.is_settled());
}

#[test]
fn rows_found_in_a_split_gap_are_published_once() {
    let mut cursor = Cursor::start(0, &snap(1, 1, &[]), 1, 100);
    cursor.apply(read(snap(1, 5, &[1, 2, 3]), 0, vec![], vec![5]));
    assert_eq!(cursor.gaps_to_read(), vec![(1, 4)]);
    cursor.fence(6);
    let out = cursor.apply(read(snap(1, 7, &[1, 3]), 0, vec![2], vec![]));
    assert_eq!(out.publish, vec![2]);
    assert_eq!(cursor.gaps_to_read(), vec![(1, 1), (3, 4)]);
    assert!(!cursor.needs_fence(), "both halves keep the fence");
    // The same row again (a read repeated after an error) is not published twice.
    let out = cursor.apply(read(snap(1, 7, &[1, 3]), 0, vec![2], vec![]));
    assert!(out.publish.is_empty());
    // Rows at either end of a range shrink it, leaving no empty range behind.
    let out = cursor.apply(read(snap(1, 7, &[1]), 0, vec![3, 4], vec![]));
    assert_eq!(out.publish, vec![3, 4]);
    assert_eq!(cursor.gaps_to_read(), vec![(1, 1)]);
    assert!(!cursor.is_settled(), "number 1 is still awaited");
    let out = cursor.apply(read(snap(1, 7, &[1]), 0, vec![1], vec![]));
    assert_eq!(out.publish, vec![1]);
    assert!(cursor.is_settled());
    assert_eq!(cursor.open_gaps(), 0);
}

#[test]
fn the_bound_merges_old_gaps_into_a_lossy_range_covered_by_one_resync() {
    let mut cursor = Cursor::start(0, &snap(1, 1, &[]), 1, 2);
    let out = cursor.apply(read(snap(1, 9, &[1]), 0, vec![], vec![2, 4, 6, 8]));
    assert_eq!(out.publish, vec![2, 4, 6, 8]);
    assert_eq!(cursor.open_gaps(), 2);
    assert_eq!(cursor.gaps_to_read(), vec![(7, 7)], "the merged range is not read row by row");
    cursor.fence(9);
    let out = cursor.apply(read(snap(1, 10, &[1]), 0, vec![7], vec![]));
    assert_eq!(out.publish, vec![7]);
    let out = cursor.apply(read(snap(10, 10, &[]), 0, vec![], vec![]));
    assert_eq!(out.resync, Some(Resync::TooManyGaps));
    assert!(cursor.is_settled());
}

#[test]
fn transactions_that_may_run_at_start_are_watched_and_only_their_rows_published() {
    // Started while 7 runs (listed) and 9 may run (at or above xmax, below the fence 10);
    // rows up to 10 visible then are not published.
    let mut cursor = Cursor::start(10, &snap(7, 9, &[7]), 10, 100);
    assert_eq!(cursor.start_transactions(), vec![7, 9]);
    assert!(!cursor.is_settled(), "start transactions are awaited, no gap is open");
    assert_eq!(cursor.open_gaps(), 0);
    let out = cursor.apply(read(snap(7, 9, &[7]), 0, vec![], vec![]));
    assert_eq!(out, Outcome::default(), "still running");
    let out = cursor.apply(Read {
        snapshot: snap(11, 11, &[]),
        pruned_below: 0,
        in_gaps: vec![],
        start_rows: vec![(4, 7), (11, 7), (6, 9)],
        after: vec![],
    });
    assert_eq!(out.publish, vec![4, 6], "their rows up to the start's position (11 comes after)");
    assert!(cursor.is_settled());
}

#[test]
fn snapshots_parse_and_refuse_nonsense() {
    assert_eq!(Snapshot::parse("5:5:"), Some(snap(5, 5, &[])));
    assert_eq!(Snapshot::parse(" 5:9:5,7 "), Some(snap(5, 9, &[5, 7])));
    for bad in ["", "5", "5:9", "5:9:x", "5:9:9", "5:9:4", "9:5:", "5:9:5:", "-1:9:"] {
        assert_eq!(Snapshot::parse(bad), None, "{bad:?}");
    }
    let s = snap(5, 9, &[5, 7]);
    assert!(s.has_ended(4) && s.has_ended(6) && s.has_ended(8));
    assert!(!s.has_ended(5) && !s.has_ended(7) && !s.has_ended(9));
}
