//! `/v1/alerts`: usage, spend and unusual-usage alert rules, and the log of what fired.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_store::Scope;
use tollgate_store::billing::LIST_LIMIT_MAX;
use tollgate_store::billing::alerts::{EventFilter, evaluate, new_alert_id};

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, limit_param, query_params, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::billing::customer_key;
use crate::convert::entitlements::{alert_event_response, alert_from_body, alert_response};
use crate::types::ErrorResponse;
use crate::types::entitlements::{
    AlertBody, AlertEventList, AlertList, AlertPatch, AlertResponse, EvaluateResponse,
};

/// Create an alert rule. It is evaluated by `serve` every `alert_every` (default 10 s) and by
/// `POST /v1/alerts/evaluate`; each fires once per threshold per period.
#[utoipa::path(
    post,
    path = "/v1/alerts",
    tag = "alerts",
    request_body = AlertBody,
    responses(
        (status = 201, body = AlertResponse),
        (status = 400, description = "`invalid_body`, `malformed_json`, `invalid_decimal`", body = ErrorResponse),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
        (status = 422, description = "`invalid_alert`, `invalid_feature`, `unknown_meter`, `alert_rules_max`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<AlertResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let body: AlertBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let rule = alert_from_body(body, new_alert_id(), state.engine.now())?;
    if let tollgate_core::alert::Condition::Usage { meter, .. }
    | tollgate_core::alert::Condition::UnusualUsage { meter, .. } = &rule.condition
        && state.engine.meter(meter).is_none()
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_meter",
            format!("meter `{meter}` does not exist"),
        ));
    }
    let st = state.clone();
    let r = rule.clone();
    blocking(move || Ok(st.billing.create_alert(&r)?)).await?;
    Ok((StatusCode::CREATED, Json(alert_response(&rule))))
}

/// Every alert rule.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "alerts",
    responses((status = 200, body = AlertList)),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<AlertList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let st = state.clone();
    let rules = blocking(move || Ok(st.billing.alerts()?)).await?;
    Ok(Json(AlertList {
        data: rules.iter().map(alert_response).collect(),
    }))
}

/// One alert rule.
#[utoipa::path(
    get,
    path = "/v1/alerts/{id}",
    tag = "alerts",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = AlertResponse),
        (status = 404, description = "`alert_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AlertResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let st = state.clone();
    let rule = blocking(move || Ok(st.billing.alert(&id)?)).await?;
    Ok(Json(alert_response(&rule)))
}

/// Turn a rule on or off (off forgets where it stood for each customer).
#[utoipa::path(
    patch,
    path = "/v1/alerts/{id}",
    tag = "alerts",
    params(("id" = String, Path)),
    request_body = AlertPatch,
    responses(
        (status = 200, body = AlertResponse),
        (status = 404, description = "`alert_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn patch(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<AlertResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let body: AlertPatch = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let st = state.clone();
    let rule = blocking(move || Ok(st.billing.set_alert_enabled(&id, body.enabled)?)).await?;
    Ok(Json(alert_response(&rule)))
}

/// Delete a rule; the events it logged stay.
#[utoipa::path(
    delete,
    path = "/v1/alerts/{id}",
    tag = "alerts",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`alert_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn delete(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    blocking(move || Ok(st.billing.delete_alert(&id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What fired and recovered (`alert.triggered`, `alert.recovered`, `entitlement.exceeded`),
/// oldest first.
#[utoipa::path(
    get,
    path = "/v1/alert_events",
    tag = "alerts",
    params(
        ("rule" = Option<String>, Query, description = "Only this rule's (`alr_…` or `entitlement:<feature>`)"),
        ("customer" = Option<String>, Query),
        ("after" = Option<i64>, Query, description = "`seq` of the last event seen"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = AlertEventList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`, `invalid_after`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn events(
    State(state): State<crate::State>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Json<AlertEventList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let p = query_params(pairs, &["rule", "customer", "after", "limit"])?;
    let limit = limit_param(&p, 100, LIST_LIMIT_MAX)?;
    let after_seq = match p.get("after") {
        None => 0,
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("invalid_after", "after is an event `seq`"))?,
    };
    let filter = EventFilter {
        rule: p.get("rule").cloned(),
        customer: p.get("customer").map(|c| customer_key(c)).transpose()?,
        after_seq,
        limit: limit + 1,
    };
    let st = state.clone();
    let mut events = blocking(move || Ok(st.billing.alert_events(&filter)?)).await?;
    let more = events.len() > limit;
    events.truncate(limit);
    Ok(Json(AlertEventList {
        next_after: if more {
            events.last().map(|e| e.seq)
        } else {
            None
        },
        data: events.iter().map(alert_event_response).collect(),
    }))
}

/// Evaluate every rule and limit now (the same pass `serve` runs on its schedule).
#[utoipa::path(
    post,
    path = "/v1/alerts/evaluate",
    tag = "alerts",
    responses((status = 200, body = EvaluateResponse)),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn evaluate_now(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<EvaluateResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let report = blocking(move || run_evaluation(&st)).await?;
    Ok(Json(report))
}

/// One evaluation pass, as the scheduler and the API run it.
pub fn run_evaluation(state: &crate::AppState) -> Result<EvaluateResponse, ApiError> {
    let r = evaluate(
        &state.engine,
        &state.billing,
        &state.checker,
        state.engine.now(),
        state.engine.config().acceptance_window_ms,
    )?;
    Ok(EvaluateResponse {
        observations: r.observations,
        events: r.events.iter().map(alert_event_response).collect(),
        skipped: r.skipped,
    })
}
