//! `POST /v1/events`: CloudEvents in, one verdict per event out, answered once durable.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use tollgate_core::event::batch::{array_spans, ndjson_spans};
use tollgate_core::ipmeta::attribution::attribute_body;
use tollgate_core::limits::{BATCH_EVENTS_MAX, BODY_BYTES_MAX};
use tollgate_store::Scope;

use super::{blocking, read_body};
use crate::ApiError;
use crate::auth::authorize;
use crate::types::IngestResponse;

/// How the body holds its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyMode {
    /// One event (`application/cloudevents+json`).
    Single,
    /// A JSON array (`application/cloudevents-batch+json`).
    Batch,
    /// One event per line (`application/x-ndjson`).
    Lines,
    /// `application/json`: an array is a batch, an object one event.
    Sniff,
}

fn body_mode(headers: &HeaderMap) -> Result<BodyMode, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "application/cloudevents+json" => Ok(BodyMode::Single),
        "application/cloudevents-batch+json" => Ok(BodyMode::Batch),
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
            Ok(BodyMode::Lines)
        }
        "application/json" => Ok(BodyMode::Sniff),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type `{other}` is not accepted; use application/cloudevents+json, \
                 application/cloudevents-batch+json or application/x-ndjson"
            ),
        )),
    }
}

/// Ingest CloudEvents.
///
/// Accepts one event (`application/cloudevents+json`), a JSON array
/// (`application/cloudevents-batch+json`) or NDJSON (`application/x-ndjson`). Answers only after
/// the batch is committed and fsynced. Each event gets a verdict; one bad event never sinks the
/// others. Re-sending a batch changes nothing.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(
        content(
            (Object = "application/cloudevents+json"),
            (Vec<Object> = "application/cloudevents-batch+json"),
            (String = "application/x-ndjson"),
        ),
        description = "CloudEvents 1.0 (structured JSON). `subject` is the customer key."
    ),
    responses(
        (status = 200, description = "Every event has a verdict", body = IngestResponse),
        (status = 400, description = "`malformed_json`, `malformed_body`", body = crate::types::ErrorResponse),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::types::ErrorResponse),
        (status = 403, description = "`insufficient_scope`", body = crate::types::ErrorResponse),
        (status = 413, description = "`body_too_large`, `too_many_events`", body = crate::types::ErrorResponse),
        (status = 415, description = "`unsupported_media_type`", body = crate::types::ErrorResponse),
        (status = 503, description = "`writer_busy`, `storage_unavailable`, `disk_full`", body = crate::types::ErrorResponse),
    ),
    security(("api_key" = ["ingest"]))
)]
pub(crate) async fn ingest(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    authorize(&state, &headers, Scope::Ingest)?;
    let mode = body_mode(&headers)?;
    let bytes = read_body(body, BODY_BYTES_MAX).await?;
    let engine_state = state.clone();
    let batch = blocking(move || {
        // Takes the buffer over without a copy when the body arrived as one piece.
        let text = String::from_utf8(Vec::from(bytes))
            .map_err(|_| ApiError::bad_request("malformed_body", "the body is not UTF-8"))?;
        let spans = split(&text, mode)?;
        if spans.len() > BATCH_EVENTS_MAX {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
                format!(
                    "{} events in one request; the limit is {BATCH_EVENTS_MAX}",
                    spans.len()
                ),
            )
            .with_details(serde_json::json!({"events": spans.len(), "limit": BATCH_EVENTS_MAX})));
        }
        // Events that carry a client address but no subject get one (configured sources only).
        let ip = &engine_state.ip;
        let (sources, table) = (ip.sources(), ip.table());
        let now = engine_state.engine.now();
        match attribute_body(&text, &spans, &sources, &table, now) {
            Some((body, spans, _)) => Ok(engine_state.engine.prepare(body, spans)),
            None => Ok(engine_state.engine.prepare(text, spans)),
        }
    })
    .await?;
    let outcome = state.engine.try_submit(batch)?.outcome().await?;
    Ok(Json(outcome.into()))
}

fn split(text: &str, mode: BodyMode) -> Result<Vec<(usize, std::ops::Range<usize>)>, ApiError> {
    let trimmed_start = text.len() - text.trim_start().len();
    let mode = match mode {
        BodyMode::Sniff if text[trimmed_start..].starts_with('[') => BodyMode::Batch,
        BodyMode::Sniff => BodyMode::Single,
        other => other,
    };
    match mode {
        BodyMode::Single => {
            let trimmed = text.trim();
            if trimmed.is_empty() {
                return Err(ApiError::bad_request("malformed_json", "the body is empty"));
            }
            // The whole body must be one JSON value; its content is validated as an event.
            serde_json::from_str::<&serde_json::value::RawValue>(trimmed)
                .map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?;
            Ok(vec![(0, trimmed_start..trimmed_start + trimmed.len())])
        }
        BodyMode::Batch | BodyMode::Sniff => array_spans(text).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("expected a JSON array of events: {e}"),
            )
        }),
        BodyMode::Lines => Ok(ndjson_spans(text)),
    }
}
