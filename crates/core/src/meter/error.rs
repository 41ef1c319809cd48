//! Why a meter definition was refused. Each variant has a stable snake_case `code`.

use thiserror::Error;

/// A refused meter definition.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MeterError {
    /// The slug is not `[a-z][a-z0-9_-]*` within the length limit.
    #[error("meter slug `{slug}` must match [a-z][a-z0-9_-]* and be at most 64 bytes")]
    InvalidSlug {
        /// What was given.
        slug: String,
    },
    /// A JSON path is outside the supported subset.
    #[error("invalid JSON path `{path}`: {reason}")]
    InvalidJsonPath {
        /// What was given.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The aggregation reads a value but no `value_path` was given.
    #[error("aggregation `{aggregation}` needs a value_path")]
    ValuePathRequired {
        /// The aggregation.
        aggregation: &'static str,
    },
    /// More dimensions than `GROUP_BY_KEYS_MAX`.
    #[error("at most {max} group_by dimensions")]
    TooManyGroupBy {
        /// The limit.
        max: usize,
    },
    /// More filters than `METER_FILTERS_MAX`.
    #[error("at most {max} filters")]
    TooManyFilters {
        /// The limit.
        max: usize,
    },
    /// Anything else wrong with the definition.
    #[error("invalid meter: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
}

impl MeterError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            MeterError::InvalidSlug { .. } => "invalid_meter_slug",
            MeterError::InvalidJsonPath { .. } => "invalid_json_path",
            MeterError::ValuePathRequired { .. } => "value_path_required",
            MeterError::TooManyGroupBy { .. } => "group_by_keys_max",
            MeterError::TooManyFilters { .. } => "meter_filters_max",
            MeterError::Invalid { .. } => "invalid_meter",
        }
    }
}
