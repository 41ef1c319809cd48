//! `/v1/plans`: plans and their immutable versions.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_core::billing::Plan;
use tollgate_store::Scope;

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::billing::{
    currency, interval, plan_key, plan_response, price_from_body, version_response,
};
use crate::types::ErrorResponse;
use crate::types::billing::{
    PlanBody, PlanList, PlanResponse, PlanVersionBody, PlanVersionResponse,
};

/// Every metered price must name a meter that exists (422 `unknown_meter`).
fn check_meters(
    state: &crate::AppState,
    prices: &[tollgate_core::pricing::Price],
) -> Result<(), ApiError> {
    for p in prices {
        if let Some(m) = &p.meter
            && state.engine.meter(m).is_none()
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_meter",
                format!("price `{}` uses meter `{m}`, which does not exist", p.key),
            ));
        }
    }
    Ok(())
}

/// Entitlements from their bodies; a metered grant must name an existing meter.
pub(crate) fn entitlements_from(
    state: &crate::AppState,
    bodies: Vec<crate::types::entitlements::EntitlementBody>,
) -> Result<Vec<tollgate_core::entitlement::Entitlement>, ApiError> {
    let list = bodies
        .into_iter()
        .map(crate::convert::entitlements::entitlement_from_body)
        .collect::<Result<Vec<_>, _>>()?;
    for e in &list {
        check_grant_meter(state, &e.grant)?;
    }
    tollgate_core::entitlement::validate_all(&list)
        .map_err(|e| ApiError::from(tollgate_core::billing::BillingError::from(e)))?;
    Ok(list)
}

/// 422 `unknown_meter` when a metered grant names a meter that does not exist.
pub(crate) fn check_grant_meter(
    state: &crate::AppState,
    grant: &tollgate_core::entitlement::Grant,
) -> Result<(), ApiError> {
    if let Some(m) = grant.meter()
        && state.engine.meter(m).is_none()
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_meter",
            format!("a metered entitlement uses meter `{m}`, which does not exist"),
        ));
    }
    Ok(())
}

/// Create a plan; with `prices`, version 1 is published in the same call.
#[utoipa::path(
    post,
    path = "/v1/plans",
    tag = "plans",
    request_body = PlanBody,
    responses(
        (status = 201, body = PlanResponse),
        (status = 400, description = "`invalid_plan_key`, `invalid_decimal`, `invalid_body`", body = ErrorResponse),
        (status = 409, description = "`plan_exists`", body = ErrorResponse),
        (status = 422, description = "`invalid_price`, `invalid_field`, `unknown_currency`, `unknown_meter`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PlanResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let body: PlanBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let now = state.engine.now();
    let plan = Plan {
        key: plan_key(&body.key)?,
        name: body.name,
        currency: currency(&body.currency)?,
        interval: interval(&body.interval)?,
        created_ms: now,
    };
    let prices = body
        .prices
        .map(|ps| {
            ps.into_iter()
                .map(price_from_body)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if let Some(prices) = &prices {
        check_meters(&state, prices)?;
    }
    let entitlements = entitlements_from(&state, body.entitlements.unwrap_or_default())?;
    if prices.is_none() && !entitlements.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "entitlements belong to a version: give `prices` too",
        ));
    }
    if plan.name.is_empty() || plan.name.len() > tollgate_core::billing::NAME_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "invalid name: 1..=200 bytes",
        ));
    }
    let st = state.clone();
    let p = plan.clone();
    let versions = blocking(move || {
        if let Some(prices) = &prices {
            // Check the prices before creating anything.
            tollgate_core::billing::PlanVersion {
                plan: p.key.clone(),
                version: 1,
                prices: prices.clone(),
                entitlements: entitlements.clone(),
                published_ms: now,
            }
            .validate()?;
        }
        st.billing.create_plan(&p)?;
        match prices {
            Some(prices) => Ok(vec![st.billing.publish_version(
                &p.key,
                prices,
                entitlements,
                now,
            )?]),
            None => Ok(Vec::new()),
        }
    })
    .await?;
    Ok((StatusCode::CREATED, Json(plan_response(&plan, &versions))))
}

/// Publish the next version of a plan. Versions never change once published; subscriptions
/// made later use the latest version unless they pin one.
#[utoipa::path(
    post,
    path = "/v1/plans/{key}/versions",
    tag = "plans",
    params(("key" = String, Path)),
    request_body = PlanVersionBody,
    responses(
        (status = 201, body = PlanVersionResponse),
        (status = 404, description = "`plan_not_found`", body = ErrorResponse),
        (status = 422, description = "`invalid_price`, `invalid_field`, `unknown_meter`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn publish(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PlanVersionResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let key = plan_key(&key)?;
    let body: PlanVersionBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let prices = body
        .prices
        .into_iter()
        .map(price_from_body)
        .collect::<Result<Vec<_>, _>>()?;
    check_meters(&state, &prices)?;
    let entitlements = entitlements_from(&state, body.entitlements)?;
    let st = state.clone();
    let v = blocking(move || {
        Ok(st
            .billing
            .publish_version(&key, prices, entitlements, st.engine.now())?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(version_response(&v))))
}

/// Read a plan with all its versions.
#[utoipa::path(
    get,
    path = "/v1/plans/{key}",
    tag = "plans",
    params(("key" = String, Path)),
    responses(
        (status = 200, body = PlanResponse),
        (status = 404, description = "`plan_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PlanResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let key = plan_key(&key)?;
    let st = state.clone();
    let (plan, versions) =
        blocking(move || Ok((st.billing.plan(&key)?, st.billing.plan_versions(&key)?))).await?;
    Ok(Json(plan_response(&plan, &versions)))
}

/// Every plan with its versions.
#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "plans",
    responses((status = 200, body = PlanList)),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<PlanList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let st = state.clone();
    let data = blocking(move || {
        let (plans, catalog) = st.billing.catalog()?;
        Ok(plans
            .values()
            .map(|p| {
                let versions: Vec<_> = catalog
                    .range((p.key.clone(), 0)..=(p.key.clone(), u32::MAX))
                    .map(|(_, v)| v.clone())
                    .collect();
                plan_response(p, &versions)
            })
            .collect())
    })
    .await?;
    Ok(Json(PlanList { data }))
}
