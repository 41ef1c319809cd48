//! Credit notes: create one against a finalized or paid invoice, list and read them, approve or
//! reject the ones an automatic correction queued.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use tollgate_core::credit_note::{CreditChange, CreditStatus, Origin};
use tollgate_store::Scope;
use tollgate_store::billing::credit_notes::{CreditNoteFilter, NewCreditNote};

use super::{MANAGEMENT_BODY_BYTES_MAX, blocking, document_query, next_after, read_json};
use crate::ApiError;
use crate::auth::authorize;
use crate::convert::credit_notes::{credit_note_response, reason, request};
use crate::types::ErrorResponse;
use crate::types::credit_notes::{CreditNoteBody, CreditNoteList, CreditNoteResponse};

/// Credit a finalized or paid invoice: in full, by line (quantity or amount) or by an amount.
/// Issued at once and numbered (or `pending_approval` with `require_approval`); on an unpaid
/// invoice it lowers what is owed, the rest (all of it on a paid invoice) goes to the
/// customer's credit balance.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/credit_notes",
    tag = "credit_notes",
    params(("id" = String, Path)),
    request_body = CreditNoteBody,
    responses(
        (status = 201, body = CreditNoteResponse),
        (status = 400, description = "`invalid_body`, `invalid_reason`, `invalid_credit_request`, `invalid_decimal`", body = ErrorResponse),
        (status = 404, description = "`invoice_not_found`", body = ErrorResponse),
        (status = 409, description = "`invoice_not_creditable` (draft or void), `nothing_to_credit`", body = ErrorResponse),
        (status = 422, description = "`credit_exceeds_creditable`, `invalid_credit_request` (no such line, line named twice)", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn create(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CreditNoteResponse>), ApiError> {
    let key = authorize(&state, &headers, Scope::Admin)?;
    let body: CreditNoteBody = read_json(body, MANAGEMENT_BODY_BYTES_MAX).await?;
    let new = NewCreditNote {
        invoice: id,
        request: request(&body)?,
        reason: reason(&body.reason)?,
        memo: body.memo.unwrap_or_default(),
        origin: Origin::Manual,
        actor: key.id,
        require_approval: body.require_approval,
        refund: body.refund,
        quantities: Default::default(),
    };
    let st = state.clone();
    let note = blocking(move || {
        let now = st.engine.now();
        Ok(st.billing.create_credit_note(&new, st.credit_policy, now)?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(credit_note_response(&note))))
}

/// List credit notes (`status=pending_approval` for the ones waiting for an operator).
#[utoipa::path(
    get,
    path = "/v1/credit_notes",
    tag = "credit_notes",
    params(
        ("customer" = Option<String>, Query),
        ("invoice" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "pending_approval, issued, rejected"),
        ("after" = Option<String>, Query, description = "Ids after this one"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
    ),
    responses(
        (status = 200, body = CreditNoteList),
        (status = 400, description = "`unknown_parameter`, `invalid_limit`, `invalid_status`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<CreditNoteList>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let q = document_query(
        pairs,
        CreditStatus::parse,
        "pending_approval, issued or rejected",
    )?;
    let limit = q.limit;
    let filter = CreditNoteFilter {
        customer: q.customer,
        invoice: q.invoice,
        status: q.status,
        after: q.after,
        limit,
    };
    let st = state.clone();
    let notes = blocking(move || Ok(st.billing.credit_notes(&filter)?)).await?;
    let next_after = next_after(&notes, limit, |n| &n.id);
    Ok(Json(CreditNoteList {
        data: notes.iter().map(credit_note_response).collect(),
        next_after,
    }))
}

/// Read a credit note.
#[utoipa::path(
    get,
    path = "/v1/credit_notes/{id}",
    tag = "credit_notes",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = CreditNoteResponse),
        (status = 404, description = "`credit_note_not_found`", body = ErrorResponse),
    ),
    security(("api_key" = ["read"]))
)]
pub(crate) async fn get(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<CreditNoteResponse>, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let st = state.clone();
    let note = blocking(move || Ok(st.billing.credit_note(&id)?)).await?;
    Ok(Json(credit_note_response(&note)))
}

async fn decide(
    state: crate::State,
    headers: HeaderMap,
    id: String,
    change: CreditChange,
) -> Result<Json<CreditNoteResponse>, ApiError> {
    let key = authorize(&state, &headers, Scope::Admin)?;
    let st = state.clone();
    let note = blocking(move || {
        let now = st.engine.now();
        Ok(st.billing.decide_credit_note(&id, change, &key.id, now)?)
    })
    .await?;
    Ok(Json(credit_note_response(&note)))
}

/// Approve a pending credit note: it is numbered, checked again against the invoice's other
/// notes, and settled.
#[utoipa::path(
    post,
    path = "/v1/credit_notes/{id}/approve",
    tag = "credit_notes",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = CreditNoteResponse),
        (status = 404, description = "`credit_note_not_found`", body = ErrorResponse),
        (status = 409, description = "`credit_note_not_pending`, `invoice_not_creditable`", body = ErrorResponse),
        (status = 422, description = "`credit_exceeds_creditable`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn approve(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<CreditNoteResponse>, ApiError> {
    decide(state, headers, id, CreditChange::Approve).await
}

/// Reject a pending credit note: it keeps no number and reserves nothing.
#[utoipa::path(
    post,
    path = "/v1/credit_notes/{id}/reject",
    tag = "credit_notes",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = CreditNoteResponse),
        (status = 404, description = "`credit_note_not_found`", body = ErrorResponse),
        (status = 409, description = "`credit_note_not_pending`", body = ErrorResponse),
    ),
    security(("api_key" = ["admin"]))
)]
pub(crate) async fn reject(
    State(state): State<crate::State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<CreditNoteResponse>, ApiError> {
    decide(state, headers, id, CreditChange::Reject).await
}
