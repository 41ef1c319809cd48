//! `/v1/providers/orb/…` (admin): where forwarding events to Orb stands, resuming it after a
//! permanent refusal was fixed, the invoices read back from Orb, and a pull of them on demand.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_core::provider::orb::PartKind;
use tollgate_store::Scope;
use tollgate_store::orb::{ORB_INVOICE_LIST_LIMIT_MAX, Plan};

use super::{blocking, limit_param, query_params};
use crate::auth::authorize;
use crate::types::ErrorResponse;
use crate::types::orb::*;
use crate::{ApiError, OrbLink};

fn link(state: &crate::State) -> Result<&OrbLink, ApiError> {
    state.orb.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "provider_not_configured",
            "Orb is off: start the server with --orb-api-key",
        )
    })
}

fn plan_response(p: &Plan) -> OrbPlanResponse {
    OrbPlanResponse {
        after_seq: p.after_seq,
        last_seq: p.last_seq,
        late_before: p.late_before.to_rfc3339(),
        parts: p
            .parts
            .iter()
            .map(|part| {
                let (kind, customer, start, end) = match &part.kind {
                    PartKind::Live => ("live", None, None, None),
                    PartKind::Backfill {
                        customer,
                        timeframe_start,
                        timeframe_end,
                    } => (
                        "backfill",
                        Some(customer.clone()),
                        Some(timeframe_start.to_rfc3339()),
                        Some(timeframe_end.to_rfc3339()),
                    ),
                };
                OrbPlanPartResponse {
                    kind: kind.into(),
                    customer,
                    timeframe_start: start,
                    timeframe_end: end,
                    events: part.events,
                    state: part.state.as_str().into(),
                    backfill_id: part.backfill_id.clone(),
                }
            })
            .collect(),
    }
}

/// Where forwarding accepted events to Orb stands: the cursor over the accepted-event log, how
/// far behind it is, counters, the batch in flight, and why it is retrying or stopped.
#[utoipa::path(
    get,
    path = "/v1/providers/orb/status",
    tag = "providers",
    responses(
        (status = 200, body = OrbStatus),
        (status = 404, description = "`provider_not_configured` (no Orb API key)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn status(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<OrbStatus>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    link(&state)?;
    let st = state.clone();
    let out = blocking(move || {
        let orb = link(&st)?;
        let cursor = orb.store.cursor()?;
        let plan = orb.store.plan()?;
        let (pending, failed) = orb.store.customer_calls()?;
        let log_last_seq = st.engine.events_after(u64::MAX, 0)?.last_seq;
        let now = st.engine.now();
        let state = if cursor.stopped_code.is_some() {
            "stopped"
        } else if cursor.failures > 0 {
            "retrying"
        } else {
            "running"
        };
        Ok(OrbStatus {
            state: state.into(),
            cursor_seq: cursor.after_seq,
            log_last_seq,
            lag_events: log_last_seq.saturating_sub(cursor.after_seq),
            forwarded_events: cursor.forwarded,
            skipped_events: cursor.skipped,
            batches: cursor.batches,
            backfills: cursor.backfills,
            failures: cursor.failures,
            stopped_code: cursor.stopped_code.clone(),
            last_error: cursor.last_error.clone(),
            last_http_status: cursor.last_http_status,
            next_attempt_at: (cursor.stopped_code.is_none()
                && cursor.failures > 0
                && cursor.next_attempt_ms.0 > now.0)
                .then(|| cursor.next_attempt_ms.to_rfc3339()),
            plan: plan.as_ref().map(plan_response),
            customer_syncs_pending: pending,
            customer_syncs_failed: failed,
        })
    })
    .await?;
    Ok(Json(out))
}

/// Lets forwarding that stopped on a permanent refusal try again (after the cause was fixed:
/// the mapping, the API key, Orb's configuration). The batch in flight is sent again as planned.
#[utoipa::path(
    post,
    path = "/v1/providers/orb/resume",
    tag = "providers",
    responses(
        (status = 200, body = OrbResumeAnswer),
        (status = 404, description = "`provider_not_configured` (no Orb API key)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn resume(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<OrbResumeAnswer>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    link(&state)?;
    let st = state.clone();
    let resumed = blocking(move || Ok(link(&st)?.store.resume(st.engine.now())?)).await?;
    Ok(Json(OrbResumeAnswer { resumed }))
}

/// Orb invoices read back (`GET /v1/invoices?external_customer_id=…` per customer, by the
/// periodic pull or `POST /v1/providers/orb/pull`), with what is due and paid: the record
/// reconciliation compares against. The money is also in `provider_objects` (provider `orb`,
/// kind `invoice`, key `<customer>/<Orb invoice id>`).
#[utoipa::path(
    get,
    path = "/v1/providers/orb/invoices",
    tag = "providers",
    params(
        ("customer" = Option<String>, Query, description = "Only this customer's invoices"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = OrbInvoiceList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`", body = ErrorResponse),
        (status = 404, description = "`provider_not_configured` (no Orb API key)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn invoices(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<OrbInvoiceList>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    link(&state)?;
    let params = query_params(pairs, &["customer", "limit"])?;
    let limit = limit_param(&params, 100, ORB_INVOICE_LIST_LIMIT_MAX)?;
    let customer = params.get("customer").cloned();
    let st = state.clone();
    let list = blocking(move || Ok(link(&st)?.store.invoices(customer.as_deref(), limit)?)).await?;
    Ok(Json(OrbInvoiceList {
        data: list
            .into_iter()
            .map(|i| OrbInvoiceResponse {
                orb_invoice_id: i.orb_invoice_id,
                customer: i.customer,
                orb_customer_id: i.orb_customer_id,
                number: i.number,
                status: i.status,
                payment_state: i.state.as_str().into(),
                currency: i.currency,
                invoice_date: i.invoice_date.map(|t| t.to_rfc3339()),
                total_minor: i.total_minor,
                amount_due_minor: i.amount_due_minor,
                amount_paid_minor: i.amount_paid_minor,
                pulled_at: i.pulled_ms.to_rfc3339(),
            })
            .collect(),
    }))
}

/// Reads every customer's invoices from Orb now (the same pull `serve` runs every
/// `[orb] pull_every`) and answers when it is done.
#[utoipa::path(
    post,
    path = "/v1/providers/orb/pull",
    tag = "providers",
    responses(
        (status = 200, body = OrbPullReport),
        (status = 404, description = "`provider_not_configured` (no Orb API key)", body = ErrorResponse),
        (status = 503, description = "`orb_pull_unavailable`: the puller is not running", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn pull(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<OrbPullReport>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let orb = link(&state)?;
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "orb_pull_unavailable",
            "the Orb invoice puller is not running",
        )
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    orb.pull.send(tx).await.map_err(|_| unavailable())?;
    let report = rx.await.map_err(|_| unavailable())?;
    Ok(Json(report))
}
