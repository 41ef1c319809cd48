//! `/v1/invoices`: read, render, explain, finalize, pay, void, and run the invoice cycle.

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use tollgate_core::event::Subject;
use tollgate_core::invoice::{InvoiceChange, InvoiceStatus};
use tollgate_core::time::UnixMs;
use tollgate_core::usage::{UsageQuery, WindowSize};
use tollgate_store::Scope;
use tollgate_store::billing::run::{self, RunOptions, RunReport};
use tollgate_store::billing::{InvoiceFilter, LIST_LIMIT_MAX};

use super::{
    MANAGEMENT_BODY_BYTES_MAX, blocking, limit_param, next_after, query_params, read_json,
    status_param,
};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::billing::{customer_key, invoice_response, line_body, month, run_response};
use crate::convert::time_text;
use crate::types::ErrorResponse;
use crate::types::billing::{
    ExplainEvent, ExplainResponse, ExplainWindow, InvoiceList, InvoiceResponse, InvoiceRunBody,
    InvoiceRunResponse,
};

/// Most events on one page of an explanation.
pub const EXPLAIN_EVENTS_MAX: usize = 1_000;

/// Runs the invoice cycle with the server's settings.
pub fn run_cycle(
    state: &crate::AppState,
    period: Option<(i16, i8)>,
    customer: Option<tollgate_core::billing::CustomerKey>,
    finalize_now: BTreeSet<String>,
    only_period_start: Option<UnixMs>,
) -> Result<RunReport, ApiError> {
    let opts = RunOptions {
        only_period_start,
        now: state.engine.now(),
        grace_ms: state.invoice_grace_ms,
        acceptance_window_ms: state.engine.config().acceptance_window_ms,
        period,
        customer,
        finalize_now,
        credit_policy: Some(state.credit_policy),
    };
    Ok(run::run(&state.engine, &state.billing, &opts)?)
}

/// List invoices.
#[utoipa::path(
    get,
    path = "/v1/invoices",
    tag = "invoices",
    params(
        ("customer" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "draft, finalized, paid, void"),
        ("after" = Option<String>, Query, description = "Ids after this one"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = InvoiceList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`, `invalid_status`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<InvoiceList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let params = query_params(pairs, &["customer", "status", "after", "limit"])?;
    let limit = limit_param(&params, 100, LIST_LIMIT_MAX)?;
    let filter = InvoiceFilter {
        customer: params
            .get("customer")
            .map(|c| customer_key(c))
            .transpose()?,
        status: status_param(
            &params,
            InvoiceStatus::parse,
            "draft, finalized, paid or void",
        )?,
        after: params.get("after").cloned(),
        limit,
    };
    let st = state.clone();
    let invoices = blocking(move || Ok(st.billing.invoices(&filter)?)).await?;
    let next_after = next_after(&invoices, limit, |i| &i.id);
    Ok(Json(InvoiceList {
        data: invoices.iter().map(invoice_response).collect(),
        next_after,
    }))
}

/// Read an invoice as JSON.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}",
    tag = "invoices",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = InvoiceResponse),
        (status = 404, description = "`invoice_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<InvoiceResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let st = state.clone();
    let inv = blocking(move || Ok(st.billing.invoice(&id)?)).await?;
    Ok(Json(invoice_response(&inv)))
}

/// Read an invoice as a printable HTML page.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/html",
    tag = "invoices",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "text/html", content_type = "text/html"),
        (status = 404, description = "`invoice_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn html(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let st = state.clone();
    let page = blocking(move || {
        let inv = st.billing.invoice(&id)?;
        let c = st.billing.customer(&inv.content.draft.customer)?;
        let page =
            crate::render::invoice_page(&inv, &c.name, c.email.as_deref(), c.time_zone.name());
        askama::Template::render(&page).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "render_failed",
                e.to_string(),
            )
        })
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

async fn change(
    state: crate::State,
    headers: HeaderMap,
    id: String,
    change: InvoiceChange,
) -> Result<Json<InvoiceResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let inv = blocking(move || {
        if change == InvoiceChange::Finalize {
            let inv = st.billing.invoice(&id)?;
            inv.status.apply(InvoiceChange::Finalize)?;
            run_cycle(
                &st,
                None,
                Some(inv.content.draft.customer.clone()),
                BTreeSet::from([id.clone()]),
                Some(inv.content.draft.period.start),
            )?;
            return Ok(st.billing.invoice(&id)?);
        }
        Ok(st.billing.change_invoice(&id, change, st.engine.now())?)
    })
    .await?;
    Ok(Json(invoice_response(&inv)))
}

/// Finalize a draft now, before its grace period ends: re-priced with the latest usage,
/// numbered, credit drawn, immutable from then on.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/finalize",
    tag = "invoices",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = InvoiceResponse),
        (status = 404, description = "`invoice_not_found`", body = ErrorResponse),
        (status = 409, description = "`conflict`: not a draft", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn finalize(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<InvoiceResponse>, ApiError> {
    change(state, headers, id, InvoiceChange::Finalize).await
}

/// Record that a finalized invoice was paid.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/pay",
    tag = "invoices",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = InvoiceResponse),
        (status = 404, description = "`invoice_not_found`", body = ErrorResponse),
        (status = 409, description = "`conflict`: not finalized", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn pay(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<InvoiceResponse>, ApiError> {
    change(state, headers, id, InvoiceChange::MarkPaid).await
}

/// Void a finalized, unpaid invoice: it keeps its number; credit it drew is given back; its
/// period is not billed again by later adjustments.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/void",
    tag = "invoices",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = InvoiceResponse),
        (status = 404, description = "`invoice_not_found`", body = ErrorResponse),
        (status = 409, description = "`conflict`: not finalized", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn void(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<InvoiceResponse>, ApiError> {
    change(state, headers, id, InvoiceChange::Void).await
}

/// Run the invoice cycle now (the server also runs it on a schedule). Idempotent: a second run
/// with nothing new creates nothing.
#[utoipa::path(
    post,
    path = "/v1/invoices/run",
    tag = "invoices",
    request_body = InvoiceRunBody,
    responses(
        (status = 200, body = InvoiceRunResponse),
        (status = 400, description = "`invalid_period`, `invalid_customer_key`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn run_now(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<InvoiceRunResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let body: InvoiceRunBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let period = body.period.as_deref().map(month).transpose()?;
    let customer = body.customer.as_deref().map(customer_key).transpose()?;
    let st = state.clone();
    let report = blocking(move || run_cycle(&st, period, customer, BTreeSet::new(), None)).await?;
    Ok(Json(run_response(report)))
}

/// Explain a line: its provenance, the usage per day behind it (customer's time zone) and,
/// paged, the raw events the meter counted. Events that arrived after the invoice was
/// finalized are marked `late`: they are billed by adjustment lines of later invoices.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/lines/{line}/explain",
    tag = "invoices",
    params(
        ("id" = String, Path),
        ("line" = u32, Path, description = "1-based line number"),
        ("after" = Option<String>, Query, description = "Event cursor from the previous page"),
        ("limit" = Option<usize>, Query, description = "Events per page, 1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = ExplainResponse),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`, `invalid_cursor`", body = ErrorResponse),
        (status = 404, description = "`invoice_not_found`, `invoice_line_not_found`, `meter_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn explain(
    State(state): State<crate::State>,
    Path((id, line)): Path<(String, u32)>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<ExplainResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let params = query_params(pairs, &["after", "limit"])?;
    let limit = limit_param(&params, 100, EXPLAIN_EVENTS_MAX)?;
    let after = match params.get("after") {
        None => 0,
        Some(t) => t.parse::<u64>().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "after is a cursor from next_after")
        })?,
    };
    let st = state.clone();
    let out = blocking(move || {
        let inv = st.billing.invoice(&id)?;
        explain_line(&st, &inv, line, after, limit)
    })
    .await?;
    Ok(Json(out))
}

/// The explanation of line `line` of `inv`: provenance, daily usage in the customer's time
/// zone, and one page of the events behind it. Shared by the API and the portal.
pub(crate) fn explain_line(
    st: &crate::AppState,
    inv: &tollgate_store::billing::Invoice,
    line: u32,
    after: u64,
    limit: usize,
) -> Result<ExplainResponse, ApiError> {
    let id = &inv.id;
    let l = inv
        .content
        .draft
        .lines
        .iter()
        .find(|l| l.number == line)
        .ok_or_else(|| {
            ApiError::not_found(
                "invoice_line_not_found",
                format!("invoice {id} has no line {line}"),
            )
        })?
        .clone();
    let customer = st.billing.customer(&inv.content.draft.customer)?;
    let (windows, quantity_now, events, next_after) = match &l.meter {
        None => (Vec::new(), rust_decimal::Decimal::ZERO, Vec::new(), None),
        Some(meter) => {
            let subject = Subject::parse(customer.key.as_str())
                .map_err(|e| ApiError::bad_request("invalid_customer_key", e.to_string()))?;
            let tz: TimeZone = customer.time_zone.tz().clone();
            let rows = st.engine.usage(
                meter,
                &UsageQuery {
                    subject: Some(subject),
                    from: l.segment.start,
                    to: l.segment.end,
                    window: Some(WindowSize::Day),
                    time_zone: tz,
                    group_by: Vec::new(),
                },
            )?;
            let quantity_now = rows.iter().map(|r| r.value).sum();
            let windows = rows
                .iter()
                .map(|r| ExplainWindow {
                    start: time_text(r.window_start),
                    end: time_text(r.window_end),
                    quantity: r.value.to_string(),
                })
                .collect();
            let page = st.engine.events_behind(
                meter,
                customer.key.as_str(),
                l.segment.start,
                l.segment.end,
                after,
                limit,
            )?;
            let events = page
                .events
                .iter()
                .map(|e| ExplainEvent {
                    committed_at: time_text(e.committed),
                    late: inv.finalized_ms.is_some_and(|f| e.committed > f),
                    event: serde_json::from_str(&e.raw).unwrap_or(serde_json::Value::Null),
                })
                .collect();
            (
                windows,
                quantity_now,
                events,
                page.next_after.map(|s| s.to_string()),
            )
        }
    };
    Ok(ExplainResponse {
        line: line_body(&l),
        windows,
        quantity_now: quantity_now.to_string(),
        events,
        next_after,
    })
}

/// The instant of a run, for logs.
pub fn describe(report: &RunReport, now: UnixMs) -> String {
    format!(
        "invoice run at {}: {} subscriptions, {} created, {} updated, {} finalized, {} unchanged, {} errors",
        time_text(now),
        report.subscriptions,
        report.created,
        report.updated,
        report.finalized,
        report.unchanged,
        report.errors.len()
    )
}
