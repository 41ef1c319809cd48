//! Request and response bodies of the HTTP API (snake_case JSON), with their OpenAPI schemas.
//! Converted to and from domain types in [`crate::convert`] only.

pub mod billing;
pub mod credit_notes;
pub mod dropin;
pub mod entitlements;
pub mod inspect;
pub mod ipmeta;
pub mod orb;
pub mod portal;
pub mod providers;
pub mod reconciliation;
pub mod refunds;
pub mod stripe_meters;
pub mod webhooks;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The answer to `POST /v1/events`: counts by verdict and every event not accepted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestResponse {
    /// Events counted.
    pub accepted: usize,
    /// Events already counted (same `source` and `id`, same payload).
    pub duplicates: usize,
    /// Events whose `source` and `id` were counted with a different payload; the first stays.
    pub conflicts: usize,
    /// Events invalid or outside the acceptance window.
    pub rejected: usize,
    /// One entry per event that was not accepted, in request order.
    pub errors: Vec<IngestError>,
}

/// One event that was not accepted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestError {
    /// Array position, or NDJSON line number − 1.
    pub index: usize,
    /// The event's `id`, when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Stable code: `duplicate`, `conflict`, `too_old`, `in_future`, `missing_attribute`,
    /// `invalid_attribute`, `empty_attribute`, `attribute_too_long`, `unsupported_specversion`,
    /// `invalid_time`, `event_too_large`, `malformed_event`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// How values combine.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AggregationBody {
    /// Sum of the value.
    Sum,
    /// Number of events.
    Count,
    /// Number of distinct values.
    UniqueCount,
    /// Largest value.
    Max,
    /// Smallest value.
    Min,
    /// Value of the latest event.
    Latest,
}

/// One event type or a list of them.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum EventTypeBody {
    /// One type.
    One(String),
    /// Any of several types.
    Many(Vec<String>),
}

/// A filter condition on the value at a path; every operator given must hold.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditionBody {
    /// Equal (numbers by value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub eq: Option<Value>,
    /// Not equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ne: Option<Value>,
    /// One of.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub in_: Option<Vec<Value>>,
    /// None of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub nin: Option<Vec<Value>>,
    /// Greater than (number or decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub gt: Option<Value>,
    /// Greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub gte: Option<Value>,
    /// Less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub lt: Option<Value>,
    /// Less than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub lte: Option<Value>,
    /// Present (true) or absent (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// A meter definition (`PUT /v1/meters/{slug}`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MeterBody {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Event types read; omitted for all types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventTypeBody>,
    /// How values combine.
    pub aggregation: AggregationBody,
    /// JSON path of the value, e.g. `$.data.bytes_out`; required unless `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_path: Option<String>,
    /// Dimensions: name → JSON path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_by: BTreeMap<String, String>,
    /// Conditions: JSON path → condition.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, ConditionBody>,
}

/// A meter with its counters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MeterResponse {
    /// The slug.
    pub slug: String,
    /// The definition.
    #[serde(flatten)]
    pub definition: MeterBody,
    /// Events counted so far.
    pub counted_events: u64,
    /// Events that matched but had no usable value at `value_path`.
    pub skipped_events: u64,
}

/// A list of meters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MeterList {
    /// The meters, by slug.
    pub data: Vec<MeterResponse>,
}

/// One usage row.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageRowBody {
    /// The subject (customer key).
    pub subject: String,
    /// Window start, RFC 3339 UTC, inclusive.
    pub window_start: String,
    /// Window end, RFC 3339 UTC, exclusive.
    pub window_end: String,
    /// Values of the requested group_by dimensions (`null`: absent in the events).
    pub group: BTreeMap<String, Option<String>>,
    /// The aggregate as an exact decimal string.
    pub value: String,
}

/// The answer to a usage query.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    /// The meter.
    pub meter: String,
    /// Range start used.
    pub from: String,
    /// Range end used.
    pub to: String,
    /// Window size, or null for one window over the range.
    pub window_size: Option<String>,
    /// Time zone of window boundaries.
    pub time_zone: String,
    /// Rows with data, by subject, group and window start.
    pub data: Vec<UsageRowBody>,
}

/// `POST /v1/api_keys`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Name for people.
    #[serde(default)]
    pub name: Option<String>,
    /// Scopes: `ingest`, `read`, `admin`.
    pub scopes: Vec<String>,
}

/// An API key, without its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyResponse {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Revocation time.
    pub revoked_at: Option<String>,
}

/// A key just created; `secret` is shown only here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKeyResponse {
    /// The key.
    #[serde(flatten)]
    pub key: KeyResponse,
    /// The secret: send it as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// A list of keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// Keys, newest first.
    pub data: Vec<KeyResponse>,
}

/// The error body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
}

/// An error.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code.
    pub code: String,
    /// For people.
    pub message: String,
    /// Structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}
