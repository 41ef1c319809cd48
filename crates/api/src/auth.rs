//! Authentication: `Authorization: Bearer <api key>`, checked against hashed keys, then scope.

use axum::http::{HeaderMap, StatusCode, header};
use tollgate_store::{ApiKey, Scope};

use crate::{ApiError, State};

/// The key behind a request, if it grants `scope`.
pub fn authorize(state: &State, headers: &HeaderMap, scope: Scope) -> Result<ApiKey, ApiError> {
    authorize_any(state, headers, &[scope])
}

/// The key behind a request, if it grants any of `scopes`.
pub fn authorize_any(
    state: &State,
    headers: &HeaderMap,
    scopes: &[Scope],
) -> Result<ApiKey, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "send an API key as `Authorization: Bearer <key>`",
        )
    })?;
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "the Authorization header must be `Bearer <key>`",
            )
        })?;
    let key = state.keys.verify(secret)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "unknown or revoked API key",
        )
    })?;
    if !scopes.iter().any(|s| key.allows(*s)) {
        let names: Vec<String> = scopes.iter().map(|s| format!("`{s}`")).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this key lacks the {} scope", names.join(" or ")),
        ));
    }
    Ok(key)
}
