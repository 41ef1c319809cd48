//! Entitlements, checks and alerts between their API bodies and domain types.

use rust_decimal::Decimal;
use serde_json::Value;
use tollgate_core::alert::{AlertId, AlertRule, AnomalyParams, Condition, Threshold};
use tollgate_core::billing::BillingError;
use tollgate_core::entitlement::{
    Decision, Enforcement, Entitlement, EntitlementError, FeatureKey, Grant, GrantSource,
    LimitPeriod, StaticValue,
};
use tollgate_core::meter::MeterSlug;
use tollgate_core::time::UnixMs;
use tollgate_store::billing::alerts::AlertEvent;
use tollgate_store::billing::entitlements::Checked;

use super::billing::{customer_key, decimal};
use super::time_text;
use crate::ApiError;
use crate::types::entitlements::*;

fn invalid(reason: impl Into<String>) -> ApiError {
    BillingError::from(EntitlementError::InvalidGrant {
        reason: reason.into(),
    })
    .into()
}

/// A feature key, or 422 `invalid_feature`.
pub fn feature_key(text: &str) -> Result<FeatureKey, ApiError> {
    FeatureKey::parse(text).map_err(|e| BillingError::from(e).into())
}

/// A meter slug, or 400 with the meter error's code.
pub fn meter_slug(text: &str) -> Result<MeterSlug, ApiError> {
    MeterSlug::parse(text).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
}

/// A decimal given as a JSON number or a decimal string.
pub fn decimal_value(field: &str, v: &Value) -> Result<Decimal, ApiError> {
    match v {
        Value::String(s) => decimal(field, s),
        Value::Number(n) => decimal(field, &n.to_string()),
        _ => Err(ApiError::bad_request(
            "invalid_decimal",
            format!("{field}: expected a number or a decimal string"),
        )),
    }
}

/// The parts of a grant as the API spells them.
pub struct GrantParts {
    /// `boolean`, `static`, `metered`, `concurrent_sessions`.
    pub kind: String,
    /// See [`EntitlementBody`].
    pub enabled: Option<bool>,
    /// See [`EntitlementBody`].
    pub value: Option<Value>,
    /// See [`EntitlementBody`].
    pub meter: Option<String>,
    /// See [`EntitlementBody`].
    pub limit: Option<String>,
    /// See [`EntitlementBody`].
    pub period: Option<String>,
    /// See [`EntitlementBody`].
    pub enforcement: Option<String>,
}

fn enforcement(text: Option<&str>) -> Result<Enforcement, ApiError> {
    match text {
        None | Some("hard") => Ok(Enforcement::Hard),
        Some("soft") => Ok(Enforcement::Soft),
        Some(other) => Err(invalid(format!(
            "enforcement `{other}` is not `hard` or `soft`"
        ))),
    }
}

fn limit_period(text: Option<&str>) -> Result<LimitPeriod, ApiError> {
    match text {
        None | Some("billing_period") => Ok(LimitPeriod::BillingPeriod),
        Some("month") => Ok(LimitPeriod::Month),
        Some("day") => Ok(LimitPeriod::Day),
        Some("hour") => Ok(LimitPeriod::Hour),
        Some(other) => Err(invalid(format!(
            "period `{other}` is not billing_period, month, day or hour"
        ))),
    }
}

/// A grant from its API parts; fields that do not belong to the kind are refused.
pub fn grant_from_parts(p: GrantParts) -> Result<Grant, ApiError> {
    let extra = |name: &str, present: bool| {
        if present {
            Err(invalid(format!(
                "`{name}` does not apply to kind `{}`",
                p.kind
            )))
        } else {
            Ok(())
        }
    };
    let grant = match p.kind.as_str() {
        "boolean" => {
            extra("value", p.value.is_some())?;
            extra("meter", p.meter.is_some())?;
            extra("limit", p.limit.is_some())?;
            extra("period", p.period.is_some())?;
            extra("enforcement", p.enforcement.is_some())?;
            Grant::Boolean {
                enabled: p
                    .enabled
                    .ok_or_else(|| invalid("a boolean grant needs `enabled`"))?,
            }
        }
        "static" => {
            extra("enabled", p.enabled.is_some())?;
            extra("meter", p.meter.is_some())?;
            extra("limit", p.limit.is_some())?;
            extra("period", p.period.is_some())?;
            extra("enforcement", p.enforcement.is_some())?;
            let value = match p.value {
                Some(Value::Number(n)) => StaticValue::Number(decimal("value", &n.to_string())?),
                Some(Value::String(s)) => StaticValue::Text(s),
                _ => return Err(invalid("a static grant needs `value`: a number or a text")),
            };
            Grant::Static { value }
        }
        "metered" => {
            extra("enabled", p.enabled.is_some())?;
            extra("value", p.value.is_some())?;
            Grant::Metered {
                meter: meter_slug(
                    p.meter
                        .as_deref()
                        .ok_or_else(|| invalid("a metered grant needs `meter`"))?,
                )?,
                limit: decimal(
                    "limit",
                    p.limit
                        .as_deref()
                        .ok_or_else(|| invalid("a metered grant needs `limit`"))?,
                )?,
                period: limit_period(p.period.as_deref())?,
                enforcement: enforcement(p.enforcement.as_deref())?,
            }
        }
        "concurrent_sessions" => {
            extra("enabled", p.enabled.is_some())?;
            extra("value", p.value.is_some())?;
            extra("meter", p.meter.is_some())?;
            extra("period", p.period.is_some())?;
            let text = p
                .limit
                .as_deref()
                .ok_or_else(|| invalid("a concurrent_sessions grant needs `limit`"))?;
            Grant::ConcurrentSessions {
                limit: text.parse().map_err(|_| {
                    invalid(format!("limit `{text}` is not a whole number of sessions"))
                })?,
                enforcement: enforcement(p.enforcement.as_deref())?,
            }
        }
        other => {
            return Err(invalid(format!(
                "kind `{other}` is not boolean, static, metered or concurrent_sessions"
            )));
        }
    };
    grant
        .validate()
        .map_err(|e| ApiError::from(BillingError::from(e)))?;
    Ok(grant)
}

/// An entitlement from its body.
pub fn entitlement_from_body(b: EntitlementBody) -> Result<Entitlement, ApiError> {
    Ok(Entitlement {
        feature: feature_key(&b.feature)?,
        grant: grant_from_parts(GrantParts {
            kind: b.kind,
            enabled: b.enabled,
            value: b.value,
            meter: b.meter,
            limit: b.limit,
            period: b.period,
            enforcement: b.enforcement,
        })?,
    })
}

/// An override from its body and the feature in the path.
pub fn override_from_body(feature: FeatureKey, b: OverrideBody) -> Result<Entitlement, ApiError> {
    Ok(Entitlement {
        feature,
        grant: grant_from_parts(GrantParts {
            kind: b.kind,
            enabled: b.enabled,
            value: b.value,
            meter: b.meter,
            limit: b.limit,
            period: b.period,
            enforcement: b.enforcement,
        })?,
    })
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn static_json(v: &StaticValue) -> Value {
    match v {
        StaticValue::Number(n) => serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        StaticValue::Text(t) => Value::String(t.clone()),
    }
}

/// An entitlement's body.
pub fn entitlement_body(feature: &FeatureKey, grant: &Grant) -> EntitlementBody {
    let mut b = EntitlementBody {
        feature: feature.to_string(),
        kind: String::new(),
        enabled: None,
        value: None,
        meter: None,
        limit: None,
        period: None,
        enforcement: None,
    };
    match grant {
        Grant::Boolean { enabled } => {
            b.kind = "boolean".into();
            b.enabled = Some(*enabled);
        }
        Grant::Static { value } => {
            b.kind = "static".into();
            b.value = Some(static_json(value));
        }
        Grant::Metered {
            meter,
            limit,
            period,
            enforcement,
        } => {
            b.kind = "metered".into();
            b.meter = Some(meter.to_string());
            b.limit = Some(limit.to_string());
            b.period = Some(snake(period));
            b.enforcement = Some(snake(enforcement));
        }
        Grant::ConcurrentSessions { limit, enforcement } => {
            b.kind = "concurrent_sessions".into();
            b.limit = Some(limit.to_string());
            b.enforcement = Some(snake(enforcement));
        }
    }
    b
}

/// A check's answer.
pub fn check_response(customer: &str, feature: &str, c: &Checked) -> CheckResponse {
    decision_response(customer, feature, &c.decision, c.source)
}

/// A decision's body.
pub fn decision_response(
    customer: &str,
    feature: &str,
    d: &Decision,
    source: Option<GrantSource>,
) -> CheckResponse {
    CheckResponse {
        customer: customer.to_owned(),
        feature: feature.to_owned(),
        allowed: d.allowed,
        reason: snake(&d.reason),
        source: source.map(|s| snake(&s)),
        limit: d.limit.map(|l| l.to_string()),
        used: d.used.map(|u| u.to_string()),
        remaining: d.remaining.map(|r| r.to_string()),
        resets_at: d.period.map(|p| time_text(p.end)),
        value: d.value.as_ref().map(static_json),
    }
}

fn opt_decimal(field: &str, text: Option<&str>, default: Decimal) -> Result<Decimal, ApiError> {
    text.map_or(Ok(default), |t| decimal(field, t))
}

/// A rule from its body.
pub fn alert_from_body(b: AlertBody, id: AlertId, now: UnixMs) -> Result<AlertRule, ApiError> {
    let c = b.condition;
    let bad = |m: &str| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_alert",
            m.to_owned(),
        )
    };
    let meter = || {
        c.meter
            .as_deref()
            .ok_or_else(|| bad("this condition needs `meter`"))
            .and_then(meter_slug)
    };
    let condition = match c.condition_type.as_str() {
        "usage" => {
            let t = c
                .threshold
                .as_ref()
                .ok_or_else(|| bad("a usage condition needs `threshold`"))?;
            let threshold = match t.kind.as_str() {
                "absolute" => Threshold::Absolute {
                    value: decimal(
                        "threshold.value",
                        t.value
                            .as_deref()
                            .ok_or_else(|| bad("an absolute threshold needs `value`"))?,
                    )?,
                },
                "percent_of_limit" => Threshold::PercentOfLimit {
                    feature: feature_key(
                        t.feature
                            .as_deref()
                            .ok_or_else(|| bad("a percent_of_limit threshold needs `feature`"))?,
                    )?,
                    percent: decimal(
                        "threshold.percent",
                        t.percent
                            .as_deref()
                            .ok_or_else(|| bad("a percent_of_limit threshold needs `percent`"))?,
                    )?,
                },
                other => {
                    return Err(bad(&format!(
                        "threshold kind `{other}` is not absolute or percent_of_limit"
                    )));
                }
            };
            Condition::Usage {
                meter: meter()?,
                threshold,
            }
        }
        "spend" => Condition::Spend {
            amount_minor: c
                .amount_minor
                .ok_or_else(|| bad("a spend condition needs `amount_minor`"))?,
        },
        "unusual_usage" => {
            let d = AnomalyParams::default();
            let p = c.params.clone();
            let params = match p {
                None => d,
                Some(p) => AnomalyParams {
                    baseline_hours: p.baseline_hours.unwrap_or(d.baseline_hours),
                    min_active_hours: p.min_active_hours.unwrap_or(d.min_active_hours),
                    k: opt_decimal("params.k", p.k.as_deref(), d.k)?,
                    floor_ratio: opt_decimal(
                        "params.floor_ratio",
                        p.floor_ratio.as_deref(),
                        d.floor_ratio,
                    )?,
                    min_usage: opt_decimal(
                        "params.min_usage",
                        p.min_usage.as_deref(),
                        d.min_usage,
                    )?,
                },
            };
            Condition::UnusualUsage {
                meter: meter()?,
                params,
            }
        }
        other => {
            return Err(bad(&format!(
                "condition type `{other}` is not usage, spend or unusual_usage"
            )));
        }
    };
    Ok(AlertRule {
        id,
        name: b.name,
        customer: b.customer.as_deref().map(customer_key).transpose()?,
        condition,
        enabled: true,
        created_ms: now,
    })
}

fn condition_body(c: &Condition) -> ConditionBody {
    let mut b = ConditionBody {
        condition_type: String::new(),
        meter: None,
        threshold: None,
        amount_minor: None,
        params: None,
    };
    match c {
        Condition::Usage { meter, threshold } => {
            b.condition_type = "usage".into();
            b.meter = Some(meter.to_string());
            b.threshold = Some(match threshold {
                Threshold::Absolute { value } => ThresholdBody {
                    kind: "absolute".into(),
                    value: Some(value.to_string()),
                    feature: None,
                    percent: None,
                },
                Threshold::PercentOfLimit { feature, percent } => ThresholdBody {
                    kind: "percent_of_limit".into(),
                    value: None,
                    feature: Some(feature.to_string()),
                    percent: Some(percent.to_string()),
                },
            });
        }
        Condition::Spend { amount_minor } => {
            b.condition_type = "spend".into();
            b.amount_minor = Some(*amount_minor);
        }
        Condition::UnusualUsage { meter, params } => {
            b.condition_type = "unusual_usage".into();
            b.meter = Some(meter.to_string());
            b.params = Some(AnomalyParamsBody {
                baseline_hours: Some(params.baseline_hours),
                min_active_hours: Some(params.min_active_hours),
                k: Some(params.k.to_string()),
                floor_ratio: Some(params.floor_ratio.to_string()),
                min_usage: Some(params.min_usage.to_string()),
            });
        }
    }
    b
}

/// A rule's body.
pub fn alert_response(r: &AlertRule) -> AlertResponse {
    AlertResponse {
        id: r.id.to_string(),
        name: r.name.clone(),
        customer: r.customer.as_ref().map(ToString::to_string),
        condition: condition_body(&r.condition),
        enabled: r.enabled,
        created_at: time_text(r.created_ms),
    }
}

/// A logged event's body.
pub fn alert_event_response(e: &AlertEvent) -> AlertEventResponse {
    AlertEventResponse {
        id: e.id.clone(),
        seq: e.seq,
        event_type: e.event_type.clone(),
        rule: e.rule.clone(),
        customer: e.customer.to_string(),
        period_start: time_text(e.period_start),
        measured: e.subject.clone(),
        value: e.value.to_string(),
        threshold: e.threshold.to_string(),
        created_at: time_text(e.at),
    }
}
