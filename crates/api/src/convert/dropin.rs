//! Drop-in ingest: Orb, Stripe and OpenMeter event shapes turned into Tollgate CloudEvents.
//!
//! Owns: the one conversion from each foreign shape to a CloudEvent (JSON text the engine parses
//! like any event sent to `/v1/events`), the event-name mapping ([`Mapping`]) and the typed
//! errors of a conversion ([`ConvertError`], stable `code()`s). Does not own: validation of the
//! resulting event, dedup and durability (the engine does them exactly as for `/v1/events`), nor
//! the adapters' HTTP answers (`routes/dropin.rs`).
//!
//! Invariants:
//! - The dedup identity is (`source`, `id`): Orb → (`orb`, `idempotency_key`); Stripe →
//!   (`stripe`, `identifier`, else the request's `Idempotency-Key`, else a fresh random id);
//!   OpenMeter → the CloudEvent's own `source` and `id` (so the same event sent to `/v1/events`
//!   and `/api/v1/events` is one event).
//! - A conversion is a pure function of the foreign event (and the mapping): re-sending the same
//!   event yields the same CloudEvent text, so a retry is a `duplicate`, never a second count. In
//!   particular a missing Stripe `timestamp` leaves `time` out (the engine uses the receive time,
//!   and the fingerprint covers `time` as sent), rather than stamping a different time per retry.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::{Map, Value};
use tollgate_core::limits::EVENT_TYPE_BYTES_MAX;

/// The fixed `source` of events that came in through the Orb adapter.
pub const ORB_SOURCE: &str = "orb";
/// The fixed `source` of events that came in through the Stripe adapter.
pub const STRIPE_SOURCE: &str = "stripe";
/// Stripe's default payload key naming the customer (`customer_mapping.event_payload_key`).
pub const STRIPE_CUSTOMER_KEY_DEFAULT: &str = "stripe_customer_id";

/// How foreign event names become Tollgate event types (the `[dropin]` section of the config
/// file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Foreign event name (Orb/Stripe `event_name`, OpenMeter `type`) → Tollgate event type.
    pub event_types: BTreeMap<String, String>,
    /// When true, a name absent from `event_types` is rejected (`unmapped_event_name`); when
    /// false it is used as the Tollgate type unchanged.
    pub require_mapping: bool,
    /// The Stripe payload key naming the customer.
    pub stripe_customer_key: String,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            event_types: BTreeMap::new(),
            require_mapping: false,
            stripe_customer_key: STRIPE_CUSTOMER_KEY_DEFAULT.to_owned(),
        }
    }
}

/// A mapping that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    /// A target type is empty or longer than the event type limit.
    #[error("dropin event type for `{name}` must be 1..={EVENT_TYPE_BYTES_MAX} bytes")]
    InvalidType {
        /// The foreign name.
        name: String,
    },
    /// The Stripe customer key is empty.
    #[error("dropin stripe_customer_key must not be empty")]
    EmptyCustomerKey,
}

impl Mapping {
    /// Checks every target type once, at start.
    pub fn validate(&self) -> Result<(), MappingError> {
        for (name, ty) in &self.event_types {
            if ty.is_empty() || ty.len() > EVENT_TYPE_BYTES_MAX {
                return Err(MappingError::InvalidType { name: name.clone() });
            }
        }
        if self.stripe_customer_key.is_empty() {
            return Err(MappingError::EmptyCustomerKey);
        }
        Ok(())
    }

    /// The Tollgate type of a foreign event name.
    pub fn event_type(&self, name: &str) -> Result<String, ConvertError> {
        match self.event_types.get(name) {
            Some(ty) => Ok(ty.clone()),
            None if self.require_mapping => Err(ConvertError::UnmappedEventName(name.to_owned())),
            None => Ok(name.to_owned()),
        }
    }
}

/// Why one foreign event could not become a CloudEvent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    /// A required field is absent (or null).
    #[error("`{0}` is required")]
    MissingField(String),
    /// A field has the wrong type or form.
    #[error("`{field}` {reason}")]
    InvalidField {
        /// The field, as the client names it.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The event name has no mapping and the mapping is required.
    #[error("event name `{0}` has no mapping to a Tollgate event type ([dropin.event_types])")]
    UnmappedEventName(String),
}

impl ConvertError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ConvertError::MissingField(_) => "missing_field",
            ConvertError::InvalidField { .. } => "invalid_field",
            ConvertError::UnmappedEventName(_) => "unmapped_event_name",
        }
    }

    /// The field at fault, as the client names it.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConvertError::MissingField(f) | ConvertError::InvalidField { field: f, .. } => Some(f),
            ConvertError::UnmappedEventName(_) => None,
        }
    }
}

fn invalid(field: &str, reason: &str) -> ConvertError {
    ConvertError::InvalidField {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

fn cloud_event(
    id: &str,
    source: &str,
    ty: String,
    subject: &str,
    time: Option<String>,
    data: Value,
) -> Value {
    let mut event = Map::new();
    event.insert("specversion".into(), Value::from("1.0"));
    event.insert("id".into(), Value::from(id));
    event.insert("source".into(), Value::from(source));
    event.insert("type".into(), Value::from(ty));
    event.insert("subject".into(), Value::from(subject));
    if let Some(time) = time {
        event.insert("time".into(), Value::from(time));
    }
    event.insert("datacontenttype".into(), Value::from("application/json"));
    event.insert("data".into(), data);
    Value::Object(event)
}

fn required_str<'a>(event: &'a Map<String, Value>, field: &str) -> Result<&'a str, ConvertError> {
    match event.get(field) {
        None | Some(Value::Null) => Err(ConvertError::MissingField(field.to_owned())),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(field, "must not be empty")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn optional_str<'a>(
    event: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ConvertError> {
    match event.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(field, "must not be empty")),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// Orb's `timestamp`: ISO 8601 in UTC, with `Z`, an offset, or no offset at all (Orb reads a
/// timestamp without offset as UTC; Python's `datetime.isoformat()` of a naive time sends
/// one). Answers RFC 3339 UTC text, so the same instant always gives the same text.
pub fn orb_timestamp(text: &str) -> Result<String, ConvertError> {
    let reason = "must be an ISO 8601 timestamp (e.g. 2024-01-01T00:00:00Z)";
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(tollgate_core::time::UnixMs::from_timestamp(ts).to_rfc3339());
    }
    let civil: jiff::civil::DateTime = text.parse().map_err(|_| invalid("timestamp", reason))?;
    let ts = civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|_| invalid("timestamp", reason))?
        .timestamp();
    Ok(tollgate_core::time::UnixMs::from_timestamp(ts).to_rfc3339())
}

/// One element of Orb's `events[]`. Answers the CloudEvent, or why not; the idempotency key is
/// read separately by [`orb_idempotency_key`] so a failure can name it.
pub fn orb_event(mapping: &Mapping, event: &Value) -> Result<Value, ConvertError> {
    let Value::Object(event) = event else {
        return Err(invalid("events[]", "must be an object"));
    };
    let key = required_str(event, "idempotency_key")?;
    let name = required_str(event, "event_name")?;
    let timestamp = orb_timestamp(required_str(event, "timestamp")?)?;
    let customer = match (
        optional_str(event, "external_customer_id")?,
        optional_str(event, "customer_id")?,
    ) {
        (Some(c), None) | (None, Some(c)) => c,
        (Some(_), Some(_)) => {
            return Err(invalid(
                "external_customer_id",
                "and `customer_id` must not both be set",
            ));
        }
        (None, None) => {
            return Err(ConvertError::MissingField(
                "external_customer_id` or `customer_id".into(),
            ));
        }
    };
    let properties = match event.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => {
            if let Some((k, _)) = p.iter().find(|(_, v)| v.is_object() || v.is_array()) {
                return Err(invalid(
                    &format!("properties.{k}"),
                    "must be a number, boolean or string (nested values are not allowed)",
                ));
            }
            p.clone()
        }
        Some(_) => return Err(invalid("properties", "must be an object")),
    };
    let ty = mapping.event_type(name)?;
    Ok(cloud_event(
        key,
        ORB_SOURCE,
        ty,
        customer,
        Some(timestamp),
        Value::Object(properties),
    ))
}

/// The `idempotency_key` of one Orb event, when it has a usable one.
pub fn orb_idempotency_key(event: &Value) -> Option<&str> {
    event.get("idempotency_key").and_then(Value::as_str)
}

/// A Stripe meter event request (`POST /v1/billing/meter_events`), read from its form fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripeMeterEvent {
    /// `event_name`.
    pub event_name: String,
    /// `identifier`, else the `Idempotency-Key` header, else a fresh random id.
    pub identifier: String,
    /// `payload[...]`, every key as sent (values are strings, as Stripe keeps them).
    pub payload: BTreeMap<String, String>,
    /// `timestamp` (seconds since the epoch), if sent.
    pub timestamp_s: Option<i64>,
}

/// Reads the form fields of a Stripe meter event. `fallback_id` gives the identifier when the
/// request has none (the adapter passes the `Idempotency-Key` header, which Stripe's clients
/// send with every POST and keep across their retries, or a fresh random id).
pub fn stripe_form(
    pairs: &[(String, String)],
    fallback_id: impl FnOnce() -> String,
) -> Result<StripeMeterEvent, ConvertError> {
    let mut event_name = None;
    let mut identifier = None;
    let mut timestamp_s = None;
    let mut payload = BTreeMap::new();
    for (name, value) in pairs {
        if let Some(key) = name
            .strip_prefix("payload[")
            .and_then(|k| k.strip_suffix(']'))
        {
            payload.insert(key.to_owned(), value.clone());
            continue;
        }
        match name.as_str() {
            "event_name" => event_name = Some(value.clone()),
            "identifier" => identifier = Some(value.clone()),
            "timestamp" => {
                let seconds = value.parse::<i64>().map_err(|_| {
                    invalid(
                        "timestamp",
                        "must be an integer (seconds since the Unix epoch)",
                    )
                })?;
                timestamp_s = Some(seconds);
            }
            // Accepted by Stripe on every request; nothing to expand here.
            n if n == "expand[]" || n.starts_with("expand[") => {}
            other => {
                return Err(ConvertError::InvalidField {
                    field: other.to_owned(),
                    reason: "is not a parameter of a meter event".into(),
                });
            }
        }
    }
    let event_name = event_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ConvertError::MissingField("event_name".into()))?;
    if payload.is_empty() {
        return Err(ConvertError::MissingField("payload".into()));
    }
    let identifier = match identifier {
        Some(id) if id.is_empty() => return Err(invalid("identifier", "must not be empty")),
        Some(id) => id,
        None => fallback_id(),
    };
    Ok(StripeMeterEvent {
        event_name,
        identifier,
        payload,
        timestamp_s,
    })
}

/// A Stripe meter event as a CloudEvent: `payload[<customer key>]` is the subject and the whole
/// payload is `data` (so `data.value` holds `payload[value]`).
pub fn stripe_event(mapping: &Mapping, event: &StripeMeterEvent) -> Result<Value, ConvertError> {
    let customer_key = &mapping.stripe_customer_key;
    let customer = event
        .payload
        .get(customer_key)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ConvertError::MissingField(format!("payload[{customer_key}]")))?;
    let time = match event.timestamp_s {
        Some(s) => {
            let ts = jiff::Timestamp::from_second(s)
                .map_err(|_| invalid("timestamp", "is out of range"))?;
            Some(tollgate_core::time::UnixMs::from_timestamp(ts).to_rfc3339())
        }
        None => None,
    };
    let data: Map<String, Value> = event
        .payload
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let ty = mapping.event_type(&event.event_name)?;
    Ok(cloud_event(
        &event.identifier,
        STRIPE_SOURCE,
        ty,
        customer,
        time,
        Value::Object(data),
    ))
}

/// An OpenMeter CloudEvent: already Tollgate's shape; only its `type` goes through the mapping.
/// Everything else (validation included) is the engine's, as for `/v1/events`.
pub fn openmeter_event(mapping: &Mapping, mut event: Value) -> Result<Value, ConvertError> {
    let Value::Object(fields) = &mut event else {
        return Err(invalid("event", "must be a JSON object"));
    };
    let Some(Value::String(name)) = fields.get("type") else {
        // The engine answers the missing or invalid `type` with its own code.
        return Ok(event);
    };
    let ty = mapping.event_type(name)?;
    fields.insert("type".into(), Value::from(ty));
    Ok(event)
}

/// Converted events (each with the index the client knows it by) as one JSON array body and
/// the spans of its elements, ready for `Engine::prepare`.
pub fn into_body(events: &[(usize, Value)]) -> (String, Vec<(usize, Range<usize>)>) {
    let mut body = String::from("[");
    let mut spans = Vec::with_capacity(events.len());
    for (n, (index, event)) in events.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        let start = body.len();
        body.push_str(&event.to_string());
        spans.push((*index, start..body.len()));
    }
    body.push(']');
    (body, spans)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn orb_event_becomes_a_cloudevent_with_a_fixed_source() {
        let e = json!({"idempotency_key": "k1", "event_name": "api", "external_customer_id": "acme",
            "timestamp": "2024-01-02T03:04:05", "properties": {"bytes": 12, "region": "eu"}});
        let ce = orb_event(&Mapping::default(), &e).unwrap();
        assert_eq!(ce["id"], "k1");
        assert_eq!(ce["source"], ORB_SOURCE);
        assert_eq!(ce["subject"], "acme");
        assert_eq!(ce["type"], "api");
        assert_eq!(ce["time"], "2024-01-02T03:04:05Z");
        assert_eq!(ce["data"]["bytes"].to_string(), "12");
        // The same instant with an offset gives the same text (a retry stays a duplicate).
        let e2 = json!({"idempotency_key": "k1", "event_name": "api", "external_customer_id": "acme",
            "timestamp": "2024-01-02T05:04:05+02:00", "properties": {"bytes": 12, "region": "eu"}});
        assert_eq!(orb_event(&Mapping::default(), &e2).unwrap(), ce);
    }

    #[test]
    fn orb_errors_are_typed() {
        let m = Mapping::default();
        let base = json!({"idempotency_key": "k", "event_name": "n", "customer_id": "c",
            "timestamp": "2024-01-01T00:00:00Z", "properties": {}});
        let with = |k: &str, v: Value| {
            let mut e = base.clone();
            e[k] = v;
            e
        };
        assert_eq!(
            orb_event(&m, &with("timestamp", json!("soon")))
                .unwrap_err()
                .code(),
            "invalid_field"
        );
        assert_eq!(
            orb_event(&m, &with("event_name", Value::Null))
                .unwrap_err()
                .code(),
            "missing_field"
        );
        assert_eq!(
            orb_event(&m, &with("external_customer_id", json!("x")))
                .unwrap_err()
                .code(),
            "invalid_field"
        );
        assert_eq!(
            orb_event(&m, &with("properties", json!({"a": {"b": 1}})))
                .unwrap_err()
                .field(),
            Some("properties.a")
        );
        let strict = Mapping {
            require_mapping: true,
            ..Mapping::default()
        };
        assert_eq!(
            orb_event(&strict, &base).unwrap_err(),
            ConvertError::UnmappedEventName("n".into())
        );
    }

    #[test]
    fn stripe_form_reads_payload_and_falls_back_for_the_identifier() {
        let form = pairs(&[
            ("event_name", "api_call"),
            ("payload[stripe_customer_id]", "cus_1"),
            ("payload[value]", "25"),
            ("timestamp", "1700000000"),
        ]);
        let e = stripe_form(&form, || "idem-1".into()).unwrap();
        assert_eq!(e.identifier, "idem-1");
        let mapping = Mapping {
            event_types: [("api_call".to_owned(), "proxy.request".to_owned())].into(),
            ..Mapping::default()
        };
        let ce = stripe_event(&mapping, &e).unwrap();
        assert_eq!(ce["type"], "proxy.request");
        assert_eq!(ce["subject"], "cus_1");
        assert_eq!(ce["source"], STRIPE_SOURCE);
        assert_eq!(ce["data"]["value"], "25");
        assert_eq!(ce["time"], "2023-11-14T22:13:20Z");
        let no_ts = stripe_form(&form[..3], || "x".into()).unwrap();
        assert!(
            stripe_event(&mapping, &no_ts)
                .unwrap()
                .get("time")
                .is_none()
        );
    }

    #[test]
    fn stripe_errors_are_typed() {
        let bad = pairs(&[("event_name", "a"), ("payload[value]", "1")]);
        let e = stripe_form(&bad, || "x".into()).unwrap();
        let err = stripe_event(&Mapping::default(), &e).unwrap_err();
        assert_eq!(err.field(), Some("payload[stripe_customer_id]"));
        let unknown = pairs(&[("event_name", "a"), ("colour", "red")]);
        assert_eq!(
            stripe_form(&unknown, || "x".into()).unwrap_err().field(),
            Some("colour")
        );
        let ts = pairs(&[("event_name", "a"), ("timestamp", "yesterday")]);
        assert_eq!(
            stripe_form(&ts, || "x".into()).unwrap_err().field(),
            Some("timestamp")
        );
        assert_eq!(
            stripe_form(&pairs(&[("payload[v]", "1")]), || "x".into())
                .unwrap_err()
                .code(),
            "missing_field"
        );
    }

    #[test]
    fn openmeter_maps_only_the_type() {
        let mapping = Mapping {
            event_types: [("request".to_owned(), "proxy.request".to_owned())].into(),
            ..Mapping::default()
        };
        let e = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "request", "subject": "c"});
        let out = openmeter_event(&mapping, e.clone()).unwrap();
        assert_eq!(out["type"], "proxy.request");
        assert_eq!(out["id"], e["id"]);
    }

    #[test]
    fn body_spans_cover_each_event() {
        let events = vec![(0, json!({"a": 1})), (3, json!({"b": "x"}))];
        let (body, spans) = into_body(&events);
        let parsed: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(&body[spans[1].1.clone()], r#"{"b":"x"}"#);
        assert_eq!(spans[1].0, 3);
    }

    #[test]
    fn mapping_validation() {
        let bad = Mapping {
            event_types: [("a".to_owned(), String::new())].into(),
            ..Mapping::default()
        };
        assert!(bad.validate().is_err());
        assert!(Mapping::default().validate().is_ok());
    }
}
