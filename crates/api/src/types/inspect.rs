//! Bodies of `/v1/inspect/...`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionBody {
    /// Let it through, unrecorded.
    Allow,
    /// Let it through, recorded as an `inspect.flagged` event.
    Flag,
    /// Refuse it, recorded as an `inspect.blocked` event.
    Block,
}

/// The host condition of a rule: exactly one of the three keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostMatchBody {
    /// Exactly this host (case-insensitive, trailing dot ignored).
    Exact(String),
    /// This domain and every host under it.
    Suffix(String),
    /// Any host listed in this category of the rule set (each listed host matches itself and
    /// its subdomains).
    Category(String),
}

/// One rule; every condition given must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// Id, unique in its set (1..=253 bytes).
    pub id: String,
    /// Host condition; none = any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostMatchBody>,
    /// The request path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// ISO country code of the client address (MaxMind enrichment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// ASN of the client address (MaxMind enrichment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// The action.
    pub action: ActionBody,
    /// Category reported with the decision (default: the host category, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// `POST /v1/inspect/rule_sets`: the whole rule set of the next version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRuleSetRequest {
    /// Rules.
    pub rules: Vec<RuleBody>,
    /// Category name → hosts.
    #[serde(default)]
    pub categories: BTreeMap<String, Vec<String>>,
    /// Publish only if this is the current version (0 = none yet); otherwise 409
    /// `rule_set_version_conflict`.
    #[serde(default)]
    pub base_version: Option<u64>,
}

/// A published version without its rules.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleSetInfoBody {
    /// Version number (1, 2, ...).
    pub version: u64,
    /// RFC 3339.
    pub created_at: String,
    /// The API key id that published it.
    pub created_by: String,
    /// Number of rules.
    pub rules: usize,
    /// Number of categories.
    pub categories: usize,
    /// XXH3-128 of the stored document, hex.
    pub digest: String,
}

/// A published version with its rules.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleSetBody {
    /// Version number.
    pub version: u64,
    /// RFC 3339.
    pub created_at: String,
    /// The API key id that published it.
    pub created_by: String,
    /// XXH3-128 of the stored document, hex.
    pub digest: String,
    /// Rules.
    pub rules: Vec<RuleBody>,
    /// Category name → hosts.
    pub categories: BTreeMap<String, Vec<String>>,
}

/// Versions, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleSetList {
    /// Versions.
    pub data: Vec<RuleSetInfoBody>,
}

/// `POST /v1/inspect/decide`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// Customer key; when absent, the owner of `client_ip` now (IP allocations), or
    /// `unattributed`.
    #[serde(default)]
    pub customer: Option<String>,
    /// The client's address (IPv4 or IPv6); country and ASN come from its enrichment.
    pub client_ip: String,
    /// Destination host.
    pub dest_host: String,
    /// Request path; default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// The caller's request id: the recorded event's id, so a retried decision counts once.
    /// Default: a generated id.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Bytes of the request, recorded in the event's `data.bytes`.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// RFC 3339 time of the request, the recorded event's `time`; default now. A retry that
    /// sends the same `request_id` and `time` is a `duplicate`; with another time a
    /// `conflict`. Either way it counts once.
    #[serde(default)]
    pub time: Option<String>,
}

/// The decision.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecideResponse {
    /// What to do.
    pub action: ActionBody,
    /// The rule that decided; null when none matched (allowed).
    pub rule: Option<String>,
    /// Its category, if any.
    pub category: Option<String>,
    /// The rule-set version that decided; null when none is published.
    pub rule_set_version: Option<u64>,
    /// The customer the decision is for (given, attributed, or `unattributed`).
    pub customer: String,
    /// Country of `client_ip` from enrichment.
    pub country: Option<String>,
    /// ASN of `client_ip` from enrichment.
    pub asn: Option<u32>,
    /// For `flag` and `block`: the recorded event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<RecordedEventBody>,
}

/// How a decision was recorded.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordedEventBody {
    /// Event id.
    pub id: String,
    /// `inspect.flagged` or `inspect.blocked`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `accepted`, `duplicate` (this request id was recorded before, same content) or
    /// `conflict` (recorded before with other content; the first one counts).
    pub verdict: String,
}
