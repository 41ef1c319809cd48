//! `/v1/providers/stripe/…`: Stripe's webhook (verified by its `Stripe-Signature`, no API key)
//! and, for admins, the provider objects Tollgate maps to and the outbox of outgoing calls.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_core::provider::{
    Provider, STRIPE_SIGNATURE_HEADER, STRIPE_SIGNATURE_TOLERANCE_MS,
    STRIPE_WEBHOOK_BODY_BYTES_MAX, StripeEvent,
};
use tollgate_core::webhook::{self, SignatureError};
use tollgate_store::Scope;
use tollgate_store::billing::BillingStoreError;
use tollgate_store::providers::{CallFilter, CallStatus, PROVIDER_LIST_LIMIT_MAX};

use super::{blocking, limit_param, query_params, read_body};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::providers::{call_response, object_response};
use crate::types::ErrorResponse;
use crate::types::providers::*;

/// Receive a Stripe webhook event. Verifies `Stripe-Signature` (`t=…,v1=…`: HMAC-SHA256 of
/// `"t.body"` with the endpoint's signing secret, timestamp within 5 minutes), then applies
/// `invoice.paid`, `invoice.payment_failed`, `charge.refunded` and `charge.dispute.created`
/// once per event id; other types are acknowledged and ignored.
#[utoipa::path(
    post,
    path = "/v1/providers/stripe/webhook",
    tag = "providers",
    request_body(content = String, description = "A Stripe event, exactly as Stripe sent it", content_type = "application/json"),
    responses(
        (status = 200, body = StripeWebhookAnswer),
        (status = 400, description = "`stripe_signature_missing`, `stripe_signature_invalid`, `stripe_signature_expired`, `provider_event_invalid`", body = ErrorResponse),
        (status = 404, description = "`provider_not_configured` (no Stripe webhook secret)", body = ErrorResponse),
        (status = 409, description = "`provider_object_pending`: the invoice's push has not recorded its outcome yet; Stripe sends the event again", body = ErrorResponse),
        (status = 413, description = "`body_too_large`", body = ErrorResponse),
    )
)]
pub(crate) async fn stripe_webhook(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StripeWebhookAnswer>, ApiError> {
    let Some(secret) = state.stripe_webhook_secret.clone() else {
        return Err(ApiError::not_found(
            "provider_not_configured",
            "Stripe webhooks are off: start the server with --stripe-webhook-secret",
        ));
    };
    let bytes = read_body(body, STRIPE_WEBHOOK_BODY_BYTES_MAX).await?;
    let header = headers
        .get(STRIPE_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "stripe_signature_missing",
                "the Stripe-Signature header is missing",
            )
        })?;
    webhook::verify(
        &secret,
        header,
        &bytes,
        state.engine.now(),
        STRIPE_SIGNATURE_TOLERANCE_MS,
    )
    .map_err(signature_error)?;
    let event =
        StripeEvent::parse(&bytes).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    let st = state.clone();
    let applied = blocking(move || {
        st.billing
            .apply_provider_event(Provider::Stripe, &event, st.engine.now())
            .map_err(|e| match e {
                BillingStoreError::Invalid { code, message } => {
                    ApiError::new(StatusCode::CONFLICT, code, message)
                }
                other => other.into(),
            })
    })
    .await?;
    Ok(Json(StripeWebhookAnswer {
        received: true,
        duplicate: applied.duplicate,
        outcome: applied.outcome,
        invoice: applied.invoice,
    }))
}

fn signature_error(e: SignatureError) -> ApiError {
    let code = match e {
        SignatureError::TooOld { .. } | SignatureError::InFuture { .. } => {
            "stripe_signature_expired"
        }
        SignatureError::Malformed { .. } | SignatureError::Mismatch => "stripe_signature_invalid",
    };
    ApiError::bad_request(code, format!("Stripe-Signature: {e}"))
}

/// Tollgate objects and their Stripe counterparts, with what Stripe reported about each
/// invoice's money (paid, refunded, disputed): the record reconciliation compares against.
#[utoipa::path(
    get,
    path = "/v1/providers/stripe/objects",
    tag = "providers",
    params(
        ("kind" = Option<String>, Query, description = "`customer` or `invoice`"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = ProviderObjectList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn objects(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<ProviderObjectList>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let params = query_params(pairs, &["kind", "limit"])?;
    let limit = limit_param(&params, 100, PROVIDER_LIST_LIMIT_MAX)?;
    let kind = params.get("kind").cloned();
    let st = state.clone();
    let list = blocking(move || {
        Ok(st
            .providers
            .objects(Provider::Stripe, kind.as_deref(), limit)?)
    })
    .await?;
    Ok(Json(ProviderObjectList {
        data: list.iter().map(object_response).collect(),
    }))
}

/// The outbox of calls to Stripe, newest first, each with its attempt log.
#[utoipa::path(
    get,
    path = "/v1/providers/stripe/calls",
    tag = "providers",
    params(
        ("object" = Option<String>, Query, description = "Only calls for this customer key or invoice id"),
        ("status" = Option<String>, Query, description = "`pending`, `done` or `failed`"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = ProviderCallList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`, `invalid_status`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn calls(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<ProviderCallList>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let params = query_params(pairs, &["object", "status", "limit"])?;
    let status = match params.get("status").map(String::as_str) {
        None => None,
        Some("pending") => Some(CallStatus::Pending),
        Some("done") => Some(CallStatus::Done),
        Some("failed") => Some(CallStatus::Failed),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_status",
                "status is `pending`, `done` or `failed`",
            ));
        }
    };
    let filter = CallFilter {
        object_id: params.get("object").cloned(),
        status,
        limit: limit_param(&params, 100, PROVIDER_LIST_LIMIT_MAX)?,
    };
    let st = state.clone();
    let data = blocking(move || {
        let calls = st.providers.calls(&filter)?;
        let mut out = Vec::with_capacity(calls.len());
        for c in &calls {
            out.push(call_response(c, &st.providers.attempts(&c.id)?));
        }
        Ok(out)
    })
    .await?;
    Ok(Json(ProviderCallList { data }))
}

/// Put a failed call back in the queue (after fixing what made it fail): it resumes after its
/// last recorded step; a step sent without a recorded outcome is looked up at Stripe first, so
/// a retry never creates a second object or refunds twice.
#[utoipa::path(
    post,
    path = "/v1/providers/stripe/calls/{id}/retry",
    tag = "providers",
    params(("id" = String, Path)),
    responses(
        (status = 202, description = "Queued again"),
        (status = 404, description = "`provider_call_not_found`", body = ErrorResponse),
        (status = 409, description = "`provider_call_not_failed`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn retry_call(
    State(state): State<crate::State>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<axum::http::StatusCode, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let call = id.clone();
    match blocking(move || Ok(st.providers.retry_call(&call, st.engine.now())?)).await? {
        Some(true) => Ok(axum::http::StatusCode::ACCEPTED),
        Some(false) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "provider_call_not_failed",
            format!("call {id} is not failed: only a failed call is retried by hand"),
        )),
        None => Err(ApiError::not_found(
            "provider_call_not_found",
            format!("no provider call {id}"),
        )),
    }
}
