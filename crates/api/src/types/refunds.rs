//! Bodies of `/v1/refunds` and `POST /v1/invoices/{id}/refunds`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A refund to create.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Amount in minor units; omit it to refund all that is left of what was collected.
    #[serde(default)]
    pub amount_minor: Option<i64>,
    /// `duplicate`, `fraudulent`, `requested_by_customer`, `overpayment` or `other`.
    pub reason: String,
    /// Free text.
    #[serde(default)]
    pub memo: Option<String>,
}

/// The outcome of an out-of-band refund, recorded by an operator.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundOutcomeBody {
    /// Why it failed (for `fail`).
    #[serde(default)]
    pub failure: Option<String>,
}

/// A refund.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefundResponse {
    /// `re_tg_…`.
    pub id: String,
    /// The invoice whose payment is given back.
    pub invoice: String,
    /// Customer key.
    pub customer: String,
    /// `pending`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// `provider` (runs at the payment provider that collected the invoice, exactly once) or
    /// `out_of_band` (the invoice was paid outside a provider: an operator records the outcome).
    pub method: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// `manual`, `credit_note` or `rule`.
    pub origin: String,
    /// The credit note or reconciliation difference that led to it.
    pub origin_ref: Option<String>,
    /// Why.
    pub reason: String,
    /// Free text.
    pub memo: String,
    /// `stripe` for provider refunds.
    pub provider: Option<String>,
    /// The provider's refund id, once known.
    pub provider_refund_id: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// API key id of the creator, `credit_note` or `reconciliation`.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339, when it reached a final status.
    pub done_at: Option<String>,
}

/// A page of refunds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefundList {
    /// By id.
    pub data: Vec<RefundResponse>,
    /// Pass as `after` for the next page.
    pub next_after: Option<String>,
}
