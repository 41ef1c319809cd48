//! The forecast of a running period: its usage so far, extrapolated linearly to the period's
//! end, then priced by the same [`super::draft`] as every invoice.
//!
//! Owns: the extrapolation rule. For each usage key that ends inside or at the end of the
//! running period, `forecast = used × span_length / elapsed`, where `elapsed` is the part of
//! the span already behind `now` (a span not started yet forecasts what it has, i.e. zero).
//! Keys of earlier, ended spans (late usage that adjustments will bill) keep their quantity:
//! nothing more can be used there. Quantities are kept to [`FORECAST_UNITS_SCALE`] fractional
//! digits (half to even). Does not own: pricing, rounding of money, where usage comes from.
//!
//! Invariants: a forecast is never below the usage so far; at or after a span's end it equals
//! the usage so far.

use rust_decimal::{Decimal, RoundingStrategy};

use super::UsageTable;
use crate::time::UnixMs;

/// Fractional digits kept on a forecast quantity.
pub const FORECAST_UNITS_SCALE: u32 = 6;

/// Extrapolates every key of `usage` to the end of its span, as seen at `now`.
pub fn extrapolate(usage: &UsageTable, now: UnixMs) -> UsageTable {
    usage
        .iter()
        .map(|(key, used)| {
            let span_ms = key.span.end.0 - key.span.start.0;
            let elapsed_ms = now.0.clamp(key.span.start.0, key.span.end.0) - key.span.start.0;
            let forecast = if elapsed_ms <= 0 || elapsed_ms >= span_ms {
                *used
            } else {
                used.checked_mul(Decimal::from(span_ms))
                    .and_then(|x| x.checked_div(Decimal::from(elapsed_ms)))
                    .map_or(*used, |x| {
                        x.round_dp_with_strategy(
                            FORECAST_UNITS_SCALE,
                            RoundingStrategy::MidpointNearestEven,
                        )
                    })
            };
            assert!(
                forecast >= *used,
                "a forecast is never below the usage so far"
            );
            (key.clone(), forecast)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::billing::Period;
    use crate::invoice::UsageKey;
    use crate::meter::MeterSlug;

    fn key(start: i64, end: i64) -> UsageKey {
        UsageKey {
            meter: MeterSlug::parse("bytes").unwrap(),
            span: Period::new(UnixMs(start), UnixMs(end)),
        }
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn extrapolates_linearly_inside_the_span() {
        let usage = UsageTable::from([(key(0, 30_000), d("10"))]);
        let f = extrapolate(&usage, UnixMs(10_000));
        assert_eq!(f[&key(0, 30_000)], d("30"));
        let f = extrapolate(&usage, UnixMs(20_000));
        assert_eq!(f[&key(0, 30_000)], d("15"));
    }

    #[test]
    fn keeps_six_digits_half_to_even() {
        let usage = UsageTable::from([(key(0, 3), d("1"))]);
        // 1 × 3 / 2 = 1.5 exactly; 1 × 3 / 1 = 3.
        assert_eq!(extrapolate(&usage, UnixMs(2))[&key(0, 3)], d("1.5"));
        let usage = UsageTable::from([(key(0, 7), d("1"))]);
        // 7 / 3 = 2.333333…
        assert_eq!(extrapolate(&usage, UnixMs(3))[&key(0, 7)], d("2.333333"));
    }

    #[test]
    fn ended_and_unstarted_spans_keep_their_usage() {
        let usage = UsageTable::from([(key(0, 100), d("7")), (key(200, 300), d("0"))]);
        let f = extrapolate(&usage, UnixMs(150));
        assert_eq!(f[&key(0, 100)], d("7"), "ended: nothing more can be used");
        assert_eq!(f[&key(200, 300)], d("0"), "not started");
    }

    #[test]
    fn zero_usage_forecasts_zero() {
        let usage = UsageTable::from([(key(0, 100), d("0"))]);
        assert_eq!(extrapolate(&usage, UnixMs(50))[&key(0, 100)], d("0"));
    }
}
