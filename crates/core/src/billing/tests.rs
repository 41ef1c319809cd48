//! Tests for billing: cycle periods (anchors on the 31st and on Feb 29, zones at UTC−12 and
//! UTC+14, DST months in Berlin and New York, boundaries), subscriptions (creation, changes and
//! their errors, segments with trials, plan changes and cancellations, status), proration across
//! a DST change, and customer, plan and key validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::date;

use super::*;
use crate::pricing::{PriceKey, PriceModel};

// ---- helpers ----

fn at(text: &str) -> UnixMs {
    UnixMs::from_timestamp(text.parse::<Timestamp>().unwrap())
}

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn period(start: &str, end: &str) -> Period {
    Period::new(at(start), at(end))
}

fn customer(zone: &str, anchor: Date) -> Customer {
    Customer {
        key: CustomerKey::parse("acme").unwrap(),
        name: "Acme Inc.".into(),
        email: Some("billing@acme.test".into()),
        currency: Currency::parse("USD").unwrap(),
        time_zone: ZoneName::parse(zone).unwrap(),
        billing_anchor: anchor,
        tax_rate: d("0.19"),
        metadata: BTreeMap::new(),
        created_ms: UnixMs(0),
    }
}

/// Successive periods from the one containing `from`.
fn periods(cycle: &Cycle<'_>, from: UnixMs, n: usize) -> Vec<Period> {
    let mut out = Vec::new();
    let mut p = cycle.period_containing(from).unwrap();
    for _ in 0..n {
        out.push(p);
        p = cycle.period_containing(p.end).unwrap();
    }
    out
}

fn texts(ps: &[Period]) -> Vec<(String, String)> {
    ps.iter()
        .map(|p| (p.start.to_rfc3339(), p.end.to_rfc3339()))
        .collect()
}

fn plan(key: &str) -> PlanKey {
    PlanKey::parse(key).unwrap()
}

fn phase(key: &str, version: u32, start: &str) -> Phase {
    Phase {
        plan: plan(key),
        version,
        start: at(start),
    }
}

fn subscription(start: &str, trial_end: Option<&str>) -> Subscription {
    Subscription::new(
        SubscriptionId("sub_0000000000000001".into()),
        CustomerKey::parse("acme").unwrap(),
        phase("basic", 1, start),
        trial_end.map(at),
        at(start),
    )
    .unwrap()
}

fn change(at_text: &str, key: &str, version: u32) -> SubscriptionChange {
    SubscriptionChange::ChangePlan {
        at: at(at_text),
        plan: plan(key),
        version,
    }
}

fn cancel(at_text: &str) -> SubscriptionChange {
    SubscriptionChange::Cancel { at: at(at_text) }
}

/// Segments as (plan, version, start, end) texts.
fn segment_texts(sub: &Subscription, p: &Period) -> Vec<(String, u32, String, String)> {
    sub.segments(p)
        .iter()
        .map(|s| {
            (
                s.phase.plan.to_string(),
                s.phase.version,
                s.span.start.to_rfc3339(),
                s.span.end.to_rfc3339(),
            )
        })
        .collect()
}

fn seg(plan: &str, version: u32, start: &str, end: &str) -> (String, u32, String, String) {
    (plan.into(), version, start.into(), end.into())
}

const HOUR_S: i64 = 3600;
const DAY_S: i64 = 86_400;

// ---- cycles ----

#[test]
fn monthly_periods_in_utc_are_calendar_months() {
    let c = customer("UTC", date(2026, 1, 1));
    let cycle = Cycle::new(&c, Interval::Month);
    let ps = periods(&cycle, at("2026-01-15T12:00:00Z"), 3);
    assert_eq!(
        ps,
        vec![
            period("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
            period("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
            period("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
        ]
    );
    assert_eq!(
        ps.iter().map(Period::seconds).collect::<Vec<_>>(),
        vec![31 * DAY_S, 28 * DAY_S, 31 * DAY_S]
    );
    // Periods before the anchor follow the same rule.
    assert_eq!(
        cycle.period_containing(at("2025-12-31T23:59:59.999Z")),
        Ok(period("2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"))
    );
}

#[test]
fn anchor_on_the_31st_is_kept_after_short_months() {
    let c = customer("UTC", date(2026, 1, 31));
    let cycle = Cycle::new(&c, Interval::Month);
    let starts: Vec<String> = periods(&cycle, at("2026-01-31T00:00:00Z"), 13)
        .iter()
        .map(|p| p.start.to_rfc3339())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-01-31T00:00:00Z",
            "2026-02-28T00:00:00Z",
            // Back to the 31st, not the 28th: each start is computed from the anchor.
            "2026-03-31T00:00:00Z",
            "2026-04-30T00:00:00Z",
            "2026-05-31T00:00:00Z",
            "2026-06-30T00:00:00Z",
            "2026-07-31T00:00:00Z",
            "2026-08-31T00:00:00Z",
            "2026-09-30T00:00:00Z",
            "2026-10-31T00:00:00Z",
            "2026-11-30T00:00:00Z",
            "2026-12-31T00:00:00Z",
            "2027-01-31T00:00:00Z",
        ]
    );
    // Leap year: February 29 2028.
    assert_eq!(
        texts(&periods(&cycle, at("2028-02-15T00:00:00Z"), 2)),
        texts(&[
            period("2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z"),
            period("2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z"),
        ])
    );
    // Early in a month the period started on the previous month's anchor day.
    assert_eq!(
        cycle.period_containing(at("2026-03-01T00:00:00Z")),
        Ok(period("2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"))
    );
}

#[test]
fn yearly_anchor_on_february_29() {
    let c = customer("UTC", date(2028, 2, 29));
    let cycle = Cycle::new(&c, Interval::Year);
    assert_eq!(
        texts(&periods(&cycle, at("2028-06-01T00:00:00Z"), 4)),
        texts(&[
            period("2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"),
            period("2029-02-28T00:00:00Z", "2030-02-28T00:00:00Z"),
            period("2030-02-28T00:00:00Z", "2031-02-28T00:00:00Z"),
            period("2031-02-28T00:00:00Z", "2032-02-29T00:00:00Z"),
        ])
    );
    assert_eq!(
        cycle
            .period_containing(at("2028-02-29T00:00:00Z"))
            .map(|p| p.seconds()),
        Ok(365 * DAY_S)
    );
}

#[test]
fn periods_start_at_local_midnight_at_utc_minus_12() {
    // Etc/GMT+12 is UTC−12: local midnight is noon UTC of the same date.
    let c = customer("Etc/GMT+12", date(2026, 1, 1));
    let cycle = Cycle::new(&c, Interval::Month);
    assert_eq!(
        cycle.period_containing(at("2026-01-15T00:00:00Z")),
        Ok(period("2026-01-01T12:00:00Z", "2026-02-01T12:00:00Z"))
    );
    // Still December there.
    assert_eq!(
        cycle.period_containing(at("2026-01-01T11:59:59.999Z")),
        Ok(period("2025-12-01T12:00:00Z", "2026-01-01T12:00:00Z"))
    );
    assert_eq!(
        cycle.period_starting_in(2026, 1),
        Ok(Some(period("2026-01-01T12:00:00Z", "2026-02-01T12:00:00Z")))
    );
}

#[test]
fn periods_start_at_local_midnight_at_utc_plus_14() {
    // Pacific/Kiritimati is UTC+14: local midnight is 10:00 UTC of the previous date.
    let c = customer("Pacific/Kiritimati", date(2026, 1, 1));
    let cycle = Cycle::new(&c, Interval::Month);
    assert_eq!(
        cycle.period_containing(at("2026-01-15T00:00:00Z")),
        Ok(period("2025-12-31T10:00:00Z", "2026-01-31T10:00:00Z"))
    );
    // Already February there.
    assert_eq!(
        cycle.period_containing(at("2026-01-31T10:00:00Z")),
        Ok(period("2026-01-31T10:00:00Z", "2026-02-28T10:00:00Z"))
    );
    assert_eq!(
        cycle.period_starting_in(2026, 2),
        Ok(Some(period("2026-01-31T10:00:00Z", "2026-02-28T10:00:00Z")))
    );
    // The same calendar month lasts the same in both zones, 26 hours apart.
    let west = customer("Etc/GMT+12", date(2026, 1, 1));
    let west_jan = Cycle::new(&west, Interval::Month)
        .period_starting_in(2026, 1)
        .unwrap()
        .unwrap();
    let east_jan = cycle.period_starting_in(2026, 1).unwrap().unwrap();
    assert_eq!(west_jan.start.0 - east_jan.start.0, 26 * HOUR_S * 1000);
    assert_eq!(west_jan.seconds(), east_jan.seconds());
}

#[test]
fn dst_months_in_berlin() {
    let c = customer("Europe/Berlin", date(2026, 1, 1));
    let cycle = Cycle::new(&c, Interval::Month);
    // March 2026: CET until Mar 29, CEST after. Midnight Mar 1 CET = Feb 28 23:00 UTC;
    // midnight Apr 1 CEST = Mar 31 22:00 UTC. 31 × 24 − 1 = 743 hours.
    let march = cycle.period_starting_in(2026, 3).unwrap().unwrap();
    assert_eq!(
        march,
        period("2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z")
    );
    assert_eq!(march.seconds(), 743 * HOUR_S);
    // October 2026: back to CET on Oct 25. 31 × 24 + 1 = 745 hours.
    let october = cycle.period_starting_in(2026, 10).unwrap().unwrap();
    assert_eq!(
        october,
        period("2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z")
    );
    assert_eq!(october.seconds(), 745 * HOUR_S);
    // A month without a change: 30 × 24 = 720 hours.
    let april = cycle.period_starting_in(2026, 4).unwrap().unwrap();
    assert_eq!(april.seconds(), 720 * HOUR_S);
}

#[test]
fn dst_months_in_new_york() {
    let c = customer("America/New_York", date(2026, 1, 1));
    let cycle = Cycle::new(&c, Interval::Month);
    // March 2026: EST (−5) until Mar 8, EDT (−4) after: 743 hours.
    let march = cycle.period_starting_in(2026, 3).unwrap().unwrap();
    assert_eq!(
        march,
        period("2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z")
    );
    assert_eq!(march.seconds(), 743 * HOUR_S);
    // November 2026: EDT until Nov 1, EST after: 30 × 24 + 1 = 721 hours.
    let november = cycle.period_starting_in(2026, 11).unwrap().unwrap();
    assert_eq!(
        november,
        period("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z")
    );
    assert_eq!(november.seconds(), 721 * HOUR_S);
}

#[test]
fn period_starting_in_monthly_and_yearly() {
    let c = customer("UTC", date(2026, 1, 15));
    let monthly = Cycle::new(&c, Interval::Month);
    assert_eq!(
        monthly.period_starting_in(2026, 3),
        Ok(Some(period("2026-03-15T00:00:00Z", "2026-04-15T00:00:00Z")))
    );
    // Before the anchor too.
    assert_eq!(
        monthly.period_starting_in(2025, 6),
        Ok(Some(period("2025-06-15T00:00:00Z", "2025-07-15T00:00:00Z")))
    );
    let c31 = customer("UTC", date(2026, 1, 31));
    assert_eq!(
        Cycle::new(&c31, Interval::Month).period_starting_in(2026, 2),
        Ok(Some(period("2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z")))
    );

    let c = customer("UTC", date(2026, 3, 15));
    let yearly = Cycle::new(&c, Interval::Year);
    assert_eq!(
        yearly.period_starting_in(2026, 3),
        Ok(Some(period("2026-03-15T00:00:00Z", "2027-03-15T00:00:00Z")))
    );
    assert_eq!(
        yearly.period_starting_in(2027, 3),
        Ok(Some(period("2027-03-15T00:00:00Z", "2028-03-15T00:00:00Z")))
    );
    for month in [1, 2, 4, 12] {
        assert_eq!(yearly.period_starting_in(2027, month), Ok(None), "{month}");
    }
    let leap = customer("UTC", date(2028, 2, 29));
    assert_eq!(
        Cycle::new(&leap, Interval::Year).period_starting_in(2029, 2),
        Ok(Some(period("2029-02-28T00:00:00Z", "2030-02-28T00:00:00Z")))
    );
    // Not a month.
    assert_eq!(
        yearly.period_starting_in(2027, 13),
        Err(BillingError::OutOfRange)
    );
    assert_eq!(BillingError::OutOfRange.code(), "date_out_of_range");
}

#[test]
fn period_containing_at_exact_boundaries() {
    for (zone, anchor) in [
        ("UTC", date(2026, 1, 31)),
        ("Europe/Berlin", date(2026, 1, 1)),
        ("Pacific/Kiritimati", date(2026, 1, 10)),
        ("Etc/GMT+12", date(2026, 1, 10)),
    ] {
        let c = customer(zone, anchor);
        for interval in [Interval::Month, Interval::Year] {
            let cycle = Cycle::new(&c, interval);
            let p = cycle.period_containing(at("2026-06-15T00:00:00Z")).unwrap();
            // The start belongs to the period.
            assert_eq!(cycle.period_containing(p.start), Ok(p), "{zone}");
            // The last millisecond too.
            assert_eq!(
                cycle.period_containing(UnixMs(p.end.0 - 1)),
                Ok(p),
                "{zone}"
            );
            // The end starts the next period.
            let next = cycle.period_containing(p.end).unwrap();
            assert_eq!(next.start, p.end, "{zone}");
            assert!(p.contains(p.start) && !p.contains(p.end));
            // And the one before ends where this one starts.
            let previous = cycle.period_containing(UnixMs(p.start.0 - 1)).unwrap();
            assert_eq!(previous.end, p.start, "{zone}");
            assert!(p.start.is_minute_aligned() && p.end.is_minute_aligned());
        }
    }
}

#[test]
fn period_arithmetic() {
    let p = period("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z");
    let q = period("2026-01-20T00:00:00Z", "2026-03-01T00:00:00Z");
    assert_eq!(
        p.intersect(&q),
        Some(period("2026-01-20T00:00:00Z", "2026-02-01T00:00:00Z"))
    );
    // Touching periods do not overlap.
    let r = period("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z");
    assert_eq!(p.intersect(&r), None);
    assert_eq!(
        period("2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z").seconds(),
        60
    );
    assert_eq!(Period::new(UnixMs(0), UnixMs(1999)).seconds(), 1);
    assert_eq!(floor_minute(UnixMs(-1)), UnixMs(-60_000));
    assert_eq!(floor_minute(UnixMs(119_999)), UnixMs(60_000));
}

#[test]
#[should_panic(expected = "is not before end")]
fn an_empty_period_is_a_bug() {
    let t = at("2026-01-01T00:00:00Z");
    let _ = Period::new(t, t);
}

// ---- subscriptions ----

#[test]
fn new_subscription_checks_start_and_trial() {
    let new = |start: &str, trial: Option<&str>| {
        Subscription::new(
            SubscriptionId("sub_1".into()),
            CustomerKey::parse("acme").unwrap(),
            phase("basic", 1, start),
            trial.map(at),
            UnixMs(0),
        )
    };
    let field = |r: Result<Subscription, BillingError>| match r {
        Err(BillingError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(field(new("2026-01-01T00:00:30Z", None)), "start");
    assert_eq!(field(new("2026-01-01T00:00:00.001Z", None)), "start");
    assert_eq!(
        field(new("2026-01-01T00:00:00Z", Some("2026-01-10T00:00:01Z"))),
        "trial_end"
    );
    assert_eq!(
        field(new("2026-01-10T00:00:00Z", Some("2026-01-09T23:59:00Z"))),
        "trial_end"
    );
    // A trial ending at the start is no trial, but allowed.
    let s = new("2026-01-10T00:00:00Z", Some("2026-01-10T00:00:00Z")).unwrap();
    assert_eq!(s.phases.len(), 1);
    assert_eq!(s.ends_at, None);
    assert_eq!(s.start(), at("2026-01-10T00:00:00Z"));
    assert_eq!(
        new("2026-01-01T00:00:30Z", None)
            .map_err(|e| e.code())
            .err(),
        Some("invalid_field")
    );
}

#[test]
fn change_plan_rules() {
    let mut s = subscription("2026-01-01T00:00:00Z", None);
    // A later change opens a new phase.
    s.apply(change("2026-01-11T00:00:00Z", "pro", 1)).unwrap();
    assert_eq!(s.phases.len(), 2);
    assert_eq!(s.phases[1], phase("pro", 1, "2026-01-11T00:00:00Z"));
    // A change at the start of the current phase replaces it.
    s.apply(change("2026-01-11T00:00:00Z", "pro", 2)).unwrap();
    assert_eq!(s.phases.len(), 2);
    assert_eq!(s.phases[1], phase("pro", 2, "2026-01-11T00:00:00Z"));

    let before = s.clone();
    let errors = [
        // Not a whole minute.
        change("2026-01-20T00:00:30Z", "basic", 1),
        // Before the current phase starts.
        change("2026-01-10T23:59:00Z", "basic", 1),
    ];
    for e in errors {
        assert!(s.apply(e).is_err());
        assert_eq!(s, before, "unchanged on error");
    }
    assert!(matches!(
        s.apply(change("2026-01-20T00:00:30Z", "basic", 1)),
        Err(BillingError::Invalid { field: "at", .. })
    ));
    assert!(matches!(
        s.apply(change("2026-01-10T23:59:00Z", "basic", 1)),
        Err(BillingError::Conflict { .. })
    ));

    // After cancellation, no change at or after the end.
    s.apply(cancel("2026-02-01T00:00:00Z")).unwrap();
    let before = s.clone();
    for t in ["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"] {
        assert!(matches!(
            s.apply(change(t, "basic", 1)),
            Err(BillingError::Conflict { .. })
        ));
        assert_eq!(s, before);
    }
    // Before the end is fine.
    s.apply(change("2026-01-31T23:59:00Z", "basic", 1)).unwrap();
    assert_eq!(s.phases.len(), 3);
    assert_eq!(
        BillingError::Conflict { reason: "x".into() }.code(),
        "conflict"
    );
}

#[test]
fn cancel_rules() {
    let mut s = subscription("2026-01-01T00:00:00Z", None);
    s.apply(change("2026-01-11T00:00:00Z", "pro", 1)).unwrap();
    let before = s.clone();
    assert!(matches!(
        s.apply(cancel("2026-01-20T00:00:01Z")),
        Err(BillingError::Invalid { field: "at", .. })
    ));
    // At or before the current phase's start.
    for t in ["2026-01-11T00:00:00Z", "2026-01-05T00:00:00Z"] {
        assert!(matches!(
            s.apply(cancel(t)),
            Err(BillingError::Conflict { .. })
        ));
    }
    assert_eq!(s, before);
    s.apply(cancel("2026-01-20T00:00:00Z")).unwrap();
    assert_eq!(s.ends_at, Some(at("2026-01-20T00:00:00Z")));
    // Cancelling again at or after the end conflicts; an earlier end is accepted.
    for t in ["2026-01-20T00:00:00Z", "2026-02-01T00:00:00Z"] {
        assert!(matches!(
            s.apply(cancel(t)),
            Err(BillingError::Conflict { .. })
        ));
    }
    s.apply(cancel("2026-01-15T00:00:00Z")).unwrap();
    assert_eq!(s.ends_at, Some(at("2026-01-15T00:00:00Z")));
}

#[test]
fn phases_are_limited() {
    let mut s = subscription("2026-01-01T00:00:00Z", None);
    let start = s.start();
    for i in 1..SUBSCRIPTION_PHASES_MAX {
        let t = UnixMs(start.0 + i64::try_from(i).unwrap() * MINUTE_MS);
        s.apply(SubscriptionChange::ChangePlan {
            at: t,
            plan: plan("basic"),
            version: u32::try_from(i).unwrap(),
        })
        .unwrap();
    }
    assert_eq!(s.phases.len(), SUBSCRIPTION_PHASES_MAX);
    let t = UnixMs(start.0 + 10_000 * MINUTE_MS);
    let r = s.apply(SubscriptionChange::ChangePlan {
        at: t,
        plan: plan("basic"),
        version: 9999,
    });
    assert!(matches!(r, Err(BillingError::Conflict { .. })), "{r:?}");
    assert_eq!(s.phases.len(), SUBSCRIPTION_PHASES_MAX);
}

#[test]
fn segments_cover_the_billable_part_of_a_period() {
    let jan = period("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z");
    let feb = period("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z");

    // Whole period.
    let s = subscription("2025-12-10T00:00:00Z", None);
    assert_eq!(
        segment_texts(&s, &jan),
        vec![seg(
            "basic",
            1,
            "2026-01-01T00:00:00Z",
            "2026-02-01T00:00:00Z"
        )]
    );

    // Starting mid-period.
    let s = subscription("2026-01-10T08:30:00Z", None);
    assert_eq!(
        segment_texts(&s, &jan),
        vec![seg(
            "basic",
            1,
            "2026-01-10T08:30:00Z",
            "2026-02-01T00:00:00Z"
        )]
    );
    // Nothing before the start.
    let dec = period("2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z");
    assert!(s.segments(&dec).is_empty());

    // Trial ending mid-period: billable after the trial only.
    let s = subscription("2026-01-01T00:00:00Z", Some("2026-01-15T00:00:00Z"));
    assert_eq!(
        segment_texts(&s, &jan),
        vec![seg(
            "basic",
            1,
            "2026-01-15T00:00:00Z",
            "2026-02-01T00:00:00Z"
        )]
    );
    // Trial covering the whole period: nothing billable.
    let s = subscription("2026-01-01T00:00:00Z", Some("2026-02-01T00:00:00Z"));
    assert!(s.segments(&jan).is_empty());
    assert!(s.overlaps(&jan), "the trial overlaps the period");
    assert_eq!(segment_texts(&s, &feb).len(), 1);

    // Plan change mid-period: two segments meeting at the change.
    let mut s = subscription("2026-01-01T00:00:00Z", None);
    s.apply(change("2026-01-11T12:34:00Z", "pro", 3)).unwrap();
    assert_eq!(
        segment_texts(&s, &jan),
        vec![
            seg("basic", 1, "2026-01-01T00:00:00Z", "2026-01-11T12:34:00Z"),
            seg("pro", 3, "2026-01-11T12:34:00Z", "2026-02-01T00:00:00Z"),
        ]
    );
    let total: i64 = s.segments(&jan).iter().map(|x| x.span.seconds()).sum();
    assert_eq!(total, jan.seconds());
    // The next period is all on the new plan.
    assert_eq!(
        segment_texts(&s, &feb),
        vec![seg(
            "pro",
            3,
            "2026-02-01T00:00:00Z",
            "2026-03-01T00:00:00Z"
        )]
    );

    // Plan change during the trial: the first phase is never billable.
    let mut s = subscription("2026-01-01T00:00:00Z", Some("2026-01-15T00:00:00Z"));
    s.apply(change("2026-01-10T00:00:00Z", "pro", 1)).unwrap();
    assert_eq!(
        segment_texts(&s, &jan),
        vec![seg(
            "pro",
            1,
            "2026-01-15T00:00:00Z",
            "2026-02-01T00:00:00Z"
        )]
    );

    // Cancellation mid-period, after a plan change.
    let mut s = subscription("2026-01-01T00:00:00Z", None);
    s.apply(change("2026-01-11T00:00:00Z", "pro", 1)).unwrap();
    s.apply(cancel("2026-01-21T00:00:00Z")).unwrap();
    assert_eq!(
        segment_texts(&s, &jan),
        vec![
            seg("basic", 1, "2026-01-01T00:00:00Z", "2026-01-11T00:00:00Z"),
            seg("pro", 1, "2026-01-11T00:00:00Z", "2026-01-21T00:00:00Z"),
        ]
    );
    assert!(s.segments(&feb).is_empty());
    assert!(!s.overlaps(&feb));
    assert!(s.overlaps(&jan));
}

#[test]
fn status_and_phase_at() {
    let mut s = subscription("2026-01-01T00:00:00Z", Some("2026-01-15T00:00:00Z"));
    s.apply(change("2026-01-20T00:00:00Z", "pro", 1)).unwrap();
    s.apply(cancel("2026-02-01T00:00:00Z")).unwrap();
    let rows = [
        (
            "2025-12-31T23:59:59.999Z",
            SubscriptionStatus::Scheduled,
            None,
        ),
        (
            "2026-01-01T00:00:00Z",
            SubscriptionStatus::Trialing,
            Some("basic"),
        ),
        (
            "2026-01-14T23:59:59.999Z",
            SubscriptionStatus::Trialing,
            Some("basic"),
        ),
        (
            "2026-01-15T00:00:00Z",
            SubscriptionStatus::Active,
            Some("basic"),
        ),
        (
            "2026-01-20T00:00:00Z",
            SubscriptionStatus::Active,
            Some("pro"),
        ),
        (
            "2026-01-31T23:59:59.999Z",
            SubscriptionStatus::Active,
            Some("pro"),
        ),
        ("2026-02-01T00:00:00Z", SubscriptionStatus::Ended, None),
    ];
    for (t, status, plan_key) in rows {
        assert_eq!(s.status(at(t)), status, "{t}");
        assert_eq!(s.phase_at(at(t)).map(|p| p.plan.as_str()), plan_key, "{t}");
    }
    let plain = subscription("2026-01-01T00:00:00Z", None);
    assert_eq!(
        plain.status(at("2030-01-01T00:00:00Z")),
        SubscriptionStatus::Active
    );
}

#[test]
fn proration_across_a_dst_change_sums_to_the_period() {
    let c = customer("Europe/Berlin", date(2026, 1, 1));
    let march = Cycle::new(&c, Interval::Month)
        .period_starting_in(2026, 3)
        .unwrap()
        .unwrap();
    assert_eq!(march.seconds(), 743 * HOUR_S);
    // Change at local midnight of March 16 (CET, UTC+1): 2026-03-15T23:00:00Z.
    let mut s = subscription("2026-01-01T00:00:00Z", None);
    s.apply(change("2026-03-15T23:00:00Z", "pro", 1)).unwrap();
    let segments = s.segments(&march);
    let seconds: Vec<i64> = segments.iter().map(|x| x.span.seconds()).collect();
    // 15 local days of 24 hours before; 16 days less the lost hour after.
    assert_eq!(seconds, vec![360 * HOUR_S, 383 * HOUR_S]);
    assert_eq!(seconds.iter().sum::<i64>(), march.seconds());
    // A 743.00 flat fee splits into 360.00 + 383.00.
    let shares: Vec<Decimal> = seconds
        .iter()
        .map(|&active| {
            crate::pricing::Proration {
                active_seconds: active,
                period_seconds: march.seconds(),
            }
            .apply(d("743.00"))
            .unwrap()
        })
        .collect();
    assert_eq!(shares, vec![d("360"), d("383")]);

    // And at the exact middle of the period (743 × 3600 / 2 s = 22290 whole minutes).
    let mid = UnixMs(march.start.0 + 743 * HOUR_S * 1000 / 2);
    assert!(mid.is_minute_aligned());
    let mut s = subscription("2026-01-01T00:00:00Z", None);
    s.apply(SubscriptionChange::ChangePlan {
        at: mid,
        plan: plan("pro"),
        version: 1,
    })
    .unwrap();
    let seconds: Vec<i64> = s
        .segments(&march)
        .iter()
        .map(|x| x.span.seconds())
        .collect();
    assert_eq!(seconds, vec![743 * HOUR_S / 2, 743 * HOUR_S / 2]);
    assert_eq!(seconds.iter().sum::<i64>(), march.seconds());
}

// ---- customers, plans, keys ----

fn invalid_field(r: Result<(), BillingError>) -> &'static str {
    match r {
        Err(BillingError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn customer_validate() {
    let good = customer("UTC", date(2026, 1, 1));
    assert_eq!(good.validate(), Ok(()));

    let mut cases: Vec<(Customer, &str)> = Vec::new();
    let mut c = good.clone();
    c.name = String::new();
    cases.push((c, "name"));
    let mut c = good.clone();
    c.name = "x".repeat(NAME_BYTES_MAX + 1);
    cases.push((c, "name"));
    let mut c = good.clone();
    c.name = "Acme\nInc".into();
    cases.push((c, "name"));
    let mut c = good.clone();
    c.email = Some("billing.acme.test".into());
    cases.push((c, "email"));
    let mut c = good.clone();
    c.email = Some("a@".into());
    cases.push((c, "email"));
    let mut c = good.clone();
    c.email = Some(format!("{}@x", "a".repeat(NAME_BYTES_MAX)));
    cases.push((c, "email"));
    for rate in ["-0.01", "1.01", "0.1234567"] {
        let mut c = good.clone();
        c.tax_rate = d(rate);
        cases.push((c, "tax_rate"));
    }
    let mut c = good.clone();
    c.metadata = (0..=METADATA_ENTRIES_MAX)
        .map(|i| (format!("k{i}"), "v".into()))
        .collect();
    cases.push((c, "metadata"));
    let mut c = good.clone();
    c.metadata.insert(String::new(), "v".into());
    cases.push((c, "metadata"));
    let mut c = good.clone();
    c.metadata
        .insert("k".repeat(METADATA_BYTES_MAX + 1), "v".into());
    cases.push((c, "metadata"));
    let mut c = good.clone();
    c.metadata
        .insert("k".into(), "v".repeat(METADATA_BYTES_MAX + 1));
    cases.push((c, "metadata"));
    for (c, want) in cases {
        assert_eq!(invalid_field(c.validate()), want, "{c:?}");
    }

    // Limits themselves are accepted.
    let mut c = good.clone();
    c.name = "x".repeat(NAME_BYTES_MAX);
    c.email = None;
    c.tax_rate = d("1");
    c.metadata = (0..METADATA_ENTRIES_MAX)
        .map(|i| (format!("k{i}"), "v".repeat(METADATA_BYTES_MAX)))
        .collect();
    assert_eq!(c.validate(), Ok(()));
    c.tax_rate = d("0.123456");
    assert_eq!(c.validate(), Ok(()));
    c.tax_rate = Decimal::ZERO;
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn keys_and_zones_parse() {
    assert_eq!(
        CustomerKey::parse("acme corp/1").map(|k| k.to_string()),
        Ok("acme corp/1".into())
    );
    let too_long = "a".repeat(CUSTOMER_KEY_BYTES_MAX + 1);
    for bad in ["", "a\u{0}b", "tab\there", too_long.as_str()] {
        assert_eq!(
            invalid_field(CustomerKey::parse(bad).map(|_| ())),
            "key",
            "{bad:?}"
        );
    }
    assert_eq!(
        PlanKey::parse("pro-2026").map(|k| k.to_string()),
        Ok("pro-2026".into())
    );
    for bad in ["", "Pro", "9lives", "a b"] {
        assert_eq!(
            invalid_field(PlanKey::parse(bad).map(|_| ())),
            "key",
            "{bad:?}"
        );
    }
    assert_eq!(
        ZoneName::parse("Europe/Berlin").map(|z| z.name().to_owned()),
        Ok("Europe/Berlin".into())
    );
    assert_eq!(
        invalid_field(ZoneName::parse("Mars/Olympus_Mons").map(|_| ())),
        "time_zone"
    );
    assert_eq!(ZoneName::utc().name(), "UTC");
    // A customer round-trips through JSON with its zone name.
    let c = customer("Pacific/Kiritimati", date(2028, 2, 29));
    let back: Customer = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn plan_version_validate() {
    let p = |key: &str| Price {
        key: PriceKey::parse(key).unwrap(),
        name: "Base".into(),
        meter: None,
        model: PriceModel::Flat { amount: d("10") },
        free_units: Decimal::ZERO,
        minimum_amount: None,
        maximum_amount: None,
    };
    let version = |prices: Vec<Price>| PlanVersion {
        plan: plan("pro"),
        version: 1,
        prices,
        entitlements: Vec::new(),
        published_ms: UnixMs(0),
    };
    assert_eq!(version(vec![p("a"), p("b")]).validate(), Ok(()));
    assert_eq!(invalid_field(version(vec![]).validate()), "prices");
    assert_eq!(
        invalid_field(
            version((0..=PLAN_PRICES_MAX).map(|i| p(&format!("p{i}"))).collect()).validate()
        ),
        "prices"
    );
    let dup = version(vec![p("a"), p("a")]).validate();
    assert!(
        matches!(&dup, Err(BillingError::Pricing(PricingError::InvalidPrice { reason })) if reason.contains("twice")),
        "{dup:?}"
    );
    let mut bad = p("a");
    bad.model = PriceModel::Flat { amount: d("-1") };
    let r = version(vec![bad]).validate();
    assert!(matches!(r, Err(BillingError::Pricing(_))), "{r:?}");
    assert_eq!(r.map_err(|e| e.code()), Err("invalid_price"));
}
