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
        self.query_runs(q).map(|(rows, _)| rows)
    }

    /// [`MeterUsage::query`], and where each subject's rows start in the answer (ascending).
    pub fn query_runs(&self, q: &UsageQuery) -> Result<(Vec<UsageRow>, Vec<usize>), UsageError> {
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
        Ok(merge_by_subject(parts, total))
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

/// Merges shards' answers, each ordered by subject with every subject in one shard only, into
/// one answer ordered by subject: the subjects' runs of rows are sorted by subject (one
/// comparison per pair of runs the sort looks at, not one per row) and each row is moved once.
/// Also returns where each subject's rows start in the merged answer.
fn merge_by_subject(mut parts: Vec<Part>, total: usize) -> Part {
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for (p, (rows, starts)) in parts.iter().enumerate() {
        for (i, start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(rows.len());
            runs.push((p, *start, end));
        }
    }
    runs.sort_unstable_by(|a, b| parts[a.0].0[a.1].subject.cmp(&parts[b.0].0[b.1].subject));
    let mut rows = Vec::with_capacity(total);
    let mut starts = Vec::with_capacity(runs.len());
    for (p, start, end) in runs {
        starts.push(rows.len());
        for row in &mut parts[p].0[start..end] {
            rows.push(UsageRow {
                subject: std::mem::take(&mut row.subject),
                group: std::mem::take(&mut row.group),
                ..*row
            });
        }
    }
    (rows, starts)
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
    fn shards_answers_merge_by_subject_keeping_each_subjects_rows_in_order() {
        let parts: Vec<Part> = vec![
            (
                vec![row("a", 1), row("a", 2), row("d", 0), row("x\"y", 3)],
                vec![0, 2, 3],
            ),
            (vec![], vec![]),
            (vec![row("b", 5), row("c", 1), row("c", 2)], vec![0, 1]),
        ];
        let (rows, starts) = merge_by_subject(parts, 7);
        assert_eq!(starts, [0, 2, 3, 5, 6]);
        let got: Vec<(String, i64)> = rows
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
