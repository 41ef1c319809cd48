//! usage: accumulating what meters observe, and answering usage queries.
//!
//! Owns: the aggregation state of one meter ([`AggState`]), the in-memory rollup of a meter
//! ([`Rollup`]) keyed by subject, group and time bucket in three tiers (UTC minute, hour, day),
//! and the usage query: windows in a time zone, projection onto a subset of dimensions.
//! Does not own: where events come from or how the rollup is persisted (the store replays
//! stored raw events into it).
//!
//! Invariants: a rollup equals the fold of its meter over the events applied to it, in any
//! order and in any split (aggregations are commutative and associative; `latest` orders by
//! event time, then ingest sequence). Every tier holds the same events, so a window read from
//! day buckets equals the same window read from minute buckets. Sums are exact decimals.

mod cells;
mod error;
#[cfg(test)]
mod tests;
mod window;

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write as _;

use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use xxhash_rust::xxh3::xxh3_128;

use self::cells::{Cell, CountCell, LatestCell, MaxCell, MinCell, Series, SumCell, UniqueCell};
pub use self::error::UsageError;
pub use self::window::{WindowSize, windows};
use crate::event::{Attributes, Subject};
use crate::limits::USAGE_ROWS_MAX;
use crate::meter::{Aggregation, Meter, Observation, Reading};
use crate::time::UnixMs;

const MINUTES_PER_HOUR: i64 = 60;
const MINUTES_PER_DAY: i64 = 1440;

/// The running aggregate of one meter over some set of events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AggState {
    /// Sum of values.
    Sum(Decimal),
    /// Number of events.
    Count(u64),
    /// Largest value.
    Max(Decimal),
    /// Smallest value.
    Min(Decimal),
    /// Value of the latest event: (event time, ingest sequence) orders them.
    Latest {
        /// Event time.
        time: UnixMs,
        /// Ingest sequence, breaking ties of equal times.
        seq: u64,
        /// The value.
        value: Decimal,
    },
    /// Distinct values by their hash, sorted.
    Unique(Vec<ValueHash>),
}

/// A `unique_count` value, by its 128-bit XXH3 hash: the values themselves are never shown,
/// only counted, and at 10^10 values a collision has a chance below 10^-18. Two 64-bit halves
/// rather than a `u128`, so that it aligns to 8 bytes and a one-value cell stays 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueHash([u64; 2]);

impl ValueHash {
    /// The hash of a value's text.
    pub fn of(value: &str) -> ValueHash {
        ValueHash::from_u128(xxh3_128(value.as_bytes()))
    }

    /// A hash given as one 128-bit number.
    pub fn from_u128(hash: u128) -> ValueHash {
        // The shifts keep each half in range: the casts cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        ValueHash([(hash >> 64) as u64, hash as u64])
    }
}

impl AggState {
    /// Merges another state of the same aggregation into this one.
    pub fn merge(&mut self, other: &AggState) {
        match (self, other) {
            (AggState::Sum(a), AggState::Sum(b)) => *a = checked_sum(*a, *b),
            (AggState::Count(a), AggState::Count(b)) => *a += b,
            (AggState::Max(a), AggState::Max(b)) => *a = (*a).max(*b),
            (AggState::Min(a), AggState::Min(b)) => *a = (*a).min(*b),
            (
                AggState::Latest { time, seq, value },
                AggState::Latest {
                    time: t2,
                    seq: s2,
                    value: v2,
                },
            ) => {
                if (*t2, *s2) > (*time, *seq) {
                    (*time, *seq, *value) = (*t2, *s2, *v2);
                }
            }
            (AggState::Unique(a), AggState::Unique(b)) => union_sorted(a, b),
            (a, b) => panic!("merging different aggregations: {a:?} and {b:?}"),
        }
    }

    /// The number a query reports.
    pub fn value(&self) -> Decimal {
        match self {
            AggState::Sum(d) | AggState::Max(d) | AggState::Min(d) => *d,
            AggState::Latest { value, .. } => *value,
            AggState::Count(n) => Decimal::from(*n),
            AggState::Unique(keys) => Decimal::from(keys.len()),
        }
    }
}

/// Decimal sums of meter values stay below 7.9e28; reaching that is a broken input stream that
/// must stop loudly rather than round.
fn checked_sum(a: Decimal, b: Decimal) -> Decimal {
    match a.checked_add(b) {
        Some(s) => s,
        None => panic!("meter sum overflows 96-bit decimal: {a} + {b}"),
    }
}

/// Sets of this many keys or fewer join a sorted set by one binary search and insert each;
/// larger ones by a merge of the two sorted lists, which moves each key once instead of
/// moving the tail of the set per key.
const UNION_BY_INSERT_MAX: usize = 4;

/// Adds the keys of `other` (sorted, distinct) to `keys` (sorted, distinct).
fn union_sorted(keys: &mut Vec<ValueHash>, other: &[ValueHash]) {
    if other.len() <= UNION_BY_INSERT_MAX {
        for key in other {
            if let Err(at) = keys.binary_search(key) {
                keys.insert(at, *key);
            }
        }
        return;
    }
    // Two sorted runs: the standard library's stable sort finds them and merges them in one
    // pass.
    keys.extend_from_slice(other);
    keys.sort();
    keys.dedup();
}

/// Strings to dense ids, so that rollups hold 4-byte keys.
#[derive(Default, Debug)]
struct Interner {
    /// Each string is allocated once and shared by both directions.
    ids: HashMap<std::sync::Arc<str>, u32>,
    names: Vec<std::sync::Arc<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or_else(|_| panic!("interner full"));
        let shared: std::sync::Arc<str> = s.into();
        self.ids.insert(std::sync::Arc::clone(&shared), id);
        self.names.push(shared);
        id
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |s| s)
    }
}

/// A usage query against one meter.
#[derive(Clone, Debug)]
pub struct UsageQuery {
    /// Only this subject; `None` for every subject.
    pub subject: Option<Subject>,
    /// Start, inclusive, whole minute.
    pub from: UnixMs,
    /// End, exclusive, whole minute.
    pub to: UnixMs,
    /// Window size; `None` for one window over the whole range.
    pub window: Option<WindowSize>,
    /// Time zone of window boundaries.
    pub time_zone: TimeZone,
    /// Dimensions to keep (a subset of the meter's); the others are merged.
    pub group_by: Vec<String>,
}

/// One row of a usage answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// The subject.
    pub subject: String,
    /// Window start (inclusive).
    pub window_start: UnixMs,
    /// Window end (exclusive).
    pub window_end: UnixMs,
    /// Kept dimensions and their values (`None`: the event had no value there).
    pub group: BTreeMap<String, Option<String>>,
    /// The aggregate.
    pub value: Decimal,
}

/// Counters about what a rollup has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RollupStats {
    /// Events counted.
    pub counted: u64,
    /// Events that matched but had no usable value.
    pub skipped: u64,
}

/// What one meter read from one event, owned and compact: the group as its interned-key text,
/// numbers as decimals, distinct-count values as their 128-bit hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Not this meter's event.
    NotMatched,
    /// Matched, but no usable value.
    Skipped,
    /// Counts.
    Counted {
        /// The group key (`None` for a meter without dimensions).
        group: Option<Box<str>>,
        /// The reading.
        reading: ObservedReading,
    },
}

/// The value part of [`Observed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObservedReading {
    /// `count`.
    One,
    /// A number.
    Number(Decimal),
    /// A distinct-value key, hashed.
    Key(ValueHash),
}

impl Observed {
    /// Reads one event with one meter.
    pub fn of<E: Attributes + ?Sized>(meter: &Meter, event: &E) -> Observed {
        let (group, reading) = match meter.observe(event) {
            Observation::NotMatched => return Observed::NotMatched,
            Observation::Skipped => return Observed::Skipped,
            Observation::Counted { group, reading } => (group, reading),
        };
        let group = if group.is_empty() {
            None
        } else {
            let mut key = String::new();
            for value in &group {
                match value {
                    Some(v) => {
                        // Writing to a String cannot fail.
                        let _ = write!(key, "{}:", v.len());
                        key.push_str(v);
                    }
                    None => key.push(GROUP_ABSENT),
                }
            }
            Some(key.into_boxed_str())
        };
        let reading = match reading {
            Reading::One => ObservedReading::One,
            Reading::Number(n) => ObservedReading::Number(n),
            Reading::Key(k) => ObservedReading::Key(ValueHash::of(&k)),
        };
        Observed::Counted { group, reading }
    }
}

/// Marks an absent value in an interned group key. A present value is written as its byte
/// length, `:` and its text, so that no value text (separators, control characters, this
/// marker) can be mistaken for the boundary between two values.
const GROUP_ABSENT: char = '-';

/// The series of one meter, in its aggregation's cell type.
/// Series by (subject id, group id). The series of a meter without dimensions (all in one
/// group) sit in a vector indexed by subject id, which finds them without hashing a key and
/// probing a table for every event and meter; grouped series sit in a hash map.
#[derive(Debug)]
struct Store<C> {
    /// The group id of meters without dimensions.
    ungrouped_id: u32,
    /// Series of `ungrouped_id` by subject id; a series without days is none yet.
    ungrouped: Vec<Series<C>>,
    grouped: HashMap<(u32, u32), Series<C>>,
}

impl<C: Cell> Store<C> {
    fn new(ungrouped_id: u32) -> Store<C> {
        Store {
            ungrouped_id,
            ungrouped: Vec::new(),
            grouped: HashMap::default(),
        }
    }

    fn get(&self, (subject, group): (u32, u32)) -> Option<&Series<C>> {
        if group == self.ungrouped_id {
            let at = usize::try_from(subject).ok()?;
            self.ungrouped.get(at).filter(|s| !s.is_empty())
        } else {
            self.grouped.get(&(subject, group))
        }
    }
    /// Adds a cell to a series, creating it if needed. Returns whether the series is new.
    fn add(&mut self, key: (u32, u32), minute: i64, cell: &C) -> bool {
        if key.1 == self.ungrouped_id {
            let at = usize::try_from(key.0).unwrap_or(usize::MAX);
            if at >= self.ungrouped.len() {
                self.ungrouped.resize_with(at + 1, Series::default);
            }
            let Some(series) = self.ungrouped.get_mut(at) else {
                return false;
            };
            let created = series.is_empty();
            series.add(minute, cell);
            return created;
        }
        match self.grouped.get_mut(&key) {
            Some(series) => {
                series.add(minute, cell);
                false
            }
            None => {
                let mut series = Series::default();
                series.add(minute, cell);
                self.grouped.insert(key, series);
                true
            }
        }
    }
}

/// One store per aggregation: a rollup holds exactly one of these.
#[derive(Debug)]
enum Cells {
    Sum(Store<SumCell>),
    Count(Store<CountCell>),
    Max(Store<MaxCell>),
    Min(Store<MinCell>),
    Latest(Store<LatestCell>),
    Unique(Store<UniqueCell>),
}

/// All usage of one meter, in memory.
#[derive(Debug)]
pub struct Rollup {
    meter: Meter,
    subjects: Interner,
    groups: Interner,
    cells: Cells,
    groups_of_subject: HashMap<u32, Vec<u32>>,
    /// The caller's dense subject numbers ([`Rollup::apply_observed_numbered`]) to this
    /// rollup's subject ids; [`UNNUMBERED`] where the number was not seen yet.
    by_number: Vec<u32>,
    stats: RollupStats,
    /// The group id of meters without dimensions (interned once).
    no_group: u32,
}

/// A caller's subject number this rollup has not seen yet.
const UNNUMBERED: u32 = u32::MAX;

/// What a query reads, worked out once before dispatching on the cell type.
struct QueryPlan<'a> {
    windows: Vec<(UnixMs, UnixMs)>,
    /// The windows in minutes since the epoch.
    minutes: Vec<(i64, i64)>,
    names: Vec<&'a str>,
    keep: Vec<usize>,
    subject_ids: Vec<u32>,
}

impl Rollup {
    /// An empty rollup for a meter.
    pub fn new(meter: Meter) -> Rollup {
        let mut groups = Interner::default();
        let no_group = groups.intern("");
        let cells = match meter.aggregation() {
            Aggregation::Sum => Cells::Sum(Store::new(no_group)),
            Aggregation::Count => Cells::Count(Store::new(no_group)),
            Aggregation::Max => Cells::Max(Store::new(no_group)),
            Aggregation::Min => Cells::Min(Store::new(no_group)),
            Aggregation::Latest => Cells::Latest(Store::new(no_group)),
            Aggregation::UniqueCount => Cells::Unique(Store::new(no_group)),
        };
        Rollup {
            meter,
            subjects: Interner::default(),
            groups,
            cells,
            groups_of_subject: HashMap::default(),
            by_number: Vec::new(),
            stats: RollupStats::default(),
            no_group,
        }
    }

    /// The meter.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// What it has seen.
    pub fn stats(&self) -> RollupStats {
        self.stats
    }

    /// Applies one accepted event. `seq` is its ingest sequence (orders `latest`).
    pub fn apply<E: Attributes + ?Sized>(&mut self, event: &E, seq: u64) {
        let observed = Observed::of(&self.meter, event);
        self.apply_observed(event.subject(), event.time(), seq, &observed);
    }

    /// Applies what [`Observed::of`] read from an event with this rollup's meter (the engine
    /// reads it where the event is parsed, while its data is still in cache).
    pub fn apply_observed(&mut self, subject: &str, time: UnixMs, seq: u64, observed: &Observed) {
        if let Some((group, reading)) = self.counted(observed) {
            let subject_id = self.subjects.intern(subject);
            self.add_reading(subject_id, group, reading, time, seq);
        }
    }

    /// [`Rollup::apply_observed`] for a subject the caller numbers densely (the engine numbers
    /// subjects while it parses, where their text is in cache): the number finds the subject
    /// without hashing or reading its text, which `subject` gives only the first time this
    /// rollup sees the number. A caller must give one number to one subject text only.
    pub fn apply_observed_numbered<'s>(
        &mut self,
        number: u32,
        subject: impl FnOnce() -> &'s str,
        time: UnixMs,
        seq: u64,
        observed: &Observed,
    ) {
        let Some((group, reading)) = self.counted(observed) else {
            return;
        };
        let at = number as usize;
        let subject_id = match self.by_number.get(at) {
            Some(id) if *id != UNNUMBERED => *id,
            _ => {
                let id = self.subjects.intern(subject());
                if self.by_number.len() <= at {
                    self.by_number.resize(at + 1, UNNUMBERED);
                }
                if let Some(slot) = self.by_number.get_mut(at) {
                    *slot = id;
                }
                id
            }
        };
        self.add_reading(subject_id, group, reading, time, seq);
    }

    /// The group and reading of an observation that counts (`skipped` is tallied here).
    fn counted<'o>(
        &mut self,
        observed: &'o Observed,
    ) -> Option<(&'o Option<Box<str>>, &'o ObservedReading)> {
        match observed {
            Observed::NotMatched => None,
            Observed::Skipped => {
                self.stats.skipped += 1;
                None
            }
            Observed::Counted { group, reading } => Some((group, reading)),
        }
    }

    fn add_reading(
        &mut self,
        subject_id: u32,
        group: &Option<Box<str>>,
        reading: &ObservedReading,
        time: UnixMs,
        seq: u64,
    ) {
        let group_id = match group {
            None => self.no_group,
            Some(key) => self.groups.intern(key),
        };
        let key = (subject_id, group_id);
        let minute = time.minute();
        let created = match (&mut self.cells, reading) {
            (Cells::Count(s), _) => s.add(key, minute, &CountCell(1)),
            (Cells::Sum(s), ObservedReading::Number(n)) => s.add(key, minute, &SumCell(*n)),
            (Cells::Max(s), ObservedReading::Number(n)) => s.add(key, minute, &MaxCell(*n)),
            (Cells::Min(s), ObservedReading::Number(n)) => s.add(key, minute, &MinCell(*n)),
            (Cells::Latest(s), ObservedReading::Number(n)) => s.add(
                key,
                minute,
                &LatestCell {
                    time: time.0,
                    seq,
                    value: *n,
                },
            ),
            (Cells::Unique(s), ObservedReading::Key(hash)) => {
                s.add(key, minute, &UniqueCell::One(*hash))
            }
            (cells, reading) => panic!("meter cells {cells:?} got reading {reading:?}"),
        };
        if created {
            self.groups_of_subject
                .entry(subject_id)
                .or_default()
                .push(group_id);
        }
        self.stats.counted += 1;
    }

    /// Answers a usage query: one row per (subject, kept group, window) that has data, sorted
    /// by subject, group and window start.
    pub fn query(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, UsageError> {
        self.query_runs(q).map(|(rows, _)| rows)
    }

    /// [`Rollup::query`], and where each subject's rows start in the answer (ascending), so
    /// answers of several rollups can be merged by subject without comparing every row.
    pub fn query_runs(&self, q: &UsageQuery) -> Result<(Vec<UsageRow>, Vec<usize>), UsageError> {
        let windows = windows(q.from, q.to, q.window, &q.time_zone)?;
        let names: Vec<&str> = self.meter.dimension_names().collect();
        let mut keep = Vec::with_capacity(q.group_by.len());
        for name in &q.group_by {
            let at = names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| UsageError::UnknownGroupBy { name: name.clone() })?;
            if !keep.contains(&at) {
                keep.push(at);
            }
        }
        keep.sort_unstable();
        let mut subject_ids: Vec<u32> = match &q.subject {
            Some(s) => self.subjects.get(s.as_str()).into_iter().collect(),
            None => (0..u32::try_from(self.subjects.names.len()).unwrap_or(u32::MAX)).collect(),
        };
        // Rows come out in subject order without a sort of the rows themselves.
        subject_ids.sort_unstable_by(|a, b| self.subjects.name(*a).cmp(self.subjects.name(*b)));
        let minutes = windows
            .iter()
            .map(|(s, e)| (s.minute(), e.minute()))
            .collect();
        let plan = QueryPlan {
            minutes,
            windows,
            names,
            keep,
            subject_ids,
        };
        match &self.cells {
            Cells::Sum(s) => self.rows(s, &plan),
            Cells::Count(s) => self.rows(s, &plan),
            Cells::Max(s) => self.rows(s, &plan),
            Cells::Min(s) => self.rows(s, &plan),
            Cells::Latest(s) => self.rows(s, &plan),
            Cells::Unique(s) => self.rows(s, &plan),
        }
    }

    fn rows<C: Cell>(
        &self,
        store: &Store<C>,
        plan: &QueryPlan<'_>,
    ) -> Result<(Vec<UsageRow>, Vec<usize>), UsageError> {
        let mut rows = Vec::new();
        let mut starts = Vec::new();
        // Without kept dimensions every group of a subject folds into one row per window: one
        // accumulator vector, reused, instead of a map keyed by the projected group.
        let mut merged: Vec<Option<C::Acc>> = Vec::new();
        // Where the current subject's rows start; recorded once it has any.
        let mut subject_start = 0usize;
        for subject_id in &plan.subject_ids {
            if rows.len() > subject_start {
                starts.push(subject_start);
            }
            subject_start = rows.len();
            let Some(group_ids) = self.groups_of_subject.get(subject_id) else {
                continue;
            };
            let subject = self.subjects.name(*subject_id);
            if plan.keep.is_empty() {
                merged.clear();
                merged.resize(plan.windows.len(), None);
                for group_id in group_ids {
                    if let Some(series) = store.get((*subject_id, *group_id)) {
                        series.fold_windows(&plan.minutes, &mut merged);
                    }
                }
                push_rows::<C>(&mut rows, subject, &plan.windows, merged.drain(..), || {
                    BTreeMap::new()
                })?;
                continue;
            }
            // Projected group key → one accumulator per window, in key order.
            let mut projected: BTreeMap<Vec<Option<&str>>, Vec<Option<C::Acc>>> = BTreeMap::new();
            for group_id in group_ids {
                let Some(series) = store.get((*subject_id, *group_id)) else {
                    continue;
                };
                let values = split_group(self.groups.name(*group_id));
                let key: Vec<Option<&str>> = plan
                    .keep
                    .iter()
                    .map(|i| values.get(*i).copied().flatten())
                    .collect();
                let accs = projected
                    .entry(key)
                    .or_insert_with(|| vec![None; plan.windows.len()]);
                series.fold_windows(&plan.minutes, accs);
            }
            for (key, accs) in projected {
                push_rows::<C>(&mut rows, subject, &plan.windows, accs.into_iter(), || {
                    plan.keep
                        .iter()
                        .zip(&key)
                        .map(|(i, v)| (plan.names[*i].to_owned(), v.map(str::to_owned)))
                        .collect()
                })?;
            }
        }
        if rows.len() > subject_start {
            starts.push(subject_start);
        }
        Ok((rows, starts))
    }
}

/// One row per window with data for `subject`, each with the group `group()` makes; refuses
/// to pass `USAGE_ROWS_MAX` rows.
fn push_rows<C: Cell>(
    rows: &mut Vec<UsageRow>,
    subject: &str,
    windows: &[(UnixMs, UnixMs)],
    accs: impl Iterator<Item = Option<C::Acc>>,
    group: impl Fn() -> BTreeMap<String, Option<String>>,
) -> Result<(), UsageError> {
    for ((start, end), acc) in windows.iter().zip(accs) {
        let Some(acc) = acc else { continue };
        if rows.len() >= USAGE_ROWS_MAX {
            return Err(UsageError::TooManyRows {
                max: USAGE_ROWS_MAX,
            });
        }
        rows.push(UsageRow {
            subject: subject.to_owned(),
            window_start: *start,
            window_end: *end,
            group: group(),
            value: C::finish(acc).value(),
        });
    }
    Ok(())
}

/// The dimension values of a group key written by [`Rollup::apply`].
fn split_group(key: &str) -> Vec<Option<&str>> {
    let mut values = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(GROUP_ABSENT) {
            values.push(None);
            rest = after;
            continue;
        }
        let next = rest.split_once(':').and_then(|(len, after)| {
            let len: usize = len.parse().ok()?;
            Some((after.get(..len)?, after.get(len..)?))
        });
        let Some((value, after)) = next else {
            panic!("corrupt group key {key:?}")
        };
        values.push(Some(value));
        rest = after;
    }
    values
}
