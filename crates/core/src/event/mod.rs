//! event: one CloudEvents 1.0 event, parsed and validated once at the edge.
//!
//! Owns: the JSON form of CloudEvents 1.0 (structured mode), the required attributes
//! (`specversion` = "1.0", `id`, `source`, `type`) and Tollgate's own requirement that `subject`
//! names the customer; the acceptance window check. Does not own: identity and duplicate
//! detection ([`crate::dedup`]), what an event is worth ([`crate::meter`]).
//!
//! Invariants: a parsed [`Event`] has every required attribute non-empty and within its named
//! limit, a `time` (the sender's, or the receive time when absent), and extension attribute
//! names that follow the CloudEvents naming rule (`[a-z0-9]{1,20}`).

pub mod batch;
mod borrowed;
mod error;
mod scan;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer as _, MapAccess, Visitor};
use serde_json::Value;

pub use self::borrowed::{EventRef, JsonRef};
pub use self::error::EventError;
use crate::limits::{
    EVENT_BYTES_MAX, EVENT_FUTURE_MS_MAX, EVENT_ID_BYTES_MAX, EVENT_SOURCE_BYTES_MAX,
    EVENT_SUBJECT_BYTES_MAX, EVENT_TYPE_BYTES_MAX,
};
use crate::time::UnixMs;

/// Longest extension attribute name allowed by CloudEvents 1.0.
const EXTENSION_NAME_BYTES_MAX: usize = 20;

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// The `id` attribute: unique per `source`.
    EventId
);
string_newtype!(
    /// The `source` attribute: who produced the event (a URI reference).
    EventSource
);
string_newtype!(
    /// The `type` attribute, e.g. `proxy.request`.
    EventType
);
string_newtype!(
    /// The `subject` attribute: the customer key the usage belongs to.
    Subject
);

impl Subject {
    /// A subject from text already known to be valid (stored events, query parameters that
    /// were length-checked).
    pub fn parse(text: &str) -> Result<Self, EventError> {
        check_len("subject", text, EVENT_SUBJECT_BYTES_MAX)?;
        Ok(Subject(text.to_owned()))
    }
}

/// One validated event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `id`.
    pub id: EventId,
    /// `source`.
    pub source: EventSource,
    /// `type`.
    pub event_type: EventType,
    /// `subject`: the customer key.
    pub subject: Subject,
    /// `time` as sent, or the receive time when the sender left it out.
    pub time: UnixMs,
    /// The `time` text as sent (None when absent); part of the payload fingerprint.
    pub time_text: Option<String>,
    /// `datacontenttype`, when given.
    pub datacontenttype: Option<String>,
    /// `data` (JSON `null` when absent).
    pub data: Value,
    /// Extension attributes and `dataschema` / `data_base64`, sorted by name.
    pub extensions: Vec<(String, Value)>,
}

impl Event {
    /// Parses one event from its JSON text. `received` stands in for a missing `time`.
    pub fn parse(raw: &str, received: UnixMs) -> Result<Event, EventError> {
        EventRef::parse(raw, received).map(|e| e.to_event())
    }
}

impl Attributes for Event {
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn source(&self) -> &str {
        self.source.as_str()
    }
    fn event_type(&self) -> &str {
        self.event_type.as_str()
    }
    fn subject(&self) -> &str {
        self.subject.as_str()
    }
    fn time(&self) -> UnixMs {
        self.time
    }
    fn time_text(&self) -> Option<&str> {
        self.time_text.as_deref()
    }
    fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }
    fn data(&self) -> AttributeRef<'_> {
        AttributeRef::Json(&self.data)
    }
    fn extension(&self, name: &str) -> Option<AttributeRef<'_>> {
        self.extensions
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .and_then(|i| self.extensions.get(i))
            .map(|(_, v)| AttributeRef::Json(v))
    }
    fn extensions(&self) -> impl Iterator<Item = (&str, AttributeRef<'_>)> {
        self.extensions
            .iter()
            .map(|(k, v)| (k.as_str(), AttributeRef::Json(v)))
    }
}

/// Read access to an event's attributes, owned ([`Event`]) or borrowed from its text
/// ([`EventRef`]): what identities, fingerprints, meters and the session gauge read.
pub trait Attributes {
    /// `id`.
    fn id(&self) -> &str;
    /// `source`.
    fn source(&self) -> &str;
    /// `type`.
    fn event_type(&self) -> &str;
    /// `subject`.
    fn subject(&self) -> &str;
    /// `time` as sent, or the receive time.
    fn time(&self) -> UnixMs;
    /// The `time` text as sent.
    fn time_text(&self) -> Option<&str>;
    /// `datacontenttype`.
    fn datacontenttype(&self) -> Option<&str>;
    /// `data`.
    fn data(&self) -> AttributeRef<'_>;
    /// One extension attribute by name.
    fn extension(&self, name: &str) -> Option<AttributeRef<'_>>;
    /// Every extension attribute, sorted by name.
    fn extensions(&self) -> impl Iterator<Item = (&str, AttributeRef<'_>)>;

    /// The value at an attribute by its CloudEvents name (`id`, `source`, `type`, `subject`,
    /// `time`, `datacontenttype`, `data`, extensions).
    fn attribute(&self, name: &str) -> Option<AttributeRef<'_>> {
        self.get(&AttributeName::parse(name))
    }

    /// The value at an attribute named in advance (the fast path of meters).
    fn get(&self, name: &AttributeName) -> Option<AttributeRef<'_>> {
        match name {
            AttributeName::Id => Some(AttributeRef::Str(self.id())),
            AttributeName::Source => Some(AttributeRef::Str(self.source())),
            AttributeName::Type => Some(AttributeRef::Str(self.event_type())),
            AttributeName::Subject => Some(AttributeRef::Str(self.subject())),
            AttributeName::Specversion => Some(AttributeRef::Str("1.0")),
            AttributeName::Time => self.time_text().map(AttributeRef::Str),
            AttributeName::Datacontenttype => self.datacontenttype().map(AttributeRef::Str),
            AttributeName::Data => Some(self.data()),
            AttributeName::Extension(other) => self.extension(other),
        }
    }
}

/// An attribute name resolved once, so reading it per event needs no string comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeName {
    /// `id`.
    Id,
    /// `source`.
    Source,
    /// `type`.
    Type,
    /// `subject`.
    Subject,
    /// `specversion`.
    Specversion,
    /// `time` (as sent).
    Time,
    /// `datacontenttype`.
    Datacontenttype,
    /// `data`.
    Data,
    /// Any other attribute (an extension).
    Extension(String),
}

impl AttributeName {
    /// Resolves a CloudEvents attribute name.
    pub fn parse(name: &str) -> AttributeName {
        match name {
            "id" => AttributeName::Id,
            "source" => AttributeName::Source,
            "type" => AttributeName::Type,
            "subject" => AttributeName::Subject,
            "specversion" => AttributeName::Specversion,
            "time" => AttributeName::Time,
            "datacontenttype" => AttributeName::Datacontenttype,
            "data" => AttributeName::Data,
            other => AttributeName::Extension(other.to_owned()),
        }
    }
}

/// A borrowed attribute value: either plain text or JSON.
#[derive(Clone, Copy, Debug)]
pub enum AttributeRef<'a> {
    /// A string attribute.
    Str(&'a str),
    /// A JSON value (data, extensions) of an owned [`Event`].
    Json(&'a Value),
    /// A JSON value (data, extensions) of an [`EventRef`], borrowed from the event's text.
    Borrowed(&'a JsonRef<'a>),
}

/// What an attribute value is, whichever form it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueView<'a> {
    /// JSON `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A JSON number, its text as written.
    Number(&'a str),
    /// A string attribute or a JSON string.
    String(&'a str),
    /// A JSON object or array.
    Composite,
}

impl<'a> AttributeRef<'a> {
    /// The value's kind and, for a scalar, its text.
    pub fn view(self) -> ValueView<'a> {
        match self {
            AttributeRef::Str(s) => ValueView::String(s),
            AttributeRef::Json(v) => match v {
                Value::Null => ValueView::Null,
                Value::Bool(b) => ValueView::Bool(*b),
                Value::Number(n) => ValueView::Number(n.as_str()),
                Value::String(s) => ValueView::String(s),
                Value::Array(_) | Value::Object(_) => ValueView::Composite,
            },
            AttributeRef::Borrowed(v) => match v {
                JsonRef::Null => ValueView::Null,
                JsonRef::Bool(b) => ValueView::Bool(*b),
                JsonRef::Number(n) => ValueView::Number(n.as_ref()),
                JsonRef::String(s) => ValueView::String(s),
                JsonRef::Array(_) | JsonRef::Object(_) => ValueView::Composite,
            },
        }
    }

    /// The value as an owned `serde_json::Value`.
    pub fn to_value(self) -> Value {
        match self {
            AttributeRef::Str(s) => Value::String(s.to_owned()),
            AttributeRef::Json(v) => v.clone(),
            AttributeRef::Borrowed(v) => v.to_value(),
        }
    }

    /// The member `key` of an object value.
    pub fn member(self, key: &str) -> Option<AttributeRef<'a>> {
        match self {
            AttributeRef::Json(Value::Object(map)) => map.get(key).map(AttributeRef::Json),
            AttributeRef::Borrowed(v) => v.get(key).map(AttributeRef::Borrowed),
            _ => None,
        }
    }

    /// Item `index` of an array value.
    pub fn item(self, index: usize) -> Option<AttributeRef<'a>> {
        match self {
            AttributeRef::Json(Value::Array(items)) => items.get(index).map(AttributeRef::Json),
            AttributeRef::Borrowed(JsonRef::Array(items)) => {
                items.get(index).map(AttributeRef::Borrowed)
            }
            _ => None,
        }
    }
}

/// Checks an event's time against the acceptance window around `now`.
///
/// The acceptance window is also the dedup window: an event older than it is rejected, so
/// no retry older than the window can ever be counted twice.
pub fn check_window(time: UnixMs, now: UnixMs, window_ms: i64) -> Result<(), EventError> {
    if time.0 < now.0.saturating_sub(window_ms) {
        return Err(EventError::TooOld { time, window_ms });
    }
    if time.0 > now.0.saturating_add(EVENT_FUTURE_MS_MAX) {
        return Err(EventError::InFuture { time });
    }
    Ok(())
}

fn check_len(name: &'static str, text: &str, max: usize) -> Result<(), EventError> {
    if text.is_empty() {
        return Err(EventError::EmptyAttribute { name });
    }
    if text.len() > max {
        return Err(EventError::AttributeTooLong { name, max });
    }
    Ok(())
}

/// Parses an event's top-level object into its attributes, before validation.
fn parse_wire(raw: &str) -> Result<Wire<'_>, EventError> {
    if raw.len() > EVENT_BYTES_MAX {
        return Err(EventError::TooLarge { bytes: raw.len() });
    }
    match scan::scan(raw) {
        Some(wire) => Ok(wire),
        None => parse_wire_general(raw),
    }
}

/// [`parse_wire`] of any text, through serde_json: every event the scanner declines, and so
/// every error.
fn parse_wire_general(raw: &str) -> Result<Wire<'_>, EventError> {
    if !raw.trim_start().starts_with('{') {
        return Err(EventError::Malformed {
            message: "expected a JSON object".into(),
        });
    }
    let depth = borrowed::Depth::default();
    let mut de = serde_json::Deserializer::from_str(raw);
    let wire = de
        .deserialize_map(WireVisitor { depth: &depth })
        .map_err(|e| {
            if depth.exceeded() {
                EventError::Malformed {
                    message: format!("{e}: values nest deeper than serde_json's 127 levels"),
                }
            } else {
                EventError::from_json(e)
            }
        })?;
    de.end().map_err(EventError::from_json)?;
    Ok(wire)
}

/// The attributes as they came off the wire, before validation.
#[derive(Debug, Default, PartialEq)]
struct Wire<'a> {
    specversion: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    source: Option<Cow<'a, str>>,
    event_type: Option<Cow<'a, str>>,
    subject: Option<Cow<'a, str>>,
    time: Option<Cow<'a, str>>,
    datacontenttype: Option<Cow<'a, str>>,
    data: Option<JsonRef<'a>>,
    extensions: Vec<(Cow<'a, str>, JsonRef<'a>)>,
}

impl<'a> Wire<'a> {
    /// The slot of the core string attribute `key` (`None` for `data` and every other name).
    fn string_slot(&mut self, key: &str) -> Option<&mut Option<Cow<'a, str>>> {
        Some(match key {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.event_type,
            "subject" => &mut self.subject,
            "time" => &mut self.time,
            "datacontenttype" => &mut self.datacontenttype,
            _ => return None,
        })
    }

    fn validate(self, received: UnixMs) -> Result<EventRef<'a>, EventError> {
        let specversion = self.specversion.ok_or(EventError::MissingAttribute {
            name: "specversion",
        })?;
        if specversion != "1.0" {
            return Err(EventError::UnsupportedSpecversion {
                found: truncate(&specversion),
            });
        }
        let id = self.id.ok_or(EventError::MissingAttribute { name: "id" })?;
        check_len("id", &id, EVENT_ID_BYTES_MAX)?;
        let source = self
            .source
            .ok_or(EventError::MissingAttribute { name: "source" })?;
        check_len("source", &source, EVENT_SOURCE_BYTES_MAX)?;
        let event_type = self
            .event_type
            .ok_or(EventError::MissingAttribute { name: "type" })?;
        check_len("type", &event_type, EVENT_TYPE_BYTES_MAX)?;
        let subject = self
            .subject
            .ok_or(EventError::MissingAttribute { name: "subject" })?;
        check_len("subject", &subject, EVENT_SUBJECT_BYTES_MAX)?;
        let time = match &self.time {
            None => received,
            Some(text) => match UnixMs::parse_common(text) {
                Some(time) => time,
                None => {
                    let ts: jiff::Timestamp =
                        text.parse().map_err(|_| EventError::InvalidTime {
                            found: truncate(text),
                        })?;
                    UnixMs::from_timestamp(ts)
                }
            },
        };
        let mut extensions = self.extensions;
        extensions.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(EventRef {
            id,
            source,
            event_type,
            subject,
            time,
            time_text: self.time,
            datacontenttype: self.datacontenttype,
            data: self.data.unwrap_or(JsonRef::Null),
            extensions,
        })
    }
}

/// Shortens text quoted back in an error message.
fn truncate(text: &str) -> String {
    const QUOTE_CHARS_MAX: usize = 64;
    text.chars().take(QUOTE_CHARS_MAX).collect()
}

/// Whether `name` may name an attribute outside the core ones: the CloudEvents naming rule
/// (`[a-z0-9]{1,20}`), or `data_base64` (`dataschema` and `data_base64` are spec attributes
/// kept verbatim, like extensions).
fn is_extension_name(name: &str) -> bool {
    let valid = !name.is_empty()
        && name.len() <= EXTENSION_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    valid || name == "data_base64"
}

/// Reads the top-level object in one pass without buffering (serde's `flatten` would).
struct WireVisitor<'d> {
    depth: &'d borrowed::Depth,
}

impl<'de> Visitor<'de> for WireVisitor<'_> {
    type Value = Wire<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvents JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire<'de>, A::Error> {
        let mut wire = Wire::default();
        while let Some(key) = borrowed::next_key(&mut map)? {
            let Some(slot) = wire.string_slot(&key) else {
                match key.as_ref() {
                    "data" => {
                        if wire.data.is_some() {
                            return Err(de::Error::custom("duplicate attribute `data`"));
                        }
                        wire.data = Some(borrowed::next_json(&mut map, self.depth)?);
                        continue;
                    }
                    name => {
                        if !is_extension_name(name) {
                            return Err(de::Error::custom(format!(
                                "attribute name `{}` is not a valid CloudEvents name ([a-z0-9]{{1,20}})",
                                truncate(name)
                            )));
                        }
                        if wire.extensions.iter().any(|(k, _)| *k == key) {
                            return Err(de::Error::custom(format!("duplicate attribute `{name}`")));
                        }
                        let value = borrowed::next_json(&mut map, self.depth)?;
                        wire.extensions.push((key, value));
                        continue;
                    }
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format!("duplicate attribute `{key}`")));
            }
            // Any JSON value is read through, so that a syntax error inside it stays a syntax
            // error (malformed_event) instead of being reported as a wrongly typed attribute.
            match map.next_value_seed(borrowed::StringAttribute)? {
                Ok(text) => *slot = Some(text),
                Err(kind) => {
                    return Err(de::Error::custom(format!(
                        "attribute `{key}` must be a string, not {kind}"
                    )));
                }
            }
        }
        Ok(wire)
    }
}
