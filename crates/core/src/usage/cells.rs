//! Compact per-aggregation cells and the day/hour/minute buckets that hold them.
//!
//! A rollup keeps one cell type per aggregation rather than a general enum, so a minute bucket
//! of a `count` meter is 16 bytes and of a `sum` meter 20, not the 48 of the widest variant.
//! The algebra (merge, value) is the same as [`super::AggState`]'s.

use std::fmt::Debug;

use rust_decimal::Decimal;

use super::{AggState, MINUTES_PER_DAY, MINUTES_PER_HOUR, ValueHash, checked_sum, union_sorted};
use crate::time::UnixMs;

/// One aggregation's mergeable cell.
pub(crate) trait Cell: Clone + Debug {
    /// What a query folds cells into: the cell itself, except where a cheaper form exists for
    /// a value that is built once and read once.
    type Acc: Clone;
    /// Merges `other` into `self` (commutative, associative).
    fn merge(&mut self, other: &Self);
    /// Folds `cell` into a query's accumulator (`None`: nothing folded yet).
    fn gather(acc: &mut Option<Self::Acc>, cell: &Self);
    /// The public form of an accumulator.
    fn finish(acc: Self::Acc) -> AggState;
}

/// The accumulator of a cell whose merge is already cheap: the cell itself.
macro_rules! cell_is_its_own_accumulator {
    () => {
        type Acc = Self;
        fn gather(acc: &mut Option<Self>, cell: &Self) {
            match acc {
                Some(a) => a.merge(cell),
                None => *acc = Some(cell.clone()),
            }
        }
    };
}

/// `sum`.
#[derive(Clone, Debug)]
pub(crate) struct SumCell(pub(crate) Decimal);
/// `count`.
#[derive(Clone, Debug)]
pub(crate) struct CountCell(pub(crate) u64);
/// `max`.
#[derive(Clone, Debug)]
pub(crate) struct MaxCell(pub(crate) Decimal);
/// `min`.
#[derive(Clone, Debug)]
pub(crate) struct MinCell(pub(crate) Decimal);
/// `latest`: ordered by (event time, ingest sequence).
#[derive(Clone, Debug)]
pub(crate) struct LatestCell {
    pub(crate) time: i64,
    pub(crate) seq: u64,
    pub(crate) value: Decimal,
}
/// `unique_count`: the values' hashes, sorted. Most minute buckets hold one value, kept inline
/// (the enum is as small as the `Vec`: its capacity field has room for the tag). The cells
/// hold the hashes themselves rather than ids from an interning map: a value's id cost a
/// lookup in a map of every value the meter has seen, a cache miss per event that was half
/// the time of folding a distinct-count meter.
#[derive(Clone, Debug)]
pub(crate) enum UniqueCell {
    One(ValueHash),
    Many(Vec<ValueHash>),
}

impl Cell for SumCell {
    cell_is_its_own_accumulator!();
    fn merge(&mut self, other: &Self) {
        self.0 = checked_sum(self.0, other.0);
    }
    fn finish(acc: Self) -> AggState {
        AggState::Sum(acc.0)
    }
}

impl Cell for CountCell {
    cell_is_its_own_accumulator!();
    fn merge(&mut self, other: &Self) {
        self.0 += other.0;
    }
    fn finish(acc: Self) -> AggState {
        AggState::Count(acc.0)
    }
}

impl Cell for MaxCell {
    cell_is_its_own_accumulator!();
    fn merge(&mut self, other: &Self) {
        self.0 = self.0.max(other.0);
    }
    fn finish(acc: Self) -> AggState {
        AggState::Max(acc.0)
    }
}

impl Cell for MinCell {
    cell_is_its_own_accumulator!();
    fn merge(&mut self, other: &Self) {
        self.0 = self.0.min(other.0);
    }
    fn finish(acc: Self) -> AggState {
        AggState::Min(acc.0)
    }
}

impl Cell for LatestCell {
    cell_is_its_own_accumulator!();
    fn merge(&mut self, other: &Self) {
        if (other.time, other.seq) > (self.time, self.seq) {
            *self = other.clone();
        }
    }
    fn finish(acc: Self) -> AggState {
        AggState::Latest {
            time: UnixMs(acc.time),
            seq: acc.seq,
            value: acc.value,
        }
    }
}

impl UniqueCell {
    fn ids(&self) -> &[ValueHash] {
        match self {
            UniqueCell::One(id) => std::slice::from_ref(id),
            UniqueCell::Many(ids) => ids,
        }
    }
}

impl Cell for UniqueCell {
    fn merge(&mut self, other: &Self) {
        match (&mut *self, other.ids()) {
            (UniqueCell::One(id), [k]) if id == k => {}
            (UniqueCell::One(id), keys) => {
                let mut ids = vec![*id];
                union_sorted(&mut ids, keys);
                *self = UniqueCell::Many(ids);
            }
            (UniqueCell::Many(ids), keys) => union_sorted(ids, keys),
        }
    }
    /// A query gathers the values unsorted and sorts them once: merging a month of day
    /// totals into a sorted set moved the set once per day. Where the same values recur
    /// (many groups, many days), the gathered list is sorted and deduplicated whenever it is
    /// full, so it stays within twice the distinct values.
    type Acc = Vec<ValueHash>;
    fn gather(acc: &mut Option<Vec<ValueHash>>, cell: &Self) {
        let keys = acc.get_or_insert_with(Vec::new);
        let ids = cell.ids();
        if keys.len() + ids.len() > keys.capacity() && keys.len() >= GATHERED_COMPACT_MIN {
            keys.sort_unstable();
            keys.dedup();
            // Still more than half full: grow, so that the next sort comes after as many
            // new keys as there are distinct ones.
            if keys.len() * 2 > keys.capacity() {
                keys.reserve(keys.len());
            }
        }
        keys.extend_from_slice(ids);
    }
    fn finish(mut acc: Vec<ValueHash>) -> AggState {
        acc.sort_unstable();
        acc.dedup();
        AggState::Unique(acc)
    }
}

/// Gathered values a query holds before it starts to deduplicate them as it goes.
pub(crate) const GATHERED_COMPACT_MIN: usize = 1024;

/// The size the comment on [`UniqueCell`] promises.
const _: () = assert!(std::mem::size_of::<UniqueCell>() == std::mem::size_of::<Vec<ValueHash>>());

/// Room for `v` to take one more element: a quarter more (two at least), to the end of its
/// allocation's size class.
fn grow_by_a_quarter<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        let want = v.len() + (v.len() / 4).max(2);
        v.reserve_exact(class_capacity::<T>(want) - v.len());
    }
}

/// `want` elements of `T`, rounded up to the most that fit in the size class jemalloc (the
/// binary's allocator) serves an allocation of that many bytes from. A `Vec` asks for exactly
/// its capacity, and the allocator hands out the whole class: a two-byte key array of one
/// element holds 8 bytes. Growing to the end of the class costs no memory and saves the
/// reallocations in between (they were a tenth of the apply thread's time).
pub(crate) fn class_capacity<T>(want: usize) -> usize {
    let size = std::mem::size_of::<T>();
    if size == 0 {
        return want;
    }
    size_class(want.saturating_mul(size)) / size
}

/// jemalloc's size class of an allocation of `bytes` (x86-64, 16-byte quantum, 4 KiB pages):
/// 8, then multiples of 16 up to 128, then four classes per doubling (160, 192, 224, 256,
/// 320, ...), which its large classes continue.
pub(crate) fn size_class(bytes: usize) -> usize {
    const QUANTUM: usize = 16;
    const SMALLEST: usize = 8;
    const QUANTUM_SPACED_MAX: usize = 128;
    if bytes <= SMALLEST {
        return SMALLEST;
    }
    match bytes {
        ..=QUANTUM_SPACED_MAX => bytes.div_ceil(QUANTUM) * QUANTUM,
        _ => {
            let doubling = usize::BITS - 1 - (bytes - 1).leading_zeros();
            let spacing = 1usize << (doubling - 2);
            bytes.div_ceil(spacing).saturating_mul(spacing)
        }
    }
}

/// Sparse buckets: keys and cells in two sorted arrays (no padding between a 2-byte key and
/// its cell), grown by a quarter at a time rather than doubled, since there are millions.
#[derive(Debug)]
struct Buckets<K, C> {
    keys: Vec<K>,
    cells: Vec<C>,
}

impl<K, C> Buckets<K, C> {
    fn empty() -> Self {
        Buckets {
            keys: Vec::new(),
            cells: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl<K: Ord + Copy, C: Cell> Buckets<K, C> {
    fn one(key: K, cell: &C) -> Self {
        let mut keys = Vec::with_capacity(class_capacity::<K>(1));
        let mut cells = Vec::with_capacity(class_capacity::<C>(1));
        keys.push(key);
        cells.push(cell.clone());
        Buckets { keys, cells }
    }

    /// Makes room for one more bucket: each array grows by a quarter (two at least), rounded
    /// up to fill the allocator's size class, which holds the rounded-up capacity anyway.
    fn grow(&mut self) {
        grow_by_a_quarter(&mut self.keys);
        grow_by_a_quarter(&mut self.cells);
    }

    /// Upserts `cell` at `key`. Events arrive mostly in time order, so the common case is a
    /// merge into or a push after the last bucket.
    fn upsert(&mut self, key: K, cell: &C) {
        match self.keys.last() {
            Some(last) if *last == key => {
                if let Some(c) = self.cells.last_mut() {
                    c.merge(cell);
                }
                return;
            }
            Some(last) if *last > key => {}
            _ => {
                self.grow();
                self.keys.push(key);
                self.cells.push(cell.clone());
                return;
            }
        }
        match self.keys.binary_search(&key) {
            Ok(at) => self.cells[at].merge(cell),
            Err(at) => {
                self.grow();
                self.keys.insert(at, key);
                self.cells.insert(at, cell.clone());
            }
        }
    }

    /// Merges the buckets with keys in `[s, e)` into `acc`.
    fn merge_range(&self, s: K, e: K, acc: &mut Option<C::Acc>) {
        if s >= e {
            return;
        }
        let start = self.keys.partition_point(|k| *k < s);
        for (k, cell) in self.keys[start..].iter().zip(&self.cells[start..]) {
            if *k >= e {
                break;
            }
            C::gather(acc, cell);
        }
    }
}

/// Minute buckets a day holds before it also keeps hour buckets. Most days of a customer are
/// sparse (a few events, each in a minute of its own), and for them hour buckets would repeat
/// the minutes: an upsert per event and two allocations per day and meter for nothing. Until
/// then a window of whole hours reads the minutes, at most this many.
const HOURS_FROM_MINUTES: usize = 64;

/// One UTC day of a series: its total, its minutes (sorted, sparse) and, once it has more than
/// [`HOURS_FROM_MINUTES`] minutes, its hours.
#[derive(Debug)]
struct Day<C> {
    total: C,
    /// Empty until the day has more than [`HOURS_FROM_MINUTES`] minute buckets.
    hours: Buckets<u8, C>,
    minutes: Buckets<u16, C>,
}

impl<C: Cell> Day<C> {
    fn new(in_day: u16, cell: &C) -> Self {
        Day {
            total: cell.clone(),
            hours: Buckets::empty(),
            minutes: Buckets::one(in_day, cell),
        }
    }

    fn add(&mut self, hour: u8, in_day: u16, cell: &C) {
        self.total.merge(cell);
        self.minutes.upsert(in_day, cell);
        if !self.hours.is_empty() {
            self.hours.upsert(hour, cell);
        } else if self.minutes.len() > HOURS_FROM_MINUTES {
            self.hours = self.hours_of_minutes();
        }
    }

    /// Hour buckets holding what the minute buckets hold.
    fn hours_of_minutes(&self) -> Buckets<u8, C> {
        let mut hours = Buckets::empty();
        for (minute, cell) in self.minutes.keys.iter().zip(&self.minutes.cells) {
            let hour = u8::try_from(i64::from(*minute) / MINUTES_PER_HOUR).unwrap_or(u8::MAX);
            hours.upsert(hour, cell);
        }
        hours
    }

    /// Folds minutes `[s, e)` of this day into `acc`: whole hours from the hour buckets (when
    /// the day has them), the ragged edges from the minute buckets.
    fn fold(&self, s: i64, e: i64, acc: &mut Option<C::Acc>) {
        if s <= 0 && e >= MINUTES_PER_DAY {
            C::gather(acc, &self.total);
            return;
        }
        if self.hours.is_empty() {
            let minute = |m: i64| u16::try_from(m.clamp(0, MINUTES_PER_DAY)).unwrap_or(u16::MAX);
            self.minutes.merge_range(minute(s), minute(e), acc);
            return;
        }
        let first_hour = (s + MINUTES_PER_HOUR - 1).div_euclid(MINUTES_PER_HOUR);
        let last_hour = e.div_euclid(MINUTES_PER_HOUR);
        let minute = |m: i64| u16::try_from(m.clamp(0, MINUTES_PER_DAY)).unwrap_or(u16::MAX);
        if first_hour < last_hour {
            let hour = |h: i64| u8::try_from(h.clamp(0, 24)).unwrap_or(u8::MAX);
            self.minutes
                .merge_range(minute(s), minute(first_hour * MINUTES_PER_HOUR), acc);
            self.hours
                .merge_range(hour(first_hour), hour(last_hour), acc);
            self.minutes
                .merge_range(minute(last_hour * MINUTES_PER_HOUR), minute(e), acc);
        } else {
            self.minutes.merge_range(minute(s), minute(e), acc);
        }
    }
}

/// One (subject, group)'s usage by UTC day, each day with minute buckets and, once it is dense,
/// hour buckets. Every level holds the same events, so a window reads whichever level aligns.
#[derive(Debug)]
pub(crate) struct Series<C> {
    /// The latest day, held in the series itself. Events arrive mostly in time order, so
    /// nearly every event lands here, and the series (which lies in a dense array) leads
    /// straight to the day's buckets: with the day in a heap array of its own, a series that
    /// was out of the CPU caches cost one more wait for memory per event and meter before its
    /// buckets could be read, the largest cost of folding small groups (HTTP ingest).
    latest: Option<(i64, Day<C>)>,
    /// The days before `latest`, sorted by day number.
    earlier: Vec<(i64, Day<C>)>,
}

impl<C> Default for Series<C> {
    fn default() -> Self {
        Series {
            latest: None,
            earlier: Vec::new(),
        }
    }
}

impl<C: Cell> Series<C> {
    /// Whether no event was added yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.latest.is_none()
    }

    /// Adds one event's cell at a minute since the epoch.
    pub(crate) fn add(&mut self, minute: i64, cell: &C) {
        let day = minute.div_euclid(MINUTES_PER_DAY);
        let in_day = minute.rem_euclid(MINUTES_PER_DAY);
        let hour = u8::try_from(in_day / MINUTES_PER_HOUR).unwrap_or(u8::MAX);
        let in_day = u16::try_from(in_day).unwrap_or(u16::MAX);
        match &mut self.latest {
            Some((latest, d)) if *latest == day => d.add(hour, in_day, cell),
            Some((latest, _)) if *latest > day => {
                match self.earlier.binary_search_by_key(&day, |(d, _)| *d) {
                    Ok(at) => {
                        if let Some((_, d)) = self.earlier.get_mut(at) {
                            d.add(hour, in_day, cell);
                        }
                    }
                    Err(at) => self.earlier.insert(at, (day, Day::new(in_day, cell))),
                }
            }
            _ => {
                if let Some(before) = self.latest.replace((day, Day::new(in_day, cell))) {
                    self.earlier.push(before);
                }
            }
        }
    }

    /// The days in order.
    fn days(&self) -> impl Iterator<Item = &(i64, Day<C>)> {
        self.earlier.iter().chain(&self.latest)
    }

    /// Folds each window `[s, e)` (minutes, sorted, not overlapping) into its accumulator,
    /// walking the days of the whole span once instead of searching the tree per window.
    pub(crate) fn fold_windows(&self, windows: &[(i64, i64)], accs: &mut [Option<C::Acc>]) {
        let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
            return;
        };
        if first.0 >= last.1 {
            return;
        }
        let first_day = first.0.div_euclid(MINUTES_PER_DAY);
        let last_day = (last.1 - 1).div_euclid(MINUTES_PER_DAY);
        let mut w = 0usize;
        let from = self.earlier.partition_point(|(d, _)| *d < first_day);
        let days = self.days().skip(from).skip_while(|(d, _)| *d < first_day);
        for (d, day) in days.take_while(|(d, _)| *d <= last_day) {
            let day_start = d * MINUTES_PER_DAY;
            let day_end = day_start + MINUTES_PER_DAY;
            // Skip windows that end before this day.
            while w < windows.len() && windows[w].1 <= day_start {
                w += 1;
            }
            // Every window overlapping this day gets its part of it.
            let mut k = w;
            while k < windows.len() && windows[k].0 < day_end {
                let (s, e) = windows[k];
                if let Some(acc) = accs.get_mut(k) {
                    day.fold(
                        s.max(day_start) - day_start,
                        e.min(day_end) - day_start,
                        acc,
                    );
                }
                k += 1;
            }
        }
    }
}
