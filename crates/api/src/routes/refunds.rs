//! Refunds: give back (part of) what was collected on an invoice, list and read refunds,
//! cancel one not yet sent, and record the outcome of one paid back outside a provider.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_core::refund::{RefundChange, RefundOrigin, RefundStatus};
use tollgate_store::Scope;
use tollgate_store::billing::refunds::{NewRefund, RefundFilter};

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, document_query, next_after, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::refunds::{reason, refund_response};
use crate::types::ErrorResponse;
use crate::types::refunds::{RefundBody, RefundList, RefundOutcomeBody, RefundResponse};

/// Refund (part of) what was collected on a paid invoice. Checked against what was collected
/// less every pending or succeeded refund (and what the provider reports refunded). A refund
/// of a provider payment is `pending` until the provider answers; it is sent exactly once
/// (idempotency key from the refund's id, intent recorded before the call).
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/refunds",
    tag = "refunds",
    params(("id" = String, Path)),
    request_body = RefundBody,
    responses(
        (status = 201, body = RefundResponse),
        (status = 400, description = "`invalid_body`, `invalid_reason`, `invalid_refund_amount`, `invalid_refund_memo`", body = ErrorResponse),
        (status = 404, description = "`invoice_not_found`", body = ErrorResponse),
        (status = 409, description = "`nothing_to_refund` (not paid, or all of it refunded or reserved)", body = ErrorResponse),
        (status = 422, description = "`refund_exceeds_collected`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<RefundResponse>), ApiError> {
    let key = authorize(&state, &headers, Scope::Admin)?;
    let body: RefundBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let new = NewRefund {
        invoice: id,
        amount_minor: body.amount_minor,
        reason: reason(&body.reason)?,
        memo: body.memo.unwrap_or_default(),
        origin: RefundOrigin::Manual,
        origin_ref: None,
        actor: key.id,
    };
    let st = state.clone();
    let refund = blocking(move || {
        let now = st.engine.now();
        Ok(st.billing.create_refund(&new, now)?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(refund_response(&refund))))
}

/// List refunds.
#[utoipa::path(
    get,
    path = "/v1/refunds",
    tag = "refunds",
    params(
        ("customer" = Option<String>, Query),
        ("invoice" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "pending, succeeded, failed, canceled"),
        ("after" = Option<String>, Query, description = "Ids after this one"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = RefundList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`, `invalid_status`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RefundList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let q = document_query(
        pairs,
        RefundStatus::parse,
        "pending, succeeded, failed or canceled",
    )?;
    let limit = q.limit;
    let filter = RefundFilter {
        customer: q.customer,
        invoice: q.invoice,
        status: q.status,
        after: q.after,
        limit,
    };
    let st = state.clone();
    let refunds = blocking(move || Ok(st.billing.refunds(&filter)?)).await?;
    Ok(Json(RefundList {
        next_after: next_after(&refunds, limit, |r| &r.id),
        data: refunds.iter().map(refund_response).collect(),
    }))
}

/// Read a refund.
#[utoipa::path(
    get,
    path = "/v1/refunds/{id}",
    tag = "refunds",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = RefundResponse),
        (status = 404, description = "`refund_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RefundResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let st = state.clone();
    let refund = blocking(move || Ok(st.billing.refund(&id)?)).await?;
    Ok(Json(refund_response(&refund)))
}

/// Cancel a pending refund that was not sent: any out-of-band one, a provider one only before
/// its request was recorded as sent.
#[utoipa::path(
    post,
    path = "/v1/refunds/{id}/cancel",
    tag = "refunds",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = RefundResponse),
        (status = 404, description = "`refund_not_found`", body = ErrorResponse),
        (status = 409, description = "`refund_not_pending`, `refund_in_flight` (sent to the provider)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn cancel(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RefundResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let refund = blocking(move || {
        let now = st.engine.now();
        Ok(st.billing.cancel_refund(&id, now)?)
    })
    .await?;
    Ok(Json(refund_response(&refund)))
}

async fn outcome(
    state: crate::State,
    headers: HeaderMap,
    id: String,
    change: RefundChange,
    body: Body,
) -> Result<Json<RefundResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let bytes = super::read_body(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let body: RefundOutcomeBody = if bytes.is_empty() {
        RefundOutcomeBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
    };
    let st = state.clone();
    let refund = blocking(move || {
        let now = st.engine.now();
        Ok(st
            .billing
            .record_refund_outcome(&id, change, body.failure.as_deref(), now)?)
    })
    .await?;
    Ok(Json(refund_response(&refund)))
}

/// Record that an out-of-band refund was paid back.
#[utoipa::path(
    post,
    path = "/v1/refunds/{id}/succeed",
    tag = "refunds",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = RefundResponse),
        (status = 404, description = "`refund_not_found`", body = ErrorResponse),
        (status = 409, description = "`refund_not_pending`, `refund_executed_by_provider`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn succeed(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RefundResponse>, ApiError> {
    outcome(state, headers, id, RefundChange::Succeed, body).await
}

/// Record that an out-of-band refund could not be paid back (body: `{"failure": "…"}`).
#[utoipa::path(
    post,
    path = "/v1/refunds/{id}/fail",
    tag = "refunds",
    params(("id" = String, Path)),
    request_body(content = RefundOutcomeBody, description = "Optional"),
    responses(
        (status = 200, body = RefundResponse),
        (status = 404, description = "`refund_not_found`", body = ErrorResponse),
        (status = 409, description = "`refund_not_pending`, `refund_executed_by_provider`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn fail(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RefundResponse>, ApiError> {
    outcome(state, headers, id, RefundChange::Fail, body).await
}
