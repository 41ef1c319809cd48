//! Bodies of the drop-in ingest endpoints, in the shapes of the services they stand in for:
//! Orb (`POST /v1/ingest`), Stripe (`POST /v1/billing/meter_events`) and OpenMeter
//! (`POST /api/v1/events`, answered with RFC 9457 problem details on error).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Orb's ingest answer: `validation_failed` is empty on 200.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbIngestResponse {
    /// Events not ingested, each with why.
    pub validation_failed: Vec<OrbValidationFailed>,
    /// With `?debug=true`: which keys were ingested now and which were already ingested.
    pub debug: Option<OrbIngestDebug>,
}

/// One Orb event that was not ingested.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbValidationFailed {
    /// The event's `idempotency_key` (empty when it had none).
    pub idempotency_key: String,
    /// Why, each prefixed with Tollgate's stable code (`too_old: ...`).
    pub validation_errors: Vec<String>,
}

/// `debug` of an Orb ingest answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbIngestDebug {
    /// Keys counted by this request.
    pub ingested: Vec<String>,
    /// Keys counted before (a retry).
    pub duplicate: Vec<String>,
}

/// Orb's error body (`type` selects the client's exception class).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrbErrorResponse {
    /// Orb's error type URI, e.g. `https://docs.withorb.com/reference/error-responses#400-request-validation-errors`.
    #[serde(rename = "type")]
    pub kind: String,
    /// HTTP status.
    pub status: u16,
    /// Short summary.
    pub title: String,
    /// For people.
    pub detail: String,
    /// Tollgate's stable code.
    pub code: String,
    /// What failed: the per-event failures (`{idempotency_key, validation_errors}`) when the
    /// request failed because of them, else the detail (Orb's `RequestValidationError` reads it).
    pub validation_errors: Vec<Value>,
    /// Per-event failures, when the request failed because of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_failed: Vec<OrbValidationFailed>,
}

/// Stripe's `billing.meter_event` object.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StripeMeterEventResponse {
    /// Always `billing.meter_event`.
    pub object: String,
    /// When Tollgate answered (seconds since the epoch).
    pub created: i64,
    /// As sent.
    pub event_name: String,
    /// The dedup id: `identifier`, else the `Idempotency-Key` header, else generated.
    pub identifier: String,
    /// Always false.
    pub livemode: bool,
    /// As sent.
    pub payload: BTreeMap<String, String>,
    /// The event time (seconds): as sent, else the receive time.
    pub timestamp: i64,
}

/// Stripe's error envelope.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StripeErrorResponse {
    /// The error.
    pub error: StripeError,
}

/// One Stripe error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StripeError {
    /// `invalid_request_error`, `idempotency_error` (same identifier, different event) or
    /// `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Tollgate's stable code.
    pub code: String,
    /// For people.
    pub message: String,
    /// The parameter at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

/// RFC 9457 problem details, as OpenMeter answers errors.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProblemResponse {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// For people.
    pub detail: String,
    /// The request path.
    pub instance: String,
    /// `code` (Tollgate's stable code) and, for events not accepted, `errors`.
    pub extensions: Value,
}
