//! Provider webhook events applied to invoices: one transaction records the event id, moves
//! the provider object's payment record, and (for `invoice.paid`) marks the invoice paid with
//! the same transition as `POST /v1/invoices/{id}/pay`; a refund's status update settles the
//! Tollgate refund it names. A replayed event id changes nothing.

use rusqlite::Transaction;
use tollgate_core::invoice::{InvoiceChange, InvoiceStatus};
use tollgate_core::provider::{Provider, ProviderEvent, StripeEvent};
use tollgate_core::time::UnixMs;

use super::{BillingStore, BillingStoreError, change_invoice_in, invoice_in, refunds};
use crate::providers::{self, ProviderObject};

/// What applying an event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventApplied {
    /// The event id was processed before; nothing changed.
    pub duplicate: bool,
    /// What happened (`invoice_paid`, `payment_failed`, `refunded`, `disputed`, `ignored`,
    /// `unknown_object`, …; a duplicate repeats the first outcome).
    pub outcome: String,
    /// The Tollgate invoice it concerned, if any.
    pub invoice: Option<String>,
}

impl BillingStore {
    /// Applies a verified provider event. Fails with `provider_object_pending` (and records
    /// nothing, so the provider sends it again) when the event names a Tollgate invoice whose
    /// push has not recorded its outcome yet.
    pub fn apply_provider_event(
        &self,
        provider: Provider,
        event: &StripeEvent,
        now: UnixMs,
    ) -> Result<EventApplied, BillingStoreError> {
        self.write(|tx| {
            if let Some(outcome) = providers::event_outcome(tx, provider, &event.id)? {
                return Ok(EventApplied {
                    duplicate: true,
                    outcome,
                    invoice: None,
                });
            }
            let (outcome, invoice) = apply(tx, provider, event, now)?;
            let first = providers::record_event(
                tx,
                provider,
                &event.id,
                &event.event_type,
                &outcome,
                invoice.as_deref(),
                now,
            )?;
            assert!(
                first,
                "event {} recorded twice in one transaction",
                event.id
            );
            Ok(EventApplied {
                duplicate: false,
                outcome,
                invoice,
            })
        })
    }
}

fn find(
    tx: &Transaction<'_>,
    provider: Provider,
    event: &StripeEvent,
) -> Result<Option<ProviderObject>, BillingStoreError> {
    let (invoice, charge) = match &event.event {
        ProviderEvent::InvoicePaid { invoice, .. }
        | ProviderEvent::InvoicePaymentFailed { invoice, .. } => (Some(invoice.as_str()), None),
        ProviderEvent::ChargeRefunded {
            charge, invoice, ..
        } => (invoice.as_deref(), Some(charge.as_str())),
        ProviderEvent::DisputeCreated { charge, .. } => (None, Some(charge.as_str())),
        ProviderEvent::RefundUpdated { .. } | ProviderEvent::Ignored => return Ok(None),
    };
    if let Some(found) = providers::invoice_object_by(tx, provider, invoice, charge)? {
        return Ok(Some(found));
    }
    match &event.tollgate_invoice {
        Some(key) => Ok(providers::object_in(tx, provider, "invoice", key)?),
        None => Ok(None),
    }
}

fn apply(
    tx: &Transaction<'_>,
    provider: Provider,
    event: &StripeEvent,
    now: UnixMs,
) -> Result<(String, Option<String>), BillingStoreError> {
    if event.event == ProviderEvent::Ignored {
        return Ok(("ignored".into(), None));
    }
    if let ProviderEvent::RefundUpdated {
        refund,
        status,
        tollgate_refund,
    } = &event.event
    {
        let Some(found) =
            refunds::refund_by_provider_id(tx, provider, refund, tollgate_refund.as_deref())?
        else {
            return Ok(("unknown_object".into(), None));
        };
        let failure = (status == "failed").then_some("the provider reported the refund failed");
        let after = refunds::apply_provider_status(tx, &found.id, refund, status, failure, now)?;
        return Ok((
            format!("refund_{}", after.status.as_str()),
            Some(after.invoice),
        ));
    }
    let Some(object) = find(tx, provider, event)? else {
        if let Some(key) = &event.tollgate_invoice {
            return Err(BillingStoreError::Invalid {
                code: "provider_object_pending",
                message: format!(
                    "invoice {key} is being pushed to {}; its outcome is not recorded yet, send the event again later",
                    provider.as_str()
                ),
            });
        }
        return Ok(("unknown_object".into(), None));
    };
    let key = object.tollgate_key.clone();
    let next = object.payment.apply(&event.event);
    providers::set_payment(tx, provider, &key, &next, now)?;
    let outcome = match &event.event {
        ProviderEvent::InvoicePaid { .. } => {
            let inv = invoice_in(tx, &key)?;
            if inv.status == InvoiceStatus::Finalized {
                change_invoice_in(tx, &key, InvoiceChange::MarkPaid, now)?;
                "invoice_paid"
            } else {
                // Paid already (by hand), or voided: the payment is recorded for reconciliation.
                "payment_recorded"
            }
        }
        ProviderEvent::InvoicePaymentFailed { .. } => "payment_failed",
        ProviderEvent::ChargeRefunded { .. } => "refund_recorded",
        ProviderEvent::DisputeCreated { .. } => "dispute_recorded",
        ProviderEvent::RefundUpdated { .. } | ProviderEvent::Ignored => "ignored",
    };
    Ok((outcome.into(), Some(key)))
}
