//! Attribution: giving an event that carries a client address but no `subject` the customer
//! that held the address at the event's time.
//!
//! Owns: the per-source configuration ([`AttributionSources`]: which CloudEvents `source`
//! reads its client address from which `data` field), and the rewrite of an event's JSON text
//! ([`attribute_event`]) or of a whole body ([`attribute_body`]).
//!
//! Does not own: where the configuration is stored, or the ingest path that runs after.
//!
//! Invariants:
//! - An event that already has a `subject`, or whose `source` is not configured, is left
//!   byte-for-byte unchanged.
//! - An attributed event gets `subject` = the owner and the extension [`ATTRIBUTION_EXTENSION`]
//!   recording the allocation and range (`alc_… 10.0.0.0/8`), so the stored raw event shows
//!   why it was attributed. An address with no owner, or a missing or unreadable address,
//!   gets the subject [`UNATTRIBUTED_SUBJECT`] and an extension saying why: such events are
//!   counted in a visible bucket, never dropped.
//! - The time used is the event's `time` (the receive time when absent), so traffic goes to
//!   whoever held the address then.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::LazyLock;

use memchr::memmem;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AllocationTable, IpMetaError, parse_ip};
use crate::limits::{ATTRIBUTION_SOURCES_MAX, EVENT_SOURCE_BYTES_MAX};
use crate::time::UnixMs;

/// The subject of events whose address no customer held.
pub const UNATTRIBUTED_SUBJECT: &str = "unattributed";
/// The extension attribute that records an attribution.
pub const ATTRIBUTION_EXTENSION: &str = "tgattribution";
/// Longest `data` field name of an attribution source (bytes).
const ADDRESS_FIELD_BYTES_MAX: usize = 128;

/// One configured source: events from `source` read the client address at `data.<field>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributionSource {
    /// The CloudEvents `source`, exactly.
    pub source: String,
    /// The `data` field holding the client address.
    pub address_field: String,
}

impl AttributionSource {
    /// Checks the lengths and that the field is a plain name.
    pub fn validate(&self) -> Result<(), IpMetaError> {
        let bad = |reason: &str| IpMetaError::InvalidSource {
            reason: reason.to_owned(),
        };
        if self.source.is_empty() || self.source.len() > EVENT_SOURCE_BYTES_MAX {
            return Err(bad("source must be 1..=1024 bytes"));
        }
        if self.address_field.is_empty()
            || self.address_field.len() > ADDRESS_FIELD_BYTES_MAX
            || !self
                .address_field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad(
                "address_field must be a field name of `data` ([A-Za-z0-9_-], 1..=128 bytes)",
            ));
        }
        Ok(())
    }
}

/// Every configured source, by `source`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributionSources {
    by_source: BTreeMap<String, String>,
}

impl AttributionSources {
    /// Builds the set, validating each entry; a later entry for the same source wins.
    pub fn build(
        sources: impl IntoIterator<Item = AttributionSource>,
    ) -> Result<Self, IpMetaError> {
        let mut by_source = BTreeMap::new();
        for s in sources {
            s.validate()?;
            by_source.insert(s.source, s.address_field);
        }
        if by_source.len() > ATTRIBUTION_SOURCES_MAX {
            return Err(IpMetaError::InvalidSource {
                reason: format!("more than {ATTRIBUTION_SOURCES_MAX} sources"),
            });
        }
        Ok(AttributionSources { by_source })
    }

    /// Whether no source is configured (the ingest path then skips attribution entirely).
    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }

    /// The address field of `source`, if configured.
    pub fn field(&self, source: &str) -> Option<&str> {
        self.by_source.get(source).map(String::as_str)
    }

    /// Every entry.
    pub fn entries(&self) -> Vec<AttributionSource> {
        self.by_source
            .iter()
            .map(|(source, field)| AttributionSource {
                source: source.clone(),
                address_field: field.clone(),
            })
            .collect()
    }
}

/// What attribution did to one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attributed {
    /// Left as it was (has a subject, source not configured, or not a readable event).
    Unchanged,
    /// Rewritten: the new JSON text and the subject it got.
    Rewritten {
        /// The event with `subject` and the attribution extension.
        text: String,
        /// The subject given (a customer, or [`UNATTRIBUTED_SUBJECT`]).
        subject: String,
    },
}

/// Attributes one event (see the module contract). `received` stands in for an absent `time`.
pub fn attribute_event(
    raw: &str,
    sources: &AttributionSources,
    table: &AllocationTable,
    received: UnixMs,
) -> Attributed {
    // Cheap filter before a full parse: an event whose source is plainly not configured.
    if quick_source(raw).is_some_and(|s| sources.field(s).is_none()) {
        return Attributed::Unchanged;
    }
    let Ok(Value::Object(mut event)) = serde_json::from_str::<Value>(raw) else {
        return Attributed::Unchanged;
    };
    if event.contains_key("subject") || event.contains_key(ATTRIBUTION_EXTENSION) {
        return Attributed::Unchanged;
    }
    let Some(field) = event
        .get("source")
        .and_then(Value::as_str)
        .and_then(|s| sources.field(s))
    else {
        return Attributed::Unchanged;
    };
    let at = match event.get("time") {
        None => received,
        Some(Value::String(t)) => match t.parse::<jiff::Timestamp>() {
            Ok(ts) => UnixMs::from_timestamp(ts),
            // The event parser rejects it with its own reason.
            Err(_) => return Attributed::Unchanged,
        },
        Some(_) => return Attributed::Unchanged,
    };
    let address = event
        .get("data")
        .and_then(|d| d.get(field))
        .and_then(Value::as_str);
    let (subject, note) = match address.map(parse_ip) {
        None => (
            UNATTRIBUTED_SUBJECT.to_owned(),
            format!("unattributed: no address at data.{field}"),
        ),
        Some(Err(_)) => (
            UNATTRIBUTED_SUBJECT.to_owned(),
            format!("unattributed: data.{field} is not an IP address"),
        ),
        Some(Ok(ip)) => match table.lookup(ip, at) {
            Some(a) => (a.customer.clone(), format!("{} {}", a.id, a.cidr)),
            None => (
                UNATTRIBUTED_SUBJECT.to_owned(),
                format!("unattributed: no owner of {ip}"),
            ),
        },
    };
    event.insert("subject".into(), Value::String(subject.clone()));
    event.insert(ATTRIBUTION_EXTENSION.into(), Value::String(note));
    match serde_json::to_string(&event) {
        Ok(text) => Attributed::Rewritten { text, subject },
        Err(_) => Attributed::Unchanged,
    }
}

/// The text of an event's `source` when it can be read without a parse: `"source"` occurs
/// exactly once in `raw`, as a key whose value is a string without escapes. Then it is the
/// event's own attribute (a nested `source` key means the event has none and is invalid
/// anyway). `None` when the text must be parsed to tell, so the caller never skips an event
/// that could be configured: one pass over the text however many sources are configured.
fn quick_source(raw: &str) -> Option<&str> {
    static KEY: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"source\""));
    let mut found = KEY.find_iter(raw.as_bytes());
    let at = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let rest = raw.get(at + KEY.needle().len()..)?.trim_start();
    let value = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let end = value.find(['"', '\\'])?;
    (value.as_bytes()[end] == b'"').then(|| &value[..end])
}

/// Event spans of a body: (the caller's index, byte range).
pub type Spans = Vec<(usize, Range<usize>)>;

/// Totals of one body's attribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttributionTally {
    /// Events given a customer.
    pub attributed: usize,
    /// Events given [`UNATTRIBUTED_SUBJECT`].
    pub unattributed: usize,
}

/// Attributes every event of a body given as spans (`(index, byte range)`, as the body
/// splitters produce). Returns `None` when nothing changed; otherwise a new body (one event
/// per line) with its spans, indexes kept, so verdicts still name the caller's positions.
pub fn attribute_body(
    text: &str,
    spans: &[(usize, Range<usize>)],
    sources: &AttributionSources,
    table: &AllocationTable,
    received: UnixMs,
) -> Option<(String, Spans, AttributionTally)> {
    if sources.is_empty() {
        return None;
    }
    let mut tally = AttributionTally::default();
    let rewritten: Vec<Attributed> = spans
        .iter()
        .map(|(_, r)| {
            let a = attribute_event(&text[r.clone()], sources, table, received);
            if let Attributed::Rewritten { subject, .. } = &a {
                if subject == UNATTRIBUTED_SUBJECT {
                    tally.unattributed += 1;
                } else {
                    tally.attributed += 1;
                }
            }
            a
        })
        .collect();
    if tally.attributed + tally.unattributed == 0 {
        return None;
    }
    let mut body = String::with_capacity(text.len() + text.len() / 4);
    let mut out_spans = Vec::with_capacity(spans.len());
    for ((index, range), a) in spans.iter().zip(rewritten) {
        let start = body.len();
        match a {
            Attributed::Unchanged => body.push_str(&text[range.clone()]),
            Attributed::Rewritten { text: t, .. } => body.push_str(&t),
        }
        out_spans.push((*index, start..body.len()));
        body.push('\n');
    }
    Some((body, out_spans, tally))
}
