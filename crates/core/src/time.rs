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

/// Last year [`UnixMs::parse_common`] reads: jiff's timestamps end late on 9999-12-30.
const YEAR_COMMON_MAX: i64 = 9_998;

/// Most digits of a fraction of a second RFC 3339 text may have (nanoseconds), as jiff reads it.
const FRACTION_DIGITS_MAX: usize = 9;

/// Days in `month` (1-12) of the proleptic Gregorian `year`.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a valid date with `year` >= 0 (the civil-from-days inverse in
/// Howard Hinnant's `chrono`-compatible date algorithms, with March as the first month so
/// that the leap day ends the year).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl UnixMs {
    /// The instant as a `jiff::Timestamp`. Panics only for instants outside jiff's range,
    /// which parsing never produces.
    pub fn to_timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// The instant of an RFC 3339 text in the one spelling nearly every sender uses,
    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with a year from 1970 to 9998, read without jiff's general
    /// parser (a fifth of the parse of an event went there). `None` for any other spelling or
    /// an impossible date, which the caller leaves to jiff: it gives the same instant for
    /// every text this reads, and its own error for the rest.
    pub fn parse_common(text: &str) -> Option<UnixMs> {
        let b = text.as_bytes();
        let digits = |at: usize, n: usize| -> Option<i64> {
            let mut v = 0i64;
            for d in b.get(at..at + n)? {
                if !d.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + i64::from(d - b'0');
            }
            Some(v)
        };
        let sep = |at: usize, c: u8| (b.get(at) == Some(&c)).then_some(());
        let year = digits(0, 4)?;
        sep(4, b'-')?;
        let month = digits(5, 2)?;
        sep(7, b'-')?;
        let day = digits(8, 2)?;
        sep(10, b'T')?;
        let hour = digits(11, 2)?;
        sep(13, b':')?;
        let minute = digits(14, 2)?;
        sep(16, b':')?;
        let second = digits(17, 2)?;
        let mut at = 19;
        let mut millis = 0i64;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let from = at;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                if at - from < 3 {
                    millis = millis * 10 + i64::from(b.get(at).copied().unwrap_or(b'0') - b'0');
                }
                at += 1;
            }
            let n = at - from;
            if n == 0 || n > FRACTION_DIGITS_MAX {
                return None;
            }
            for _ in n..3 {
                millis *= 10;
            }
        }
        if at + 1 != b.len() || b.get(at) != Some(&b'Z') {
            return None;
        }
        if !(1970..=YEAR_COMMON_MAX).contains(&year)
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(UnixMs(
            days * DAY_MS + hour * HOUR_MS + minute * MINUTE_MS + second * 1_000 + millis,
        ))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// What the general parse gives.
    fn by_jiff(text: &str) -> Option<UnixMs> {
        text.parse::<jiff::Timestamp>()
            .ok()
            .map(UnixMs::from_timestamp)
    }

    #[test]
    fn the_common_spelling_reads_as_jiff_reads_it() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2026-11-05T00:00:00.323Z",
            "2024-02-29T23:59:59.999999999Z",
            "2000-02-29T12:00:00.5Z",
            "9998-12-31T23:59:59.12Z",
        ] {
            assert_eq!(UnixMs::parse_common(text), by_jiff(text), "{text}");
            assert!(UnixMs::parse_common(text).is_some(), "{text}");
        }
        for text in [
            "2023-02-29T00:00:00Z",
            "9999-01-01T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-05T24:00:00Z",
            "2026-11-05T23:59:60Z",
            "2026-11-05T00:00:00.Z",
            "2026-11-05T00:00:00.1234567891Z",
            "2026-11-05T00:00:00+00:00",
            "2026-11-05t00:00:00z",
            "2026-11-05 00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "2026-11-05T00:00:00Z ",
        ] {
            assert_eq!(UnixMs::parse_common(text), None, "{text}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]

        /// Wherever the fast read gives an instant, jiff gives the same one; texts jiff
        /// refuses it never reads.
        #[test]
        fn parse_common_agrees_with_jiff(
            text in "[0-9]{4}-[0-3][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,11})?[Z+]",
            year in 1960i64..2500,
            ms in 0i64..86_400_000,
        ) {
            if let Some(t) = UnixMs::parse_common(&text) {
                prop_assert_eq!(Some(t), by_jiff(&text), "{}", text);
            }
            // Plausible dates, so that most of them are read.
            let dated = format!("{year:04}{}", text.get(4..).unwrap_or_default());
            if let Some(t) = UnixMs::parse_common(&dated) {
                prop_assert_eq!(Some(t), by_jiff(&dated), "{}", dated);
            }
            let valid = UnixMs(ms + (year - 1970).max(0) * 365 * DAY_MS).to_rfc3339();
            prop_assert_eq!(UnixMs::parse_common(&valid), by_jiff(&valid), "{}", valid);
            prop_assert!(UnixMs::parse_common(&valid).is_some(), "{}", valid);
        }
    }
}
