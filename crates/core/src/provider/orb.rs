//! Orb: which accepted events are forwarded to Orb's ingest API and how each one looks there,
//! how a run of events is split into one live batch and per-customer backfills, and what an
//! Orb invoice read back means in exact minor units.
//!
//! Owns: [`Mapping`] (Tollgate event type → Orb `event_name` and properties, from the `[orb]`
//! configuration), [`event_key`] (an event's `idempotency_key` at Orb, derived from Tollgate's
//! dedup identity only), [`OrbEvent`] (the body of one event in `POST /v1/ingest`),
//! [`split`] (live versus late, by Orb's grace period), [`OrbInvoice`] (an invoice of
//! `GET /v1/invoices` reduced to what reconciliation compares), [`amount_minor`] (Orb's decimal
//! amount strings to minor units, exactly, never rounded), and the batch and grace limits.
//!
//! Does not own: HTTP, retries and the cursor over the accepted-event log (the Orb worker in
//! the binary and `tollgate_store::orb`), the backoff schedule (`crate::webhook::Backoff`),
//! which answers are retried ([`super::retryable`]).
//!
//! Invariants: the same event always gets the same idempotency key (the key is a function of
//! (`source`, `id`) alone), so a batch sent again after a crash is recognised by Orb and
//! counted once; [`split`] keeps every candidate (each lands in exactly one part); a batch
//! never holds more than [`ORB_INGEST_BATCH_EVENTS_MAX`] events; an amount that is not a whole
//! number of minor units is an error, not a rounding.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::dedup::IdentityKey;
use crate::event::{AttributeRef, Event, ValueView};
use crate::meter::JsonPath;
use crate::money::Currency;
use crate::time::UnixMs;

use super::{PaymentRecord, PaymentState};

/// Most events in one `POST /v1/ingest` request. Orb's docs ask for batches and document a
/// per-request limit; Tollgate stays at or below 500 events per request.
pub const ORB_INGEST_BATCH_EVENTS_MAX: usize = 500;
/// Orb's default grace period (ms): events whose timestamp is older than `now - 12h` are
/// refused by the live ingest API and must go through a backfill. Configurable per account at
/// Orb, so `[orb] grace_period` must match the account.
pub const ORB_GRACE_MS_DEFAULT: i64 = 12 * 3600 * 1000;
/// Longest grace period accepted in the configuration (ms): 31 days.
pub const ORB_GRACE_MS_MAX: i64 = 31 * 24 * 3600 * 1000;
/// Events this close to the edge of the grace period (ms) are sent through a backfill too: a
/// retried batch may reach Orb minutes after it was planned, and by then an event at the edge
/// would be refused as too old.
pub const ORB_GRACE_MARGIN_MS: i64 = 15 * 60 * 1000;
/// Most properties forwarded per event.
pub const ORB_PROPERTIES_MAX: usize = 64;
/// Longest Orb `event_name` accepted in the mapping (bytes).
pub const ORB_EVENT_NAME_BYTES_MAX: usize = 256;
/// Invoices asked for per page of `GET /v1/invoices` (Orb's largest page).
pub const ORB_INVOICE_PAGE_LIMIT: usize = 100;
/// Most pages of invoices read per customer in one pull.
pub const ORB_INVOICE_PAGES_MAX: usize = 100;
/// Prefix of every idempotency key Tollgate sends with an event.
pub const ORB_EVENT_KEY_PREFIX: &str = "tollgate_";

/// Why an Orb mapping, amount or invoice was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum OrbError {
    /// The `[orb]` mapping is not valid.
    #[error("[orb] mapping for `{event_type}`: {reason}")]
    MappingInvalid {
        /// The Tollgate event type.
        event_type: String,
        /// Why.
        reason: String,
    },
    /// An amount in Orb's answer is not a decimal with at most the currency's minor digits.
    #[error("Orb amount `{text}` is not an exact amount of {currency}")]
    AmountInexact {
        /// The text as Orb sent it.
        text: String,
        /// The currency.
        currency: String,
    },
    /// An invoice in Orb's answer lacks a field Tollgate needs.
    #[error("an Orb invoice has no valid `{field}`")]
    InvoiceInvalid {
        /// The field.
        field: &'static str,
    },
}

impl OrbError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            OrbError::MappingInvalid { .. } => "orb_mapping_invalid",
            OrbError::AmountInexact { .. } => "orb_amount_inexact",
            OrbError::InvoiceInvalid { .. } => "orb_invoice_invalid",
        }
    }
}

/// How events of one Tollgate event type look at Orb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Orb's `event_name`.
    pub event_name: String,
    /// Orb property name → where its value is in the event. Empty: every top-level string,
    /// number or boolean of `data` is copied under its own name.
    pub properties: Vec<(String, JsonPath)>,
}

/// Which Tollgate event types are forwarded to Orb, and how. A type not listed is not
/// forwarded (and counted as skipped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Tollgate event type → how it looks at Orb.
    pub events: BTreeMap<String, Forward>,
}

impl Mapping {
    /// Checks names and sizes.
    pub fn validate(&self) -> Result<(), OrbError> {
        for (event_type, f) in &self.events {
            let bad = |reason: &str| OrbError::MappingInvalid {
                event_type: event_type.clone(),
                reason: reason.to_owned(),
            };
            if f.event_name.is_empty() || f.event_name.len() > ORB_EVENT_NAME_BYTES_MAX {
                return Err(bad("event_name must be 1..=256 bytes"));
            }
            if f.event_name.chars().any(char::is_whitespace) {
                return Err(bad(
                    "event_name must not contain whitespace (Orb's convention)",
                ));
            }
            if f.properties.len() > ORB_PROPERTIES_MAX {
                return Err(bad("at most 64 properties"));
            }
            if f.properties.iter().any(|(name, _)| name.is_empty()) {
                return Err(bad("a property name is empty"));
            }
        }
        Ok(())
    }

    /// How `event_type` is forwarded, if it is.
    pub fn forward(&self, event_type: &str) -> Option<&Forward> {
        self.events.get(event_type)
    }

    /// Whether nothing is forwarded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// The idempotency key of an event at Orb: `tollgate_` and the 128-bit dedup identity of
/// (`source`, `id`) in hex. Fixed length, and the same for every send of the same event.
pub fn event_key(identity: IdentityKey) -> String {
    format!("{ORB_EVENT_KEY_PREFIX}{:032x}", identity.0)
}

/// One event of `POST /v1/ingest`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrbEvent {
    /// [`event_key`] of the event.
    pub idempotency_key: String,
    /// The Tollgate customer key (the event's `subject`).
    pub external_customer_id: String,
    /// From the mapping.
    pub event_name: String,
    /// The event's time, RFC 3339 in UTC.
    pub timestamp: String,
    /// Flat: strings, numbers and booleans only (Orb refuses nested values).
    pub properties: Map<String, Value>,
}

fn scalar(v: AttributeRef<'_>) -> Option<Value> {
    match v.view() {
        ValueView::String(_) | ValueView::Number(_) | ValueView::Bool(_) => Some(v.to_value()),
        // Orb allows only flat values; null, objects and arrays are left out.
        ValueView::Null | ValueView::Composite => None,
    }
}

/// The Orb form of an accepted event, under `forward`.
pub fn to_orb(event: &Event, identity: IdentityKey, forward: &Forward) -> OrbEvent {
    let mut properties = Map::new();
    if forward.properties.is_empty() {
        if let Value::Object(data) = &event.data {
            for (k, v) in data.iter().take(ORB_PROPERTIES_MAX) {
                if let Some(v) = scalar(AttributeRef::Json(v)) {
                    properties.insert(k.clone(), v);
                }
            }
        }
    } else {
        for (name, path) in &forward.properties {
            if let Some(v) = path.resolve(event).and_then(scalar) {
                properties.insert(name.clone(), v);
            }
        }
    }
    OrbEvent {
        idempotency_key: event_key(identity),
        external_customer_id: event.subject.as_str().to_owned(),
        event_name: forward.event_name.clone(),
        timestamp: event.time.to_rfc3339(),
        properties,
    }
}

/// An event ready to forward, with where it sits in the accepted-event log.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Its ingest sequence number.
    pub seq: u64,
    /// Its time.
    pub time: UnixMs,
    /// Its Orb form.
    pub event: OrbEvent,
}

/// Where a part of a plan goes at Orb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// `POST /v1/ingest`: events within the grace period.
    Live,
    /// A backfill for one customer: create it for the timeframe, ingest with its id, close it.
    Backfill {
        /// The Tollgate customer key (Orb's `external_customer_id`).
        customer: String,
        /// Start of the timeframe (inclusive; the earliest event's minute).
        timeframe_start: UnixMs,
        /// End of the timeframe (exclusive; the minute after the latest event).
        timeframe_end: UnixMs,
    },
}

/// A part of a plan: one kind, its events in log order.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// Live or a backfill.
    pub kind: PartKind,
    /// Its events (at most [`ORB_INGEST_BATCH_EVENTS_MAX`] when the input respects it).
    pub events: Vec<Candidate>,
}

/// The instant before which an event is late at `now` for a grace period of `grace_ms`.
pub fn late_before(now: UnixMs, grace_ms: i64) -> UnixMs {
    UnixMs(
        now.0
            .saturating_sub(grace_ms)
            .saturating_add(ORB_GRACE_MARGIN_MS),
    )
}

const MINUTE_MS: i64 = 60_000;

/// Splits candidates (in log order) into the live part (events at or after `late_before`),
/// then one backfill part per customer with late events, by customer key. Every candidate is in
/// exactly one part; order within a part is log order.
pub fn split(candidates: Vec<Candidate>, late_before: UnixMs) -> Vec<Part> {
    let total = candidates.len();
    let mut live = Vec::new();
    let mut late: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for c in candidates {
        if c.time.0 >= late_before.0 {
            live.push(c);
        } else {
            late.entry(c.event.external_customer_id.clone())
                .or_default()
                .push(c);
        }
    }
    let mut parts = Vec::with_capacity(1 + late.len());
    if !live.is_empty() {
        parts.push(Part {
            kind: PartKind::Live,
            events: live,
        });
    }
    for (customer, events) in late {
        let min = events.iter().map(|c| c.time.0).min().unwrap_or(0);
        let max = events.iter().map(|c| c.time.0).max().unwrap_or(0);
        parts.push(Part {
            kind: PartKind::Backfill {
                customer,
                timeframe_start: UnixMs(min.div_euclid(MINUTE_MS) * MINUTE_MS),
                timeframe_end: UnixMs((max.div_euclid(MINUTE_MS) + 1) * MINUTE_MS),
            },
            events,
        });
    }
    assert_eq!(
        parts.iter().map(|p| p.events.len()).sum::<usize>(),
        total,
        "split lost or duplicated a candidate"
    );
    parts
}

/// Orb's decimal amount text (`"12.50"`) as minor units of `currency`, exactly: more digits
/// than the currency has (other than trailing zeros) is [`OrbError::AmountInexact`].
pub fn amount_minor(text: &str, currency: Currency) -> Result<i64, OrbError> {
    let inexact = || OrbError::AmountInexact {
        text: text.chars().take(40).collect(),
        currency: currency.code().to_owned(),
    };
    let d: Decimal = text.trim().parse().map_err(|_| inexact())?;
    let d = d.normalize();
    let digits = currency.minor_digits();
    if d.scale() > digits {
        return Err(inexact());
    }
    let minor = d
        .checked_mul(Decimal::from(10_i64.pow(digits)))
        .ok_or_else(inexact)?;
    i64::try_from(minor).map_err(|_| inexact())
}

/// An invoice of Orb's `GET /v1/invoices`, reduced to what reconciliation compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrbInvoice {
    /// Orb's invoice id.
    pub id: String,
    /// Orb's invoice number.
    pub number: Option<String>,
    /// Orb's status: `draft`, `issued`, `paid`, `synced`, `void`.
    pub status: String,
    /// Orb's customer id.
    pub customer_id: Option<String>,
    /// The Tollgate customer key (Orb's `external_customer_id`).
    pub external_customer_id: Option<String>,
    /// Currency.
    pub currency: Currency,
    /// `invoice_date`.
    pub invoice_date: Option<UnixMs>,
    /// `total` in minor units.
    pub total_minor: i64,
    /// The payment record: state from the status, due and paid amounts.
    pub payment: PaymentRecord,
}

fn text_field(v: &Value, field: &'static str) -> Result<String, OrbError> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or(OrbError::InvoiceInvalid { field })
}

fn time_field(v: &Value, field: &str) -> Option<UnixMs> {
    v.get(field)
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(UnixMs::from_timestamp)
}

impl OrbInvoice {
    /// Reads one invoice object of Orb's answer.
    pub fn parse(v: &Value) -> Result<OrbInvoice, OrbError> {
        let id = text_field(v, "id")?;
        let status = text_field(v, "status")?;
        let currency = Currency::parse(&text_field(v, "currency")?)
            .map_err(|_| OrbError::InvoiceInvalid { field: "currency" })?;
        let amount_due_minor = amount_minor(&text_field(v, "amount_due")?, currency)?;
        let total_minor = amount_minor(&text_field(v, "total")?, currency)?;
        let customer = v.get("customer");
        let state = match status.as_str() {
            "paid" => PaymentState::Paid,
            "void" => PaymentState::Void,
            _ => PaymentState::Open,
        };
        Ok(OrbInvoice {
            number: v
                .get("invoice_number")
                .and_then(Value::as_str)
                .map(str::to_owned),
            customer_id: customer
                .and_then(|c| c.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            external_customer_id: customer
                .and_then(|c| c.get("external_customer_id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            invoice_date: time_field(v, "invoice_date"),
            total_minor,
            payment: PaymentRecord {
                state,
                amount_due_minor,
                // Orb reports a paid invoice by status; what was paid is what was due.
                amount_paid_minor: if state == PaymentState::Paid {
                    amount_due_minor
                } else {
                    0
                },
                ..PaymentRecord::default()
            },
            id,
            status,
            currency,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::dedup::identity;
    use serde_json::json;

    fn event(id: &str, subject: &str, time_ms: i64, data: Value) -> Event {
        let raw = json!({
            "specversion": "1.0", "id": id, "source": "test", "type": "proxy.request",
            "subject": subject, "time": UnixMs(time_ms).to_rfc3339(), "data": data,
        });
        Event::parse(&raw.to_string(), UnixMs(time_ms)).unwrap()
    }

    fn forward(props: &[(&str, &str)]) -> Forward {
        Forward {
            event_name: "api_request".into(),
            properties: props
                .iter()
                .map(|(n, p)| ((*n).to_owned(), JsonPath::parse(p).unwrap()))
                .collect(),
        }
    }

    #[test]
    fn the_key_depends_on_the_identity_only() {
        let a = event("e1", "acme", 1_000, json!({"bytes": 5}));
        let b = event("e1", "acme", 9_000, json!({"bytes": 7}));
        let c = event("e2", "acme", 1_000, json!({"bytes": 5}));
        let f = forward(&[]);
        let ka = to_orb(&a, identity(&a), &f).idempotency_key;
        assert_eq!(ka, to_orb(&b, identity(&b), &f).idempotency_key);
        assert_ne!(ka, to_orb(&c, identity(&c), &f).idempotency_key);
        assert_eq!(ka.len(), ORB_EVENT_KEY_PREFIX.len() + 32);
    }

    #[test]
    fn properties_are_flat_and_mapped() {
        let e = event(
            "e1",
            "acme",
            1_000,
            json!({"bytes": 5, "host": "x", "ok": true, "nested": {"a": 1}, "none": null}),
        );
        let all = to_orb(&e, identity(&e), &forward(&[]));
        assert_eq!(
            Value::Object(all.properties),
            json!({"bytes": 5, "host": "x", "ok": true})
        );
        let some = to_orb(
            &e,
            identity(&e),
            &forward(&[
                ("b", "$.data.bytes"),
                ("who", "$.subject"),
                ("n", "$.data.nested"),
            ]),
        );
        assert_eq!(
            Value::Object(some.properties),
            json!({"b": 5, "who": "acme"})
        );
        assert_eq!(some.external_customer_id, "acme");
        assert_eq!(some.timestamp, "1970-01-01T00:00:01Z");
    }

    #[test]
    fn split_keeps_every_event_and_groups_late_ones_by_customer() {
        let mk = |seq: u64, who: &str, t: i64| {
            let e = event(&format!("e{seq}"), who, t, json!({}));
            Candidate {
                seq,
                time: UnixMs(t),
                event: to_orb(&e, identity(&e), &forward(&[])),
            }
        };
        let parts = split(
            vec![
                mk(1, "b", 130_000),
                mk(2, "a", 10_000_000),
                mk(3, "a", 61_000),
                mk(4, "b", 125_000),
                mk(5, "a", 10_000_001),
            ],
            UnixMs(1_000_000),
        );
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].kind, PartKind::Live);
        assert_eq!(
            parts[0].events.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [2, 5]
        );
        assert_eq!(
            parts[1].kind,
            PartKind::Backfill {
                customer: "a".into(),
                timeframe_start: UnixMs(60_000),
                timeframe_end: UnixMs(120_000)
            }
        );
        assert_eq!(
            parts[2].kind,
            PartKind::Backfill {
                customer: "b".into(),
                timeframe_start: UnixMs(120_000),
                timeframe_end: UnixMs(180_000)
            }
        );
        assert_eq!(
            parts[2].events.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [1, 4]
        );
    }

    #[test]
    fn amounts_are_exact() {
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(amount_minor("12.50", usd), Ok(1250));
        assert_eq!(amount_minor("12.500000", usd), Ok(1250));
        assert_eq!(amount_minor("0", usd), Ok(0));
        assert_eq!(amount_minor("-3.1", usd), Ok(-310));
        assert_eq!(amount_minor("12", jpy), Ok(12));
        assert_eq!(
            amount_minor("12.005", usd).unwrap_err().code(),
            "orb_amount_inexact"
        );
        assert!(amount_minor("1.5", jpy).is_err());
        assert!(amount_minor("abc", usd).is_err());
    }

    #[test]
    fn invoices_read_back() {
        let inv = OrbInvoice::parse(&json!({
            "id": "inv_1", "status": "paid", "currency": "USD", "amount_due": "40.00",
            "total": "42.00", "invoice_number": "ORB-1", "invoice_date": "2026-05-01T00:00:00+00:00",
            "customer": {"id": "cus_1", "external_customer_id": "acme"}
        }))
        .unwrap();
        assert_eq!(inv.payment.state, PaymentState::Paid);
        assert_eq!(
            (
                inv.payment.amount_due_minor,
                inv.payment.amount_paid_minor,
                inv.total_minor
            ),
            (4000, 4000, 4200)
        );
        assert_eq!(inv.external_customer_id.as_deref(), Some("acme"));
        assert!(inv.invoice_date.is_some());
        let open = OrbInvoice::parse(&json!({
            "id": "inv_2", "status": "issued", "currency": "usd", "amount_due": "1.00", "total": "1.00"
        }))
        .unwrap();
        assert_eq!(
            (open.payment.state, open.payment.amount_paid_minor),
            (PaymentState::Open, 0)
        );
        assert_eq!(
            OrbInvoice::parse(&json!({"id": "x"})).unwrap_err(),
            OrbError::InvoiceInvalid { field: "status" }
        );
    }

    #[test]
    fn mapping_is_checked() {
        let mut m = Mapping::default();
        m.events.insert("proxy.request".into(), forward(&[]));
        assert!(m.validate().is_ok());
        m.events.get_mut("proxy.request").unwrap().event_name = "has space".into();
        assert_eq!(m.validate().unwrap_err().code(), "orb_mapping_invalid");
    }
}
