//! sessions: how many sessions a customer has open, now and at its peak in any window.
//!
//! Owns: the session gauge, folded from `session.started` and `session.ended` events matched
//! by `data.session_id` within one subject. A session is open over `[start, end)`, where `end`
//! is its `session.ended` time, or `start + timeout` for a session that never reports its end.
//! Does not own: which events are sessions' (the store feeds [`SessionBook::observe`] with what
//! [`SessionEvent::of`] reads), limits on sessions ([`crate::entitlement`]).
//!
//! Invariants:
//! - Order-independent: the same set of events gives the same gauge whatever order they
//!   arrived in (an end before its start is kept until the start comes), because events are
//!   deduplicated before they get here and each side of a session is set once; a second start
//!   or end of the same session keeps the earliest start and the latest end.
//! - The gauge at an instant counts sessions with `start <= t < end`; a peak over a window is
//!   the most sessions open at one instant inside it.
//! - Memory is bounded by the acceptance window: sessions that ended before it are pruned.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::event::{Attributes, ValueView};
use crate::time::UnixMs;

/// Event type that opens a session.
pub const SESSION_STARTED: &str = "session.started";
/// Event type that closes a session.
pub const SESSION_ENDED: &str = "session.ended";
/// Longest session id kept (bytes); longer ids are cut to this many bytes on a char boundary.
pub const SESSION_ID_BYTES_MAX: usize = 256;
/// Default timeout of a session that never reports its end (ms): 24 hours.
pub const SESSION_TIMEOUT_MS_DEFAULT: i64 = 24 * 3_600_000;

/// Which side of a session an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `session.started`.
    Started,
    /// `session.ended`.
    Ended,
}

/// What the gauge reads from one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEvent {
    /// Start or end.
    pub side: Side,
    /// The session id (`data.session_id`, a string or a number's text).
    pub session: Box<str>,
}

impl SessionEvent {
    /// Reads a session event; `None` for any other event, or one without a usable
    /// `data.session_id`.
    pub fn of<E: Attributes + ?Sized>(event: &E) -> Option<SessionEvent> {
        let side = match event.event_type() {
            SESSION_STARTED => Side::Started,
            SESSION_ENDED => Side::Ended,
            _ => return None,
        };
        let id = match event.data().member("session_id")?.view() {
            ValueView::String(s) if !s.is_empty() => s,
            ValueView::Number(n) => n,
            _ => return None,
        };
        let mut cut = id.len().min(SESSION_ID_BYTES_MAX);
        while !id.is_char_boundary(cut) {
            cut -= 1;
        }
        Some(SessionEvent {
            side,
            session: id[..cut].into(),
        })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: Option<UnixMs>,
    end: Option<UnixMs>,
}

impl Span {
    /// `[start, end)` once the start is known.
    fn interval(&self, timeout_ms: i64) -> Option<(UnixMs, UnixMs)> {
        let start = self.start?;
        let end = self
            .end
            .unwrap_or(UnixMs(start.0.saturating_add(timeout_ms)))
            .max(start);
        Some((start, end))
    }
}

/// One subject's sessions.
#[derive(Debug, Default)]
struct Subject {
    spans: FxHashMap<Box<str>, Span>,
}

/// Every subject's sessions.
#[derive(Debug)]
pub struct SessionBook {
    timeout_ms: i64,
    subjects: FxHashMap<Box<str>, Subject>,
    sessions: usize,
}

/// The peak of one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowPeak {
    /// Window start (inclusive).
    pub start: UnixMs,
    /// Window end (exclusive).
    pub end: UnixMs,
    /// Most sessions open at one instant in the window.
    pub peak: u64,
}

impl SessionBook {
    /// An empty book; sessions without an end close `timeout_ms` after they start.
    pub fn new(timeout_ms: i64) -> SessionBook {
        assert!(timeout_ms > 0, "the session timeout is positive");
        SessionBook {
            timeout_ms,
            subjects: FxHashMap::default(),
            sessions: 0,
        }
    }

    /// The timeout of sessions without an end (ms).
    pub fn timeout_ms(&self) -> i64 {
        self.timeout_ms
    }

    /// Sessions kept, over all subjects.
    pub fn len(&self) -> usize {
        self.sessions
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.sessions == 0
    }

    /// Folds one session event of `subject` at `time` in.
    pub fn observe(&mut self, subject: &str, event: &SessionEvent, time: UnixMs) {
        let s = match self.subjects.get_mut(subject) {
            Some(s) => s,
            None => self.subjects.entry(subject.into()).or_default(),
        };
        let span = match s.spans.get_mut(&event.session) {
            Some(span) => span,
            None => {
                self.sessions += 1;
                s.spans.entry(event.session.clone()).or_default()
            }
        };
        match event.side {
            Side::Started => span.start = Some(span.start.map_or(time, |t| t.min(time))),
            Side::Ended => span.end = Some(span.end.map_or(time, |t| t.max(time))),
        }
    }

    fn intervals(&self, subject: &str) -> impl Iterator<Item = (UnixMs, UnixMs)> + '_ {
        self.subjects
            .get(subject)
            .into_iter()
            .flat_map(|s| s.spans.values())
            .filter_map(|span| span.interval(self.timeout_ms))
    }

    /// Sessions of `subject` open at `t`.
    pub fn open_at(&self, subject: &str, t: UnixMs) -> u64 {
        self.intervals(subject)
            .filter(|(start, end)| *start <= t && t < *end)
            .count() as u64
    }

    /// The peak of open sessions of `subject` in each window of `bounds` (consecutive window
    /// boundaries, ascending: `n + 1` instants make `n` windows).
    pub fn peaks(&self, subject: &str, bounds: &[UnixMs]) -> Vec<WindowPeak> {
        let (Some(first), Some(last)) = (bounds.first(), bounds.last()) else {
            return Vec::new();
        };
        // +1 at each start, -1 at each end; ends sort before starts at the same instant
        // because an interval is half-open.
        let mut changes: BTreeMap<UnixMs, i64> = BTreeMap::new();
        let mut open_before = 0i64;
        for (start, end) in self.intervals(subject) {
            if end <= *first || start >= *last || start == end {
                continue;
            }
            if start <= *first {
                open_before += 1;
            } else {
                *changes.entry(start).or_default() += 1;
            }
            if end < *last {
                *changes.entry(end).or_default() -= 1;
            }
        }
        let mut out = Vec::with_capacity(bounds.len().saturating_sub(1));
        let mut open = open_before;
        let mut points = changes.into_iter().peekable();
        for w in bounds.windows(2) {
            let (ws, we) = (w[0], w[1]);
            // Changes at the window's first instant happen before anything is open in it.
            while let Some((_, delta)) = points.next_if(|(t, _)| *t <= ws) {
                open += delta;
            }
            let mut peak = open;
            while let Some((_, delta)) = points.next_if(|(t, _)| *t < we) {
                open += delta;
                peak = peak.max(open);
            }
            out.push(WindowPeak {
                start: ws,
                end: we,
                peak: u64::try_from(peak).unwrap_or(0),
            });
        }
        out
    }

    /// Drops sessions that closed before `cutoff` (they can no longer change: their events
    /// are outside the acceptance window), and subjects left without sessions.
    pub fn prune_before(&mut self, cutoff: UnixMs) {
        let timeout = self.timeout_ms;
        let mut removed = 0;
        self.subjects.retain(|_, s| {
            s.spans.retain(|_, span| {
                let keep = match (span.interval(timeout), span.end) {
                    (Some((_, end)), _) => end >= cutoff,
                    (None, Some(end)) => end >= cutoff,
                    (None, None) => false,
                };
                removed += usize::from(!keep);
                keep
            });
            !s.spans.is_empty()
        });
        self.sessions -= removed;
    }
}
