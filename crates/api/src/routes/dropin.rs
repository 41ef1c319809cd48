//! Drop-in ingest: the ingest endpoints of Orb, Stripe and OpenMeter, so existing clients move
//! to Tollgate by changing their base URL.
//!
//! Owns: the three routes, reading each request (JSON, form fields, CloudEvents), the clients'
//! credentials in the places those clients put them, and answering in each service's own
//! success and error shapes so the official clients surface them as their typed errors. Does
//! not own: the conversion of a foreign event ([`crate::convert::dropin`], the only place it
//! happens) nor dedup and durability: every converted event goes through `Engine::prepare` and
//! `try_submit` like `/v1/events`, and the answer is sent only once the batch is committed and
//! fsynced.
//!
//! Verdicts: an event counted now or counted before (a retry) is a success for every adapter;
//! an event that could not be converted, was rejected by validation or the acceptance window, or
//! reused an identity with a different payload (`conflict`) is reported in the adapter's error
//! shape. The other events of the same request are counted all the same; re-sending the whole
//! request after fixing the bad events is safe, since dedup makes the good ones duplicates.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tollgate_core::limits::{BATCH_EVENTS_MAX, BODY_BYTES_MAX};
use tollgate_store::{BatchOutcome, Scope};

use super::{blocking, read_body};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::dropin::{
    ConvertError, into_body, openmeter_event, orb_event, orb_idempotency_key, stripe_event,
    stripe_form,
};
use crate::types::dropin::{
    OrbErrorResponse, OrbIngestDebug, OrbIngestResponse, OrbValidationFailed, ProblemResponse,
    StripeError, StripeErrorResponse, StripeMeterEventResponse,
};

/// Largest body of one Stripe meter event request (one event, form-encoded).
pub const STRIPE_BODY_BYTES_MAX: usize = 64 * 1024;

/// What happened to one event of a request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Counted by this request.
    Accepted,
    /// Counted before, with the same payload: a retry.
    Duplicate,
    /// Not counted.
    Failed {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
}

impl Verdict {
    fn from_convert(e: &ConvertError) -> Verdict {
        Verdict::Failed {
            code: e.code(),
            message: e.to_string(),
            field: e.field().map(str::to_owned),
        }
    }
}

/// Feeds converted events to the engine, exactly as `/v1/events` does, and answers one verdict
/// per input event (`converted` and `failed` together cover `0..n`).
async fn ingest(
    state: &crate::State,
    n: usize,
    converted: Vec<(usize, Value)>,
    failed: Vec<(usize, ConvertError)>,
) -> Result<Vec<Verdict>, ApiError> {
    let mut verdicts: Vec<Verdict> = (0..n).map(|_| Verdict::Accepted).collect();
    for (index, e) in &failed {
        verdicts[*index] = Verdict::from_convert(e);
    }
    if converted.is_empty() {
        return Ok(verdicts);
    }
    let engine_state = state.clone();
    let batch = blocking(move || {
        let (body, spans) = into_body(&converted);
        Ok(engine_state.engine.prepare(body, spans))
    })
    .await?;
    let outcome: BatchOutcome = state.engine.try_submit(batch)?.outcome().await?;
    for e in outcome.errors {
        let Some(slot) = verdicts.get_mut(e.index) else {
            continue;
        };
        *slot = if e.code == "duplicate" {
            Verdict::Duplicate
        } else {
            let field = match e.code {
                "too_old" | "in_future" | "invalid_time" => Some("timestamp".to_owned()),
                _ => None,
            };
            Verdict::Failed {
                code: e.code,
                message: e.message,
                field,
            }
        };
    }
    Ok(verdicts)
}

fn too_many(n: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_events",
        format!("{n} events in one request; the limit is {BATCH_EVENTS_MAX}"),
    )
}

// ---------------------------------------------------------------------------------------------
// Orb

const ORB_ERRORS: &str = "https://docs.withorb.com/reference/error-responses";

/// Orb's error body for an error: its `type` URI picks the Orb client's exception class.
fn orb_error(e: ApiError, validation_failed: Vec<OrbValidationFailed>) -> Response {
    let kind = match e.status.as_u16() {
        400 => format!("{ORB_ERRORS}#400-request-validation-errors"),
        401 => format!("{ORB_ERRORS}#401-authentication-error"),
        413 => format!("{ORB_ERRORS}#413-request-too-large"),
        s if s >= 500 => format!("{ORB_ERRORS}#500-internal-server-error"),
        _ => "about:blank".to_owned(),
    };
    let validation_errors = if validation_failed.is_empty() {
        vec![Value::from(e.message.as_str())]
    } else {
        validation_failed
            .iter()
            .map(|f| json!({"idempotency_key": f.idempotency_key, "validation_errors": f.validation_errors}))
            .collect()
    };
    let body = OrbErrorResponse {
        kind,
        status: e.status.as_u16(),
        title: e.status.canonical_reason().unwrap_or("Error").to_owned(),
        detail: e.message,
        code: e.code.to_owned(),
        validation_errors,
        validation_failed,
    };
    with_retry_after(e.status, (e.status, Json(body)).into_response())
}

fn with_retry_after(status: StatusCode, mut response: Response) -> Response {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}

/// Orb's ingest, `POST /v1/ingest` (point the Orb client's `base_url` at
/// `http://<tollgate>/v1`).
///
/// Body `{"events": [...]}`; each event has `idempotency_key`, `event_name`, `timestamp`,
/// `properties` and one of `external_customer_id` / `customer_id` (the Tollgate customer key).
/// The event counts once per `idempotency_key` (source `orb`). `backfill_id` is accepted and
/// ignored: Tollgate takes late events directly inside its acceptance window. `debug=true`
/// lists ingested and duplicate keys. Any event not ingested makes the answer a 400
/// (`#400-request-validation-errors`) listing it in `validation_failed`; the others are counted.
#[utoipa::path(
    post,
    path = "/v1/ingest",
    tag = "dropin",
    params(
        ("debug" = Option<bool>, Query, description = "List ingested and duplicate keys"),
        ("backfill_id" = Option<String>, Query, description = "Accepted and ignored"),
    ),
    request_body(content = Object, content_type = "application/json", description = "Orb's `{\"events\": [...]}`"),
    responses(
        (status = 200, description = "Every event counted (now or before)", body = OrbIngestResponse),
        (status = 400, description = "Some events not ingested, or a malformed body", body = OrbErrorResponse),
        (status = 401, description = "Missing or unknown API key", body = OrbErrorResponse),
        (status = 403, description = "The key lacks the `ingest` scope", body = OrbErrorResponse),
        (status = 413, description = "`body_too_large`, `too_many_events`", body = OrbErrorResponse),
        (status = 503, description = "`writer_busy`, `storage_unavailable`, `disk_full`", body = OrbErrorResponse),
    ),
    security(("api_key" = ["ingest"]))
)]
pub(crate) async fn orb_ingest(
    State(state): State<crate::State>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match orb_inner(state, pairs, headers, body).await {
        Ok(response) => response,
        Err(e) => orb_error(e, Vec::new()),
    }
}

async fn orb_inner(
    state: crate::State,
    pairs: Vec<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Ingest)?;
    let mut debug = false;
    for (name, value) in &pairs {
        match name.as_str() {
            "debug" => debug = value == "true",
            // Orb ties late events to a backfill; Tollgate takes them inside its window.
            "backfill_id" => {}
            other => {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("unknown query parameter `{other}` (allowed: debug, backfill_id)"),
                ));
            }
        }
    }
    let bytes = read_body(body, BODY_BYTES_MAX).await?;
    let mapping = state.dropin.clone();
    let (events, converted, failed) = blocking(move || {
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?;
        let Some(Value::Array(events)) = body.get("events") else {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the body must be an object with an `events` array",
            ));
        };
        if events.len() > BATCH_EVENTS_MAX {
            return Err(too_many(events.len()));
        }
        let mut converted = Vec::with_capacity(events.len());
        let mut failed = Vec::new();
        for (index, event) in events.iter().enumerate() {
            match orb_event(&mapping, event) {
                Ok(ce) => converted.push((index, ce)),
                Err(e) => failed.push((index, e)),
            }
        }
        let keys: Vec<String> = events
            .iter()
            .map(|e| orb_idempotency_key(e).unwrap_or_default().to_owned())
            .collect();
        Ok((keys, converted, failed))
    })
    .await?;
    let verdicts = ingest(&state, events.len(), converted, failed).await?;
    let mut validation_failed = Vec::new();
    let (mut ingested, mut duplicate) = (Vec::new(), Vec::new());
    for (key, verdict) in events.into_iter().zip(verdicts) {
        match verdict {
            Verdict::Accepted => ingested.push(key),
            Verdict::Duplicate => duplicate.push(key),
            Verdict::Failed { code, message, .. } => validation_failed.push(OrbValidationFailed {
                idempotency_key: key,
                validation_errors: vec![format!("{code}: {message}")],
            }),
        }
    }
    if !validation_failed.is_empty() {
        let n = validation_failed.len();
        return Ok(orb_error(
            ApiError::bad_request(
                "events_not_ingested",
                format!(
                    "{n} event(s) failed validation and were not ingested; the others were \
                     (re-sending them is safe)"
                ),
            ),
            validation_failed,
        ));
    }
    let body = OrbIngestResponse {
        validation_failed,
        debug: debug.then_some(OrbIngestDebug {
            ingested,
            duplicate,
        }),
    };
    Ok(Json(body).into_response())
}

// ---------------------------------------------------------------------------------------------
// Stripe

/// Stripe's error envelope for an error; `type` and status pick the Stripe client's exception.
fn stripe_error(e: ApiError, kind: &str, param: Option<String>) -> Response {
    let body = StripeErrorResponse {
        error: StripeError {
            kind: kind.to_owned(),
            code: e.code.to_owned(),
            message: e.message,
            param,
        },
    };
    let mut response = with_retry_after(e.status, (e.status, Json(body)).into_response());
    // Stripe's clients retry only when told to (or on 409 / 5xx); say so explicitly.
    let retry = if e.status.is_server_error() {
        "true"
    } else {
        "false"
    };
    response
        .headers_mut()
        .insert("stripe-should-retry", HeaderValue::from_static(retry));
    response
}

fn stripe_api_error(e: ApiError) -> Response {
    let kind = if e.status.is_server_error() {
        "api_error"
    } else {
        "invalid_request_error"
    };
    stripe_error(e, kind, None)
}

/// Stripe's clients send the secret key as a Bearer token; `curl -u KEY:` sends it as Basic.
fn stripe_credentials(headers: &HeaderMap) -> HeaderMap {
    use base64::Engine as _;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let mut out = headers.clone();
    if let Some(user_pass) = basic {
        let key = user_pass.split(':').next().unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {key}")) {
            out.insert(header::AUTHORIZATION, v);
        }
    }
    out
}

/// A fresh random identifier for a meter event sent without `identifier` and without an
/// `Idempotency-Key` (as Stripe does: such an event counts every time it is sent).
fn random_identifier() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("tg_mev_{}", hex::encode(bytes))
}

/// Stripe's meter events, `POST /v1/billing/meter_events` (set the Stripe client's `api_base`
/// to `http://<tollgate>`, and its API key to a Tollgate key with the `ingest` scope).
///
/// Form-encoded: `event_name`, `payload[stripe_customer_id]` (the Tollgate customer key; the
/// payload key is configurable), `payload[value]` and any other `payload[...]` (all become the
/// event's `data`), `identifier`, `timestamp` (seconds). The event counts once per identifier
/// (source `stripe`); without `identifier` the request's `Idempotency-Key` (which Stripe's
/// clients send and keep across retries) is the identifier. A retry answers the same object;
/// the same identifier with a different event is 400 `idempotency_error`.
#[utoipa::path(
    post,
    path = "/v1/billing/meter_events",
    tag = "dropin",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Stripe's meter event parameters"),
    responses(
        (status = 200, description = "Counted (now or before)", body = StripeMeterEventResponse),
        (status = 400, description = "`invalid_request_error` or `idempotency_error`", body = StripeErrorResponse),
        (status = 401, description = "Missing or unknown API key", body = StripeErrorResponse),
        (status = 403, description = "The key lacks the `ingest` scope", body = StripeErrorResponse),
        (status = 413, description = "`body_too_large`", body = StripeErrorResponse),
        (status = 503, description = "`writer_busy`, `storage_unavailable`, `disk_full`", body = StripeErrorResponse),
    ),
    security(("api_key" = ["ingest"]))
)]
pub(crate) async fn stripe_meter_event(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match stripe_inner(state, headers, body).await {
        Ok(response) => response,
        Err(response) => response,
    }
}

async fn stripe_inner(
    state: crate::State,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    authorize(&state, &stripe_credentials(&headers), Scope::Ingest).map_err(stripe_api_error)?;
    let bytes = read_body(body, STRIPE_BODY_BYTES_MAX)
        .await
        .map_err(stripe_api_error)?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let invalid = |e: ConvertError| {
        let param = e.field().map(str::to_owned);
        stripe_error(
            ApiError::bad_request(e.code(), e.to_string()),
            "invalid_request_error",
            param,
        )
    };
    let event = stripe_form(&pairs, || idempotency_key.unwrap_or_else(random_identifier))
        .map_err(invalid)?;
    let (converted, failed) = match stripe_event(&state.dropin, &event) {
        Ok(ce) => (vec![(0, ce)], Vec::new()),
        Err(e) => (Vec::new(), vec![(0, e)]),
    };
    let now_s = state.engine.now().0.div_euclid(1000);
    let verdicts = ingest(&state, 1, converted, failed)
        .await
        .map_err(stripe_api_error)?;
    match verdicts.into_iter().next() {
        Some(Verdict::Accepted | Verdict::Duplicate) => Ok(Json(StripeMeterEventResponse {
            object: "billing.meter_event".into(),
            created: now_s,
            event_name: event.event_name,
            identifier: event.identifier,
            livemode: false,
            payload: event.payload,
            timestamp: event.timestamp_s.unwrap_or(now_s),
        })
        .into_response()),
        Some(Verdict::Failed {
            code: "conflict",
            message,
            ..
        }) => Err(stripe_error(
            ApiError::bad_request(
                "conflict",
                format!(
                    "a meter event with identifier `{}` was already recorded with a different \
                     event; the first one stays ({message})",
                    event.identifier
                ),
            ),
            "idempotency_error",
            Some("identifier".into()),
        )),
        Some(Verdict::Failed {
            code,
            message,
            field,
        }) => Err(stripe_error(
            ApiError::bad_request(code, message),
            "invalid_request_error",
            field,
        )),
        None => Err(stripe_api_error(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no verdict for the event",
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// OpenMeter

fn problem(e: ApiError, errors: Option<Value>) -> Response {
    let mut extensions = json!({ "code": e.code });
    if let (Some(errors), Some(obj)) = (errors, extensions.as_object_mut()) {
        obj.insert("errors".into(), errors);
    }
    let body = ProblemResponse {
        kind: "about:blank".into(),
        title: e.status.canonical_reason().unwrap_or("Error").to_owned(),
        status: e.status.as_u16(),
        detail: e.message,
        instance: "/api/v1/events".into(),
        extensions,
    };
    let mut response = with_retry_after(e.status, (e.status, Json(body)).into_response());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// OpenMeter's ingest, `POST /api/v1/events` (point the OpenMeter client's `endpoint` at
/// `http://<tollgate>`, its token at a Tollgate key with the `ingest` scope).
///
/// CloudEvents as `/v1/events` takes them (`application/cloudevents+json`,
/// `application/cloudevents-batch+json`, or `application/json` holding either); `type` goes
/// through the drop-in mapping. Answers 204 when every event is counted (now or before);
/// otherwise 400 problem details whose `extensions.errors` lists the events not counted (the
/// others are).
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "dropin",
    request_body(
        content(
            (Object = "application/cloudevents+json"),
            (Vec<Object> = "application/cloudevents-batch+json"),
        ),
        description = "CloudEvents 1.0; `subject` is the customer key."
    ),
    responses(
        (status = 204, description = "Every event counted (now or before)"),
        (status = 400, description = "Some events not counted, or a malformed body", body = ProblemResponse),
        (status = 401, description = "Missing or unknown API key", body = ProblemResponse),
        (status = 403, description = "The key lacks the `ingest` scope", body = ProblemResponse),
        (status = 413, description = "`body_too_large`, `too_many_events`", body = ProblemResponse),
        (status = 415, description = "`unsupported_media_type`", body = ProblemResponse),
        (status = 503, description = "`writer_busy`, `storage_unavailable`, `disk_full`", body = ProblemResponse),
    ),
    security(("api_key" = ["ingest"]))
)]
pub(crate) async fn openmeter_ingest(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match openmeter_inner(state, headers, body).await {
        Ok(response) => response,
        Err(e) => problem(e, None),
    }
}

async fn openmeter_inner(
    state: crate::State,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Ingest)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let batch = match content_type.as_str() {
        "application/cloudevents+json" => Some(false),
        "application/cloudevents-batch+json" => Some(true),
        "application/json" => None,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type `{other}` is not accepted; use application/cloudevents+json \
                     or application/cloudevents-batch+json"
                ),
            ));
        }
    };
    let bytes = read_body(body, BODY_BYTES_MAX).await?;
    let mapping = state.dropin.clone();
    let (ids, converted, failed) = blocking(move || {
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?;
        let events = match (body, batch) {
            (Value::Array(events), Some(true) | None) => events,
            (event @ Value::Object(_), Some(false) | None) => vec![event],
            _ => {
                return Err(ApiError::bad_request(
                    "malformed_body",
                    "expected one CloudEvent object (application/cloudevents+json) or an array \
                     of them (application/cloudevents-batch+json)",
                ));
            }
        };
        if events.len() > BATCH_EVENTS_MAX {
            return Err(too_many(events.len()));
        }
        let ids: Vec<Option<String>> = events
            .iter()
            .map(|e| e.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let mut converted = Vec::with_capacity(events.len());
        let mut failed = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            match openmeter_event(&mapping, event) {
                Ok(ce) => converted.push((index, ce)),
                Err(e) => failed.push((index, e)),
            }
        }
        Ok((ids, converted, failed))
    })
    .await?;
    let verdicts = ingest(&state, ids.len(), converted, failed).await?;
    let errors: Vec<Value> = ids
        .into_iter()
        .zip(verdicts)
        .enumerate()
        .filter_map(|(index, (id, verdict))| match verdict {
            Verdict::Failed { code, message, .. } => {
                Some(json!({"index": index, "id": id, "code": code, "message": message}))
            }
            Verdict::Accepted | Verdict::Duplicate => None,
        })
        .collect();
    if errors.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let n = errors.len();
    Ok(problem(
        ApiError::bad_request(
            "events_not_accepted",
            format!(
                "{n} event(s) were not accepted (see extensions.errors); the others were counted \
                 and re-sending them is safe"
            ),
        ),
        Some(Value::Array(errors)),
    ))
}
