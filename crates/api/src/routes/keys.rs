//! `/v1/api_keys`: create, list and revoke API keys (admin).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_store::Scope;
use tollgate_store::keys::KEY_NAME_BYTES_MAX;

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::key_response;
use crate::types::{CreateKeyRequest, CreatedKeyResponse, ErrorResponse, KeyList};

/// Create an API key. The secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/api_keys",
    tag = "api_keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, body = CreatedKeyResponse),
        (status = 400, description = "`invalid_scope`, `invalid_body`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CreatedKeyResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let req: CreateKeyRequest = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let mut scopes = Vec::with_capacity(req.scopes.len());
    for s in &req.scopes {
        scopes.push(Scope::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_scope",
                format!("unknown scope `{s}` (ingest, read, admin)"),
            )
        })?);
    }
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_scope",
            "give at least one scope",
        ));
    }
    let name = req.name.unwrap_or_default();
    if name.len() > KEY_NAME_BYTES_MAX {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("name is longer than {KEY_NAME_BYTES_MAX} bytes"),
        ));
    }
    let st = state.clone();
    let created =
        blocking(move || Ok(st.keys.create(&name, &scopes, None, st.engine.now())?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyResponse {
            key: key_response(&created.key),
            secret: created.secret,
        }),
    ))
}

/// List API keys (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/api_keys",
    tag = "api_keys",
    responses((status = 200, body = KeyList)),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<KeyList>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let keys = blocking(move || Ok(st.keys.list()?)).await?;
    Ok(Json(KeyList {
        data: keys.iter().map(key_response).collect(),
    }))
}

/// Revoke an API key. It stops working at once.
#[utoipa::path(
    delete,
    path = "/v1/api_keys/{id}",
    tag = "api_keys",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "`api_key_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn revoke(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let key_id = id.clone();
    let found = blocking(move || Ok(st.keys.revoke(&key_id, st.engine.now())?)).await?;
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "api_key_not_found",
            format!("no API key `{id}`"),
        ))
    }
}
