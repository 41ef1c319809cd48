//! Tests for usage: windows in time zones (table tests around DST changes, half-hour offsets and
//! months), query errors with their codes, and properties against a naive reference that folds
//! the events directly with plain maps: every aggregation, window size and time zone; any
//! order or split of the stream gives the same answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use jiff::ToSpan;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::event::Event;
use crate::limits::USAGE_WINDOWS_MAX;
use crate::meter::{MeterSlug, MeterSpec};
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

// ---- helpers ----

fn at(text: &str) -> UnixMs {
    UnixMs::from_timestamp(text.parse().unwrap())
}

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

const ZONES: [&str; 4] = ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York"];
const AGGREGATIONS: [Aggregation; 6] = [
    Aggregation::Sum,
    Aggregation::Count,
    Aggregation::UniqueCount,
    Aggregation::Max,
    Aggregation::Min,
    Aggregation::Latest,
];
const SUBJECTS: [&str; 3] = ["acme", "beta", "gamma"];

fn test_meter(aggregation: Aggregation) -> Meter {
    test_meter_grouped(aggregation, true)
}

/// The test meter, with its two dimensions or without any.
fn test_meter_grouped(aggregation: Aggregation, grouped: bool) -> Meter {
    let mut spec = json!({
        "aggregation": aggregation.as_str(),
        "event_type": "api.call",
    });
    if grouped {
        spec["group_by"] = json!({"region": "$.data.region", "tier": "$.data.tier"});
    }
    if aggregation.needs_value() {
        spec["value_path"] = json!("$.data.v");
    }
    let spec: MeterSpec = serde_json::from_value(spec).unwrap();
    Meter::new(MeterSlug::parse("m").unwrap(), spec).unwrap()
}

fn query(from: UnixMs, to: UnixMs, window: Option<WindowSize>, zone: &str) -> UsageQuery {
    UsageQuery {
        subject: None,
        from,
        to,
        window,
        time_zone: tz(zone),
        group_by: vec![],
    }
}

/// Window lengths in hours.
fn hours(ws: &[(UnixMs, UnixMs)]) -> Vec<i64> {
    ws.iter().map(|(s, e)| (e.0 - s.0) / HOUR_MS).collect()
}

fn window_texts(ws: &[(UnixMs, UnixMs)]) -> Vec<(String, String)> {
    ws.iter()
        .map(|(s, e)| (s.to_rfc3339(), e.to_rfc3339()))
        .collect()
}

// ---- windows: tables ----

#[test]
fn berlin_day_windows_across_spring_dst_change() {
    // 2026-03-29: clocks go from 02:00 CET to 03:00 CEST; that day has 23 hours.
    let ws = windows(
        at("2026-03-27T23:00:00Z"),
        at("2026-03-30T22:00:00Z"),
        Some(WindowSize::Day),
        &tz("Europe/Berlin"),
    )
    .unwrap();
    assert_eq!(
        window_texts(&ws),
        [
            ("2026-03-27T23:00:00Z".into(), "2026-03-28T23:00:00Z".into()),
            ("2026-03-28T23:00:00Z".into(), "2026-03-29T22:00:00Z".into()),
            ("2026-03-29T22:00:00Z".into(), "2026-03-30T22:00:00Z".into()),
        ]
    );
    assert_eq!(hours(&ws), [24, 23, 24]);
}

#[test]
fn berlin_day_windows_across_autumn_dst_change() {
    // 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET; that day has 25 hours.
    let ws = windows(
        at("2026-10-23T22:00:00Z"),
        at("2026-10-26T23:00:00Z"),
        Some(WindowSize::Day),
        &tz("Europe/Berlin"),
    )
    .unwrap();
    assert_eq!(hours(&ws), [24, 25, 24]);
    assert_eq!(
        ws[1],
        (at("2026-10-24T22:00:00Z"), at("2026-10-25T23:00:00Z"))
    );
}

#[test]
fn berlin_hour_windows_across_dst_changes_are_all_one_hour() {
    for (from, to) in [
        ("2026-03-28T22:00:00Z", "2026-03-29T04:00:00Z"),
        ("2026-10-24T22:00:00Z", "2026-10-25T04:00:00Z"),
    ] {
        let ws = windows(
            at(from),
            at(to),
            Some(WindowSize::Hour),
            &tz("Europe/Berlin"),
        )
        .unwrap();
        assert_eq!(hours(&ws), [1; 6], "{from}");
        assert!(ws.windows(2).all(|w| w[0].1 == w[1].0), "contiguous");
    }
}

#[test]
fn new_york_day_windows_across_dst_changes() {
    // 2026-03-08 is 23 hours long, 2026-11-01 25 hours.
    let ny = tz("America/New_York");
    let spring = windows(
        at("2026-03-07T05:00:00Z"),
        at("2026-03-09T04:00:00Z"),
        Some(WindowSize::Day),
        &ny,
    )
    .unwrap();
    assert_eq!(hours(&spring), [24, 23]);
    let autumn = windows(
        at("2026-10-31T04:00:00Z"),
        at("2026-11-02T05:00:00Z"),
        Some(WindowSize::Day),
        &ny,
    )
    .unwrap();
    assert_eq!(hours(&autumn), [24, 25]);
}

#[test]
fn kolkata_hour_windows_start_at_half_past_utc() {
    let ws = windows(
        at("2026-05-01T10:00:00Z"),
        at("2026-05-01T13:00:00Z"),
        Some(WindowSize::Hour),
        &tz("Asia/Kolkata"),
    )
    .unwrap();
    assert_eq!(
        window_texts(&ws),
        [
            ("2026-05-01T10:00:00Z".into(), "2026-05-01T10:30:00Z".into()),
            ("2026-05-01T10:30:00Z".into(), "2026-05-01T11:30:00Z".into()),
            ("2026-05-01T11:30:00Z".into(), "2026-05-01T12:30:00Z".into()),
            ("2026-05-01T12:30:00Z".into(), "2026-05-01T13:00:00Z".into()),
        ]
    );
    // Unclipped windows are whole hours starting at :30 UTC.
    for (s, e) in &ws[1..3] {
        assert_eq!(s.0.rem_euclid(HOUR_MS), 30 * MINUTE_MS);
        assert_eq!(e.0 - s.0, HOUR_MS);
    }
}

#[test]
fn kolkata_day_windows_start_at_1830_utc() {
    let ws = windows(
        at("2026-05-01T00:00:00Z"),
        at("2026-05-03T00:00:00Z"),
        Some(WindowSize::Day),
        &tz("Asia/Kolkata"),
    )
    .unwrap();
    assert_eq!(
        window_texts(&ws),
        [
            ("2026-05-01T00:00:00Z".into(), "2026-05-01T18:30:00Z".into()),
            ("2026-05-01T18:30:00Z".into(), "2026-05-02T18:30:00Z".into()),
            ("2026-05-02T18:30:00Z".into(), "2026-05-03T00:00:00Z".into()),
        ]
    );
}

#[test]
fn month_windows_in_berlin_and_utc() {
    let ws = windows(
        at("2026-01-15T00:00:00Z"),
        at("2026-04-10T00:00:00Z"),
        Some(WindowSize::Month),
        &tz("Europe/Berlin"),
    )
    .unwrap();
    assert_eq!(
        window_texts(&ws),
        [
            ("2026-01-15T00:00:00Z".into(), "2026-01-31T23:00:00Z".into()),
            // February: 28 days in CET.
            ("2026-01-31T23:00:00Z".into(), "2026-02-28T23:00:00Z".into()),
            // March: 31 days less the hour lost to DST.
            ("2026-02-28T23:00:00Z".into(), "2026-03-31T22:00:00Z".into()),
            ("2026-03-31T22:00:00Z".into(), "2026-04-10T00:00:00Z".into()),
        ]
    );
    assert_eq!(hours(&ws[1..3]), [28 * 24, 31 * 24 - 1]);

    let utc = windows(
        at("2025-12-01T00:00:00Z"),
        at("2027-01-01T00:00:00Z"),
        Some(WindowSize::Month),
        &TimeZone::UTC,
    )
    .unwrap();
    assert_eq!(utc.len(), 13);
    let days: Vec<i64> = utc.iter().map(|(s, e)| (e.0 - s.0) / DAY_MS).collect();
    assert_eq!(days, [31, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]);
}

#[test]
fn minute_windows_and_the_single_window() {
    let from = at("2026-05-01T10:00:00Z");
    let to = at("2026-05-01T10:03:00Z");
    let ws = windows(from, to, Some(WindowSize::Minute), &tz("Asia/Kolkata")).unwrap();
    assert_eq!(ws.len(), 3);
    assert!(ws.iter().all(|(s, e)| e.0 - s.0 == MINUTE_MS));
    assert_eq!(
        windows(from, to, None, &tz("Europe/Berlin")).unwrap(),
        [(from, to)]
    );
}

#[test]
fn windows_are_clipped_contiguous_and_cover_the_range() {
    let from = at("2026-03-28T13:17:00Z");
    let to = at("2026-04-02T05:41:00Z");
    for zone in ZONES {
        for size in [
            WindowSize::Minute,
            WindowSize::Hour,
            WindowSize::Day,
            WindowSize::Month,
        ] {
            let ws = windows(from, to, Some(size), &tz(zone)).unwrap();
            assert_eq!(ws.first().unwrap().0, from, "{zone} {size:?}");
            assert_eq!(ws.last().unwrap().1, to, "{zone} {size:?}");
            assert!(ws.iter().all(|(s, e)| s < e), "{zone} {size:?}");
            assert!(ws.windows(2).all(|w| w[0].1 == w[1].0), "{zone} {size:?}");
        }
    }
}

#[test]
fn window_size_parse() {
    assert_eq!(WindowSize::parse("minute"), Some(WindowSize::Minute));
    assert_eq!(WindowSize::parse("hour"), Some(WindowSize::Hour));
    assert_eq!(WindowSize::parse("day"), Some(WindowSize::Day));
    assert_eq!(WindowSize::parse("month"), Some(WindowSize::Month));
    assert_eq!(WindowSize::parse("week"), None);
    assert_eq!(WindowSize::parse("Day"), None);
}

// ---- errors ----

#[test]
fn from_and_to_must_be_whole_minutes() {
    let t = at("2026-05-01T00:00:00Z");
    for (from, to) in [
        (UnixMs(t.0 + 1), UnixMs(t.0 + HOUR_MS)),
        (t, UnixMs(t.0 + HOUR_MS + 30_000)),
    ] {
        let err = windows(from, to, Some(WindowSize::Hour), &TimeZone::UTC).unwrap_err();
        assert_eq!(err, UsageError::NotMinuteAligned);
        assert_eq!(err.code(), "time_not_minute_aligned");
        let rollup = Rollup::new(test_meter(Aggregation::Count));
        let err = rollup.query(&query(from, to, None, "UTC")).unwrap_err();
        assert_eq!(err.code(), "time_not_minute_aligned");
    }
}

#[test]
fn from_must_be_before_to() {
    let t = at("2026-05-01T00:00:00Z");
    for (from, to) in [(t, t), (UnixMs(t.0 + MINUTE_MS), t)] {
        for window in [None, Some(WindowSize::Day)] {
            let err = windows(from, to, window, &TimeZone::UTC).unwrap_err();
            assert_eq!(err, UsageError::EmptyRange);
            assert_eq!(err.code(), "empty_time_range");
        }
    }
}

#[test]
fn too_many_windows() {
    let from = at("2026-01-01T00:00:00Z");
    let max = i64::try_from(USAGE_WINDOWS_MAX).unwrap();
    let ok = windows(
        from,
        UnixMs(from.0 + max * MINUTE_MS),
        Some(WindowSize::Minute),
        &TimeZone::UTC,
    )
    .unwrap();
    assert_eq!(ok.len(), USAGE_WINDOWS_MAX);
    let err = windows(
        from,
        UnixMs(from.0 + (max + 1) * MINUTE_MS),
        Some(WindowSize::Minute),
        &TimeZone::UTC,
    )
    .unwrap_err();
    assert_eq!(
        err,
        UsageError::TooManyWindows {
            max: USAGE_WINDOWS_MAX
        }
    );
    assert_eq!(err.code(), "usage_windows_max");
    // The same range in hours is fine, and so is one window over it.
    let to = UnixMs(from.0 + (max + 1) * MINUTE_MS);
    assert!(windows(from, to, Some(WindowSize::Hour), &TimeZone::UTC).is_ok());
    assert_eq!(windows(from, to, None, &TimeZone::UTC).unwrap().len(), 1);
}

#[test]
fn unknown_group_by() {
    let rollup = Rollup::new(test_meter(Aggregation::Count));
    let mut q = query(
        at("2026-05-01T00:00:00Z"),
        at("2026-05-02T00:00:00Z"),
        None,
        "UTC",
    );
    q.group_by = vec!["region".into(), "colour".into()];
    let err = rollup.query(&q).unwrap_err();
    assert_eq!(
        err,
        UsageError::UnknownGroupBy {
            name: "colour".into()
        }
    );
    assert_eq!(err.code(), "unknown_group_by");
    q.group_by = vec!["region".into(), "tier".into(), "region".into()];
    assert!(rollup.query(&q).is_ok(), "repeated known names are fine");
}

#[test]
fn usage_error_codes_are_distinct() {
    let errors = [
        UsageError::NotMinuteAligned,
        UsageError::EmptyRange,
        UsageError::TooManyWindows { max: 1 },
        UsageError::TooManyRows { max: 1 },
        UsageError::UnknownGroupBy {
            name: String::new(),
        },
        UsageError::OutOfRange,
    ];
    let mut codes: Vec<&str> = errors.iter().map(UsageError::code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

// ---- rollup: examples ----

fn raw_event(id: usize, subject: &str, event_type: &str, time: UnixMs, data: &str) -> Event {
    let raw = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"s","type":"{event_type}","subject":"{subject}","time":"{}","data":{data}}}"#,
        time.to_rfc3339()
    );
    Event::parse(&raw, UnixMs(0)).unwrap()
}

#[test]
fn rollup_example_with_groups_windows_and_stats() {
    let mut rollup = Rollup::new(test_meter(Aggregation::Sum));
    let events = [
        (
            "acme",
            "api.call",
            "2026-05-01T10:15:00.500Z",
            r#"{"v":1.5,"region":"eu"}"#,
        ),
        (
            "acme",
            "api.call",
            "2026-05-01T10:59:59.999Z",
            r#"{"v":2,"region":"eu","tier":1}"#,
        ),
        (
            "acme",
            "api.call",
            "2026-05-01T11:00:00Z",
            r#"{"v":"3","region":"us"}"#,
        ),
        ("acme", "other", "2026-05-01T11:00:00Z", r#"{"v":100}"#),
        (
            "acme",
            "api.call",
            "2026-05-01T11:30:00Z",
            r#"{"v":"x","region":"us"}"#,
        ),
        (
            "beta",
            "api.call",
            "2026-05-01T10:00:00Z",
            r#"{"v":9007199254740993}"#,
        ),
    ];
    for (i, (subject, t, time, data)) in events.iter().enumerate() {
        rollup.apply(&raw_event(i, subject, t, at(time), data), i as u64);
    }
    assert_eq!(
        rollup.stats(),
        RollupStats {
            counted: 4,
            skipped: 1
        }
    );

    let from = at("2026-05-01T10:00:00Z");
    let to = at("2026-05-01T12:00:00Z");
    let mut q = query(from, to, Some(WindowSize::Hour), "UTC");
    q.group_by = vec!["region".into()];
    let rows = rollup.query(&q).unwrap();
    let got: Vec<(&str, Option<&str>, String, Decimal)> = rows
        .iter()
        .map(|r| {
            (
                r.subject.as_str(),
                r.group["region"].as_deref(),
                r.window_start.to_rfc3339(),
                r.value,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "acme",
                Some("eu"),
                "2026-05-01T10:00:00Z".into(),
                dec("3.5")
            ),
            ("acme", Some("us"), "2026-05-01T11:00:00Z".into(), dec("3")),
            (
                "beta",
                None,
                "2026-05-01T10:00:00Z".into(),
                dec("9007199254740993")
            ),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.window_end.0 - r.window_start.0 == HOUR_MS)
    );

    // One subject, all dimensions, one window.
    let mut q = query(from, to, None, "UTC");
    q.subject = Some(Subject::parse("acme").unwrap());
    q.group_by = vec!["tier".into(), "region".into()];
    let rows = rollup.query(&q).unwrap();
    let got: Vec<(Option<&str>, Option<&str>, Decimal)> = rows
        .iter()
        .map(|r| {
            (
                r.group["region"].as_deref(),
                r.group["tier"].as_deref(),
                r.value,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("eu"), None, dec("1.5")),
            (Some("eu"), Some("1"), dec("2")),
            (Some("us"), None, dec("3"))
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.subject == "acme" && r.window_start == from && r.window_end == to)
    );

    // An unknown subject has no rows; a range without events has no rows.
    q.subject = Some(Subject::parse("nobody").unwrap());
    assert!(rollup.query(&q).unwrap().is_empty());
    let empty = query(
        at("2026-05-02T00:00:00Z"),
        at("2026-05-03T00:00:00Z"),
        Some(WindowSize::Hour),
        "UTC",
    );
    assert!(rollup.query(&empty).unwrap().is_empty());
}

#[test]
fn latest_breaks_time_ties_by_ingest_sequence() {
    let mut rollup = Rollup::new(test_meter(Aggregation::Latest));
    let t = at("2026-05-01T10:00:00Z");
    rollup.apply(&raw_event(1, "acme", "api.call", t, r#"{"v":1}"#), 7);
    rollup.apply(&raw_event(2, "acme", "api.call", t, r#"{"v":2}"#), 3);
    rollup.apply(
        &raw_event(3, "acme", "api.call", UnixMs(t.0 - 1), r#"{"v":3}"#),
        9,
    );
    let rows = rollup
        .query(&query(t, UnixMs(t.0 + HOUR_MS), None, "UTC"))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].value,
        dec("1"),
        "same time: the larger sequence wins"
    );
    let rows = rollup
        .query(&query(
            UnixMs(t.0 - HOUR_MS),
            UnixMs(t.0 + HOUR_MS),
            None,
            "UTC",
        ))
        .unwrap();
    assert_eq!(
        rows[0].value,
        dec("1"),
        "a larger sequence at an earlier time loses"
    );
}

#[test]
fn unique_count_is_distinct_across_minutes_and_groups() {
    let mut rollup = Rollup::new(test_meter(Aggregation::UniqueCount));
    let t = at("2026-05-01T10:00:00Z");
    let users = [
        ("u1", "eu"),
        ("u2", "eu"),
        ("u1", "us"),
        ("u1", "eu"),
        ("1.0", "eu"),
        ("1", "eu"),
    ];
    for (i, (user, region)) in users.iter().enumerate() {
        let time = UnixMs(t.0 + i as i64 * 17 * MINUTE_MS);
        let value = if user.starts_with('u') {
            format!("\"{user}\"")
        } else {
            (*user).to_owned()
        };
        rollup.apply(
            &raw_event(
                i,
                "acme",
                "api.call",
                time,
                &format!(r#"{{"v":{value},"region":"{region}"}}"#),
            ),
            i as u64,
        );
    }
    let rows = rollup
        .query(&query(t, UnixMs(t.0 + 2 * HOUR_MS), None, "UTC"))
        .unwrap();
    // u1, u2, "1.0" and "1" (numbers are keys as written).
    assert_eq!(rows[0].value, dec("4"));
}

#[test]
#[should_panic(expected = "merging different aggregations")]
fn merging_different_aggregations_is_a_bug() {
    let mut a = AggState::Sum(Decimal::ONE);
    a.merge(&AggState::Count(1));
}

#[test]
fn too_many_rows() {
    use crate::limits::USAGE_ROWS_MAX;
    let mut rollup = Rollup::new(test_meter(Aggregation::Count));
    let start = at("2026-01-01T00:00:00Z");
    let template = raw_event(0, "acme", "api.call", start, "{}");
    // Enough subjects that the rows limit is reached before the windows limit.
    let count = USAGE_ROWS_MAX / crate::limits::USAGE_WINDOWS_MAX + 4;
    let subjects: Vec<Subject> = (0..count)
        .map(|i| Subject::parse(&format!("s{i}")).unwrap())
        .collect();
    let minutes = USAGE_ROWS_MAX / subjects.len() + 1;
    let mut event = template.clone();
    for minute in 0..minutes {
        for subject in &subjects {
            event.subject = subject.clone();
            event.time = UnixMs(start.0 + minute as i64 * MINUTE_MS);
            rollup.apply(&event, 0);
        }
    }
    let to = UnixMs(start.0 + minutes as i64 * MINUTE_MS);
    let err = rollup
        .query(&query(start, to, Some(WindowSize::Minute), "UTC"))
        .unwrap_err();
    assert_eq!(
        err,
        UsageError::TooManyRows {
            max: USAGE_ROWS_MAX
        }
    );
    assert_eq!(err.code(), "usage_rows_max");
    let fewer = UnixMs(start.0 + (minutes as i64 - 1) * MINUTE_MS);
    let rows = rollup
        .query(&query(start, fewer, Some(WindowSize::Minute), "UTC"))
        .unwrap()
        .len();
    assert_eq!(rows, (minutes - 1) * subjects.len());
    assert!(rows <= USAGE_ROWS_MAX);
}

// ---- the naive reference ----

/// A value at `$.data.v`, and what each aggregation makes of it.
#[derive(Clone, Debug)]
enum Val {
    Int(i64),
    /// Above 2^53: not exact in a float.
    Big(u64),
    /// Mantissa and scale, written with trailing zeros as `Decimal` prints them.
    Dec(i64, u32),
    /// Exponent notation: `{m}e{e}`.
    Exp(i32, u32),
    /// A numeric string: `"{n}.5"`.
    NumStr(i32),
    /// A word: not a number, but a key.
    Word(u8),
    Missing,
}

impl Val {
    fn json(&self) -> Option<String> {
        Some(match self {
            Val::Int(n) => n.to_string(),
            Val::Big(n) => n.to_string(),
            Val::Dec(m, s) => Decimal::new(*m, *s).to_string(),
            Val::Exp(m, e) => format!("{m}e{e}"),
            Val::NumStr(n) => format!("\"{n}.5\""),
            Val::Word(w) => format!("\"w{w}\""),
            Val::Missing => return None,
        })
    }

    fn number(&self) -> Option<Decimal> {
        Some(match self {
            Val::Int(n) => Decimal::from(*n),
            Val::Big(n) => Decimal::from(*n),
            Val::Dec(m, s) => Decimal::new(*m, *s),
            Val::Exp(m, e) => Decimal::from(*m) * Decimal::from(10i64.pow(*e)),
            Val::NumStr(n) => dec(&format!("{n}.5")),
            Val::Word(_) | Val::Missing => return None,
        })
    }

    fn key(&self) -> Option<String> {
        match self {
            Val::NumStr(n) => Some(format!("{n}.5")),
            Val::Word(w) => Some(format!("w{w}")),
            other => other.json(),
        }
    }
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        4 => (-50i64..50).prop_map(Val::Int),
        2 => ((1u64 << 53)..(1u64 << 62)).prop_map(Val::Big),
        2 => (-100_000i64..100_000, 1u32..5).prop_map(|(m, s)| Val::Dec(m, s)),
        1 => (-20i32..20, 0u32..4).prop_map(|(m, e)| Val::Exp(m, e)),
        1 => (-20i32..20).prop_map(Val::NumStr),
        1 => (0u8..4).prop_map(Val::Word),
        1 => Just(Val::Missing),
    ]
}

/// `tier` values: absent, null, numbers and a string.
const TIERS: [Option<&str>; 5] = [None, Some("null"), Some("1"), Some("2"), Some("\"gold\"")];
const REGIONS: [Option<&str>; 3] = [None, Some("eu"), Some("us")];

#[derive(Clone, Debug)]
struct Ev {
    subject: usize,
    matching_type: bool,
    /// Milliseconds after the case's base instant.
    offset_ms: i64,
    value: Val,
    region: usize,
    tier: usize,
}

const SPAN_DAYS: i64 = 10;

/// Minutes after the base, crowded around the hour and day boundaries of the four zones so
/// that events and range edges often fall in the same minute.
fn instant_min(first_day: i64) -> impl Strategy<Value = i64> {
    (
        first_day..SPAN_DAYS,
        prop_oneof![
            0i64..24,
            prop::sample::select(vec![0i64, 1, 4, 5, 18, 22, 23])
        ],
        prop_oneof![
            0i64..60,
            prop::sample::select(vec![0i64, 1, 29, 30, 31, 59])
        ],
    )
        .prop_map(|(day, hour, minute)| day * 1440 + hour * 60 + minute)
}

/// Milliseconds after the base: an instant_min plus a position inside that minute.
fn instant_ms() -> impl Strategy<Value = i64> {
    (
        instant_min(0),
        prop_oneof![Just(0i64), 0i64..MINUTE_MS, Just(MINUTE_MS - 1)],
    )
        .prop_map(|(minute, ms)| minute * MINUTE_MS + ms)
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0..SUBJECTS.len(),
        prop::bool::weighted(0.9),
        instant_ms(),
        val(),
        0..REGIONS.len(),
        0..TIERS.len(),
    )
        .prop_map(
            |(subject, matching_type, offset_ms, value, region, tier)| Ev {
                subject,
                matching_type,
                offset_ms,
                value,
                region,
                tier,
            },
        )
}

impl Ev {
    fn time(&self, base: UnixMs) -> UnixMs {
        UnixMs(base.0 + self.offset_ms)
    }

    fn event(&self, id: usize, base: UnixMs) -> Event {
        let mut data = serde_json::Map::new();
        if let Some(v) = self.value.json() {
            data.insert("v".into(), serde_json::from_str(&v).unwrap());
        }
        if let Some(r) = REGIONS[self.region] {
            data.insert("region".into(), json!(r));
        }
        if let Some(t) = TIERS[self.tier] {
            data.insert("tier".into(), serde_json::from_str(t).unwrap());
        }
        let event_type = if self.matching_type {
            "api.call"
        } else {
            "api.other"
        };
        raw_event(
            id,
            SUBJECTS[self.subject],
            event_type,
            self.time(base),
            &serde_json::to_string(&data).unwrap(),
        )
    }

    fn group(&self, names: &[String]) -> BTreeMap<String, Option<String>> {
        names
            .iter()
            .map(|name| {
                let value = match name.as_str() {
                    "region" => REGIONS[self.region].map(str::to_owned),
                    "tier" => match TIERS[self.tier] {
                        None | Some("null") => None,
                        Some(t) => Some(t.trim_matches('"').to_owned()),
                    },
                    other => panic!("no dimension {other}"),
                };
                (name.clone(), value)
            })
            .collect()
    }
}

/// Subject, kept group and window start: what identifies a row.
type RowKey = (String, BTreeMap<String, Option<String>>, UnixMs);

/// The reference accumulator: plain values and sets.
#[derive(Debug)]
enum Naive {
    Sum(Decimal),
    Count(u64),
    Unique(BTreeSet<String>),
    Max(Decimal),
    Min(Decimal),
    Latest(UnixMs, u64, Decimal),
}

impl Naive {
    fn value(&self) -> Decimal {
        match self {
            Naive::Sum(d) | Naive::Max(d) | Naive::Min(d) | Naive::Latest(_, _, d) => *d,
            Naive::Count(n) => Decimal::from(*n),
            Naive::Unique(s) => Decimal::from(s.len()),
        }
    }
}

fn local_minute(t: UnixMs, zone: &TimeZone) -> i8 {
    t.to_timestamp().to_zoned(zone.clone()).minute()
}

fn ts_of(z: jiff::Zoned) -> UnixMs {
    UnixMs::from_timestamp(z.timestamp())
}

/// The window holding `t`, computed the plain way and clipped to `[from, to)`.
fn naive_window(
    t: UnixMs,
    size: Option<WindowSize>,
    zone: &TimeZone,
    from: UnixMs,
    to: UnixMs,
) -> (UnixMs, UnixMs) {
    let minute = UnixMs(t.0.div_euclid(MINUTE_MS) * MINUTE_MS);
    let date = t.to_timestamp().to_zoned(zone.clone()).date();
    let (start, end) = match size {
        None => (from, to),
        Some(WindowSize::Minute) => (minute, UnixMs(minute.0 + MINUTE_MS)),
        Some(WindowSize::Hour) => {
            // Walk minute by minute to the local :00 before and after.
            let mut s = minute;
            while local_minute(s, zone) != 0 {
                s.0 -= MINUTE_MS;
            }
            let mut e = UnixMs(s.0 + MINUTE_MS);
            while local_minute(e, zone) != 0 {
                e.0 += MINUTE_MS;
            }
            (s, e)
        }
        Some(WindowSize::Day) => (
            ts_of(date.to_zoned(zone.clone()).unwrap()),
            ts_of(date.tomorrow().unwrap().to_zoned(zone.clone()).unwrap()),
        ),
        Some(WindowSize::Month) => {
            let first = date.first_of_month();
            (
                ts_of(first.to_zoned(zone.clone()).unwrap()),
                ts_of(
                    first
                        .checked_add(1.month())
                        .unwrap()
                        .to_zoned(zone.clone())
                        .unwrap(),
                ),
            )
        }
    };
    (start.max(from), end.min(to))
}

/// Folds the events directly into rows: no tiers, no interning.
fn naive_query(
    agg: Aggregation,
    events: &[(usize, Ev)],
    base: UnixMs,
    q: &UsageQuery,
) -> Vec<UsageRow> {
    let mut acc: BTreeMap<RowKey, (UnixMs, Naive)> = BTreeMap::new();
    let mut names = q.group_by.clone();
    names.sort();
    names.dedup();
    for (seq, e) in events {
        let t = e.time(base);
        let subject = SUBJECTS[e.subject];
        if !e.matching_type || t < q.from || t >= q.to {
            continue;
        }
        if q.subject.as_ref().is_some_and(|s| s.as_str() != subject) {
            continue;
        }
        let seq = *seq as u64;
        let next = match agg {
            Aggregation::Count => Naive::Count(1),
            Aggregation::UniqueCount => match e.value.key() {
                Some(k) => Naive::Unique(BTreeSet::from([k])),
                None => continue,
            },
            _ => {
                let Some(n) = e.value.number() else { continue };
                match agg {
                    Aggregation::Sum => Naive::Sum(n),
                    Aggregation::Max => Naive::Max(n),
                    Aggregation::Min => Naive::Min(n),
                    _ => Naive::Latest(t, seq, n),
                }
            }
        };
        let (start, end) = naive_window(t, q.window, &q.time_zone, q.from, q.to);
        let key = (subject.to_owned(), e.group(&names), start);
        match acc.get_mut(&key) {
            None => {
                acc.insert(key, (end, next));
            }
            Some((_, have)) => match (have, next) {
                (Naive::Sum(a), Naive::Sum(b)) => *a += b,
                (Naive::Count(a), Naive::Count(b)) => *a += b,
                (Naive::Unique(a), Naive::Unique(b)) => a.extend(b),
                (Naive::Max(a), Naive::Max(b)) => *a = (*a).max(b),
                (Naive::Min(a), Naive::Min(b)) => *a = (*a).min(b),
                (Naive::Latest(t1, s1, v1), Naive::Latest(t2, s2, v2)) => {
                    if (t2, s2) > (*t1, *s1) {
                        (*t1, *s1, *v1) = (t2, s2, v2);
                    }
                }
                (a, b) => panic!("mixed {a:?} {b:?}"),
            },
        }
    }
    acc.into_iter()
        .map(
            |((subject, group, window_start), (window_end, n))| UsageRow {
                subject,
                window_start,
                window_end,
                group,
                value: n.value(),
            },
        )
        .collect()
}

const BASES: [&str; 3] = [
    "2026-03-24T00:00:00Z",
    "2026-10-20T00:00:00Z",
    "2026-01-27T00:00:00Z",
];
const SIZES: [Option<WindowSize>; 5] = [
    None,
    Some(WindowSize::Minute),
    Some(WindowSize::Hour),
    Some(WindowSize::Day),
    Some(WindowSize::Month),
];
const GROUP_BYS: [&[&str]; 5] = [
    &[],
    &["region"],
    &["tier"],
    &["tier", "region"],
    &["region", "region"],
];

/// A query as drawn by proptest.
#[derive(Clone, Debug)]
struct Q {
    base: usize,
    zone: usize,
    size: usize,
    group_by: usize,
    /// None, or an index into SUBJECTS plus one unknown subject.
    subject: Option<usize>,
    /// One end of the range, in minutes after the base.
    from_min: i64,
    /// The other end.
    to_min: i64,
    /// 0: as drawn; 1: from/to snapped to UTC hours; 2: to UTC days.
    snap: u8,
}

fn q() -> impl Strategy<Value = Q> {
    (
        0..BASES.len(),
        0..ZONES.len(),
        0..SIZES.len(),
        0..GROUP_BYS.len(),
        prop::option::weighted(0.3, 0..SUBJECTS.len() + 1),
        instant_min(-1),
        instant_min(0),
        0u8..3,
    )
        .prop_map(
            |(base, zone, size, group_by, subject, from_min, to_min, snap)| Q {
                base,
                zone,
                size,
                group_by,
                subject,
                from_min,
                to_min,
                snap,
            },
        )
}

impl Q {
    fn base(&self) -> UnixMs {
        at(BASES[self.base])
    }

    fn usage_query(&self) -> UsageQuery {
        let base = self.base();
        let window = SIZES[self.size];
        // Minute windows over days would be slow to check; keep them to 12 hours.
        let from_min = self.from_min.min(self.to_min);
        let mut to_min = self.from_min.max(self.to_min);
        if window == Some(WindowSize::Minute) {
            to_min = from_min + (to_min - from_min) % 720;
        }
        let unit = match self.snap {
            0 => MINUTE_MS,
            1 => HOUR_MS,
            _ => DAY_MS,
        };
        let from = (base.0 + from_min * MINUTE_MS).div_euclid(unit) * unit;
        let to = (base.0 + to_min * MINUTE_MS).div_euclid(unit) * unit;
        let to = if to <= from { from + unit } else { to };
        let subject = self
            .subject
            .map(|i| Subject::parse(SUBJECTS.get(i).copied().unwrap_or("nobody")).unwrap());
        UsageQuery {
            subject,
            from: UnixMs(from),
            to: UnixMs(to),
            window,
            time_zone: tz(ZONES[self.zone]),
            group_by: GROUP_BYS[self.group_by]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

fn rollup_of(agg: Aggregation, events: &[(usize, Ev)], base: UnixMs) -> Rollup {
    rollup_of_meter(test_meter(agg), events, base)
}

fn rollup_of_meter(meter: Meter, events: &[(usize, Ev)], base: UnixMs) -> Rollup {
    let mut rollup = Rollup::new(meter);
    for (seq, e) in events {
        rollup.apply(&e.event(*seq, base), *seq as u64);
    }
    rollup
}

/// Checks every aggregation's rollup of `events` against the naive fold for one query.
fn equals_naive_reference(events: &[Ev], q: &Q) -> Result<(), TestCaseError> {
    let base = q.base();
    let uq = q.usage_query();
    let events = numbered(events);
    for agg in AGGREGATIONS {
        let rollup = rollup_of(agg, &events, base);
        let (got, starts) = rollup.query_runs(&uq).unwrap();
        let want = naive_query(agg, &events, base, &uq);
        prop_assert_eq!(&got, &want, "{:?} {:?}", agg, uq);
        // Each subject's rows start exactly where the subject changes.
        let changes: Vec<usize> = (0..got.len())
            .filter(|i| *i == 0 || got[*i - 1].subject != got[*i].subject)
            .collect();
        prop_assert_eq!(starts, changes);

        let matching: Vec<&Ev> = events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.matching_type)
            .collect();
        let skipped = matching
            .iter()
            .filter(|e| match agg {
                Aggregation::Count => false,
                Aggregation::UniqueCount => e.value.key().is_none(),
                _ => e.value.number().is_none(),
            })
            .count() as u64;
        let stats = rollup.stats();
        prop_assert_eq!(
            stats,
            RollupStats {
                counted: matching.len() as u64 - skipped,
                skipped
            }
        );

        // A meter without dimensions (its series are kept apart from grouped ones) answers
        // what the grouped meter answers with no dimension kept.
        if uq.group_by.is_empty() {
            let plain = rollup_of_meter(test_meter_grouped(agg, false), &events, base);
            let (got, _) = plain.query_runs(&uq).unwrap();
            prop_assert_eq!(&got, &want, "{:?} without dimensions {:?}", agg, uq);
        }
    }
    Ok(())
}

/// An event of one of two subjects, without dimensions, in one of the first two days at any
/// minute: about a hundred distinct minutes per subject and day.
fn dense_ev() -> impl Strategy<Value = Ev> {
    (ev(), 0..2usize, 0..2 * 1440i64, 0..MINUTE_MS).prop_map(|(mut e, subject, minute, ms)| {
        e.subject = subject;
        e.region = 0;
        e.tier = 0;
        e.offset_ms = minute * MINUTE_MS + ms;
        e
    })
}

fn numbered(events: &[Ev]) -> Vec<(usize, Ev)> {
    events.iter().cloned().enumerate().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The rollup answers every query exactly as folding the events directly does, for every
    /// aggregation, window size, time zone, subject filter and projection.
    #[test]
    fn rollup_equals_naive_reference(events in prop::collection::vec(ev(), 0..80), q in q()) {
        equals_naive_reference(&events, &q)?;
    }

    /// The same over two dense days: hundreds of events in distinct minutes, so that days pass
    /// the point where they keep hour buckets too (before, during and after it, across the
    /// queries of each case).
    #[test]
    fn dense_days_equal_naive_reference(
        events in prop::collection::vec(dense_ev(), 0..400),
        q in q(),
    ) {
        equals_naive_reference(&events, &q)?;
    }

    /// Applying the events in any order, split over any number of batches with queries in
    /// between, gives the same answers (each event keeps its ingest sequence).
    #[test]
    fn any_order_and_split_gives_the_same_answer(
        events in prop::collection::vec(ev(), 0..50),
        order in prop::collection::vec(any::<u32>(), 50),
        split in 0usize..50,
        q in q(),
    ) {
        let base = q.base();
        let uq = q.usage_query();
        let events = numbered(&events);
        let mut shuffled = events.clone();
        shuffled.sort_by_key(|(i, _)| (order[*i], *i));
        let split = split.min(shuffled.len());
        for agg in AGGREGATIONS {
            let whole = rollup_of(agg, &events, base).query(&uq).unwrap();
            let mut rollup = rollup_of(agg, &shuffled[..split], base);
            let partial = rollup.query(&uq).unwrap();
            prop_assert_eq!(&partial, &naive_query(agg, &shuffled[..split], base, &uq));
            for (seq, e) in &shuffled[split..] {
                rollup.apply(&e.event(*seq, base), *seq as u64);
            }
            prop_assert_eq!(&rollup.query(&uq).unwrap(), &whole, "{:?}", agg);
        }
    }

    /// Two rollups over the two halves of a stream combine row by row into the rollup of the
    /// whole stream (for the aggregations whose rows can be combined from values alone).
    #[test]
    fn split_stream_rows_combine_into_the_whole(
        events in prop::collection::vec(ev(), 0..50),
        split in 0usize..50,
        q in q(),
    ) {
        let base = q.base();
        let uq = q.usage_query();
        let events = numbered(&events);
        let split = split.min(events.len());
        for agg in [Aggregation::Sum, Aggregation::Count, Aggregation::Max, Aggregation::Min] {
            let whole = rollup_of(agg, &events, base).query(&uq).unwrap();
            let mut combined: BTreeMap<RowKey, UsageRow> = BTreeMap::new();
            for part in [&events[..split], &events[split..]] {
                for row in rollup_of(agg, part, base).query(&uq).unwrap() {
                    let key = (row.subject.clone(), row.group.clone(), row.window_start);
                    match combined.get_mut(&key) {
                        None => {
                            combined.insert(key, row);
                        }
                        Some(have) => {
                            have.value = match agg {
                                Aggregation::Max => have.value.max(row.value),
                                Aggregation::Min => have.value.min(row.value),
                                _ => have.value + row.value,
                            };
                        }
                    }
                }
            }
            let combined: Vec<UsageRow> = combined.into_values().collect();
            prop_assert_eq!(&combined, &whole, "{:?}", agg);
        }
    }

    /// A sum over [a, c) equals the sum over [a, b) plus the sum over [b, c), wherever b lies:
    /// reading whole days and hours from the coarse tiers loses nothing at the edges.
    #[test]
    fn sum_over_split_range_equals_sum_over_whole(
        events in prop::collection::vec(ev(), 0..60),
        base in 0..BASES.len(),
        cuts in prop::collection::btree_set(instant_min(0), 3),
    ) {
        let base = at(BASES[base]);
        let events = numbered(&events);
        let cuts: Vec<UnixMs> = cuts.iter().map(|m| UnixMs(base.0 + m * MINUTE_MS)).collect();
        let (a, b, c) = (cuts[0], cuts[1], cuts[2]);
        for agg in [Aggregation::Sum, Aggregation::Count] {
            let rollup = rollup_of(agg, &events, base);
            let total = |from, to| -> Decimal {
                rollup.query(&query(from, to, None, "UTC")).unwrap().iter().map(|r| r.value).sum()
            };
            prop_assert_eq!(total(a, c), total(a, b) + total(b, c));
        }
    }

    /// Windows of every size in every zone tile the range, each one a whole local unit except
    /// where clipped.
    #[test]
    fn windows_tile_the_range(q in q()) {
        let uq = q.usage_query();
        let ws = windows(uq.from, uq.to, uq.window, &uq.time_zone).unwrap();
        prop_assert_eq!(ws.first().unwrap().0, uq.from);
        prop_assert_eq!(ws.last().unwrap().1, uq.to);
        for w in ws.windows(2) {
            prop_assert_eq!(w[0].1, w[1].0);
        }
        for &(s, e) in &ws {
            prop_assert!(s < e);
            prop_assert_eq!((s, e), naive_window(s, uq.window, &uq.time_zone, uq.from, uq.to));
        }
    }
}

// ---- AggState ----

fn state_of(kind: usize, i: usize, n: i64) -> AggState {
    match kind {
        0 => AggState::Sum(Decimal::new(n, 2)),
        1 => AggState::Count(n.unsigned_abs()),
        2 => AggState::Max(Decimal::new(n, 1)),
        3 => AggState::Min(Decimal::new(n, 1)),
        4 => AggState::Latest {
            time: UnixMs(n.rem_euclid(5)),
            seq: i as u64,
            value: Decimal::from(n),
        },
        _ => AggState::Unique(vec![ValueHash::from_u128(
            n.rem_euclid(7).unsigned_abs().into(),
        )]),
    }
}

fn fold(states: &[AggState]) -> Option<AggState> {
    let mut acc: Option<AggState> = None;
    for s in states {
        match &mut acc {
            Some(a) => a.merge(s),
            None => acc = Some(s.clone()),
        }
    }
    acc
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Merging is commutative and associative: folding a shuffled, split list of states and
    /// merging the two partial results equals folding the whole list.
    #[test]
    fn aggstate_merge_is_order_and_split_free(
        kind in 0usize..6,
        ns in prop::collection::vec(-1000i64..1000, 1..30),
        order in prop::collection::vec(any::<u32>(), 30),
        split in 1usize..30,
    ) {
        let states: Vec<AggState> = ns.iter().enumerate().map(|(i, n)| state_of(kind, i, *n)).collect();
        let whole = fold(&states).unwrap();
        let mut shuffled = states.clone();
        let mut idx: Vec<usize> = (0..shuffled.len()).collect();
        idx.sort_by_key(|i| (order[*i], *i));
        shuffled = idx.iter().map(|i| shuffled[*i].clone()).collect();
        let split = split.min(shuffled.len());
        let mut left = fold(&shuffled[..split]).unwrap();
        if let Some(right) = fold(&shuffled[split..]) {
            left.merge(&right);
        }
        prop_assert_eq!(&left, &whole);
        let want = match kind {
            0 => ns.iter().map(|n| Decimal::new(*n, 2)).sum(),
            1 => Decimal::from(ns.iter().map(|n| n.unsigned_abs()).sum::<u64>()),
            2 => Decimal::new(*ns.iter().max().unwrap(), 1),
            3 => Decimal::new(*ns.iter().min().unwrap(), 1),
            4 => {
                let (_, n) = ns.iter().enumerate().max_by_key(|(i, n)| (n.rem_euclid(5), *i)).unwrap();
                Decimal::from(*n)
            }
            _ => Decimal::from(ns.iter().map(|n| n.rem_euclid(7)).collect::<BTreeSet<_>>().len()),
        };
        prop_assert_eq!(whole.value(), want);
        if let AggState::Unique(keys) = &whole {
            prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "unique keys stay sorted and distinct");
        }
    }
}

proptest! {
    /// Joining sorted sets of distinct-value hashes, small (insert one by one) or large
    /// (merge of two sorted lists), gives the sorted set union.
    #[test]
    fn union_of_value_sets_is_the_set_union(
        a in prop::collection::btree_set(0u128..64, 0..40),
        b in prop::collection::btree_set(0u128..64, 0..40),
    ) {
        let hashes = |set: &BTreeSet<u128>| set.iter().map(|n| ValueHash::from_u128(n << 70 | n)).collect::<Vec<_>>();
        let mut keys = hashes(&a);
        union_sorted(&mut keys, &hashes(&b));
        prop_assert_eq!(keys, hashes(&a.union(&b).copied().collect()));
    }
}

/// A query gathering the same values over and over (many groups, many days) keeps its list
/// within twice the distinct values, and counts each once.
#[test]
fn gathering_recurring_values_stays_bounded() {
    let distinct: Vec<ValueHash> = (0u128..3_000)
        .map(|n| ValueHash::from_u128(n << 64 | n))
        .collect();
    let cell = cells::UniqueCell::Many(distinct.clone());
    let mut acc = None;
    for round in 0..200 {
        <cells::UniqueCell as cells::Cell>::gather(&mut acc, &cell);
        let one = cells::UniqueCell::One(ValueHash::from_u128(round));
        <cells::UniqueCell as cells::Cell>::gather(&mut acc, &one);
    }
    let acc = acc.unwrap();
    assert!(
        acc.capacity() <= 4 * (distinct.len() + 200),
        "capacity {}",
        acc.capacity()
    );
    let state = <cells::UniqueCell as cells::Cell>::finish(acc);
    // Rounds 0..200 hash to values 0..200 shifted differently from `distinct`, except 0.
    assert_eq!(state.value(), Decimal::from(3_000 + 199));
}

// ---- group values are kept exactly ----

#[test]
fn group_values_with_control_characters_are_kept_apart() {
    let spec: MeterSpec = serde_json::from_value(json!({
        "aggregation": "count",
        "group_by": {"a": "$.data.a", "b": "$.data.b"}
    }))
    .unwrap();
    let mut rollup = Rollup::new(Meter::new(MeterSlug::parse("m").unwrap(), spec).unwrap());
    let t = at("2026-05-01T10:00:00Z");
    let datas = [
        r#"{"a":"x\u001fy"}"#,
        r#"{"a":"x","b":"y"}"#,
        r#"{"a":"\u0000"}"#,
        r#"{"a":"x\u001f","b":"\u001f"}"#,
    ];
    for (i, d) in datas.iter().enumerate() {
        rollup.apply(&raw_event(i, "acme", "api.call", t, d), i as u64);
    }
    let mut q = query(t, UnixMs(t.0 + HOUR_MS), None, "UTC");
    q.group_by = vec!["a".into(), "b".into()];
    let rows = rollup.query(&q).unwrap();
    let got: BTreeSet<(Option<String>, Option<String>, Decimal)> = rows
        .iter()
        .map(|r| (r.group["a"].clone(), r.group["b"].clone(), r.value))
        .collect();
    let some = |s: &str| Some(s.to_owned());
    let want = BTreeSet::from([
        (some("x\u{1f}y"), None, Decimal::ONE),
        (some("x"), some("y"), Decimal::ONE),
        (some("\u{0}"), None, Decimal::ONE),
        (some("x\u{1f}"), some("\u{1f}"), Decimal::ONE),
    ]);
    assert_eq!(got, want);
}

proptest! {
    /// Folding by the caller's subject numbers, in any mix with folding by text (a replay by
    /// text, then live ingest by number), answers exactly as folding everything by text, and
    /// reads a subject's text at most once per number.
    #[test]
    fn numbered_subjects_fold_as_named_ones(
        agg in 0usize..AGGREGATIONS.len(),
        events in proptest::collection::vec(
            (0usize..SUBJECTS.len(), 0i64..180, -50i64..50, any::<bool>(), any::<bool>()),
            1..60,
        ),
        spread in 1u32..1000,
    ) {
        let meter = test_meter(AGGREGATIONS[agg]);
        let (mut named, mut numbered) = (Rollup::new(meter.clone()), Rollup::new(meter));
        let start = at("2026-05-01T00:00:00Z");
        let mut reads = vec![0usize; SUBJECTS.len()];
        for (i, (s, minute, v, by_number, east)) in events.iter().enumerate() {
            let region = if *east { "east" } else { "west" };
            let data = format!(r#"{{"v":{v},"region":"{region}"}}"#);
            let event = raw_event(i, SUBJECTS[*s], "api.call", UnixMs(start.0 + minute * MINUTE_MS), &data);
            named.apply(&event, i as u64);
            let observed = Observed::of(named.meter(), &event);
            if *by_number {
                // Sparse numbers: the rollup must not assume they start at 0 or are dense.
                let number = u32::try_from(*s).unwrap() * spread;
                numbered.apply_observed_numbered(
                    number,
                    || {
                        reads[*s] += 1;
                        SUBJECTS[*s]
                    },
                    event.time(),
                    i as u64,
                    &observed,
                );
            } else {
                numbered.apply_observed(SUBJECTS[*s], event.time(), i as u64, &observed);
            }
        }
        prop_assert!(reads.iter().all(|n| *n <= 1), "subject text read {reads:?} times");
        prop_assert_eq!(named.stats(), numbered.stats());
        for window in [None, Some(WindowSize::Minute), Some(WindowSize::Hour)] {
            let mut q = query(start, UnixMs(start.0 + 3 * HOUR_MS), window, "UTC");
            q.group_by = vec!["region".into()];
            prop_assert_eq!(named.query(&q).unwrap(), numbered.query(&q).unwrap());
        }
    }
}

/// jemalloc's size classes as its documentation lists them, and the capacities grown into them.
#[test]
fn bucket_arrays_grow_to_the_end_of_their_size_class() {
    use super::cells::{class_capacity, size_class};
    let classes = [
        8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896,
        1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288,
        14336, 16384, 20480, 24576, 28672, 32768,
    ];
    let mut want = 1;
    for class in classes {
        while want <= class {
            assert_eq!(size_class(want), class, "{want} bytes");
            want += 1;
        }
    }
    assert_eq!(class_capacity::<u16>(1), 4);
    assert_eq!(class_capacity::<u16>(5), 8);
    assert_eq!(
        class_capacity::<[u8; 20]>(7),
        8,
        "140 bytes are served from 160"
    );
    assert_eq!(class_capacity::<()>(3), 3);
}
