//! Tests of entitlement decisions, resolution and limit periods.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;
use crate::billing::{Period, ZoneName};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn metered(limit: &str, enforcement: Enforcement) -> Grant {
    Grant::Metered {
        meter: MeterSlug::parse("bytes-out").unwrap(),
        limit: d(limit),
        period: LimitPeriod::BillingPeriod,
        enforcement,
    }
}

fn used(n: &str) -> Option<Usage> {
    Some(Usage {
        used: d(n),
        period: Some(Period::new(UnixMs(0), UnixMs(1000))),
    })
}

#[test]
fn table_of_decisions() {
    let hard = metered("100", Enforcement::Hard);
    let soft = metered("100", Enforcement::Soft);
    let sessions = Grant::ConcurrentSessions {
        limit: 2,
        enforcement: Enforcement::Hard,
    };
    let on = Grant::Boolean { enabled: true };
    let off = Grant::Boolean { enabled: false };
    let seats = Grant::Static {
        value: StaticValue::Number(d("10")),
    };
    // (grant, amount, used, allowed, reason, remaining)
    type Case<'a> = (
        Option<&'a Grant>,
        &'a str,
        Option<Usage>,
        bool,
        Reason,
        Option<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        (None, "0", None, false, Reason::NotEntitled, None),
        (Some(&on), "0", None, true, Reason::Entitled, None),
        (Some(&off), "0", None, false, Reason::Disabled, None),
        (Some(&seats), "10", None, true, Reason::Entitled, None),
        (
            Some(&seats),
            "11",
            None,
            false,
            Reason::AboveStaticValue,
            None,
        ),
        (
            Some(&hard),
            "0",
            used("99.9"),
            true,
            Reason::WithinLimit,
            Some("0.1"),
        ),
        (
            Some(&hard),
            "0",
            used("100"),
            false,
            Reason::LimitExceeded,
            Some("0"),
        ),
        (
            Some(&hard),
            "10",
            used("90"),
            true,
            Reason::WithinLimit,
            Some("10"),
        ),
        (
            Some(&hard),
            "10.5",
            used("90"),
            false,
            Reason::LimitExceeded,
            Some("10"),
        ),
        (
            Some(&hard),
            "0",
            used("250"),
            false,
            Reason::LimitExceeded,
            Some("0"),
        ),
        (
            Some(&soft),
            "0",
            used("250"),
            true,
            Reason::SoftLimitExceeded,
            Some("0"),
        ),
        (
            Some(&soft),
            "5",
            used("10"),
            true,
            Reason::WithinLimit,
            Some("90"),
        ),
        (
            Some(&sessions),
            "1",
            used("1"),
            true,
            Reason::WithinLimit,
            Some("1"),
        ),
        (
            Some(&sessions),
            "1",
            used("2"),
            false,
            Reason::LimitExceeded,
            Some("0"),
        ),
        (
            Some(&sessions),
            "0",
            used("1"),
            true,
            Reason::WithinLimit,
            Some("1"),
        ),
    ];
    for (i, (grant, amount, usage, allowed, reason, remaining)) in cases.into_iter().enumerate() {
        let got = decide(grant, d(amount), usage);
        assert_eq!(got.allowed, allowed, "case {i}: {got:?}");
        assert_eq!(got.reason, reason, "case {i}: {got:?}");
        assert_eq!(got.remaining, remaining.map(d), "case {i}: {got:?}");
    }
}

#[test]
fn a_zero_limit_allows_nothing() {
    let g = metered("0", Enforcement::Hard);
    assert!(!decide(Some(&g), Decimal::ZERO, used("0")).allowed);
    assert!(!decide(Some(&g), Decimal::ONE, used("0")).allowed);
}

#[test]
fn metered_decisions_say_when_the_limit_resets() {
    let g = metered("10", Enforcement::Hard);
    let got = decide(Some(&g), Decimal::ZERO, used("1"));
    assert_eq!(got.period.map(|p| p.end), Some(UnixMs(1000)));
    assert_eq!(got.limit, Some(d("10")));
    assert_eq!(got.used, Some(d("1")));
}

#[test]
fn overrides_replace_the_plan_grant_and_add_features() {
    let f = |s: &str| FeatureKey::parse(s).unwrap();
    let plan = vec![
        Entitlement {
            feature: f("egress"),
            grant: metered("100", Enforcement::Hard),
        },
        Entitlement {
            feature: f("sso"),
            grant: Grant::Boolean { enabled: false },
        },
    ];
    let overrides = vec![
        Entitlement {
            feature: f("egress"),
            grant: metered("500", Enforcement::Soft),
        },
        Entitlement {
            feature: f("beta"),
            grant: Grant::Boolean { enabled: true },
        },
    ];
    let r = resolve(&plan, &overrides);
    assert_eq!(r.len(), 3);
    assert_eq!(
        r[&f("egress")],
        (metered("500", Enforcement::Soft), GrantSource::Override)
    );
    assert_eq!(r[&f("sso")].1, GrantSource::Plan);
    assert_eq!(r[&f("beta")].1, GrantSource::Override);
}

#[test]
fn lists_are_validated() {
    let f = |s: &str| FeatureKey::parse(s).unwrap();
    let twice = vec![
        Entitlement {
            feature: f("a"),
            grant: Grant::Boolean { enabled: true },
        },
        Entitlement {
            feature: f("a"),
            grant: Grant::Boolean { enabled: false },
        },
    ];
    assert_eq!(
        validate_all(&twice).unwrap_err().code(),
        "invalid_entitlement"
    );
    let negative = vec![Entitlement {
        feature: f("a"),
        grant: metered("-1", Enforcement::Hard),
    }];
    assert_eq!(
        validate_all(&negative).unwrap_err().code(),
        "invalid_entitlement"
    );
    assert_eq!(
        FeatureKey::parse("Bad Key").unwrap_err().code(),
        "invalid_feature"
    );
}

#[test]
fn grants_read_and_write_their_json_form() {
    let json = r#"{"feature":"egress","kind":"metered","meter":"bytes-out","limit":"500000000000","period":"billing_period","enforcement":"hard"}"#;
    let e: Entitlement = serde_json::from_str(json).unwrap();
    assert_eq!(e.grant, {
        let Grant::Metered { meter, .. } = &e.grant else {
            panic!("metered")
        };
        Grant::Metered {
            meter: meter.clone(),
            limit: d("500000000000"),
            period: LimitPeriod::BillingPeriod,
            enforcement: Enforcement::Hard,
        }
    });
    assert_eq!(serde_json::to_string(&e).unwrap(), json);
    let s: Entitlement =
        serde_json::from_str(r#"{"feature":"max-seats","kind":"static","value":100}"#).unwrap();
    assert_eq!(
        s.grant,
        Grant::Static {
            value: StaticValue::Number(d("100"))
        }
    );
}

#[test]
fn limit_periods_follow_the_customer_time_zone() {
    let berlin = ZoneName::parse("Europe/Berlin").unwrap();
    // 2026-03-29T12:00:00Z: the day Berlin moves to summer time (23 hours).
    let now = UnixMs(1_774_785_600_000);
    let day = period_of(LimitPeriod::Day, now, berlin.tz(), None).unwrap();
    assert_eq!(day.start, UnixMs(1_774_738_800_000)); // 2026-03-28T23:00:00Z
    assert_eq!(day.end.0 - day.start.0, 23 * 3_600_000);
    let month = period_of(LimitPeriod::Month, now, berlin.tz(), None).unwrap();
    assert_eq!(month.start, UnixMs(1_772_319_600_000)); // 2026-02-28T23:00:00Z
    assert_eq!(month.end, UnixMs(1_774_994_400_000)); // 2026-03-31T22:00:00Z
    let billing = Period::new(UnixMs(5), UnixMs(10));
    assert_eq!(
        period_of(LimitPeriod::BillingPeriod, now, berlin.tz(), Some(billing)).unwrap(),
        billing
    );
    assert_eq!(
        period_of(LimitPeriod::BillingPeriod, now, berlin.tz(), None).unwrap(),
        month
    );
    let hour = period_of(
        LimitPeriod::Hour,
        UnixMs(3_600_000 * 5 + 7),
        berlin.tz(),
        None,
    )
    .unwrap();
    assert_eq!(
        hour,
        Period::new(UnixMs(3_600_000 * 5), UnixMs(3_600_000 * 6))
    );
}

proptest! {
    /// A hard limit never allows a request that would end above it, and remaining never goes
    /// below zero or above the limit.
    #[test]
    fn hard_limits_hold(limit in 0u64..1_000, used_n in 0u64..2_000, amount in 0u64..500) {
        let g = metered(&limit.to_string(), Enforcement::Hard);
        let got = decide(Some(&g), Decimal::from(amount), used(&used_n.to_string()));
        if got.allowed {
            prop_assert!(used_n + amount <= limit);
            prop_assert!(amount > 0 || used_n < limit);
        } else {
            prop_assert!(used_n + amount > limit || used_n >= limit);
        }
        let remaining = got.remaining.unwrap();
        prop_assert!(remaining >= Decimal::ZERO && remaining <= Decimal::from(limit));
    }
}
