//! Bodies of the payment-provider endpoints: the Stripe webhook's answer, provider objects
//! (with what the provider says about an invoice's money) and the outbox of outgoing calls.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What Tollgate did with a Stripe event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StripeWebhookAnswer {
    /// Always true: the event was verified and recorded (Stripe stops retrying on 2xx).
    pub received: bool,
    /// The event id had been processed before; nothing changed.
    pub duplicate: bool,
    /// `invoice_paid`, `payment_recorded`, `payment_failed`, `refund_recorded`,
    /// `dispute_recorded`, `ignored` (a type Tollgate does not act on) or `unknown_object`
    /// (no Tollgate invoice behind it); a duplicate repeats the first outcome.
    pub outcome: String,
    /// The Tollgate invoice it concerned.
    pub invoice: Option<String>,
}

/// A Tollgate object's counterpart at a provider.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderObjectResponse {
    /// `stripe`.
    pub provider: String,
    /// `customer` or `invoice`.
    pub kind: String,
    /// The Tollgate customer key or invoice id.
    pub tollgate_key: String,
    /// The provider's id (`cus_…`, `in_…`).
    pub provider_id: String,
    /// For invoices: the provider's customer id.
    pub customer_provider_id: Option<String>,
    /// For invoices: `open`, `failed`, `paid`, `partially_refunded`, `refunded`, `disputed`.
    pub payment_state: Option<String>,
    /// What the provider said is due, when the invoice was finalized there (minor units).
    pub amount_due_minor: i64,
    /// Paid (minor units).
    pub amount_paid_minor: i64,
    /// Refunded (minor units).
    pub amount_refunded_minor: i64,
    /// Disputed (minor units).
    pub amount_disputed_minor: i64,
    /// Failed payment attempts reported.
    pub failed_attempts: u32,
    /// The provider's charge id, once known.
    pub charge_id: Option<String>,
    /// First recorded (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
}

/// Provider objects.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderObjectList {
    /// By kind, then Tollgate key.
    pub data: Vec<ProviderObjectResponse>,
}

/// One attempt of an outgoing call.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderAttemptResponse {
    /// When it started (RFC 3339).
    pub at: String,
    /// How long it took (ms).
    pub duration_ms: i64,
    /// The step that ended it.
    pub step: Option<String>,
    /// The provider's last HTTP status.
    pub http_status: Option<u16>,
    /// Why it failed; absent when it succeeded.
    pub error: Option<String>,
}

/// An outgoing call in the outbox.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderCallResponse {
    /// `pc_…`.
    pub id: String,
    /// `stripe`.
    pub provider: String,
    /// `sync_customer` or `push_invoice`.
    pub kind: String,
    /// The Tollgate customer key or invoice id.
    pub object_id: String,
    /// The object's version (part of every idempotency key).
    pub version: i64,
    /// `pending`, `done` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it is next due (RFC 3339), while pending.
    pub next_attempt_at: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Enqueued (RFC 3339).
    pub created_at: String,
    /// Done (RFC 3339).
    pub done_at: Option<String>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<ProviderAttemptResponse>,
}

/// Outgoing calls.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderCallList {
    /// Newest first.
    pub data: Vec<ProviderCallResponse>,
}
