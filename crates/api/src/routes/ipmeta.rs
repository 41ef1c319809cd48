//! `/v1/ip/...`: address allocations, lookups with enrichment, attribution sources; and
//! `/v1/audit`, the log of changes to them. Reads need `read`, changes `admin`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_core::ipmeta::attribution::{AttributionSource, UNATTRIBUTED_SUBJECT};
use tollgate_core::ipmeta::{Cidr, canonical_ip, parse_ip};
use tollgate_store::Scope;

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, limit_param, query_params, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::instant;
use crate::convert::ipmeta::{allocation_body, audit_body, enrichment_body};
use crate::types::ErrorResponse;
use crate::types::ipmeta::{
    AllocationBody, AllocationList, AttributionSourceBody, AttributionSourceList, AuditList,
    CreateAllocationRequest, IpLookupResponse, ReloadResponse,
};

/// Most audit records in one answer.
const AUDIT_PAGE_MAX: usize = 1_000;

/// Create an allocation: a customer holds a range from `valid_from` (default now) until
/// `valid_to` (default open).
#[utoipa::path(
    post,
    path = "/v1/ip/allocations",
    tag = "ip",
    request_body = CreateAllocationRequest,
    responses(
        (status = 201, body = AllocationBody),
        (status = 400, description = "`invalid_cidr`, `invalid_time`, `invalid_validity`, `invalid_customer`", body = ErrorResponse),
        (status = 409, description = "`allocation_overlap`: the same range is allocated for an overlapping time", body = ErrorResponse),
        (status = 422, description = "`ip_allocations_max`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create_allocation(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<AllocationBody>), ApiError> {
    let key = authorize(&state, &headers, Scope::Admin)?;
    let req: CreateAllocationRequest = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let cidr = Cidr::parse(&req.cidr)?;
    let now = state.engine.now();
    let valid_from = match &req.valid_from {
        Some(t) => instant("valid_from", t)?,
        None => now,
    };
    let valid_to = req
        .valid_to
        .as_deref()
        .map(|t| instant("valid_to", t))
        .transpose()?;
    let st = state.clone();
    let created = blocking(move || {
        let a = st.ip.store.create_allocation(
            &req.customer,
            cidr,
            valid_from,
            valid_to,
            &key.id,
            now,
        )?;
        st.ip.refresh()?;
        Ok(a)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(allocation_body(&created))))
}

/// List allocations (their whole history), optionally of one customer.
#[utoipa::path(
    get,
    path = "/v1/ip/allocations",
    tag = "ip",
    params(("customer" = Option<String>, Query, description = "Only this customer")),
    responses((status = 200, body = AllocationList)),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list_allocations(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<AllocationList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let params = query_params(pairs, &["customer"])?;
    let st = state.clone();
    let customer = params.get("customer").cloned();
    let rows = blocking(move || Ok(st.ip.store.list_allocations(customer.as_deref())?)).await?;
    Ok(Json(AllocationList {
        data: rows.iter().map(allocation_body).collect(),
    }))
}

/// Close an allocation: it stops at `at` (default now). The row stays, so events before
/// `at` are still attributed to it.
#[utoipa::path(
    delete,
    path = "/v1/ip/allocations/{id}",
    tag = "ip",
    params(("id" = String, Path), ("at" = Option<String>, Query, description = "RFC 3339 end, default now")),
    responses(
        (status = 200, body = AllocationBody),
        (status = 400, description = "`invalid_validity`, `invalid_time`", body = ErrorResponse),
        (status = 404, description = "`allocation_not_found`", body = ErrorResponse),
        (status = 409, description = "`allocation_overlap`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn close_allocation(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<AllocationBody>, ApiError> {
    let key = authorize(&state, &headers, Scope::Admin)?;
    let params = query_params(pairs, &["at"])?;
    let now = state.engine.now();
    let at = match params.get("at") {
        Some(t) => instant("at", t)?,
        None => now,
    };
    let st = state.clone();
    let closed = blocking(move || {
        let a = st.ip.store.close_allocation(&id, at, &key.id, now)?;
        st.ip.refresh()?;
        Ok(a)
    })
    .await?;
    Ok(Json(allocation_body(&closed)))
}

/// Who held an address at an instant (default now), by longest-prefix match, and what the
/// enrichment databases say about it.
#[utoipa::path(
    get,
    path = "/v1/ip/{addr}",
    tag = "ip",
    params(("addr" = String, Path, description = "IPv4 or IPv6 address"), ("at" = Option<String>, Query, description = "RFC 3339, default now")),
    responses(
        (status = 200, body = IpLookupResponse),
        (status = 400, description = "`invalid_ip`, `invalid_time`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn lookup(
    State(state): State<crate::State>,
    Path(addr): Path<String>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<IpLookupResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let params = query_params(pairs, &["at"])?;
    let ip = canonical_ip(parse_ip(&addr)?);
    let at = match params.get("at") {
        Some(t) => instant("at", t)?,
        None => state.engine.now(),
    };
    let table = state.ip.table();
    let owner = table.lookup(ip, at).map(allocation_body);
    let subject = owner
        .as_ref()
        .map_or_else(|| UNATTRIBUTED_SUBJECT.to_owned(), |o| o.customer.clone());
    Ok(Json(IpLookupResponse {
        address: ip.to_string(),
        at: at.to_rfc3339(),
        owner,
        subject,
        enrichment: enrichment_body(state.ip.geo.lookup(ip)),
    }))
}

/// The attribution sources in force: built-in (`tollgate/accesslog/nginx`,
/// `tollgate/accesslog/squid` read `client_ip`) and configured.
#[utoipa::path(
    get,
    path = "/v1/ip/attribution_sources",
    tag = "ip",
    responses((status = 200, body = AttributionSourceList)),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list_sources(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<AttributionSourceList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    Ok(Json(AttributionSourceList {
        data: state
            .ip
            .sources()
            .entries()
            .into_iter()
            .map(|s| AttributionSourceBody {
                source: s.source,
                address_field: s.address_field,
            })
            .collect(),
    }))
}

/// Configure a source: its events without `subject` get the owner of `data.<address_field>`
/// at the event's time, or `unattributed`.
#[utoipa::path(
    post,
    path = "/v1/ip/attribution_sources",
    tag = "ip",
    request_body = AttributionSourceBody,
    responses(
        (status = 200, body = AttributionSourceList),
        (status = 400, description = "`invalid_attribution_source`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn put_source(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<AttributionSourceList>, ApiError> {
    let key = authorize(&state, &headers, Scope::Admin)?;
    let req: AttributionSourceBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let now = state.engine.now();
    let st = state.clone();
    blocking(move || {
        st.ip.store.put_source(
            &AttributionSource {
                source: req.source,
                address_field: req.address_field,
            },
            &key.id,
            now,
        )?;
        Ok(st.ip.refresh()?)
    })
    .await?;
    list_sources(State(state), headers).await
}

/// Remove a configured source (built-in ones come back as built).
#[utoipa::path(
    delete,
    path = "/v1/ip/attribution_sources",
    tag = "ip",
    params(("source" = String, Query)),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`attribution_source_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn delete_source(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<StatusCode, ApiError> {
    let key = authorize(&state, &headers, Scope::Admin)?;
    let params = query_params(pairs, &["source"])?;
    let source = params
        .get("source")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("missing_parameter", "give `source`"))?;
    let now = state.engine.now();
    let st = state.clone();
    let name = source.clone();
    let found = blocking(move || {
        let found = st.ip.store.delete_source(&name, &key.id, now)?;
        st.ip.refresh()?;
        Ok(found)
    })
    .await?;
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "attribution_source_not_found",
            format!("no configured source `{source}`"),
        ))
    }
}

/// Re-read the MaxMind-format enrichment databases (also done on SIGHUP).
#[utoipa::path(
    post,
    path = "/v1/ip/enrichment/reload",
    tag = "ip",
    responses(
        (status = 200, body = ReloadResponse),
        (status = 422, description = "`enrichment_unreadable`: the files in use stay", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn reload_enrichment(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Json<ReloadResponse>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let databases = blocking(move || {
        st.ip.geo.reload().map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "enrichment_unreadable", e)
        })
    })
    .await?;
    Ok(Json(ReloadResponse { databases }))
}

/// The audit log: who changed allocations, attribution sources and inspection rules, when,
/// and the state before and after.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "ip",
    params(
        ("kind" = Option<String>, Query, description = "`ip_allocation`, `attribution_source`, `inspect_rules`"),
        ("after" = Option<i64>, Query, description = "Only records after this `seq`"),
        ("limit" = Option<usize>, Query),
    ),
    responses((status = 200, body = AuditList)),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn audit(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<AuditList>, ApiError> {
    authorize(&state, &headers, Scope::Admin)?;
    let params = query_params(pairs, &["kind", "after", "limit"])?;
    let limit = limit_param(&params, 100, AUDIT_PAGE_MAX)?;
    let after = match params.get("after") {
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("invalid_after", "after is a seq number"))?,
        None => 0,
    };
    let kind = params.get("kind").cloned();
    let st = state.clone();
    let rows = blocking(move || Ok(st.ip.store.audit_log(kind.as_deref(), after, limit)?)).await?;
    Ok(Json(AuditList {
        data: rows.into_iter().map(audit_body).collect(),
    }))
}
