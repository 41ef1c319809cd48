//! Unusual usage: is this hour far above the customer's own recent hours?
//!
//! Method (robust to the spikes it looks for, exact decimals, no floats): take the customer's
//! usage of the meter in each of the `baseline_hours` complete hours before the hour judged
//! (hours without usage count as zero). Let `m` be their median and `mad` the median of the
//! absolute deviations from `m`. The hour is unusual when its usage `x` satisfies
//!
//! ```text
//! x > m + k · max(1.4826 · mad, floor_ratio · m)   and   x ≥ min_usage
//! ```
//!
//! `1.4826 · mad` estimates the standard deviation of normal noise without letting earlier
//! spikes inflate it; the `floor_ratio · m` term keeps perfectly steady traffic (mad = 0) from
//! calling every small wobble unusual; `min_usage` ignores customers too small to matter.
//! Defaults: 24 baseline hours, k = 6, floor_ratio = 0.5 (so steady traffic needs at least
//! 4× its usual hour), min_usage = 1, and at least 12 of the baseline hours must have usage
//! (a customer with no history is never unusual).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Scale from MAD to a standard deviation under normal noise.
const MAD_TO_SIGMA: Decimal = Decimal::from_parts(14826, 0, 0, false, 4);
/// Most baseline hours a rule may ask for (five weeks).
pub const BASELINE_HOURS_MAX: u32 = 840;

/// The method's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnomalyParams {
    /// Complete hours before the judged hour that form the baseline.
    pub baseline_hours: u32,
    /// Fewest baseline hours with usage before anything is judged unusual.
    pub min_active_hours: u32,
    /// How many (robust) standard deviations above the median.
    #[serde(with = "rust_decimal::serde::str")]
    pub k: Decimal,
    /// Spread floor as a share of the median.
    #[serde(with = "rust_decimal::serde::str")]
    pub floor_ratio: Decimal,
    /// Hours below this usage are never unusual.
    #[serde(with = "rust_decimal::serde::str")]
    pub min_usage: Decimal,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        AnomalyParams {
            baseline_hours: 24,
            min_active_hours: 12,
            k: Decimal::from(6),
            floor_ratio: Decimal::new(5, 1),
            min_usage: Decimal::ONE,
        }
    }
}

impl AnomalyParams {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.baseline_hours < 2 || self.baseline_hours > BASELINE_HOURS_MAX {
            return Err("baseline_hours is 2..=840");
        }
        if self.min_active_hours > self.baseline_hours {
            return Err("min_active_hours is at most baseline_hours");
        }
        if self.k <= Decimal::ZERO || self.floor_ratio < Decimal::ZERO {
            return Err("k is above zero and floor_ratio zero or more");
        }
        Ok(())
    }
}

/// The verdict on one hour, with the numbers behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// Whether the hour is unusual.
    pub unusual: bool,
    /// Median of the baseline.
    pub median: Decimal,
    /// Median absolute deviation of the baseline.
    pub mad: Decimal,
    /// The usage above which an hour is unusual.
    pub threshold: Decimal,
}

fn median(sorted: &[Decimal]) -> Decimal {
    let n = sorted.len();
    if n == 0 {
        return Decimal::ZERO;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        sorted[n / 2 - 1] / Decimal::TWO + sorted[n / 2] / Decimal::TWO
    }
}

/// Judges `current` against `baseline` (one value per baseline hour, zeros included).
pub fn judge(baseline: &[Decimal], current: Decimal, params: &AnomalyParams) -> Judgement {
    let mut sorted = baseline.to_vec();
    sorted.sort_unstable();
    let m = median(&sorted);
    let mut dev: Vec<Decimal> = sorted.iter().map(|x| (*x - m).abs()).collect();
    dev.sort_unstable();
    let mad = median(&dev);
    // Saturating: usage near Decimal's range is far above any threshold anyway.
    let spread = mad
        .saturating_mul(MAD_TO_SIGMA)
        .max(params.floor_ratio.saturating_mul(m));
    let threshold = m.saturating_add(params.k.saturating_mul(spread));
    let active = baseline.iter().filter(|x| !x.is_zero()).count();
    let enough = u32::try_from(active).unwrap_or(u32::MAX) >= params.min_active_hours;
    Judgement {
        unusual: enough && current > threshold && current >= params.min_usage,
        median: m,
        mad,
        threshold,
    }
}
