//! Conversions between API bodies and domain types; the only place they meet.

pub mod billing;
pub mod credit_notes;
pub mod dropin;
pub mod entitlements;
pub mod inspect;
pub mod ipmeta;
pub mod providers;
pub mod refunds;
pub mod webhooks;

use tollgate_core::meter::{Aggregation, Condition, EventTypes, MeterSpec, parse_decimal};
use tollgate_core::time::UnixMs;
use tollgate_core::usage::UsageRow;
use tollgate_store::engine::MeterInfo;
use tollgate_store::{ApiKey, BatchOutcome};

use crate::ApiError;
use crate::types::{
    AggregationBody, ConditionBody, EventTypeBody, IngestError, IngestResponse, KeyResponse,
    MeterBody, MeterResponse, UsageRowBody,
};

/// An RFC 3339 instant from a parameter or field, or 400 `invalid_time`.
pub fn instant(name: &str, text: &str) -> Result<UnixMs, ApiError> {
    let ts: jiff::Timestamp = text.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_time",
            format!("`{name}` must be an RFC 3339 timestamp"),
        )
    })?;
    Ok(UnixMs::from_timestamp(ts))
}

/// RFC 3339 text of an instant.
pub fn time_text(t: UnixMs) -> String {
    t.to_rfc3339()
}

impl From<BatchOutcome> for IngestResponse {
    fn from(o: BatchOutcome) -> Self {
        IngestResponse {
            accepted: o.accepted,
            duplicates: o.duplicates,
            conflicts: o.conflicts,
            rejected: o.rejected,
            errors: o
                .errors
                .into_iter()
                .map(|e| IngestError {
                    index: e.index,
                    id: e.id,
                    code: e.code.into(),
                    message: e.message,
                })
                .collect(),
        }
    }
}

impl From<AggregationBody> for Aggregation {
    fn from(a: AggregationBody) -> Self {
        match a {
            AggregationBody::Sum => Aggregation::Sum,
            AggregationBody::Count => Aggregation::Count,
            AggregationBody::UniqueCount => Aggregation::UniqueCount,
            AggregationBody::Max => Aggregation::Max,
            AggregationBody::Min => Aggregation::Min,
            AggregationBody::Latest => Aggregation::Latest,
        }
    }
}

impl From<Aggregation> for AggregationBody {
    fn from(a: Aggregation) -> Self {
        match a {
            Aggregation::Sum => AggregationBody::Sum,
            Aggregation::Count => AggregationBody::Count,
            Aggregation::UniqueCount => AggregationBody::UniqueCount,
            Aggregation::Max => AggregationBody::Max,
            Aggregation::Min => AggregationBody::Min,
            Aggregation::Latest => AggregationBody::Latest,
        }
    }
}

fn bound(
    path: &str,
    op: &str,
    v: Option<serde_json::Value>,
) -> Result<Option<rust_decimal::Decimal>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let text = match &v {
        serde_json::Value::Number(n) => n.as_str().to_owned(),
        serde_json::Value::String(s) => s.clone(),
        _ => String::new(),
    };
    parse_decimal(&text).map(Some).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_meter",
            format!("filter `{path}`: `{op}` takes a number"),
        )
    })
}

/// A meter body as a domain spec.
pub fn meter_spec(body: MeterBody) -> Result<MeterSpec, ApiError> {
    let mut filters = std::collections::BTreeMap::new();
    for (path, c) in body.filters {
        let cond = Condition {
            gt: bound(&path, "gt", c.gt)?,
            gte: bound(&path, "gte", c.gte)?,
            lt: bound(&path, "lt", c.lt)?,
            lte: bound(&path, "lte", c.lte)?,
            eq: c.eq,
            ne: c.ne,
            in_: c.in_,
            nin: c.nin,
            exists: c.exists,
        };
        filters.insert(path, cond);
    }
    Ok(MeterSpec {
        description: body.description,
        event_type: match body.event_type {
            None => EventTypes::All,
            Some(EventTypeBody::One(t)) => EventTypes::One(t),
            Some(EventTypeBody::Many(ts)) => EventTypes::Many(ts),
        },
        aggregation: body.aggregation.into(),
        value_path: body.value_path,
        group_by: body.group_by,
        filters,
    })
}

fn number_value(d: Option<rust_decimal::Decimal>) -> Option<serde_json::Value> {
    d.map(|d| serde_json::Value::String(d.normalize().to_string()))
}

/// A meter and its counters as a response body.
pub fn meter_response(info: &MeterInfo) -> MeterResponse {
    let spec = &info.meter.spec;
    MeterResponse {
        slug: info.meter.slug.to_string(),
        definition: MeterBody {
            description: spec.description.clone(),
            event_type: match &spec.event_type {
                EventTypes::All => None,
                EventTypes::One(t) => Some(EventTypeBody::One(t.clone())),
                EventTypes::Many(ts) => Some(EventTypeBody::Many(ts.clone())),
            },
            aggregation: spec.aggregation.into(),
            value_path: spec.value_path.clone(),
            group_by: spec.group_by.clone(),
            filters: spec
                .filters
                .iter()
                .map(|(p, c)| {
                    (
                        p.clone(),
                        ConditionBody {
                            eq: c.eq.clone(),
                            ne: c.ne.clone(),
                            in_: c.in_.clone(),
                            nin: c.nin.clone(),
                            gt: number_value(c.gt),
                            gte: number_value(c.gte),
                            lt: number_value(c.lt),
                            lte: number_value(c.lte),
                            exists: c.exists,
                        },
                    )
                })
                .collect(),
        },
        counted_events: info.stats.counted,
        skipped_events: info.stats.skipped,
    }
}

/// A usage row as a response body.
pub fn usage_row(row: UsageRow) -> UsageRowBody {
    UsageRowBody {
        subject: row.subject,
        window_start: time_text(row.window_start),
        window_end: time_text(row.window_end),
        group: row.group,
        value: row.value.normalize().to_string(),
    }
}

/// A key as a response body.
pub fn key_response(key: &ApiKey) -> KeyResponse {
    KeyResponse {
        id: key.id.clone(),
        name: key.name.clone(),
        scopes: key.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        created_at: time_text(key.created),
        revoked_at: key.revoked.map(time_text),
    }
}
