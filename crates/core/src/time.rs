//! Time as the core sees it: milliseconds since the Unix epoch, handed in by the caller.
//!
//! The core never reads a clock. The shell implements [`Clock`]; tests use [`FixedClock`].

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z (UTC). Sub-millisecond precision of an event's
/// `time` is kept in the raw event but not used for ordering or windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixMs(pub i64);

/// Milliseconds in one minute, hour and day.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in one day (UTC days; local days are computed with time zones).
pub const DAY_MS: i64 = 86_400_000;

impl UnixMs {
    /// The instant as a `jiff::Timestamp`. Panics only for instants outside jiff's range,
    /// which parsing never produces.
    pub fn to_timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// From a `jiff::Timestamp`, truncating below the millisecond.
    pub fn from_timestamp(ts: jiff::Timestamp) -> Self {
        UnixMs(ts.as_millisecond())
    }

    /// RFC 3339 text in UTC with millisecond precision, e.g. `2026-11-01T00:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_timestamp().to_string()
    }

    /// The whole minute this instant falls in (minutes since the epoch, floored).
    pub fn minute(self) -> i64 {
        self.0.div_euclid(MINUTE_MS)
    }

    /// Whether the instant lies on a whole minute.
    pub fn is_minute_aligned(self) -> bool {
        self.0.rem_euclid(MINUTE_MS) == 0
    }
}

/// Source of the current time. The shell owns the only real one.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> UnixMs;
}

/// A clock that always says the same instant (tests, replays).
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub UnixMs);

impl Clock for FixedClock {
    fn now(&self) -> UnixMs {
        self.0
    }
}
