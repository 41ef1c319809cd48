//! `/v1/meters`: define, read and delete meters.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tollgate_core::meter::{Meter, MeterSlug};
use tollgate_store::Scope;

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::{meter_response, meter_spec};
use crate::types::{ErrorResponse, MeterBody, MeterList, MeterResponse};

fn slug(text: &str) -> Result<MeterSlug, ApiError> {
    MeterSlug::parse(text).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
}

fn not_found(slug: &MeterSlug) -> ApiError {
    ApiError::not_found("meter_not_found", format!("meter `{slug}` not found"))
}

/// Create or replace a meter.
///
/// A new or changed definition is backfilled from every stored raw event before the call
/// returns, so the meter always equals a recomputation from raw events.
#[utoipa::path(
    put,
    path = "/v1/meters/{slug}",
    tag = "meters",
    params(("slug" = String, Path, description = "`[a-z][a-z0-9_-]*`, at most 64 bytes")),
    request_body = MeterBody,
    responses(
        (status = 201, description = "Created", body = MeterResponse),
        (status = 200, description = "Replaced", body = MeterResponse),
        (status = 400, description = "`invalid_meter_slug`, `malformed_json`, `invalid_body`", body = ErrorResponse),
        (status = 422, description = "`invalid_meter`, `invalid_json_path`, `value_path_required`, `group_by_keys_max`, `meter_filters_max`", body = ErrorResponse),
        (status = 409, description = "`meters_max`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn put(
    State(state): State<crate::State>,
    Path(slug_text): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let slug = slug(&slug_text)?;
    let body: MeterBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let meter = Meter::new(slug.clone(), meter_spec(body)?)?;
    let st = state.clone();
    let created = blocking(move || Ok(st.engine.put_meter_blocking(meter)?)).await?;
    let info = state.engine.meter(&slug).ok_or_else(|| not_found(&slug))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(meter_response(&info))))
}

/// Read a meter.
#[utoipa::path(
    get,
    path = "/v1/meters/{slug}",
    tag = "meters",
    params(("slug" = String, Path)),
    responses(
        (status = 200, body = MeterResponse),
        (status = 404, description = "`meter_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(slug_text): Path<String>,
    headers: HeaderMap,
) -> Result<Json<MeterResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let slug = slug(&slug_text)?;
    let info = state.engine.meter(&slug).ok_or_else(|| not_found(&slug))?;
    Ok(Json(meter_response(&info)))
}

/// List meters.
#[utoipa::path(
    get,
    path = "/v1/meters",
    tag = "meters",
    responses((status = 200, body = MeterList)),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<MeterList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    Ok(Json(MeterList {
        data: state.engine.meters().iter().map(meter_response).collect(),
    }))
}

/// Delete a meter. Raw events stay; defining the meter again recomputes it from them.
#[utoipa::path(
    delete,
    path = "/v1/meters/{slug}",
    tag = "meters",
    params(("slug" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`meter_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn delete(
    State(state): State<crate::State>,
    Path(slug_text): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let slug = slug(&slug_text)?;
    let st = state.clone();
    let s = slug.clone();
    let deleted = blocking(move || Ok(st.engine.delete_meter_blocking(s)?)).await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&slug))
    }
}
