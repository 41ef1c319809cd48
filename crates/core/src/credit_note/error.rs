//! Why a credit note was refused. Each variant has a stable snake_case `code`.

use thiserror::Error;

use crate::money::MoneyError;

/// A refused credit note.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CreditNoteError {
    /// Only finalized or paid invoices can be credited.
    #[error("a {status} invoice cannot be credited (only finalized or paid ones)")]
    InvoiceNotCreditable {
        /// The invoice's status.
        status: &'static str,
    },
    /// The request names no line, or a line twice, or a line the invoice lacks.
    #[error("invalid credit request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// More than the invoice (or a line) has left to credit.
    #[error("the credit exceeds what is left to credit: {reason}")]
    ExceedsCreditable {
        /// Which cap was hit.
        reason: String,
    },
    /// Nothing is left to credit on the invoice (or the lines asked).
    #[error("nothing is left to credit")]
    NothingToCredit,
    /// The note is not pending approval.
    #[error("a {status} credit note cannot be {change}")]
    NotPending {
        /// Its status.
        status: &'static str,
        /// What was asked.
        change: &'static str,
    },
    /// A money problem.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl CreditNoteError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            CreditNoteError::InvoiceNotCreditable { .. } => "invoice_not_creditable",
            CreditNoteError::InvalidRequest { .. } => "invalid_credit_request",
            CreditNoteError::ExceedsCreditable { .. } => "credit_exceeds_creditable",
            CreditNoteError::NothingToCredit => "nothing_to_credit",
            CreditNoteError::NotPending { .. } => "credit_note_not_pending",
            CreditNoteError::Money(e) => e.code(),
        }
    }
}
