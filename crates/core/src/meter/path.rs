//! The JSON path subset meters use: singular paths from the event root.
//!
//! `$.data.bytes_out`, `$.data['dest-host']`, `$.data.items[0].id`, `$.subject`. Only paths
//! that name one value (RFC 9535 "singular queries") are allowed, so a meter reads at most one
//! value per event. Written by hand because general JSONPath libraries evaluate to node lists
//! and allocate per evaluation; this runs once per event per meter on the ingest path.

use super::MeterError;
use crate::event::{AttributeName, AttributeRef, Attributes};
use crate::limits::JSON_PATH_BYTES_MAX;

/// A parsed singular path. The first segment names an event attribute (`data`, `subject`, an
/// extension...); the rest walk into its JSON value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    attribute: AttributeName,
    rest: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl JsonPath {
    /// Parses `$.a.b['c'][0]`.
    pub fn parse(text: &str) -> Result<JsonPath, MeterError> {
        let err = |reason: &str| MeterError::InvalidJsonPath {
            path: text.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if text.len() > JSON_PATH_BYTES_MAX {
            return Err(err("too long"));
        }
        let body = text
            .strip_prefix('$')
            .ok_or_else(|| err("must start with `$`"))?;
        let mut segments = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(err("a `.name` segment takes letters, digits, `_` and `-`"));
                }
                segments.push(Segment::Key(name.to_owned()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let close = after.find(']').ok_or_else(|| err("unclosed `[`"))?;
                let inner = &after[..close];
                let quoted = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                if let Some(name) = quoted {
                    if name.is_empty() || name.contains(['\'', '"', '\\']) {
                        return Err(err("bracketed names must be non-empty and unescaped"));
                    }
                    segments.push(Segment::Key(name.to_owned()));
                } else {
                    let index: usize = inner
                        .parse()
                        .map_err(|_| err("`[...]` takes a quoted name or an array index"))?;
                    segments.push(Segment::Index(index));
                }
                rest = &after[close + 1..];
            } else {
                return Err(err("expected `.name` or `[...]`"));
            }
        }
        let mut segments = segments.into_iter();
        let attribute = match segments.next() {
            Some(Segment::Key(name)) => AttributeName::parse(&name),
            Some(Segment::Index(_)) => {
                return Err(err("the event root is an object, not an array"));
            }
            None => return Err(err("must name an attribute, e.g. `$.data.bytes`")),
        };
        Ok(JsonPath {
            text: text.to_owned(),
            attribute,
            rest: segments.collect(),
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path in the event, if present.
    pub fn resolve<'e, E: Attributes + ?Sized>(&self, event: &'e E) -> Option<AttributeRef<'e>> {
        let mut value = event.get(&self.attribute)?;
        for segment in &self.rest {
            value = match segment {
                Segment::Key(k) => value.member(k)?,
                Segment::Index(i) => value.item(*i)?,
            };
        }
        Some(value)
    }
}
