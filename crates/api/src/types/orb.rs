//! Bodies of the Orb endpoints: where event forwarding stands, Orb invoices read back, and
//! the answer of a pull.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A part of the batch in flight.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbPlanPartResponse {
    /// `live` (`POST /v1/ingest`) or `backfill` (one customer's late events).
    pub kind: String,
    /// Backfill: the customer key (Orb's `external_customer_id`).
    pub customer: Option<String>,
    /// Backfill: the timeframe's start (RFC 3339).
    pub timeframe_start: Option<String>,
    /// Backfill: the timeframe's end, exclusive (RFC 3339).
    pub timeframe_end: Option<String>,
    /// Events in it.
    pub events: u32,
    /// `pending`, `creating`, `created`, `ingested` or `done`.
    pub state: String,
    /// Backfill: Orb's id, once created.
    pub backfill_id: Option<String>,
}

/// The batch in flight: a range of the accepted-event log, split into parts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbPlanResponse {
    /// The cursor it starts after.
    pub after_seq: u64,
    /// The last log event it covers.
    pub last_seq: u64,
    /// Events before this instant go through backfills (RFC 3339).
    pub late_before: String,
    /// Its parts.
    pub parts: Vec<OrbPlanPartResponse>,
}

/// Where forwarding to Orb stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbStatus {
    /// `running` (caught up or sending), `retrying` (the last request failed and is retried
    /// with backoff) or `stopped` (Orb refused a request for good; see `stopped_code` and
    /// `last_error`; nothing is dropped: `POST /v1/providers/orb/resume` after the fix).
    pub state: String,
    /// Every accepted event up to this sequence number is forwarded (or not mapped).
    pub cursor_seq: u64,
    /// The last accepted event's sequence number.
    pub log_last_seq: u64,
    /// Accepted events after the cursor.
    pub lag_events: u64,
    /// Events acknowledged by Orb.
    pub forwarded_events: u64,
    /// Accepted events whose type is not mapped in `[orb.events]`.
    pub skipped_events: u64,
    /// Ingest requests acknowledged.
    pub batches: u64,
    /// Backfills closed.
    pub backfills: u64,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Why forwarding stopped: `orb_rejected`, `orb_validation_failed`, `orb_unauthorized`.
    pub stopped_code: Option<String>,
    /// The last failure, with Orb's message.
    pub last_error: Option<String>,
    /// Orb's HTTP status of the last failure.
    pub last_http_status: Option<u16>,
    /// When the next attempt is due, while retrying (RFC 3339).
    pub next_attempt_at: Option<String>,
    /// The batch in flight.
    pub plan: Option<OrbPlanResponse>,
    /// Customer syncs waiting in the provider outbox.
    pub customer_syncs_pending: u64,
    /// Customer syncs that failed for good (`GET /v1/providers/stripe/calls?status=failed`
    /// lists every provider's calls).
    pub customer_syncs_failed: u64,
}

/// An Orb invoice read back.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbInvoiceResponse {
    /// Orb's invoice id.
    pub orb_invoice_id: String,
    /// The Tollgate customer key.
    pub customer: String,
    /// Orb's customer id.
    pub orb_customer_id: Option<String>,
    /// Orb's invoice number.
    pub number: Option<String>,
    /// Orb's status: `draft`, `issued`, `paid`, `synced`, `void`.
    pub status: String,
    /// `open`, `paid` or `void` (the record reconciliation compares).
    pub payment_state: String,
    /// Currency code.
    pub currency: String,
    /// Orb's invoice date (RFC 3339).
    pub invoice_date: Option<String>,
    /// Total (minor units).
    pub total_minor: i64,
    /// Due (minor units).
    pub amount_due_minor: i64,
    /// Paid (minor units).
    pub amount_paid_minor: i64,
    /// When it was last read from Orb (RFC 3339).
    pub pulled_at: String,
}

/// Orb invoices read back.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbInvoiceList {
    /// By customer, then invoice date.
    pub data: Vec<OrbInvoiceResponse>,
}

/// What one pull of Orb invoices did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct OrbPullReport {
    /// Customers whose invoices were read.
    pub customers: u64,
    /// Invoices recorded.
    pub invoices: u64,
    /// Customers whose pull failed, with why.
    pub errors: Vec<String>,
}

/// The answer of a resume.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbResumeAnswer {
    /// Forwarding was stopped and now runs again.
    pub resumed: bool,
}
