//! Why a usage query was refused. Each variant has a stable snake_case `code`.

use thiserror::Error;

/// A refused usage query.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UsageError {
    /// `from` or `to` is not on a whole minute (rollups have minute resolution).
    #[error("from and to must be whole minutes (usage is kept per minute)")]
    NotMinuteAligned,
    /// `from` is not before `to`.
    #[error("from must be before to")]
    EmptyRange,
    /// More windows than `USAGE_WINDOWS_MAX`.
    #[error("the range holds more than {max} windows; use a larger window_size or a shorter range")]
    TooManyWindows {
        /// The limit.
        max: usize,
    },
    /// More rows than `USAGE_ROWS_MAX`.
    #[error(
        "the answer has more than {max} rows; filter by subject, use fewer group_by keys or a larger window_size"
    )]
    TooManyRows {
        /// The limit.
        max: usize,
    },
    /// A `group_by` name the meter does not have.
    #[error("meter has no group_by dimension `{name}`")]
    UnknownGroupBy {
        /// The name.
        name: String,
    },
    /// A time outside the supported calendar range.
    #[error("time out of the supported range")]
    OutOfRange,
}

impl UsageError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            UsageError::NotMinuteAligned => "time_not_minute_aligned",
            UsageError::EmptyRange => "empty_time_range",
            UsageError::TooManyWindows { .. } => "usage_windows_max",
            UsageError::TooManyRows { .. } => "usage_rows_max",
            UsageError::UnknownGroupBy { .. } => "unknown_group_by",
            UsageError::OutOfRange => "time_out_of_range",
        }
    }
}
