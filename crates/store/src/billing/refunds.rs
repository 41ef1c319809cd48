//! Refunds in the database: creating one against what was collected on an invoice, the
//! provider call that carries it out exactly once, its outcome, and canceling one that was not
//! sent yet.
//!
//! Owns: the `refunds` rows; what was collected on an invoice (what the provider says was paid
//! on it, or its amount due when it was marked paid by hand) and what is left to refund; the
//! transaction that inserts a refund together with its provider call (`create_refund` in the
//! provider outbox), or, for an issued credit note that asked for its money back, together
//! with the note; the guarded step intent ([`BillingStore::begin_refund_step`]: the intent is
//! written only while the refund is still pending, in the transaction that checks it, so a
//! cancel and a send never both happen); and the outcome, recorded together with the step's.
//!
//! Does not own: the amount rules and the status machine (`tollgate_core::refund`), HTTP to the
//! provider (the worker in the binary), the provider's running refunded total (webhooks,
//! `provider_objects`).
//!
//! Invariants: pending and succeeded refunds of an invoice never together exceed what was
//! collected on it (checked in the write transaction that inserts a refund, so two concurrent
//! requests cannot both pass); a refund in a final status never changes (a trigger refuses
//! it); a provider refund whose intent is recorded can no longer be canceled (it may have
//! reached the provider; its outcome is found by looking it up).

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use tollgate_core::billing::CustomerKey;
use tollgate_core::invoice::InvoiceStatus;
use tollgate_core::provider::{CallKind, Provider};
use tollgate_core::refund::{
    self, RefundChange, RefundMethod, RefundOrigin, RefundReason, RefundStatus,
};
use tollgate_core::time::UnixMs;

use super::{BillingStore, BillingStoreError, Invoice, LIST_LIMIT_MAX, invoice_in, not_found};
use crate::keys::random_hex;
use crate::providers;

/// The name of the one step of a `create_refund` call.
pub const REFUND_STEP: &str = "refund";

/// A stored refund.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// `re_tg_…` (never mistaken for a Stripe `re_…` id).
    pub id: String,
    /// The invoice whose payment is given back.
    pub invoice: String,
    /// Whose.
    pub customer: CustomerKey,
    /// Status.
    pub status: RefundStatus,
    /// Where it runs.
    pub method: RefundMethod,
    /// Amount (minor units of `currency`).
    pub amount_minor: i64,
    /// The invoice's currency code.
    pub currency: String,
    /// Who asked.
    pub origin: RefundOrigin,
    /// The credit note (origin `credit_note`) or the reconciliation difference (origin
    /// `rule`) that led to it.
    pub origin_ref: Option<String>,
    /// Why.
    pub reason: RefundReason,
    /// Free text.
    pub memo: String,
    /// The provider that carries it out (method `provider`).
    pub provider: Option<Provider>,
    /// The provider's refund id, once known.
    pub provider_refund_id: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// Who created it (an API key id, `credit_note`, `reconciliation`).
    pub created_by: String,
    /// Created.
    pub created_ms: UnixMs,
    /// Last changed.
    pub updated_ms: UnixMs,
    /// Reached a final status.
    pub done_ms: Option<UnixMs>,
}

/// What to create.
#[derive(Clone, Debug)]
pub struct NewRefund {
    /// The invoice.
    pub invoice: String,
    /// How much (`None`: all that is left to refund).
    pub amount_minor: Option<i64>,
    /// Why.
    pub reason: RefundReason,
    /// Free text.
    pub memo: String,
    /// Who asks.
    pub origin: RefundOrigin,
    /// The object that led to it.
    pub origin_ref: Option<String>,
    /// Who (API key id, `credit_note`, `reconciliation`).
    pub actor: String,
}

/// Filters of a refund listing.
#[derive(Clone, Debug, Default)]
pub struct RefundFilter {
    /// Only this customer's.
    pub customer: Option<CustomerKey>,
    /// Only this invoice's.
    pub invoice: Option<String>,
    /// Only with this status.
    pub status: Option<RefundStatus>,
    /// Ids after this one (paging).
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// What was collected on an invoice and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collected {
    /// Collected (minor units).
    pub collected_minor: i64,
    /// What the provider reports refunded on it (its running total), zero out of band.
    pub provider_refunded_minor: i64,
    /// Where a refund of it runs.
    pub method: RefundMethod,
    /// The provider that collected it.
    pub provider: Option<Provider>,
}

/// What a send of a refund's step needs, or why it must not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundBegin {
    /// Send it: the intent is recorded.
    Send {
        /// The provider's charge that paid the invoice.
        charge: String,
        /// Amount (minor units).
        amount_minor: i64,
        /// The Tollgate invoice.
        invoice: String,
    },
    /// The refund is no longer pending (canceled before it was sent): send nothing.
    Settled(RefundStatus),
}

const REFUND_COLUMNS: &str = "id, invoice, customer, status, method, amount_minor, currency, origin, origin_ref, reason, memo, provider, provider_refund_id, failure, created_by, created_ms, updated_ms, done_ms";

/// A row as stored, before its texts are parsed.
struct RefundRow {
    /// id, invoice, customer, status, method, currency, origin, reason, memo, created_by.
    texts: [String; 10],
    provider: Option<String>,
    amount_minor: i64,
    origin_ref: Option<String>,
    provider_refund_id: Option<String>,
    failure: Option<String>,
    times: (i64, i64, Option<i64>),
}

fn refund_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RefundRow> {
    Ok(RefundRow {
        texts: [
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(6)?,
            r.get(7)?,
            r.get(9)?,
            r.get(10)?,
            r.get(14)?,
        ],
        amount_minor: r.get(5)?,
        origin_ref: r.get(8)?,
        provider: r.get(11)?,
        provider_refund_id: r.get(12)?,
        failure: r.get(13)?,
        times: (r.get(15)?, r.get(16)?, r.get(17)?),
    })
}

fn corrupt(what: &str, text: &str) -> BillingStoreError {
    crate::StoreError::Corrupt(format!("refund {what} `{text}`")).into()
}

fn named<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T, BillingStoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| corrupt(what, text))
}

fn decode(row: RefundRow) -> Result<Refund, BillingStoreError> {
    let [
        id,
        invoice,
        customer,
        status,
        method,
        currency,
        origin,
        reason,
        memo,
        created_by,
    ] = row.texts;
    Ok(Refund {
        customer: CustomerKey::parse(&customer).map_err(|_| corrupt("customer", &customer))?,
        status: RefundStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        method: named("method", &method)?,
        origin: named("origin", &origin)?,
        reason: named("reason", &reason)?,
        provider: row
            .provider
            .map(|p| Provider::parse(&p).ok_or_else(|| corrupt("provider", &p)))
            .transpose()?,
        id,
        invoice,
        amount_minor: row.amount_minor,
        currency,
        origin_ref: row.origin_ref,
        memo,
        provider_refund_id: row.provider_refund_id,
        failure: row.failure,
        created_by,
        created_ms: UnixMs(row.times.0),
        updated_ms: UnixMs(row.times.1),
        done_ms: row.times.2.map(UnixMs),
    })
}

fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => unreachable!("unit enum variants serialize to strings"),
    }
}

fn refund_in(c: &Connection, id: &str) -> Result<Refund, BillingStoreError> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE id = ?1"
        ))?
        .query_row(params![id], refund_row)
        .optional()?;
    decode(row.ok_or_else(|| not_found("refund", id))?)
}

fn refunds_of_invoice(c: &Connection, invoice: &str) -> Result<Vec<Refund>, BillingStoreError> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE invoice = ?1 ORDER BY created_ms, id"
        ))?
        .query_map(params![invoice], refund_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(decode).collect()
}

/// What was collected on `invoice`: what a provider reports paid on it, or, for an invoice
/// marked paid by hand, what it still owed then.
pub(crate) fn collected_in(
    c: &Connection,
    invoice: &Invoice,
) -> Result<Collected, BillingStoreError> {
    if let Some(object) = providers::object_in(c, Provider::Stripe, "invoice", &invoice.id)?
        && object.payment.amount_paid_minor > 0
    {
        return Ok(Collected {
            collected_minor: object.payment.amount_paid_minor,
            provider_refunded_minor: object.payment.amount_refunded_minor,
            method: RefundMethod::Provider,
            provider: Some(Provider::Stripe),
        });
    }
    let collected_minor = if invoice.status == InvoiceStatus::Paid {
        super::credit_notes::amount_due_left_in(c, invoice)?
    } else {
        0
    };
    Ok(Collected {
        collected_minor,
        provider_refunded_minor: 0,
        method: RefundMethod::OutOfBand,
        provider: None,
    })
}

/// What is left to refund on `invoice` now.
pub(crate) fn refundable_in(c: &Connection, invoice: &Invoice) -> Result<i64, BillingStoreError> {
    let collected = collected_in(c, invoice)?;
    let refunds = refunds_of_invoice(c, &invoice.id)?;
    Ok(refund::refundable(
        collected.collected_minor,
        refund::reserved(refunds.iter().map(|r| (r.amount_minor, r.status))),
        collected.provider_refunded_minor,
    ))
}

/// Creates a refund inside the caller's transaction (also used by credit notes and
/// reconciliation rules): checks the amount against what is left, inserts the refund and, for
/// a provider refund, its call in the provider outbox.
pub(crate) fn create_refund_in(
    tx: &Transaction<'_>,
    new: &NewRefund,
    now: UnixMs,
) -> Result<Refund, BillingStoreError> {
    let memo = refund::memo(&new.memo)?;
    let invoice = invoice_in(tx, &new.invoice)?;
    let collected = collected_in(tx, &invoice)?;
    let refunds = refunds_of_invoice(tx, &invoice.id)?;
    let left = refund::refundable(
        collected.collected_minor,
        refund::reserved(refunds.iter().map(|r| (r.amount_minor, r.status))),
        collected.provider_refunded_minor,
    );
    let amount_minor = refund::check_amount(new.amount_minor, left)?;
    let refund = Refund {
        id: format!("re_tg_{}", random_hex(8)),
        invoice: invoice.id.clone(),
        customer: invoice.content.draft.customer.clone(),
        status: RefundStatus::Pending,
        method: collected.method,
        amount_minor,
        currency: invoice.content.draft.currency.to_string(),
        origin: new.origin,
        origin_ref: new.origin_ref.clone(),
        reason: new.reason,
        memo,
        provider: collected.provider,
        provider_refund_id: None,
        failure: None,
        created_by: new.actor.clone(),
        created_ms: now,
        updated_ms: now,
        done_ms: None,
    };
    tx.prepare_cached(
        "INSERT INTO refunds (id, invoice, customer, status, method, amount_minor, currency,
            origin, origin_ref, reason, memo, provider, provider_refund_id, failure, created_by,
            created_ms, updated_ms, done_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL, NULL, ?13, ?14, ?14, NULL)",
    )?
    .execute(params![
        refund.id,
        refund.invoice,
        refund.customer.as_str(),
        refund.status.as_str(),
        refund.method.as_str(),
        refund.amount_minor,
        refund.currency,
        refund.origin.as_str(),
        refund.origin_ref,
        name_of(&refund.reason),
        refund.memo,
        refund.provider.map(Provider::as_str),
        refund.created_by,
        now.0
    ])?;
    let reserved = refund::reserved(
        refunds_of_invoice(tx, &invoice.id)?
            .iter()
            .map(|r| (r.amount_minor, r.status)),
    );
    assert!(
        reserved <= collected.collected_minor,
        "refunds of {} reserve {reserved}, more than the {} collected",
        invoice.id,
        collected.collected_minor
    );
    if let Some(provider) = refund.provider {
        providers::enqueue(tx, provider, CallKind::CreateRefund, &refund.id, 1, now)?;
    }
    Ok(refund)
}

/// Moves a pending refund to `change`'s status, recording the provider's id and the failure.
fn settle_in(
    tx: &Connection,
    refund: &Refund,
    change: RefundChange,
    provider_refund_id: Option<&str>,
    failure: Option<&str>,
    now: UnixMs,
) -> Result<Refund, BillingStoreError> {
    let status = refund.status.apply(change)?;
    tx.prepare_cached(
        "UPDATE refunds SET status = ?2, provider_refund_id = coalesce(?3, provider_refund_id),
            failure = ?4, updated_ms = ?5, done_ms = ?5 WHERE id = ?1",
    )?
    .execute(params![
        refund.id,
        status.as_str(),
        provider_refund_id,
        failure,
        now.0
    ])?;
    refund_in(tx, &refund.id)
}

/// The `create_refund` call of a refund, if it has one.
fn call_of(c: &Connection, refund_id: &str) -> Result<Option<String>, BillingStoreError> {
    Ok(c.prepare_cached(
        "SELECT id FROM provider_calls WHERE kind = 'create_refund' AND object_id = ?1",
    )?
    .query_row(params![refund_id], |r| r.get(0))
    .optional()?)
}

impl BillingStore {
    /// Creates a refund of what was collected on an invoice.
    pub fn create_refund(&self, new: &NewRefund, now: UnixMs) -> Result<Refund, BillingStoreError> {
        self.write(|tx| create_refund_in(tx, new, now))
    }

    /// One refund.
    pub fn refund(&self, id: &str) -> Result<Refund, BillingStoreError> {
        self.read(|c| refund_in(c, id))
    }

    /// Refunds matching `filter`, by id.
    pub fn refunds(&self, filter: &RefundFilter) -> Result<Vec<Refund>, BillingStoreError> {
        self.read(|c| {
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {REFUND_COLUMNS} FROM refunds
                     WHERE (?1 IS NULL OR customer = ?1) AND (?2 IS NULL OR invoice = ?2)
                       AND (?3 IS NULL OR status = ?3) AND id > ?4
                     ORDER BY id LIMIT ?5"
                ))?
                .query_map(
                    params![
                        filter.customer.as_ref().map(CustomerKey::as_str),
                        filter.invoice,
                        filter.status.map(RefundStatus::as_str),
                        filter.after.as_deref().unwrap_or(""),
                        i64::try_from(filter.limit.min(LIST_LIMIT_MAX)).unwrap_or(0)
                    ],
                    refund_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(decode).collect()
        })
    }

    /// What was collected on an invoice and what is left to refund.
    pub fn refundable(&self, invoice: &str) -> Result<(Collected, i64), BillingStoreError> {
        self.read(|c| {
            let inv = invoice_in(c, invoice)?;
            Ok((collected_in(c, &inv)?, refundable_in(c, &inv)?))
        })
    }

    /// Cancels a pending refund that was not sent: an out-of-band one any time while pending,
    /// a provider one only before its request's intent was recorded (after that it may have
    /// reached the provider: 409 `refund_in_flight`).
    pub fn cancel_refund(&self, id: &str, now: UnixMs) -> Result<Refund, BillingStoreError> {
        self.write(|tx| {
            let refund = refund_in(tx, id)?;
            refund.status.apply(RefundChange::Cancel)?;
            let call = call_of(tx, id)?;
            if let Some(call) = &call {
                let sent: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM provider_call_steps WHERE call_id = ?1)",
                    params![call],
                    |r| r.get(0),
                )?;
                if sent {
                    return Err(BillingStoreError::Conflict {
                        code: "refund_in_flight",
                        message: format!(
                            "refund {id} was sent to the provider; it can no longer be canceled"
                        ),
                    });
                }
                tx.execute(
                    "UPDATE provider_calls SET status = 'done', done_ms = ?2, updated_ms = ?2,
                        last_error = 'refund canceled before it was sent' WHERE id = ?1",
                    params![call, now.0],
                )?;
            }
            settle_in(tx, &refund, RefundChange::Cancel, None, None, now)
        })
    }

    /// Records the outcome of an out-of-band refund (an operator paid it back, or could not).
    /// A provider refund's outcome comes from the provider: 409 `refund_executed_by_provider`.
    pub fn record_refund_outcome(
        &self,
        id: &str,
        change: RefundChange,
        failure: Option<&str>,
        now: UnixMs,
    ) -> Result<Refund, BillingStoreError> {
        self.write(|tx| {
            let refund = refund_in(tx, id)?;
            if refund.method == RefundMethod::Provider {
                return Err(BillingStoreError::Conflict {
                    code: "refund_executed_by_provider",
                    message: format!(
                        "refund {id} runs at the payment provider, which records its outcome"
                    ),
                });
            }
            settle_in(tx, &refund, change, None, failure, now)
        })
    }

    /// Before the worker sends a refund: records the step's intent with `idempotency_key` in
    /// the transaction that checks the refund is still pending (so a cancel and a send never
    /// both happen), and returns what to send.
    pub fn begin_refund_step(
        &self,
        call_id: &str,
        refund_id: &str,
        idempotency_key: &str,
        now: UnixMs,
    ) -> Result<RefundBegin, BillingStoreError> {
        self.write(|tx| {
            let refund = refund_in(tx, refund_id)?;
            if refund.status != RefundStatus::Pending {
                return Ok(RefundBegin::Settled(refund.status));
            }
            let provider = refund.provider.unwrap_or(Provider::Stripe);
            let charge = providers::object_in(tx, provider, "invoice", &refund.invoice)?
                .and_then(|o| o.payment.charge_id)
                .ok_or_else(|| BillingStoreError::Conflict {
                    code: "refund_without_charge",
                    message: format!(
                        "invoice {} has no {} charge to refund",
                        refund.invoice,
                        provider.as_str()
                    ),
                })?;
            providers::step_intent_in(tx, call_id, REFUND_STEP, idempotency_key, now)?;
            Ok(RefundBegin::Send {
                charge,
                amount_minor: refund.amount_minor,
                invoice: refund.invoice,
            })
        })
    }

    /// Records what the provider answered for a refund's request: the step's outcome (the
    /// provider's refund id) and the refund's status, in one transaction. Idempotent: a status
    /// the refund has already, or a provider status that keeps it pending, changes only the id.
    pub fn refund_step_done(
        &self,
        call_id: &str,
        refund_id: &str,
        provider_refund_id: &str,
        provider_status: &str,
        failure: Option<&str>,
        now: UnixMs,
    ) -> Result<Refund, BillingStoreError> {
        self.write(|tx| {
            providers::step_done_in(tx, call_id, REFUND_STEP, provider_refund_id, now)?;
            apply_provider_status(
                tx,
                refund_id,
                provider_refund_id,
                provider_status,
                failure,
                now,
            )
        })
    }

    /// Marks a provider refund failed without a provider answer (the provider refused the
    /// request for good, or the invoice has no charge), in the transaction that records it.
    pub fn refund_refused(
        &self,
        refund_id: &str,
        failure: &str,
        now: UnixMs,
    ) -> Result<Refund, BillingStoreError> {
        self.write(|tx| {
            let refund = refund_in(tx, refund_id)?;
            if refund.status.is_final() {
                return Ok(refund);
            }
            settle_in(tx, &refund, RefundChange::Fail, None, Some(failure), now)
        })
    }
}

/// Applies a provider's refund status to the refund (found by id), recording its provider id.
pub(crate) fn apply_provider_status(
    tx: &Connection,
    refund_id: &str,
    provider_refund_id: &str,
    provider_status: &str,
    failure: Option<&str>,
    now: UnixMs,
) -> Result<Refund, BillingStoreError> {
    let refund = refund_in(tx, refund_id)?;
    let target = RefundStatus::from_provider(provider_status);
    if refund.status.is_final() || matches!(target, None | Some(RefundStatus::Pending)) {
        if refund.provider_refund_id.is_none() && !refund.status.is_final() {
            tx.prepare_cached(
                "UPDATE refunds SET provider_refund_id = ?2, updated_ms = ?3 WHERE id = ?1",
            )?
            .execute(params![refund.id, provider_refund_id, now.0])?;
            return refund_in(tx, refund_id);
        }
        return Ok(refund);
    }
    let change = match target {
        Some(RefundStatus::Succeeded) => RefundChange::Succeed,
        Some(RefundStatus::Canceled) => RefundChange::Cancel,
        _ => RefundChange::Fail,
    };
    settle_in(tx, &refund, change, Some(provider_refund_id), failure, now)
}

/// The refund with this provider id, or named by the provider's metadata.
pub(crate) fn refund_by_provider_id(
    c: &Connection,
    provider: Provider,
    provider_refund_id: &str,
    tollgate_refund: Option<&str>,
) -> Result<Option<Refund>, BillingStoreError> {
    let id: Option<String> = c
        .prepare_cached("SELECT id FROM refunds WHERE provider = ?1 AND provider_refund_id = ?2")?
        .query_row(params![provider.as_str(), provider_refund_id], |r| r.get(0))
        .optional()?;
    match id.as_deref().or(tollgate_refund) {
        Some(id) => match refund_in(c, id) {
            Ok(r) => Ok(Some(r)),
            Err(BillingStoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        },
        None => Ok(None),
    }
}
