//! Bodies of `/v1/credit_notes` and `POST /v1/invoices/{id}/credit_notes`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One line of a credit request: give `quantity`, or `amount_minor`, or neither (the rest of
/// the line).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditLineBody {
    /// The invoice line's number (1-based).
    pub line: u32,
    /// Decimal quantity to give back, at the line's average unit price.
    #[serde(default)]
    pub quantity: Option<String>,
    /// Amount before tax to give back, in minor units.
    #[serde(default)]
    pub amount_minor: Option<i64>,
}

/// A credit note to create. Give exactly one of `full: true`, `lines` or `amount_minor`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditNoteBody {
    /// `duplicate`, `fraudulent`, `order_change`, `product_unsatisfactory`, `late_correction`,
    /// `goodwill` or `other`.
    pub reason: String,
    /// Free text shown on the note.
    #[serde(default)]
    pub memo: Option<String>,
    /// Credit everything the invoice has left to credit.
    #[serde(default)]
    pub full: bool,
    /// Credit these lines.
    #[serde(default)]
    pub lines: Option<Vec<CreditLineBody>>,
    /// Credit this amount before tax, not tied to a line, in minor units.
    #[serde(default)]
    pub amount_minor: Option<i64>,
    /// Keep the note `pending_approval` until another call approves it (four eyes).
    #[serde(default)]
    pub require_approval: bool,
    /// On a paid invoice, pay what the note gives back to the customer as a refund of the
    /// payment (as far as what was collected allows) instead of credit balance.
    #[serde(default)]
    pub refund: bool,
}

/// A line of a credit note.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreditNoteLine {
    /// The invoice line credited, if any.
    pub invoice_line: Option<u32>,
    /// What is credited.
    pub description: String,
    /// Decimal quantity given back, when credited by quantity or in full.
    pub quantity: Option<String>,
    /// Amount before tax.
    pub amount_minor: i64,
}

/// Where an issued note's money went.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreditSettlementBody {
    /// Taken off what the invoice still owed.
    pub amount_due_minor: i64,
    /// Added to the customer's credit balance (a ledger grant).
    pub balance_minor: i64,
    /// Paid back as a refund (see `refund`).
    pub refund_minor: i64,
}

/// A credit note.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreditNoteResponse {
    /// `cn_…`.
    pub id: String,
    /// `CN-2026-000001`, given when issued.
    pub number: Option<String>,
    /// `pending_approval`, `issued` or `rejected`.
    pub status: String,
    /// The invoice credited.
    pub invoice: String,
    /// Its number.
    pub invoice_number: Option<String>,
    /// Customer key.
    pub customer: String,
    /// Currency.
    pub currency: String,
    /// `manual` or `late_correction`.
    pub origin: String,
    /// Why.
    pub reason: String,
    /// Free text.
    pub memo: String,
    /// Lines.
    pub lines: Vec<CreditNoteLine>,
    /// Σ lines.
    pub subtotal_minor: i64,
    /// Tax given back.
    pub tax_minor: i64,
    /// Subtotal + tax.
    pub total_minor: i64,
    /// Where the money went, once issued.
    pub settlement: Option<CreditSettlementBody>,
    /// The ledger grant holding the balance part.
    pub credit_grant: Option<String>,
    /// The note asked for its money back as a refund.
    pub refund_requested: bool,
    /// The refund paying the refund part back.
    pub refund: Option<String>,
    /// API key id of the creator, or `invoice_run`.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub issued_at: Option<String>,
    /// RFC 3339.
    pub rejected_at: Option<String>,
    /// API key id of whoever approved or rejected it.
    pub decided_by: Option<String>,
}

/// A page of credit notes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreditNoteList {
    /// By id.
    pub data: Vec<CreditNoteResponse>,
    /// Pass as `after` for the next page.
    pub next_after: Option<String>,
}
