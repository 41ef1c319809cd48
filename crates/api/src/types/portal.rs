//! Bodies of the portal-link and export endpoints.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/customers/{key}/portal_sessions`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionBody {
    /// How long the link works, in seconds: 1..=7776000 (90 days); default 3600.
    pub expires_in_seconds: Option<i64>,
    /// Where the portal is reached by the customer, e.g. `https://billing.example.com`;
    /// default `http://` + the request's `Host`.
    pub base_url: Option<String>,
}

/// A signed portal link for one customer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PortalSessionResponse {
    /// The customer the link shows.
    pub customer: String,
    /// The link to give the customer (the token is in its path; no login, no cookies).
    pub url: String,
    /// The token alone (the last path segment of `url`).
    pub token: String,
    /// RFC 3339; the link answers 401 from then on.
    pub expires_at: String,
}

/// An admin link.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminSessionResponse {
    /// Open this in a browser: the reconciliation runs.
    pub url: String,
    /// The token inside the URL.
    pub token: String,
    /// RFC 3339: when the link stops working.
    pub expires_at: String,
}
