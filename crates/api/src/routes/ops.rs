//! Health, readiness, metrics, the OpenAPI document, and the 404 answer.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::ApiError;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "ok")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the writer runs and accepts batches.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses((status = 200, description = "ready"), (status = 503, description = "`not_ready`"))
)]
pub(crate) async fn readyz(State(state): State<crate::State>) -> Result<&'static str, ApiError> {
    if state.engine.is_ready() {
        Ok("ready\n")
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the writer is not running",
        ))
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "OpenMetrics text")))]
pub(crate) async fn metrics(State(state): State<crate::State>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.engine.metrics().render(),
    )
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1")))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route")
}
