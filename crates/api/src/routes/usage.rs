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
use crate::convert::time_text;
use crate::types::{ErrorResponse, UsageResponse};
use tollgate_core::usage::UsageRow;
use tollgate_store::usage::SubjectRuns;

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
        let answer = st.engine.usage_runs(&slug, &q)?;
        let head = UsageResponse {
            meter: slug_text,
            from: time_text(from),
            to: time_text(to),
            window_size,
            time_zone: tz_name,
            data: Vec::new(),
        };
        usage_json(&head, &answer).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            )
        })
    })
    .await?;
    let length: usize = body.iter().map(bytes::Bytes::len).sum();
    let stream =
        futures_util::stream::iter(body.into_iter().map(Ok::<_, std::convert::Infallible>));
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_owned(),
            ),
            (axum::http::header::CONTENT_LENGTH, length.to_string()),
        ],
        axum::body::Body::from_stream(stream),
    ))
}

/// Rows per thread below which a usage answer is written on one thread.
const JSON_ROWS_PER_THREAD_MIN: usize = 20_000;
/// Most threads one usage answer is written on.
const JSON_THREADS_MAX: usize = 4;

/// `d` normalized, as its exact decimal text, written into `out` inside quotes (a whole number
/// through itoa, as 64 bits when it fits; the text of a decimal is digits, `-` and `.`, which
/// JSON never escapes).
fn write_decimal(out: &mut Vec<u8>, d: rust_decimal::Decimal) {
    use std::io::Write as _;
    let d = d.normalize();
    out.push(b'"');
    if d.scale() == 0 {
        // Most values fit 64 bits, whose formatting is several times cheaper than 128 bits'.
        let mut digits = itoa::Buffer::new();
        let text = match i64::try_from(d.mantissa()) {
            Ok(small) => digits.format(small),
            Err(_) => digits.format(d.mantissa()),
        };
        out.extend_from_slice(text.as_bytes());
    } else {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{d}");
    }
    out.push(b'"');
}

/// Bytes of each piece a usage answer is written in. Under jemalloc's `oversize_threshold`
/// (8 MiB), so the pieces come from the arenas that keep freed pages for the next answer: one
/// buffer per thread of 18 MB was handed fresh, zeroed pages by the kernel every time, a fifth
/// of the answer's CPU time.
const JSON_CHUNK_BYTES: usize = 1 << 20;
/// Room left in a piece below which the next row starts a new piece (a row of a customer × day
/// answer is about 130 bytes; a longer row grows its piece).
const JSON_ROW_ROOM: usize = 1 << 10;

/// `head` (a [`UsageResponse`] with no rows) with `answer` as its `data`, as JSON in pieces
/// whose concatenation is the same bytes as serialising the full `UsageResponse`. Each row is
/// written field by field in [`crate::types::UsageRowBody`]'s order, without a body per row:
/// each window's text is formatted and escaped once per answer, each subject once (its rows
/// are never compared). Large answers are written on several threads (each writes a share of
/// the subjects; the pieces are sent in order, never copied into one buffer).
fn usage_json(
    head: &UsageResponse,
    answer: &SubjectRuns,
) -> Result<Vec<bytes::Bytes>, serde_json::Error> {
    let subjects: Vec<&[UsageRow]> = answer.subjects().collect();
    let mut texts: rustc_hash::FxHashMap<i64, Vec<u8>> = rustc_hash::FxHashMap::default();
    for row in subjects.iter().copied().flatten() {
        for t in [row.window_start, row.window_end] {
            if let std::collections::hash_map::Entry::Vacant(slot) = texts.entry(t.0) {
                slot.insert(serde_json::to_vec(&time_text(t))?);
            }
        }
    }
    let texts = &texts;
    let write_run = |run: &[&[UsageRow]]| -> Result<Vec<bytes::Bytes>, serde_json::Error> {
        let mut pieces = Vec::new();
        let mut out = Vec::with_capacity(JSON_CHUNK_BYTES);
        let text = |t: UnixMs| texts.get(&t.0).map_or(&b"\"\""[..], Vec::as_slice);
        for (i, subject_rows) in run.iter().enumerate() {
            let Some(first) = subject_rows.first() else {
                continue;
            };
            let subject = serde_json::to_vec(&first.subject)?;
            for (j, row) in subject_rows.iter().enumerate() {
                if out.capacity() - out.len() < JSON_ROW_ROOM {
                    let full = std::mem::replace(&mut out, Vec::with_capacity(JSON_CHUNK_BYTES));
                    pieces.push(bytes::Bytes::from(full));
                }
                if i > 0 || j > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"subject\":");
                out.extend_from_slice(&subject);
                out.extend_from_slice(b",\"window_start\":");
                out.extend_from_slice(text(row.window_start));
                out.extend_from_slice(b",\"window_end\":");
                out.extend_from_slice(text(row.window_end));
                out.extend_from_slice(b",\"group\":");
                if row.group.is_empty() {
                    out.extend_from_slice(b"{}");
                } else {
                    serde_json::to_writer(&mut out, &row.group)?;
                }
                out.extend_from_slice(b",\"value\":");
                write_decimal(&mut out, row.value);
                out.push(b'}');
            }
        }
        pieces.push(bytes::Bytes::from(out));
        Ok(pieces)
    };
    let threads = tollgate_store::usage::cores()
        .min(JSON_THREADS_MAX)
        .min(answer.len() / JSON_ROWS_PER_THREAD_MIN)
        .max(1);
    let runs = tollgate_store::usage::in_parallel(&subjects, threads, write_run)
        .into_iter()
        .collect::<Result<Vec<Vec<bytes::Bytes>>, _>>()?;
    // The head ends in `"data":[]}`: the rows go between the brackets.
    let mut open = serde_json::to_vec(head)?;
    let closing = open.split_off(open.len() - 2);
    let mut chunks = Vec::with_capacity(runs.iter().map(Vec::len).sum::<usize>() + runs.len() + 2);
    chunks.push(bytes::Bytes::from(open));
    for (i, run) in runs.into_iter().enumerate() {
        if i > 0 {
            chunks.push(bytes::Bytes::from_static(b","));
        }
        chunks.extend(run);
    }
    chunks.push(bytes::Bytes::from(closing));
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::usage_row;

    #[test]
    fn usage_json_is_the_serialised_response_for_any_number_of_rows() {
        for n in [0usize, 1, 2, 3 * JSON_ROWS_PER_THREAD_MIN + 7] {
            let rows: Vec<UsageRow> = (0..n)
                .map(|i| UsageRow {
                    subject: format!("cus_\"{}", i / 30),
                    window_start: UnixMs(i64::try_from(i % 30).unwrap_or(0) * 86_400_000),
                    window_end: UnixMs(i64::try_from(i % 30 + 1).unwrap_or(0) * 86_400_000),
                    group: if i % 2 == 0 {
                        std::collections::BTreeMap::new()
                    } else {
                        [
                            ("region".to_owned(), Some("eu".to_owned())),
                            ("k".to_owned(), None),
                        ]
                        .into_iter()
                        .collect()
                    },
                    value: {
                        let i = i64::try_from(i).unwrap_or(0);
                        match i % 5 {
                            0 => rust_decimal::Decimal::new(i * 1000, 3),
                            1 => rust_decimal::Decimal::new(-i, 2),
                            2 => rust_decimal::Decimal::new(i * 10 + 5, 1),
                            3 => rust_decimal::Decimal::new(i64::MAX - i, 0),
                            // Past 64 bits, either sign.
                            _ => rust_decimal::Decimal::from_i128_with_scale(
                                (i128::from(i64::MAX) * 1_000 + i128::from(i))
                                    * (1 - 2 * i128::from(i % 2)),
                                0,
                            ),
                        }
                    },
                })
                .collect();
            let head = UsageResponse {
                meter: "bytes".into(),
                from: "2026-11-01T00:00:00Z".into(),
                to: "2026-12-01T00:00:00Z".into(),
                window_size: Some("day".into()),
                time_zone: "UTC".into(),
                data: Vec::new(),
            };
            let full = UsageResponse {
                data: rows.iter().cloned().map(usage_row).collect(),
                ..head.clone_head()
            };
            let want = serde_json::to_vec(&full).unwrap_or_default();
            let got: Vec<u8> = usage_json(&head, &SubjectRuns::from_sorted(rows))
                .unwrap_or_default()
                .concat();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{n} rows"
            );
        }
    }

    impl UsageResponse {
        fn clone_head(&self) -> UsageResponse {
            UsageResponse {
                meter: self.meter.clone(),
                from: self.from.clone(),
                to: self.to.clone(),
                window_size: self.window_size.clone(),
                time_zone: self.time_zone.clone(),
                data: Vec::new(),
            }
        }
    }
}
