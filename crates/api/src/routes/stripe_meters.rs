//! `/v1/providers/stripe/meter_events/…` (admin): where forwarding accepted events to Stripe
//! Billing meter events stands, and resuming it after a permanent refusal was fixed.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use tollgate_store::{Scope, StripeMeterStore};

use super::blocking;
use crate::ApiError;
use crate::auth::authorize;
use crate::types::ErrorResponse;
use crate::types::stripe_meters::*;

/// Most customers listed as waiting in the status.
pub const WAITING_CUSTOMERS_LISTED_MAX: usize = 100;

fn store(state: &crate::State) -> Result<&StripeMeterStore, ApiError> {
    state.stripe_meters.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "provider_not_configured",
            "Stripe meter events are off: start the server with --stripe-secret-key and map \
             event types in [stripe_meters.events]",
        )
    })
}

/// Where forwarding accepted events to Stripe meter events stands: the cursor over the
/// accepted-event log, how far behind it is, counters (forwarded, duplicates Stripe already
/// held, passed over as outside Stripe's 35-day window or invalid), events waiting for their
/// customer's Stripe id, and why it is retrying or stopped.
#[utoipa::path(
    get,
    path = "/v1/providers/stripe/meter_events/status",
    tag = "providers",
    responses(
        (status = 200, body = StripeMeterStatus),
        (status = 404, description = "`provider_not_configured` (no Stripe key, or nothing mapped in `[stripe_meters]`)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn status(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<StripeMeterStatus>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    store(&state)?;
    let st = state.clone();
    let out = blocking(move || {
        let s = store(&st)?;
        let cursor = s.cursor()?;
        let waiting_events = s.waiting_total()?;
        let waiting_customers = s
            .waiting_customers(WAITING_CUSTOMERS_LISTED_MAX)?
            .into_iter()
            .map(|(customer, events)| StripeMeterWaiting { customer, events })
            .collect();
        let log_last_seq = st.engine.events_after(u64::MAX, 0)?.last_seq;
        let now = st.engine.now();
        let state = if cursor.stopped_code.is_some() {
            "stopped"
        } else if cursor.failures > 0 {
            "retrying"
        } else {
            "running"
        };
        Ok(StripeMeterStatus {
            state: state.into(),
            cursor_seq: cursor.after_seq,
            log_last_seq,
            lag_events: log_last_seq.saturating_sub(cursor.after_seq),
            forwarded_events: cursor.forwarded,
            duplicate_events: cursor.duplicates,
            skipped_events: cursor.skipped,
            out_of_window_events: cursor.out_of_window,
            invalid_events: cursor.invalid,
            last_passed_over: cursor.last_passed_over.clone(),
            waiting_events,
            waiting_customers,
            failures: cursor.failures,
            stopped_code: cursor.stopped_code.clone(),
            last_error: cursor.last_error.clone(),
            last_http_status: cursor.last_http_status,
            next_attempt_at: (cursor.stopped_code.is_none()
                && cursor.failures > 0
                && cursor.next_attempt_ms.0 > now.0)
                .then(|| cursor.next_attempt_ms.to_rfc3339()),
        })
    })
    .await?;
    Ok(Json(out))
}

/// Lets forwarding that stopped on a permanent refusal try again (after the cause was fixed:
/// the API key, the Stripe meter's `event_name`, its payload keys). The refused event is sent
/// again first.
#[utoipa::path(
    post,
    path = "/v1/providers/stripe/meter_events/resume",
    tag = "providers",
    responses(
        (status = 200, body = StripeMeterResumeAnswer),
        (status = 404, description = "`provider_not_configured` (no Stripe key, or nothing mapped in `[stripe_meters]`)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn resume(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<StripeMeterResumeAnswer>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    store(&state)?;
    let st = state.clone();
    let resumed = blocking(move || Ok(store(&st)?.resume(st.engine.now())?)).await?;
    Ok(Json(StripeMeterResumeAnswer { resumed }))
}
