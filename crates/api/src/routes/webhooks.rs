//! `/v1/webhook_endpoints` and `/v1/webhook_messages` (admin): the endpoint registry, the
//! outbox's messages with their deliveries and attempt log, replay, and test pings.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_core::webhook::EventType;
use tollgate_store::Scope;
use tollgate_store::webhooks::{EndpointPatch, MessageFilter, WEBHOOK_LIST_LIMIT_MAX};

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, limit_param, query_params, read_body, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::webhooks::{
    delivery_response, endpoint_response, event_types, message_response,
};
use crate::types::ErrorResponse;
use crate::types::webhooks::*;

/// Create a webhook endpoint. Its signing secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints",
    tag = "webhooks",
    request_body = WebhookEndpointBody,
    responses(
        (status = 201, body = WebhookEndpointWithSecret),
        (status = 400, description = "`invalid_url`, `unknown_event_type`, `invalid_event_types`, `invalid_body`", body = ErrorResponse),
        (status = 409, description = "`webhook_endpoints_max`", body = ErrorResponse),
        (status = 422, description = "`webhook_url_bytes_max`, `webhook_endpoint_event_types_max`, `webhook_description_bytes_max`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<WebhookEndpointWithSecret>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let req: WebhookEndpointBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let types = event_types(&req.event_types)?;
    let st = state.clone();
    let created = blocking(move || {
        Ok(st.webhooks.create_endpoint(
            &req.url,
            req.description.as_deref().unwrap_or(""),
            &types,
            st.engine.now(),
        )?)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookEndpointWithSecret {
            endpoint: endpoint_response(&created.endpoint),
            secret: created.secret,
        }),
    ))
}

/// List webhook endpoints (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints",
    tag = "webhooks",
    responses((status = 200, body = WebhookEndpointList)),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<WebhookEndpointList>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let all = blocking(move || Ok(st.webhooks.endpoints()?)).await?;
    Ok(Json(WebhookEndpointList {
        data: all.iter().map(endpoint_response).collect(),
    }))
}

/// One webhook endpoint.
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = WebhookEndpointResponse),
        (status = 404, description = "`endpoint_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<WebhookEndpointResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let e = blocking(move || Ok(st.webhooks.endpoint(&id)?)).await?;
    Ok(Json(endpoint_response(&e)))
}

/// Change a webhook endpoint: URL, event types, description, enabled. Enabling it resets its
/// run of failures; deliveries that waited while it was disabled are sent.
#[utoipa::path(
    patch,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path)),
    request_body = WebhookEndpointPatch,
    responses(
        (status = 200, body = WebhookEndpointResponse),
        (status = 400, description = "`invalid_url`, `unknown_event_type`, `invalid_event_types`, `invalid_body`", body = ErrorResponse),
        (status = 404, description = "`endpoint_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn patch(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WebhookEndpointResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let req: WebhookEndpointPatch = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let patch = EndpointPatch {
        event_types: req.event_types.as_deref().map(event_types).transpose()?,
        url: req.url,
        description: req.description,
        enabled: req.enabled,
    };
    let st = state.clone();
    let e =
        blocking(move || Ok(st.webhooks.update_endpoint(&id, &patch, st.engine.now())?)).await?;
    Ok(Json(endpoint_response(&e)))
}

/// Delete a webhook endpoint. Its pending deliveries become `skipped`; the log stays.
#[utoipa::path(
    delete,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`endpoint_not_found`", body = ErrorResponse),
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
    blocking(move || Ok(st.webhooks.delete_endpoint(&id, st.engine.now())?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give an endpoint a new secret (in this answer only). For 24 hours the old secret signs
/// too, as a second `v1` value of `Tollgate-Signature`, so a receiver can switch without
/// refusing a message.
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints/{id}/rotate_secret",
    tag = "webhooks",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = WebhookEndpointWithSecret),
        (status = 404, description = "`endpoint_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn rotate_secret(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<WebhookEndpointWithSecret>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let rotated = blocking(move || Ok(st.webhooks.rotate_secret(&id, st.engine.now())?)).await?;
    Ok(Json(WebhookEndpointWithSecret {
        endpoint: endpoint_response(&rotated.endpoint),
        secret: rotated.secret,
    }))
}

/// Send a `webhook.test` message to this endpoint (through the outbox, like any message).
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints/{id}/test",
    tag = "webhooks",
    params(("id" = String, Path)),
    responses(
        (status = 202, body = WebhookMessageResponse),
        (status = 404, description = "`endpoint_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn test(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<WebhookMessageResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let m = blocking(move || Ok(st.webhooks.send_test(&id, st.engine.now())?)).await?;
    Ok((StatusCode::ACCEPTED, Json(message_response(&m))))
}

/// List webhook messages (the outbox), oldest first.
#[utoipa::path(
    get,
    path = "/v1/webhook_messages",
    tag = "webhooks",
    params(
        ("type" = Option<String>, Query, description = "Only this event type"),
        ("after" = Option<String>, Query, description = "Messages after this id"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = WebhookMessageList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`, `unknown_event_type`", body = ErrorResponse),
        (status = 404, description = "`message_not_found` (the `after` message)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn messages(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<WebhookMessageList>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let params = query_params(pairs, &["type", "after", "limit"])?;
    let filter = MessageFilter {
        event_type: params
            .get("type")
            .map(|t| EventType::parse(t))
            .transpose()?,
        after: params.get("after").cloned(),
        limit: limit_param(&params, 100, WEBHOOK_LIST_LIMIT_MAX)?,
    };
    let st = state.clone();
    let list = blocking(move || Ok(st.webhooks.messages(&filter)?)).await?;
    Ok(Json(WebhookMessageList {
        data: list.iter().map(message_response).collect(),
    }))
}

/// One webhook message with its deliveries and every attempt (the delivery log).
#[utoipa::path(
    get,
    path = "/v1/webhook_messages/{id}",
    tag = "webhooks",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = WebhookMessageDetail),
        (status = 404, description = "`message_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn message(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<WebhookMessageDetail>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let (m, deliveries) = blocking(move || Ok(st.webhooks.message(&id)?)).await?;
    Ok(Json(WebhookMessageDetail {
        message: message_response(&m),
        deliveries: deliveries.iter().map(delivery_response).collect(),
    }))
}

/// Deliver a message again (even if it was delivered): to one endpoint, or to every enabled
/// endpoint subscribed to its type. The body is optional.
#[utoipa::path(
    post,
    path = "/v1/webhook_messages/{id}/replay",
    tag = "webhooks",
    params(("id" = String, Path)),
    request_body(content = WebhookReplayBody, description = "Optional: absent, every subscribed endpoint"),
    responses(
        (status = 202, body = WebhookReplayResponse),
        (status = 404, description = "`message_not_found`, `endpoint_not_found`", body = ErrorResponse),
        (status = 409, description = "`endpoint_disabled`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn replay(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<WebhookReplayResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let bytes = read_body(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let req: WebhookReplayBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        WebhookReplayBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            use serde_json::error::Category;
            let code = match e.classify() {
                Category::Data => "invalid_body",
                _ => "malformed_json",
            };
            ApiError::bad_request(code, e.to_string())
        })?
    };
    let st = state.clone();
    let created = blocking(move || {
        Ok(st
            .webhooks
            .replay(&id, req.endpoint_id.as_deref(), st.engine.now())?)
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookReplayResponse {
            deliveries: created.iter().map(delivery_response).collect(),
        }),
    ))
}
