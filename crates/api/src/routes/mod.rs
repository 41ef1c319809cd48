//! Route handlers, one module per resource.

pub mod alerts;
pub(crate) mod credit_notes;
pub(crate) mod customers;
pub(crate) mod dropin;
pub(crate) mod entitlements;
pub(crate) mod events;
pub(crate) mod exports;
pub(crate) mod inspect;
pub mod invoices;
pub(crate) mod ipmeta;
pub(crate) mod keys;
pub(crate) mod meters;
pub(crate) mod ops;
pub(crate) mod orb;
pub(crate) mod plans;
pub(crate) mod portal_sessions;
pub(crate) mod providers;
pub(crate) mod reconciliation;
pub(crate) mod refunds;
pub(crate) mod stripe_meters;
pub(crate) mod subscriptions;
pub mod usage;
pub(crate) mod webhooks;

use axum::body::Body;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Largest JSON body of the management endpoints (meters, keys).
pub(crate) const MANAGEMENT_BODY_BYTES_MAX: usize = 256 * 1024;

/// Reads a body of at most `limit` bytes, answering 413 `body_too_large` beyond it.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {limit} bytes"),
            )
        } else {
            ApiError::bad_request(
                "unreadable_body",
                format!("the body could not be read: {inner}"),
            )
        }
    })
}

/// Parses a JSON body into `T`, answering 400 `malformed_json` or `invalid_body`.
pub(crate) async fn read_json<T: DeserializeOwned>(
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(body, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        let code = match e.classify() {
            Category::Data => "invalid_body",
            _ => "malformed_json",
        };
        ApiError::bad_request(code, e.to_string())
    })
}

/// Runs blocking work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(crate::error::join_error)?
}

/// Query parameters as a map, refusing names not in `allowed` (400 `unknown_parameter`) and
/// repeats (400 `duplicate_parameter`).
pub(crate) fn query_params(
    pairs: Vec<(String, String)>,
    allowed: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(
                "unknown_parameter",
                format!(
                    "unknown query parameter `{k}` (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad_request(
                "duplicate_parameter",
                format!("`{k}` given twice"),
            ));
        }
    }
    Ok(out)
}

/// The `limit` parameter: 1..=`max`, default `default`.
pub(crate) fn limit_param(
    params: &std::collections::BTreeMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request("invalid_limit", format!("limit is 1..={max}"))),
    }
}

/// The `status` parameter read by `parse`, or 400 `invalid_status` saying which are `allowed`.
pub(crate) fn status_param<T>(
    params: &std::collections::BTreeMap<String, String>,
    parse: impl Fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<Option<T>, ApiError> {
    params
        .get("status")
        .map(|s| {
            parse(s).ok_or_else(|| {
                ApiError::bad_request("invalid_status", format!("status is {allowed}"))
            })
        })
        .transpose()
}

/// Where the next page starts: the id of the last item of a full page (`None` on the last page).
pub(crate) fn next_after<T>(page: &[T], limit: usize, id: impl Fn(&T) -> &str) -> Option<String> {
    (page.len() == limit)
        .then(|| page.last().map(|item| id(item).to_owned()))
        .flatten()
}

/// The filters shared by the listings of invoice documents (credit notes, refunds):
/// `customer`, `invoice`, `status`, `after`, `limit`.
pub(crate) struct DocumentQuery<S> {
    pub customer: Option<tollgate_core::billing::CustomerKey>,
    pub invoice: Option<String>,
    pub status: Option<S>,
    pub after: Option<String>,
    pub limit: usize,
}

/// Reads a [`DocumentQuery`]: unknown parameters, a bad customer key, limit or status are 400s.
pub(crate) fn document_query<S>(
    pairs: Vec<(String, String)>,
    parse_status: impl Fn(&str) -> Option<S>,
    statuses: &str,
) -> Result<DocumentQuery<S>, ApiError> {
    let params = query_params(pairs, &["customer", "invoice", "status", "after", "limit"])?;
    Ok(DocumentQuery {
        customer: params
            .get("customer")
            .map(|c| crate::convert::billing::customer_key(c))
            .transpose()?,
        invoice: params.get("invoice").cloned(),
        status: status_param(&params, parse_status, statuses)?,
        after: params.get("after").cloned(),
        limit: limit_param(&params, 100, tollgate_store::billing::LIST_LIMIT_MAX)?,
    })
}
