//! Where a listener stands in the outbox: which rows it has published and which sequence
//! numbers it still waits for. Pure: no I/O, no clock — the listener feeds it what one
//! database snapshot showed, and it answers what to publish and whether to resync.
//!
//! # Why sequence numbers leave gaps, and when a gap is final
//!
//! Every event row takes the next number of `pulse_event_seq` inside its writer's
//! transaction, so rows *commit* out of number order: a reader that sees row 7 may not see
//! row 6 yet. Row 6 is then either in flight (its transaction still runs and may commit)
//! or never coming (rolled back). A clock cannot tell the two apart — a transaction may
//! hold its number for minutes and still commit — but the database's own bookkeeping can:
//!
//! - the writer takes a transaction id *before* its number (`pulse_next_event_seq()` in
//!   migrations/postgres), so whoever holds a number below a visible row had its id before
//!   the reader's snapshot was taken;
//! - right after a read that revealed gaps the listener takes a transaction id of its own,
//!   the *fence* (`SELECT pg_current_xact_id()`, committed at once): it is above every id
//!   assigned before, so above every holder's. (The snapshot's own `xmax` is no such bound:
//!   PostgreSQL sets it one past the latest *completed* transaction, and a running one with
//!   a higher id is simply not listed.)
//! - once a later snapshot's `xmin` (the oldest transaction still running) has reached the
//!   fence, every transaction that could own the number has ended: a row that is still not
//!   visible then was rolled back, or pruned — and pruning (`services::EventLog::prune`)
//!   only removes rows numbered below a floor it records and only ever raises.
//!
//! So a gap is kept as a range of numbers, re-read until it fills, and given up only when
//! no transaction that could fill it runs. A gap given up below the pruning floor may hide
//! a pruned row: that asks for a resync. (The oldest row left is no such floor: a
//! transaction that held a low number commits after a pruning and lowers it again.)
//!
//! # What the cursor promises
//!
//! Fed reads of consistent snapshots (in any interleaving with commits, rollbacks, prunes,
//! reconnects and reads cut short by errors), it publishes every row that commits after
//! it started exactly once, or asks for a resync after that row committed; it never
//! publishes a row twice, nor one that committed before it started; and it keeps at most
//! `max_gaps` ranges however the commits interleave (beyond that, ranges merge into a
//! *lossy* range whose rows are covered by a resync instead of published one by one).
//! The property tests below drive it against a model database to check exactly that.
//!
//! Architecture invariant: no I/O, no clock, no dependency beyond std.

use std::collections::BTreeMap;

/// A position in the outbox (`events.seq`).
pub type Seq = i64;
/// A PostgreSQL transaction id (`xid8`: 64 bits, never wraps).
pub type Xid = u64;

/// What one snapshot knows about transactions (`pg_current_snapshot()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every transaction below this had ended when the snapshot was taken.
    pub xmin: Xid,
    /// The first transaction id not yet assigned when the snapshot was taken.
    pub xmax: Xid,
    /// The transactions in `xmin..xmax` still running then.
    pub running: Vec<Xid>,
}

impl Snapshot {
    /// Parses PostgreSQL's text form `xmin:xmax:xip,xip,…`.
    ///
    /// ```
    /// use pg_fanout::cursor::Snapshot;
    /// let s = Snapshot::parse("10:14:10,12").expect("valid");
    /// assert_eq!((s.xmin, s.xmax, s.running), (10, 14, vec![10, 12]));
    /// assert!(Snapshot::parse("10:9:").is_none(), "xmax below xmin");
    /// ```
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.trim().split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list.split(',').map(str::parse).collect::<Result<Vec<Xid>, _>>().ok()?,
        };
        let valid =
            parts.next().is_none() && xmin <= xmax && running.iter().all(|x| (xmin..xmax).contains(x));
        valid.then_some(Snapshot { xmin, xmax, running })
    }

    /// Whether transaction `xid` (already assigned when the snapshot was taken) had ended.
    pub fn has_ended(&self, xid: Xid) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.running.contains(&xid))
    }
}

/// Why the cursor cannot vouch for every row and asks subscribers to resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// A gap was given up below the pruning floor: its row may have been pruned unread.
    MaybePruned,
    /// More gaps than the cursor keeps were open: some were merged and their rows are
    /// covered by this resync instead of being published one by one.
    TooManyGaps,
}

impl Resync {
    /// A short explanation for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Resync::MaybePruned => {
                "a sequence gap was given up below the outbox's pruning floor (maybe pruned unread)"
            }
            Resync::TooManyGaps => "too many sequence gaps were open at once",
        }
    }
}

/// A missing range of numbers, `start..=end` (the map key is `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    end: Seq,
    /// The fence taken after the read that revealed the range (`None` until the listener
    /// takes it): once a snapshot's `xmin` reaches it, no transaction that could fill the
    /// range still runs.
    fence: Option<Xid>,
    /// Merged over published rows to stay within the bound: rows found in it are not
    /// published; a resync covers the range once it is final.
    lossy: bool,
}

/// Transactions that were running when the cursor started, and may still commit numbers
/// up to `upto` that it has not seen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StartTransactions {
    upto: Seq,
    running: Vec<Xid>,
    /// The listener lost its connection while these were pending: a row of theirs may have
    /// committed and been pruned unread meanwhile (pruning spares a row for a whole pruning
    /// period after its transaction ends, far longer than a connected listener's poll).
    unsure: bool,
}

/// What one read of the outbox found, all in one snapshot (one statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The snapshot every list below was read in.
    pub snapshot: Snapshot,
    /// Rows numbered below this may have been pruned (0 when none was).
    pub pruned_below: Seq,
    /// The visible rows inside [`Cursor::gaps_to_read`].
    pub in_gaps: Vec<Seq>,
    /// The visible rows numbered up to [`Cursor::start_upto`] written by one of
    /// [`Cursor::start_transactions`], with their writer.
    pub start_rows: Vec<(Seq, Xid)>,
    /// Visible rows after [`Cursor::high`], ascending; may stop early (a batch limit): the
    /// next read continues after the last one.
    pub after: Vec<Seq>,
}

/// The cursor's answer to a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Rows to publish now, ascending.
    pub publish: Vec<Seq>,
    /// Set when some rows cannot be vouched for.
    pub resync: Option<Resync>,
    /// Numbers given up as never coming (rolled back, or pruned).
    pub abandoned: u64,
}

/// The position of one listener; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    high: Seq,
    gaps: BTreeMap<Seq, Gap>,
    start: Option<StartTransactions>,
    max_gaps: usize,
}

impl Cursor {
    /// A cursor that publishes what commits from now on. `upto` is the last number the
    /// sequence had handed out, read *before* `snapshot` was taken, and `fence` a
    /// transaction id taken *after* it; rows visible in `snapshot` are not published (the
    /// caller reads its initial state after), numbers up to `upto` held by transactions
    /// that may still run — listed in `snapshot`, or with ids from its `xmax` up to the
    /// fence — are watched until those end.
    pub fn start(upto: Seq, snapshot: &Snapshot, fence: Xid, max_gaps: usize) -> Self {
        let running: Vec<Xid> = snapshot.running.iter().copied().chain(snapshot.xmax..fence).collect();
        let start = (!running.is_empty()).then_some(StartTransactions { upto, running, unsure: false });
        Self { high: upto, gaps: BTreeMap::new(), start, max_gaps: max_gaps.max(1) }
    }

    /// Notes that the listener lost its connection: rows of start transactions may have been
    /// pruned unread meanwhile, so resolving them asks for a resync.
    pub fn connection_lost(&mut self) {
        if let Some(start) = self.start.as_mut() {
            start.unsure = true;
        }
    }

    /// Every number up to this was seen or is an open gap.
    pub fn high(&self) -> Seq {
        self.high
    }

    /// The open gaps worth re-reading (inclusive ranges, ascending; lossy ones are not).
    pub fn gaps_to_read(&self) -> Vec<(Seq, Seq)> {
        self.gaps.iter().filter(|(_, g)| !g.lossy).map(|(start, g)| (*start, g.end)).collect()
    }

    /// Whether a read revealed gaps that still need a fence ([`Cursor::fence`]).
    pub fn needs_fence(&self) -> bool {
        self.gaps.values().any(|gap| gap.fence.is_none())
    }

    /// Records a transaction id taken after the latest read: above every id that could
    /// hold a number of the gaps that read revealed.
    pub fn fence(&mut self, xid: Xid) {
        for gap in self.gaps.values_mut() {
            gap.fence.get_or_insert(xid);
        }
    }

    /// How many gap ranges are open (bounded by `max_gaps`).
    pub fn open_gaps(&self) -> usize {
        self.gaps.len()
    }

    /// Whether anything is still awaited below [`Cursor::high`].
    pub fn is_settled(&self) -> bool {
        self.gaps.is_empty() && self.start.is_none()
    }

    /// The transactions that were running at the start and may still commit rows the
    /// cursor has not seen (numbered up to [`Cursor::start_upto`]).
    pub fn start_transactions(&self) -> Vec<Xid> {
        self.start.as_ref().map(|s| s.running.clone()).unwrap_or_default()
    }

    /// The last number a start transaction may hold.
    pub fn start_upto(&self) -> Seq {
        self.start.as_ref().map_or(self.high, |s| s.upto)
    }

    /// Takes in what one read found; answers what to publish.
    pub fn apply(&mut self, read: Read) -> Outcome {
        let mut out = Outcome::default();
        self.apply_start(&read.snapshot, &read.start_rows, &mut out);
        self.fill_gaps(&read.in_gaps, &mut out);
        for &seq in &read.after {
            if seq <= self.high {
                continue; // not after the cursor: a caller's mistake, never published twice
            }
            if seq > self.high + 1 {
                let gap = Gap { end: seq - 1, fence: None, lossy: false };
                self.gaps.insert(self.high + 1, gap);
            }
            self.high = seq;
            out.publish.push(seq);
        }
        self.give_up_final_gaps(&read.snapshot, read.pruned_below, &mut out);
        self.keep_within_bound();
        out.publish.sort_unstable();
        out.publish.dedup();
        out
    }

    /// Publishes the rows of start transactions that ended; forgets those transactions.
    fn apply_start(&mut self, snapshot: &Snapshot, rows: &[(Seq, Xid)], out: &mut Outcome) {
        let Some(start) = self.start.as_mut() else { return };
        let ended: Vec<Xid> = start.running.iter().copied().filter(|x| snapshot.has_ended(*x)).collect();
        if ended.is_empty() {
            return;
        }
        for &(seq, xid) in rows {
            if seq <= start.upto && ended.contains(&xid) {
                out.publish.push(seq);
            }
        }
        start.running.retain(|x| !ended.contains(x));
        if start.unsure {
            out.resync.get_or_insert(Resync::MaybePruned);
        }
        if start.running.is_empty() {
            self.start = None;
        }
    }

    /// Publishes the rows found inside open gaps and splits the gaps around them.
    fn fill_gaps(&mut self, rows: &[Seq], out: &mut Outcome) {
        for &seq in rows {
            let Some((&start, &gap)) = self.gaps.range(..=seq).next_back() else { continue };
            if seq > gap.end || gap.lossy {
                continue; // not awaited (already published), or covered by a resync
            }
            self.gaps.remove(&start);
            if start < seq {
                self.gaps.insert(start, Gap { end: seq - 1, ..gap });
            }
            if seq < gap.end {
                self.gaps.insert(seq + 1, gap);
            }
            out.publish.push(seq);
        }
    }

    /// Gives up the gaps that no running transaction can fill.
    fn give_up_final_gaps(&mut self, snapshot: &Snapshot, pruned_below: Seq, out: &mut Outcome) {
        let final_gaps: Vec<Seq> = self
            .gaps
            .iter()
            .filter(|(_, gap)| gap.fence.is_some_and(|fence| snapshot.xmin >= fence))
            .map(|(start, _)| *start)
            .collect();
        for start in final_gaps {
            let Some(gap) = self.gaps.remove(&start) else { continue };
            out.abandoned += u64::try_from(gap.end - start + 1).unwrap_or(u64::MAX);
            if gap.lossy {
                out.resync = Some(Resync::TooManyGaps);
            } else if start < pruned_below {
                out.resync.get_or_insert(Resync::MaybePruned);
            }
        }
    }

    /// Merges the oldest ranges into a lossy one while more than `max_gaps` are open; the
    /// resync that covers the merged rows is asked for once the range is final, when every
    /// row it may hold has committed.
    fn keep_within_bound(&mut self) {
        while self.gaps.len() > self.max_gaps {
            let mut oldest = self.gaps.iter().take(2).map(|(start, gap)| (*start, *gap));
            let (Some((first_start, first)), Some((second_start, second))) = (oldest.next(), oldest.next())
            else {
                return;
            };
            self.gaps.remove(&second_start);
            let fence = first.fence.zip(second.fence).map(|(a, b)| a.max(b));
            let merged = Gap { end: second.end, fence, lossy: true };
            self.gaps.insert(first_start, merged);
        }
    }
}

#[cfg(test)]
mod tests;
