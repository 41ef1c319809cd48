//! Stripe Billing meter events: which accepted events are forwarded to Stripe's
//! `POST /v1/billing/meter_events`, the form each one is sent as, and whether Stripe can take it
//! at a given instant.
//!
//! Owns: [`Mapping`] (Tollgate event type → Stripe `event_name` and where the value is, from the
//! `[stripe_meters]` configuration), [`identifier`] (an event's `identifier` at Stripe: the same
//! encoding of Tollgate's dedup identity as Orb's idempotency key), [`idempotency_key`] (the
//! request's `Idempotency-Key`, a function of the identity too), [`value`] (the event's value as
//! the whole number Stripe requires), [`window`] (Stripe's timestamp window: 35 days back, 5
//! minutes ahead), [`form`] (the form-encoded body), [`is_duplicate`] (Stripe's refusal of an
//! identifier it already holds, which means "delivered"), and the limits.
//!
//! Does not own: HTTP, retries and the cursor over the accepted-event log (the Stripe meter
//! worker in the binary and `tollgate_store::stripe_meters`), which Stripe customer a subject
//! is (`provider_objects`, written by the Stripe customer sync), the backoff schedule
//! (`crate::webhook::Backoff`), which answers are retried ([`super::retryable`]).
//!
//! Invariants: the identifier and the idempotency key are functions of (`source`, `id`) alone,
//! so an event sent again after a crash is the same meter event to Stripe and counted once; an
//! identifier is at most [`STRIPE_METER_IDENTIFIER_BYTES_MAX`] bytes; a value sent is a whole
//! number of at most [`STRIPE_METER_VALUE_DIGITS_MAX`] digits; a timestamp sent is inside
//! [`window`] at the instant it is checked.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use thiserror::Error;

use crate::dedup::IdentityKey;
use crate::event::{Event, ValueView};
use crate::meter::JsonPath;
use crate::time::UnixMs;

/// Longest `event_name` Stripe takes (bytes; its documented max length is 100).
pub const STRIPE_METER_EVENT_NAME_BYTES_MAX: usize = 100;
/// Longest `identifier` Stripe takes (bytes; its documented max length is 100). Tollgate's
/// identifiers are `tollgate_` and 32 hex digits: 41 bytes.
pub const STRIPE_METER_IDENTIFIER_BYTES_MAX: usize = 100;
/// How far back Stripe takes a meter event's timestamp (ms): 35 calendar days.
pub const STRIPE_METER_PAST_MS: i64 = 35 * 24 * 3600 * 1000;
/// How far ahead Stripe takes a meter event's timestamp (ms): 5 minutes (clock drift).
pub const STRIPE_METER_FUTURE_MS: i64 = 5 * 60 * 1000;
/// Events this close to the old edge of the window (ms) are treated as outside it: a retried
/// request may reach Stripe minutes after it was checked, and would then be refused.
pub const STRIPE_METER_WINDOW_MARGIN_MS: i64 = 10 * 60 * 1000;
/// Most significant digits of a value (Stripe refuses values with more than 15).
pub const STRIPE_METER_VALUE_DIGITS_MAX: u32 = 15;
/// The payload key naming the Stripe customer (Stripe's default `customer_mapping`).
pub const PAYLOAD_CUSTOMER_KEY: &str = "stripe_customer_id";
/// The payload key carrying the value (Stripe's default `value_settings`).
pub const PAYLOAD_VALUE_KEY: &str = "value";
/// Prefix of every identifier Tollgate sends (the same as Orb's idempotency keys).
pub const IDENTIFIER_PREFIX: &str = super::orb::ORB_EVENT_KEY_PREFIX;

/// Why a `[stripe_meters]` mapping or an event's value was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StripeMeterError {
    /// The `[stripe_meters]` mapping is not valid.
    #[error("[stripe_meters] mapping for `{event_type}`: {reason}")]
    MappingInvalid {
        /// The Tollgate event type.
        event_type: String,
        /// Why.
        reason: String,
    },
    /// The value path does not resolve to a number in the event.
    #[error("the value at `{path}` is missing or not a number")]
    ValueMissing {
        /// The configured path.
        path: String,
    },
    /// The value is not a whole number of at most 15 digits (Stripe takes only those).
    #[error("the value `{text}` is not a whole number of at most 15 digits")]
    ValueNotWhole {
        /// The value as found.
        text: String,
    },
}

impl StripeMeterError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            StripeMeterError::MappingInvalid { .. } => "stripe_meter_mapping_invalid",
            StripeMeterError::ValueMissing { .. } => "stripe_meter_value_missing",
            StripeMeterError::ValueNotWhole { .. } => "stripe_meter_value_not_whole",
        }
    }
}

/// How events of one Tollgate event type become Stripe meter events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Stripe's `event_name` (the `event_name` of the Stripe meter).
    pub event_name: String,
    /// Where the value is in the event; `None`: every event counts 1.
    pub value: Option<JsonPath>,
}

/// Which Tollgate event types are forwarded to Stripe meters, and how. A type not listed is not
/// forwarded (and counted as skipped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Tollgate event type → its Stripe meter event.
    pub events: BTreeMap<String, Forward>,
}

impl Mapping {
    /// Checks names and sizes.
    pub fn validate(&self) -> Result<(), StripeMeterError> {
        for (event_type, f) in &self.events {
            let bad = |reason: &str| StripeMeterError::MappingInvalid {
                event_type: event_type.clone(),
                reason: reason.to_owned(),
            };
            if f.event_name.is_empty() || f.event_name.len() > STRIPE_METER_EVENT_NAME_BYTES_MAX {
                return Err(bad("event_name must be 1..=100 bytes"));
            }
            if f.event_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(bad("event_name must not contain whitespace"));
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

/// The `identifier` of an event at Stripe: `tollgate_` and the 128-bit dedup identity of
/// (`source`, `id`) in hex — the encoding Orb's idempotency keys use. Fixed length (41 bytes).
pub fn identifier(identity: IdentityKey) -> String {
    let id = super::orb::event_key(identity);
    assert!(
        id.len() <= STRIPE_METER_IDENTIFIER_BYTES_MAX,
        "a meter event identifier over Stripe's limit"
    );
    id
}

/// The `Idempotency-Key` of the request that creates an event's meter event.
pub fn idempotency_key(identity: IdentityKey) -> String {
    format!("tollgate-meter-event-{:032x}", identity.0)
}

/// Where an event's timestamp stands against Stripe's window at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Stripe takes it.
    Inside,
    /// Older than 35 days (less the margin): Stripe refuses it.
    TooOld,
    /// More than 5 minutes ahead: Stripe refuses it now (it will not be later either, once
    /// the cursor has passed it, so it is reported).
    TooNew,
}

impl Window {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Inside => "inside",
            Window::TooOld => "too_old",
            Window::TooNew => "too_new",
        }
    }
}

/// Whether Stripe takes a meter event at `time` when it is sent at `now`.
pub fn window(time: UnixMs, now: UnixMs) -> Window {
    let oldest = now
        .0
        .saturating_sub(STRIPE_METER_PAST_MS)
        .saturating_add(STRIPE_METER_WINDOW_MARGIN_MS);
    if time.0 < oldest {
        Window::TooOld
    } else if time.0 > now.0.saturating_add(STRIPE_METER_FUTURE_MS) {
        Window::TooNew
    } else {
        Window::Inside
    }
}

/// The event's value as Stripe takes it: the number at `path` (a JSON number, or a string
/// holding one), which must be whole and have at most 15 digits; 1 without a path.
pub fn value(event: &Event, path: Option<&JsonPath>) -> Result<Decimal, StripeMeterError> {
    let Some(path) = path else {
        return Ok(Decimal::ONE);
    };
    let missing = || StripeMeterError::ValueMissing {
        path: path.as_str().to_owned(),
    };
    let text = match path.resolve(event).ok_or_else(missing)?.view() {
        ValueView::String(s) | ValueView::Number(s) => s.to_owned(),
        ValueView::Null | ValueView::Bool(_) | ValueView::Composite => return Err(missing()),
    };
    let not_whole = || StripeMeterError::ValueNotWhole {
        text: text.chars().take(40).collect(),
    };
    let d = crate::meter::parse_decimal(text.trim())
        .ok_or_else(not_whole)?
        .normalize();
    if d.scale() != 0 || d.mantissa().unsigned_abs() >= 10u128.pow(STRIPE_METER_VALUE_DIGITS_MAX) {
        return Err(not_whole());
    }
    Ok(d)
}

/// One meter event as Stripe's form takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterEvent {
    /// From the mapping.
    pub event_name: String,
    /// The Stripe customer (`cus_…`) of the event's subject.
    pub stripe_customer_id: String,
    /// A whole number.
    pub value: Decimal,
    /// [`identifier`] of the event.
    pub identifier: String,
    /// [`idempotency_key`] of the event: the `Idempotency-Key` of its request.
    pub idempotency_key: String,
    /// The event's time in whole seconds since the epoch (rounded down).
    pub timestamp_s: i64,
}

impl MeterEvent {
    /// The meter event of an accepted event.
    pub fn new(
        event: &Event,
        identity: IdentityKey,
        forward: &Forward,
        stripe_customer_id: &str,
    ) -> Result<MeterEvent, StripeMeterError> {
        Ok(MeterEvent {
            event_name: forward.event_name.clone(),
            stripe_customer_id: stripe_customer_id.to_owned(),
            value: value(event, forward.value.as_ref())?,
            identifier: identifier(identity),
            idempotency_key: idempotency_key(identity),
            timestamp_s: event.time.0.div_euclid(1000),
        })
    }

    /// The form-encoded body of `POST /v1/billing/meter_events`.
    pub fn form(&self) -> Vec<(String, String)> {
        vec![
            ("event_name".into(), self.event_name.clone()),
            (
                format!("payload[{PAYLOAD_CUSTOMER_KEY}]"),
                self.stripe_customer_id.clone(),
            ),
            (
                format!("payload[{PAYLOAD_VALUE_KEY}]"),
                self.value.to_string(),
            ),
            ("identifier".into(), self.identifier.clone()),
            ("timestamp".into(), self.timestamp_s.to_string()),
        ]
    }
}

/// Whether a refusal (`http_status`, Stripe's error message) says Stripe already holds a meter
/// event with `identifier`: the event was delivered before (an answer lost to a crash, or an
/// idempotency key that expired), so it counts as acknowledged, not as a failure.
pub fn is_duplicate(http_status: u16, message: &str, identifier: &str) -> bool {
    http_status == 400
        && message.contains("already exists with identifier")
        && message.contains(identifier)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::dedup::identity;
    use serde_json::{Value, json};

    fn event(id: &str, time_ms: i64, data: Value) -> Event {
        let raw = json!({
            "specversion": "1.0", "id": id, "source": "test", "type": "proxy.request",
            "subject": "acme", "time": UnixMs(time_ms).to_rfc3339(), "data": data,
        });
        Event::parse(&raw.to_string(), UnixMs(time_ms)).unwrap()
    }

    fn forward(path: Option<&str>) -> Forward {
        Forward {
            event_name: "proxy_bytes".into(),
            value: path.map(|p| JsonPath::parse(p).unwrap()),
        }
    }

    #[test]
    fn the_identifier_depends_on_the_identity_only_and_fits() {
        let a = event("e1", 1_000, json!({"bytes": 5}));
        let b = event("e1", 9_000, json!({"bytes": 7}));
        let c = event("e2", 1_000, json!({"bytes": 5}));
        assert_eq!(identifier(identity(&a)), identifier(identity(&b)));
        assert_ne!(identifier(identity(&a)), identifier(identity(&c)));
        assert_eq!(
            identifier(identity(&a)),
            super::super::orb::event_key(identity(&a))
        );
        assert_eq!(identifier(identity(&a)).len(), 41);
        assert_eq!(idempotency_key(identity(&a)), idempotency_key(identity(&b)));
    }

    #[test]
    fn values_are_whole_numbers() {
        let f = forward(Some("$.data.bytes"));
        let v = |data: Value| value(&event("e", 0, data), f.value.as_ref());
        assert_eq!(v(json!({"bytes": 42})), Ok(Decimal::from(42)));
        assert_eq!(v(json!({"bytes": "42"})), Ok(Decimal::from(42)));
        assert_eq!(v(json!({"bytes": 42.0})), Ok(Decimal::from(42)));
        assert_eq!(v(json!({"bytes": -3})), Ok(Decimal::from(-3)));
        assert_eq!(
            v(json!({"bytes": 1.5})).unwrap_err().code(),
            "stripe_meter_value_not_whole"
        );
        assert_eq!(
            v(json!({"bytes": 1_000_000_000_000_000_i64}))
                .unwrap_err()
                .code(),
            "stripe_meter_value_not_whole"
        );
        assert_eq!(
            v(json!({"other": 1})).unwrap_err().code(),
            "stripe_meter_value_missing"
        );
        assert_eq!(
            v(json!({"bytes": {"x": 1}})).unwrap_err().code(),
            "stripe_meter_value_missing"
        );
        assert_eq!(value(&event("e", 0, json!({})), None), Ok(Decimal::ONE));
    }

    #[test]
    fn the_window_is_stripes() {
        let now = UnixMs(100 * 24 * 3600 * 1000);
        assert_eq!(window(now, now), Window::Inside);
        assert_eq!(window(UnixMs(now.0 + 4 * 60_000), now), Window::Inside);
        assert_eq!(window(UnixMs(now.0 + 6 * 60_000), now), Window::TooNew);
        assert_eq!(
            window(UnixMs(now.0 - 34 * 24 * 3600 * 1000), now),
            Window::Inside
        );
        assert_eq!(
            window(UnixMs(now.0 - STRIPE_METER_PAST_MS + 60_000), now),
            Window::TooOld,
            "inside the margin"
        );
        assert_eq!(
            window(UnixMs(now.0 - 36 * 24 * 3600 * 1000), now),
            Window::TooOld
        );
    }

    #[test]
    fn the_form_is_stripes() {
        let e = event("e1", 1_700_000_000_999, json!({"bytes": 7}));
        let m = MeterEvent::new(&e, identity(&e), &forward(Some("$.data.bytes")), "cus_1").unwrap();
        let form = m.form();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("event_name"), Some("proxy_bytes"));
        assert_eq!(get("payload[stripe_customer_id]"), Some("cus_1"));
        assert_eq!(get("payload[value]"), Some("7"));
        assert_eq!(get("timestamp"), Some("1700000000"));
        assert_eq!(get("identifier"), Some(identifier(identity(&e)).as_str()));
        assert!(is_duplicate(
            400,
            &format!("An event already exists with identifier {}.", m.identifier),
            &m.identifier
        ));
        assert!(!is_duplicate(400, "No such customer", &m.identifier));
    }

    #[test]
    fn mapping_is_checked() {
        let mut m = Mapping::default();
        m.events.insert("proxy.request".into(), forward(None));
        assert!(m.validate().is_ok());
        m.events.get_mut("proxy.request").unwrap().event_name = "a b".into();
        assert_eq!(
            m.validate().unwrap_err().code(),
            "stripe_meter_mapping_invalid"
        );
        m.events.get_mut("proxy.request").unwrap().event_name = "x".repeat(101);
        assert!(m.validate().is_err());
    }
}
