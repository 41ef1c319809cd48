//! Why a price or a pricing computation was refused. Each variant has a stable `code`.

use thiserror::Error;

/// A refused price or computation.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PricingError {
    /// The price definition breaks a rule.
    #[error("invalid price: {reason}")]
    InvalidPrice {
        /// What is wrong.
        reason: String,
    },
    /// The amount does not fit a decimal of 28 digits.
    #[error("amount is too large to compute exactly")]
    Overflow,
}

impl PricingError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            PricingError::InvalidPrice { .. } => "invalid_price",
            PricingError::Overflow => "amount_overflow",
        }
    }
}
