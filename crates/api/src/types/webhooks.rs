//! Bodies of the webhook endpoints: endpoint registry, messages, deliveries and their log.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new webhook endpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointBody {
    /// Where messages are POSTed: an `http://` or `https://` URL.
    pub url: String,
    /// The event types it receives: `alert.triggered`, `alert.recovered`,
    /// `entitlement.exceeded`, `invoice.finalized`, `invoice.paid`, `invoice.voided`.
    pub event_types: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Changes to an endpoint; absent fields stay. `enabled: true` also resets its failure run.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointPatch {
    /// A new URL.
    pub url: Option<String>,
    /// New event types (replacing the old).
    pub event_types: Option<Vec<String>>,
    /// Free text.
    pub description: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// A webhook endpoint (its secret is shown only on creation and rotation).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpointResponse {
    /// `we_…`.
    pub id: String,
    /// The URL.
    pub url: String,
    /// Free text.
    pub description: String,
    /// The event types it receives.
    pub event_types: Vec<String>,
    /// Whether deliveries are attempted.
    pub enabled: bool,
    /// Why it is disabled, e.g. `disabled after 50 consecutive failed attempts (...)`.
    pub disabled_reason: Option<String>,
    /// Failed attempts since its last success.
    pub consecutive_failures: u32,
    /// After a rotation, the previous secret signs too (a second `v1`) until then (RFC 3339).
    pub previous_secret_expires_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// An endpoint with its secret: the answer of creation and of `rotate_secret`, the only times
/// the secret is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpointWithSecret {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookEndpointResponse,
    /// `whsec_…`: the HMAC-SHA256 key of `Tollgate-Signature`.
    pub secret: String,
}

/// Endpoints.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpointList {
    /// By id.
    pub data: Vec<WebhookEndpointResponse>,
}

/// A message as listed: its envelope, exactly as endpoints receive it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookMessageResponse {
    /// `msg_…` (also the `Tollgate-Message-Id` header).
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339.
    pub created_at: String,
    /// The message's `data`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Messages, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookMessageList {
    /// Oldest first; page with `after` = the last id.
    pub data: Vec<WebhookMessageResponse>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookAttemptResponse {
    /// When it started (RFC 3339).
    pub at: String,
    /// How long it took (ms).
    pub duration_ms: i64,
    /// The HTTP status, when an answer came.
    pub http_status: Option<u16>,
    /// Why it failed without an answer (`timeout`, `connection refused`, ...).
    pub error: Option<String>,
}

/// One delivery of a message to an endpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveryResponse {
    /// `dlv_…`.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// `pending`, `delivered`, `failed` (out of attempts), `skipped` (endpoint deleted).
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending only; RFC 3339).
    pub next_attempt_at: Option<String>,
    /// HTTP status of the last attempt.
    pub last_http_status: Option<u16>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub delivered_at: Option<String>,
    /// Every attempt, oldest first.
    pub attempts_log: Vec<WebhookAttemptResponse>,
}

/// A message with its deliveries and their log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookMessageDetail {
    /// The message.
    #[serde(flatten)]
    pub message: WebhookMessageResponse,
    /// Every delivery (one per endpoint, one more per replay).
    pub deliveries: Vec<WebhookDeliveryResponse>,
}

/// What to replay.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookReplayBody {
    /// Only to this endpoint (it need not be subscribed; it must be enabled). Absent: every
    /// enabled endpoint subscribed to the message's type.
    pub endpoint_id: Option<String>,
}

/// The deliveries a replay created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookReplayResponse {
    /// New pending deliveries.
    pub deliveries: Vec<WebhookDeliveryResponse>,
}
