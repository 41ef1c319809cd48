//! Why a log line was not turned into an event.

use thiserror::Error;

/// A line that does not parse. Reported with its line number; the other lines still count.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AccessLogError {
    /// The line does not have the format's shape.
    #[error("line does not parse: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// Longer than `LINE_BYTES_MAX`.
    #[error("line is longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
}

impl AccessLogError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            AccessLogError::Malformed { .. } => "unparsable_line",
            AccessLogError::TooLong { .. } => "line_bytes_max",
        }
    }
}
