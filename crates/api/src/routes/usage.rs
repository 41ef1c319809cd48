//! `GET /v1/meters/{slug}/usage`: usage by window, time zone and dimension.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use jiff::tz::TimeZone;
use tollgate_core::event::Subject;
use tollgate_core::meter::MeterSlug;
use tollgate_core::time::{MINUTE_MS, UnixMs};
use tollgate_core::usage::{UsageQuery, WindowSize};
use tollgate_store::Scope;

use super::blocking;
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::{time_text, usage_rows};
use crate::types::{ErrorResponse, UsageResponse};

/// Parameters of a usage query, as parsed from the query string.
#[derive(Debug, Default)]
pub struct UsageParams {
    /// `subject`.
    pub subject: Option<String>,
    /// `from`.
    pub from: Option<String>,
    /// `to`.
    pub to: Option<String>,
    /// `window_size`.
    pub window_size: Option<String>,
    /// `time_zone`.
    pub time_zone: Option<String>,
    /// `group_by` (repeated or comma-separated).
    pub group_by: Vec<String>,
}

impl UsageParams {
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut p = UsageParams::default();
        for (k, v) in pairs {
            let slot = match k.as_str() {
                "subject" => &mut p.subject,
                "from" => &mut p.from,
                "to" => &mut p.to,
                "window_size" => &mut p.window_size,
                "time_zone" => &mut p.time_zone,
                "group_by" => {
                    p.group_by.extend(
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from),
                    );
                    continue;
                }
                other => {
                    return Err(ApiError::bad_request(
                        "unknown_parameter",
                        format!("unknown query parameter `{other}`"),
                    ));
                }
            };
            if slot.replace(v).is_some() {
                return Err(ApiError::bad_request(
                    "duplicate_parameter",
                    format!("`{k}` given twice"),
                ));
            }
        }
        Ok(p)
    }
}

/// Turns parameters into a query: defaults are `to` = now (rounded up to a minute), `from` =
/// `to` minus the acceptance window, UTC, one window.
pub fn build_query(p: UsageParams, now: UnixMs, window_ms: i64) -> Result<UsageQuery, ApiError> {
    let to = match &p.to {
        Some(t) => crate::convert::instant("to", t)?,
        None => UnixMs((now.0 + MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS),
    };
    let from = match &p.from {
        Some(t) => crate::convert::instant("from", t)?,
        None => UnixMs((to.0 - window_ms).div_euclid(MINUTE_MS) * MINUTE_MS),
    };
    let window = match &p.window_size {
        None => None,
        Some(w) => Some(WindowSize::parse(w).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_window_size",
                "window_size is minute, hour, day or month",
            )
        })?),
    };
    let time_zone = match &p.time_zone {
        None => TimeZone::UTC,
        Some(name) => TimeZone::get(name).map_err(|_| {
            ApiError::bad_request(
                "invalid_time_zone",
                format!("unknown IANA time zone `{name}`"),
            )
        })?,
    };
    let subject = match &p.subject {
        None => None,
        Some(s) => Some(
            Subject::parse(s)
                .map_err(|e| ApiError::bad_request("invalid_subject", e.to_string()))?,
        ),
    };
    Ok(UsageQuery {
        subject,
        from,
        to,
        window,
        time_zone,
        group_by: p.group_by,
    })
}

/// Query a meter's usage.
///
/// Rows exist only for windows with data. Values are exact decimal strings. Windows follow
/// local calendar boundaries of `time_zone` (DST days are 23 or 25 hours). `from` and `to` must
/// be whole minutes.
#[utoipa::path(
    get,
    path = "/v1/meters/{slug}/usage",
    tag = "usage",
    params(
        ("slug" = String, Path),
        ("subject" = Option<String>, Query, description = "Only this customer; all when omitted"),
        ("from" = Option<String>, Query, description = "RFC 3339, inclusive; default: `to` minus the acceptance window"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default: now"),
        ("window_size" = Option<String>, Query, description = "minute | hour | day | month; one window when omitted"),
        ("time_zone" = Option<String>, Query, description = "IANA name, default UTC"),
        ("group_by" = Option<String>, Query, description = "Dimensions to keep, comma-separated or repeated"),
    ),
    responses(
        (status = 200, body = UsageResponse),
        (status = 400, description = "`invalid_time`, `time_not_minute_aligned`, `empty_time_range`, `invalid_window_size`, `invalid_time_zone`, `unknown_group_by`, `unknown_parameter`", body = ErrorResponse),
        (status = 404, description = "`meter_not_found`", body = ErrorResponse),
        (status = 422, description = "`usage_rows_max`, `usage_windows_max`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn query(
    State(state): State<crate::State>,
    Path(slug_text): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let slug =
        MeterSlug::parse(&slug_text).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    let params = UsageParams::from_pairs(pairs)?;
    let window_size = params.window_size.clone();
    let tz_name = params.time_zone.clone().unwrap_or_else(|| "UTC".into());
    let q = build_query(
        params,
        state.engine.now(),
        state.engine.config().acceptance_window_ms,
    )?;
    let (from, to) = (q.from, q.to);
    let st = state.clone();
    // Querying, converting and serialising a large answer (300k rows) all happen off the
    // async workers.
    let body = blocking(move || {
        let rows = st.engine.usage(&slug, &q)?;
        // About 130 bytes per row: one allocation instead of a doubling series.
        let mut out: Vec<u8> = Vec::with_capacity(256 + rows.len() * 140);
        let response = UsageResponse {
            meter: slug_text,
            from: time_text(from),
            to: time_text(to),
            window_size,
            time_zone: tz_name,
            data: usage_rows(rows),
        };
        serde_json::to_writer(&mut out, &response).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            )
        })?;
        Ok(out)
    })
    .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    ))
}
