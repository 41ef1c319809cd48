//! Pricing: how a quantity of usage in one billing period becomes an exact decimal amount.
//!
//! Owns: the price models (flat, per unit, graduated tiers, volume tiers, package), the
//! modifiers every price may carry (free allowance, minimum spend with true-up, maximum cap),
//! proration of the period-based parts, and the tier breakdown that explains an amount.
//! Does not own: rounding (the one function is [`crate::money::round_to_minor`], applied once per
//! invoice line by [`crate::invoice`]), usage (handed in as a decimal quantity), or time.
//!
//! Rules (documented in docs/billing.md, tested in `tests.rs`):
//! - A tier's `up_to` is inclusive: with tiers `up_to 1000` then `up_to None`, unit 1000 is
//!   in the first tier and unit 1000.5 in the second.
//! - Zero billable quantity charges nothing in every metered model: no tier is entered, so no
//!   tier flat fee is due.
//! - Graduated: each slice of the quantity is priced at its own tier; a tier's flat fee is due
//!   once the quantity enters that tier. Volume: the whole quantity is priced at the tier it
//!   ends in, plus that tier's flat fee. Package: `ceil(quantity / package_size)` packages.
//! - The free allowance is subtracted before the model applies. The flat fee, the allowance,
//!   the minimum and the maximum are prorated by the share of the period the price was active
//!   ([`Proration`]); tier bounds are not. A prorated allowance is kept to
//!   [`PRORATED_UNITS_SCALE`] fractional digits.
//! - Minimum: if the usage charge is below the (prorated) minimum, the difference is added as a
//!   true-up. Maximum: the charge is capped at the (prorated) maximum.
//! - Arithmetic is exact or fails with [`PricingError::Overflow`]: a product that would need
//!   more than the 28 significant digits of a decimal is refused, never silently rounded.

mod error;
#[cfg(test)]
mod tests;

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use self::error::PricingError;
use crate::meter::MeterSlug;

/// Most tiers one price may have.
pub const PRICE_TIERS_MAX: usize = 100;
/// Most fractional digits in a unit price or amount (e.g. `0.000000000001`).
pub const PRICE_SCALE_MAX: u32 = 12;
/// Fractional digits kept of a prorated free allowance (half to even). A prorated allowance
/// is `units × active / period`, usually a non-terminating decimal; six digits keep it far finer
/// than any unit a meter counts while leaving the digits exact products need.
pub const PRORATED_UNITS_SCALE: u32 = 6;
/// Longest price key (bytes).
pub const PRICE_KEY_BYTES_MAX: usize = 64;

/// A price's key, unique within a plan version: `[a-z][a-z0-9_-]*`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PriceKey(String);

impl PriceKey {
    /// Validates a key.
    pub fn parse(text: &str) -> Result<PriceKey, PricingError> {
        if crate::meter::is_slug(text, PRICE_KEY_BYTES_MAX) {
            Ok(PriceKey(text.to_owned()))
        } else {
            Err(PricingError::InvalidPrice {
                reason: format!(
                    "price key `{}` must match [a-z][a-z0-9_-]* and be at most {PRICE_KEY_BYTES_MAX} bytes",
                    text.chars().take(80).collect::<String>()
                ),
            })
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PriceKey {
    type Error = PricingError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PriceKey::parse(&s)
    }
}

impl From<PriceKey> for String {
    fn from(k: PriceKey) -> String {
        k.0
    }
}

impl fmt::Display for PriceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One tier of a graduated or volume price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Last unit in this tier (inclusive); `None` on the last tier only.
    pub up_to: Option<Decimal>,
    /// Price of one unit in this tier.
    pub unit_price: Decimal,
    /// Fee due once when the quantity enters this tier.
    #[serde(default)]
    pub flat_fee: Decimal,
}

/// How a quantity becomes an amount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PriceModel {
    /// A fixed amount per period, prorated; not attached to a meter.
    Flat {
        /// The amount per full period.
        amount: Decimal,
    },
    /// Every unit at the same price.
    PerUnit {
        /// Price of one unit.
        unit_price: Decimal,
    },
    /// Each slice priced at its tier.
    Graduated {
        /// Tiers in ascending `up_to` order.
        tiers: Vec<Tier>,
    },
    /// Everything priced at the tier the quantity ends in.
    Volume {
        /// Tiers in ascending `up_to` order.
        tiers: Vec<Tier>,
    },
    /// Whole packages of `package_size` units; a partial package counts as a whole one.
    Package {
        /// Units per package.
        package_size: Decimal,
        /// Price of one package.
        package_price: Decimal,
    },
}

impl PriceModel {
    /// The snake_case name, as in the JSON `type`.
    pub fn name(&self) -> &'static str {
        match self {
            PriceModel::Flat { .. } => "flat",
            PriceModel::PerUnit { .. } => "per_unit",
            PriceModel::Graduated { .. } => "graduated",
            PriceModel::Volume { .. } => "volume",
            PriceModel::Package { .. } => "package",
        }
    }
}

/// One price of a plan version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Unique within the plan version; invoice lines and adjustments refer to it.
    pub key: PriceKey,
    /// Shown on invoices.
    pub name: String,
    /// The meter whose usage is priced; `None` for a flat price.
    #[serde(default)]
    pub meter: Option<MeterSlug>,
    /// The model.
    pub model: PriceModel,
    /// Units free per full period (prorated), subtracted before the model applies.
    #[serde(default)]
    pub free_units: Decimal,
    /// Minimum charge per full period (prorated); shortfalls are trued up.
    #[serde(default)]
    pub minimum_amount: Option<Decimal>,
    /// Maximum charge per full period (prorated).
    #[serde(default)]
    pub maximum_amount: Option<Decimal>,
}

/// Longest price name (bytes).
pub const PRICE_NAME_BYTES_MAX: usize = 200;

impl Price {
    /// Checks everything a price must satisfy before it can be published.
    pub fn validate(&self) -> Result<(), PricingError> {
        let bad = |reason: String| {
            Err(PricingError::InvalidPrice {
                reason: format!("price `{}`: {reason}", self.key),
            })
        };
        if self.name.is_empty() || self.name.len() > PRICE_NAME_BYTES_MAX {
            return bad(format!("name must be 1..={PRICE_NAME_BYTES_MAX} bytes"));
        }
        match (&self.model, &self.meter) {
            (PriceModel::Flat { .. }, Some(_)) => {
                return bad("a flat price has no meter".into());
            }
            (PriceModel::Flat { .. }, None) if !self.free_units.is_zero() => {
                return bad("a flat price has no free_units".into());
            }
            (PriceModel::Flat { .. }, None) => {}
            (_, None) => return bad(format!("a {} price needs a meter", self.model.name())),
            _ => {}
        }
        check_amount("free_units", self.free_units)?;
        if let Some(m) = self.minimum_amount {
            check_amount("minimum_amount", m)?;
        }
        if let Some(m) = self.maximum_amount {
            check_amount("maximum_amount", m)?;
        }
        if let (Some(lo), Some(hi)) = (self.minimum_amount, self.maximum_amount)
            && lo > hi
        {
            return bad("minimum_amount is above maximum_amount".into());
        }
        match &self.model {
            PriceModel::Flat { amount } => check_amount("amount", *amount),
            PriceModel::PerUnit { unit_price } => check_amount("unit_price", *unit_price),
            PriceModel::Graduated { tiers } | PriceModel::Volume { tiers } => {
                check_tiers(&self.key, tiers)
            }
            PriceModel::Package {
                package_size,
                package_price,
            } => {
                check_amount("package_size", *package_size)?;
                check_amount("package_price", *package_price)?;
                if package_size.is_zero() {
                    return bad("package_size must be above zero".into());
                }
                Ok(())
            }
        }
    }

    /// Prices `quantity` units of usage for a price active over `proration` of the period.
    pub fn charge(&self, quantity: Decimal, proration: Proration) -> Result<Charge, PricingError> {
        let free_units = proration.apply(self.free_units)?.round_dp_with_strategy(
            PRORATED_UNITS_SCALE,
            rust_decimal::RoundingStrategy::MidpointNearestEven,
        );
        let billable = (quantity - free_units).max(Decimal::ZERO);
        let (mut amount, tiers) = match &self.model {
            PriceModel::Flat { amount } => (proration.apply(*amount)?, Vec::new()),
            PriceModel::PerUnit { unit_price } => (mul(billable, *unit_price)?, Vec::new()),
            PriceModel::Graduated { tiers } => graduated(billable, tiers)?,
            PriceModel::Volume { tiers } => volume(billable, tiers)?,
            PriceModel::Package {
                package_size,
                package_price,
            } => {
                let packages = billable
                    .checked_div(*package_size)
                    .ok_or(PricingError::Overflow)?
                    .ceil();
                (mul(packages, *package_price)?, Vec::new())
            }
        };
        let mut minimum_true_up = Decimal::ZERO;
        if let Some(min) = self.minimum_amount {
            let min = proration.apply(min)?;
            if amount < min {
                minimum_true_up = min - amount;
                amount = min;
            }
        }
        let mut maximum_reduction = Decimal::ZERO;
        if let Some(max) = self.maximum_amount {
            let max = proration.apply(max)?;
            if amount > max {
                maximum_reduction = amount - max;
                amount = max;
            }
        }
        Ok(Charge {
            quantity,
            free_units,
            billable_quantity: billable,
            tiers,
            minimum_true_up,
            maximum_reduction,
            amount,
        })
    }
}

fn check_amount(field: &str, d: Decimal) -> Result<(), PricingError> {
    if d.is_sign_negative() && !d.is_zero() {
        return Err(PricingError::InvalidPrice {
            reason: format!("{field} must not be negative"),
        });
    }
    if d.scale() > PRICE_SCALE_MAX {
        return Err(PricingError::InvalidPrice {
            reason: format!("{field} has more than {PRICE_SCALE_MAX} fractional digits"),
        });
    }
    Ok(())
}

fn check_tiers(key: &PriceKey, tiers: &[Tier]) -> Result<(), PricingError> {
    let bad = |reason: &str| {
        Err(PricingError::InvalidPrice {
            reason: format!("price `{key}`: {reason}"),
        })
    };
    if tiers.is_empty() {
        return bad("needs at least one tier");
    }
    if tiers.len() > PRICE_TIERS_MAX {
        return bad("too many tiers");
    }
    let mut previous = Decimal::ZERO;
    for (i, tier) in tiers.iter().enumerate() {
        check_amount("unit_price", tier.unit_price)?;
        check_amount("flat_fee", tier.flat_fee)?;
        let last = i + 1 == tiers.len();
        match (tier.up_to, last) {
            (None, true) => {}
            (None, false) => return bad("only the last tier may have no up_to"),
            (Some(_), true) => return bad("the last tier must have no up_to"),
            (Some(up_to), false) => {
                check_amount("up_to", up_to)?;
                if up_to <= previous {
                    return bad("up_to must be above zero and strictly ascending");
                }
                previous = up_to;
            }
        }
    }
    Ok(())
}

/// `a × b`, exact or `Overflow`. A decimal keeps 28 significant digits; when the exact product
/// needs more, `checked_mul` drops low digits (the result's scale is below the operands'
/// combined scale). That is exact only when every dropped digit is zero, which is checked on the
/// mantissas: `(ma × mb) mod 10^dropped == 0`.
fn mul(a: Decimal, b: Decimal) -> Result<Decimal, PricingError> {
    let product = a.checked_mul(b).ok_or(PricingError::Overflow)?;
    let full = a.scale() + b.scale();
    if product.scale() >= full {
        return Ok(product);
    }
    let dropped = full - product.scale();
    // 10^19 < 2^64, so the product of two residues fits in u128.
    if dropped > 19 {
        return Err(PricingError::Overflow);
    }
    let m = 10_u128.pow(dropped);
    let residue = (a.mantissa().unsigned_abs() % m) * (b.mantissa().unsigned_abs() % m) % m;
    if residue == 0 {
        Ok(product)
    } else {
        Err(PricingError::Overflow)
    }
}

fn graduated(q: Decimal, tiers: &[Tier]) -> Result<(Decimal, Vec<TierCharge>), PricingError> {
    let mut total = Decimal::ZERO;
    let mut lines = Vec::new();
    let mut below = Decimal::ZERO;
    for tier in tiers {
        if q <= below {
            break;
        }
        let top = tier.up_to.map_or(q, |u| u.min(q));
        let units = top - below;
        let amount = mul(units, tier.unit_price)?
            .checked_add(tier.flat_fee)
            .ok_or(PricingError::Overflow)?;
        total = total.checked_add(amount).ok_or(PricingError::Overflow)?;
        lines.push(TierCharge {
            from: below,
            up_to: tier.up_to,
            units,
            unit_price: tier.unit_price,
            flat_fee: tier.flat_fee,
            amount,
        });
        below = top;
    }
    Ok((total, lines))
}

fn volume(q: Decimal, tiers: &[Tier]) -> Result<(Decimal, Vec<TierCharge>), PricingError> {
    if q.is_zero() {
        return Ok((Decimal::ZERO, Vec::new()));
    }
    let mut from = Decimal::ZERO;
    for tier in tiers {
        if tier.up_to.is_none_or(|u| q <= u) {
            let amount = mul(q, tier.unit_price)?
                .checked_add(tier.flat_fee)
                .ok_or(PricingError::Overflow)?;
            let line = TierCharge {
                from,
                up_to: tier.up_to,
                units: q,
                unit_price: tier.unit_price,
                flat_fee: tier.flat_fee,
                amount,
            };
            return Ok((amount, vec![line]));
        }
        from = tier.up_to.unwrap_or(from);
    }
    // Validation guarantees a last tier without `up_to`.
    Err(PricingError::InvalidPrice {
        reason: "tiers do not end with an open tier".into(),
    })
}

/// The share of a billing period a price was active: `active_seconds / period_seconds`.
/// Kept as a ratio so prorated amounts are computed as `amount × active / period` with one
/// division.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proration {
    /// Seconds the price was billable within the period.
    pub active_seconds: i64,
    /// Seconds in the whole period (in the customer's time zone, so a month with a DST change
    /// is an hour shorter or longer).
    pub period_seconds: i64,
}

impl Proration {
    /// The whole period.
    pub const FULL: Proration = Proration {
        active_seconds: 1,
        period_seconds: 1,
    };

    /// Whether the price was active for the whole period.
    pub fn is_full(&self) -> bool {
        self.active_seconds == self.period_seconds
    }

    /// `amount × active / period`.
    pub fn apply(&self, amount: Decimal) -> Result<Decimal, PricingError> {
        assert!(
            self.period_seconds > 0 && (0..=self.period_seconds).contains(&self.active_seconds),
            "proration {self:?} out of range"
        );
        if self.is_full() {
            return Ok(amount);
        }
        let scaled = amount
            .checked_mul(Decimal::from(self.active_seconds))
            .ok_or(PricingError::Overflow)?;
        scaled
            .checked_div(Decimal::from(self.period_seconds))
            .ok_or(PricingError::Overflow)
    }
}

/// One tier's part of a charge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierCharge {
    /// Units below this tier (exclusive lower bound).
    pub from: Decimal,
    /// The tier's inclusive upper bound.
    pub up_to: Option<Decimal>,
    /// Units priced in this tier.
    pub units: Decimal,
    /// Unit price.
    pub unit_price: Decimal,
    /// Flat fee of the tier.
    pub flat_fee: Decimal,
    /// `units × unit_price + flat_fee`, exact.
    pub amount: Decimal,
}

/// A priced quantity, exact (not yet rounded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// Usage in the period.
    pub quantity: Decimal,
    /// The prorated free allowance.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub free_units: Decimal,
    /// `max(0, quantity − free_units)`.
    pub billable_quantity: Decimal,
    /// Tier breakdown (graduated and volume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierCharge>,
    /// Added to reach the minimum.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub minimum_true_up: Decimal,
    /// Removed by the maximum cap.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub maximum_reduction: Decimal,
    /// The exact amount in major units.
    pub amount: Decimal,
}
