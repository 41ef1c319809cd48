//! Why an event was not accepted. Each variant has a stable snake_case `code`.

use thiserror::Error;

use crate::time::UnixMs;

/// A per-event rejection. The batch it came in still stands.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EventError {
    /// Not JSON, or JSON that is not an object.
    #[error("event is not a JSON object: {message}")]
    Malformed {
        /// The parser's message.
        message: String,
    },
    /// An attribute has the wrong JSON type, a bad name, or appears twice.
    #[error("invalid attribute: {message}")]
    InvalidAttribute {
        /// What is wrong.
        message: String,
    },
    /// A required attribute is absent.
    #[error("required attribute `{name}` is missing")]
    MissingAttribute {
        /// The attribute.
        name: &'static str,
    },
    /// A required attribute is the empty string.
    #[error("attribute `{name}` must not be empty")]
    EmptyAttribute {
        /// The attribute.
        name: &'static str,
    },
    /// An attribute is longer than its named limit.
    #[error("attribute `{name}` is longer than {max} bytes")]
    AttributeTooLong {
        /// The attribute.
        name: &'static str,
        /// The limit.
        max: usize,
    },
    /// `specversion` is not "1.0".
    #[error("specversion `{found}` is not supported (only \"1.0\")")]
    UnsupportedSpecversion {
        /// What was sent.
        found: String,
    },
    /// `time` is not an RFC 3339 timestamp.
    #[error("time `{found}` is not an RFC 3339 timestamp")]
    InvalidTime {
        /// What was sent.
        found: String,
    },
    /// The event is larger than `EVENT_BYTES_MAX`.
    #[error("event is {bytes} bytes, more than the limit of {max}", max = crate::limits::EVENT_BYTES_MAX)]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// Older than the acceptance window.
    #[error("event time {} is older than the acceptance window of {} days", .time.to_rfc3339(), .window_ms / 86_400_000)]
    TooOld {
        /// The event's time.
        time: UnixMs,
        /// The window in force.
        window_ms: i64,
    },
    /// More than `EVENT_FUTURE_MS_MAX` in the future.
    #[error("event time {} is more than 5 minutes in the future", .time.to_rfc3339())]
    InFuture {
        /// The event's time.
        time: UnixMs,
    },
}

impl EventError {
    /// The stable code of this error, part of the API.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::Malformed { .. } => "malformed_event",
            EventError::InvalidAttribute { .. } => "invalid_attribute",
            EventError::MissingAttribute { .. } => "missing_attribute",
            EventError::EmptyAttribute { .. } => "empty_attribute",
            EventError::AttributeTooLong { .. } => "attribute_too_long",
            EventError::UnsupportedSpecversion { .. } => "unsupported_specversion",
            EventError::InvalidTime { .. } => "invalid_time",
            EventError::TooLarge { .. } => "event_too_large",
            EventError::TooOld { .. } => "too_old",
            EventError::InFuture { .. } => "in_future",
        }
    }

    pub(super) fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => EventError::InvalidAttribute {
                message: e.to_string(),
            },
            Category::Syntax | Category::Eof | Category::Io => EventError::Malformed {
                message: e.to_string(),
            },
        }
    }
}
