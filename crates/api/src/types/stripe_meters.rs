//! Bodies of the Stripe meter event endpoints: where forwarding accepted events to Stripe's
//! `POST /v1/billing/meter_events` stands.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A customer whose events wait for its Stripe id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StripeMeterWaiting {
    /// The Tollgate customer key (the events' `subject`).
    pub customer: String,
    /// Its events parked.
    pub events: u64,
}

/// Where forwarding to Stripe meter events stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StripeMeterStatus {
    /// `running` (caught up or sending), `retrying` (the last request failed and is retried
    /// with backoff) or `stopped` (Stripe refused a request for good; see `stopped_code` and
    /// `last_error`; nothing is dropped: `POST /v1/providers/stripe/meter_events/resume` after
    /// the fix).
    pub state: String,
    /// Every accepted event up to this sequence number is done (forwarded, passed over and
    /// counted, or parked until its customer is synced).
    pub cursor_seq: u64,
    /// The last accepted event's sequence number.
    pub log_last_seq: u64,
    /// Accepted events after the cursor.
    pub lag_events: u64,
    /// Events acknowledged by Stripe (including `duplicate_events`).
    pub forwarded_events: u64,
    /// Of those, events Stripe already held: it refused their `identifier` as a duplicate
    /// (sent again after a crash or after the idempotency key expired; counted once by Stripe).
    pub duplicate_events: u64,
    /// Accepted events whose type is not mapped in `[stripe_meters.events]`.
    pub skipped_events: u64,
    /// Events passed over because their timestamp was outside Stripe's window (more than 35
    /// days old, or more than 5 minutes ahead) when they were due: Stripe cannot take them.
    pub out_of_window_events: u64,
    /// Events passed over because their value is missing or not a whole number.
    pub invalid_events: u64,
    /// The last event passed over (out of window or invalid), and why.
    pub last_passed_over: Option<String>,
    /// Events parked until their customer has a Stripe id (the Stripe customer sync).
    pub waiting_events: u64,
    /// Customers with parked events (at most 100).
    pub waiting_customers: Vec<StripeMeterWaiting>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Why forwarding stopped: `stripe_meter_rejected`, `stripe_meter_unauthorized`,
    /// `stripe_meter_event_unreadable`.
    pub stopped_code: Option<String>,
    /// The last failure, with Stripe's message.
    pub last_error: Option<String>,
    /// Stripe's HTTP status of the last failure.
    pub last_http_status: Option<u16>,
    /// When the next attempt is due, while retrying (RFC 3339).
    pub next_attempt_at: Option<String>,
}

/// The answer of a resume.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StripeMeterResumeAnswer {
    /// Forwarding was stopped and now runs again.
    pub resumed: bool,
}
