//! `POST /v1/customers/{key}/portal_sessions`: a signed, expiring portal link for one customer;
//! `POST /v1/admin_sessions`: a signed, expiring link to the admin pages.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use tollgate_core::limits::PORTAL_SESSION_SECONDS_MAX;
use tollgate_core::time::UnixMs;
use tollgate_store::Scope;

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, read_body};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::billing::customer_key;
use crate::convert::time_text;
use crate::portal::token;
use crate::types::ErrorResponse;
use crate::types::portal::{AdminSessionResponse, PortalSessionBody, PortalSessionResponse};

/// Default life of a portal link (seconds).
pub const PORTAL_SESSION_SECONDS_DEFAULT: i64 = 3600;

/// Create a portal link: a URL that shows this customer's usage, charges and invoices (and
/// nothing of any other customer) until it expires.
#[utoipa::path(
    post,
    path = "/v1/customers/{key}/portal_sessions",
    tag = "portal",
    params(("key" = String, Path, description = "The customer key")),
    request_body(content = PortalSessionBody, description = "Optional; `{}` or no body for the defaults"),
    responses(
        (status = 201, body = PortalSessionResponse),
        (status = 400, description = "`malformed_json`, `invalid_body`, `invalid_customer_key`, `invalid_base_url`", body = ErrorResponse),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
        (status = 422, description = "`portal_session_seconds_max`: expires_in_seconds outside 1..=7776000", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PortalSessionResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let key = customer_key(&key)?;
    let (seconds, base_url) = session_request(&headers, body).await?;
    let st = state.clone();
    let customer = key.to_string();
    let (token, expires) = blocking(move || {
        // 404 for an unknown customer: a link to nobody is a mistake worth telling.
        st.billing.customer(&key)?;
        let secret = st.billing.portal_secret()?;
        // Whole seconds: the token carries seconds.
        let now_s = st.engine.now().0.div_euclid(1000);
        let expires = UnixMs((now_s + seconds) * 1000);
        let nonce = tollgate_store::billing::new_id_hex();
        Ok((token::sign(&secret, &key, expires, &nonce), expires))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(PortalSessionResponse {
            customer,
            url: format!("{base_url}/portal/{token}"),
            token,
            expires_at: time_text(expires),
        }),
    ))
}

/// A session request's life (seconds) and the base URL of its link: from the body, or the
/// defaults (an hour; the request's `Host`).
async fn session_request(headers: &HeaderMap, body: Body) -> Result<(i64, String), ApiError> {
    let bytes = read_body(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let body: PortalSessionBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        PortalSessionBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            let code = match e.classify() {
                serde_json::error::Category::Data => "invalid_body",
                _ => "malformed_json",
            };
            ApiError::bad_request(code, e.to_string())
        })?
    };
    let seconds = body
        .expires_in_seconds
        .unwrap_or(PORTAL_SESSION_SECONDS_DEFAULT);
    if !(1..=PORTAL_SESSION_SECONDS_MAX).contains(&seconds) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "portal_session_seconds_max",
            format!("expires_in_seconds is 1..={PORTAL_SESSION_SECONDS_MAX}"),
        ));
    }
    let base_url = match body.base_url {
        Some(b) => {
            let b = b.trim_end_matches('/').to_owned();
            if !(b.starts_with("https://") || b.starts_with("http://"))
                || b.len() > 2048
                || b.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ApiError::bad_request(
                    "invalid_base_url",
                    "base_url is an http(s) URL without spaces, at most 2048 bytes",
                ));
            }
            b
        }
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    Ok((seconds, base_url))
}

/// Create an admin link: a URL that opens the admin pages (reconciliation reports, with their
/// CSV) in a browser until it expires. Signed for the admin purpose: it never opens a
/// customer's portal, and a customer's link never opens it.
#[utoipa::path(
    post,
    path = "/v1/admin_sessions",
    tag = "portal",
    request_body(content = PortalSessionBody, description = "Optional; `{}` or no body for the defaults"),
    responses(
        (status = 201, body = AdminSessionResponse),
        (status = 400, description = "`malformed_json`, `invalid_body`, `invalid_base_url`", body = ErrorResponse),
        (status = 422, description = "`portal_session_seconds_max`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create_admin(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<AdminSessionResponse>), ApiError> {
    let key = authorize(&state, &headers, Scope::Admin)?;
    let (seconds, base_url) = session_request(&headers, body).await?;
    let st = state.clone();
    let (token, expires) = blocking(move || {
        let secret = st.billing.portal_secret()?;
        let now_s = st.engine.now().0.div_euclid(1000);
        let expires = UnixMs((now_s + seconds) * 1000);
        let nonce = tollgate_store::billing::new_id_hex();
        Ok((
            token::sign_admin(&secret, &key.id, expires, &nonce),
            expires,
        ))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(AdminSessionResponse {
            url: format!("{base_url}/admin/{token}/reconciliation"),
            token,
            expires_at: time_text(expires),
        }),
    ))
}
