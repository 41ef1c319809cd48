//! `GET /v1/exports/{kind}`: finance exports as CSV or Parquet (schema: `docs/exports.md`).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tollgate_store::Scope;

use super::{blocking, query_params};
use crate::ApiError;
use crate::auth::authorize;
use crate::export::format::{self, Format};
use crate::export::{self as exports, Kind, Range};
use crate::types::ErrorResponse;

/// Download a finance export: `invoices`, `invoice_lines`, `credits` (ledger entries) or
/// `credit_notes`, `usage_daily` (per customer, meter and local day) for the dates `[from, to)`, each record
/// judged in its customer's time zone. Amounts are integer minor units with a currency column;
/// quantities are exact decimal text. Columns and types: `docs/exports.md`.
#[utoipa::path(
    get,
    path = "/v1/exports/{kind}",
    tag = "exports",
    params(
        ("kind" = String, Path, description = "invoices | invoice_lines | credits | credit_notes | usage_daily"),
        ("from" = String, Query, description = "First date, YYYY-MM-DD"),
        ("to" = String, Query, description = "First date after the range, YYYY-MM-DD (at most 400 days after from)"),
        ("format" = Option<String>, Query, description = "csv (default) | parquet"),
    ),
    responses(
        (status = 200, description = "The file (text/csv or application/vnd.apache.parquet)", content_type = "text/csv"),
        (status = 400, description = "`missing_parameter`, `invalid_date`, `empty_time_range`, `invalid_format`, `unknown_parameter`", body = ErrorResponse),
        (status = 404, description = "`unknown_export`", body = ErrorResponse),
        (status = 422, description = "`export_range_days_max`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn download(
    State(state): State<crate::State>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let kind = Kind::parse(&kind).ok_or_else(|| {
        ApiError::not_found(
            "unknown_export",
            "exports are invoices, invoice_lines, credits, credit_notes, usage_daily",
        )
    })?;
    let params = query_params(pairs, &["from", "to", "format"])?;
    let need = |name: &str| {
        params.get(name).ok_or_else(|| {
            ApiError::bad_request("missing_parameter", format!("`{name}` is required"))
        })
    };
    let range = Range::parse(need("from")?, need("to")?)?;
    let fmt = match params.get("format") {
        None => Format::Csv,
        Some(t) => Format::parse(t)
            .ok_or_else(|| ApiError::bad_request("invalid_format", "format is csv or parquet"))?,
    };
    let st = state.clone();
    let bytes = blocking(move || {
        let table = exports::build(&st.engine, &st.billing, kind, &range)?;
        format::encode(&table, fmt)
    })
    .await?;
    let file = format!(
        "{}_{}_{}.{}",
        kind.name(),
        range.from,
        range.to,
        fmt.extension()
    );
    let mut response = ([(header::CONTENT_TYPE, fmt.content_type())], bytes).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
