//! The pure rules of section 9: the SLA and history settings, when `stats:sla` next
//! changes by itself, where a history minute ends, and how department rows become the
//! topic's value. No I/O, no clock of its own (times are passed in), so they are tested
//! directly.
//!
//! Reason to change: one of those rules. Never depends on the database.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use domain_events::model::{DepartmentCounts, DepartmentStats};

use crate::error::ValidationError;

/// When an open task becomes overdue: `TASK_SLA_SECONDS` after its creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSla(Duration);

impl TaskSla {
    /// The contract's default, 30 minutes.
    pub const DEFAULT_SECONDS: u64 = 1800;
    /// The longest accepted: 30 days.
    pub const MAX_SECONDS: u64 = 30 * 24 * 3600;

    /// `seconds` (1 to [`Self::MAX_SECONDS`]).
    pub fn from_secs(seconds: u64) -> Result<Self, ValidationError> {
        if (1..=Self::MAX_SECONDS).contains(&seconds) {
            Ok(Self(Duration::from_secs(seconds)))
        } else {
            Err(ValidationError::new(
                "TASK_SLA_SECONDS",
                format!("must be a whole number of seconds from 1 to {}, not {seconds}", Self::MAX_SECONDS),
            ))
        }
    }

    /// The period.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl Default for TaskSla {
    fn default() -> Self {
        Self(Duration::from_secs(Self::DEFAULT_SECONDS))
    }
}

/// How long one history "minute" lasts: 60 s in the product; tests shorten it
/// (`PULSE_HISTORY_BUCKET_SECONDS`) so a minute's point need not take a minute. It divides
/// 60, so buckets still end on whole minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBucket(u32);

impl HistoryBucket {
    /// `seconds`, a divisor of 60.
    pub fn from_secs(seconds: u32) -> Result<Self, ValidationError> {
        if seconds > 0 && 60 % seconds == 0 {
            Ok(Self(seconds))
        } else {
            Err(ValidationError::new(
                "PULSE_HISTORY_BUCKET_SECONDS",
                format!("must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60), not {seconds}"),
            ))
        }
    }

    /// The length.
    pub fn duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0))
    }

    /// The first bucket end strictly after `now` (ends are multiples of the length since
    /// the Unix epoch, so every instance agrees on them).
    pub fn next_end(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let length = i64::from(self.0) * 1_000_000;
        let micros = now.timestamp_micros();
        let end = (micros.div_euclid(length) + 1) * length;
        DateTime::from_timestamp_micros(end).unwrap_or(now)
    }
}

impl Default for HistoryBucket {
    fn default() -> Self {
        Self(60)
    }
}

/// A little past the deadline, so the recompute the deadline schedules finds the task
/// overdue even with the databases' clock precision (SQLite: milliseconds).
const DEADLINE_MARGIN: Duration = Duration::from_millis(2);

/// When `stats:sla` changes by itself: when the oldest open task still younger than the
/// deadline at `now` (`oldest_young`) crosses it.
pub fn sla_changes_in(
    now: NaiveDateTime,
    sla: TaskSla,
    oldest_young: Option<NaiveDateTime>,
) -> Option<Duration> {
    let oldest_young = oldest_young?;
    let deadline = oldest_young + TimeDelta::from_std(sla.duration()).ok()?;
    let left = (deadline - now).to_std().unwrap_or(Duration::ZERO);
    Some(left + DEADLINE_MARGIN)
}

/// How many open tasks on each side of the deadline the first SLA read counts at most.
pub const FIRST_COUNT_CAP: i64 = 256;

/// The overdue count from one SLA read that counted, up to `cap` each, the open tasks younger
/// than the deadline (`young`) and the others (`overdue`), beside the open count the counters
/// keep: exact when either side is under the cap (the open count minus the young, or the
/// overdue counted), `None` when both reached it (read again with a larger cap).
pub fn overdue(open: i64, young: i64, overdue: i64, cap: i64) -> Option<u64> {
    if overdue < cap {
        Some(u64::try_from(overdue).unwrap_or(0))
    } else if young < cap {
        Some(u64::try_from(open.saturating_sub(young)).unwrap_or(0))
    } else {
        None
    }
}

/// `stats:departments` from `(department, status, count)` rows: sorted by name in code-point
/// order, the first [`DepartmentStats::MAX_DEPARTMENTS`] with any task, `truncated` if
/// there are more.
pub fn departments(rows: impl IntoIterator<Item = (String, String, i64)>) -> DepartmentStats {
    // String's order is byte order, which for UTF-8 is code-point order.
    let mut by_name: BTreeMap<String, DepartmentCounts> = BTreeMap::new();
    for (department, status, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        let counts = by_name
            .entry(department.clone())
            .or_insert_with(|| DepartmentCounts { department, ..DepartmentCounts::default() });
        match status.as_str() {
            "pending" => counts.pending += n,
            "in_progress" => counts.in_progress += n,
            "completed" => counts.completed += n,
            _ => continue,
        }
        counts.total += n;
    }
    let mut departments: Vec<DepartmentCounts> = by_name.into_values().filter(|d| d.total > 0).collect();
    let truncated = departments.len() > DepartmentStats::MAX_DEPARTMENTS;
    departments.truncate(DepartmentStats::MAX_DEPARTMENTS);
    DepartmentStats { departments, truncated }
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;
    use proptest::prelude::*;

    use super::*;

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).expect("in range")
    }

    #[test]
    fn settings_are_validated() {
        assert!(TaskSla::from_secs(0).is_err());
        assert!(TaskSla::from_secs(TaskSla::MAX_SECONDS + 1).is_err());
        assert_eq!(TaskSla::default().duration(), Duration::from_secs(1800));
        assert!(HistoryBucket::from_secs(7).is_err());
        assert!(HistoryBucket::from_secs(0).is_err());
        assert_eq!(HistoryBucket::from_secs(2).map(|b| b.duration()), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn the_next_change_is_the_oldest_young_tasks_deadline() {
        let now = at(1_000_000_000_000).naive_utc();
        let sla = TaskSla::from_secs(60).expect("valid");
        assert_eq!(sla_changes_in(now, sla, None), None, "nothing open and young: no change by time");
        let young = now - TimeDelta::seconds(45);
        assert_eq!(sla_changes_in(now, sla, Some(young)), Some(Duration::from_secs(15) + DEADLINE_MARGIN));
    }

    #[test]
    fn departments_are_sorted_by_code_point_and_truncated() {
        let rows = vec![
            ("b".to_owned(), "pending".to_owned(), 2),
            ("B".to_owned(), "completed".to_owned(), 1),
            ("é".to_owned(), "in_progress".to_owned(), 1),
            ("b".to_owned(), "completed".to_owned(), 1),
            ("z".to_owned(), "pending".to_owned(), 0),
        ];
        let stats = departments(rows);
        let names: Vec<&str> = stats.departments.iter().map(|d| d.department.as_str()).collect();
        assert_eq!(names, ["B", "b", "é"], "code-point order, empty departments left out");
        assert_eq!((stats.departments[1].pending, stats.departments[1].total), (2, 3));
        assert!(!stats.truncated);
        let many = (0..201).map(|i| (format!("d{i:03}"), "pending".to_owned(), 1));
        let stats = departments(many);
        assert_eq!(stats.departments.len(), 200);
        assert_eq!(stats.departments.last().map(|d| d.department.as_str()), Some("d199"));
        assert!(stats.truncated);
    }

    proptest! {
        /// Whatever the split, the capped counts give the exact overdue count or ask again,
        /// and a cap above the smaller side always answers.
        #[test]
        fn capped_counts_give_the_overdue_count(young in 0i64..100_000, late in 0i64..100_000, cap in 1i64..200_000) {
            let open = young + late;
            match overdue(open, young.min(cap), late.min(cap), cap) {
                Some(n) => prop_assert_eq!(n, late as u64),
                None => prop_assert!(young >= cap && late >= cap),
            }
            let enough = young.min(late) + 1;
            prop_assert_eq!(overdue(open, young.min(enough), late.min(enough), enough), Some(late as u64));
        }

        /// A bucket's end is after `now`, at most one bucket later, on a whole multiple of
        /// the bucket (so on a whole minute for 60 s).
        #[test]
        fn bucket_ends_follow_now(micros in 0i64..4_000_000_000_000_000, seconds in prop::sample::select(vec![1u32, 2, 5, 15, 30, 60])) {
            let bucket = HistoryBucket::from_secs(seconds).expect("divides 60");
            let now = at(micros);
            let end = bucket.next_end(now);
            prop_assert!(end > now);
            prop_assert!(end - now <= TimeDelta::seconds(i64::from(seconds)));
            prop_assert_eq!(end.timestamp_subsec_micros(), 0);
            prop_assert_eq!(end.timestamp() % i64::from(seconds), 0);
            if seconds == 60 {
                prop_assert_eq!(end.second(), 0);
            }
        }

        /// Waking at the next change and reading again finds the task overdue: its deadline
        /// is at or before the wake-up, and no earlier young task was skipped.
        #[test]
        fn waking_at_the_change_finds_the_task_overdue(
            now_micros in 0i64..4_000_000_000_000_000,
            sla_seconds in 1u64..100_000,
            age_fraction in 0.0f64..1.0,
        ) {
            let sla = TaskSla::from_secs(sla_seconds).expect("valid");
            let now = at(now_micros).naive_utc();
            let age = TimeDelta::microseconds((sla_seconds as f64 * 1e6 * age_fraction) as i64);
            let created = now - age;
            let wait = sla_changes_in(now, sla, Some(created)).expect("a young task changes the value");
            let woken = now + TimeDelta::from_std(wait).expect("small");
            let deadline = created + TimeDelta::seconds(sla_seconds as i64);
            prop_assert!(deadline <= woken, "woke before the deadline");
            prop_assert!(woken - deadline <= TimeDelta::from_std(DEADLINE_MARGIN).expect("small"), "woke late");
        }
    }
}
