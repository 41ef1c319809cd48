//! One meter's usage, sharded by subject so that readers never hold up the writer for long.
//!
//! A query locks one shard at a time per thread (a sixteenth of the subjects; a query over
//! every subject reads on one thread per core, up to `QUERY_THREADS_MAX`), and the apply thread
//! folds a group into one shard (of every meter) at a time, so a long query over every customer delays ingest
//! by at most one shard's share of it. Each customer's rows come from one shard under one
//! lock, so they are consistent with some commit; two customers may be read a commit apart.

use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use tollgate_core::limits::USAGE_ROWS_MAX;
use tollgate_core::meter::Meter;
use tollgate_core::time::UnixMs;
use tollgate_core::usage::{Observed, Rollup, RollupStats, UsageError, UsageQuery, UsageRow};
use xxhash_rust::xxh3::xxh3_64;

/// Number of shards per meter.
pub const ROLLUP_SHARDS: usize = 16;

/// The shard a subject's usage lives in.
pub fn shard_of(subject: &str) -> usize {
    // The remainder is below ROLLUP_SHARDS, so it fits any usize.
    usize::try_from(xxh3_64(subject.as_bytes()) % ROLLUP_SHARDS as u64).unwrap_or(0)
}

/// Dense numbers for subjects, one series per rollup shard, given while events are prepared
/// (where a subject's text is in cache) so that folding an event into a rollup finds its
/// subject by number instead of hashing and comparing its text again (see
/// [`Rollup::apply_observed_numbered`]). A subject keeps its number for the life of the engine.
#[derive(Debug)]
pub struct SubjectNumbers {
    shards: Vec<RwLock<FxHashMap<Box<str>, u32>>>,
}

impl Default for SubjectNumbers {
    fn default() -> Self {
        SubjectNumbers {
            shards: (0..ROLLUP_SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

impl SubjectNumbers {
    /// The number of `subject` (in `shard`, which must be [`shard_of`] it), given now if it
    /// had none.
    pub fn number(&self, shard: usize, subject: &str) -> u32 {
        let numbers = &self.shards[shard];
        if let Some(n) = numbers.read().get(subject) {
            return *n;
        }
        let mut numbers = numbers.write();
        if let Some(n) = numbers.get(subject) {
            return *n;
        }
        let next = u32::try_from(numbers.len())
            .ok()
            .filter(|n| *n < u32::MAX)
            .unwrap_or_else(|| panic!("more than 4G subjects in one rollup shard"));
        numbers.insert(subject.into(), next);
        next
    }
}

/// A meter's usage in [`ROLLUP_SHARDS`] independently locked rollups.
pub struct MeterUsage {
    meter: Meter,
    shards: Vec<RwLock<Rollup>>,
}

impl MeterUsage {
    /// Empty usage of a meter.
    pub fn new(meter: Meter) -> MeterUsage {
        let shards = (0..ROLLUP_SHARDS)
            .map(|_| RwLock::new(Rollup::new(meter.clone())))
            .collect();
        MeterUsage { meter, shards }
    }

    /// The meter.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Counters summed over the shards.
    pub fn stats(&self) -> RollupStats {
        self.shards.iter().fold(RollupStats::default(), |acc, s| {
            let s = s.read().stats();
            RollupStats {
                counted: acc.counted + s.counted,
                skipped: acc.skipped + s.skipped,
            }
        })
    }

    /// Applies what the meter read from one event, with exclusive access (replay, backfill:
    /// no lock taken).
    pub fn apply_observed_mut(
        &mut self,
        subject: &str,
        time: UnixMs,
        seq: u64,
        observed: &Observed,
    ) {
        self.shards[shard_of(subject)]
            .get_mut()
            .apply_observed(subject, time, seq, observed);
    }

    /// Write access to one shard (the apply thread folds a group into shard `s` of every
    /// meter under these guards, one shard at a time).
    pub fn shard_mut(&self, shard: usize) -> parking_lot::RwLockWriteGuard<'_, Rollup> {
        self.shards[shard].write()
    }

    /// Answers a usage query, one shard at a time, rows ordered by subject, group and window.
    pub fn query(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, UsageError> {
        self.query_runs(q).map(SubjectRuns::into_rows)
    }

    /// [`MeterUsage::query`] left in the shards' own row vectors, each subject's rows one run
    /// and the runs in subject order: a writer of the answer reads it in order without the
    /// rows being moved into one vector first.
    pub fn query_runs(&self, q: &UsageQuery) -> Result<SubjectRuns, UsageError> {
        let shards: Vec<&RwLock<Rollup>> = match &q.subject {
            Some(s) => vec![&self.shards[shard_of(s.as_str())]],
            None => self.shards.iter().collect(),
        };
        // A query over every subject reads the shards on as many threads as there are cores
        // (each shard still under its own read lock, one at a time per thread).
        let threads = if shards.len() > 1 {
            cores().min(QUERY_THREADS_MAX).min(shards.len())
        } else {
            1
        };
        let answers = in_parallel(&shards, threads, |chunk| query_shards(chunk, q));
        let mut parts: Vec<Part> = Vec::with_capacity(shards.len());
        let mut total = 0usize;
        for answer in answers {
            for part in answer? {
                total += part.0.len();
                parts.push(part);
            }
        }
        if total > USAGE_ROWS_MAX {
            return Err(UsageError::TooManyRows {
                max: USAGE_ROWS_MAX,
            });
        }
        Ok(SubjectRuns::order(parts, total))
    }
}

/// The cores this process may use, read once: `available_parallelism` reads cgroup files on
/// every call (tens of µs), which a one-customer query must not pay.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// `f` of each of `threads` runs of `items` (in order), each run on a thread of its own when
/// there is more than one; a panic in a run is raised again here.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return vec![f(items)];
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|run| scope.spawn(move || f(run)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Most threads one usage query reads shards on.
const QUERY_THREADS_MAX: usize = 4;

/// Each shard's answer, stopping as soon as these shards alone pass `USAGE_ROWS_MAX`.
/// One shard's answer: its rows, and where each subject's rows start.
type Part = (Vec<UsageRow>, Vec<usize>);

fn query_shards(shards: &[&RwLock<Rollup>], q: &UsageQuery) -> Result<Vec<Part>, UsageError> {
    let mut parts = Vec::with_capacity(shards.len());
    let mut total = 0usize;
    for shard in shards {
        let part = shard.read().query_runs(q)?;
        total += part.0.len();
        if total > USAGE_ROWS_MAX {
            return Err(UsageError::TooManyRows {
                max: USAGE_ROWS_MAX,
            });
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A usage answer over several shards: each shard's rows (ordered by subject, every subject
/// in one shard only) and the runs of rows of one subject each, sorted by subject (one
/// comparison per pair of runs the sort looks at, not one per row). Reading the runs in order
/// reads the answer in order; no row is moved to get there (a merged vector of 300k rows was
/// 24 MB written once more, in pages the allocator hands out fresh for every answer).
#[derive(Debug)]
pub struct SubjectRuns {
    parts: Vec<Vec<UsageRow>>,
    /// (part, start, end) of each subject's rows, in subject order.
    runs: Vec<(usize, usize, usize)>,
    total: usize,
}

impl SubjectRuns {
    fn order(parts: Vec<Part>, total: usize) -> SubjectRuns {
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        for (p, (rows, starts)) in parts.iter().enumerate() {
            for (i, start) in starts.iter().enumerate() {
                let end = starts.get(i + 1).copied().unwrap_or(rows.len());
                runs.push((p, *start, end));
            }
        }
        let parts: Vec<Vec<UsageRow>> = parts.into_iter().map(|(rows, _)| rows).collect();
        runs.sort_unstable_by(|a, b| parts[a.0][a.1].subject.cmp(&parts[b.0][b.1].subject));
        SubjectRuns { parts, runs, total }
    }

    /// An answer already in one vector ordered by subject: each subject's rows are a run.
    pub fn from_sorted(rows: Vec<UsageRow>) -> SubjectRuns {
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            match runs.last_mut() {
                Some(run) if rows[run.1].subject == row.subject => run.2 = i + 1,
                _ => runs.push((0, i, i + 1)),
            }
        }
        SubjectRuns {
            total: rows.len(),
            parts: vec![rows],
            runs,
        }
    }

    /// Rows in the answer.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the answer has no rows.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Each subject's rows (ordered by group and window), subjects in order.
    pub fn subjects(&self) -> impl Iterator<Item = &[UsageRow]> + '_ {
        self.runs
            .iter()
            .map(|(p, start, end)| &self.parts[*p][*start..*end])
    }

    /// The answer as one vector, ordered by subject, group and window.
    pub fn into_rows(mut self) -> Vec<UsageRow> {
        if self.parts.len() == 1 {
            // One shard's rows are in order already.
            return self.parts.pop().unwrap_or_default();
        }
        let mut rows = Vec::with_capacity(self.total);
        for (p, start, end) in self.runs {
            for row in &mut self.parts[p][start..end] {
                rows.push(UsageRow {
                    subject: std::mem::take(&mut row.subject),
                    group: std::mem::take(&mut row.group),
                    ..*row
                });
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tollgate_core::time::UnixMs;

    fn row(subject: &str, day: i64) -> UsageRow {
        UsageRow {
            subject: subject.into(),
            window_start: UnixMs(day * 86_400_000),
            window_end: UnixMs((day + 1) * 86_400_000),
            group: std::collections::BTreeMap::new(),
            value: rust_decimal::Decimal::from(day),
        }
    }

    #[test]
    fn shards_answers_are_read_by_subject_keeping_each_subjects_rows_in_order() {
        let parts: Vec<Part> = vec![
            (
                vec![row("a", 1), row("a", 2), row("d", 0), row("x\"y", 3)],
                vec![0, 2, 3],
            ),
            (vec![], vec![]),
            (vec![row("b", 5), row("c", 1), row("c", 2)], vec![0, 1]),
        ];
        let runs = SubjectRuns::order(parts, 7);
        assert_eq!(runs.len(), 7);
        let by_subject: Vec<Vec<i64>> = runs
            .subjects()
            .map(|rows| rows.iter().map(|r| r.window_start.0 / 86_400_000).collect())
            .collect();
        assert_eq!(
            by_subject,
            [vec![1, 2], vec![5], vec![1, 2], vec![0], vec![3]]
        );
        let got: Vec<(String, i64)> = runs
            .into_rows()
            .into_iter()
            .map(|r| (r.subject, r.window_start.0 / 86_400_000))
            .collect();
        let want: Vec<(String, i64)> = [
            ("a", 1),
            ("a", 2),
            ("b", 5),
            ("c", 1),
            ("c", 2),
            ("d", 0),
            ("x\"y", 3),
        ]
        .into_iter()
        .map(|(s, d)| (s.to_owned(), d))
        .collect();
        assert_eq!(got, want);
    }
}
