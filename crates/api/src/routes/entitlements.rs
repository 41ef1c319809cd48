//! Entitlement checks on the request path, per-customer overrides, and the session gauge.
//!
//! Checks run on the async worker itself: they read the checker's cached grants and the
//! in-memory rollups (microseconds); only a customer's first check after a billing change
//! reads the database.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use rust_decimal::Decimal;
use tollgate_core::entitlement::FeatureKey;
use tollgate_core::limits::{CHECKS_BATCH_MAX, SESSION_WINDOWS_MAX};
use tollgate_core::time::{MINUTE_MS, UnixMs};
use tollgate_core::usage::{WindowSize, windows};
use tollgate_store::Scope;
use tollgate_store::billing::entitlements::CheckError;

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, query_params, read_json};
use crate::ApiError;
use crate::auth::{authorize, authorize_any};
use crate::convert::billing::customer_key;
use crate::convert::entitlements::{
    check_response, decimal_value, decision_response, entitlement_body, feature_key,
    override_from_body,
};
use crate::convert::{instant, time_text};
use crate::types::entitlements::{
    CheckBatchBody, CheckBatchItem, CheckBatchResponse, CheckBody, CheckResponse,
    CustomerEntitlements, OverrideBody, SessionWindow, SessionsResponse, StandingResponse,
};
use crate::types::{ErrorBody, ErrorResponse};

/// Largest body of a batch check (1,000 checks of long keys fit).
const CHECK_BODY_BYTES_MAX: usize = 1024 * 1024;

impl From<CheckError> for ApiError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::CustomerNotFound(_) => ApiError::not_found(e.code(), e.to_string()),
            CheckError::Billing(b) => b.into(),
            CheckError::Usage(ref q) => match q {
                tollgate_store::engine::QueryError::MeterNotFound(_) => {
                    ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string())
                }
                _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string()),
            },
        }
    }
}

/// Decides one check (no IO but a cache miss).
fn check_one(state: &crate::AppState, body: &CheckBody) -> Result<CheckResponse, ApiError> {
    let customer = customer_key(&body.customer)?;
    let feature = feature_key(&body.feature)?;
    let amount = match &body.amount {
        None => Decimal::ZERO,
        Some(v) => decimal_value("amount", v)?,
    };
    if amount < Decimal::ZERO {
        return Err(ApiError::bad_request(
            "invalid_amount",
            "amount is zero or more",
        ));
    }
    let now = state.engine.now();
    let checked = state.checker.check(
        &state.engine,
        &state.billing,
        &customer,
        &feature,
        amount,
        now,
    )?;
    Ok(check_response(&body.customer, &body.feature, &checked))
}

/// May this customer do this now? Answers from memory: usage counted by every acknowledged
/// ingest batch, the grants of the running plan version and the customer's overrides.
#[utoipa::path(
    post,
    path = "/v1/entitlements/check",
    tag = "entitlements",
    request_body = CheckBody,
    responses(
        (status = 200, body = CheckResponse),
        (status = 400, description = "`invalid_body`, `malformed_json`, `invalid_customer_key`, `invalid_decimal`, `invalid_amount`", body = ErrorResponse),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
        (status = 409, description = "`meter_not_found`: the grant's meter was deleted", body = ErrorResponse),
        (status = 422, description = "`invalid_feature`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn check(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CheckResponse>, ApiError> {
    authorize_check(&state, &headers)?;
    let body: CheckBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    Ok(Json(check_one(&state, &body)?))
}

/// Checks are asked by proxies holding an `ingest` key as well as by dashboards with `read`.
fn authorize_check(state: &crate::State, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize_any(state, headers, &[Scope::Read, Scope::Ingest]).map(|_| ())
}

/// Many checks in one request; each gets its own answer or error, in order.
#[utoipa::path(
    post,
    path = "/v1/entitlements/check_batch",
    tag = "entitlements",
    request_body = CheckBatchBody,
    responses(
        (status = 200, body = CheckBatchResponse),
        (status = 400, description = "`invalid_body`, `malformed_json`", body = ErrorResponse),
        (status = 413, description = "`checks_batch_max`, `body_too_large`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn check_batch(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CheckBatchResponse>, ApiError> {
    authorize_check(&state, &headers)?;
    let body: CheckBatchBody = read_json(body, CHECK_BODY_BYTES_MAX).await?;
    if body.checks.len() > CHECKS_BATCH_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "checks_batch_max",
            format!("at most {CHECKS_BATCH_MAX} checks per request"),
        ));
    }
    let results = body
        .checks
        .iter()
        .map(|c| match check_one(&state, c) {
            Ok(r) => CheckBatchItem {
                result: Some(r),
                error: None,
            },
            Err(e) => CheckBatchItem {
                result: None,
                error: Some(ErrorBody {
                    code: e.code.to_owned(),
                    message: e.message,
                    details: None,
                }),
            },
        })
        .collect();
    Ok(Json(CheckBatchResponse { results }))
}

/// A customer's features: each grant (plan or override) with what a check answers now.
#[utoipa::path(
    get,
    path = "/v1/customers/{key}/entitlements",
    tag = "entitlements",
    params(("key" = String, Path)),
    responses(
        (status = 200, body = CustomerEntitlements),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<CustomerEntitlements>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let customer = customer_key(&key)?;
    let st = state.clone();
    let c = customer.clone();
    let standings = blocking(move || {
        Ok(st
            .checker
            .standings(&st.engine, &st.billing, &c, st.engine.now())?)
    })
    .await?;
    Ok(Json(CustomerEntitlements {
        customer: customer.to_string(),
        data: standings
            .iter()
            .map(|s| StandingResponse {
                grant: entitlement_body(&s.feature, &s.grant),
                source: match s.source {
                    tollgate_core::entitlement::GrantSource::Plan => "plan".into(),
                    tollgate_core::entitlement::GrantSource::Override => "override".into(),
                },
                current: decision_response(
                    customer.as_str(),
                    s.feature.as_str(),
                    &s.decision,
                    Some(s.source),
                ),
            })
            .collect(),
    }))
}

/// Set a customer's own grant of a feature, replacing the plan's (or adding one the plan does
/// not have). Takes effect for the next check.
#[utoipa::path(
    put,
    path = "/v1/customers/{key}/entitlements/{feature}",
    tag = "entitlements",
    params(("key" = String, Path), ("feature" = String, Path)),
    request_body = OverrideBody,
    responses(
        (status = 200, body = CustomerEntitlements),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
        (status = 422, description = "`invalid_feature`, `invalid_entitlement`, `unknown_meter`, `entitlements_max`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn put_override(
    State(state): State<crate::State>,
    Path((key, feature)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CustomerEntitlements>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let customer = customer_key(&key)?;
    let feature: FeatureKey = feature_key(&feature)?;
    let body: OverrideBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let e = override_from_body(feature, body)?;
    super::plans::check_grant_meter(&state, &e.grant)?;
    let st = state.clone();
    let c = customer.clone();
    blocking(move || Ok(st.billing.set_override(&c, &e, st.engine.now())?)).await?;
    list(State(state), Path(key), headers).await
}

/// Remove a customer's override; the plan's grant applies again.
#[utoipa::path(
    delete,
    path = "/v1/customers/{key}/entitlements/{feature}",
    tag = "entitlements",
    params(("key" = String, Path), ("feature" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`override_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn delete_override(
    State(state): State<crate::State>,
    Path((key, feature)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let customer = customer_key(&key)?;
    let feature = feature_key(&feature)?;
    let st = state.clone();
    blocking(move || Ok(st.billing.delete_override(&customer, &feature)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The session gauge of a customer: sessions open now, and the peak of open sessions in each
/// window of a range (from `session.started` / `session.ended` events, matched by
/// `data.session_id`; a session without an end closes after the configured timeout).
#[utoipa::path(
    get,
    path = "/v1/customers/{key}/sessions",
    tag = "entitlements",
    params(
        ("key" = String, Path),
        ("from" = Option<String>, Query, description = "RFC 3339 whole minute, inclusive; default 24 hours before `to`"),
        ("to" = Option<String>, Query, description = "RFC 3339 whole minute, exclusive; default now rounded up to a minute"),
        ("window_size" = Option<String>, Query, description = "minute | hour (default) | day | month"),
        ("time_zone" = Option<String>, Query, description = "IANA zone of window boundaries; default UTC"),
    ),
    responses(
        (status = 200, body = SessionsResponse),
        (status = 400, description = "`invalid_time`, `time_not_minute_aligned`, `empty_time_range`, `invalid_window_size`, `invalid_time_zone`, `too_many_windows`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn sessions(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Json<SessionsResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let customer = customer_key(&key)?;
    let p = query_params(pairs, &["from", "to", "window_size", "time_zone"])?;
    let now = state.engine.now();
    let to = match p.get("to") {
        Some(t) => instant("to", t)?,
        None => UnixMs((now.0 + MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS),
    };
    let from = match p.get("from") {
        Some(t) => instant("from", t)?,
        None => UnixMs(to.0 - 24 * 60 * MINUTE_MS),
    };
    let size = match p.get("window_size").map(String::as_str) {
        None => WindowSize::Hour,
        Some(w) => WindowSize::parse(w).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_window_size",
                "window_size is minute, hour, day or month",
            )
        })?,
    };
    let tz = match p.get("time_zone") {
        None => jiff::tz::TimeZone::UTC,
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
            ApiError::bad_request(
                "invalid_time_zone",
                format!("unknown IANA time zone `{name}`"),
            )
        })?,
    };
    let spans = windows(from, to, Some(size), &tz)?;
    if spans.len() > SESSION_WINDOWS_MAX {
        return Err(ApiError::bad_request(
            "too_many_windows",
            format!("at most {SESSION_WINDOWS_MAX} windows; narrow the range or widen the windows"),
        ));
    }
    let mut bounds: Vec<UnixMs> = spans.iter().map(|(s, _)| *s).collect();
    bounds.extend(spans.last().map(|(_, e)| *e));
    let peaks = state.engine.session_peaks(customer.as_str(), &bounds);
    Ok(Json(SessionsResponse {
        customer: customer.to_string(),
        open_now: state.engine.open_sessions(customer.as_str(), now),
        timeout_seconds: state.engine.config().session_timeout_ms / 1000,
        windows: peaks
            .iter()
            .map(|w| SessionWindow {
                window_start: time_text(w.start),
                window_end: time_text(w.end),
                peak: w.peak,
            })
            .collect(),
    }))
}
