//! Correctness against an independent oracle: `shared/bench/gen_events.py` writes 100,000
//! CloudEvents (1% re-sent duplicates) and the exact answers computed from its own arrays.
//! The real server ingests the file over HTTP and every figure of `expected.json` must match.
//!
//! Needs Python 3 with numpy: `TOLLGATE_PYTHON`, or the venv `cargo xtask ci` creates at
//! `target/venv`. A missing interpreter fails the test; it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

const EVENTS: u64 = 100_000;
const DAYS: i64 = 30;
const LINES_PER_REQUEST: usize = 5_000;
const CHECKSUM_MOD: u128 = (1 << 61) - 1;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python that runs the generator; fails loudly when it or numpy is missing.
fn python() -> PathBuf {
    let python = std::env::var_os("TOLLGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv/bin/python"));
    let check = Command::new(&python).args(["-c", "import numpy"]).output();
    match check {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "numpy is missing in {} ({}); run `cargo xtask ci` (it creates target/venv with numpy), \
             or point TOLLGATE_PYTHON at a Python 3 with numpy",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run {}: {e}; run `cargo xtask ci` (it creates target/venv with numpy), \
             or point TOLLGATE_PYTHON at a Python 3 with numpy",
            python.display()
        ),
    }
}

fn u128_of(v: &Value) -> u128 {
    u128::from(v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}")))
}

fn uvalue(row: &Value) -> u128 {
    u128::try_from(int_value(row)).unwrap()
}

/// The customer number of `cus_NNNNNN`.
fn customer_number(subject: &str) -> u128 {
    subject
        .strip_prefix("cus_")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected subject {subject}"))
}

#[test]
fn usage_equals_the_generators_expected_answers() {
    let python = python();
    let dir = TestDir::new("oracle");
    let out_dir = dir.join("gen");
    let start_ms = (now_ms().div_euclid(DAY_MS) - 40) * DAY_MS;
    let start = date_text(start_ms);
    let generator = workspace_root().join("../shared/bench/gen_events.py");
    let out = Command::new(&python)
        .arg(&generator)
        .args(["--events", &EVENTS.to_string(), "--seed", "7", "--no-csv"])
        .arg("--out")
        .arg(&out_dir)
        .args(["--start", &start])
        .output()
        .unwrap();
    assert!(out.status.success(), "generator failed: {}", describe(&out));
    let expected: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(expected["start"], start.as_str());
    assert_eq!(expected["lines_total"], EVENTS);

    let server = Server::start(&dir.data("data"), &["--acceptance-window", "60d"]);
    for (slug, def) in [
        (
            "bytes-in",
            json!({"aggregation": "sum", "value_path": "$.data.bytes_in"}),
        ),
        (
            "bytes-out",
            json!({"aggregation": "sum", "value_path": "$.data.bytes_out"}),
        ),
        (
            "sessions",
            json!({"aggregation": "unique_count", "value_path": "$.data.session_id"}),
        ),
        ("events", json!({"aggregation": "count"})),
    ] {
        let r = server.put_meter(slug, &def);
        assert_eq!(r.status, 201, "{slug}: {}", r.body);
    }

    // Ingest over HTTP in NDJSON requests of 5,000 lines.
    let text = std::fs::read_to_string(out_dir.join("events.ndjson")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), usize::try_from(EVENTS).unwrap());
    let (mut accepted, mut duplicates) = (0u64, 0u64);
    for chunk in lines.chunks(LINES_PER_REQUEST) {
        let body = chunk.join("\n") + "\n";
        let r = server.post_events(ADMIN_KEY, "application/x-ndjson", body);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["conflicts"], 0, "{}", r.body);
        assert_eq!(r.body["rejected"], 0, "{}", r.body);
        for e in r.body["errors"].as_array().unwrap() {
            assert_eq!(e["code"], "duplicate", "{e}");
        }
        accepted += r.body["accepted"].as_u64().unwrap();
        duplicates += r.body["duplicates"].as_u64().unwrap();
    }
    assert_eq!(accepted, expected["unique_events"].as_u64().unwrap());
    assert_eq!(duplicates, expected["duplicate_lines"].as_u64().unwrap());
    let info = server.get("/v1/meters/events", ADMIN_KEY);
    assert_eq!(info.body["counted_events"], expected["unique_events"]);

    let end_ms = start_ms + DAYS * DAY_MS;
    let range = format!("from={}&to={}", q(&rfc3339(start_ms)), q(&rfc3339(end_ms)));
    let whole = |slug: &str| -> BTreeMap<String, u128> {
        let rows = server.usage_rows(slug, &range);
        for row in &rows {
            assert_eq!(row["window_start"], rfc3339(start_ms).as_str(), "{row}");
            assert_eq!(row["window_end"], rfc3339(end_ms).as_str(), "{row}");
        }
        by_subject(&rows)
            .into_iter()
            .map(|(s, v)| (s, u128::try_from(v).unwrap()))
            .collect()
    };
    let days: BTreeMap<String, u128> = (0..DAYS)
        .map(|d| (rfc3339(start_ms + d * DAY_MS), u128::try_from(d).unwrap()))
        .collect();
    // (subject, 0-based day) → value, from window_size=day rows.
    let daily = |slug: &str| -> BTreeMap<(String, u128), u128> {
        let rows = server.usage_rows(slug, &format!("{range}&window_size=day"));
        let mut out = BTreeMap::new();
        for row in &rows {
            let start = row["window_start"].as_str().unwrap();
            let d = *days
                .get(start)
                .unwrap_or_else(|| panic!("window is not a UTC day of the range: {row}"));
            let key = (row["subject"].as_str().unwrap().to_owned(), d);
            assert!(
                out.insert(key, uvalue(row)).is_none(),
                "one row per cell: {row}"
            );
        }
        out
    };

    // Per customer, over the whole range.
    let bytes_in = whole("bytes-in");
    let bytes_out = whole("bytes-out");
    let sessions = whole("sessions");
    let events = whole("events");
    let customers = expected["customers"].as_object().unwrap();
    let want_subjects: BTreeSet<&str> = customers.keys().map(String::as_str).collect();
    for (name, got) in [
        ("bytes-in", &bytes_in),
        ("bytes-out", &bytes_out),
        ("sessions", &sessions),
        ("events", &events),
    ] {
        let subjects: BTreeSet<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(subjects, want_subjects, "subjects of {name}");
    }
    for (subject, want) in customers {
        let got_bytes = bytes_in[subject] + bytes_out[subject];
        assert_eq!(got_bytes, u128_of(&want["bytes"]), "bytes of {subject}");
        assert_eq!(
            sessions[subject],
            u128_of(&want["unique_sessions"]),
            "unique sessions of {subject}"
        );
        assert_eq!(
            events[subject],
            u128_of(&want["events"]),
            "events of {subject}"
        );
    }

    // Totals.
    let totals = &expected["totals"];
    let total_in: u128 = bytes_in.values().sum();
    let total_out: u128 = bytes_out.values().sum();
    assert_eq!(total_in, u128_of(&totals["bytes_in"]), "bytes_in");
    assert_eq!(total_out, u128_of(&totals["bytes_out"]), "bytes_out");
    assert_eq!(total_in + total_out, u128_of(&totals["bytes"]), "bytes");
    // Session ids are unique per (customer, day, slot), so the total is the sum per customer.
    assert_eq!(
        sessions.values().sum::<u128>(),
        u128_of(&totals["unique_sessions"]),
        "unique_sessions"
    );
    assert_eq!(
        u128::try_from(events.len()).unwrap(),
        u128_of(&totals["customers_with_events"]),
        "customers_with_events"
    );
    assert_eq!(
        events.values().sum::<u128>(),
        u128_of(&expected["unique_events"]),
        "events"
    );

    // Per UTC day, and the customer-day table.
    let daily_in = daily("bytes-in");
    let daily_out = daily("bytes-out");
    let daily_events = daily("events");
    assert_eq!(
        u128::try_from(daily_events.len()).unwrap(),
        u128_of(&totals["customer_day_cells"]),
        "customer_day_cells"
    );
    let cells: BTreeSet<&(String, u128)> = daily_events.keys().collect();
    assert_eq!(daily_in.keys().collect::<BTreeSet<_>>(), cells);
    assert_eq!(daily_out.keys().collect::<BTreeSet<_>>(), cells);
    let mut per_day = vec![0u128; usize::try_from(DAYS).unwrap()];
    let mut checksum = 0u128;
    for (cell @ (subject, d), bytes_in) in &daily_in {
        let bytes = bytes_in + daily_out[cell];
        per_day[usize::try_from(*d).unwrap()] += bytes;
        let weight = customer_number(subject) * 30 + d + 1;
        checksum = (checksum + weight * bytes) % CHECKSUM_MOD;
    }
    assert_eq!(
        checksum,
        u128_of(&totals["customer_day_checksum"]),
        "customer_day_checksum"
    );
    let want_days = expected["per_day_bytes"].as_object().unwrap();
    assert_eq!(want_days.len(), usize::try_from(DAYS).unwrap());
    for (d, got) in per_day.iter().enumerate() {
        let date = date_text(start_ms + i64::try_from(d).unwrap() * DAY_MS);
        assert_eq!(*got, u128_of(&want_days[&date]), "bytes of day {date}");
    }
    // Per day equals per customer summed the other way round.
    assert_eq!(per_day.iter().sum::<u128>(), u128_of(&totals["bytes"]));
    println!(
        "oracle: {accepted} accepted, {duplicates} duplicates, {} customers, {} customer-days, \
         {} bytes, checksum {checksum}",
        events.len(),
        daily_events.len(),
        total_in + total_out
    );
}
