//! Bodies of entitlements, checks, the session gauge and alerts.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// What a plan version or an override grants for one feature. `kind` decides which other
/// fields apply: `boolean` (`enabled`), `static` (`value`: number or text), `metered`
/// (`meter`, `limit`, `period`, `enforcement`), `concurrent_sessions` (`limit`,
/// `enforcement`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitlementBody {
    /// Feature key, `[a-z][a-z0-9_-]*`.
    pub feature: String,
    /// `boolean`, `static`, `metered` or `concurrent_sessions`.
    pub kind: String,
    /// `boolean`: whether the feature is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `static`: a number (JSON number or decimal string is kept as given) or a text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub value: Option<Value>,
    /// `metered`: the meter whose usage counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
    /// `metered`: decimal string in the meter's unit; `concurrent_sessions`: a whole number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `metered`: `billing_period` (default), `month`, `day` or `hour`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// `metered`, `concurrent_sessions`: `hard` (default: deny past the limit) or `soft`
    /// (allow and flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<String>,
}

/// An override of one feature for one customer (the feature comes from the path).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// As in [`EntitlementBody`].
    pub kind: String,
    /// `boolean`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `static`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub value: Option<Value>,
    /// `metered`.
    #[serde(default)]
    pub meter: Option<String>,
    /// `metered`, `concurrent_sessions`.
    #[serde(default)]
    pub limit: Option<String>,
    /// `metered`.
    #[serde(default)]
    pub period: Option<String>,
    /// `metered`, `concurrent_sessions`.
    #[serde(default)]
    pub enforcement: Option<String>,
}

/// "May this customer do this now?"
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// Customer key (event subject).
    pub customer: String,
    /// Feature key.
    pub feature: String,
    /// How much more would be used (decimal string or number, ≥ 0; default 0: "am I still
    /// within my limit?"). For `concurrent_sessions`, 1 asks to open one more.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub amount: Option<Value>,
}

/// The answer to a check.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckResponse {
    /// Customer key.
    pub customer: String,
    /// Feature key.
    pub feature: String,
    /// Whether to allow.
    pub allowed: bool,
    /// `not_entitled`, `disabled`, `entitled`, `above_static_value`, `within_limit`,
    /// `limit_exceeded` (hard: denied) or `soft_limit_exceeded` (allowed, flagged).
    pub reason: String,
    /// `plan` or `override`; absent when not entitled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The limit (decimal string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Used in the period (metered) or open now (sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
    /// `max(limit − used, 0)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<String>,
    /// When a metered limit starts counting again (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
    /// A static feature's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub value: Option<Value>,
}

/// Many checks in one request.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBatchBody {
    /// The checks (at most 1,000).
    pub checks: Vec<CheckBody>,
}

/// One answer of a batch: a result, or an error for that check alone.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckBatchItem {
    /// The answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<CheckResponse>,
    /// Why this check could not be answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::ErrorBody>,
}

/// Answers in request order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckBatchResponse {
    /// One per check.
    pub results: Vec<CheckBatchItem>,
}

/// A customer's features with their standing now.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerEntitlements {
    /// Customer key.
    pub customer: String,
    /// By feature.
    pub data: Vec<StandingResponse>,
}

/// One feature: the grant and a check of amount 0.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StandingResponse {
    /// The grant.
    pub grant: EntitlementBody,
    /// `plan` or `override`.
    pub source: String,
    /// What a check answers now.
    pub current: CheckResponse,
}

/// The session gauge of one customer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionsResponse {
    /// Customer key.
    pub customer: String,
    /// Sessions open now.
    pub open_now: u64,
    /// Seconds after which a session without `session.ended` counts as closed.
    pub timeout_seconds: i64,
    /// Peak of open sessions per window.
    pub windows: Vec<SessionWindow>,
}

/// The peak of one window.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionWindow {
    /// RFC 3339, inclusive.
    pub window_start: String,
    /// RFC 3339, exclusive.
    pub window_end: String,
    /// Most sessions open at one instant in the window.
    pub peak: u64,
}

/// A threshold of a usage alert.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdBody {
    /// `absolute` or `percent_of_limit`.
    pub kind: String,
    /// `absolute`: decimal string in the meter's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `percent_of_limit`: the feature whose metered limit counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// `percent_of_limit`: decimal string, e.g. `80`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<String>,
}

/// Parameters of the unusual-usage method (docs/entitlements.md); each has a default.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnomalyParamsBody {
    /// Complete hours before the judged hour (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_hours: Option<u32>,
    /// Fewest baseline hours with usage (default 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_active_hours: Option<u32>,
    /// Robust standard deviations above the median (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<String>,
    /// Spread floor as a share of the median (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_ratio: Option<String>,
    /// Hours below this usage are never unusual (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_usage: Option<String>,
}

/// What an alert watches. `type` decides the other fields: `usage` (`meter`, `threshold`),
/// `spend` (`amount_minor`), `unusual_usage` (`meter`, `params`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionBody {
    /// `usage`, `spend` or `unusual_usage`.
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `usage`, `unusual_usage`: the meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
    /// `usage`: where it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdBody>,
    /// `spend`: running charges of the period, in minor units of the customer's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    /// `unusual_usage`: the method's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<AnomalyParamsBody>,
}

/// A new alert rule.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertBody {
    /// What people call it.
    pub name: String,
    /// One customer; absent for every customer with a running subscription.
    #[serde(default)]
    pub customer: Option<String>,
    /// What it watches.
    pub condition: ConditionBody,
}

/// A change to a rule.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertPatch {
    /// Turn it on or off (off forgets where it stood).
    pub enabled: bool,
}

/// An alert rule.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertResponse {
    /// `alr_…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// The customer, or absent for all subscribed customers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// What it watches (defaults filled in).
    pub condition: ConditionBody,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// Every rule.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    /// By id.
    pub data: Vec<AlertResponse>,
}

/// Something that fired or recovered.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertEventResponse {
    /// `alev_…`.
    pub id: String,
    /// Order of logging (pass as `after` to page).
    pub seq: i64,
    /// `alert.triggered`, `alert.recovered` or `entitlement.exceeded`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The rule (`alr_…`) or `entitlement:<feature>`.
    pub rule: String,
    /// Customer key.
    pub customer: String,
    /// Start of the period (or hour) it belongs to, RFC 3339.
    pub period_start: String,
    /// What was measured: the meter, `spend:<currency>` or the feature.
    pub measured: String,
    /// The value observed (decimal string; minor units for spend).
    pub value: String,
    /// The threshold it was compared with.
    pub threshold: String,
    /// RFC 3339.
    pub created_at: String,
}

/// Logged events, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertEventList {
    /// Events.
    pub data: Vec<AlertEventResponse>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// What one evaluation pass did.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EvaluateResponse {
    /// (rule or limit, customer) pairs compared.
    pub observations: usize,
    /// Events logged by this pass.
    pub events: Vec<AlertEventResponse>,
    /// Pairs that could not be evaluated, with why.
    pub skipped: Vec<String>,
}
