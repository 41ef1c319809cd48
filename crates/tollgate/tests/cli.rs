//! Black-box tests of the command line: `import` (NDJSON and CSV, twice, with a bad line, while a
//! server holds the data dir, a file of many chunks in file order), `usage --json`, `meters put/list/delete`, `keys create/list/revoke`
//! against a running server, and `--help` of every command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// (accepted, duplicates, conflicts, rejected) from an import summary.
fn import_counts(stdout: &str) -> (u64, u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("accepted "))
        .unwrap_or_else(|| panic!("no counts line in:\n{stdout}"));
    let numbers: Vec<u64> = line
        .split([',', ' '])
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 4, "{line}");
    (numbers[0], numbers[1], numbers[2], numbers[3])
}

fn import(data: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
    tollgate()
        .arg("import")
        .arg("--data-dir")
        .arg(data)
        .arg("--quiet")
        .args(extra)
        .arg(file)
        .output()
        .unwrap()
}

fn cli(data: &Path, args: &[&str]) -> std::process::Output {
    // `--data-dir` goes after the subcommand path.
    tollgate()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

struct Row {
    id: String,
    subject: String,
    time: String,
    bytes_in: i64,
    bytes_out: i64,
    session_id: String,
    status: i64,
}

fn rows(now: i64, n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let k = i64::try_from(i).unwrap();
            Row {
                id: format!("cli-{i:04}"),
                subject: format!("cus_{:03}", i % 5),
                time: rfc3339_ms(now - 5 * HOUR_MS + k * 31_337),
                bytes_in: k * 7 % 1000,
                bytes_out: 100_000 + k * k,
                session_id: format!("{:016x}", i % 13),
                status: [200, 200, 404, 503][i % 4],
            }
        })
        .collect()
}

fn to_ndjson(rows: &[Row]) -> String {
    let events: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "specversion": "1.0",
                "id": r.id,
                "source": "/cli/test",
                "type": "proxy.request",
                "subject": r.subject,
                "time": r.time,
                "data": {
                    "bytes_in": r.bytes_in,
                    "bytes_out": r.bytes_out,
                    "session_id": r.session_id,
                    "status": r.status
                }
            })
        })
        .collect();
    ndjson(&events)
}

fn to_csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "specversion,id,source,type,subject,time,bytes_in,bytes_out,session_id,status\n",
    );
    for r in rows {
        out.push_str(&format!(
            "1.0,{},/cli/test,proxy.request,{},{},{},{},{},{}\n",
            r.id, r.subject, r.time, r.bytes_in, r.bytes_out, r.session_id, r.status
        ));
    }
    out
}

const METERS: &[(&str, &str)] = &[
    (
        "bytes-in",
        r#"{"aggregation":"sum","value_path":"$.data.bytes_in"}"#,
    ),
    (
        "bytes-out",
        r#"{"aggregation":"sum","value_path":"$.data.bytes_out"}"#,
    ),
    (
        "sessions",
        r#"{"aggregation":"unique_count","value_path":"$.data.session_id"}"#,
    ),
    (
        "errors",
        r#"{"aggregation":"count","filters":{"$.data.status":{"gte":500}},"group_by":{"status":"$.data.status"}}"#,
    ),
];

fn put_meters(data: &Path) {
    for (slug, def) in METERS {
        let out = cli(data, &["meters", "put", slug, "--json", def]);
        assert!(out.status.success(), "{}", describe(&out));
    }
}

/// `--from` and `--to` around the test events, fixed once so repeated queries agree.
fn range_args() -> Vec<String> {
    let to = floor_minute(now_ms()) + 10 * MINUTE_MS;
    vec![
        "--from".into(),
        rfc3339(to - DAY_MS),
        "--to".into(),
        rfc3339(to),
    ]
}

fn usage_json(data: &Path, slug: &str, extra: &[&str]) -> Value {
    let mut args = vec!["usage", slug, "--json"];
    args.extend_from_slice(extra);
    let out = cli(data, &args);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `bytes-in` meter's total over every subject.
fn bytes_in_total(data: &Path) -> i128 {
    usage_json(data, "bytes-in", &[])["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(int_value)
        .sum()
}

#[test]
fn import_twice_counts_once() {
    let dir = TestDir::new("cli-import");
    let data = dir.data("data");
    let file = dir.join("events.ndjson");
    let rows = rows(now_ms(), 300);
    std::fs::write(&file, to_ndjson(&rows)).unwrap();

    let out = import(&data, &file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("300 events"), "{stdout}");
    assert_eq!(import_counts(&stdout), (300, 0, 0, 0));

    let out = import(&data, &file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(import_counts(&stdout), (0, 300, 0, 0));
    // Duplicates are not listed as errors.
    assert!(!stdout.contains("line "), "{stdout}");

    // And the events were counted once.
    put_meters(&data);
    let want: i64 = rows.iter().map(|r| r.bytes_in).sum();
    assert_eq!(bytes_in_total(&data), i128::from(want));
}

#[test]
fn import_reports_bad_lines_with_exit_code_3() {
    let dir = TestDir::new("cli-bad-line");
    let data = dir.data("data");
    let file = dir.join("events.ndjson");
    let good = to_ndjson(&rows(now_ms(), 6));
    let mut lines: Vec<&str> = good.lines().collect();
    // Line 4 (1-based) misses its subject; line 6 is not JSON.
    let no_subject = r#"{"specversion":"1.0","id":"x-1","source":"/cli/test","type":"t","time":"2026-01-01T00:00:00Z"}"#;
    lines.insert(3, no_subject);
    lines.insert(5, "{not json");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let out = import(&data, &file, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(import_counts(&stdout), (6, 0, 0, 2), "{stdout}");
    assert!(
        stdout.contains("line 4: missing_attribute"),
        "names line 4:\n{stdout}"
    );
    assert!(stdout.contains("(id x-1)"), "{stdout}");
    assert!(
        stdout.contains("line 6: malformed_event"),
        "names line 6:\n{stdout}"
    );
    // Running again: the good lines are duplicates, the bad ones still bad.
    let out = import(&data, &file, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(
        import_counts(&String::from_utf8_lossy(&out.stdout)),
        (0, 6, 0, 2)
    );
    // A missing file fails with 1.
    let out = import(&data, &dir.join("missing.ndjson"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.ndjson"));
}

/// A file of several import chunks (4 MiB each) is prepared on more than one thread and still
/// submitted in file order: of two events with one id, the earlier line is counted and the
/// later one is the conflict, across every chunk boundary; every line number reported is the
/// line's own.
#[test]
fn a_file_of_many_chunks_counts_in_file_order() {
    const EVENTS: usize = 60_000;
    // Every REPEAT_EVERY-th line repeats the id of the line REPEAT_BACK lines before it.
    const REPEAT_EVERY: usize = 1_000;
    const REPEAT_BACK: usize = 500;
    let dir = TestDir::new("cli-chunks");
    let data = dir.data("data");
    let file = dir.join("events.ndjson");
    let now = now_ms();
    let pad = "x".repeat(200);
    let event = |id: usize, line: usize, bytes_in: usize| {
        let time = rfc3339_ms(now - HOUR_MS + i64::try_from(line).unwrap() * 50);
        format!(
            r#"{{"specversion":"1.0","id":"chunk-{id}","source":"/cli/chunks","type":"proxy.request","subject":"cus_{}","time":"{time}","data":{{"bytes_in":{bytes_in},"pad":"{pad}"}}}}"#,
            id % 7
        )
    };
    let mut text = String::new();
    let mut want = 0usize;
    for i in 0..EVENTS {
        if i % REPEAT_EVERY == REPEAT_EVERY - 1 {
            text.push_str(&event(i - REPEAT_BACK, i, 999_999));
        } else {
            text.push_str(&event(i, i, i));
            want += i;
        }
        text.push('\n');
    }
    assert!(
        text.len() > 16 << 20,
        "at least five chunks: {} bytes",
        text.len()
    );
    text.push_str("{not json\n");
    std::fs::write(&file, text).unwrap();

    put_meters(&data);
    let out = import(&data, &file, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let repeats = EVENTS / REPEAT_EVERY;
    assert_eq!(
        import_counts(&stdout),
        ((EVENTS - repeats) as u64, 0, repeats as u64, 1),
        "{stdout}"
    );
    for line in stdout.lines().filter(|l| l.contains(": conflict")) {
        let number: usize = line
            .trim_start()
            .strip_prefix("line ")
            .and_then(|l| l.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(number % REPEAT_EVERY, 0, "the later copy conflicts: {line}");
    }
    assert!(stdout.contains(": conflict"), "{stdout}");
    // The last error is past the 20 listed; the summary counts it.
    assert_eq!(bytes_in_total(&data), i128::try_from(want).unwrap());
}

#[test]
fn csv_and_ndjson_give_identical_usage() {
    let dir = TestDir::new("cli-csv");
    let (a, b) = (dir.data("a"), dir.data("b"));
    let rows = rows(now_ms(), 400);
    let nd = dir.join("events.ndjson");
    let csv = dir.join("events.csv");
    std::fs::write(&nd, to_ndjson(&rows)).unwrap();
    std::fs::write(&csv, to_csv(&rows)).unwrap();
    // Meters before the import in one dir, after it in the other.
    put_meters(&a);
    let out = import(&a, &nd, &["--format", "ndjson"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        import_counts(&String::from_utf8_lossy(&out.stdout)),
        (400, 0, 0, 0)
    );
    let out = import(&b, &csv, &["--format", "csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        import_counts(&String::from_utf8_lossy(&out.stdout)),
        (400, 0, 0, 0)
    );
    put_meters(&b);
    let out = import(&b, &csv, &["--format", "csv"]);
    assert_eq!(
        import_counts(&String::from_utf8_lossy(&out.stdout)),
        (0, 400, 0, 0)
    );

    let range = range_args();
    let range: Vec<&str> = range.iter().map(String::as_str).collect();
    for (slug, extra) in [
        ("bytes-in", vec![]),
        ("bytes-out", vec!["--window-size", "hour"]),
        ("sessions", vec![]),
        (
            "sessions",
            vec!["--window-size", "hour", "--time-zone", "Asia/Kolkata"],
        ),
        ("errors", vec!["--group-by", "status"]),
    ] {
        let extra = [range.as_slice(), extra.as_slice()].concat();
        let ua = usage_json(&a, slug, &extra);
        let ub = usage_json(&b, slug, &extra);
        assert!(!ua["data"].as_array().unwrap().is_empty(), "{slug}: {ua}");
        assert_eq!(ua, ub, "{slug} {extra:?}");
    }
    // And the numbers are the right ones.
    let usage = usage_json(&b, "bytes-out", &["--subject", "cus_002"]);
    let want: i64 = rows
        .iter()
        .filter(|r| r.subject == "cus_002")
        .map(|r| r.bytes_out)
        .sum();
    assert_eq!(usage["data"].as_array().unwrap().len(), 1);
    assert_eq!(int_value(&usage["data"][0]), i128::from(want));
    let errors = usage_json(&b, "errors", &["--group-by", "status"]);
    for row in errors["data"].as_array().unwrap() {
        assert_eq!(row["group"]["status"], "503", "{row}");
        let subject = row["subject"].as_str().unwrap();
        let n = rows
            .iter()
            .filter(|r| r.subject == subject && r.status == 503)
            .count();
        assert_eq!(int_value(row), i128::try_from(n).unwrap());
    }
    let sessions = usage_json(&b, "sessions", &[]);
    let mut per_subject =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<&str>>::new();
    for r in &rows {
        per_subject
            .entry(r.subject.clone())
            .or_default()
            .insert(&r.session_id);
    }
    let want: std::collections::BTreeMap<String, i128> = per_subject
        .into_iter()
        .map(|(s, set)| (s, i128::try_from(set.len()).unwrap()))
        .collect();
    assert_eq!(by_subject(sessions["data"].as_array().unwrap()), want);
    // The table form names the columns.
    let out = cli(&b, &["usage", "bytes-in"]);
    assert!(out.status.success(), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("subject"), "{table}");
    assert_eq!(table.lines().count(), 6, "header and 5 subjects:\n{table}");
}

#[test]
fn meters_put_list_delete() {
    let dir = TestDir::new("cli-meters");
    let data = dir.data("data");
    let def = r#"{"aggregation":"sum","value_path":"$.data.bytes_out"}"#;
    let out = cli(&data, &["meters", "put", "bytes-out", "--json", def]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created meter bytes-out"));
    let out = cli(&data, &["meters", "put", "bytes-out", "--json", def]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("replaced meter bytes-out"));
    let file = dir.join("meter.json");
    std::fs::write(&file, r#"{"aggregation":"count","event_type":["a","b"]}"#).unwrap();
    let out = cli(
        &data,
        &["meters", "put", "events", "--file", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", describe(&out));

    let out = cli(&data, &["meters", "list"]);
    assert!(out.status.success(), "{}", describe(&out));
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0].starts_with("slug"), "{list}");
    assert!(
        lines[1].starts_with("bytes-out") && lines[1].contains("sum"),
        "{list}"
    );
    assert!(lines[1].contains("$.data.bytes_out"), "{list}");
    assert!(
        lines[2].starts_with("events") && lines[2].contains("count"),
        "{list}"
    );

    // Refused definitions change nothing and exit 1 with the reason.
    for (slug, def, reason) in [
        ("Bad", def, "meter slug `Bad`"),
        ("m", r#"{"aggregation":"sum"}"#, "value_path"),
        (
            "m",
            r#"{"aggregation":"sum","value_path":"data"}"#,
            "JSON path",
        ),
        ("m", "{", "meter definition"),
    ] {
        let out = cli(&data, &["meters", "put", slug, "--json", def]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }
    let out = cli(&data, &["meters", "put", "m"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    let out = cli(&data, &["meters", "delete", "bytes-out"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted meter bytes-out"));
    let out = cli(&data, &["meters", "delete", "bytes-out"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no meter `bytes-out`"));
    let out = cli(&data, &["meters", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(!list.contains("bytes-out"), "{list}");
    assert!(list.contains("events"), "{list}");
    // Usage of a deleted meter fails.
    let out = cli(&data, &["usage", "bytes-out"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

#[test]
fn keys_and_import_while_a_server_runs() {
    let dir = TestDir::new("cli-keys");
    let data = dir.data("data");
    let server = Server::start(&data, &[]);
    assert_eq!(
        server
            .put_meter(
                "bytes",
                &json!({"aggregation": "sum", "value_path": "$.data.bytes_in"})
            )
            .status,
        201
    );

    // Keys work while the server runs, and take effect at once.
    let out = cli(
        &data,
        &["keys", "create", "--scope", "read", "--name", "dashboard"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no `{name}` in:\n{stdout}"))
            .trim()
            .to_owned()
    };
    let (id, secret, scopes) = (field("id:"), field("secret:"), field("scopes:"));
    assert!(id.starts_with("key_"), "{stdout}");
    assert!(secret.starts_with("tg_") && secret.len() > 20, "{stdout}");
    assert_eq!(scopes, "read");
    assert_eq!(server.get("/v1/meters", &secret).status, 200);
    assert_eq!(server.usage("bytes", "").status, 200);
    let r = server.get("/v1/meters/bytes/usage", &secret);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server.post_events(
        &secret,
        "application/x-ndjson",
        ndjson(&[event("k-1", "cus_a", now_ms(), json!({}))]),
    );
    assert_error(&r, 403, "insufficient_scope");

    let out = cli(&data, &["keys", "list"]);
    assert!(out.status.success(), "{}", describe(&out));
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        line.contains("dashboard") && line.contains("read"),
        "{list}"
    );
    assert!(line.trim_end().ends_with('-'), "not revoked: {line}");
    assert!(!list.contains(&secret), "never the secret:\n{list}");

    // Import and other store commands refuse a data dir a server holds.
    let file = dir.join("events.ndjson");
    std::fs::write(&file, to_ndjson(&rows(now_ms(), 10))).unwrap();
    let out = import(&data, &file, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "a clear message: {stderr}");
    assert!(
        stderr.contains(data.to_str().unwrap()),
        "names the dir: {stderr}"
    );
    let out = cli(&data, &["usage", "bytes"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // Nothing of the refused import was stored.
    assert!(server.usage_rows("bytes", "").is_empty());

    let out = cli(&data, &["keys", "revoke", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    // A revocation by another process reaches the server once its verified-key cache
    // (KEY_CACHE_TTL, 1 s) lapses.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = server.get("/v1/meters", &secret);
        if r.status == 401 || std::time::Instant::now() > deadline {
            assert_error(&r, 401, "invalid_api_key");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = cli(&data, &["keys", "revoke", "key_nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // Once the server is gone, the import goes through.
    drop(server);
    let out = import(&data, &file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        import_counts(&String::from_utf8_lossy(&out.stdout)),
        (10, 0, 0, 0)
    );
}

#[test]
fn help_of_every_command() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["import"],
        &["loadgen"],
        &["usage"],
        &["meters"],
        &["meters", "list"],
        &["meters", "put"],
        &["meters", "delete"],
        &["keys"],
        &["keys", "create"],
        &["keys", "list"],
        &["keys", "revoke"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Usage: tollgate"), "{args:?}:\n{stdout}");
        if let Some(last) = command.last() {
            assert!(stdout.contains(last), "{args:?}:\n{stdout}");
        }
    }
    // Unknown commands and flags fail.
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&["import", "--bogus"]).status.code(), Some(2));
}
