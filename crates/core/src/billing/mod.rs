//! Billing catalog: customers, plans and their versions, subscriptions, and billing periods.
//!
//! Owns: who is billed (a [`Customer`], keyed by the event `subject`), what they subscribed to
//! (a [`Subscription`] made of [`Phase`]s, each pinned to one immutable [`PlanVersion`]), and
//! when periods start and end ([`Cycle`]: an anchor date, the customer's time zone and the plan's
//! interval). Does not own: how usage is priced ([`crate::pricing`]) or what an invoice holds
//! ([`crate::invoice`]).
//!
//! Rules:
//! - Periods start at local midnight of the anchor day in the customer's time zone, every month
//!   or year. Each period start is computed from the anchor directly (not from the previous
//!   period), so an anchor on the 31st gives Jan 31, Feb 28 (29), Mar 31, ...
//! - Subscription changes (start, plan change, cancel, trial end) take effect on a whole minute,
//!   because usage is kept per minute. Proration is by second over those instants.
//! - A phase's plan version never changes once published; a plan change closes the current
//!   phase and opens a new one. Plan changes keep the interval (month stays month).

mod error;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Span, Zoned};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use self::error::BillingError;
use crate::entitlement::Entitlement;
use crate::money::Currency;
use crate::pricing::{Price, PricingError};
use crate::time::{MINUTE_MS, UnixMs};

/// Longest customer key (bytes); the same as the event `subject`.
pub const CUSTOMER_KEY_BYTES_MAX: usize = crate::limits::EVENT_SUBJECT_BYTES_MAX;
/// Longest plan key (bytes).
pub const PLAN_KEY_BYTES_MAX: usize = 64;
/// Longest name or e-mail address (bytes).
pub const NAME_BYTES_MAX: usize = 200;
/// Most metadata entries on one customer.
pub const METADATA_ENTRIES_MAX: usize = 50;
/// Longest metadata key or value (bytes).
pub const METADATA_BYTES_MAX: usize = 500;
/// Most prices in one plan version.
pub const PLAN_PRICES_MAX: usize = 50;
/// Most phases (plan changes) in one subscription.
pub const SUBSCRIPTION_PHASES_MAX: usize = 500;

/// A customer's key: the `subject` of the events whose usage they pay for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerKey(String);

impl CustomerKey {
    /// Validates a key: 1..=256 bytes, no control characters.
    pub fn parse(text: &str) -> Result<CustomerKey, BillingError> {
        if text.is_empty()
            || text.len() > CUSTOMER_KEY_BYTES_MAX
            || text.chars().any(char::is_control)
        {
            return Err(BillingError::Invalid {
                field: "key",
                reason: format!(
                    "a customer key is 1..={CUSTOMER_KEY_BYTES_MAX} bytes without control characters"
                ),
            });
        }
        Ok(CustomerKey(text.to_owned()))
    }

    /// The text (equal to the events' `subject`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CustomerKey {
    type Error = BillingError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CustomerKey::parse(&s)
    }
}

impl From<CustomerKey> for String {
    fn from(k: CustomerKey) -> String {
        k.0
    }
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plan's key: `[a-z][a-z0-9_-]*`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlanKey(String);

impl PlanKey {
    /// Validates a key.
    pub fn parse(text: &str) -> Result<PlanKey, BillingError> {
        if crate::meter::is_slug(text, PLAN_KEY_BYTES_MAX) {
            Ok(PlanKey(text.to_owned()))
        } else {
            Err(BillingError::Invalid {
                field: "key",
                reason: format!(
                    "a plan key matches [a-z][a-z0-9_-]* and is at most {PLAN_KEY_BYTES_MAX} bytes"
                ),
            })
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PlanKey {
    type Error = BillingError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PlanKey::parse(&s)
    }
}

impl From<PlanKey> for String {
    fn from(k: PlanKey) -> String {
        k.0
    }
}

impl fmt::Display for PlanKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IANA time zone, kept with its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneName {
    name: String,
    tz: TimeZone,
}

impl ZoneName {
    /// Looks up an IANA name such as `Europe/Berlin` or `Pacific/Kiritimati`.
    pub fn parse(text: &str) -> Result<ZoneName, BillingError> {
        let tz = TimeZone::get(text).map_err(|_| BillingError::Invalid {
            field: "time_zone",
            reason: format!(
                "`{}` is not an IANA time zone",
                text.chars().take(80).collect::<String>()
            ),
        })?;
        Ok(ZoneName {
            name: text.to_owned(),
            tz,
        })
    }

    /// UTC.
    pub fn utc() -> ZoneName {
        ZoneName {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    /// The IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

impl Serialize for ZoneName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for ZoneName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ZoneName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// The key (event `subject`).
    pub key: CustomerKey,
    /// Display name.
    pub name: String,
    /// Billing e-mail.
    pub email: Option<String>,
    /// Currency of every invoice.
    pub currency: Currency,
    /// Where period boundaries fall.
    pub time_zone: ZoneName,
    /// The date periods are anchored on (its day of month, and for yearly plans its month).
    pub billing_anchor: Date,
    /// Tax as a fraction of the subtotal (`0.19` for 19 %).
    pub tax_rate: Decimal,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// When the customer was created.
    pub created_ms: UnixMs,
}

impl Customer {
    /// Checks the fields a client controls.
    pub fn validate(&self) -> Result<(), BillingError> {
        check_text("name", &self.name, 1)?;
        if let Some(email) = &self.email {
            check_text("email", email, 3)?;
            if !email.contains('@') {
                return Err(BillingError::Invalid {
                    field: "email",
                    reason: "an e-mail address contains `@`".into(),
                });
            }
        }
        if self.tax_rate < Decimal::ZERO
            || self.tax_rate > Decimal::ONE
            || self.tax_rate.scale() > 6
        {
            return Err(BillingError::Invalid {
                field: "tax_rate",
                reason:
                    "a fraction between 0 and 1 with at most 6 fractional digits (0.19 is 19 %)"
                        .into(),
            });
        }
        if self.metadata.len() > METADATA_ENTRIES_MAX
            || self.metadata.iter().any(|(k, v)| {
                k.is_empty() || k.len() > METADATA_BYTES_MAX || v.len() > METADATA_BYTES_MAX
            })
        {
            return Err(BillingError::Invalid {
                field: "metadata",
                reason: format!(
                    "at most {METADATA_ENTRIES_MAX} entries, keys 1..={METADATA_BYTES_MAX} bytes, values up to {METADATA_BYTES_MAX} bytes"
                ),
            });
        }
        Ok(())
    }
}

fn check_text(field: &'static str, text: &str, min: usize) -> Result<(), BillingError> {
    if text.len() < min || text.len() > NAME_BYTES_MAX || text.chars().any(char::is_control) {
        return Err(BillingError::Invalid {
            field,
            reason: format!("{min}..={NAME_BYTES_MAX} bytes without control characters"),
        });
    }
    Ok(())
}

/// How often a plan bills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// Every month.
    Month,
    /// Every year.
    Year,
}

/// A plan: its identity, currency and interval. Prices live in versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The key.
    pub key: PlanKey,
    /// Display name.
    pub name: String,
    /// Currency of every price.
    pub currency: Currency,
    /// Billing interval.
    pub interval: Interval,
    /// When it was created.
    pub created_ms: UnixMs,
}

/// One published, immutable set of prices of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanVersion {
    /// The plan.
    pub plan: PlanKey,
    /// 1, 2, ...
    pub version: u32,
    /// The prices.
    pub prices: Vec<Price>,
    /// The features it grants (versions published before entitlements existed have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<Entitlement>,
    /// When it was published.
    pub published_ms: UnixMs,
}

impl PlanVersion {
    /// Checks the prices: each valid, keys unique, within the limit.
    pub fn validate(&self) -> Result<(), BillingError> {
        if self.prices.is_empty() || self.prices.len() > PLAN_PRICES_MAX {
            return Err(BillingError::Invalid {
                field: "prices",
                reason: format!("a plan version has 1..={PLAN_PRICES_MAX} prices"),
            });
        }
        let mut keys = std::collections::BTreeSet::new();
        for price in &self.prices {
            price.validate().map_err(BillingError::Pricing)?;
            if !keys.insert(&price.key) {
                return Err(BillingError::Pricing(PricingError::InvalidPrice {
                    reason: format!("price key `{}` appears twice", price.key),
                }));
            }
        }
        crate::entitlement::validate_all(&self.entitlements)?;
        Ok(())
    }
}

/// A half-open interval of time `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Period {
    /// Inclusive.
    pub start: UnixMs,
    /// Exclusive.
    pub end: UnixMs,
}

impl Period {
    /// A period; `start < end` is an invariant.
    pub fn new(start: UnixMs, end: UnixMs) -> Period {
        assert!(
            start < end,
            "period start {start:?} is not before end {end:?}"
        );
        Period { start, end }
    }

    /// Length in whole seconds.
    pub fn seconds(&self) -> i64 {
        (self.end.0 - self.start.0).div_euclid(1000)
    }

    /// The overlap with `other`, if any.
    pub fn intersect(&self, other: &Period) -> Option<Period> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(Period { start, end })
    }

    /// Whether `t` lies inside.
    pub fn contains(&self, t: UnixMs) -> bool {
        self.start <= t && t < self.end
    }
}

/// Where a customer's periods fall for one interval.
#[derive(Clone, Debug)]
pub struct Cycle<'a> {
    anchor: Date,
    tz: &'a TimeZone,
    interval: Interval,
}

impl<'a> Cycle<'a> {
    /// The cycle of a customer on a plan interval.
    pub fn new(customer: &'a Customer, interval: Interval) -> Cycle<'a> {
        Cycle {
            anchor: customer.billing_anchor,
            tz: customer.time_zone.tz(),
            interval,
        }
    }

    /// Start of period number `k` (0 starts on the anchor date).
    fn start(&self, k: i64) -> Result<UnixMs, BillingError> {
        let span = match self.interval {
            Interval::Month => Span::new().try_months(k),
            Interval::Year => Span::new().try_years(k),
        }
        .map_err(|_| BillingError::OutOfRange)?;
        let date = self
            .anchor
            .checked_add(span)
            .map_err(|_| BillingError::OutOfRange)?;
        let zoned = date
            .to_zoned(self.tz.clone())
            .map_err(|_| BillingError::OutOfRange)?;
        Ok(floor_minute(UnixMs::from_timestamp(zoned.timestamp())))
    }

    fn index_near(&self, t: UnixMs) -> i64 {
        let local = Zoned::new(t.to_timestamp(), self.tz.clone());
        let years = i64::from(local.year()) - i64::from(self.anchor.year());
        match self.interval {
            Interval::Month => {
                years * 12 + i64::from(local.month()) - i64::from(self.anchor.month())
            }
            Interval::Year => years,
        }
    }

    /// The period containing `t`.
    pub fn period_containing(&self, t: UnixMs) -> Result<Period, BillingError> {
        let mut k = self.index_near(t);
        while self.start(k)? > t {
            k -= 1;
        }
        while self.start(k + 1)? <= t {
            k += 1;
        }
        Ok(Period::new(self.start(k)?, self.start(k + 1)?))
    }

    /// The period that starts in the local calendar month `year-month`, if one does (a
    /// yearly cycle starts in one month of twelve).
    pub fn period_starting_in(&self, year: i16, month: i8) -> Result<Option<Period>, BillingError> {
        let first = Date::new(year, month, 1).map_err(|_| BillingError::OutOfRange)?;
        let first = first
            .to_zoned(self.tz.clone())
            .map_err(|_| BillingError::OutOfRange)?;
        let p = self.period_containing(UnixMs::from_timestamp(first.timestamp()))?;
        let next = self.period_containing(p.end)?;
        for candidate in [p, next] {
            let local = Zoned::new(candidate.start.to_timestamp(), self.tz.clone());
            if local.year() == year && local.month() == month {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }
}

/// `t` floored to a whole minute.
pub fn floor_minute(t: UnixMs) -> UnixMs {
    UnixMs(t.0 - t.0.rem_euclid(MINUTE_MS))
}

/// A subscription id, `sub_` followed by 16 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SubscriptionId(pub String);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stretch of a subscription on one plan version, from `start` until the next phase starts
/// or the subscription ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// The plan.
    pub plan: PlanKey,
    /// The pinned version.
    pub version: u32,
    /// When this phase starts (whole minute).
    pub start: UnixMs,
}

/// A customer's subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The id.
    pub id: SubscriptionId,
    /// Who pays.
    pub customer: CustomerKey,
    /// Contiguous phases in start order; the first starts the subscription.
    pub phases: Vec<Phase>,
    /// Until this instant nothing is billed (flat fees are prorated, usage is not counted).
    pub trial_end: Option<UnixMs>,
    /// When the subscription ends (cancellation), if it does.
    pub ends_at: Option<UnixMs>,
    /// When it was created.
    pub created_ms: UnixMs,
}

/// What a subscription is doing at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Starts later.
    Scheduled,
    /// In its trial.
    Trialing,
    /// Billing.
    Active,
    /// Ended.
    Ended,
}

/// The part of a billing period in which one phase is billable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The phase.
    pub phase: &'a Phase,
    /// Where it is billable.
    pub span: Period,
}

/// A change to a subscription, with intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// Move to another plan version at `at`.
    ChangePlan {
        /// Effective instant (whole minute).
        at: UnixMs,
        /// New plan.
        plan: PlanKey,
        /// Its version.
        version: u32,
    },
    /// End at `at`.
    Cancel {
        /// Effective instant (whole minute).
        at: UnixMs,
    },
}

impl Subscription {
    /// A new subscription; `start` and `trial_end` must be whole minutes.
    pub fn new(
        id: SubscriptionId,
        customer: CustomerKey,
        first: Phase,
        trial_end: Option<UnixMs>,
        created_ms: UnixMs,
    ) -> Result<Subscription, BillingError> {
        check_minute("start", first.start)?;
        if let Some(t) = trial_end {
            check_minute("trial_end", t)?;
            if t < first.start {
                return Err(BillingError::Invalid {
                    field: "trial_end",
                    reason: "the trial ends before the subscription starts".into(),
                });
            }
        }
        Ok(Subscription {
            id,
            customer,
            phases: vec![first],
            trial_end,
            ends_at: None,
            created_ms,
        })
    }

    /// The first instant.
    pub fn start(&self) -> UnixMs {
        self.phases.first().map_or(UnixMs(0), |p| p.start)
    }

    /// Status at `now`.
    pub fn status(&self, now: UnixMs) -> SubscriptionStatus {
        if now < self.start() {
            SubscriptionStatus::Scheduled
        } else if self.ends_at.is_some_and(|e| now >= e) {
            SubscriptionStatus::Ended
        } else if self.trial_end.is_some_and(|t| now < t) {
            SubscriptionStatus::Trialing
        } else {
            SubscriptionStatus::Active
        }
    }

    /// The phase in effect at `t`.
    pub fn phase_at(&self, t: UnixMs) -> Option<&Phase> {
        if self.ends_at.is_some_and(|e| t >= e) {
            return None;
        }
        self.phases.iter().rev().find(|p| p.start <= t)
    }

    /// Applies a change; the subscription is unchanged on error.
    pub fn apply(&mut self, change: SubscriptionChange) -> Result<(), BillingError> {
        let last_start = self.phases.last().map_or(UnixMs(0), |p| p.start);
        match change {
            SubscriptionChange::ChangePlan { at, plan, version } => {
                check_minute("at", at)?;
                if self.ends_at.is_some_and(|e| at >= e) {
                    return Err(BillingError::Conflict {
                        reason: "the subscription has ended by then".into(),
                    });
                }
                if at < last_start {
                    return Err(BillingError::Conflict {
                        reason: "a plan change cannot take effect before the current phase starts"
                            .into(),
                    });
                }
                if self.phases.len() >= SUBSCRIPTION_PHASES_MAX {
                    return Err(BillingError::Conflict {
                        reason: format!("at most {SUBSCRIPTION_PHASES_MAX} phases"),
                    });
                }
                let phase = Phase {
                    plan,
                    version,
                    start: at,
                };
                if at == last_start {
                    // The current phase had not begun billing any time: replace it.
                    if let Some(last) = self.phases.last_mut() {
                        *last = phase;
                    }
                } else {
                    self.phases.push(phase);
                }
            }
            SubscriptionChange::Cancel { at } => {
                check_minute("at", at)?;
                if self.ends_at.is_some_and(|e| e <= at) {
                    return Err(BillingError::Conflict {
                        reason: "the subscription already ends by then".into(),
                    });
                }
                if at <= last_start {
                    return Err(BillingError::Conflict {
                        reason: "cancellation must be after the current phase starts".into(),
                    });
                }
                self.ends_at = Some(at);
            }
        }
        Ok(())
    }

    /// The billable parts of `period`, one per phase that overlaps it, after the trial and
    /// before the end.
    pub fn segments(&self, period: &Period) -> Vec<Segment<'_>> {
        let mut out = Vec::new();
        for (i, phase) in self.phases.iter().enumerate() {
            let mut start = phase.start.max(period.start);
            if let Some(t) = self.trial_end {
                start = start.max(t);
            }
            let mut end = self.phases.get(i + 1).map_or(period.end, |n| n.start);
            end = end.min(period.end);
            if let Some(e) = self.ends_at {
                end = end.min(e);
            }
            if start < end {
                out.push(Segment {
                    phase,
                    span: Period { start, end },
                });
            }
        }
        out
    }

    /// Whether any part of the subscription (trial included) overlaps `period`.
    pub fn overlaps(&self, period: &Period) -> bool {
        self.start() < period.end && self.ends_at.is_none_or(|e| e > period.start)
    }
}

fn check_minute(field: &'static str, t: UnixMs) -> Result<(), BillingError> {
    if t.is_minute_aligned() {
        Ok(())
    } else {
        Err(BillingError::Invalid {
            field,
            reason: "subscription changes take effect on a whole minute (seconds = 0)".into(),
        })
    }
}
