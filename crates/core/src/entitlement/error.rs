//! Why an entitlement request was refused. Each variant has a stable snake_case `code`.

use thiserror::Error;

/// A refused entitlement request.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EntitlementError {
    /// A feature key breaks the naming rule.
    #[error("invalid feature: {reason}")]
    InvalidFeature {
        /// What is wrong.
        reason: String,
    },
    /// A grant's values break a rule.
    #[error("invalid entitlement: {reason}")]
    InvalidGrant {
        /// What is wrong.
        reason: String,
    },
    /// Too many entitlements in one list.
    #[error("at most {max} entitlements")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// A period computation left the supported date range.
    #[error("date out of the supported range")]
    OutOfRange,
}

impl EntitlementError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            EntitlementError::InvalidFeature { .. } => "invalid_feature",
            EntitlementError::InvalidGrant { .. } => "invalid_entitlement",
            EntitlementError::TooMany { .. } => "entitlements_max",
            EntitlementError::OutOfRange => "date_out_of_range",
        }
    }
}
