//! Cutting a time range into windows in a time zone.

use jiff::tz::TimeZone;
use jiff::{ToSpan, Zoned};
use serde::{Deserialize, Serialize};

use super::UsageError;
use crate::limits::USAGE_WINDOWS_MAX;
use crate::time::{HOUR_MS, MINUTE_MS, UnixMs};

/// The size of a usage window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSize {
    /// One minute.
    Minute,
    /// One local hour (for zones with a 30- or 45-minute offset, hours start at :30 / :45 UTC).
    Hour,
    /// One local calendar day (23, 24 or 25 hours around DST changes).
    Day,
    /// One local calendar month.
    Month,
}

impl WindowSize {
    /// Parses `minute|hour|day|month`.
    pub fn parse(text: &str) -> Option<WindowSize> {
        match text {
            "minute" => Some(WindowSize::Minute),
            "hour" => Some(WindowSize::Hour),
            "day" => Some(WindowSize::Day),
            "month" => Some(WindowSize::Month),
            _ => None,
        }
    }
}

/// The windows covering `[from, to)`: boundaries at local minute/hour/day/month starts in `tz`,
/// the first and last clipped to the range. `from` and `to` must be whole minutes.
pub fn windows(
    from: UnixMs,
    to: UnixMs,
    size: Option<WindowSize>,
    tz: &TimeZone,
) -> Result<Vec<(UnixMs, UnixMs)>, UsageError> {
    if !from.is_minute_aligned() || !to.is_minute_aligned() {
        return Err(UsageError::NotMinuteAligned);
    }
    if from >= to {
        return Err(UsageError::EmptyRange);
    }
    let Some(size) = size else {
        return Ok(vec![(from, to)]);
    };
    let mut out = Vec::new();
    let mut start = floor(from, size, tz)?;
    while start < to {
        let end = next(start, size, tz)?;
        debug_assert!(end > start, "windows advance");
        out.push((start.max(from), end.min(to)));
        if out.len() > USAGE_WINDOWS_MAX {
            return Err(UsageError::TooManyWindows {
                max: USAGE_WINDOWS_MAX,
            });
        }
        start = end;
    }
    Ok(out)
}

fn zoned(t: UnixMs, tz: &TimeZone) -> Zoned {
    t.to_timestamp().to_zoned(tz.clone())
}

fn range_err(_: jiff::Error) -> UsageError {
    UsageError::OutOfRange
}

/// Start of the window containing `t`.
fn floor(t: UnixMs, size: WindowSize, tz: &TimeZone) -> Result<UnixMs, UsageError> {
    Ok(match size {
        WindowSize::Minute => UnixMs(t.0.div_euclid(MINUTE_MS) * MINUTE_MS),
        WindowSize::Hour => {
            // Local hour start: floor in local wall-clock time at this instant's offset.
            let offset_ms = i64::from(tz.to_offset(t.to_timestamp()).seconds()) * 1000;
            UnixMs((t.0 + offset_ms).div_euclid(HOUR_MS) * HOUR_MS - offset_ms)
        }
        WindowSize::Day => {
            UnixMs::from_timestamp(zoned(t, tz).start_of_day().map_err(range_err)?.timestamp())
        }
        WindowSize::Month => {
            let z = zoned(t, tz).first_of_month().map_err(range_err)?;
            UnixMs::from_timestamp(z.start_of_day().map_err(range_err)?.timestamp())
        }
    })
}

/// Start of the window after the one starting at `start`.
fn next(start: UnixMs, size: WindowSize, tz: &TimeZone) -> Result<UnixMs, UsageError> {
    Ok(match size {
        WindowSize::Minute => UnixMs(start.0 + MINUTE_MS),
        WindowSize::Hour => {
            let candidate = floor(UnixMs(start.0 + HOUR_MS), size, tz)?;
            if candidate > start {
                candidate
            } else {
                UnixMs(start.0 + HOUR_MS)
            }
        }
        WindowSize::Day => {
            let z = zoned(start, tz).tomorrow().map_err(range_err)?;
            UnixMs::from_timestamp(z.start_of_day().map_err(range_err)?.timestamp())
        }
        WindowSize::Month => {
            let z = zoned(start, tz).checked_add(1.month()).map_err(range_err)?;
            floor(UnixMs::from_timestamp(z.timestamp()), size, tz)?
        }
    })
}
