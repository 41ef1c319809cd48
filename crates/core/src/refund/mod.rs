//! Refunds: money given back on an invoice that was paid, and the rule that keeps it honest.
//!
//! Owns: the status machine ([`RefundStatus::apply`]: `pending` → `succeeded` | `failed` |
//! `canceled`, nothing after), where a refund runs ([`RefundMethod`]: at the payment provider
//! that collected the money, or out of band for invoices paid outside one), who asked
//! ([`RefundOrigin`]), how much is left to refund ([`refundable`]) and the check of a new
//! refund against it ([`check_amount`]), and what a provider's refund status means
//! ([`RefundStatus::from_provider`]).
//!
//! Does not own: storage and the transaction that checks the cap (`tollgate_store`), the
//! provider call (the worker, through the provider outbox, with the idempotency key
//! `provider::idempotency_key(CreateRefund, refund id, 1, "refund")`), credit notes (a note on
//! a paid invoice may ask for its money back as a refund; the store creates both together).
//!
//! Invariants: a pending or succeeded refund reserves its amount; the reserved total of an
//! invoice never exceeds what was collected on it (checked when a refund is created, against
//! every other refund of the invoice, and against what the provider says it refunded, whichever
//! is more); a failed or canceled refund releases its amount; a refund in a final status never
//! changes.

mod error;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use self::error::RefundError;
use crate::limits::REFUND_MEMO_BYTES_MAX;

/// Where a refund is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Created; not yet confirmed by the provider (or by an operator, out of band).
    Pending,
    /// The money went back.
    Succeeded,
    /// The provider refused it, or it failed there; nothing went back.
    Failed,
    /// Withdrawn before it was sent; nothing went back.
    Canceled,
}

/// What happens to a pending refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundChange {
    /// It went through.
    Succeed,
    /// It did not.
    Fail,
    /// It is withdrawn before it was sent.
    Cancel,
}

impl RefundChange {
    fn past(self) -> &'static str {
        match self {
            RefundChange::Succeed => "marked succeeded",
            RefundChange::Fail => "marked failed",
            RefundChange::Cancel => "canceled",
        }
    }
}

impl RefundStatus {
    /// Every status.
    pub const ALL: [RefundStatus; 4] = [
        RefundStatus::Pending,
        RefundStatus::Succeeded,
        RefundStatus::Failed,
        RefundStatus::Canceled,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Canceled => "canceled",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(text: &str) -> Option<RefundStatus> {
        RefundStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the refund counts against what is left to refund.
    pub fn reserves(self) -> bool {
        matches!(self, RefundStatus::Pending | RefundStatus::Succeeded)
    }

    /// Whether nothing can change it any more.
    pub fn is_final(self) -> bool {
        self != RefundStatus::Pending
    }

    /// The status after `change`, or why it does not apply (only a pending refund changes).
    pub fn apply(self, change: RefundChange) -> Result<RefundStatus, RefundError> {
        match (self, change) {
            (RefundStatus::Pending, RefundChange::Succeed) => Ok(RefundStatus::Succeeded),
            (RefundStatus::Pending, RefundChange::Fail) => Ok(RefundStatus::Failed),
            (RefundStatus::Pending, RefundChange::Cancel) => Ok(RefundStatus::Canceled),
            (status, change) => Err(RefundError::NotPending {
                status: status.as_str(),
                change: change.past(),
            }),
        }
    }

    /// What a provider's refund status means (Stripe: `pending`, `requires_action`,
    /// `succeeded`, `failed`, `canceled`); `None` for a status Tollgate does not know, which
    /// leaves the refund pending until one it knows arrives.
    pub fn from_provider(status: &str) -> Option<RefundStatus> {
        match status {
            "pending" | "requires_action" => Some(RefundStatus::Pending),
            "succeeded" => Some(RefundStatus::Succeeded),
            "failed" => Some(RefundStatus::Failed),
            "canceled" => Some(RefundStatus::Canceled),
            _ => None,
        }
    }
}

/// Where a refund runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundMethod {
    /// At the payment provider that collected the invoice, exactly once through the outbox.
    Provider,
    /// Out of band (the invoice was marked paid by hand): an operator pays it back and records
    /// the outcome.
    OutOfBand,
}

impl RefundMethod {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundMethod::Provider => "provider",
            RefundMethod::OutOfBand => "out_of_band",
        }
    }
}

/// Who asked for a refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundOrigin {
    /// An operator, through the API.
    Manual,
    /// An issued credit note on a paid invoice that asked for its money back.
    CreditNote,
    /// A configured rule (reconciliation found an overpayment).
    Rule,
}

impl RefundOrigin {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundOrigin::Manual => "manual",
            RefundOrigin::CreditNote => "credit_note",
            RefundOrigin::Rule => "rule",
        }
    }
}

/// Why a refund was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// The customer paid twice.
    Duplicate,
    /// The charge was fraudulent.
    Fraudulent,
    /// The customer asked.
    RequestedByCustomer,
    /// A credit note gave the money back.
    CreditNote,
    /// More was collected than the invoice asked.
    Overpayment,
    /// Another reason (say which in the memo).
    Other,
}

/// What is left to refund on an invoice: what was collected, less the larger of what
/// Tollgate's own refunds reserve and what the provider reports refunded (a refund made in the
/// provider's dashboard counts too). Never negative.
pub fn refundable(collected_minor: i64, reserved_minor: i64, provider_refunded_minor: i64) -> i64 {
    (collected_minor - reserved_minor.max(provider_refunded_minor)).max(0)
}

/// The amount reserved by refunds (pending and succeeded ones).
pub fn reserved<'a>(refunds: impl IntoIterator<Item = (i64, RefundStatus)> + 'a) -> i64 {
    refunds
        .into_iter()
        .filter(|(_, s)| s.reserves())
        .map(|(a, _)| a)
        .sum()
}

/// Checks a new refund of `amount_minor` against `refundable_minor`; `None` asks for all of it.
/// Returns the amount to refund.
pub fn check_amount(amount_minor: Option<i64>, refundable_minor: i64) -> Result<i64, RefundError> {
    if refundable_minor <= 0 {
        return Err(RefundError::NothingToRefund);
    }
    let amount = amount_minor.unwrap_or(refundable_minor);
    if amount <= 0 {
        return Err(RefundError::InvalidAmount { amount });
    }
    if amount > refundable_minor {
        return Err(RefundError::ExceedsRefundable {
            asked: amount,
            left: refundable_minor,
        });
    }
    Ok(amount)
}

/// The memo, checked.
pub fn memo(text: &str) -> Result<String, RefundError> {
    if text.len() > REFUND_MEMO_BYTES_MAX {
        return Err(RefundError::MemoTooLong {
            max: REFUND_MEMO_BYTES_MAX,
        });
    }
    Ok(text.to_owned())
}
