//! Why a money operation was refused. Each variant has a stable snake_case `code`.

use thiserror::Error;

use super::Currency;

/// A refused money operation.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MoneyError {
    /// Not an ISO 4217 code Tollgate knows.
    #[error("unknown currency `{code}` (use an ISO 4217 code such as USD, EUR, JPY, KWD)")]
    UnknownCurrency {
        /// What was given.
        code: String,
    },
    /// Two amounts in different currencies were combined.
    #[error("cannot combine {left} and {right}")]
    CurrencyMismatch {
        /// Left side.
        left: Currency,
        /// Right side.
        right: Currency,
    },
    /// An amount does not fit in 64-bit minor units.
    #[error("amount is too large")]
    Overflow,
}

impl MoneyError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            MoneyError::UnknownCurrency { .. } => "unknown_currency",
            MoneyError::CurrencyMismatch { .. } => "currency_mismatch",
            MoneyError::Overflow => "amount_overflow",
        }
    }
}
