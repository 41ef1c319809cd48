//! Why a webhook definition or message was refused, and why a signature does not verify. Each
//! variant has a stable snake_case `code`.

use thiserror::Error;

use crate::limits::{
    WEBHOOK_ENDPOINT_EVENT_TYPES_MAX, WEBHOOK_PAYLOAD_BYTES_MAX, WEBHOOK_URL_BYTES_MAX,
};

/// A refused endpoint definition or message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WebhookError {
    /// The URL is not an absolute `http` or `https` URL with a host.
    #[error("invalid webhook url: {reason}")]
    InvalidUrl {
        /// Why.
        reason: String,
    },
    /// The URL is longer than [`WEBHOOK_URL_BYTES_MAX`].
    #[error("the url is longer than {WEBHOOK_URL_BYTES_MAX} bytes")]
    UrlTooLong,
    /// An event type Tollgate does not send.
    #[error(
        "unknown event type `{name}` (known: alert.triggered, alert.recovered, entitlement.exceeded, invoice.finalized, invoice.paid, invoice.voided)"
    )]
    UnknownEventType {
        /// What was given.
        name: String,
    },
    /// An endpoint must subscribe to at least one event type.
    #[error("give at least one event type")]
    NoEventTypes,
    /// More event types than [`WEBHOOK_ENDPOINT_EVENT_TYPES_MAX`].
    #[error("at most {WEBHOOK_ENDPOINT_EVENT_TYPES_MAX} event types per endpoint")]
    TooManyEventTypes,
    /// A message's `data` is not a JSON object.
    #[error("a webhook message's data must be a JSON object")]
    DataNotObject,
    /// A message's serialized body is larger than [`WEBHOOK_PAYLOAD_BYTES_MAX`].
    #[error("a webhook message is larger than {WEBHOOK_PAYLOAD_BYTES_MAX} bytes")]
    PayloadTooLarge,
}

impl WebhookError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::InvalidUrl { .. } => "invalid_url",
            WebhookError::UrlTooLong => "webhook_url_bytes_max",
            WebhookError::UnknownEventType { .. } => "unknown_event_type",
            WebhookError::NoEventTypes => "invalid_event_types",
            WebhookError::TooManyEventTypes => "webhook_endpoint_event_types_max",
            WebhookError::DataNotObject => "invalid_webhook_data",
            WebhookError::PayloadTooLarge => "webhook_payload_bytes_max",
        }
    }
}

/// Why a `Tollgate-Signature` header does not verify.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The header is not `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`.
    #[error("malformed signature header: {reason}")]
    Malformed {
        /// Why.
        reason: &'static str,
    },
    /// The timestamp is older than the tolerance (a replay, or a very late delivery).
    #[error("the signature timestamp is {age_s} s old (tolerance {tolerance_s} s)")]
    TooOld {
        /// Seconds between the timestamp and now.
        age_s: i64,
        /// The tolerance.
        tolerance_s: i64,
    },
    /// The timestamp is further in the future than the tolerance.
    #[error("the signature timestamp is {ahead_s} s in the future (tolerance {tolerance_s} s)")]
    InFuture {
        /// Seconds between now and the timestamp.
        ahead_s: i64,
        /// The tolerance.
        tolerance_s: i64,
    },
    /// No `v1` value is the HMAC of this timestamp and body with this secret.
    #[error("no signature matches the body")]
    Mismatch,
}

impl SignatureError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Malformed { .. } => "signature_malformed",
            SignatureError::TooOld { .. } => "signature_too_old",
            SignatureError::InFuture { .. } => "signature_in_future",
            SignatureError::Mismatch => "signature_mismatch",
        }
    }
}
