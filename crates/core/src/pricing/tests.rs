//! Tests for pricing: table tests with hand-computed amounts for every model and modifier (the
//! arithmetic is written next to each row), zero usage, huge quantities that must compute
//! exactly or refuse with `Overflow` (never panic), every `Price::validate` error, and
//! properties of the tier breakdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use proptest::prelude::*;

use super::*;
use crate::money::{Currency, round_to_minor};

// ---- helpers ----

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn meter() -> MeterSlug {
    MeterSlug::parse("api_calls").unwrap()
}

fn key(text: &str) -> PriceKey {
    PriceKey::parse(text).unwrap()
}

/// A price with a meter (or none for a flat model) and no modifiers.
fn price(model: PriceModel) -> Price {
    let meter = match model {
        PriceModel::Flat { .. } => None,
        _ => Some(meter()),
    };
    Price {
        key: key("p"),
        name: "Price".into(),
        meter,
        model,
        free_units: Decimal::ZERO,
        minimum_amount: None,
        maximum_amount: None,
    }
}

fn flat(amount: &str) -> PriceModel {
    PriceModel::Flat { amount: d(amount) }
}

fn per_unit(unit_price: &str) -> PriceModel {
    PriceModel::PerUnit {
        unit_price: d(unit_price),
    }
}

fn tier(up_to: Option<&str>, unit_price: &str, flat_fee: &str) -> Tier {
    Tier {
        up_to: up_to.map(d),
        unit_price: d(unit_price),
        flat_fee: d(flat_fee),
    }
}

fn package(size: &str, price: &str) -> PriceModel {
    PriceModel::Package {
        package_size: d(size),
        package_price: d(price),
    }
}

/// 0.10 up to 1000, 0.08 (+5 flat) up to 5000, 0.05 (+10 flat) above.
fn graduated_model() -> PriceModel {
    PriceModel::Graduated {
        tiers: vec![
            tier(Some("1000"), "0.10", "0"),
            tier(Some("5000"), "0.08", "5"),
            tier(None, "0.05", "10"),
        ],
    }
}

/// Everything at 0.10 up to 1000, at 0.08 (+20 flat) up to 5000, at 0.05 (+50 flat) above.
fn volume_model() -> PriceModel {
    PriceModel::Volume {
        tiers: vec![
            tier(Some("1000"), "0.10", "0"),
            tier(Some("5000"), "0.08", "20"),
            tier(None, "0.05", "50"),
        ],
    }
}

fn prorated(active_seconds: i64, period_seconds: i64) -> Proration {
    Proration {
        active_seconds,
        period_seconds,
    }
}

fn charge(p: &Price, quantity: &str, proration: Proration) -> Charge {
    p.charge(d(quantity), proration)
        .unwrap_or_else(|e| panic!("{} at {quantity}: {e}", p.model.name()))
}

/// Asserts the amount of each `(quantity, expected)` row at full proration.
fn check_table(p: &Price, rows: &[(&str, &str)]) {
    p.validate().unwrap();
    for (quantity, want) in rows {
        let c = charge(p, quantity, Proration::FULL);
        assert_eq!(c.amount, d(want), "{} at {quantity}", p.model.name());
        assert_eq!(c.quantity, d(quantity));
    }
}

fn invalid_reason(p: &Price) -> String {
    match p.validate() {
        Err(PricingError::InvalidPrice { reason }) => reason,
        other => panic!("expected InvalidPrice for {p:?}, got {other:?}"),
    }
}

const DAY: i64 = 86_400;

// ---- flat ----

#[test]
fn flat_full_and_prorated() {
    let p = price(flat("30.00"));
    p.validate().unwrap();
    let rows = [
        // The whole period: 30.00.
        (Proration::FULL, "30.00"),
        (prorated(30 * DAY, 30 * DAY), "30.00"),
        // 10 of 30 days: 30.00 × 864000 / 2592000 = 10.
        (prorated(10 * DAY, 30 * DAY), "10"),
        // 1 hour of a 743-hour (DST) March: 30.00 × 3600 / 2674800 = 0.0403768506...
        (prorated(3600, 743 * 3600), "0.0403768506056527590847913863"),
        // Not active at all: 0.
        (prorated(0, 30 * DAY), "0"),
    ];
    for (proration, want) in rows {
        let c = p.charge(Decimal::ZERO, proration).unwrap();
        assert_eq!(c.amount, d(want), "{proration:?}");
        assert!(c.tiers.is_empty());
    }
    // 10.00 × 1/3 = 3.333…: rounded once by the invoice, to 3.33.
    let third = price(flat("10.00"))
        .charge(Decimal::ZERO, prorated(1, 3))
        .unwrap();
    assert_eq!(
        round_to_minor(third.amount, Currency::parse("USD").unwrap()),
        Ok(333)
    );
}

#[test]
fn flat_ignores_usage() {
    let p = price(flat("49.00"));
    for q in ["0", "1", "1000000"] {
        assert_eq!(charge(&p, q, Proration::FULL).amount, d("49.00"));
    }
}

// ---- per unit ----

#[test]
fn per_unit_table() {
    check_table(
        &price(per_unit("0.000002")),
        &[
            // 1 × 0.000002
            ("1", "0.000002"),
            // 1_000_000 × 0.000002 = 2
            ("1000000", "2"),
            // 123_456_789 × 0.000002 = 246.913578
            ("123456789", "246.913578"),
            // 0.5 × 0.000002 = 0.000001
            ("0.5", "0.000001"),
            ("0", "0"),
        ],
    );
    check_table(
        &price(per_unit("0.000000000001")),
        &[
            // 12 fractional digits: 10^12 × 10^-12 = 1
            ("1000000000000", "1"),
            // 3 × 10^-12
            ("3", "0.000000000003"),
            ("0", "0"),
        ],
    );
    check_table(
        &price(per_unit("0.123456789012")),
        &[
            // 1000 × 0.123456789012 = 123.456789012
            ("1000", "123.456789012"),
            // 2.5 × 0.123456789012 = 0.30864197253
            ("2.5", "0.30864197253"),
        ],
    );
    check_table(
        &price(per_unit("0.05")),
        &[
            // 1234.5 × 0.05 = 61.725
            ("1234.5", "61.725"),
        ],
    );
}

#[test]
fn negative_usage_is_not_billable() {
    // A sum meter may go below zero (refund events); nothing is billed and nothing credited.
    let c = charge(&price(per_unit("0.10")), "-50", Proration::FULL);
    assert_eq!(c.billable_quantity, Decimal::ZERO);
    assert_eq!(c.amount, Decimal::ZERO);
}

// ---- graduated ----

#[test]
fn graduated_at_tier_boundaries() {
    check_table(
        &price(graduated_model()),
        &[
            // Nothing used: no tier entered, no flat fee.
            ("0", "0"),
            // 1 × 0.10
            ("1", "0.10"),
            // 999.5 × 0.10 = 99.95
            ("999.5", "99.95"),
            // up_to is inclusive: 1000 × 0.10 = 100, tier 2 not entered (no 5 fee).
            ("1000", "100"),
            // Fractionally above: 100 + 0.5 × 0.08 + 5 = 105.04
            ("1000.5", "105.04"),
            // 100 + 1 × 0.08 + 5 = 105.08
            ("1001", "105.08"),
            // 100 + 4000 × 0.08 + 5 = 425
            ("5000", "425"),
            // 425 + 0.001 × 0.05 + 10 = 435.00005
            ("5000.001", "435.00005"),
            // 425 + 1 × 0.05 + 10 = 435.05
            ("5001", "435.05"),
            // 425 + 5000 × 0.05 + 10 = 685
            ("10000", "685"),
        ],
    );
}

#[test]
fn graduated_breakdown_explains_the_amount() {
    let c = charge(&price(graduated_model()), "5001", Proration::FULL);
    let want = [
        // (from, up_to, units, amount)
        ("0", Some("1000"), "1000", "100"),
        ("1000", Some("5000"), "4000", "325"),
        ("5000", None, "1", "10.05"),
    ];
    assert_eq!(c.tiers.len(), want.len());
    for (t, (from, up_to, units, amount)) in c.tiers.iter().zip(want) {
        assert_eq!(t.from, d(from));
        assert_eq!(t.up_to, up_to.map(d));
        assert_eq!(t.units, d(units));
        assert_eq!(t.amount, d(amount));
    }
    // At the first boundary only the first tier appears.
    let c = charge(&price(graduated_model()), "1000", Proration::FULL);
    assert_eq!(c.tiers.len(), 1);
    assert!(
        charge(&price(graduated_model()), "0", Proration::FULL)
            .tiers
            .is_empty()
    );
}

#[test]
fn graduated_flat_fee_of_the_first_tier_is_due_on_the_first_unit() {
    let p = price(PriceModel::Graduated {
        tiers: vec![tier(Some("10"), "0", "7.50"), tier(None, "1", "0")],
    });
    check_table(
        &p,
        &[
            ("0", "0"),
            // Enters tier 1: 0.001 × 0 + 7.50
            ("0.001", "7.50"),
            ("10", "7.50"),
            // 7.50 + 2 × 1
            ("12", "9.50"),
        ],
    );
}

// ---- volume ----

#[test]
fn volume_at_tier_boundaries() {
    check_table(
        &price(volume_model()),
        &[
            ("0", "0"),
            // 1 × 0.10
            ("1", "0.10"),
            // Inclusive: 1000 × 0.10 = 100
            ("1000", "100"),
            // All at tier 2: 1000.5 × 0.08 + 20 = 80.04 + 20 = 100.04
            ("1000.5", "100.04"),
            // 1001 × 0.08 + 20 = 100.08
            ("1001", "100.08"),
            // 5000 × 0.08 + 20 = 420
            ("5000", "420"),
            // All at tier 3: 5001 × 0.05 + 50 = 250.05 + 50 = 300.05
            ("5001", "300.05"),
        ],
    );
}

#[test]
fn volume_breakdown_is_the_one_tier_reached() {
    let c = charge(&price(volume_model()), "5001", Proration::FULL);
    assert_eq!(c.tiers.len(), 1);
    let t = &c.tiers[0];
    assert_eq!(
        (t.from, t.up_to, t.units, t.flat_fee, t.amount),
        (d("5000"), None, d("5001"), d("50"), d("300.05"))
    );
    let c = charge(&price(volume_model()), "1000.5", Proration::FULL);
    assert_eq!(c.tiers[0].from, d("1000"));
    assert_eq!(c.tiers[0].up_to, Some(d("5000")));
    assert!(
        charge(&price(volume_model()), "0", Proration::FULL)
            .tiers
            .is_empty()
    );
}

#[test]
fn volume_first_tier_flat_fee() {
    let p = price(PriceModel::Volume {
        tiers: vec![tier(Some("100"), "0.5", "3"), tier(None, "0.25", "0")],
    });
    check_table(
        &p,
        &[
            ("0", "0"),
            // 1 × 0.5 + 3
            ("1", "3.5"),
            // 100 × 0.5 + 3 = 53
            ("100", "53"),
            // 101 × 0.25 + 0 = 25.25 (volume pricing can drop at a boundary)
            ("101", "25.25"),
        ],
    );
}

// ---- package ----

#[test]
fn package_rounds_partial_packages_up() {
    check_table(
        &price(package("100", "5")),
        &[
            ("0", "0"),
            // ceil(0.5 / 100) = 1 package
            ("0.5", "5"),
            // ceil(1 / 100) = 1
            ("1", "5"),
            // exactly 1 package
            ("100", "5"),
            // ceil(1.01) = 2 packages = 10
            ("101", "10"),
            // exactly 2
            ("200", "10"),
            // ceil(2.5) = 3 = 15
            ("250", "15"),
        ],
    );
    check_table(
        &price(package("2.5", "0.99")),
        &[
            // 5 / 2.5 = 2 packages × 0.99
            ("5", "1.98"),
            // ceil(5.1 / 2.5) = ceil(2.04) = 3 × 0.99
            ("5.1", "2.97"),
        ],
    );
}

// ---- free allowance ----

#[test]
fn free_allowance_below_at_and_above() {
    let mut p = price(per_unit("0.01"));
    p.free_units = d("1000");
    let rows = [
        // below the allowance: nothing billable
        ("500", "0", "0"),
        // at the allowance: nothing billable
        ("1000", "0", "0"),
        // above: (1500 − 1000) × 0.01 = 5
        ("1500", "500", "5"),
    ];
    for (q, billable, amount) in rows {
        let c = charge(&p, q, Proration::FULL);
        assert_eq!(c.free_units, d("1000"));
        assert_eq!(c.billable_quantity, d(billable), "{q}");
        assert_eq!(c.amount, d(amount), "{q}");
    }
}

#[test]
fn free_allowance_is_prorated() {
    let mut p = price(per_unit("0.01"));
    p.free_units = d("1000");
    // Half the period: 1000 × 1/2 = 500 free; (1500 − 500) × 0.01 = 10.
    let c = charge(&p, "1500", prorated(15 * DAY, 30 * DAY));
    assert_eq!(c.free_units, d("500"));
    assert_eq!(c.billable_quantity, d("1000"));
    assert_eq!(c.amount, d("10"));
    // 10 of 30 days: 1000 × 10/30 = 333.33…; 400 − 333.33… = 66.66…, × 0.01 = 0.666…
    let c = charge(&p, "400", prorated(10 * DAY, 30 * DAY));
    assert_eq!(
        round_to_minor(c.amount, Currency::parse("USD").unwrap()),
        Ok(67)
    );
}

#[test]
fn free_allowance_applies_before_tiers() {
    let mut p = price(graduated_model());
    p.free_units = d("500");
    // billable 1500: 1000 × 0.10 + 500 × 0.08 + 5 = 145
    assert_eq!(charge(&p, "2000", Proration::FULL).amount, d("145"));
    // billable exactly 1000: 100, tier 2 not entered
    assert_eq!(charge(&p, "1500", Proration::FULL).amount, d("100"));
    // Tier bounds are not prorated; the allowance is: 250 free, billable 1250:
    // 100 + 250 × 0.08 + 5 = 125
    assert_eq!(
        charge(&p, "1500", prorated(1, 2)).amount,
        d("125"),
        "tier bounds must not be prorated"
    );
}

// ---- minimum and maximum ----

#[test]
fn minimum_with_true_up() {
    let mut p = price(per_unit("0.01"));
    p.minimum_amount = Some(d("20"));
    p.validate().unwrap();
    let rows = [
        // usage 1000 × 0.01 = 10 < 20: true-up 10
        ("1000", Proration::FULL, "10", "20"),
        // usage exactly at the minimum: no true-up
        ("2000", Proration::FULL, "0", "20"),
        // usage 30 above: no true-up
        ("3000", Proration::FULL, "0", "30"),
        // no usage: the whole minimum is trued up
        ("0", Proration::FULL, "20", "20"),
        // prorated minimum 20 × 15/30 = 10; usage 5 → true-up 5
        ("500", prorated(15 * DAY, 30 * DAY), "5", "10"),
        // prorated minimum 10; usage 12 → none
        ("1200", prorated(15 * DAY, 30 * DAY), "0", "12"),
    ];
    for (q, proration, true_up, amount) in rows {
        let c = charge(&p, q, proration);
        assert_eq!(c.minimum_true_up, d(true_up), "{q} {proration:?}");
        assert_eq!(c.amount, d(amount), "{q} {proration:?}");
        assert_eq!(c.maximum_reduction, Decimal::ZERO);
    }
}

#[test]
fn maximum_caps_the_charge() {
    let mut p = price(per_unit("0.01"));
    p.maximum_amount = Some(d("50"));
    p.validate().unwrap();
    let rows = [
        // 10000 × 0.01 = 100, capped at 50
        ("10000", Proration::FULL, "50", "50"),
        // 4000 × 0.01 = 40 under the cap
        ("4000", Proration::FULL, "0", "40"),
        // exactly at the cap
        ("5000", Proration::FULL, "0", "50"),
        // prorated cap 50 × 1/2 = 25; 40 → 25, reduced by 15
        ("4000", prorated(15 * DAY, 30 * DAY), "15", "25"),
    ];
    for (q, proration, reduction, amount) in rows {
        let c = charge(&p, q, proration);
        assert_eq!(c.maximum_reduction, d(reduction), "{q} {proration:?}");
        assert_eq!(c.amount, d(amount), "{q} {proration:?}");
        assert_eq!(c.minimum_true_up, Decimal::ZERO);
    }
}

#[test]
fn minimum_and_maximum_together() {
    let mut p = price(graduated_model());
    p.minimum_amount = Some(d("50"));
    p.maximum_amount = Some(d("200"));
    p.validate().unwrap();
    // 100 × 0.10 = 10 → trued up to 50
    assert_eq!(charge(&p, "100", Proration::FULL).amount, d("50"));
    // 100 + 1000 × 0.08 + 5 = 185, between the bounds
    assert_eq!(charge(&p, "2000", Proration::FULL).amount, d("185"));
    // 425 → capped at 200
    let c = charge(&p, "5000", Proration::FULL);
    assert_eq!((c.amount, c.maximum_reduction), (d("200"), d("225")));
    // A flat price may carry a minimum too: 10 × 1/2 = 5 is trued up to 20 × 1/2 = 10.
    let mut f = price(flat("10"));
    f.minimum_amount = Some(d("20"));
    f.validate().unwrap();
    let c = f.charge(Decimal::ZERO, prorated(1, 2)).unwrap();
    assert_eq!((c.amount, c.minimum_true_up), (d("10"), d("5")));
}

// ---- zero usage ----

#[test]
fn zero_usage_charges_nothing_in_every_metered_model() {
    let models = [
        per_unit("0.5"),
        graduated_model(),
        volume_model(),
        package("10", "3"),
        // Tier flat fees on the first tier are not due without usage.
        PriceModel::Graduated {
            tiers: vec![tier(Some("5"), "1", "100"), tier(None, "1", "100")],
        },
        PriceModel::Volume {
            tiers: vec![tier(Some("5"), "1", "100"), tier(None, "1", "100")],
        },
    ];
    for model in models {
        let p = price(model);
        p.validate().unwrap();
        for proration in [Proration::FULL, prorated(7, 31)] {
            let c = charge(&p, "0", proration);
            assert_eq!(c.amount, Decimal::ZERO, "{}", p.model.name());
            assert!(c.tiers.is_empty(), "{}", p.model.name());
        }
        // Usage entirely inside the free allowance is zero billable usage too.
        let mut with_free = p.clone();
        with_free.free_units = d("100");
        assert_eq!(
            charge(&with_free, "100", Proration::FULL).amount,
            Decimal::ZERO
        );
    }
}

// ---- huge quantities ----

/// `Ok` must be exact; the only acceptable error is `Overflow`.
fn huge(p: &Price, quantity: Decimal) -> Result<Decimal, PricingError> {
    match p.charge(quantity, Proration::FULL) {
        Ok(c) => Ok(c.amount),
        Err(PricingError::Overflow) => Err(PricingError::Overflow),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn huge_usage_computes_exactly_or_overflows() {
    let q = d("1000000000000000000"); // 10^18 units in one event
    // 10^18 × 0.000002 = 2 × 10^12, exact.
    assert_eq!(
        huge(&price(per_unit("0.000002")), q),
        Ok(d("2000000000000"))
    );
    // 10^18 × 0.000000000001 = 10^6, exact.
    assert_eq!(
        huge(&price(per_unit("0.000000000001")), q),
        Ok(d("1000000"))
    );
    // 10^18 × 0.123456789012 = 123456789012000000, exact.
    assert_eq!(
        huge(&price(per_unit("0.123456789012")), q),
        Ok(d("123456789012000000"))
    );
    // 10^18 × 10^12 = 10^30 > 7.9 × 10^28: overflow.
    assert_eq!(
        huge(&price(per_unit("1000000000000")), q),
        Err(PricingError::Overflow)
    );
    // Graduated: 1000 × 1 + (10^18 − 1000) × 10^11 ≈ 10^29: overflow.
    let g = price(PriceModel::Graduated {
        tiers: vec![
            tier(Some("1000"), "1", "0"),
            tier(None, "100000000000", "0"),
        ],
    });
    assert_eq!(huge(&g, q), Err(PricingError::Overflow));
    // Graduated that fits: 1000 × 1 + (10^18 − 1000) × 0.000002 = 1000 + 1999999999999.998
    // = 2000000000999.998.
    let g = price(PriceModel::Graduated {
        tiers: vec![tier(Some("1000"), "1", "0"), tier(None, "0.000002", "0")],
    });
    assert_eq!(huge(&g, q), Ok(d("2000000000999.998")));
    // Volume: 10^18 × 10^11 = 10^29: overflow; 10^18 × 0.000002 + 7 = 2000000000007.
    let v = price(PriceModel::Volume {
        tiers: vec![
            tier(Some("1000"), "1", "0"),
            tier(None, "100000000000", "0"),
        ],
    });
    assert_eq!(huge(&v, q), Err(PricingError::Overflow));
    let v = price(PriceModel::Volume {
        tiers: vec![tier(Some("1000"), "1", "0"), tier(None, "0.000002", "7")],
    });
    assert_eq!(huge(&v, q), Ok(d("2000000000007")));
    // Package: 10^18 / 1000 = 10^15 packages × 0.5 = 5 × 10^14.
    assert_eq!(
        huge(&price(package("1000", "0.5")), q),
        Ok(d("500000000000000"))
    );
    // Package: 10^18 packages × 10^12 = 10^30: overflow.
    assert_eq!(
        huge(&price(package("1", "1000000000000")), q),
        Err(PricingError::Overflow)
    );
    // A prorated amount that cannot be multiplied by the active seconds: overflow.
    let f = price(flat("79228162514264337593543950335"));
    assert_eq!(
        f.charge(Decimal::ZERO, prorated(2, 3)),
        Err(PricingError::Overflow)
    );
    assert_eq!(PricingError::Overflow.code(), "amount_overflow");
}

#[test]
fn huge_usage_in_tiny_packages_overflows_without_panicking() {
    // 10^18 / 10^-12 = 10^30 packages: does not fit a decimal.
    let p = price(package("0.000000000001", "1"));
    p.validate().unwrap();
    assert_eq!(
        huge(&p, d("1000000000000000000")),
        Err(PricingError::Overflow)
    );
}

#[test]
fn huge_usage_with_many_digits_is_exact_or_overflows() {
    // Exact product: 1234567890123456789 × 123456789012 / 10^13 (31 significant digits).
    let q = d("123456789012345678.9");
    let numerator: i128 = 1_234_567_890_123_456_789_i128 * 123_456_789_012_i128;
    let result = huge(&price(per_unit("0.123456789012")), q);
    if let Ok(amount) = result {
        let scale = amount.scale();
        assert!(scale <= 13, "scale {scale}");
        let exact = amount.mantissa() * 10_i128.pow(13 - scale) == numerator;
        assert!(exact, "{amount} is not the exact product {numerator}e-13");
    }
}

// ---- validation ----

#[test]
fn valid_prices_pass() {
    let mut with_modifiers = price(per_unit("0.000000000001"));
    with_modifiers.free_units = d("100");
    with_modifiers.minimum_amount = Some(d("10"));
    with_modifiers.maximum_amount = Some(d("10"));
    let ok = [
        price(flat("0")),
        price(flat("49.99")),
        price(per_unit("0")),
        with_modifiers,
        price(graduated_model()),
        price(volume_model()),
        price(PriceModel::Graduated {
            tiers: vec![tier(None, "1", "0")],
        }),
        price(package("0.5", "1")),
    ];
    for p in ok {
        assert_eq!(p.validate(), Ok(()), "{p:?}");
    }
}

#[test]
fn validate_rejects_negative_amounts() {
    let mut cases = vec![
        price(flat("-1")),
        price(per_unit("-0.01")),
        price(package("100", "-1")),
        price(package("-100", "1")),
        price(PriceModel::Graduated {
            tiers: vec![tier(Some("10"), "-1", "0"), tier(None, "1", "0")],
        }),
        price(PriceModel::Volume {
            tiers: vec![tier(Some("10"), "1", "-5"), tier(None, "1", "0")],
        }),
        price(PriceModel::Graduated {
            tiers: vec![tier(Some("-10"), "1", "0"), tier(None, "1", "0")],
        }),
    ];
    let mut p = price(per_unit("1"));
    p.free_units = d("-1");
    cases.push(p);
    let mut p = price(per_unit("1"));
    p.minimum_amount = Some(d("-1"));
    cases.push(p);
    let mut p = price(per_unit("1"));
    p.maximum_amount = Some(d("-1"));
    cases.push(p);
    for p in cases {
        let reason = invalid_reason(&p);
        assert!(reason.contains("must not be negative"), "{reason}");
    }
    // Negative zero is zero.
    assert_eq!(price(flat("-0")).validate(), Ok(()));
}

#[test]
fn validate_rejects_more_than_12_fractional_digits() {
    let thirteen = "0.0000000000001";
    let mut cases = vec![
        price(flat(thirteen)),
        price(per_unit(thirteen)),
        price(package(thirteen, "1")),
        price(package("1", thirteen)),
        price(PriceModel::Graduated {
            tiers: vec![tier(Some("10"), thirteen, "0"), tier(None, "1", "0")],
        }),
        price(PriceModel::Volume {
            tiers: vec![tier(Some("10"), "1", "0"), tier(None, "1", thirteen)],
        }),
    ];
    let mut p = price(per_unit("1"));
    p.minimum_amount = Some(d(thirteen));
    cases.push(p);
    for p in cases {
        let reason = invalid_reason(&p);
        assert!(
            reason.contains("more than 12 fractional digits"),
            "{reason}"
        );
    }
    assert_eq!(price(per_unit("0.000000000001")).validate(), Ok(()));
}

#[test]
fn validate_rejects_bad_tiers() {
    let cases = [
        (vec![], "at least one tier"),
        (
            vec![
                tier(Some("2000"), "1", "0"),
                tier(Some("1000"), "1", "0"),
                tier(None, "1", "0"),
            ],
            "strictly ascending",
        ),
        (
            vec![
                tier(Some("1000"), "1", "0"),
                tier(Some("1000"), "1", "0"),
                tier(None, "1", "0"),
            ],
            "strictly ascending",
        ),
        (
            vec![tier(Some("0"), "1", "0"), tier(None, "1", "0")],
            "above zero",
        ),
        (
            vec![tier(Some("1000"), "1", "0"), tier(Some("2000"), "1", "0")],
            "last tier must have no up_to",
        ),
        (
            vec![tier(Some("1000"), "1", "0")],
            "last tier must have no up_to",
        ),
        (
            vec![tier(None, "1", "0"), tier(None, "1", "0")],
            "only the last tier",
        ),
        (
            (0..=PRICE_TIERS_MAX)
                .map(|i| {
                    let up_to = (i + 1).to_string();
                    tier((i < PRICE_TIERS_MAX).then_some(up_to.as_str()), "1", "0")
                })
                .collect(),
            "too many tiers",
        ),
    ];
    for (tiers, want) in cases {
        for model in [
            PriceModel::Graduated {
                tiers: tiers.clone(),
            },
            PriceModel::Volume {
                tiers: tiers.clone(),
            },
        ] {
            let reason = invalid_reason(&price(model));
            assert!(reason.contains(want), "{reason} should mention {want}");
        }
    }
    // Exactly the limit is fine.
    let tiers: Vec<Tier> = (0..PRICE_TIERS_MAX)
        .map(|i| {
            let up_to = (i + 1).to_string();
            tier(
                (i + 1 < PRICE_TIERS_MAX).then_some(up_to.as_str()),
                "1",
                "0",
            )
        })
        .collect();
    assert_eq!(price(PriceModel::Graduated { tiers }).validate(), Ok(()));
}

#[test]
fn validate_rejects_meter_mismatches_and_bounds() {
    let mut flat_with_meter = price(flat("10"));
    flat_with_meter.meter = Some(meter());
    assert!(invalid_reason(&flat_with_meter).contains("a flat price has no meter"));

    let mut flat_with_free = price(flat("10"));
    flat_with_free.free_units = d("5");
    assert!(invalid_reason(&flat_with_free).contains("no free_units"));

    for model in [
        per_unit("1"),
        graduated_model(),
        volume_model(),
        package("1", "1"),
    ] {
        let name = model.name();
        let mut p = price(model);
        p.meter = None;
        let reason = invalid_reason(&p);
        assert!(
            reason.contains(&format!("a {name} price needs a meter")),
            "{reason}"
        );
    }

    let mut min_above_max = price(per_unit("1"));
    min_above_max.minimum_amount = Some(d("10.01"));
    min_above_max.maximum_amount = Some(d("10"));
    assert!(invalid_reason(&min_above_max).contains("minimum_amount is above maximum_amount"));

    assert!(invalid_reason(&price(package("0", "1"))).contains("package_size must be above zero"));

    let mut unnamed = price(per_unit("1"));
    unnamed.name = String::new();
    assert!(invalid_reason(&unnamed).contains("name"));
    let mut long = price(per_unit("1"));
    long.name = "x".repeat(PRICE_NAME_BYTES_MAX + 1);
    assert!(invalid_reason(&long).contains("name"));
    long.name = "x".repeat(PRICE_NAME_BYTES_MAX);
    assert_eq!(long.validate(), Ok(()));

    assert_eq!(
        PricingError::InvalidPrice { reason: "x".into() }.code(),
        "invalid_price"
    );
}

#[test]
fn price_keys() {
    for ok in ["a", "api-calls", "gb_hours2"] {
        assert_eq!(
            PriceKey::parse(ok).map(|k| k.to_string()),
            Ok(ok.to_owned())
        );
    }
    let too_long = "a".repeat(PRICE_KEY_BYTES_MAX + 1);
    for bad in ["", "A", "1a", "a b", "é", too_long.as_str()] {
        assert!(
            matches!(PriceKey::parse(bad), Err(PricingError::InvalidPrice { .. })),
            "{bad}"
        );
    }
}

#[test]
fn price_json_round_trip() {
    let mut p = price(graduated_model());
    p.minimum_amount = Some(d("1.5"));
    let text = serde_json::to_string(&p).unwrap();
    assert!(text.contains(r#""type":"graduated""#), "{text}");
    let back: Price = serde_json::from_str(&text).unwrap();
    assert_eq!(back, p);
}

// ---- properties ----

fn quantity() -> impl Strategy<Value = Decimal> {
    // Up to 10^9 units with up to 3 fractional digits.
    (0_i64..1_000_000_000_000).prop_map(|m| Decimal::new(m, 3))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn graduated_breakdown_sums_to_the_amount(q in quantity()) {
        let c = price(graduated_model()).charge(q, Proration::FULL).unwrap();
        let units: Decimal = c.tiers.iter().map(|t| t.units).sum();
        let amount: Decimal = c.tiers.iter().map(|t| t.amount).sum();
        prop_assert_eq!(units, q);
        prop_assert_eq!(amount, c.amount);
        for t in &c.tiers {
            prop_assert_eq!(t.amount, t.units * t.unit_price + t.flat_fee);
            prop_assert!(t.units > Decimal::ZERO);
        }
    }

    #[test]
    fn graduated_and_package_never_decrease_with_usage(a in quantity(), b in quantity()) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        for model in [graduated_model(), package("7", "1.25"), per_unit("0.000002")] {
            let p = price(model);
            let lo_amount = p.charge(lo, Proration::FULL).unwrap().amount;
            let hi_amount = p.charge(hi, Proration::FULL).unwrap().amount;
            prop_assert!(lo_amount <= hi_amount, "{} {lo} {hi}", p.model.name());
        }
    }

    #[test]
    fn volume_prices_everything_at_one_tier(q in quantity()) {
        let c = price(volume_model()).charge(q, Proration::FULL).unwrap();
        if q.is_zero() {
            prop_assert!(c.tiers.is_empty());
        } else {
            prop_assert_eq!(c.tiers.len(), 1);
            let t = &c.tiers[0];
            prop_assert_eq!(t.units, q);
            prop_assert!(t.from < q && t.up_to.is_none_or(|u| q <= u));
            prop_assert_eq!(t.amount, c.amount);
        }
    }

    #[test]
    fn modifiers_keep_the_amount_within_bounds(
        q in quantity(),
        active in 0_i64..=2_678_400,
    ) {
        let mut p = price(per_unit("0.01"));
        p.free_units = d("1000");
        p.minimum_amount = Some(d("20"));
        p.maximum_amount = Some(d("5000"));
        let proration = prorated(active, 2_678_400);
        let c = p.charge(q, proration).unwrap();
        let min = proration.apply(d("20")).unwrap();
        let max = proration.apply(d("5000")).unwrap();
        prop_assert!(min <= c.amount && c.amount <= max);
        prop_assert!(c.minimum_true_up >= Decimal::ZERO && c.maximum_reduction >= Decimal::ZERO);
        prop_assert!(c.minimum_true_up.is_zero() || c.maximum_reduction.is_zero());
        let usage = c.billable_quantity * d("0.01");
        if c.minimum_true_up > Decimal::ZERO {
            prop_assert_eq!(c.amount, min);
            prop_assert!(usage < min);
        } else if c.maximum_reduction > Decimal::ZERO {
            prop_assert_eq!(c.amount, max);
            prop_assert_eq!(usage - max, c.maximum_reduction);
        } else {
            prop_assert_eq!(c.amount, usage);
        }
    }
}
