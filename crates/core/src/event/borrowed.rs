//! The borrowed form of an event: attributes and `data` read straight out of the event's JSON
//! text. This is the parse of the ingest path, where building a `serde_json::Value` (a heap
//! allocation per key, string and number, freed again a moment later) cost more than the rest
//! of the parse; [`Event`] is made from it where an owned event is needed.
//!
//! Every attribute is first captured as a `serde_json` raw value (validated, borrowed, no
//! allocation) and then classified by its first byte, so the grammar stays serde_json's own.
//! The members of an object or array attribute are found in its already validated text by a
//! scan that only tracks strings and brackets ([`Validated`]), then classified the same way.
//! Strings without escapes and numbers without an exponent stay borrowed from the text; a
//! number's text is the one `serde_json::Number` keeps with `arbitrary_precision`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{
    AttributeRef, Attributes, Event, EventError, EventId, EventSource, EventType, Subject,
};
use crate::time::UnixMs;

/// A JSON value borrowed from an event's text.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonRef<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, its text as `serde_json::Number` keeps it with `arbitrary_precision`: as
    /// written, except that an exponent is spelled `e` with an explicit sign (`1E5` → `1e+5`).
    Number(Cow<'a, str>),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<JsonRef<'a>>),
    /// An object's members sorted by key; a repeated key keeps its last value, as
    /// `serde_json::Value` does.
    Object(Vec<(Cow<'a, str>, JsonRef<'a>)>),
}

impl<'a> JsonRef<'a> {
    /// Reads one JSON value from its text (already known to be one valid JSON value, as a
    /// captured raw value is). `level` is the nesting level the value would open if it is an
    /// object or array (the event's own object is level 1).
    fn from_raw(
        raw: &'a str,
        level: usize,
        depth: &Depth,
    ) -> Result<JsonRef<'a>, serde_json::Error> {
        Ok(match raw.as_bytes().first() {
            Some(b'"') => JsonRef::String(string_of(raw)?),
            Some(b'{') if level <= BORROWED_LEVELS_MAX => read_object(raw, level, depth)?,
            Some(b'[') if level <= BORROWED_LEVELS_MAX => read_array(raw, level, depth)?,
            // Deeper containers are rare: one owned parse of the whole subtree keeps the work
            // linear in the text (a borrowed read per level would scan it again per level).
            Some(b'{' | b'[') => {
                let value = serde_json::from_str::<Value>(raw).ok();
                match value.filter(|v| level - 1 + levels_of(v) <= NESTING_LEVELS_MAX) {
                    Some(v) => JsonRef::from_value(&v),
                    None => {
                        depth.exceeded.set(true);
                        return Err(de::Error::custom("recursion limit exceeded"));
                    }
                }
            }
            Some(b't') => JsonRef::Bool(true),
            Some(b'f') => JsonRef::Bool(false),
            Some(b'n') => JsonRef::Null,
            _ => JsonRef::Number(number_text(raw)),
        })
    }

    /// The same JSON as an owned `serde_json::Value` holds it (its objects are already sorted
    /// by key, a repeated key kept last).
    fn from_value(value: &Value) -> JsonRef<'static> {
        match value {
            Value::Null => JsonRef::Null,
            Value::Bool(b) => JsonRef::Bool(*b),
            Value::Number(n) => JsonRef::Number(Cow::Owned(n.as_str().to_owned())),
            Value::String(s) => JsonRef::String(Cow::Owned(s.clone())),
            Value::Array(items) => JsonRef::Array(items.iter().map(JsonRef::from_value).collect()),
            Value::Object(map) => JsonRef::Object(
                map.iter()
                    .map(|(k, v)| (Cow::Owned(k.clone()), JsonRef::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&JsonRef<'a>> {
        let JsonRef::Object(members) = self else {
            return None;
        };
        if members.len() <= LINEAR_LOOKUP_MEMBERS_MAX {
            // Keys of different lengths differ without a byte compared, where the binary
            // search's ordering compares call into memcmp for every probe.
            return members.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        }
        members
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .and_then(|i| members.get(i))
            .map(|(_, v)| v)
    }

    /// The owned `serde_json::Value` of the same JSON.
    pub fn to_value(&self) -> Value {
        match self {
            JsonRef::Null => Value::Null,
            JsonRef::Bool(b) => Value::Bool(*b),
            // The text was validated as a JSON number when it was captured.
            JsonRef::Number(text) => text
                .parse::<serde_json::Number>()
                .map_or(Value::Null, Value::Number),
            JsonRef::String(s) => Value::String(s.clone().into_owned()),
            JsonRef::Array(items) => Value::Array(items.iter().map(JsonRef::to_value).collect()),
            JsonRef::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone().into_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// A short name of the kind of value, for error messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            JsonRef::Null => "null",
            JsonRef::Bool(_) => "a boolean",
            JsonRef::Number(_) => NUMBER_KIND,
            JsonRef::String(_) => "a string",
            JsonRef::Array(_) => "an array",
            JsonRef::Object(_) => "an object",
        }
    }
}

/// A number's text as serde_json's `arbitrary_precision` scanner writes it. Stored
/// fingerprints and group keys were made from that text, so the borrowed parse must give the
/// same bytes.
fn number_text(raw: &str) -> Cow<'_, str> {
    let Some(at) = raw.find(['e', 'E']) else {
        return Cow::Borrowed(raw);
    };
    let (mantissa, exponent) = raw.split_at(at);
    let digits = exponent.get(1..).unwrap_or_default();
    let sign = if digits.starts_with(['+', '-']) {
        ""
    } else {
        "+"
    };
    Cow::Owned(format!("{mantissa}e{sign}{digits}"))
}

/// Most nesting levels of an event, its own object included: serde_json's recursion limit,
/// which the parse into `serde_json::Value` enforced before the borrowed parse existed.
const NESTING_LEVELS_MAX: usize = 127;

/// Levels read borrowed: the event object, its attribute values and their members. Below
/// that a subtree is parsed once into a `Value`.
const BORROWED_LEVELS_MAX: usize = 2;

/// Nesting levels of a value: 0 for a scalar, 1 for a flat object or array.
fn levels_of(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(levels_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(levels_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// Set when a value nests deeper than [`NESTING_LEVELS_MAX`], so that the parse reports a
/// malformed event (as serde_json's recursion limit did) rather than an invalid attribute.
#[derive(Default)]
pub(super) struct Depth {
    exceeded: std::cell::Cell<bool>,
}

impl Depth {
    pub(super) fn exceeded(&self) -> bool {
        self.exceeded.get()
    }
}

/// Most members of an object whose member lookup walks them in order rather than searching
/// the sorted keys (each key appears once, so the first match is the only one).
const LINEAR_LOOKUP_MEMBERS_MAX: usize = 8;

/// Members an object's vector is made for before its first member is read.
pub(super) const MEMBERS_EXPECTED: usize = 10;

/// A string's value from its text (quotes included): borrowed unless it has escapes.
fn string_of(raw: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    let escaped = memchr::memchr(b'\\', raw.as_bytes()).is_some();
    unquote(raw, escaped)
}

/// A string's value from its text (quotes included), knowing whether it has escapes.
fn unquote(raw: &str, escaped: bool) -> Result<Cow<'_, str>, serde_json::Error> {
    if escaped {
        return Ok(Cow::Owned(serde_json::from_str(raw)?));
    }
    Ok(Cow::Borrowed(
        raw.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_default(),
    ))
}

/// An object's members, from its text. The text was validated as JSON when it was captured,
/// so the members are found by [`Validated`], which only tracks strings and brackets; each
/// value is then classified as [`JsonRef::from_raw`] does. (A second serde_json pass over the
/// same text cost about as much as the first.)
fn read_object<'a>(
    raw: &'a str,
    level: usize,
    depth: &Depth,
) -> Result<JsonRef<'a>, serde_json::Error> {
    let mut members = Vec::with_capacity(MEMBERS_EXPECTED);
    let mut text = Validated::inside(raw);
    while text.next_is(b'"') {
        let (key, escaped) = text.string();
        let key = unquote(key, escaped)?;
        text.skip(b':');
        let value = text.json(level + 1, depth)?;
        members.push((key, value));
        text.skip(b',');
    }
    Ok(JsonRef::Object(sorted_members(members)))
}

/// An array's items, from its text (validated; see [`read_object`]).
fn read_array<'a>(
    raw: &'a str,
    level: usize,
    depth: &Depth,
) -> Result<JsonRef<'a>, serde_json::Error> {
    let mut items = Vec::new();
    let mut text = Validated::inside(raw);
    while !text.next_is(b']') {
        items.push(text.json(level + 1, depth)?);
        text.skip(b',');
    }
    Ok(JsonRef::Array(items))
}

/// A cursor over the inside of an object or array whose text is known to be valid JSON.
/// Valid text needs no error handling: every step only looks for the byte that must come.
struct Validated<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Validated<'a> {
    /// Just after the opening bracket of `raw`.
    fn inside(raw: &'a str) -> Validated<'a> {
        Validated { text: raw, at: 1 }
    }

    fn byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.byte(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Whether the next byte after whitespace is `b` (the cursor stays on it).
    fn next_is(&mut self, b: u8) -> bool {
        self.skip_space();
        self.byte() == Some(b)
    }

    /// Moves past whitespace and `b` when it comes next (a `:` or a `,`).
    fn skip(&mut self, b: u8) {
        if self.next_is(b) {
            self.at += 1;
        }
    }

    /// The text from `start` to the cursor.
    fn since(&self, start: usize) -> &'a str {
        self.text.get(start..self.at).unwrap_or_default()
    }

    /// Moves past the value after whitespace and reads it as [`JsonRef::from_raw`] would,
    /// without scanning a string a second time for escapes.
    fn json(&mut self, level: usize, depth: &Depth) -> Result<JsonRef<'a>, serde_json::Error> {
        self.skip_space();
        if self.byte() == Some(b'"') {
            let (raw, escaped) = self.string();
            return Ok(JsonRef::String(unquote(raw, escaped)?));
        }
        JsonRef::from_raw(self.value(), level, depth)
    }

    /// Moves past the string at the cursor (on its opening quote); returns its text with
    /// the quotes, and whether it has escapes.
    fn string(&mut self) -> (&'a str, bool) {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut at = start + 1;
        let mut escaped = false;
        loop {
            let rest = bytes.get(at..).unwrap_or_default();
            match memchr::memchr2(b'"', b'\\', rest) {
                // An escape is two bytes at least (`\"` among them); `\uXXXX` goes on as text.
                Some(k) if rest.get(k) == Some(&b'\\') => {
                    escaped = true;
                    at += k + 2;
                }
                Some(k) => {
                    at += k + 1;
                    break;
                }
                None => {
                    at = bytes.len();
                    break;
                }
            }
        }
        self.at = at;
        (self.since(start), escaped)
    }

    /// Moves past the value after whitespace; returns its text.
    fn value(&mut self) -> &'a str {
        self.skip_space();
        let start = self.at;
        match self.byte() {
            Some(b'"') => return self.string().0,
            Some(b'{' | b'[') => {
                let mut open = 0usize;
                while let Some(b) = self.byte() {
                    match b {
                        b'"' => {
                            self.string();
                            continue;
                        }
                        b'{' | b'[' => open += 1,
                        b'}' | b']' => {
                            open = open.saturating_sub(1);
                            if open == 0 {
                                self.at += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                while !matches!(
                    self.byte(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.at += 1;
                }
            }
        }
        self.since(start)
    }
}

/// The order of two keys, as `str`'s own: their first bytes decide most pairs of the keys
/// of an event without a call into `memcmp`.
pub(super) fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.as_bytes()
        .first()
        .cmp(&b.as_bytes().first())
        .then_with(|| a.cmp(b))
}

/// Members sorted by key, the last of a repeated key kept.
pub(super) fn sorted_members<'a>(
    mut members: Vec<(Cow<'a, str>, JsonRef<'a>)>,
) -> Vec<(Cow<'a, str>, JsonRef<'a>)> {
    if members.windows(2).all(|w| matches!(w, [a, b] if a.0 < b.0)) {
        return members;
    }
    // A stable sort keeps repeats in their order; reversed, the last one comes first and
    // `dedup_by` keeps it.
    members.sort_by(|a, b| key_order(&a.0, &b.0));
    if !members
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.0 == b.0))
    {
        return members;
    }
    members.reverse();
    members.dedup_by(|later, earlier| later.0 == earlier.0);
    members.reverse();
    members
}

/// A string key, borrowed from the text when it has no escapes (serde's own `Cow<str>`
/// always copies).
struct CowStr<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// One validated event, borrowed from its JSON text. The same invariants as [`Event`].
#[derive(Clone, Debug, PartialEq)]
pub struct EventRef<'a> {
    /// `id`.
    pub id: Cow<'a, str>,
    /// `source`.
    pub source: Cow<'a, str>,
    /// `type`.
    pub event_type: Cow<'a, str>,
    /// `subject`: the customer key.
    pub subject: Cow<'a, str>,
    /// `time` as sent, or the receive time when the sender left it out.
    pub time: UnixMs,
    /// The `time` text as sent (None when absent).
    pub time_text: Option<Cow<'a, str>>,
    /// `datacontenttype`, when given.
    pub datacontenttype: Option<Cow<'a, str>>,
    /// `data` (`null` when absent).
    pub data: JsonRef<'a>,
    /// Extension attributes and `dataschema` / `data_base64`, sorted by name.
    pub extensions: Vec<(Cow<'a, str>, JsonRef<'a>)>,
}

impl<'a> EventRef<'a> {
    /// Parses one event from its JSON text. `received` stands in for a missing `time`.
    pub fn parse(raw: &'a str, received: UnixMs) -> Result<EventRef<'a>, EventError> {
        super::parse_wire(raw)?.validate(received)
    }

    /// The owned event.
    pub fn to_event(&self) -> Event {
        let owned = |c: &Cow<'a, str>| c.clone().into_owned();
        Event {
            id: EventId(owned(&self.id)),
            source: EventSource(owned(&self.source)),
            event_type: EventType(owned(&self.event_type)),
            subject: Subject(owned(&self.subject)),
            time: self.time,
            time_text: self.time_text.as_ref().map(owned),
            datacontenttype: self.datacontenttype.as_ref().map(owned),
            data: self.data.to_value(),
            extensions: self
                .extensions
                .iter()
                .map(|(k, v)| (owned(k), v.to_value()))
                .collect(),
        }
    }
}

impl Attributes for EventRef<'_> {
    fn id(&self) -> &str {
        &self.id
    }
    fn source(&self) -> &str {
        &self.source
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn subject(&self) -> &str {
        &self.subject
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
        AttributeRef::Borrowed(&self.data)
    }
    fn extension(&self, name: &str) -> Option<AttributeRef<'_>> {
        self.extensions
            .binary_search_by(|(k, _)| k.as_ref().cmp(name))
            .ok()
            .and_then(|i| self.extensions.get(i))
            .map(|(_, v)| AttributeRef::Borrowed(v))
    }
    fn extensions(&self) -> impl Iterator<Item = (&str, AttributeRef<'_>)> {
        self.extensions
            .iter()
            .map(|(k, v)| (k.as_ref(), AttributeRef::Borrowed(v)))
    }
}

/// Reads any attribute value: captured raw (so a syntax error inside it stays a syntax error),
/// then classified.
pub(super) fn next_json<'de, A: MapAccess<'de>>(
    map: &mut A,
    depth: &Depth,
) -> Result<JsonRef<'de>, A::Error> {
    let raw: &'de RawValue = map.next_value()?;
    // Attribute values sit at level 2, inside the event's object.
    JsonRef::from_raw(raw.get(), 2, depth).map_err(de::Error::custom)
}

/// Reads a map key, borrowed when it has no escapes.
pub(super) fn next_key<'de, A: MapAccess<'de>>(
    map: &mut A,
) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_key::<CowStr<'de>>()?.map(|k| k.0))
}

/// Reads a string attribute's value in one pass: the string itself (borrowed when it has no
/// escapes), or the kind of the value that stands where a string belongs. A value of another
/// kind is still read through, as serde_json's `Value` would read it (its syntax and its
/// nesting limit), so that a broken value stays `malformed_event` rather than a wrongly typed
/// attribute.
pub(super) struct StringAttribute;

/// The key under which serde_json (with `arbitrary_precision`) hands a number to a visitor
/// that asked for any value.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> de::DeserializeSeed<'de> for StringAttribute {
    type Value = Result<Cow<'de, str>, &'static str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(StringAttribute)
    }
}

impl<'de> Visitor<'de> for StringAttribute {
    type Value = Result<Cow<'de, str>, &'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Owned(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(JsonRef::Bool(true).kind()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(JsonRef::Null.kind()))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(NUMBER_KIND))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(NUMBER_KIND))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(NUMBER_KIND))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(Err(JsonRef::Array(Vec::new()).kind()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kind = JsonRef::Object(Vec::new()).kind();
        let mut first = true;
        while let Some(CowStr(key)) = map.next_key()? {
            if first && key == NUMBER_TOKEN {
                kind = NUMBER_KIND;
            }
            first = false;
            map.next_value::<Value>()?;
        }
        Ok(Err(kind))
    }
}

/// [`JsonRef::kind`] of a number.
const NUMBER_KIND: &str = "a number";
