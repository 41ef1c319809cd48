//! Operations endpoints: `/metrics` counts what ingest decided, the OpenAPI document is served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use common::*;
use serde_json::json;

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[test]
fn metrics_count_every_verdict_and_commit() {
    let dir = TestDir::new("metrics");
    let server = Server::start(&dir.data("data"), &[]);
    let now = now_ms();
    let good: Vec<_> = (0..5)
        .map(|i| event(&format!("m{i}"), "c1", now - 60_000, json!({"b": i})))
        .collect();
    assert_eq!(server.ingest(&good)["accepted"], 5);
    assert_eq!(server.ingest(&good[..2])["duplicates"], 2);
    let changed = event("m0", "c1", now - 60_000, json!({"b": 99}));
    let mut bad = event("x", "c1", now - 60_000, json!({}));
    bad["specversion"] = json!("0.3");
    let reply = server.ingest(&[changed, bad]);
    assert_eq!(
        (reply["conflicts"].as_u64(), reply["rejected"].as_u64()),
        (Some(1), Some(1))
    );

    let r = server.request("GET", "/metrics", None, None, None);
    assert_eq!(r.status, 200);
    let text = r.body.as_str().expect("metrics are text").to_owned();
    assert_eq!(
        metric(&text, "tollgate_events_total{verdict=\"accepted\"}"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tollgate_events_total{verdict=\"duplicate\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "tollgate_events_total{verdict=\"conflict\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "tollgate_events_total{verdict=\"rejected\"}"),
        Some(1.0)
    );
    // Three batches reached the writer and committed (the first with a frame).
    let commits = metric(&text, "tollgate_batch_commit_seconds_count").expect("commit histogram");
    assert!(commits >= 1.0, "{text}");
    assert!(
        text.contains("tollgate_batch_commit_seconds_bucket{le="),
        "{text}"
    );
    assert_eq!(metric(&text, "tollgate_writer_queue_depth"), Some(0.0));
    assert_eq!(metric(&text, "tollgate_dedup_identities"), Some(5.0));
    assert!(metric(&text, "tollgate_frame_bytes_total").expect("frame bytes") > 0.0);
}

/// Health, readiness and the 404 answer are covered with the scope matrix in api_errors.rs.
#[test]
fn the_openapi_document_is_served() {
    let dir = TestDir::new("ops");
    let server = Server::start(&dir.data("data"), &[]);
    let doc = server.request("GET", "/v1/openapi.json", None, None, None);
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    assert!(doc.body["paths"]["/v1/events"]["post"].is_object());
    assert_eq!(doc.body, serde_json::to_value(tollgate_api_doc()).unwrap());
}

/// The committed document, which the drift test keeps equal to the code.
fn tollgate_api_doc() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}
