//! `/v1/subscriptions`: start, change plan, cancel.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_core::billing::{
    BillingError, Cycle, Period, Phase, Subscription, SubscriptionChange, SubscriptionId,
    floor_minute,
};
use tollgate_core::time::UnixMs;
use tollgate_store::Scope;
use tollgate_store::billing::BillingStore;

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, query_params, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::billing::{customer_key, instant, plan_key, subscription_response};
use crate::types::ErrorResponse;
use crate::types::billing::{
    CancelBody, ChangePlanBody, SubscriptionBody, SubscriptionList, SubscriptionResponse,
};

/// The period of `sub` containing `now`, if it runs now.
fn current_period(
    billing: &BillingStore,
    sub: &Subscription,
    now: UnixMs,
) -> Result<Option<Period>, ApiError> {
    let Some(phase) = sub.phase_at(now) else {
        return Ok(None);
    };
    let customer = billing.customer(&sub.customer)?;
    let plan = billing.plan(&phase.plan)?;
    Ok(Some(
        Cycle::new(&customer, plan.interval).period_containing(now)?,
    ))
}

/// Changes never take effect in the past: a period may already be invoiced.
fn not_in_past(at: UnixMs, now: UnixMs) -> Result<(), ApiError> {
    if at < floor_minute(now) {
        return Err(BillingError::Conflict {
            reason:
                "a subscription change cannot take effect in the past (invoiced periods are final)"
                    .into(),
        }
        .into());
    }
    Ok(())
}

fn respond(
    billing: &BillingStore,
    sub: &Subscription,
    now: UnixMs,
) -> Result<SubscriptionResponse, ApiError> {
    Ok(subscription_response(
        sub,
        now,
        current_period(billing, sub, now)?,
    ))
}

/// Checks that a plan version may be used by the customer: same currency (and, for a change,
/// the same interval as the subscription's plan). Returns the pinned version number.
fn usable_version(
    billing: &BillingStore,
    customer: &tollgate_core::billing::Customer,
    plan: &tollgate_core::billing::PlanKey,
    version: Option<u32>,
    same_interval_as: Option<&tollgate_core::billing::PlanKey>,
) -> Result<u32, ApiError> {
    let p = billing.plan(plan)?;
    if p.currency != customer.currency {
        return Err(BillingError::Conflict {
            reason: format!(
                "plan {} is priced in {}, the customer is billed in {}",
                p.key, p.currency, customer.currency
            ),
        }
        .into());
    }
    if let Some(other) = same_interval_as {
        let o = billing.plan(other)?;
        if o.interval != p.interval {
            return Err(BillingError::Conflict {
                reason: "a plan change keeps the billing interval".into(),
            }
            .into());
        }
    }
    Ok(billing.plan_version(plan, version)?.version)
}

/// Start a subscription.
#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    request_body = SubscriptionBody,
    responses(
        (status = 201, body = SubscriptionResponse),
        (status = 400, description = "`invalid_time`, `invalid_body`", body = ErrorResponse),
        (status = 404, description = "`customer_not_found`, `plan_not_found`, `plan_version_not_found`", body = ErrorResponse),
        (status = 409, description = "`subscription_exists`, `conflict` (currency)", body = ErrorResponse),
        (status = 422, description = "`invalid_field` (not a whole minute, trial before start)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SubscriptionResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let body: SubscriptionBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let now = state.engine.now();
    let customer = customer_key(&body.customer)?;
    let plan = plan_key(&body.plan)?;
    let start = match &body.start {
        Some(t) => instant("start", t)?,
        None => floor_minute(now),
    };
    let trial_end = body
        .trial_end
        .as_deref()
        .map(|t| instant("trial_end", t))
        .transpose()?;
    let st = state.clone();
    let out = blocking(move || {
        let c = st.billing.customer(&customer)?;
        let version = usable_version(&st.billing, &c, &plan, body.version, None)?;
        let sub = Subscription::new(
            SubscriptionId(format!("sub_{}", tollgate_store::billing::new_id_hex())),
            customer,
            Phase {
                plan,
                version,
                start,
            },
            trial_end,
            now,
        )?;
        st.billing.create_subscription(&sub)?;
        respond(&st.billing, &sub, now)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Read a subscription.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}",
    tag = "subscriptions",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = SubscriptionResponse),
        (status = 404, description = "`subscription_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SubscriptionResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let st = state.clone();
    let out = blocking(move || {
        let sub = st.billing.subscription(&id)?;
        respond(&st.billing, &sub, st.engine.now())
    })
    .await?;
    Ok(Json(out))
}

/// List subscriptions, of one customer or all.
#[utoipa::path(
    get,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    params(("customer" = Option<String>, Query)),
    responses(
        (status = 200, body = SubscriptionList),
        (status = 400, description = "`unknown_parameter`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<SubscriptionList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let params = query_params(pairs, &["customer"])?;
    let customer = params
        .get("customer")
        .map(|c| customer_key(c))
        .transpose()?;
    let st = state.clone();
    let data = blocking(move || {
        let now = st.engine.now();
        st.billing
            .subscriptions(customer.as_ref())?
            .iter()
            .map(|s| respond(&st.billing, s, now))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(Json(SubscriptionList { data }))
}

/// Move to another plan (or version) from `at`: the current phase ends there and a new one
/// starts; both are prorated by second within the period.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/change_plan",
    tag = "subscriptions",
    params(("id" = String, Path)),
    request_body = ChangePlanBody,
    responses(
        (status = 200, body = SubscriptionResponse),
        (status = 404, description = "`subscription_not_found`, `plan_not_found`, `plan_version_not_found`", body = ErrorResponse),
        (status = 409, description = "`conflict` (ended, before the current phase, other currency or interval)", body = ErrorResponse),
        (status = 422, description = "`invalid_field` (not a whole minute)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn change_plan(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SubscriptionResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let body: ChangePlanBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let now = state.engine.now();
    let plan = plan_key(&body.plan)?;
    let at = match &body.at {
        Some(t) => instant("at", t)?,
        None => floor_minute(now),
    };
    not_in_past(at, now)?;
    let st = state.clone();
    let out = blocking(move || {
        let sub = st.billing.subscription(&id)?;
        let c = st.billing.customer(&sub.customer)?;
        let current = sub.phases.last().map(|p| p.plan.clone());
        let version = usable_version(&st.billing, &c, &plan, body.version, current.as_ref())?;
        let sub = st
            .billing
            .change_subscription(&id, SubscriptionChange::ChangePlan { at, plan, version })?;
        respond(&st.billing, &sub, now)
    })
    .await?;
    Ok(Json(out))
}

/// End a subscription now, at `at`, or at the end of the current period.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/cancel",
    tag = "subscriptions",
    params(("id" = String, Path)),
    request_body = CancelBody,
    responses(
        (status = 200, body = SubscriptionResponse),
        (status = 404, description = "`subscription_not_found`", body = ErrorResponse),
        (status = 409, description = "`conflict` (already ends by then)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn cancel(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SubscriptionResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let body: CancelBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let now = state.engine.now();
    let explicit = body.at.as_deref().map(|t| instant("at", t)).transpose()?;
    let st = state.clone();
    let out = blocking(move || {
        let sub = st.billing.subscription(&id)?;
        let at = if body.at_period_end {
            current_period(&st.billing, &sub, now)?
                .map(|p| p.end)
                .ok_or_else(|| BillingError::Conflict {
                    reason: "the subscription does not run now".into(),
                })?
        } else {
            explicit.unwrap_or_else(|| floor_minute(now))
        };
        not_in_past(at, now)?;
        let sub = st
            .billing
            .change_subscription(&id, SubscriptionChange::Cancel { at })?;
        respond(&st.billing, &sub, now)
    })
    .await?;
    Ok(Json(out))
}
