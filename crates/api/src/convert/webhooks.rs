//! Conversions between webhook bodies and store/domain types, and webhook errors → HTTP.

use axum::http::StatusCode;
use tollgate_core::webhook::{EventType, Message, WebhookError};
use tollgate_store::webhooks::{Attempt, Delivery, Endpoint, WebhookStoreError};

use super::time_text;
use crate::ApiError;
use crate::types::webhooks::*;

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        let status = match e {
            WebhookError::UrlTooLong
            | WebhookError::TooManyEventTypes
            | WebhookError::PayloadTooLarge => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<WebhookStoreError> for ApiError {
    fn from(e: WebhookStoreError) -> Self {
        match e {
            WebhookStoreError::EndpointNotFound(_) | WebhookStoreError::MessageNotFound(_) => {
                ApiError::not_found(e.code(), e.to_string())
            }
            WebhookStoreError::TooManyEndpoints | WebhookStoreError::EndpointDisabled(_) => {
                ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string())
            }
            WebhookStoreError::DescriptionTooLong => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
            }
            WebhookStoreError::Domain(e) => e.into(),
            WebhookStoreError::Store(e) => e.into(),
        }
    }
}

/// The event types of a request body, checked by the core.
pub fn event_types(names: &[String]) -> Result<Vec<EventType>, ApiError> {
    Ok(tollgate_core::webhook::parse_event_types(names)?)
}

/// An endpoint as answered.
pub fn endpoint_response(e: &Endpoint) -> WebhookEndpointResponse {
    WebhookEndpointResponse {
        id: e.id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        event_types: e
            .event_types
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        consecutive_failures: e.consecutive_failures,
        previous_secret_expires_at: e.previous_secret_until.map(time_text),
        created_at: time_text(e.created_ms),
        updated_at: time_text(e.updated_ms),
    }
}

/// A message as answered: its stored body, parsed back (the fields are the envelope's).
pub fn message_response(m: &Message) -> WebhookMessageResponse {
    let data = serde_json::from_str::<serde_json::Value>(m.body())
        .ok()
        .and_then(|mut v| v.get_mut("data").map(serde_json::Value::take))
        .unwrap_or(serde_json::Value::Null);
    WebhookMessageResponse {
        id: m.id().to_string(),
        event_type: m.event_type().as_str().to_owned(),
        created_at: time_text(m.created()),
        data,
    }
}

fn attempt_response(a: &Attempt) -> WebhookAttemptResponse {
    WebhookAttemptResponse {
        at: time_text(a.at),
        duration_ms: a.duration_ms,
        http_status: a.http_status,
        error: a.error.clone(),
    }
}

/// A delivery as answered.
pub fn delivery_response(d: &Delivery) -> WebhookDeliveryResponse {
    WebhookDeliveryResponse {
        id: d.id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: d.next_attempt.map(time_text),
        last_http_status: d.last_http_status,
        last_error: d.last_error.clone(),
        created_at: time_text(d.created_ms),
        delivered_at: d.delivered_ms.map(time_text),
        attempts_log: d.attempts_log.iter().map(attempt_response).collect(),
    }
}
