//! The engine: one writer thread per data directory, many readers.
//!
//! Load → decide → commit. Callers turn request bodies into a [`PreparedBatch`] on their own
//! thread (parse, validate, window check, identity, fingerprint: pure work that scales with
//! cores). The writer takes every batch waiting in its queue (group commit), decides each
//! event's [`Verdict`] against the in-memory dedup index, writes the accepted events as one
//! frame in one SQLite transaction with `synchronous=FULL`, and only after the commit applies
//! them to the rollups and answers each batch. If the commit fails, the index is rolled back and
//! every batch in the group gets the error: nothing was accepted, so a retry is safe.
//!
//! Readers take a per-meter read lock for the length of one query; the writer holds a meter's
//! write lock only while applying one group.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::RwLock;
use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::oneshot;
use tollgate_core::dedup::{self, Fingerprint, IdentityKey, Index, Verdict};
use tollgate_core::event::{self, Event, EventError, EventRef};
use tollgate_core::limits::{ACCEPTANCE_WINDOW_MS_DEFAULT, METERS_MAX};
use tollgate_core::meter::{Meter, MeterSlug};
use tollgate_core::sessions::{SESSION_TIMEOUT_MS_DEFAULT, SessionBook, SessionEvent, WindowPeak};
use tollgate_core::time::{Clock, UnixMs};
use tollgate_core::usage::{Observed, RollupStats, UsageError, UsageQuery, UsageRow};

use crate::checkpoint::Checkpointer;
use crate::frames::{self, FrameSet};
use crate::usage::{MeterUsage, ROLLUP_SHARDS, SubjectNumbers, shard_of};
use crate::{Metrics, StoreError, meters};

/// Most events the writer puts into one group commit.
pub const GROUP_COMMIT_EVENTS_MAX: usize = 250_000;
/// Most batches waiting for the writer; beyond this, HTTP ingest answers 503 `writer_busy`.
pub const WRITER_QUEUE_BATCHES_MAX: usize = 512;
/// How often the writer drops identities that left the acceptance window.
const PRUNE_INTERVAL_MS: i64 = 3_600_000;

/// Settings of an engine.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Acceptance (= dedup) window in ms.
    pub acceptance_window_ms: i64,
    /// How long a session without a `session.ended` event stays open (ms).
    pub session_timeout_ms: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            acceptance_window_ms: ACCEPTANCE_WINDOW_MS_DEFAULT,
            session_timeout_ms: SESSION_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// One event that was not accepted, as reported to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemError {
    /// Position in the request (0-based; NDJSON: line number minus one, blank lines included).
    pub index: usize,
    /// The event's `id`, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Stable code: an [`EventError`] code, `duplicate` or `conflict`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

/// The answer to one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// Events counted.
    pub accepted: usize,
    /// Events already counted before (same identity, same payload).
    pub duplicates: usize,
    /// Events whose identity was counted with a different payload.
    pub conflicts: usize,
    /// Events that were invalid or outside the acceptance window.
    pub rejected: usize,
    /// Every event that was not accepted.
    pub errors: Vec<ItemError>,
}

struct PreparedEvent {
    index: usize,
    /// The rollup shard of its subject, worked out while preparing.
    shard: usize,
    /// Its subject's number in the engine's [`SubjectNumbers`], in that shard.
    subject_number: u32,
    /// What the session gauge reads from it (`session.started` / `session.ended` only).
    session: Option<SessionEvent>,
    span: Range<usize>,
    /// The event's time (the receive time when it has none, so a parse of its text with
    /// `received = time` gives the same event again).
    time: UnixMs,
    /// Its subject: where it lies in the body, or the unescaped text when it had escapes.
    subject: Text,
    key: IdentityKey,
    fp: Fingerprint,
}

/// A string of a prepared event, read from the body without a copy when it can be.
enum Text {
    /// The text is `body[range]`.
    At(Range<usize>),
    /// The unescaped text (the JSON string had escapes).
    Owned(Box<str>),
}

impl Text {
    /// `text` as a range of `body` when it lies inside it (borrowed from it), else a copy.
    fn of(text: &str, body: &str) -> Text {
        let start = (text.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        match start.checked_add(text.len()) {
            Some(end) if end <= body.len() => Text::At(start..end),
            _ => Text::Owned(text.into()),
        }
    }

    fn get<'b>(&'b self, body: &'b str) -> &'b str {
        match self {
            Text::At(range) => body.get(range.clone()).unwrap_or_default(),
            Text::Owned(text) => text,
        }
    }
}

impl PreparedEvent {
    fn subject<'b>(&'b self, batch: &'b PreparedBatch) -> &'b str {
        self.subject.get(&batch.body)
    }

    /// The event parsed again from its text (for the rare paths that need more than the
    /// prepared readings: a meter changed since, an error message).
    fn reparse<'b>(&self, batch: &'b PreparedBatch) -> Option<EventRef<'b>> {
        let raw = batch.body.get(self.span.clone())?;
        EventRef::parse(raw, self.time).ok()
    }
}

/// Events parsed and validated, ready for the writer. Holds the request body, so each raw
/// event is stored exactly as received without a copy per event.
pub struct PreparedBatch {
    body: String,
    events: Vec<PreparedEvent>,
    /// What each meter (in slug order, under the batch's epoch) reads from each event, worked
    /// out while the event's data is still in cache: `meters` readings per event, in the order
    /// of `events` (one allocation per batch, not one per event).
    observed: Vec<Observed>,
    /// Meters read per event.
    meters: usize,
    rejected: Vec<ItemError>,
    /// The meter epoch the observations were made under.
    epoch: u64,
    /// The numbering `subject_number`s come from (the preparing engine's).
    numbers: Arc<SubjectNumbers>,
    /// When the batch is answered.
    answer: Answer,
}

/// When the writer answers a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Answer {
    /// Once its events are durable and folded into the rollups: a client that got its answer
    /// reads its own events (ingest).
    #[default]
    Visible,
    /// As soon as its events are durable, before they are folded into the rollups (one thread
    /// hop less on the answer's path; for callers that do not read usage in the same breath).
    Durable,
}

impl PreparedBatch {
    /// Answers this batch as soon as its events are durable, before they are folded into the
    /// rollups, so a usage read right after the answer may not count them yet. For recording
    /// paths whose answer does not depend on usage (inspection decisions).
    #[must_use]
    pub fn answer_when_durable(mut self) -> Self {
        self.answer = Answer::Durable;
        self
    }

    /// Parses and validates the events at `spans` of `body` (each span one event's JSON text,
    /// with the index the client knows it by),
    /// against the acceptance window around `now`. Invalid events become errors; the rest go on.
    fn new(
        body: String,
        spans: Vec<(usize, Range<usize>)>,
        now: UnixMs,
        window_ms: i64,
        (epoch, meters): (u64, Vec<SharedRollup>),
        numbers: Arc<SubjectNumbers>,
    ) -> Self {
        let mut events = Vec::with_capacity(spans.len());
        let mut observed = Vec::with_capacity(spans.len() * meters.len());
        let mut rejected = Vec::new();
        for (index, span) in spans {
            let text = body.get(span.clone()).unwrap_or("");
            let parsed = EventRef::parse(text, now).and_then(|e| {
                event::check_window(e.time, now, window_ms)?;
                Ok(e)
            });
            match parsed {
                Ok(event) => {
                    observed.extend(meters.iter().map(|m| Observed::of(m.meter(), &event)));
                    let shard = shard_of(&event.subject);
                    events.push(PreparedEvent {
                        index,
                        shard,
                        subject_number: numbers.number(shard, &event.subject),
                        session: SessionEvent::of(&event),
                        time: event.time,
                        subject: Text::of(&event.subject, &body),
                        key: dedup::identity(&event),
                        fp: dedup::fingerprint(&event),
                        span,
                    });
                }
                Err(e) => rejected.push(item_error(index, id_hint(text), &e)),
            }
        }
        PreparedBatch {
            body,
            events,
            observed,
            meters: meters.len(),
            rejected,
            epoch,
            numbers,
            answer: Answer::Visible,
        }
    }

    /// Adds an error for an item that could not even be split out of the body.
    pub fn reject(&mut self, index: usize, error: &EventError) {
        self.rejected.push(item_error(index, None, error));
    }

    /// Number of events that will go to the writer.
    pub fn valid_len(&self) -> usize {
        self.events.len()
    }
}

fn item_error(index: usize, id: Option<String>, e: &EventError) -> ItemError {
    ItemError {
        index,
        id,
        code: e.code(),
        message: e.to_string(),
    }
}

/// Best effort `id` of an event that failed validation, for the error report.
fn id_hint(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<serde_json::Value>,
    }
    let parsed: IdOnly = serde_json::from_str(text).ok()?;
    match parsed.id? {
        serde_json::Value::String(s) => Some(s.chars().take(256).collect()),
        other => Some(other.to_string().chars().take(256).collect()),
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer hands back for a batch: the outcome, and the batch itself so that its
/// memory is freed (or reused) by the submitter's thread rather than the writer's (`None` for
/// a batch answered when durable: the apply thread still needs it).
type Done = (BatchOutcome, Option<PreparedBatch>);

/// A batch in a group commit, with its answer until it is sent.
type Queued = (PreparedBatch, Option<Reply<Done>>);

/// A batch queued for the writer; resolves once it is durable.
pub struct Pending {
    rx: oneshot::Receiver<Result<Done, StoreError>>,
}

impl Pending {
    /// Waits (async) for the outcome.
    pub async fn outcome(self) -> Result<BatchOutcome, StoreError> {
        let (outcome, _batch) = self.rx.await.map_err(|_| StoreError::WriterStopped)??;
        Ok(outcome)
    }

    /// Waits (blocking) for the outcome and returns the batch's body buffer for reuse.
    pub fn blocking_outcome(self) -> Result<(BatchOutcome, String), StoreError> {
        let (outcome, batch) = self
            .rx
            .blocking_recv()
            .map_err(|_| StoreError::WriterStopped)??;
        let mut body = batch.map(|b| b.body).unwrap_or_default();
        body.clear();
        Ok((outcome, body))
    }
}

enum Command {
    Ingest(PreparedBatch, Reply<Done>),
    PutMeter(Box<Meter>, Reply<bool>),
    DeleteMeter(MeterSlug, Reply<bool>),
}

/// The session gauge, shared between the apply thread and readers.
type SharedSessions = Arc<RwLock<SessionBook>>;

/// A meter and its usage, shared between the writer and readers.
pub type SharedRollup = Arc<MeterUsage>;
type RollupMap = Arc<RwLock<MeterMap>>;

/// Every meter's usage, and an epoch that changes whenever a meter is created, replaced or
/// deleted (observations made under another epoch are not used).
#[derive(Default)]
struct MeterMap {
    epoch: u64,
    by_slug: BTreeMap<MeterSlug, SharedRollup>,
}

impl MeterMap {
    fn snapshot(&self) -> (u64, Vec<SharedRollup>) {
        (self.epoch, self.by_slug.values().cloned().collect())
    }
}

/// Why a meter change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MeterChangeError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `METERS_MAX` reached.
    #[error("at most {max} meters")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// Why a usage query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No such meter.
    #[error("meter `{0}` not found")]
    MeterNotFound(String),
    /// The query is invalid.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// Reading stored events failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One stored event, as received.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Ingest sequence number.
    pub seq: u64,
    /// When its group commit was made durable.
    pub committed: UnixMs,
    /// The raw CloudEvent JSON.
    pub raw: String,
}

/// One page of stored events.
#[derive(Clone, Debug, Default)]
pub struct EventPage {
    /// Events in ingest order.
    pub events: Vec<StoredEvent>,
    /// Pass as `after_seq` for the next page; `None` on the last page.
    pub next_after: Option<u64>,
}

/// One accepted event as read back from the log, in order.
#[derive(Clone, Debug)]
pub struct LoggedEvent {
    /// Ingest sequence number (increasing in log order).
    pub seq: u64,
    /// The event's time (as stored with it).
    pub time: UnixMs,
    /// The raw CloudEvent JSON.
    pub raw: String,
}

/// One page of the accepted-event log.
#[derive(Clone, Debug, Default)]
pub struct LogPage {
    /// Events in log order.
    pub events: Vec<LoggedEvent>,
    /// The sequence number of the last event of the log when the page was read (0: empty).
    pub last_seq: u64,
}

/// A meter's definition and counters, for listings.
#[derive(Clone, Debug)]
pub struct MeterInfo {
    /// The meter.
    pub meter: Meter,
    /// What it has counted.
    pub stats: RollupStats,
}

/// The running engine of one data directory.
pub struct Engine {
    tx: Option<Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    rollups: RollupMap,
    subject_numbers: Arc<SubjectNumbers>,
    sessions: SharedSessions,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    dir: PathBuf,
    _lock: std::fs::File,
}

impl Engine {
    /// Opens a data directory: takes its lock, loads meters, rebuilds the dedup index and the
    /// rollups from every stored frame, and starts the writer.
    pub fn open(
        dir: &Path,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, StoreError> {
        let dir = crate::prepare_dir(dir)?;
        let lock = crate::lock_dir(&dir)?;
        let conn = crate::open_db(&dir)?;
        // The writer's commits do not copy the WAL into the database: a checkpointer thread
        // does, in the background, unless it falls behind (see `Writer::checkpoint`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Checkpointer::start(&dir)?;
        let now = clock.now();
        let cutoff = UnixMs(now.0.saturating_sub(config.acceptance_window_ms));
        let mut rollups: Vec<MeterUsage> = meters::load_all(&conn)?
            .into_iter()
            .map(MeterUsage::new)
            .collect();
        let mut index = Index::new();
        let mut sessions = SessionBook::new(config.session_timeout_ms);
        replay(&conn, Some(&mut index), Some(&mut sessions), &mut rollups)?;
        index.prune_before(cutoff);
        sessions.prune_before(cutoff);
        let sessions: SharedSessions = Arc::new(RwLock::new(sessions));
        metrics
            .dedup_identities
            .set(i64::try_from(index.len()).unwrap_or(i64::MAX));
        let next_seq = frames::next_event_seq(&conn)?;
        let map: RollupMap = Arc::new(RwLock::new(MeterMap {
            epoch: 0,
            by_slug: rollups
                .into_iter()
                .map(|r| (r.meter().slug.clone(), Arc::new(r)))
                .collect(),
        }));
        let subject_numbers = Arc::new(SubjectNumbers::default());
        let (tx, rx) = crossbeam_channel::bounded(WRITER_QUEUE_BATCHES_MAX);
        let writer = Writer {
            conn,
            apply: None,
            frames: FrameSet::default(),
            checkpointer,
            wal_bytes: 0,
            index,
            next_seq,
            rollups: Arc::clone(&map),
            subject_numbers: Arc::clone(&subject_numbers),
            sessions: Arc::clone(&sessions),
            metrics: Arc::clone(&metrics),
            clock: Arc::clone(&clock),
            config,
            last_prune: now,
        };
        let handle = std::thread::Builder::new()
            .name("tollgate-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Io {
                path: dir.clone(),
                source: e,
            })?;
        Ok(Engine {
            tx: Some(tx),
            writer: Some(handle),
            rollups: map,
            subject_numbers,
            sessions,
            metrics,
            clock,
            config,
            dir,
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings in force.
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// The clock.
    pub fn now(&self) -> UnixMs {
        self.clock.now()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Prepares a batch against this engine's clock and window.
    pub fn prepare(&self, body: String, spans: Vec<(usize, Range<usize>)>) -> PreparedBatch {
        let meters = self.rollups.read().snapshot();
        PreparedBatch::new(
            body,
            spans,
            self.clock.now(),
            self.config.acceptance_window_ms,
            meters,
            Arc::clone(&self.subject_numbers),
        )
    }

    fn sender(&self) -> Result<&Sender<Command>, StoreError> {
        self.tx.as_ref().ok_or(StoreError::WriterStopped)
    }

    /// Queues a batch, waiting for room in the queue. The receiver yields the outcome once the
    /// batch is durable.
    pub fn submit(&self, batch: PreparedBatch) -> Result<Pending, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Command::Ingest(batch, reply))
            .map_err(|_| StoreError::WriterStopped)?;
        self.metrics.queue_depth.set(self.queue_len());
        Ok(Pending { rx })
    }

    /// Queues a batch if there is room; `Err(Busy)` otherwise.
    pub fn try_submit(&self, batch: PreparedBatch) -> Result<Pending, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.sender().map_err(SubmitError::Store)?;
        match tx.try_send(Command::Ingest(batch, reply)) {
            Ok(()) => {
                self.metrics.queue_depth.set(self.queue_len());
                Ok(Pending { rx })
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                Err(SubmitError::Store(StoreError::WriterStopped))
            }
        }
    }

    fn queue_len(&self) -> i64 {
        self.tx
            .as_ref()
            .map_or(0, |t| i64::try_from(t.len()).unwrap_or(i64::MAX))
    }

    /// Ingests a batch and waits until it is durable (blocking; for CLI and tests).
    pub fn ingest_blocking(&self, batch: PreparedBatch) -> Result<BatchOutcome, StoreError> {
        Ok(self.submit(batch)?.blocking_outcome()?.0)
    }

    /// Creates or replaces a meter; a new definition is backfilled from every stored event
    /// before it becomes visible. Returns true when the meter is new.
    pub fn put_meter_blocking(&self, meter: Meter) -> Result<bool, MeterChangeError> {
        let exists = self.rollups.read().by_slug.contains_key(&meter.slug);
        if !exists && self.rollups.read().by_slug.len() >= METERS_MAX {
            return Err(MeterChangeError::TooMany { max: METERS_MAX });
        }
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Command::PutMeter(Box::new(meter), reply))
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(rx
            .blocking_recv()
            .map_err(|_| StoreError::WriterStopped)??)
    }

    /// Deletes a meter. Returns false when it did not exist. Raw events are untouched.
    pub fn delete_meter_blocking(&self, slug: MeterSlug) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Command::DeleteMeter(slug, reply))
            .map_err(|_| StoreError::WriterStopped)?;
        rx.blocking_recv().map_err(|_| StoreError::WriterStopped)?
    }

    /// A meter and its counters.
    pub fn meter(&self, slug: &MeterSlug) -> Option<MeterInfo> {
        let r = self.rollups.read().by_slug.get(slug).cloned()?;
        Some(MeterInfo {
            meter: r.meter().clone(),
            stats: r.stats(),
        })
    }

    /// Every meter, by slug.
    pub fn meters(&self) -> Vec<MeterInfo> {
        let all: Vec<SharedRollup> = self.rollups.read().by_slug.values().cloned().collect();
        all.iter()
            .map(|r| MeterInfo {
                meter: r.meter().clone(),
                stats: r.stats(),
            })
            .collect()
    }

    /// Answers a usage query.
    pub fn usage(&self, slug: &MeterSlug, query: &UsageQuery) -> Result<Vec<UsageRow>, QueryError> {
        self.usage_runs(slug, query)
            .map(crate::usage::SubjectRuns::into_rows)
    }

    /// [`Engine::usage`] as each subject's run of rows, in subject order, so a writer of the
    /// answer handles each subject once, not once per row, and no row is moved first.
    pub fn usage_runs(
        &self,
        slug: &MeterSlug,
        query: &UsageQuery,
    ) -> Result<crate::usage::SubjectRuns, QueryError> {
        let rollup = self
            .rollups
            .read()
            .by_slug
            .get(slug)
            .cloned()
            .ok_or_else(|| QueryError::MeterNotFound(slug.to_string()))?;
        Ok(rollup.query_runs(query)?)
    }

    /// Sessions of `subject` open at `t` (the session gauge).
    pub fn open_sessions(&self, subject: &str, t: UnixMs) -> u64 {
        self.sessions.read().open_at(subject, t)
    }

    /// The peak of open sessions of `subject` in each window between consecutive `bounds`.
    pub fn session_peaks(&self, subject: &str, bounds: &[UnixMs]) -> Vec<WindowPeak> {
        self.sessions.read().peaks(subject, bounds)
    }

    /// The stored events of `subject` that `meter` counted with time in `span`, in ingest
    /// order, after sequence number `after_seq`, at most `limit` of them; with the cursor of
    /// the next page. Scans the frames whose time range overlaps `span` (raw events are kept in
    /// ingest order, not by subject). An event is parsed only when its text holds the subject
    /// literally or holds an escape (JSON may spell any character as `\uXXXX`).
    pub fn events_behind(
        &self,
        meter: &MeterSlug,
        subject: &str,
        from: UnixMs,
        to: UnixMs,
        after_seq: u64,
        limit: usize,
    ) -> Result<EventPage, QueryError> {
        let meter = self
            .rollups
            .read()
            .by_slug
            .get(meter)
            .map(|r| r.meter().clone())
            .ok_or_else(|| QueryError::MeterNotFound(meter.to_string()))?;
        let path = self.dir.join(crate::DB_FILE);
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::open(&path, e))?;
        let mut page = EventPage::default();
        frames::for_each_frame_in(&conn, from, to, after_seq, |frame, committed| {
            frame.for_each_event(|seq, time, raw| {
                if seq <= after_seq
                    || page.next_after.is_some()
                    || time < from
                    || time >= to
                    || !(raw.contains(subject) || raw.contains('\\'))
                {
                    return Ok(());
                }
                let event = Event::parse(raw, time)
                    .map_err(|e| StoreError::Corrupt(format!("stored event {seq}: {e}")))?;
                if event.subject.as_str() != subject
                    || !matches!(Observed::of(&meter, &event), Observed::Counted { .. })
                {
                    return Ok(());
                }
                if page.events.len() == limit {
                    page.next_after = page.events.last().map(|e| e.seq);
                    return Ok(());
                }
                page.events.push(StoredEvent {
                    seq,
                    committed,
                    raw: raw.to_owned(),
                });
                Ok(())
            })?;
            Ok(page.next_after.is_none())
        })?;
        Ok(page)
    }

    /// Recomputes usage from the raw events, independently of the live rollups (for
    /// reconciliation): fresh rollups of the `meters` named, folded from every stored event
    /// whose time is in `[from, to)` and whose subject is in `subjects`. Also returns, per
    /// subject, `(event time, commit instant)` of the kept events committed after `late_after`.
    pub fn recompute(
        &self,
        meters: &[MeterSlug],
        subjects: &std::collections::HashSet<String>,
        from: UnixMs,
        to: UnixMs,
        late_after: UnixMs,
    ) -> Result<Recomputed, StoreError> {
        let mut fresh: Vec<MeterUsage> = {
            let map = self.rollups.read();
            meters
                .iter()
                .filter_map(|slug| map.by_slug.get(slug))
                .map(|r| MeterUsage::new(r.meter().clone()))
                .collect()
        };
        let path = self.dir.join(crate::DB_FILE);
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::open(&path, e))?;
        let mut late = LateEvents::new();
        let mut events = 0u64;
        parse_and_fold(
            |send| {
                frames::for_each_frame_in(&conn, from, to, 0, |frame, committed| {
                    // A closed channel means the parse thread stopped on an error.
                    Ok(send.send((frame, committed)).is_ok())
                })
            },
            &mut fresh,
            |e| e.time >= from && e.time < to && subjects.contains(e.subject.as_ref()),
            |event, committed| {
                events += 1;
                if committed > late_after {
                    late.entry(event.subject.to_string())
                        .or_default()
                        .push((event.time, committed));
                }
            },
        )?;
        Ok(Recomputed {
            usage: fresh
                .into_iter()
                .map(|u| (u.meter().slug.clone(), u))
                .collect(),
            late,
            events,
        })
    }

    /// Fault injection for reconciliation tests (`serve --fault-rollup-event`, hidden): folds
    /// one event into the live rollups without storing it, as if a rollup had been altered
    /// behind the raw events' back. Never used outside tests.
    pub fn inject_rollup_fault(&self, raw: &str, time: UnixMs) -> Result<(), StoreError> {
        let event = Event::parse(raw, time)
            .map_err(|e| StoreError::Corrupt(format!("fault event: {e}")))?;
        let all: Vec<SharedRollup> = self.rollups.read().by_slug.values().cloned().collect();
        for usage in all {
            let observed = Observed::of(usage.meter(), &event);
            usage
                .shard_mut(shard_of(event.subject.as_str()))
                .apply_observed(event.subject.as_str(), event.time, u64::MAX, &observed);
        }
        Ok(())
    }

    /// Accepted events with a sequence number above `after_seq`, in log order, at most
    /// `limit`: a reader that keeps a cursor (the Orb forwarder) reads the log with this. The
    /// writer assigns sequence numbers in commit order and a reader sees whole commits, so no
    /// event below one already read can appear later.
    pub fn events_after(&self, after_seq: u64, limit: usize) -> Result<LogPage, StoreError> {
        let path = self.dir.join(crate::DB_FILE);
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::open(&path, e))?;
        let mut page = LogPage {
            last_seq: frames::next_event_seq(&conn)?.saturating_sub(1),
            ..LogPage::default()
        };
        if limit == 0 {
            return Ok(page);
        }
        frames::for_each_frame_after(&conn, after_seq, |frame, _committed| {
            frame.for_each_event(|seq, time, raw| {
                if seq > after_seq && page.events.len() < limit {
                    page.events.push(LoggedEvent {
                        seq,
                        time,
                        raw: raw.to_owned(),
                    });
                }
                Ok(())
            })?;
            Ok(page.events.len() < limit)
        })?;
        if let Some(last) = page.events.last() {
            page.last_seq = page.last_seq.max(last.seq);
        }
        Ok(page)
    }

    /// Stops the writer after it has answered everything queued, and waits for it.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.tx = None;
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!("writer thread panicked");
        }
    }

    /// Whether the writer is running.
    pub fn is_ready(&self) -> bool {
        self.writer.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Why a batch could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The writer queue is full; retry later.
    #[error("the writer queue is full")]
    Busy,
    /// Storage is unavailable.
    #[error(transparent)]
    Store(StoreError),
}

/// Per subject, `(event time, commit instant)` of events committed after some instant.
pub type LateEvents = BTreeMap<String, Vec<(UnixMs, UnixMs)>>;

/// Usage recomputed from raw events by [`Engine::recompute`].
pub struct Recomputed {
    /// Fresh rollups, by meter.
    pub usage: BTreeMap<MeterSlug, MeterUsage>,
    /// Per subject, `(event time, commit instant)` of events committed after the instant asked.
    pub late: LateEvents,
    /// Events folded.
    pub events: u64,
}

/// Stored events parsed and read by every meter, on their way from the parse thread to the
/// apply thread of a replay.
type ReplayChunk = (UnixMs, Vec<Replayed>);

/// What the apply stage of a replay needs of one stored event, read by the parse stage.
struct Replayed {
    seq: u64,
    time: UnixMs,
    subject: Box<str>,
    /// What each meter read, in the order of the rollups.
    observed: Vec<Observed>,
    session: Option<SessionEvent>,
}

/// Frames (or parsed chunks) in flight between the threads of a replay.
const REPLAY_QUEUE_MAX: usize = 4;

/// Replays every stored frame: identities into `index` (when given), events into `rollups`.
///
/// Three stages, as in ingest: this thread reads frames and rebuilds the index, a parse thread
/// decompresses and parses events and reads them with every meter, an apply thread folds them
/// into the rollups.
fn replay(
    conn: &Connection,
    mut index: Option<&mut Index>,
    sessions: Option<&mut SessionBook>,
    rollups: &mut [MeterUsage],
) -> Result<u64, StoreError> {
    let need_events = !rollups.is_empty() || sessions.is_some();
    let mut events = 0u64;
    let mut sessions = sessions;
    parse_and_fold(
        |send| {
            frames::for_each_frame(conn, |frame| {
                if let Some(index) = index.as_deref_mut() {
                    let keys = frame.keys()?;
                    index.reserve(keys.len());
                    for (key, fp, time) in keys {
                        index.insert(key, fp, time);
                    }
                }
                events += u64::from(frame.event_count);
                if need_events {
                    // A closed channel means the parse thread stopped on an error, reported
                    // by `parse_and_fold`.
                    let _ = send.send((frame, UnixMs(0)));
                }
                Ok(())
            })
        },
        rollups,
        |_| true,
        |event, _| {
            if let Some(book) = sessions.as_deref_mut()
                && let Some(s) = &event.session
            {
                book.observe(&event.subject, s, event.time);
            }
        },
    )?;
    Ok(events)
}

/// The parse and apply stages of a replay: `read` sends frames (with their commit instant) on
/// this thread; a parse thread decompresses and parses their events, keeps those `keep`
/// accepts and reads them with every meter; an apply thread folds them into `rollups` and
/// shows each to `on_event` with its frame's commit instant.
fn parse_and_fold(
    read: impl FnOnce(&Sender<(frames::StoredFrame, UnixMs)>) -> Result<(), StoreError>,
    rollups: &mut [MeterUsage],
    keep: impl Fn(&EventRef<'_>) -> bool + Send,
    mut on_event: impl FnMut(&Replayed, UnixMs) + Send,
) -> Result<(), StoreError> {
    let meters: Vec<Meter> = rollups.iter().map(|r| r.meter().clone()).collect();
    std::thread::scope(|scope| -> Result<(), StoreError> {
        let (frame_tx, frame_rx) =
            crossbeam_channel::bounded::<(frames::StoredFrame, UnixMs)>(REPLAY_QUEUE_MAX);
        let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<ReplayChunk>(REPLAY_QUEUE_MAX);
        let parser = scope.spawn(move || -> Result<(), StoreError> {
            for (frame, committed) in frame_rx {
                let mut chunk = Vec::with_capacity(frame.event_count as usize);
                frame.for_each_event(|seq, time, raw| {
                    let event = EventRef::parse(raw, time)
                        .map_err(|e| StoreError::Corrupt(format!("stored event {seq}: {e}")))?;
                    if keep(&event) {
                        chunk.push(Replayed {
                            seq,
                            time: event.time,
                            subject: event.subject.as_ref().into(),
                            observed: meters.iter().map(|m| Observed::of(m, &event)).collect(),
                            session: SessionEvent::of(&event),
                        });
                    }
                    Ok(())
                })?;
                if chunk_tx.send((committed, chunk)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let applier = scope.spawn(move || {
            for (committed, chunk) in chunk_rx {
                for event in &chunk {
                    for (rollup, o) in rollups.iter_mut().zip(&event.observed) {
                        rollup.apply_observed_mut(&event.subject, event.time, event.seq, o);
                    }
                    on_event(event, committed);
                }
            }
        });
        let read = read(&frame_tx);
        drop(frame_tx);
        let parsed = parser.join().unwrap_or_else(|_| {
            Err(StoreError::Corrupt(
                "the replay parse thread panicked".into(),
            ))
        });
        if applier.join().is_err() {
            return Err(StoreError::Corrupt(
                "the replay apply thread panicked".into(),
            ));
        }
        parsed?;
        read
    })
}

/// Work for the apply thread: a committed group to fold into the rollups and answer, or a
/// barrier the writer waits on before it changes meters.
enum Applied {
    Group {
        group: Vec<Queued>,
        verdicts: Vec<Vec<Verdict>>,
        first_seq: u64,
    },
    Barrier(oneshot::Sender<()>),
}

/// Committed groups waiting for the apply thread. Small: it only lets the writer commit the
/// next group while the previous one is folded in.
const APPLY_QUEUE_GROUPS_MAX: usize = 2;

/// Folds committed groups into the rollups and answers their batches. Runs beside the writer
/// so that committing group N+1 overlaps with folding group N; answers still wait for both,
/// so a client that got its answer reads its own events.
fn apply_loop(
    rx: Receiver<Applied>,
    rollups: RollupMap,
    numbers: Arc<SubjectNumbers>,
    sessions: SharedSessions,
    metrics: Arc<Metrics>,
) {
    for work in rx {
        match work {
            Applied::Barrier(done) => {
                let _ = done.send(());
            }
            Applied::Group {
                mut group,
                verdicts,
                first_seq,
            } => {
                apply_to_rollups(&rollups, &numbers, &mut group, &verdicts, first_seq);
                apply_to_sessions(&sessions, &group, &verdicts);
                for ((batch, reply), vs) in group.into_iter().zip(verdicts) {
                    let outcome = outcome_of(&batch, &vs);
                    metrics.count("accepted", outcome.accepted);
                    metrics.count("duplicate", outcome.duplicates);
                    metrics.count("conflict", outcome.conflicts);
                    metrics.count("rejected", outcome.rejected);
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok((outcome, Some(batch))));
                    }
                }
            }
        }
    }
}

/// Folds the accepted session events of a group into the session gauge (one write lock per
/// group, taken only when the group holds session events).
fn apply_to_sessions(sessions: &SharedSessions, group: &[Queued], verdicts: &[Vec<Verdict>]) {
    let mut book = None;
    for ((batch, _), vs) in group.iter().zip(verdicts) {
        for (ev, v) in batch.events.iter().zip(vs) {
            if let (Some(s), Verdict::Accepted) = (&ev.session, v) {
                book.get_or_insert_with(|| sessions.write())
                    .observe(ev.subject(batch), s, ev.time);
            }
        }
    }
}

/// An accepted event of a group as its rollup shard folds it, copied out of its batch while
/// the group is walked in order: each shard's events then lie one after another (with their
/// readings in [`ShardFolds::observed`]) rather than scattered through the batches, where the
/// fold spent most of its own time waiting for memory.
#[derive(Clone, Copy)]
struct Fold<'g> {
    batch: &'g PreparedBatch,
    /// Read only for the subject's text the first time a rollup sees its number, or to read
    /// a stale event again.
    ev: &'g PreparedEvent,
    seq: u64,
    subject_number: u32,
    time: UnixMs,
    /// Whether the batch's readings and subject numbers are this engine's, current ones;
    /// otherwise the event is read again from its text.
    current: bool,
}

/// One rollup shard's part of a group: its accepted events in order, and the readings of the
/// current ones (`meters` per event, in the order of the current events).
#[derive(Default)]
struct ShardFolds<'g> {
    events: Vec<Fold<'g>>,
    observed: Vec<Observed>,
}

fn apply_to_rollups(
    rollups: &RollupMap,
    numbers: &Arc<SubjectNumbers>,
    group: &mut [Queued],
    verdicts: &[Vec<Verdict>],
    first_seq: u64,
) {
    let (epoch, rollups) = rollups.read().snapshot();
    if rollups.is_empty() {
        return;
    }
    // The readings move out of their batches (they are not read again once folded).
    let readings: Vec<Vec<Observed>> = group
        .iter_mut()
        .map(|(batch, _)| std::mem::take(&mut batch.observed))
        .collect();
    // Each shard's runs are sized exactly before they are filled: grown by pushing, they were
    // reallocated and copied several times per group, on fresh pages.
    let mut accepted = [0usize; ROLLUP_SHARDS];
    for ((batch, _), vs) in group.iter().zip(verdicts) {
        for (ev, v) in batch.events.iter().zip(vs) {
            if *v == Verdict::Accepted
                && let Some(n) = accepted.get_mut(ev.shard)
            {
                *n += 1;
            }
        }
    }
    let mut by_shard: Vec<ShardFolds<'_>> = accepted
        .iter()
        .map(|&n| ShardFolds {
            events: Vec::with_capacity(n),
            observed: Vec::with_capacity(n * rollups.len()),
        })
        .collect();
    let mut seq = first_seq;
    for (((batch, _), vs), observed) in group.iter().zip(verdicts).zip(readings) {
        let current = batch.epoch == epoch
            && Arc::ptr_eq(&batch.numbers, numbers)
            && batch.meters == rollups.len();
        let meters = if current { batch.meters } else { 0 };
        let mut observed = observed.into_iter();
        for (ev, v) in batch.events.iter().zip(vs) {
            let readings = observed.by_ref().take(meters);
            if *v != Verdict::Accepted {
                readings.for_each(drop);
                continue;
            }
            let Some(shard) = by_shard.get_mut(ev.shard) else {
                continue;
            };
            shard.events.push(Fold {
                batch,
                ev,
                seq,
                subject_number: ev.subject_number,
                time: ev.time,
                current,
            });
            shard.observed.extend(readings);
            seq += 1;
        }
    }
    // Shard by shard, each event once into every meter: its data is read from memory once,
    // not once per meter. A large group is folded on one thread per core, each taking its own
    // shards (locks of different shards never meet), so that its batches are answered sooner
    // when the cores have room: HTTP ingest waits for this fold, and is latency-bound.
    let events = usize::try_from(seq - first_seq).unwrap_or(usize::MAX);
    let threads = if events >= APPLY_PARALLEL_EVENTS_MIN {
        crate::usage::cores().min(APPLY_THREADS_MAX)
    } else {
        1
    };
    let shards: Vec<(usize, &ShardFolds<'_>)> = by_shard
        .iter()
        .enumerate()
        .filter(|(_, folds)| !folds.events.is_empty())
        .collect();
    crate::usage::in_parallel(&shards, threads, |run| {
        for (shard, folds) in run {
            fold_shard(&rollups, *shard, folds);
        }
    });
}

/// Events in a group from which the apply thread folds it on more than one thread.
const APPLY_PARALLEL_EVENTS_MIN: usize = 4_096;
/// Frame bytes the writer commits before it copies the WAL into the database itself when the
/// checkpointer thread has not (the WAL stays near this size under steady ingest).
const WAL_BYTES_UNCHECKPOINTED_MAX: usize = 64 << 20;

/// Most threads one group is folded on.
const APPLY_THREADS_MAX: usize = 4;

/// Folds the accepted events of one rollup shard into that shard of every meter.
fn fold_shard(rollups: &[SharedRollup], shard: usize, folds: &ShardFolds<'_>) {
    let mut shards: Vec<_> = rollups.iter().map(|r| r.shard_mut(shard)).collect();
    let meters = shards.len();
    let mut readings = folds.observed.chunks_exact(meters.max(1));
    for fold in &folds.events {
        if fold.current {
            let Some(observed) = readings.next() else {
                continue;
            };
            for (r, observed) in shards.iter_mut().zip(observed) {
                let subject = || fold.ev.subject(fold.batch);
                r.apply_observed_numbered(
                    fold.subject_number,
                    subject,
                    fold.time,
                    fold.seq,
                    observed,
                );
            }
        } else if let Some(event) = fold.ev.reparse(fold.batch) {
            // The meters changed since the batch was read (or another engine read it, whose
            // meters and subject numbers are not these): read the event again.
            for r in &mut shards {
                r.apply(&event, fold.seq);
            }
        }
    }
}

struct Writer {
    conn: Connection,
    /// The apply thread's queue; `None` once shut down.
    apply: Option<Sender<Applied>>,
    /// Reused across group commits: the frames being built and their compressed forms.
    frames: FrameSet,
    checkpointer: Checkpointer,
    /// Frame bytes committed since this connection last saw the whole WAL copied.
    wal_bytes: usize,
    index: Index,
    next_seq: u64,
    rollups: RollupMap,
    subject_numbers: Arc<SubjectNumbers>,
    sessions: SharedSessions,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    last_prune: UnixMs,
}

impl Writer {
    /// Waits until every committed group is folded into the rollups, so that a meter built
    /// from the stored frames is not then folded into a second time.
    fn drain_apply(&self) {
        if let Some(apply) = &self.apply {
            let (done, wait) = oneshot::channel();
            if apply.send(Applied::Barrier(done)).is_ok() {
                let _ = wait.blocking_recv();
            }
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        let (apply_tx, apply_rx) = crossbeam_channel::bounded(APPLY_QUEUE_GROUPS_MAX);
        let rollups = Arc::clone(&self.rollups);
        let numbers = Arc::clone(&self.subject_numbers);
        let sessions = Arc::clone(&self.sessions);
        let metrics = Arc::clone(&self.metrics);
        let applier = std::thread::Builder::new()
            .name("tollgate-apply".into())
            .spawn(move || apply_loop(apply_rx, rollups, numbers, sessions, metrics));
        match applier {
            Ok(handle) => {
                self.apply = Some(apply_tx);
                self.serve(&rx);
                self.apply = None;
                if handle.join().is_err() {
                    tracing::error!("apply thread panicked");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot start the apply thread"),
        }
    }

    fn serve(&mut self, rx: &Receiver<Command>) {
        let mut pending: Option<Command> = None;
        loop {
            let command = match pending.take() {
                Some(c) => c,
                None => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => return,
                },
            };
            match command {
                Command::Ingest(batch, reply) => {
                    let mut group = vec![(batch, Some(reply))];
                    let mut events = group[0].0.events.len();
                    while events < GROUP_COMMIT_EVENTS_MAX {
                        match rx.try_recv() {
                            Ok(Command::Ingest(b, r)) => {
                                events += b.events.len();
                                group.push((b, Some(r)));
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.metrics
                        .queue_depth
                        .set(i64::try_from(rx.len()).unwrap_or(i64::MAX));
                    self.commit_group(group);
                }
                Command::PutMeter(meter, reply) => {
                    self.drain_apply();
                    let _ = reply.send(self.put_meter(*meter));
                }
                Command::DeleteMeter(slug, reply) => {
                    self.drain_apply();
                    let result = meters::delete(&self.conn, &slug);
                    if matches!(result, Ok(true)) {
                        let mut map = self.rollups.write();
                        map.by_slug.remove(&slug);
                        map.epoch += 1;
                    }
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn commit_group(&mut self, mut group: Vec<Queued>) {
        let started = Instant::now();
        let now = self.clock.now();
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        let mut verdicts: Vec<Vec<Verdict>> = Vec::with_capacity(group.len());
        for (batch, _) in &group {
            let mut vs = Vec::with_capacity(batch.events.len());
            let keys = batch.events.iter().map(|ev| (ev.key, ev.fp, ev.time));
            self.index.offer_all(keys, |verdict| vs.push(verdict));
            for (ev, verdict) in batch.events.iter().zip(&vs) {
                if *verdict == Verdict::Accepted {
                    let raw = batch.body.get(ev.span.clone()).unwrap_or("");
                    frames.push(ev.key, ev.fp, ev.time, raw);
                }
            }
            verdicts.push(vs);
        }
        let first_seq = self.next_seq;
        let accepted = frames.len();
        if accepted > 0
            && let Err(e) = self.write_frames(&mut frames, first_seq, now)
        {
            tracing::error!(error = %e, "group commit failed; nothing in it was accepted");
            for ((batch, _), vs) in group.iter().zip(&verdicts) {
                for (ev, v) in batch.events.iter().zip(vs) {
                    if *v == Verdict::Accepted {
                        self.index.forget(ev.key);
                    }
                }
            }
            for reply in group.into_iter().filter_map(|(_, r)| r) {
                let _ = reply.send(Err(clone_err(&e)));
            }
            self.frames = frames;
            return;
        }
        self.next_seq += u64::from(accepted);
        self.frames = frames;
        for ((batch, reply), vs) in group.iter_mut().zip(&verdicts) {
            if batch.answer == Answer::Durable
                && let Some(reply) = reply.take()
            {
                let _ = reply.send(Ok((outcome_of(batch, vs), None)));
            }
        }
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .dedup_identities
            .set(i64::try_from(self.index.len()).unwrap_or(i64::MAX));
        if let Some(apply) = &self.apply {
            // The apply thread only stops after the writer; a send cannot fail while it runs.
            let _ = apply.send(Applied::Group {
                group,
                verdicts,
                first_seq,
            });
        }
        if now.0 - self.last_prune.0 > PRUNE_INTERVAL_MS {
            let cutoff = UnixMs(now.0 - self.config.acceptance_window_ms);
            self.index.prune_before(cutoff);
            self.sessions.write().prune_before(cutoff);
            self.last_prune = now;
        }
    }

    fn write_frames(
        &mut self,
        frames: &mut FrameSet,
        first_seq: u64,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let bytes = frames.insert(&tx, first_seq, now)?;
        tx.commit()?;
        self.metrics.frame_bytes.inc_by(bytes as u64);
        self.checkpoint(bytes);
        Ok(())
    }

    /// After a commit of `bytes`: pokes the checkpointer thread, or, once
    /// [`WAL_BYTES_UNCHECKPOINTED_MAX`] have been committed without this connection seeing the
    /// WAL wholly copied, copies what is left here. SQLite restarts the WAL from its start only
    /// when a write begins with every page of it copied; under steady ingest the background
    /// checkpoint rarely finishes at that moment, and the WAL would grow without end.
    fn checkpoint(&mut self, bytes: usize) {
        self.wal_bytes += bytes;
        if self.wal_bytes < WAL_BYTES_UNCHECKPOINTED_MAX {
            self.checkpointer.poke();
            return;
        }
        let copied = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
        match copied {
            Ok((log, done)) if done >= log => self.wal_bytes = 0,
            // Not all copied (a reader holds an older snapshot): the next commit tries again.
            Ok(_) => {}
            // Busy: the checkpointer thread is at it; the next commit tries again.
            Err(e) => tracing::debug!(error = %e, "WAL checkpoint from the writer deferred"),
        }
    }

    fn put_meter(&mut self, meter: Meter) -> Result<bool, StoreError> {
        let slug = meter.slug.clone();
        let mut built = [MeterUsage::new(meter)];
        replay(&self.conn, None, None, &mut built)?;
        let [rollup] = built;
        meters::upsert(&self.conn, rollup.meter(), self.clock.now())?;
        let mut map = self.rollups.write();
        let previous = map.by_slug.insert(slug, Arc::new(rollup));
        map.epoch += 1;
        Ok(previous.is_none())
    }
}

/// `rusqlite::Error` is not `Clone`; every batch of a failed group gets an equivalent error.
fn clone_err(e: &StoreError) -> StoreError {
    StoreError::Shared {
        code: e.code(),
        message: e.to_string(),
    }
}

fn outcome_of(batch: &PreparedBatch, verdicts: &[Verdict]) -> BatchOutcome {
    let mut out = BatchOutcome {
        rejected: batch.rejected.len(),
        ..BatchOutcome::default()
    };
    out.errors = batch.rejected.clone();
    for (ev, v) in batch.events.iter().zip(verdicts) {
        let message = match v {
            Verdict::Accepted => {
                out.accepted += 1;
                continue;
            }
            Verdict::Duplicate => {
                out.duplicates += 1;
                "already counted: same source and id, same payload"
            }
            Verdict::Conflict => {
                out.conflicts += 1;
                "source and id were already counted with a different payload; the first stays"
            }
        };
        out.errors.push(ItemError {
            index: ev.index,
            id: ev.reparse(batch).map(|e| e.id.into_owned()),
            code: v.code(),
            message: message.into(),
        });
    }
    out.errors.sort_by_key(|e| e.index);
    out
}
