//! Why a billing request was refused. Each variant has a stable snake_case `code`.

use thiserror::Error;

use crate::entitlement::EntitlementError;
use crate::money::MoneyError;
use crate::pricing::PricingError;

/// A refused billing request.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BillingError {
    /// A field breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The request contradicts the current state.
    #[error("{reason}")]
    Conflict {
        /// What is in the way.
        reason: String,
    },
    /// A date computation left the supported range.
    #[error("date out of the supported range")]
    OutOfRange,
    /// A price problem.
    #[error(transparent)]
    Pricing(#[from] PricingError),
    /// A money problem.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// An entitlement problem.
    #[error(transparent)]
    Entitlement(#[from] EntitlementError),
}

impl BillingError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            BillingError::Invalid { .. } => "invalid_field",
            BillingError::Conflict { .. } => "conflict",
            BillingError::OutOfRange => "date_out_of_range",
            BillingError::Pricing(e) => e.code(),
            BillingError::Money(e) => e.code(),
            BillingError::Entitlement(e) => e.code(),
        }
    }
}
