//! Black-box tests of exactly-once counting: re-sent batches, a killed and restarted server,
//! meters defined after their events (backfill), replaced and re-created meters; and usage
//! windows in a time zone across daylight saving changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};

/// A deterministic batch over the last hours: subjects, types and byte counts vary.
fn batch(now: i64, n: usize) -> (Vec<Value>, BTreeMap<String, i128>) {
    let mut events = Vec::new();
    let mut expected: BTreeMap<String, i128> = BTreeMap::new();
    for i in 0..n {
        let subject = format!("cus_{}", i % 7);
        let bytes = i128::try_from(i * i % 1009 + 1).unwrap();
        let time = now - 3 * HOUR_MS + i64::try_from(i).unwrap() * 17_000;
        let mut e = event(
            &format!("evt-{i:05}"),
            &subject,
            time,
            json!({"bytes": bytes, "kind": if i % 3 == 0 { "a" } else { "b" }}),
        );
        if i % 4 == 0 {
            e["type"] = json!("session.started");
        }
        events.push(e);
        *expected.entry(subject).or_default() += bytes;
    }
    (events, expected)
}

fn range(now: i64) -> String {
    let from = floor_minute(now) - DAY_MS;
    let to = floor_minute(now) + 10 * MINUTE_MS;
    format!("from={}&to={}", q(&rfc3339(from)), q(&rfc3339(to)))
}

#[test]
fn resend_and_restart_never_double_count() {
    let dir = TestDir::new("exactly-once");
    let data = dir.data("data");
    let mut server = Server::start(&data, &[]);
    let now = now_ms();
    let range = range(now);
    let (events, expected) = batch(now, 500);
    let body = ndjson(&events);
    let meter = json!({"aggregation": "sum", "value_path": "$.data.bytes"});
    assert_eq!(server.put_meter("bytes", &meter).status, 201);

    let r = server.post_events(ADMIN_KEY, "application/x-ndjson", body.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_counts(&r.body, 500, 0, 0, 0);
    assert!(error_codes(&r.body).is_empty());
    let first = server.usage_rows("bytes", &range);
    assert_eq!(by_subject(&first), expected);
    let hourly = server.usage_rows("bytes", &format!("{range}&window_size=hour"));
    let hourly_total: i128 = hourly.iter().map(int_value).sum();
    assert_eq!(hourly_total, expected.values().sum::<i128>());

    // The same batch again: every event is a duplicate, nothing changes.
    let r = server.post_events(ADMIN_KEY, "application/x-ndjson", body.clone());
    assert_counts(&r.body, 0, 500, 0, 0);
    let codes = error_codes(&r.body);
    assert_eq!(codes.len(), 500);
    for (i, (index, code)) in codes.iter().enumerate() {
        assert_eq!(
            (*index, code.as_str()),
            (u64::try_from(i).unwrap(), "duplicate")
        );
    }
    assert_eq!(server.usage_rows("bytes", &range), first);
    assert_eq!(
        server.usage_rows("bytes", &format!("{range}&window_size=hour")),
        hourly
    );
    // As a JSON array, in another order, it is still the same events.
    let mut reversed = events.clone();
    reversed.reverse();
    let r = server.post_events(
        ADMIN_KEY,
        "application/cloudevents-batch+json",
        Value::Array(reversed).to_string(),
    );
    assert_counts(&r.body, 0, 500, 0, 0);

    // Crash (SIGKILL) and restart on the same data dir: nothing acknowledged is lost, and the
    // dedup index is rebuilt, so re-sending still counts nothing.
    server.stop();
    let server = Server::start(&data, &[]);
    assert_eq!(server.usage_rows("bytes", &range), first);
    let r = server.post_events(ADMIN_KEY, "application/x-ndjson", body);
    assert_counts(&r.body, 0, 500, 0, 0);
    // A changed payload under a known identity is a conflict, also after the restart.
    let mut changed = events[10].clone();
    changed["data"]["bytes"] = json!(123_456);
    let r = server.ingest(&[changed]);
    assert_counts(&r, 0, 0, 1, 0);
    assert_eq!(server.usage_rows("bytes", &range), first);
    assert_eq!(
        server.usage_rows("bytes", &format!("{range}&window_size=hour")),
        hourly
    );
    let info = server.get("/v1/meters/bytes", ADMIN_KEY);
    assert_eq!(info.body["counted_events"], 500, "{}", info.body);
    // New events after the restart are counted.
    let r = server.ingest(&[event(
        "after-restart",
        "cus_0",
        now - HOUR_MS,
        json!({"bytes": 5}),
    )]);
    assert_counts(&r, 1, 0, 0, 0);
    let mut want = expected.clone();
    *want.get_mut("cus_0").unwrap() += 5;
    assert_eq!(by_subject(&server.usage_rows("bytes", &range)), want);
}

#[test]
fn meters_backfill_replace_and_recreate() {
    let dir = TestDir::new("backfill");
    let server = Server::start(&dir.data("data"), &[]);
    let now = now_ms();
    let range = range(now);
    let (events, expected) = batch(now, 400);
    let sum = json!({"aggregation": "sum", "value_path": "$.data.bytes"});
    assert_eq!(server.put_meter("before", &sum).status, 201);
    assert_counts(&server.ingest(&events), 400, 0, 0, 0);

    // Defined after the events: backfilled from stored raw events, equal to the one before.
    let r = server.put_meter("after", &sum);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["counted_events"], 400);
    let before = server.usage_rows("before", &range);
    assert_eq!(by_subject(&before), expected);
    assert_eq!(server.usage_rows("after", &range), before);
    let hourly = format!("{range}&window_size=hour&time_zone=America/New_York");
    assert_eq!(
        server.usage_rows("after", &hourly),
        server.usage_rows("before", &hourly)
    );

    // Replacing the definition recomputes it from raw events.
    let only_requests = json!({
        "event_type": "proxy.request",
        "aggregation": "sum",
        "value_path": "$.data.bytes",
        "group_by": {"kind": "$.data.kind"}
    });
    let r = server.put_meter("after", &only_requests);
    assert_eq!(r.status, 200, "replaced: {}", r.body);
    assert_eq!(r.body["event_type"], "proxy.request");
    let mut want: BTreeMap<(String, String), i128> = BTreeMap::new();
    for e in &events {
        if e["type"] == "proxy.request" {
            let key = (
                e["subject"].as_str().unwrap().to_owned(),
                e["data"]["kind"].as_str().unwrap().to_owned(),
            );
            *want.entry(key).or_default() += i128::from(e["data"]["bytes"].as_i64().unwrap());
        }
    }
    assert_eq!(r.body["counted_events"], 300);
    let rows = server.usage_rows("after", &format!("{range}&group_by=kind"));
    let got: BTreeMap<(String, String), i128> = rows
        .iter()
        .map(|row| {
            (
                (
                    row["subject"].as_str().unwrap().to_owned(),
                    row["group"]["kind"].as_str().unwrap().to_owned(),
                ),
                int_value(row),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(rows.len(), want.len());
    // Replaced with a count: the numbers become counts.
    let count = json!({"aggregation": "count"});
    assert_eq!(server.put_meter("after", &count).status, 200);
    let counts = by_subject(&server.usage_rows("after", &range));
    let mut want_counts: BTreeMap<String, i128> = BTreeMap::new();
    for e in &events {
        *want_counts
            .entry(e["subject"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts, want_counts);

    // Deleted, then defined again: the same numbers as the meter that saw the events live.
    assert_eq!(server.delete_meter("after").status, 204);
    assert_error(
        &server.get("/v1/meters/after", ADMIN_KEY),
        404,
        "meter_not_found",
    );
    assert_error(&server.usage("after", &range), 404, "meter_not_found");
    assert_eq!(server.put_meter("after", &sum).status, 201);
    assert_eq!(server.usage_rows("after", &range), before);
    assert_eq!(
        server.usage_rows("after", &hourly),
        server.usage_rows("before", &hourly)
    );
    let list = server.get("/v1/meters", ADMIN_KEY);
    let slugs: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["after", "before"]);
}

/// (window_start, window_end, value) of usage rows.
fn windows(rows: &[Value]) -> Vec<(String, String, i128)> {
    rows.iter()
        .map(|r| {
            (
                r["window_start"].as_str().unwrap().to_owned(),
                r["window_end"].as_str().unwrap().to_owned(),
                int_value(r),
            )
        })
        .collect()
}

fn w(start: i64, end: i64, value: i128) -> (String, String, i128) {
    (rfc3339(start), rfc3339(end), value)
}

#[test]
fn berlin_days_across_daylight_saving_changes() {
    let dir = TestDir::new("dst");
    let server = Server::start(&dir.data("data"), &["--acceptance-window", "3660d"]);
    let sum = json!({"aggregation": "sum", "value_path": "$.data.bytes"});
    assert_eq!(server.put_meter("bytes", &sum).status, 201);
    let at = |id: &str, ms: i64, bytes: i64| event(id, "cus_berlin", ms, json!({"bytes": bytes}));

    // Spring: on Sunday 2026-03-29 Berlin jumps from 02:00 CET to 03:00 CEST (01:00 UTC); the
    // local day is 23 hours, 2026-03-28T23:00Z .. 2026-03-29T22:00Z.
    let spring = vec![
        at("s1", utc_ms(2026, 3, 28, 22, 30, 0), 1), // 23:30 CET, Mar 28
        at("s2", utc_ms(2026, 3, 28, 23, 0, 0), 10), // 00:00 CET, Mar 29
        at("s3", utc_ms(2026, 3, 29, 0, 59, 59), 100), // 01:59:59 CET
        at("s4", utc_ms(2026, 3, 29, 1, 0, 0), 1_000), // 03:00 CEST
        at("s5", utc_ms(2026, 3, 29, 21, 59, 59), 10_000), // 23:59:59 CEST, Mar 29
        at("s6", utc_ms(2026, 3, 29, 22, 0, 0), 100_000), // 00:00 CEST, Mar 30
    ];
    // Autumn: on Sunday 2026-10-25 Berlin goes back from 03:00 CEST to 02:00 CET (01:00 UTC);
    // the local day is 25 hours, 2026-10-24T22:00Z .. 2026-10-25T23:00Z.
    let autumn = [
        at("a1", utc_ms(2026, 10, 24, 21, 59, 0), 1), // 23:59 CEST, Oct 24
        at("a2", utc_ms(2026, 10, 24, 22, 0, 0), 10), // 00:00 CEST, Oct 25
        at("a3", utc_ms(2026, 10, 25, 0, 30, 0), 100), // 02:30 CEST (first)
        at("a4", utc_ms(2026, 10, 25, 1, 30, 0), 1_000), // 02:30 CET (second)
        at("a5", utc_ms(2026, 10, 25, 22, 59, 0), 10_000), // 23:59 CET, Oct 25
        at("a6", utc_ms(2026, 10, 25, 23, 0, 0), 100_000), // 00:00 CET, Oct 26
        at("a7", utc_ms(2026, 10, 26, 0, 0, 30), 1_000_000), // 01:00:30 CET, Oct 26
    ];
    let mut all = spring.clone();
    all.extend(autumn.iter().cloned());
    assert_counts(&server.ingest(&all), 13, 0, 0, 0);

    let berlin = |from: i64, to: i64| {
        format!(
            "from={}&to={}&window_size=day&time_zone=Europe%2FBerlin",
            q(&rfc3339(from)),
            q(&rfc3339(to))
        )
    };
    // Local days Mar 28, 29, 30: 24, 23 and 24 hours.
    let (m28, m29, m30, m31) = (
        utc_ms(2026, 3, 27, 23, 0, 0),
        utc_ms(2026, 3, 28, 23, 0, 0),
        utc_ms(2026, 3, 29, 22, 0, 0),
        utc_ms(2026, 3, 30, 22, 0, 0),
    );
    let r = server.usage("bytes", &berlin(m28, m31));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["time_zone"], "Europe/Berlin");
    assert_eq!(
        windows(r.body["data"].as_array().unwrap()),
        vec![w(m28, m29, 1), w(m29, m30, 11_110), w(m30, m31, 100_000)]
    );
    // Local days Oct 24, 25, 26: 24, 25 and 24 hours.
    let (o24, o25, o26, o27) = (
        utc_ms(2026, 10, 23, 22, 0, 0),
        utc_ms(2026, 10, 24, 22, 0, 0),
        utc_ms(2026, 10, 25, 23, 0, 0),
        utc_ms(2026, 10, 26, 23, 0, 0),
    );
    let r = server.usage("bytes", &berlin(o24, o27));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        windows(r.body["data"].as_array().unwrap()),
        vec![w(o24, o25, 1), w(o25, o26, 11_110), w(o26, o27, 1_100_000)]
    );
    // Local hours of the autumn night: 02:00 comes twice, each its own window.
    let hours = format!(
        "from={}&to={}&window_size=hour&time_zone=Europe%2FBerlin",
        q(&rfc3339(utc_ms(2026, 10, 25, 0, 0, 0))),
        q(&rfc3339(utc_ms(2026, 10, 25, 2, 0, 0)))
    );
    assert_eq!(
        windows(&server.usage_rows("bytes", &hours)),
        vec![
            w(
                utc_ms(2026, 10, 25, 0, 0, 0),
                utc_ms(2026, 10, 25, 1, 0, 0),
                100
            ),
            w(
                utc_ms(2026, 10, 25, 1, 0, 0),
                utc_ms(2026, 10, 25, 2, 0, 0),
                1_000
            ),
        ]
    );
    // The same range in UTC days cuts elsewhere.
    let utc = format!(
        "from={}&to={}&window_size=day",
        q(&rfc3339(utc_ms(2026, 10, 24, 0, 0, 0))),
        q(&rfc3339(utc_ms(2026, 10, 27, 0, 0, 0)))
    );
    assert_eq!(
        windows(&server.usage_rows("bytes", &utc)),
        vec![
            w(
                utc_ms(2026, 10, 24, 0, 0, 0),
                utc_ms(2026, 10, 25, 0, 0, 0),
                11
            ),
            w(
                utc_ms(2026, 10, 25, 0, 0, 0),
                utc_ms(2026, 10, 26, 0, 0, 0),
                111_100
            ),
            w(
                utc_ms(2026, 10, 26, 0, 0, 0),
                utc_ms(2026, 10, 27, 0, 0, 0),
                1_000_000
            ),
        ]
    );
    // One window over each whole range equals the sum of its days.
    for (from, to, total) in [(m28, m31, 111_111), (o24, o27, 1_111_111)] {
        let one = format!("from={}&to={}", q(&rfc3339(from)), q(&rfc3339(to)));
        assert_eq!(
            windows(&server.usage_rows("bytes", &one)),
            vec![w(from, to, total)],
            "{one}"
        );
    }
    // A month in Berlin: October ends at 2026-10-31T23:00Z.
    let month = format!(
        "from={}&to={}&window_size=month&time_zone=Europe%2FBerlin",
        q(&rfc3339(utc_ms(2026, 9, 30, 22, 0, 0))),
        q(&rfc3339(utc_ms(2026, 10, 31, 23, 0, 0)))
    );
    assert_eq!(
        windows(&server.usage_rows("bytes", &month)),
        vec![w(
            utc_ms(2026, 9, 30, 22, 0, 0),
            utc_ms(2026, 10, 31, 23, 0, 0),
            1_111_111
        )]
    );
}
