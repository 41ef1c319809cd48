//! alert: thresholds on usage and spend, unusual usage, and when each fires or recovers.
//!
//! Owns: alert rules ([`AlertRule`]), the state machine of one rule for one customer
//! ([`step`]: fires once per threshold per period, recovers when the value drops back or a new
//! period starts), and the unusual-usage test ([`anomaly`]). Does not own: reading usage or
//! running charges (the store), delivering what fires (the webhook outbox), or limits
//! ([`crate::entitlement`], whose `entitlement.exceeded` notices use the same [`step`]).
//!
//! Invariants:
//! - A rule fires at most once per (customer, period) while its value stays at or above the
//!   threshold; it may fire again in the same period only after it recovered (a real second
//!   crossing, e.g. after a correction lowered usage and new usage raised it again).
//! - Every `triggered` is followed by exactly one `recovered` before the next `triggered` of the
//!   same rule and customer.

mod anomaly;
#[cfg(test)]
mod tests;

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use self::anomaly::{AnomalyParams, Judgement, judge};
use crate::billing::CustomerKey;
use crate::entitlement::FeatureKey;
use crate::meter::MeterSlug;
use crate::time::UnixMs;

/// An alert rule's id: `alr_` and 16 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertId(pub String);

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a usage threshold lies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Threshold {
    /// A fixed amount in the meter's unit.
    Absolute {
        /// The amount.
        #[serde(with = "rust_decimal::serde::str")]
        value: Decimal,
    },
    /// A share of the customer's metered limit of a feature (`80` for 80 %).
    PercentOfLimit {
        /// The feature whose limit counts (a metered grant of the same meter).
        feature: FeatureKey,
        /// Percent, `0 < percent <= 1000`.
        #[serde(with = "rust_decimal::serde::str")]
        percent: Decimal,
    },
}

/// What a rule watches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Condition {
    /// A meter's usage in the current billing period reaches a threshold.
    Usage {
        /// The meter.
        meter: MeterSlug,
        /// Where.
        threshold: Threshold,
    },
    /// Running charges of the current period (the upcoming invoice's total, in the customer's
    /// currency, minor units) reach an amount.
    Spend {
        /// The amount in minor units of the customer's currency.
        amount_minor: i64,
    },
    /// The last complete hour's usage of a meter is far above the customer's own trailing
    /// baseline ([`anomaly`]).
    UnusualUsage {
        /// The meter.
        meter: MeterSlug,
        /// The method's parameters (defaults when left out).
        #[serde(default)]
        params: AnomalyParams,
    },
}

/// An alert rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRule {
    /// The id.
    pub id: AlertId,
    /// What people call it.
    pub name: String,
    /// One customer, or every customer with a running subscription (`None`).
    pub customer: Option<CustomerKey>,
    /// What it watches.
    pub condition: Condition,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// When it was created.
    pub created_ms: UnixMs,
}

/// Most bytes in a rule's name.
pub const ALERT_NAME_BYTES_MAX: usize = 200;

/// Why a rule was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid alert: {reason}")]
pub struct InvalidAlert {
    /// What is wrong.
    pub reason: String,
}

impl InvalidAlert {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        "invalid_alert"
    }
}

impl AlertRule {
    /// Checks the values a client controls.
    pub fn validate(&self) -> Result<(), InvalidAlert> {
        let bad = |reason: &str| {
            Err(InvalidAlert {
                reason: reason.into(),
            })
        };
        if self.name.is_empty()
            || self.name.len() > ALERT_NAME_BYTES_MAX
            || self.name.chars().any(char::is_control)
        {
            return bad("a name is 1..=200 bytes without control characters");
        }
        match &self.condition {
            Condition::Usage { threshold, .. } => match threshold {
                Threshold::Absolute { value } if *value <= Decimal::ZERO => {
                    bad("an absolute threshold is above zero")
                }
                Threshold::PercentOfLimit { percent, .. }
                    if *percent <= Decimal::ZERO || *percent > Decimal::from(1000) =>
                {
                    bad("a percent of a limit is above 0 and at most 1000")
                }
                _ => Ok(()),
            },
            Condition::Spend { amount_minor } if *amount_minor <= 0 => {
                bad("a spend threshold is above zero")
            }
            Condition::Spend { .. } => Ok(()),
            Condition::UnusualUsage { params, .. } => {
                params.validate().map_err(|reason| InvalidAlert {
                    reason: reason.into(),
                })
            }
        }
    }
}

/// Where a rule stands for one customer: fired in a period or recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    /// Start of the period the state belongs to.
    pub period_start: UnixMs,
    /// Whether it is fired (`true`) or recovered.
    pub triggered: bool,
}

/// A change of state, to record and announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// The value reached the threshold in the period.
    Triggered,
    /// The value dropped back below it, or its period ended.
    Recovered,
}

/// One transition with the period it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// What happened.
    pub transition: Transition,
    /// Start of the period it happened in (for `recovered` after a period change: the old
    /// period).
    pub period_start: UnixMs,
}

/// The next state of a rule for one customer, given whether its value is at or above the
/// threshold (`above`) in the period starting at `period_start`. Returns the transitions to
/// record, in order (at most two: the old period recovers, the new one fires), and the new
/// state (`None` when nothing has ever fired).
pub fn step(
    state: Option<AlertState>,
    period_start: UnixMs,
    above: bool,
) -> (Vec<Step>, Option<AlertState>) {
    let mut steps = Vec::new();
    let mut current = state;
    if let Some(s) = state
        && s.triggered
        && (s.period_start != period_start || !above)
    {
        steps.push(Step {
            transition: Transition::Recovered,
            period_start: s.period_start,
        });
        current = Some(AlertState {
            period_start: s.period_start,
            triggered: false,
        });
    }
    let fired_here = current.is_some_and(|s| s.triggered && s.period_start == period_start);
    if above && !fired_here {
        steps.push(Step {
            transition: Transition::Triggered,
            period_start,
        });
        current = Some(AlertState {
            period_start,
            triggered: true,
        });
    }
    (steps, current)
}
