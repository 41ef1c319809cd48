//! Bodies of `/v1/ip/...` and `/v1/audit`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/ip/allocations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAllocationRequest {
    /// Customer key (the `subject` its traffic gets).
    pub customer: String,
    /// CIDR range, IPv4 or IPv6, network address (`203.0.113.0/24`, `2001:db8::/48`).
    pub cidr: String,
    /// RFC 3339; default now.
    pub valid_from: Option<String>,
    /// RFC 3339, exclusive; default open.
    pub valid_to: Option<String>,
}

/// An allocation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AllocationBody {
    /// Id (`alc_...`).
    pub id: String,
    /// Customer key.
    pub customer: String,
    /// The range.
    pub cidr: String,
    /// RFC 3339.
    pub valid_from: String,
    /// RFC 3339, exclusive; null = open.
    pub valid_to: Option<String>,
}

/// A list of allocations.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AllocationList {
    /// Ordered by range, then start.
    pub data: Vec<AllocationBody>,
}

/// Country and network of an address from the MaxMind-format databases.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrichmentBody {
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// Autonomous system organisation.
    pub as_org: Option<String>,
}

/// `GET /v1/ip/{addr}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IpLookupResponse {
    /// The address as parsed.
    pub address: String,
    /// The instant asked about (RFC 3339).
    pub at: String,
    /// The allocation that held the address then (longest prefix), or null.
    pub owner: Option<AllocationBody>,
    /// The subject its events get: the owner's customer, or `unattributed`.
    pub subject: String,
    /// Enrichment.
    pub enrichment: EnrichmentBody,
}

/// An attribution source: events from `source` without `subject` get one from the address at
/// `data.<address_field>`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributionSourceBody {
    /// CloudEvents `source`, exactly.
    pub source: String,
    /// Field of `data` holding the client address.
    pub address_field: String,
}

/// The sources in force (built-in access-log sources included).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttributionSourceList {
    /// By source.
    pub data: Vec<AttributionSourceBody>,
}

/// `POST /v1/ip/enrichment/reload`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReloadResponse {
    /// Databases loaded.
    pub databases: usize,
}

/// One audited change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditRecordBody {
    /// Order.
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    /// API key id (or `cli`).
    pub actor: String,
    /// `ip_allocation`, `attribution_source`, `inspect_rules`.
    pub kind: String,
    /// Which object.
    pub object: String,
    /// `create`, `close`, `put`, `delete`, `publish`, ...
    pub action: String,
    /// State before.
    pub before: Option<Value>,
    /// State after.
    pub after: Option<Value>,
}

/// `GET /v1/audit`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// Oldest first.
    pub data: Vec<AuditRecordBody>,
}
