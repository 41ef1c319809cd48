//! Black-box tests of drop-in ingest: the official `orb-billing`, `stripe` and `openmeter`
//! Python clients (from `TOLLGATE_PYTHON` or `target/venv`) pointed at a running Tollgate send
//! events, retries and duplicates; usage from `/v1/meters/{slug}/usage` must equal the oracle
//! (each distinct identity counted once), and bad requests must come back as the clients' own
//! typed errors.
//!
//! A missing Python or client package fails the test; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf()
}

/// The Python with the three official clients; fails loudly when it is missing.
fn python() -> PathBuf {
    let python = std::env::var_os("TOLLGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv/bin/python"));
    match Command::new(&python)
        .args(["-c", "import orb, stripe, openmeter"])
        .output()
    {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "the orb-billing, stripe or openmeter package is missing in {} ({}); run `cargo \
             xtask venv`, or point TOLLGATE_PYTHON at a Python 3 with them",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run {}: {e}; run `cargo xtask venv`, or point TOLLGATE_PYTHON at a Python 3 \
             with orb-billing, stripe and openmeter",
            python.display()
        ),
    }
}

/// Runs one client script with `spec` on stdin; answers its JSON report.
fn run_client(script: &str, spec: &Value) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/dropin")
        .join(script);
    let mut child = Command::new(python())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

const CONFIG: &str = r#"
[dropin]
require_mapping = true
[dropin.event_types]
orb_bytes = "dropin.orb"
api_calls = "dropin.stripe"
request = "dropin.openmeter"
"#;

/// A server whose data dir has the drop-in mapping, with one sum meter per adapter, and a key
/// with only the `ingest` scope.
fn start(dir: &TestDir) -> (Server, String) {
    let data = dir.data("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tollgate.toml"), CONFIG).unwrap();
    let server = Server::start(&data, &[]);
    for (slug, ty, path) in [
        ("orb_bytes", "dropin.orb", "$.data.bytes"),
        ("stripe_calls", "dropin.stripe", "$.data.value"),
        ("om_tokens", "dropin.openmeter", "$.data.tokens"),
    ] {
        let meter = json!({"event_type": ty, "aggregation": "sum", "value_path": path});
        let r = server.put_meter(slug, &meter);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let (_, key) = server.create_key(&["ingest"]);
    (server, key)
}

fn range(now: i64) -> String {
    let from = floor_minute(now) - DAY_MS;
    let to = floor_minute(now) + 10 * MINUTE_MS;
    format!("from={}&to={}", q(&rfc3339(from)), q(&rfc3339(to)))
}

fn spec_base(server: &Server, key: &str) -> serde_json::Map<String, Value> {
    let mut spec = serde_json::Map::new();
    spec.insert("base".into(), json!(server.base()));
    spec.insert("key".into(), json!(key));
    spec
}

#[test]
fn orb_client_events_count_once_and_failures_are_request_validation_errors() {
    let dir = TestDir::new("dropin-orb");
    let (server, key) = start(&dir);
    let now = now_ms() / 1000 * 1000;
    let mut events = Vec::new();
    let mut expected: BTreeMap<String, i128> = BTreeMap::new();
    for i in 0..100i64 {
        let customer = format!("orb-customer-{}", i % 5);
        let bytes = 1_000 + 7 * i;
        *expected.entry(customer.clone()).or_default() += i128::from(bytes);
        events.push(json!({
            "idempotency_key": format!("orb-{i}"),
            "event_name": "orb_bytes",
            "external_customer_id": customer,
            "timestamp": rfc3339(now - (i + 1) * MINUTE_MS),
            "properties": {"bytes": bytes, "region": "eu"},
        }));
    }
    let mut conflicting = events[0].clone();
    conflicting["properties"]["bytes"] = json!(999_999);
    let bad_events = vec![
        json!({"idempotency_key": "orb-old", "event_name": "orb_bytes", "external_customer_id": "x",
               "timestamp": rfc3339(now - 60 * DAY_MS), "properties": {"bytes": 5}}),
        json!({"idempotency_key": "orb-nocustomer", "event_name": "orb_bytes",
               "timestamp": rfc3339(now - MINUTE_MS), "properties": {"bytes": 5}}),
        json!({"idempotency_key": "orb-unmapped", "event_name": "no_such_meter",
               "external_customer_id": "x", "timestamp": rfc3339(now - MINUTE_MS),
               "properties": {"bytes": 5}}),
        conflicting,
    ];
    let mut spec = spec_base(&server, &key);
    spec.insert("events".into(), Value::Array(events));
    spec.insert("bad_events".into(), Value::Array(bad_events));
    let report = run_client("orb_client.py", &Value::Object(spec));

    for first in report["first"].as_array().unwrap() {
        assert_eq!(first["validation_failed"], json!([]), "{report}");
    }
    // The retry: every key a duplicate, none ingested again.
    let retry = &report["retry"];
    assert_eq!(retry["validation_failed"], json!([]), "{report}");
    assert_eq!(retry["debug"]["ingested"], json!([]), "{report}");
    assert_eq!(retry["debug"]["duplicate"].as_array().unwrap().len(), 100);

    // The mixed batch: the client raised RequestValidationError naming exactly the bad keys.
    let bad = &report["bad"];
    assert_eq!(bad["raised"], "RequestValidationError", "{report}");
    assert_eq!(bad["is_request_validation_error"], true);
    assert_eq!(bad["status"], 400);
    let failed: BTreeMap<String, String> = bad["body"]["validation_failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let error = f["validation_errors"][0].as_str().unwrap();
            let code = error.split(':').next().unwrap().to_owned();
            (f["idempotency_key"].as_str().unwrap().to_owned(), code)
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("orb-old", "too_old"),
        ("orb-nocustomer", "missing_field"),
        ("orb-unmapped", "unmapped_event_name"),
        ("orb-0", "conflict"),
    ]
    .into_iter()
    .map(|(k, c)| (k.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(failed, want, "{report}");
    assert_eq!(bad["validation_errors"].as_array().unwrap().len(), 4);

    assert_eq!(
        report["auth"]["raised"], "OrbAuthenticationError",
        "{report}"
    );
    assert_eq!(report["auth"]["status"], 401);

    // Usage equals the oracle: 100 distinct keys, each once; nothing from the bad batch.
    let rows = server.usage_rows("orb_bytes", &range(now));
    assert_eq!(by_subject(&rows), expected);
}

#[test]
fn stripe_client_meter_events_count_once_per_identifier_and_errors_are_typed() {
    let dir = TestDir::new("dropin-stripe");
    let (server, key) = start(&dir);
    let now = now_ms() / 1000 * 1000;
    let now_s = now / 1000;
    let mut events = Vec::new();
    let mut expected: BTreeMap<String, i128> = BTreeMap::new();
    for i in 0..32i64 {
        let customer = format!("cus_{}", ["a", "b", "c"][(i % 3) as usize]);
        let value = i + 1;
        let mut e = json!({"event_name": "api_calls", "customer": customer, "value": value,
                           "timestamp": now_s - 60 * (i + 1)});
        // Counted once: an identifier (20 events), or no identifier but the same
        // Idempotency-Key on the retry (10). Counted twice: neither (2), as on Stripe, where
        // each request without one is a new event.
        let times = match i {
            0..20 => {
                e["identifier"] = json!(format!("stripe-{i}"));
                1
            }
            20..30 => {
                e["idempotency_key"] = json!(format!("idem-{i}"));
                1
            }
            _ => 2,
        };
        *expected.entry(customer).or_default() += i128::from(value * times);
        events.push(e);
    }
    let mut spec = spec_base(&server, &key);
    spec.insert("events".into(), Value::Array(events));
    spec.insert("old_timestamp".into(), json!(now_s - 60 * 86_400));
    let report = run_client("stripe_client.py", &Value::Object(spec));

    let first = report["first"].as_array().unwrap();
    assert_eq!(first.len(), 32);
    assert_eq!(first[0]["object"], "billing.meter_event");
    assert_eq!(first[0]["identifier"], "stripe-0");
    assert_eq!(first[0]["payload"]["value"], "1");
    // Without an identifier the Idempotency-Key is the identifier.
    assert_eq!(first[20]["identifier"], "idem-20");
    for (a, b) in first
        .iter()
        .zip(report["retry"].as_array().unwrap())
        .take(30)
    {
        assert_eq!(
            a["identifier"], b["identifier"],
            "a retry answers the same identifier"
        );
    }

    let err = |name: &str| report[name].clone();
    let missing = err("missing_customer");
    assert_eq!(missing["raised"], "InvalidRequestError", "{report}");
    assert_eq!(missing["status"], 400);
    assert_eq!(missing["param"], "payload[stripe_customer_id]");
    assert_eq!(missing["code"], "missing_field");
    let conflict = err("conflict");
    assert_eq!(conflict["raised"], "IdempotencyError", "{report}");
    assert_eq!(conflict["code"], "conflict");
    let old = err("too_old");
    assert_eq!(old["raised"], "InvalidRequestError", "{report}");
    assert_eq!(
        (old["code"].clone(), old["param"].clone()),
        (json!("too_old"), json!("timestamp"))
    );
    let unmapped = err("unmapped");
    assert_eq!(unmapped["raised"], "InvalidRequestError", "{report}");
    assert_eq!(unmapped["code"], "unmapped_event_name");
    let auth = err("auth");
    assert_eq!(auth["raised"], "AuthenticationError", "{report}");
    assert_eq!(auth["status"], 401);

    let rows = server.usage_rows("stripe_calls", &range(now));
    assert_eq!(by_subject(&rows), expected);

    // `curl -u KEY:` (HTTP Basic) works too, and a retry of it is a duplicate.
    let client = reqwest::blocking::Client::new();
    for _ in 0..2 {
        let r = client
            .post(format!("{}/v1/billing/meter_events", server.base()))
            .basic_auth(&key, Some(""))
            .form(&[
                ("event_name", "api_calls"),
                ("payload[stripe_customer_id]", "cus_basic"),
                ("payload[value]", "5"),
                ("identifier", "basic-1"),
            ])
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let rows = server.usage_rows("stripe_calls", &format!("{}&subject=cus_basic", range(now)));
    assert_eq!(by_subject(&rows).get("cus_basic"), Some(&5));
}

#[test]
fn openmeter_client_cloudevents_count_once_and_failures_are_problem_details() {
    let dir = TestDir::new("dropin-openmeter");
    let (server, key) = start(&dir);
    let now = now_ms() / 1000 * 1000;
    let mut events = Vec::new();
    let mut expected: BTreeMap<String, i128> = BTreeMap::new();
    for i in 0..25i64 {
        let subject = format!("team-{}", i % 3);
        let tokens = 3 * i + 1;
        *expected.entry(subject.clone()).or_default() += i128::from(tokens);
        events.push(json!({
            "specversion": "1.0",
            "id": format!("om-{i}"),
            "source": "openmeter-test",
            "type": "request",
            "subject": subject,
            "time": rfc3339(now - (i + 1) * MINUTE_MS),
            "data": {"tokens": tokens, "model": "small"},
        }));
    }
    let bad_event = json!({"specversion": "1.0", "id": "om-old", "source": "openmeter-test",
        "type": "request", "subject": "team-0", "time": rfc3339(now - 60 * DAY_MS),
        "data": {"tokens": 1}});
    let mut spec = spec_base(&server, &key);
    spec.insert("events".into(), Value::Array(events));
    spec.insert("bad_event".into(), bad_event);
    let report = run_client("openmeter_client.py", &Value::Object(spec));

    for name in ["single", "batch", "retry"] {
        assert_eq!(report[name]["raised"], Value::Null, "{name}: {report}");
    }
    let bad = &report["bad"];
    assert_eq!(bad["raised"], "HttpResponseError", "{report}");
    assert_eq!(bad["status"], 400);
    assert_eq!(bad["body"]["status"], 400);
    let errors = bad["body"]["extensions"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(
        (
            errors[0]["index"].clone(),
            errors[0]["id"].clone(),
            errors[0]["code"].clone()
        ),
        (json!(2), json!("om-old"), json!("too_old"))
    );
    assert_eq!(report["auth"]["status"], 401, "{report}");
    assert_eq!(
        report["auth"]["client_authentication_error"], true,
        "{report}"
    );

    let rows = server.usage_rows("om_tokens", &range(now));
    assert_eq!(by_subject(&rows), expected);
}

#[test]
fn dropin_endpoints_need_the_ingest_scope_and_answer_in_their_own_shapes() {
    let dir = TestDir::new("dropin-shapes");
    let (server, _) = start(&dir);
    let (_, read_key) = server.create_key(&["read"]);
    let client = reqwest::blocking::Client::new();
    // Orb: a body without `events` is a request validation error in Orb's shape.
    let r = client
        .post(format!("{}/v1/ingest", server.base()))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"event": []}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(
        body["type"],
        "https://docs.withorb.com/reference/error-responses#400-request-validation-errors"
    );
    assert_eq!(body["code"], "invalid_body");
    // A read-only key may not ingest through any adapter.
    let r = client
        .post(format!("{}/v1/ingest", server.base()))
        .bearer_auth(&read_key)
        .json(&json!({"events": []}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = client
        .post(format!("{}/v1/billing/meter_events", server.base()))
        .bearer_auth(&read_key)
        .form(&[("event_name", "api_calls")])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "insufficient_scope");
    let r = client
        .post(format!("{}/api/v1/events", server.base()))
        .bearer_auth(&read_key)
        .header("content-type", "application/cloudevents+json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    // OpenMeter: an unknown content type is 415 problem details.
    let r = client
        .post(format!("{}/api/v1/events", server.base()))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let body: Value = r.json().unwrap();
    assert_eq!(body["extensions"]["code"], "unsupported_media_type");
}
