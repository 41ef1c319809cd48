//! `/v1/inspect/...`: versioned inspection rule sets (publish needs `admin`, reads `read`) and
//! the decision for one request (`ingest`), which records every `flag` and `block` as an event
//! through the engine, like `POST /v1/events`.
//!
//! The decision path reads only memory: the current compiled rule set, the IP allocation
//! snapshot (attribution) and the MaxMind readers (enrichment). Allowed requests touch no
//! storage; a flagged or blocked one is answered once its event is durable (group commit).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_core::inspect::{Action, Decision, DecisionRecord, Request};
use tollgate_core::ipmeta::attribution::UNATTRIBUTED_SUBJECT;
use tollgate_core::ipmeta::{canonical_ip, parse_ip};
use tollgate_core::limits::{
    EVENT_ID_BYTES_MAX, EVENT_SUBJECT_BYTES_MAX, INSPECT_DECIDE_BODY_BYTES_MAX,
    INSPECT_PATH_BYTES_MAX, INSPECT_RULE_SET_BYTES_MAX, INSPECT_TEXT_BYTES_MAX,
};
use tollgate_store::Scope;
use tollgate_store::inspect::new_event_id;

use super::{blocking, limit_param, query_params, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::inspect::{action_body, info_body, rule_set, rule_set_body, version_body};
use crate::convert::instant;
use crate::types::ErrorResponse;
use crate::types::inspect::{
    DecideRequest, DecideResponse, PublishRuleSetRequest, RecordedEventBody, RuleSetBody,
    RuleSetInfoBody, RuleSetList,
};

/// Most versions in one list answer.
const VERSIONS_PAGE_MAX: usize = 1_000;

/// Publish a new version of the rule set: the whole set (rules and categories), validated,
/// then immutable. It becomes current at once; the change is audited (`kind=inspect_rules`).
#[utoipa::path(
    post,
    path = "/v1/inspect/rule_sets",
    tag = "inspect",
    request_body = PublishRuleSetRequest,
    responses(
        (status = 201, body = RuleSetInfoBody),
        (status = 400, description = "`invalid_body`, `malformed_json`, `duplicate_rule`, `unknown_category`, `invalid_rule`", body = ErrorResponse),
        (status = 409, description = "`rule_set_version_conflict`: `base_version` is not current", body = ErrorResponse),
        (status = 413, description = "`body_too_large`", body = ErrorResponse),
        (status = 422, description = "`inspect_rules_max`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn publish(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<RuleSetInfoBody>), ApiError> {
    let key = authorize(&state, &headers, Scope::Admin)?;
    let req: PublishRuleSetRequest = read_json(body, INSPECT_RULE_SET_BYTES_MAX).await?;
    let now = state.engine.now();
    let st = state.clone();
    let info = blocking(move || {
        let expected = req.base_version;
        Ok(st.inspect.publish(rule_set(req), expected, &key.id, now)?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info_body(&info))))
}

/// The published versions, newest first.
#[utoipa::path(
    get,
    path = "/v1/inspect/rule_sets",
    tag = "inspect",
    params(
        ("before" = Option<u64>, Query, description = "Only versions below this one (paging)"),
        ("limit" = Option<usize>, Query, description = "Default 100, at most 1000"),
    ),
    responses(
        (status = 200, body = RuleSetList),
        (status = 400, description = "`invalid_before`, `invalid_limit`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RuleSetList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let params = query_params(pairs, &["before", "limit"])?;
    let limit = limit_param(&params, 100, VERSIONS_PAGE_MAX)?;
    let before = params
        .get("before")
        .map(|t| {
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request("invalid_before", "before is a version number"))
        })
        .transpose()?;
    let st = state.clone();
    let rows = blocking(move || Ok(st.inspect.list(before, limit)?)).await?;
    Ok(Json(RuleSetList {
        data: rows.iter().map(info_body).collect(),
    }))
}

/// The current version with its rules (from memory).
#[utoipa::path(
    get,
    path = "/v1/inspect/rule_sets/current",
    tag = "inspect",
    responses(
        (status = 200, body = RuleSetBody),
        (status = 404, description = "`rule_set_not_found`: nothing published yet", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn current(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<RuleSetBody>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let current = state
        .inspect
        .current()
        .ok_or_else(|| ApiError::not_found("rule_set_not_found", "no rule set is published yet"))?;
    Ok(Json(rule_set_body(
        &current.info,
        current.inspector.rule_set(),
    )))
}

/// One version with its rules.
#[utoipa::path(
    get,
    path = "/v1/inspect/rule_sets/{version}",
    tag = "inspect",
    params(("version" = String, Path, description = "A version number, or `current`")),
    responses(
        (status = 200, body = RuleSetBody),
        (status = 400, description = "`invalid_version`", body = ErrorResponse),
        (status = 404, description = "`rule_set_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RuleSetBody>, ApiError> {
    if version == "current" {
        return current(State(state), headers).await;
    }
    authorize(&state, &headers, Scope::Read)?;
    let v: u64 = version.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_version",
            "a version is a positive integer or `current`",
        )
    })?;
    let st = state.clone();
    let found = blocking(move || Ok(st.inspect.get(v)?)).await?;
    let found = found.ok_or_else(|| {
        ApiError::not_found("rule_set_not_found", format!("no rule set version {v}"))
    })?;
    Ok(Json(version_body(&found)))
}

/// A host as given to a decision: 1..=253 bytes of letters, digits, `-`, `_`, `.`, or an IP
/// literal (`:`, `[`, `]`).
fn check_host(host: &str) -> Result<(), ApiError> {
    let ok = !host.is_empty()
        && host.len() <= INSPECT_TEXT_BYTES_MAX
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_host",
            format!(
                "dest_host must be 1..={INSPECT_TEXT_BYTES_MAX} bytes of letters, digits, `-`, `_`, `.` (or an IP literal)"
            ),
        ))
    }
}

fn check_len(
    value: Option<&str>,
    max: usize,
    code: &'static str,
    what: &str,
) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > max => Err(ApiError::bad_request(
            code,
            format!("{what} must be 1..={max} bytes"),
        )),
        _ => Ok(()),
    }
}

/// Decide one request against the current rule set. `flag` and `block` are recorded as
/// `inspect.flagged` / `inspect.blocked` events (source `tollgate/inspect`, subject the
/// customer) before the answer, so meters count them like any event.
#[utoipa::path(
    post,
    path = "/v1/inspect/decide",
    tag = "inspect",
    request_body = DecideRequest,
    responses(
        (status = 200, body = DecideResponse),
        (status = 400, description = "`invalid_body`, `malformed_json`, `invalid_ip`, `invalid_host`, `invalid_path`, `invalid_customer`, `invalid_request_id`, `invalid_time`, or the event's rejection code (`too_old`, `in_future`, ...)", body = ErrorResponse),
        (status = 413, description = "`body_too_large`", body = ErrorResponse),
        (status = 503, description = "`writer_busy`, `storage_unavailable`: a flag or block could not be recorded", body = ErrorResponse),
    ),
    security(("api_key" = ["ingest"]))
)]
pub(crate) async fn decide(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<DecideResponse>, ApiError> {
    authorize(&state, &headers, Scope::Ingest)?;
    let req: DecideRequest = read_json(body, INSPECT_DECIDE_BODY_BYTES_MAX).await?;
    let ip = canonical_ip(parse_ip(&req.client_ip)?);
    check_host(&req.dest_host)?;
    let path = req.path.as_deref().unwrap_or("/");
    if path.len() > INSPECT_PATH_BYTES_MAX {
        return Err(ApiError::bad_request(
            "invalid_path",
            format!("path is longer than {INSPECT_PATH_BYTES_MAX} bytes"),
        ));
    }
    check_len(
        req.customer.as_deref(),
        EVENT_SUBJECT_BYTES_MAX,
        "invalid_customer",
        "customer",
    )?;
    check_len(
        req.request_id.as_deref(),
        EVENT_ID_BYTES_MAX,
        "invalid_request_id",
        "request_id",
    )?;
    let now = state.engine.now();
    let time = match req.time.as_deref() {
        Some(t) => {
            let t = instant("time", t)?;
            // Checked for every decision, not only recorded ones, so a bad time is refused the
            // same way whatever the rules say.
            tollgate_core::event::check_window(t, now, state.engine.config().acceptance_window_ms)
                .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
            t
        }
        None => now,
    };
    let geo = state.ip.geo.lookup(ip);
    let customer = match req.customer {
        Some(c) => c,
        None => state
            .ip
            .table()
            .lookup(ip, time)
            .map_or_else(|| UNATTRIBUTED_SUBJECT.to_owned(), |a| a.customer.clone()),
    };
    let request = Request {
        dest_host: &req.dest_host,
        path,
        country: geo.country.as_deref(),
        asn: geo.asn,
    };
    let current = state.inspect.current();
    let decision = match &current {
        Some(c) => c.inspector.decide(&request),
        None => Decision {
            action: Action::Allow,
            rule: None,
            category: None,
        },
    };
    let version = current.as_ref().map(|c| c.info.version);
    let mut recorded = None;
    if let (Some(event_type), Some(v)) = (decision.action.event_type(), version) {
        let id = req.request_id.clone().unwrap_or_else(new_event_id);
        let client_ip = ip.to_string();
        let text = DecisionRecord {
            id: &id,
            subject: &customer,
            time,
            decision: &decision,
            rule_set_version: v,
            request: &request,
            client_ip: &client_ip,
            bytes: req.bytes,
        }
        .to_event();
        if let Some(text) = text {
            let len = text.len();
            // Answered once durable: the decision does not read usage, so it need not wait for
            // the event to be folded into the rollups too.
            let batch = state
                .engine
                .prepare(text, vec![(0, 0..len)])
                .answer_when_durable();
            let outcome = state.engine.try_submit(batch)?.outcome().await?;
            let verdict = if outcome.accepted == 1 {
                "accepted"
            } else if outcome.duplicates == 1 {
                "duplicate"
            } else if outcome.conflicts == 1 {
                "conflict"
            } else {
                let err = outcome.errors.first();
                return Err(ApiError::bad_request(
                    err.map_or("event_rejected", |e| e.code),
                    err.map_or_else(
                        || "the decision's event was not accepted".to_owned(),
                        |e| format!("the decision's event was not accepted: {}", e.message),
                    ),
                ));
            };
            recorded = Some(RecordedEventBody {
                id,
                event_type: event_type.to_owned(),
                verdict: verdict.to_owned(),
            });
        }
    }
    Ok(Json(DecideResponse {
        action: action_body(decision.action),
        rule: decision.rule.map(str::to_owned),
        category: decision.category.map(str::to_owned),
        rule_set_version: version,
        customer,
        country: geo.country.clone(),
        asn: geo.asn,
        event: recorded,
    }))
}
