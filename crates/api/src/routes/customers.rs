//! `/v1/customers`: who is billed, and their prepaid credit.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_store::Scope;
use tollgate_store::billing::LIST_LIMIT_MAX;

use super::{
    MANAGEMENT_BODY_BYTES_MAX, blocking, limit_param, next_after, query_params, read_json,
};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::billing::{
    balance_response, customer_from_body, customer_key, customer_response, grant_from_body,
    grant_response, instant, ledger_response, patch_customer, upcoming_response,
};
use crate::types::ErrorResponse;
use crate::types::billing::{
    BalanceResponse, CustomerBody, CustomerList, CustomerPatch, CustomerResponse, GrantBody,
    GrantResponse, LedgerResponse, UpcomingInvoiceResponse,
};

/// Create a customer.
#[utoipa::path(
    post,
    path = "/v1/customers",
    tag = "customers",
    request_body = CustomerBody,
    responses(
        (status = 201, body = CustomerResponse),
        (status = 400, description = "`invalid_body`, `malformed_json`, `invalid_customer_key`, `invalid_date`, `invalid_decimal`", body = ErrorResponse),
        (status = 409, description = "`customer_exists`", body = ErrorResponse),
        (status = 422, description = "`unknown_currency`, `invalid_field`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CustomerResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let body: CustomerBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let customer = customer_from_body(body, state.engine.now())?;
    let st = state.clone();
    let c = customer.clone();
    blocking(move || Ok(st.billing.create_customer(&c)?)).await?;
    Ok((StatusCode::CREATED, Json(customer_response(&customer))))
}

/// Read a customer.
#[utoipa::path(
    get,
    path = "/v1/customers/{key}",
    tag = "customers",
    params(("key" = String, Path, description = "The customer key (event subject)")),
    responses(
        (status = 200, body = CustomerResponse),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<CustomerResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let key = customer_key(&key)?;
    let st = state.clone();
    let c = blocking(move || Ok(st.billing.customer(&key)?)).await?;
    Ok(Json(customer_response(&c)))
}

/// List customers in key order.
#[utoipa::path(
    get,
    path = "/v1/customers",
    tag = "customers",
    params(
        ("after" = Option<String>, Query, description = "Keys after this one"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = CustomerList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<CustomerList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let params = query_params(pairs, &["after", "limit"])?;
    let limit = limit_param(&params, 100, LIST_LIMIT_MAX)?;
    let after = params.get("after").cloned();
    let st = state.clone();
    let customers = blocking(move || Ok(st.billing.customers(after.as_deref(), limit)?)).await?;
    let next_after = next_after(&customers, limit, |c| c.key.as_str());
    Ok(Json(CustomerList {
        data: customers.iter().map(customer_response).collect(),
        next_after,
    }))
}

/// Change a customer.
#[utoipa::path(
    patch,
    path = "/v1/customers/{key}",
    tag = "customers",
    params(("key" = String, Path)),
    request_body = CustomerPatch,
    responses(
        (status = 200, body = CustomerResponse),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
        (status = 409, description = "`conflict`: time_zone or billing_anchor with a subscription", body = ErrorResponse),
        (status = 422, description = "`invalid_field`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn patch(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CustomerResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let key = customer_key(&key)?;
    let patch: CustomerPatch = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let st = state.clone();
    let c = blocking(move || {
        let current = st.billing.customer(&key)?;
        let has_subscription = !st.billing.subscriptions(Some(&key))?.is_empty();
        let next = patch_customer(current, patch, has_subscription)?;
        st.billing.update_customer(&next, st.engine.now())?;
        Ok(next)
    })
    .await?;
    Ok(Json(customer_response(&c)))
}

/// Grant prepaid credit.
#[utoipa::path(
    post,
    path = "/v1/customers/{key}/credit_grants",
    tag = "credits",
    params(("key" = String, Path)),
    request_body = GrantBody,
    responses(
        (status = 201, body = GrantResponse),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
        (status = 422, description = "`invalid_field` (amount, expiry, currency), `unknown_currency`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn grant(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<GrantResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let key = customer_key(&key)?;
    let body: GrantBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let id = format!("grant_{}", tollgate_store::billing::new_id_hex());
    let grant = grant_from_body(key, id, body, state.engine.now())?;
    let st = state.clone();
    let g = grant.clone();
    blocking(move || Ok(st.billing.grant_credit(&g)?)).await?;
    Ok((StatusCode::CREATED, Json(grant_response(&grant))))
}

/// A customer's credit balance, now or at `at`.
#[utoipa::path(
    get,
    path = "/v1/customers/{key}/credit_balance",
    tag = "credits",
    params(("key" = String, Path), ("at" = Option<String>, Query, description = "RFC 3339; default now")),
    responses(
        (status = 200, body = BalanceResponse),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn balance(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<BalanceResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let key = customer_key(&key)?;
    let params = query_params(pairs, &["at"])?;
    let at = match params.get("at") {
        Some(t) => instant("at", t)?,
        None => state.engine.now(),
    };
    let st = state.clone();
    let k = key.clone();
    let b = blocking(move || Ok(st.billing.balance(&k, at)?)).await?;
    Ok(Json(balance_response(&key, &b, at)))
}

/// A customer's grants and every ledger entry.
#[utoipa::path(
    get,
    path = "/v1/customers/{key}/credit_ledger",
    tag = "credits",
    params(("key" = String, Path)),
    responses(
        (status = 200, body = LedgerResponse),
        (status = 404, description = "`customer_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn ledger(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<LedgerResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let key = customer_key(&key)?;
    let st = state.clone();
    let (grants, entries) = blocking(move || Ok(st.billing.credits(&key)?)).await?;
    Ok(Json(ledger_response(&grants, &entries)))
}

/// The running charges of the current period: what the customer's invoice would say if the
/// period ended now (usage so far; nothing is stored).
#[utoipa::path(
    get,
    path = "/v1/customers/{key}/upcoming_invoice",
    tag = "invoices",
    params(("key" = String, Path)),
    responses(
        (status = 200, body = UpcomingInvoiceResponse),
        (status = 404, description = "`customer_not_found`, `no_running_subscription`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn upcoming(
    State(state): State<crate::State>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<UpcomingInvoiceResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let key = customer_key(&key)?;
    let st = state.clone();
    let (draft, now) = blocking(move || {
        let now = st.engine.now();
        let draft = tollgate_store::billing::run::upcoming(
            &st.engine,
            &st.billing,
            &key,
            now,
            st.engine.config().acceptance_window_ms,
        )?
        .ok_or_else(|| {
            ApiError::not_found(
                "no_running_subscription",
                format!("customer `{key}` has no subscription running now"),
            )
        })?;
        Ok((draft, now))
    })
    .await?;
    Ok(Json(upcoming_response(&draft, now)))
}
