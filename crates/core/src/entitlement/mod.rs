//! entitlement: what a customer may do now, and how much of a limit is left.
//!
//! Owns: features granted by a plan version or by a per-customer override ([`Grant`]), how the
//! two combine ([`resolve`]: an override replaces the plan's grant of the same feature), the
//! period a metered limit counts over ([`LimitPeriod`]), and the decision of one check
//! ([`decide`]): data in (the grant, what is used, the amount asked for, the period), an answer
//! out. Does not own: reading usage or open sessions (the store's rollups and session gauge),
//! subscriptions and periods ([`crate::billing`]), or alerts about limits ([`crate::alert`]).
//!
//! Invariants:
//! - A check never counts anything: asking is free, only ingested events use a limit up.
//! - `remaining = max(limit - used, 0)`; a hard limit allows a request only while
//!   `used + amount <= limit`, a soft limit always allows and says when it is exceeded.
//! - A customer without a grant for a feature is not entitled (`not_entitled`), never
//!   implicitly unlimited.

mod error;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use jiff::Span;
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use self::error::EntitlementError;
use crate::billing::Period;
use crate::limits::{ENTITLEMENTS_MAX, FEATURE_KEY_BYTES_MAX, STATIC_TEXT_BYTES_MAX};
use crate::meter::MeterSlug;
use crate::time::{HOUR_MS, UnixMs};

/// A feature's key: `[a-z][a-z0-9_-]*`, e.g. `egress-gb`, `max_concurrent_sessions`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FeatureKey(String);

impl FeatureKey {
    /// Validates a key.
    pub fn parse(text: &str) -> Result<FeatureKey, EntitlementError> {
        if crate::meter::is_slug(text, FEATURE_KEY_BYTES_MAX) {
            Ok(FeatureKey(text.to_owned()))
        } else {
            Err(EntitlementError::InvalidFeature {
                reason: format!(
                    "a feature key matches [a-z][a-z0-9_-]* and is at most {FEATURE_KEY_BYTES_MAX} bytes"
                ),
            })
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FeatureKey {
    type Error = EntitlementError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        FeatureKey::parse(&s)
    }
}

impl From<FeatureKey> for String {
    fn from(k: FeatureKey) -> String {
        k.0
    }
}

impl fmt::Display for FeatureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happens when a limit is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Allow, and say the limit is exceeded (for alerts and later billing).
    Soft,
    /// Deny what would go past the limit.
    Hard,
}

/// The stretch of time a metered limit counts usage over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitPeriod {
    /// The subscription's current billing period (calendar month in the customer's time zone
    /// when the customer has no running subscription).
    BillingPeriod,
    /// The current calendar month in the customer's time zone.
    Month,
    /// The current day in the customer's time zone.
    Day,
    /// The current hour (UTC hours; an hour is the same everywhere but in zones with
    /// fractional offsets, which then see UTC hour boundaries).
    Hour,
}

/// A static value of a feature: a number the client compares with (`max_seats = 10`) or a text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StaticValue {
    /// A number (given as a JSON number or a decimal string).
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    Number(Decimal),
    /// A text.
    Text(String),
}

/// What a plan version or an override grants for one feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Grant {
    /// On or off.
    Boolean {
        /// Whether the feature is on.
        enabled: bool,
    },
    /// A fixed value.
    Static {
        /// The value.
        value: StaticValue,
    },
    /// A limit on a meter's usage over a period.
    Metered {
        /// The meter whose usage counts.
        meter: MeterSlug,
        /// The limit, in the meter's unit.
        #[serde(with = "rust_decimal::serde::str")]
        limit: Decimal,
        /// The period usage counts over.
        period: LimitPeriod,
        /// Soft or hard.
        enforcement: Enforcement,
    },
    /// A limit on the number of sessions open at once.
    ConcurrentSessions {
        /// Most sessions open at once.
        limit: u64,
        /// Soft or hard.
        enforcement: Enforcement,
    },
}

impl Grant {
    /// Checks the values a client controls.
    pub fn validate(&self) -> Result<(), EntitlementError> {
        match self {
            Grant::Boolean { .. } | Grant::ConcurrentSessions { .. } => Ok(()),
            Grant::Static { value } => match value {
                StaticValue::Text(t) if t.len() > STATIC_TEXT_BYTES_MAX => {
                    Err(EntitlementError::InvalidGrant {
                        reason: format!("a static text is at most {STATIC_TEXT_BYTES_MAX} bytes"),
                    })
                }
                _ => Ok(()),
            },
            Grant::Metered { limit, .. } => {
                if *limit < Decimal::ZERO {
                    Err(EntitlementError::InvalidGrant {
                        reason: "a metered limit is zero or more".into(),
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The meter a metered grant reads, if any.
    pub fn meter(&self) -> Option<&MeterSlug> {
        match self {
            Grant::Metered { meter, .. } => Some(meter),
            _ => None,
        }
    }
}

/// One feature granted, as a plan version lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// The feature.
    pub feature: FeatureKey,
    /// What is granted.
    #[serde(flatten)]
    pub grant: Grant,
}

/// Checks a list of entitlements: each valid, features unique, within the limit.
pub fn validate_all(list: &[Entitlement]) -> Result<(), EntitlementError> {
    if list.len() > ENTITLEMENTS_MAX {
        return Err(EntitlementError::TooMany {
            max: ENTITLEMENTS_MAX,
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in list {
        e.grant.validate()?;
        if !seen.insert(&e.feature) {
            return Err(EntitlementError::InvalidGrant {
                reason: format!("feature `{}` appears twice", e.feature),
            });
        }
    }
    Ok(())
}

/// Where a customer's grant of a feature comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    /// The plan version of the running subscription.
    Plan,
    /// A per-customer override.
    Override,
}

/// A customer's grants by feature, after overrides.
pub type Resolved = BTreeMap<FeatureKey, (Grant, GrantSource)>;

/// Combines the running plan version's entitlements with the customer's overrides: an override
/// replaces the plan's grant of the same feature, and may grant features the plan does not.
pub fn resolve(plan: &[Entitlement], overrides: &[Entitlement]) -> Resolved {
    let mut out: Resolved = plan
        .iter()
        .map(|e| (e.feature.clone(), (e.grant.clone(), GrantSource::Plan)))
        .collect();
    for e in overrides {
        out.insert(e.feature.clone(), (e.grant.clone(), GrantSource::Override));
    }
    out
}

/// Why a check answered as it did. The names are part of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No grant for this feature (no plan grants it, no override).
    NotEntitled,
    /// A boolean feature that is off.
    Disabled,
    /// A boolean or static feature that is on.
    Entitled,
    /// A static number smaller than the amount asked for.
    AboveStaticValue,
    /// Within the limit (including the amount asked for).
    WithinLimit,
    /// A hard limit the amount would go past: denied.
    LimitExceeded,
    /// A soft limit the amount goes past: allowed and flagged.
    SoftLimitExceeded,
}

/// The answer to one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether to allow.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The limit (metered, sessions, static number).
    pub limit: Option<Decimal>,
    /// Used so far in the period (metered) or open now (sessions).
    pub used: Option<Decimal>,
    /// `max(limit - used, 0)`.
    pub remaining: Option<Decimal>,
    /// The period a metered limit counts over; it starts counting again at its end.
    pub period: Option<Period>,
    /// A static value, as granted.
    pub value: Option<StaticValue>,
}

impl Decision {
    fn bare(allowed: bool, reason: Reason) -> Decision {
        Decision {
            allowed,
            reason,
            limit: None,
            used: None,
            remaining: None,
            period: None,
            value: None,
        }
    }
}

/// What [`decide`] needs beside the grant: what is used now and over which period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Used in the period (metered) or open now (sessions).
    pub used: Decimal,
    /// The period of a metered limit.
    pub period: Option<Period>,
}

/// The period containing `now` that a limit counts over. `billing` is the running
/// subscription's current period, if any; `tz` the customer's time zone.
pub fn period_of(
    which: LimitPeriod,
    now: UnixMs,
    tz: &TimeZone,
    billing: Option<Period>,
) -> Result<Period, EntitlementError> {
    let zoned = now.to_timestamp().to_zoned(tz.clone());
    let (start, end) = match which {
        LimitPeriod::BillingPeriod if billing.is_some() => {
            return billing.ok_or(EntitlementError::OutOfRange);
        }
        LimitPeriod::BillingPeriod | LimitPeriod::Month => {
            let start = zoned.first_of_month().and_then(|z| z.start_of_day());
            let end = start
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|s| s.checked_add(Span::new().months(1)));
            (start, end)
        }
        LimitPeriod::Day => {
            let start = zoned.start_of_day();
            let end = zoned.tomorrow().and_then(|z| z.start_of_day());
            (start, end)
        }
        LimitPeriod::Hour => {
            let h = now.0.div_euclid(HOUR_MS) * HOUR_MS;
            return Ok(Period::new(UnixMs(h), UnixMs(h + HOUR_MS)));
        }
    };
    let ms = |z: Result<jiff::Zoned, jiff::Error>| {
        z.map(|z| UnixMs(z.timestamp().as_millisecond()))
            .map_err(|_| EntitlementError::OutOfRange)
    };
    Ok(Period::new(ms(start)?, ms(end)?))
}

/// Decides one check of `amount` (≥ 0; `0` asks "am I over already?") against a grant.
/// `usage` is what the store read for metered and session grants; it is ignored otherwise.
pub fn decide(grant: Option<&Grant>, amount: Decimal, usage: Option<Usage>) -> Decision {
    assert!(
        amount >= Decimal::ZERO,
        "check amounts are validated at the edge"
    );
    let Some(grant) = grant else {
        return Decision::bare(false, Reason::NotEntitled);
    };
    match grant {
        Grant::Boolean { enabled: true } => Decision::bare(true, Reason::Entitled),
        Grant::Boolean { enabled: false } => Decision::bare(false, Reason::Disabled),
        Grant::Static { value } => {
            let (allowed, reason, limit) = match value {
                StaticValue::Number(n) if amount > *n => {
                    (false, Reason::AboveStaticValue, Some(*n))
                }
                StaticValue::Number(n) => (true, Reason::Entitled, Some(*n)),
                StaticValue::Text(_) => (true, Reason::Entitled, None),
            };
            Decision {
                limit,
                value: Some(value.clone()),
                ..Decision::bare(allowed, reason)
            }
        }
        Grant::Metered {
            limit, enforcement, ..
        } => against_limit(*limit, *enforcement, amount, usage),
        Grant::ConcurrentSessions { limit, enforcement } => {
            against_limit(Decimal::from(*limit), *enforcement, amount, usage)
        }
    }
}

fn against_limit(
    limit: Decimal,
    enforcement: Enforcement,
    amount: Decimal,
    usage: Option<Usage>,
) -> Decision {
    let usage = usage.unwrap_or(Usage {
        used: Decimal::ZERO,
        period: None,
    });
    // Saturate rather than overflow: a sum near Decimal::MAX is over any limit anyway.
    // `amount = 0` asks "may I go on?": yes while something is left.
    let over = if amount.is_zero() {
        usage.used >= limit
    } else {
        usage.used.checked_add(amount).unwrap_or(Decimal::MAX) > limit
    };
    let (allowed, reason) = match (over, enforcement) {
        (false, _) => (true, Reason::WithinLimit),
        (true, Enforcement::Hard) => (false, Reason::LimitExceeded),
        (true, Enforcement::Soft) => (true, Reason::SoftLimitExceeded),
    };
    Decision {
        allowed,
        reason,
        limit: Some(limit),
        used: Some(usage.used),
        remaining: Some((limit - usage.used).max(Decimal::ZERO)),
        period: usage.period,
        value: None,
    }
}
