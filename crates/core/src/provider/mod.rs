//! Payment providers (Stripe, Stripe Billing meter events in [`stripe_meter`], and Orb in
//! [`orb`]): what Tollgate asks a provider to do, the keys
//! that make each request safe to repeat, and what a provider's webhook event means for an
//! invoice's payment state.
//!
//! Owns: [`CallKind`] (the kinds of outgoing call, one per Tollgate object that is pushed:
//! sync a customer, push an invoice, create a refund), [`idempotency_key`] (one
//! key per call step, derived from the Tollgate object, its version and the step, never from
//! time or randomness), [`ProviderEvent`] (a Stripe event reduced to what Tollgate records),
//! [`PaymentState`] and [`PaymentRecord::apply`] (how an event moves the recorded payment
//! state), and [`retryable`] (which answers are worth another attempt).
//!
//! Does not own: HTTP (the worker in the binary), the outbox and the records
//! (`tollgate_store::providers`), signatures (`crate::webhook::verify` is the Stripe scheme:
//! `t=…,v1=…`, HMAC-SHA256 of `"t.payload"`), the backoff schedule (`crate::webhook::Backoff`).
//!
//! Invariants: the same (kind, object, version, step) always gives the same idempotency key,
//! so a retry after a crash is recognised by the provider; an event applied twice changes a
//! [`PaymentRecord`] once (the store also refuses a second event with the same id); refunded
//! and disputed amounts never exceed what was paid (asserted when the record is applied).

mod error;
pub mod orb;
pub mod stripe_meter;
#[cfg(test)]
mod tests;

pub use error::ProviderError;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The header Stripe signs its webhooks with.
pub const STRIPE_SIGNATURE_HEADER: &str = "Stripe-Signature";
/// How far a Stripe webhook's timestamp may be from now (ms): 5 minutes, as Stripe's libraries.
pub const STRIPE_SIGNATURE_TOLERANCE_MS: i64 = 5 * 60 * 1000;
/// Largest Stripe webhook body accepted (bytes). Stripe's events are far smaller.
pub const STRIPE_WEBHOOK_BODY_BYTES_MAX: usize = 1024 * 1024;
/// The metadata key carrying Tollgate's key on every object Tollgate creates at a provider.
pub const METADATA_KEY: &str = "tollgate_key";
/// The metadata key carrying the Tollgate invoice id on Stripe invoices and invoice items.
pub const METADATA_INVOICE: &str = "tollgate_invoice";
/// The metadata key carrying the Tollgate refund id on Stripe refunds.
pub const METADATA_REFUND: &str = "tollgate_refund";

/// A payment provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Stripe.
    Stripe,
    /// Orb (usage forwarded, customers synced, invoices read back).
    Orb,
}

impl Provider {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Stripe => "stripe",
            Provider::Orb => "orb",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Provider> {
        match name {
            "stripe" => Some(Provider::Stripe),
            "orb" => Some(Provider::Orb),
            _ => None,
        }
    }
}

/// What an outgoing call does. Each kind names the Tollgate object it carries (a customer key,
/// an invoice id, a refund id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// Create the customer at the provider, or update it (name, e-mail, metadata).
    SyncCustomer,
    /// Create the invoice with its lines at the provider, then finalize it there.
    PushInvoice,
    /// Refund (part of) the charge that paid an invoice.
    CreateRefund,
}

impl CallKind {
    /// Every kind.
    pub const ALL: [CallKind; 3] = [
        CallKind::SyncCustomer,
        CallKind::PushInvoice,
        CallKind::CreateRefund,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::SyncCustomer => "sync_customer",
            CallKind::PushInvoice => "push_invoice",
            CallKind::CreateRefund => "create_refund",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<CallKind> {
        CallKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The `Idempotency-Key` of one step of a call: `tollgate-<kind>-<object>-v<version>-<step>`.
/// `version` is what makes a later change a new request (a customer's `updated_ms`); an
/// invoice is pushed once (finalized is final), so its version is always 1. The key depends on
/// nothing else, so the retry of a step after a crash sends the same key, and the provider
/// answers with the object it created the first time instead of a second one.
pub fn idempotency_key(kind: CallKind, object: &str, version: i64, step: &str) -> String {
    format!("tollgate-{}-{object}-v{version}-{step}", kind.as_str())
}

/// Whether an outgoing request that answered `http_status` (`None`: no answer) is worth
/// another attempt: no answer, 409 (Stripe: an idempotent request still in flight), 429 (rate
/// limited) and 5xx are; any other 4xx is a request the provider will never accept, so the
/// call fails for good and says why.
pub fn retryable(http_status: Option<u16>) -> bool {
    match http_status {
        None => true,
        Some(s) => s == 409 || s == 429 || s >= 500,
    }
}

/// Where an invoice stands at the provider, as its webhooks told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Pushed; no payment event yet.
    #[default]
    Open,
    /// A payment attempt failed (the provider retries on its own schedule).
    Failed,
    /// Paid in full.
    Paid,
    /// Paid, then part of it refunded.
    PartiallyRefunded,
    /// Paid, then all of it refunded.
    Refunded,
    /// A dispute was opened against its charge.
    Disputed,
    /// Voided at the provider (Orb invoices read back).
    Void,
}

impl PaymentState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Open => "open",
            PaymentState::Failed => "failed",
            PaymentState::Paid => "paid",
            PaymentState::PartiallyRefunded => "partially_refunded",
            PaymentState::Refunded => "refunded",
            PaymentState::Disputed => "disputed",
            PaymentState::Void => "void",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<PaymentState> {
        [
            PaymentState::Open,
            PaymentState::Failed,
            PaymentState::Paid,
            PaymentState::PartiallyRefunded,
            PaymentState::Refunded,
            PaymentState::Disputed,
            PaymentState::Void,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// What Tollgate records of an invoice's money at the provider (for reconciliation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PaymentRecord {
    /// The payment state.
    pub state: PaymentState,
    /// What the provider says is due (minor units).
    pub amount_due_minor: i64,
    /// Paid (minor units).
    pub amount_paid_minor: i64,
    /// Refunded so far (minor units, ≤ paid).
    pub amount_refunded_minor: i64,
    /// Disputed (minor units).
    pub amount_disputed_minor: i64,
    /// Failed payment attempts seen.
    pub failed_attempts: u32,
    /// The provider's charge (or payment) id, when one is known.
    pub charge_id: Option<String>,
}

/// A provider webhook event reduced to what Tollgate acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderEvent {
    /// `invoice.paid`.
    InvoicePaid {
        /// The provider's invoice id.
        invoice: String,
        /// Amount paid (minor units).
        amount_paid_minor: i64,
        /// The charge, if the event names one.
        charge: Option<String>,
    },
    /// `invoice.payment_failed`.
    InvoicePaymentFailed {
        /// The provider's invoice id.
        invoice: String,
        /// The provider's attempt count, if given.
        attempt_count: Option<u32>,
    },
    /// `charge.refunded`: `amount_refunded` is the charge's running total.
    ChargeRefunded {
        /// The charge.
        charge: String,
        /// Its invoice, if the charge names one.
        invoice: Option<String>,
        /// Total refunded on the charge so far (minor units).
        amount_refunded_minor: i64,
    },
    /// `charge.dispute.created`.
    DisputeCreated {
        /// The disputed charge.
        charge: String,
        /// Amount disputed (minor units).
        amount_minor: i64,
    },
    /// `charge.refund.updated`, `refund.updated`, `refund.failed`: a refund's status moved
    /// (Stripe settles some refunds later than it answers the request).
    RefundUpdated {
        /// The provider's refund id.
        refund: String,
        /// Its status as the provider names it.
        status: String,
        /// The Tollgate refund named in its metadata, if any.
        tollgate_refund: Option<String>,
    },
    /// Any other type: acknowledged and ignored.
    Ignored,
}

/// A Stripe event's envelope: its id, type, and what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripeEvent {
    /// `evt_…`: the identity replays are recognised by.
    pub id: String,
    /// `invoice.paid`, …
    pub event_type: String,
    /// What it means.
    pub event: ProviderEvent,
    /// The Tollgate invoice named in the object's metadata (`tollgate_invoice`), if any: set
    /// on invoices Tollgate pushed, so an event is understood even before the push's outcome
    /// was recorded.
    pub tollgate_invoice: Option<String>,
}

fn text(v: &Value, field: &'static str) -> Result<String, ProviderError> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or(ProviderError::EventInvalid { field })
}

fn minor(v: &Value, field: &'static str) -> Result<i64, ProviderError> {
    let amount = v
        .get(field)
        .and_then(Value::as_i64)
        .ok_or(ProviderError::EventInvalid { field })?;
    if amount < 0 {
        return Err(ProviderError::EventInvalid { field });
    }
    Ok(amount)
}

/// An optional id field: a string, or an expanded object's `id`.
fn id_field(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl StripeEvent {
    /// Reads a Stripe event (the verified webhook body). Unknown types are [`ProviderEvent::Ignored`];
    /// a known type missing a field it needs is [`ProviderError::EventInvalid`].
    pub fn parse(body: &[u8]) -> Result<StripeEvent, ProviderError> {
        let v: Value = serde_json::from_slice(body).map_err(|_| ProviderError::EventInvalid {
            field: "body (JSON)",
        })?;
        let id = text(&v, "id")?;
        let event_type = text(&v, "type")?;
        let object =
            v.get("data")
                .and_then(|d| d.get("object"))
                .ok_or(ProviderError::EventInvalid {
                    field: "data.object",
                })?;
        let event = match event_type.as_str() {
            "invoice.paid" => ProviderEvent::InvoicePaid {
                invoice: text(object, "id")?,
                amount_paid_minor: minor(object, "amount_paid")?,
                charge: id_field(object, "charge"),
            },
            "invoice.payment_failed" => ProviderEvent::InvoicePaymentFailed {
                invoice: text(object, "id")?,
                attempt_count: object
                    .get("attempt_count")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok()),
            },
            "charge.refunded" => ProviderEvent::ChargeRefunded {
                charge: text(object, "id")?,
                invoice: id_field(object, "invoice"),
                amount_refunded_minor: minor(object, "amount_refunded")?,
            },
            "charge.dispute.created" => ProviderEvent::DisputeCreated {
                charge: id_field(object, "charge").ok_or(ProviderError::EventInvalid {
                    field: "data.object.charge",
                })?,
                amount_minor: minor(object, "amount")?,
            },
            "charge.refund.updated" | "refund.updated" | "refund.failed" => {
                ProviderEvent::RefundUpdated {
                    refund: text(object, "id")?,
                    status: text(object, "status")?,
                    tollgate_refund: object
                        .get("metadata")
                        .and_then(|m| m.get(METADATA_REFUND))
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                }
            }
            _ => ProviderEvent::Ignored,
        };
        let tollgate_invoice = object
            .get("metadata")
            .and_then(|m| m.get(METADATA_INVOICE))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Ok(StripeEvent {
            id,
            event_type,
            event,
            tollgate_invoice,
        })
    }
}

impl PaymentRecord {
    /// The record after `event` (which must concern this record's invoice or charge). Pure;
    /// applying the same `invoice.paid` or `charge.refunded` twice gives the same record, since
    /// they carry totals, not increments.
    pub fn apply(&self, event: &ProviderEvent) -> PaymentRecord {
        let mut next = self.clone();
        match event {
            ProviderEvent::InvoicePaid {
                amount_paid_minor,
                charge,
                ..
            } => {
                next.amount_paid_minor = *amount_paid_minor;
                if charge.is_some() {
                    next.charge_id.clone_from(charge);
                }
                if next.state != PaymentState::Disputed && next.amount_refunded_minor == 0 {
                    next.state = PaymentState::Paid;
                }
            }
            ProviderEvent::InvoicePaymentFailed { attempt_count, .. } => {
                next.failed_attempts = match attempt_count {
                    Some(n) => (*n).max(self.failed_attempts),
                    None => self.failed_attempts.saturating_add(1),
                };
                if matches!(self.state, PaymentState::Open | PaymentState::Failed) {
                    next.state = PaymentState::Failed;
                }
            }
            ProviderEvent::ChargeRefunded {
                charge,
                amount_refunded_minor,
                ..
            } => {
                next.charge_id = Some(charge.clone());
                // A refund can only follow a payment; Stripe's running total never shrinks.
                next.amount_refunded_minor = (*amount_refunded_minor)
                    .max(self.amount_refunded_minor)
                    .min(next.amount_paid_minor.max(*amount_refunded_minor));
                if next.amount_paid_minor < next.amount_refunded_minor {
                    next.amount_paid_minor = next.amount_refunded_minor;
                }
                if next.state != PaymentState::Disputed {
                    next.state = if next.amount_refunded_minor >= next.amount_paid_minor {
                        PaymentState::Refunded
                    } else {
                        PaymentState::PartiallyRefunded
                    };
                }
            }
            ProviderEvent::DisputeCreated {
                charge,
                amount_minor,
            } => {
                next.charge_id = Some(charge.clone());
                next.amount_disputed_minor = *amount_minor;
                next.state = PaymentState::Disputed;
            }
            ProviderEvent::RefundUpdated { .. } | ProviderEvent::Ignored => {}
        }
        assert!(
            next.amount_refunded_minor <= next.amount_paid_minor,
            "refunded {} exceeds paid {}",
            next.amount_refunded_minor,
            next.amount_paid_minor
        );
        next
    }
}
