//! One meter's usage, sharded by subject so that readers never hold up the writer for long.
//!
//! A query locks one shard at a time per thread (a sixteenth of the subjects; a query over
//! every subject reads on one thread per core, up to `QUERY_THREADS_MAX`), and the apply thread
//! folds a group into one shard (of every meter) at a time, so a long query over every customer delays ingest
//! by at most one shard's share of it. Each customer's rows come from one shard under one
//! lock, so they are consistent with some commit; two customers may be read a commit apart.

use parking_lot::RwLock;
use tollgate_core::event::Event;
use tollgate_core::limits::USAGE_ROWS_MAX;
use tollgate_core::meter::Meter;
use tollgate_core::usage::{Observed, Rollup, RollupStats, UsageError, UsageQuery, UsageRow};
use xxhash_rust::xxh3::xxh3_64;

/// Number of shards per meter.
pub const ROLLUP_SHARDS: usize = 16;

/// The shard a subject's usage lives in.
pub fn shard_of(subject: &str) -> usize {
    // The remainder is below ROLLUP_SHARDS, so it fits any usize.
    usize::try_from(xxh3_64(subject.as_bytes()) % ROLLUP_SHARDS as u64).unwrap_or(0)
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
    pub fn apply_observed_mut(&mut self, event: &Event, seq: u64, observed: &Observed) {
        let subject = event.subject.as_str();
        self.shards[shard_of(subject)]
            .get_mut()
            .apply_observed(subject, event.time, seq, observed);
    }

    /// Write access to one shard (the apply thread folds a group into shard `s` of every
    /// meter under these guards, one shard at a time).
    pub fn shard_mut(&self, shard: usize) -> parking_lot::RwLockWriteGuard<'_, Rollup> {
        self.shards[shard].write()
    }

    /// Answers a usage query, one shard at a time, rows ordered by subject, group and window.
    pub fn query(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, UsageError> {
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
        let mut parts: Vec<std::vec::IntoIter<UsageRow>> = Vec::with_capacity(shards.len());
        let mut total = 0usize;
        for answer in answers {
            for part in answer? {
                total += part.len();
                parts.push(part.into_iter());
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
fn query_shards(
    shards: &[&RwLock<Rollup>],
    q: &UsageQuery,
) -> Result<Vec<Vec<UsageRow>>, UsageError> {
    let mut parts = Vec::with_capacity(shards.len());
    let mut total = 0usize;
    for shard in shards {
        let part = shard.read().query(q)?;
        total += part.len();
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
/// one answer ordered by subject (a k-way merge: the parts are long sorted runs).
fn merge_by_subject(mut parts: Vec<std::vec::IntoIter<UsageRow>>, total: usize) -> Vec<UsageRow> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut rows = Vec::with_capacity(total);
    let mut heads: Vec<Option<UsageRow>> = parts.iter_mut().map(Iterator::next).collect();
    let mut heap: BinaryHeap<Reverse<(String, usize)>> = heads
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.as_ref().map(|r| Reverse((r.subject.clone(), i))))
        .collect();
    while let Some(Reverse((subject, i))) = heap.pop() {
        // Take this shard's whole run of rows for the subject.
        while let Some(row) = heads[i].take_if(|r| r.subject == subject) {
            rows.push(row);
            heads[i] = parts[i].next();
        }
        if let Some(next) = &heads[i] {
            heap.push(Reverse((next.subject.clone(), i)));
        }
    }
    rows
}
