//! Reconciliation: run it for a month now, list the stored runs, read a report as JSON, CSV or
//! an HTML page for admins.

use askama::Template;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use tollgate_core::reconcile::Report;
use tollgate_store::Scope;
use tollgate_store::billing::reconcile::{RECONCILIATION_LIST_MAX, ReconcileOptions};

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, limit_param, query_params, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::billing::month;
use crate::convert::time_text;
use crate::types::ErrorResponse;
use crate::types::reconciliation::{
    ReconcileBody, ReconciliationReport, ReconciliationRunList, ReconciliationRunSummary,
};

/// The first day of a `YYYY-MM` month, or 400 `invalid_period`.
pub fn month_date(text: &str) -> Result<Date, ApiError> {
    let (y, m) = month(text)?;
    Date::new(y, m, 1).map_err(|e| ApiError::bad_request("invalid_period", e.to_string()))
}

/// Runs a reconciliation of `month`: fetches the provider's records when a provider reader is
/// configured, compares, applies the rules, stores the report and publishes its metrics.
pub async fn run_reconciliation(
    state: &crate::State,
    month: Date,
    refund_overpayments: bool,
) -> Result<Report, ApiError> {
    let views = match &state.provider_records {
        Some(records) => {
            let st = state.clone();
            let scope = blocking(move || Ok(st.billing.reconcile_scope(month)?)).await?;
            Some(records.fetch(scope).await.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "provider_unavailable",
                    format!("the provider's records could not be read: {e}"),
                )
            })?)
        }
        None => None,
    };
    let st = state.clone();
    blocking(move || {
        let now = st.engine.now();
        let report = st.billing.reconcile(
            &st.engine,
            &ReconcileOptions {
                month,
                provider_views: views,
                refund_overpayments,
                now,
            },
        )?;
        st.engine
            .metrics()
            .record_reconciliation(&report, st.engine.now().0);
        Ok(report)
    })
    .await
}

fn report_json(report: &Report) -> Response {
    (StatusCode::OK, Json(report)).into_response()
}

/// Reconcile a month now: (1) raw events recomputed against the rollups invoices read, (2)
/// each period re-priced against what was billed, (3) invoices and refunds against the payment
/// provider's records (fetched when Stripe is configured), (4) ledgers against their entries.
#[utoipa::path(
    post,
    path = "/v1/reconciliation/runs",
    tag = "reconciliation",
    request_body = ReconcileBody,
    responses(
        (status = 201, body = ReconciliationReport),
        (status = 400, description = "`invalid_body`, `invalid_period`", body = ErrorResponse),
        (status = 502, description = "`provider_unavailable`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let body: ReconcileBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let month = month_date(&body.period)?;
    let refund = body
        .refund_overpayments
        .unwrap_or(state.reconcile_refund_overpayments);
    let report = run_reconciliation(&state, month, refund).await?;
    Ok((StatusCode::CREATED, Json(report)).into_response())
}

/// Stored reconciliation runs, newest first.
#[utoipa::path(
    get,
    path = "/v1/reconciliation/runs",
    tag = "reconciliation",
    params(
        ("period" = Option<String>, Query, description = "YYYY-MM"),
        ("limit" = Option<usize>, Query, description = "1..=100, default 20"),
    ),
    responses(
        (status = 200, body = ReconciliationRunList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`, `invalid_period`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<ReconciliationRunList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let params = query_params(pairs, &["period", "limit"])?;
    let limit = limit_param(&params, 20, RECONCILIATION_LIST_MAX)?;
    let period = params.get("period").cloned();
    if let Some(p) = &period {
        month(p)?;
    }
    let st = state.clone();
    let runs =
        blocking(move || Ok(st.billing.reconciliation_runs(period.as_deref(), limit)?)).await?;
    Ok(Json(ReconciliationRunList {
        data: runs
            .into_iter()
            .map(|r| ReconciliationRunSummary {
                id: r.id,
                period: r.period,
                started_at: time_text(r.started_ms),
                differences: r.differences,
                unexplained: r.unexplained,
            })
            .collect(),
    }))
}

/// A stored report: JSON (default), `format=csv` (one row per difference) or `format=html`
/// (the page for admins).
#[utoipa::path(
    get,
    path = "/v1/reconciliation/runs/{id}",
    tag = "reconciliation",
    params(
        ("id" = String, Path),
        ("format" = Option<String>, Query, description = "json (default), csv, html"),
    ),
    responses(
        (status = 200, body = ReconciliationReport, description = "JSON; text/csv or text/html with `format`"),
        (status = 400, description = "`unknown_parameter`, `invalid_format`", body = ErrorResponse),
        (status = 404, description = "`reconciliation_run_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let params = query_params(pairs, &["format"])?;
    let format = params
        .get("format")
        .map_or("json", String::as_str)
        .to_owned();
    if !["json", "csv", "html"].contains(&format.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_format",
            "format is json, csv or html",
        ));
    }
    let st = state.clone();
    let report = blocking(move || Ok(st.billing.reconciliation_report(&id)?)).await?;
    Ok(match format.as_str() {
        "csv" => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report.to_csv(),
        )
            .into_response(),
        "html" => {
            let page = crate::render::reconciliation_page(&report)
                .render()
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "render_failed",
                        format!("the page did not render: {e}"),
                    )
                })?;
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
        }
        _ => report_json(&report),
    })
}

/// A `YYYY-MM` month's first day, for the CLI and the scheduler.
pub fn parse_month(text: &str) -> Result<Date, String> {
    month_date(text).map_err(|e| e.message)
}
