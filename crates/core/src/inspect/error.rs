//! Why a rule set was refused.

use thiserror::Error;

/// A rule set that cannot be published.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InspectError {
    /// More rules than `INSPECT_RULES_MAX`.
    #[error("more than {max} rules")]
    TooManyRules {
        /// The limit.
        max: usize,
    },
    /// Two rules share an id.
    #[error("rule id `{id}` appears twice")]
    DuplicateRule {
        /// The id.
        id: String,
    },
    /// A rule names a category the set does not define.
    #[error("category `{name}` is not defined in the rule set")]
    UnknownCategory {
        /// The name.
        name: String,
    },
    /// An id, host or category is empty or too long.
    #[error("{what} must be 1..={max} bytes")]
    InvalidText {
        /// Which field.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

impl InspectError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            InspectError::TooManyRules { .. } => "inspect_rules_max",
            InspectError::DuplicateRule { .. } => "duplicate_rule",
            InspectError::UnknownCategory { .. } => "unknown_category",
            InspectError::InvalidText { .. } => "invalid_rule",
        }
    }
}
