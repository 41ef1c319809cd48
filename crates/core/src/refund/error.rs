//! Why a refund was refused. Each variant has a stable snake_case `code`.

use thiserror::Error;

/// A refused refund request or change.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RefundError {
    /// Nothing was collected on the invoice (or all of it is refunded or reserved already).
    #[error("nothing is left to refund on this invoice")]
    NothingToRefund,
    /// The amount is not positive, or more than is left to refund.
    #[error("the refund of {asked} exceeds the {left} left to refund")]
    ExceedsRefundable {
        /// Asked (minor units).
        asked: i64,
        /// Left (minor units).
        left: i64,
    },
    /// The amount is zero or negative.
    #[error("a refund's amount must be positive (minor units), got {amount}")]
    InvalidAmount {
        /// What was asked.
        amount: i64,
    },
    /// The change does not apply to the refund's status.
    #[error("a {status} refund cannot be {change}")]
    NotPending {
        /// Its status.
        status: &'static str,
        /// What was asked.
        change: &'static str,
    },
    /// The memo is too long.
    #[error("the memo is at most {max} bytes")]
    MemoTooLong {
        /// The limit.
        max: usize,
    },
}

impl RefundError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RefundError::NothingToRefund => "nothing_to_refund",
            RefundError::ExceedsRefundable { .. } => "refund_exceeds_collected",
            RefundError::InvalidAmount { .. } => "invalid_refund_amount",
            RefundError::NotPending { .. } => "refund_not_pending",
            RefundError::MemoTooLong { .. } => "invalid_refund_memo",
        }
    }
}
