//! meter: how a meter turns events into numbers.
//!
//! Owns: meter definitions ([`MeterSpec`], validated into a [`Meter`]), the JSON path subset used
//! to reach into an event ([`JsonPath`]), filters, group-by dimensions, and the reading of one
//! event by one meter ([`Meter::observe`]). Does not own: accumulation over time
//! ([`crate::usage`]) or persistence of definitions (the store).
//!
//! Invariants: a [`Meter`] has a valid slug, at most `GROUP_BY_KEYS_MAX` dimensions and
//! `METER_FILTERS_MAX` filters; `value_path` is present exactly when the aggregation needs a
//! value. Numeric values are read exactly as decimals (`rust_decimal`, 28 significant digits),
//! never through floating point.

mod error;
mod path;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::error::MeterError;
pub use self::path::JsonPath;
use crate::event::{AttributeRef, Attributes, ValueView};
use crate::limits::{
    FILTER_VALUES_MAX, GROUP_BY_KEYS_MAX, METER_EVENT_TYPES_MAX, METER_FILTERS_MAX,
    METER_SLUG_BYTES_MAX,
};

/// A meter's name in URLs: `[a-z][a-z0-9_-]*`, at most `METER_SLUG_BYTES_MAX` bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MeterSlug(String);

/// `[a-z][a-z0-9_-]*` of at most `max` bytes: the shape of every URL key (meter slugs, plan and
/// price keys).
pub(crate) fn is_slug(text: &str, max: usize) -> bool {
    let mut bytes = text.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    first_ok
        && text.len() <= max
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl MeterSlug {
    /// Validates a slug.
    pub fn parse(text: &str) -> Result<Self, MeterError> {
        if !is_slug(text, METER_SLUG_BYTES_MAX) {
            return Err(MeterError::InvalidSlug {
                slug: text.chars().take(80).collect(),
            });
        }
        Ok(MeterSlug(text.to_owned()))
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MeterSlug {
    type Error = MeterError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        MeterSlug::parse(&value)
    }
}

impl From<MeterSlug> for String {
    fn from(value: MeterSlug) -> Self {
        value.0
    }
}

impl fmt::Display for MeterSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the values of matching events are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Sum of the value.
    Sum,
    /// Number of matching events (no value).
    Count,
    /// Number of distinct values.
    UniqueCount,
    /// Largest value.
    Max,
    /// Smallest value.
    Min,
    /// Value of the event with the latest `time` (ties: the one ingested last).
    Latest,
}

impl Aggregation {
    /// Whether this aggregation reads a value from the event.
    pub fn needs_value(self) -> bool {
        !matches!(self, Aggregation::Count)
    }

    /// Whether the value must be a number.
    pub fn needs_number(self) -> bool {
        matches!(
            self,
            Aggregation::Sum | Aggregation::Max | Aggregation::Min | Aggregation::Latest
        )
    }

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::UniqueCount => "unique_count",
            Aggregation::Max => "max",
            Aggregation::Min => "min",
            Aggregation::Latest => "latest",
        }
    }
}

/// Which event types a meter reads: one, several, or all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum EventTypes {
    /// Every event type.
    #[default]
    All,
    /// Exactly this type.
    One(String),
    /// Any of these types.
    Many(Vec<String>),
}

/// A condition on the value at a path. All given operators must hold.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Equal to this JSON value (numbers compare by value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Value>,
    /// Not equal to this JSON value (a missing value is not equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ne: Option<Value>,
    /// Equal to one of these.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub in_: Option<Vec<Value>>,
    /// Equal to none of these (a missing value qualifies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nin: Option<Vec<Value>>,
    /// Numerically greater than.
    #[serde(
        default,
        deserialize_with = "bound",
        skip_serializing_if = "Option::is_none"
    )]
    pub gt: Option<Decimal>,
    /// Numerically greater than or equal.
    #[serde(
        default,
        deserialize_with = "bound",
        skip_serializing_if = "Option::is_none"
    )]
    pub gte: Option<Decimal>,
    /// Numerically less than.
    #[serde(
        default,
        deserialize_with = "bound",
        skip_serializing_if = "Option::is_none"
    )]
    pub lt: Option<Decimal>,
    /// Numerically less than or equal.
    #[serde(
        default,
        deserialize_with = "bound",
        skip_serializing_if = "Option::is_none"
    )]
    pub lte: Option<Decimal>,
    /// Present (true) or absent (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// Reads a numeric bound written as a JSON number (exactly, as written) or as numeric text.
/// `Decimal`'s own `Deserialize` (feature `serde-str`) takes strings only and would refuse
/// `{"gte": 500}`.
fn bound<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Decimal>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(value) => match number_of(AttributeRef::Json(&value)) {
            Some(n) => Ok(Some(n)),
            None => Err(serde::de::Error::custom(format!(
                "expected a number, found `{value}`"
            ))),
        },
    }
}

/// A meter definition as submitted (`PUT /v1/meters/{slug}`) and stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterSpec {
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Event types read; omitted means all.
    #[serde(default, skip_serializing_if = "is_all")]
    pub event_type: EventTypes,
    /// How values combine.
    pub aggregation: Aggregation,
    /// Where the value is, e.g. `$.data.bytes_out`. Required unless the aggregation is `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_path: Option<String>,
    /// Dimensions: name → path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_by: BTreeMap<String, String>,
    /// Conditions: path → condition; an event counts only if all hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, Condition>,
}

fn is_all(t: &EventTypes) -> bool {
    matches!(t, EventTypes::All)
}

/// A validated meter, ready to read events.
#[derive(Clone, Debug)]
pub struct Meter {
    /// Its slug.
    pub slug: MeterSlug,
    /// The definition as submitted.
    pub spec: MeterSpec,
    types: Option<Vec<String>>,
    value_path: Option<JsonPath>,
    /// Dimension names in sorted order, with their paths.
    dimensions: Vec<(String, JsonPath)>,
    filters: Vec<(JsonPath, Condition)>,
}

/// A value read from an event by a meter.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading<'e> {
    /// `count`: the event counts once.
    One,
    /// A number (sum, max, min, latest).
    Number(Decimal),
    /// A distinct-value key (unique_count).
    Key(Cow<'e, str>),
}

/// What one meter saw in one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation<'e> {
    /// The event is not for this meter (type or filters).
    NotMatched,
    /// The event matched but has no usable value at `value_path`; it is counted as skipped.
    Skipped,
    /// The event counts: dimension values in dimension order, and the reading.
    Counted {
        /// One value per dimension, `None` when the path is absent.
        group: Vec<Option<Cow<'e, str>>>,
        /// The reading.
        reading: Reading<'e>,
    },
}

impl Meter {
    /// Validates a definition.
    pub fn new(slug: MeterSlug, spec: MeterSpec) -> Result<Meter, MeterError> {
        let types = match &spec.event_type {
            EventTypes::All => None,
            EventTypes::One(t) => Some(vec![t.clone()]),
            EventTypes::Many(ts) => {
                if ts.is_empty() || ts.len() > METER_EVENT_TYPES_MAX {
                    return Err(MeterError::Invalid {
                        message: format!("event_type lists 1 to {METER_EVENT_TYPES_MAX} types"),
                    });
                }
                Some(ts.clone())
            }
        };
        if let Some(types) = &types
            && types.iter().any(|t| t.is_empty())
        {
            return Err(MeterError::Invalid {
                message: "event_type must not be empty".into(),
            });
        }
        let value_path = match (spec.aggregation.needs_value(), &spec.value_path) {
            (true, None) => {
                return Err(MeterError::ValuePathRequired {
                    aggregation: spec.aggregation.as_str(),
                });
            }
            (false, Some(_)) => {
                return Err(MeterError::Invalid {
                    message: "value_path must be omitted for aggregation `count`".into(),
                });
            }
            (true, Some(p)) => Some(JsonPath::parse(p)?),
            (false, None) => None,
        };
        if spec.group_by.len() > GROUP_BY_KEYS_MAX {
            return Err(MeterError::TooManyGroupBy {
                max: GROUP_BY_KEYS_MAX,
            });
        }
        let mut dimensions = Vec::with_capacity(spec.group_by.len());
        for (name, path) in &spec.group_by {
            if name.is_empty() || name.len() > METER_SLUG_BYTES_MAX {
                return Err(MeterError::Invalid {
                    message: format!("group_by names are 1 to {METER_SLUG_BYTES_MAX} bytes"),
                });
            }
            dimensions.push((name.clone(), JsonPath::parse(path)?));
        }
        if spec.filters.len() > METER_FILTERS_MAX {
            return Err(MeterError::TooManyFilters {
                max: METER_FILTERS_MAX,
            });
        }
        let mut filters = Vec::with_capacity(spec.filters.len());
        for (path, cond) in &spec.filters {
            let lists = cond.in_.iter().chain(cond.nin.iter());
            if lists.clone().any(|l| l.len() > FILTER_VALUES_MAX) {
                return Err(MeterError::Invalid {
                    message: format!("in / nin take at most {FILTER_VALUES_MAX} values"),
                });
            }
            if *cond == Condition::default() {
                return Err(MeterError::Invalid {
                    message: format!("filter on `{path}` has no operator"),
                });
            }
            filters.push((JsonPath::parse(path)?, cond.clone()));
        }
        Ok(Meter {
            slug,
            spec,
            types,
            value_path,
            dimensions,
            filters,
        })
    }

    /// Dimension names, in the order of [`Observation::Counted::group`].
    pub fn dimension_names(&self) -> impl Iterator<Item = &str> {
        self.dimensions.iter().map(|(n, _)| n.as_str())
    }

    /// Number of dimensions.
    pub fn dimension_count(&self) -> usize {
        self.dimensions.len()
    }

    /// The aggregation.
    pub fn aggregation(&self) -> Aggregation {
        self.spec.aggregation
    }

    /// Reads one event.
    pub fn observe<'e, E: Attributes + ?Sized>(&self, event: &'e E) -> Observation<'e> {
        if let Some(types) = &self.types
            && !types.iter().any(|t| t == event.event_type())
        {
            return Observation::NotMatched;
        }
        if !self
            .filters
            .iter()
            .all(|(path, cond)| holds(cond, path.resolve(event)))
        {
            return Observation::NotMatched;
        }
        let reading = match (self.spec.aggregation, &self.value_path) {
            (Aggregation::Count, _) | (_, None) => Reading::One,
            (Aggregation::UniqueCount, Some(path)) => match path.resolve(event).and_then(key_of) {
                Some(key) => Reading::Key(key),
                None => return Observation::Skipped,
            },
            (_, Some(path)) => match path.resolve(event).and_then(number_of) {
                Some(n) => Reading::Number(n),
                None => return Observation::Skipped,
            },
        };
        let group = self
            .dimensions
            .iter()
            .map(|(_, p)| p.resolve(event).and_then(key_of))
            .collect();
        Observation::Counted { group, reading }
    }
}

/// A value as text for grouping and distinct counting: strings as they are, numbers as
/// written, booleans as `true`/`false`, objects and arrays as compact JSON; `null` is absent.
pub fn key_of(value: AttributeRef<'_>) -> Option<Cow<'_, str>> {
    match value.view() {
        ValueView::Null => None,
        ValueView::String(s) | ValueView::Number(s) => Some(Cow::Borrowed(s)),
        ValueView::Bool(true) => Some(Cow::Borrowed("true")),
        ValueView::Bool(false) => Some(Cow::Borrowed("false")),
        ValueView::Composite => Some(Cow::Owned(value.to_value().to_string())),
    }
}

/// A value as an exact decimal: JSON numbers and numeric strings; anything else is not a number.
pub fn number_of(value: AttributeRef<'_>) -> Option<Decimal> {
    match value.view() {
        ValueView::String(text) | ValueView::Number(text) => parse_decimal(text),
        ValueView::Null | ValueView::Bool(_) | ValueView::Composite => None,
    }
}

/// Parses decimal text exactly, including exponent notation (`1e3`).
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()
    } else {
        Decimal::from_str(text).ok()
    }
}

fn json_eq(value: AttributeRef<'_>, want: &Value) -> bool {
    match (value.view(), want) {
        (ValueView::String(s), Value::String(w)) => s == w,
        (ValueView::Number(a), Value::Number(b)) => {
            match (parse_decimal(a), parse_decimal(b.as_str())) {
                (Some(x), Some(y)) => x == y,
                _ => a == b.as_str(),
            }
        }
        (ValueView::Bool(a), Value::Bool(b)) => a == *b,
        (ValueView::Null, Value::Null) => true,
        (ValueView::Composite, w) => value.to_value() == *w,
        _ => false,
    }
}

fn holds(cond: &Condition, value: Option<AttributeRef<'_>>) -> bool {
    if let Some(exists) = cond.exists
        && exists != value.is_some()
    {
        return false;
    }
    if let Some(want) = &cond.eq
        && !value.is_some_and(|v| json_eq(v, want))
    {
        return false;
    }
    if let Some(want) = &cond.ne
        && value.is_some_and(|v| json_eq(v, want))
    {
        return false;
    }
    if let Some(list) = &cond.in_
        && !value.is_some_and(|v| list.iter().any(|w| json_eq(v, w)))
    {
        return false;
    }
    if let Some(list) = &cond.nin
        && value.is_some_and(|v| list.iter().any(|w| json_eq(v, w)))
    {
        return false;
    }
    let bounds = [(cond.gt, 0), (cond.gte, 1), (cond.lt, 2), (cond.lte, 3)];
    if bounds.iter().any(|(b, _)| b.is_some()) {
        let Some(n) = value.and_then(number_of) else {
            return false;
        };
        for (bound, op) in bounds {
            let Some(b) = bound else { continue };
            let ok = match op {
                0 => n > b,
                1 => n >= b,
                2 => n < b,
                _ => n <= b,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}
