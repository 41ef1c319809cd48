//! Black-box tests of the API's error answers: every error code of `POST /v1/events`, the
//! per-event verdicts of a batch, the accepted content types, scopes and key revocation, meter
//! definition errors and usage query errors. Each error body is checked for its exact shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use common::*;
use serde_json::{Value, json};

const BODY_BYTES_MAX: u64 = 64 * 1024 * 1024;
const BATCH_EVENTS_MAX: usize = 100_000;

fn sum_meter() -> Value {
    json!({"aggregation": "sum", "value_path": "$.data.bytes"})
}

#[test]
fn events_request_errors_have_codes_and_shape() {
    let dir = TestDir::new("req-errors");
    let server = Server::start(&dir.data("data"), &[]);
    let t = now_ms() - HOUR_MS;
    let good = event("e-1", "cus_a", t, json!({"bytes": 1}));

    // Malformed JSON: a single event that is not JSON, an array body that is not an array.
    let r = server.post_events(
        ADMIN_KEY,
        "application/cloudevents+json",
        r#"{"specversion": "1.0", "id": "#,
    );
    assert_error(&r, 400, "malformed_json");
    let r = server.post_events(ADMIN_KEY, "application/cloudevents+json", "   ");
    assert_error(&r, 400, "malformed_json");
    let r = server.post_events(
        ADMIN_KEY,
        "application/cloudevents-batch+json",
        good.to_string(),
    );
    assert_error(&r, 400, "malformed_json");
    let r = server.post_events(ADMIN_KEY, "application/cloudevents-batch+json", "[{}, ");
    assert_error(&r, 400, "malformed_json");

    // Not UTF-8.
    let r = server.post_events(ADMIN_KEY, "application/x-ndjson", vec![0xff, 0xfe, b'\n']);
    assert_error(&r, 400, "malformed_body");

    // Content types.
    for ct in [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
    ] {
        let r = server.post_events(ADMIN_KEY, ct, ndjson(std::slice::from_ref(&good)));
        assert_error(&r, 415, "unsupported_media_type");
    }
    let r = server.request(
        "POST",
        "/v1/events",
        Some(ADMIN_KEY),
        None,
        Some(ndjson(std::slice::from_ref(&good)).into()),
    );
    assert_error(&r, 415, "unsupported_media_type");

    // Authentication comes first: no key, a bad key, a malformed header.
    let r = server.request(
        "POST",
        "/v1/events",
        None,
        Some("application/x-ndjson"),
        Some(ndjson(std::slice::from_ref(&good)).into()),
    );
    assert_error(&r, 401, "missing_api_key");
    let r = server.post_events(
        "tg_0000000000000000000000000000000000000000",
        "application/x-ndjson",
        ndjson(std::slice::from_ref(&good)),
    );
    assert_error(&r, 401, "invalid_api_key");
    for header in ["Basic YWRtaW46YWRtaW4=", "Bearer ", ADMIN_KEY] {
        let r = server.request_with_auth_header("POST", "/v1/events", header);
        assert_error(&r, 401, "invalid_api_key");
    }
    let r = server.post_events("nope", "text/plain", "x");
    assert_error(&r, 401, "invalid_api_key");

    // None of the refused requests stored anything.
    server.put_meter("bytes", &sum_meter());
    assert!(server.usage_rows("bytes", "").is_empty());
    let r = server.ingest(std::slice::from_ref(&good));
    assert_counts(&r, 1, 0, 0, 0);
}

#[test]
fn events_body_too_large() {
    let dir = TestDir::new("too-large");
    let server = Server::start(&dir.data("data"), &[]);
    // One byte over the limit, with a Content-Length, streamed from a reader.
    let len = BODY_BYTES_MAX + 1;
    let reader = std::io::Read::take(std::io::repeat(b' '), len);
    let r = server.request(
        "POST",
        "/v1/events",
        Some(ADMIN_KEY),
        Some("application/x-ndjson"),
        Some(reqwest::blocking::Body::sized(reader, len)),
    );
    assert_error(&r, 413, "body_too_large");
    // Exactly at the limit is read (and holds no events).
    let reader = std::io::Read::take(std::io::repeat(b'\n'), BODY_BYTES_MAX);
    let r = server.request(
        "POST",
        "/v1/events",
        Some(ADMIN_KEY),
        Some("application/x-ndjson"),
        Some(reqwest::blocking::Body::sized(reader, BODY_BYTES_MAX)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_counts(&r.body, 0, 0, 0, 0);
}

#[test]
fn events_too_many_events() {
    let dir = TestDir::new("too-many");
    let server = Server::start(&dir.data("data"), &[]);
    let body = "{}\n".repeat(BATCH_EVENTS_MAX + 1);
    let r = server.post_events(ADMIN_KEY, "application/x-ndjson", body);
    assert_error(&r, 413, "too_many_events");
    assert_eq!(
        r.body["error"]["details"],
        json!({"events": BATCH_EVENTS_MAX + 1, "limit": BATCH_EVENTS_MAX})
    );
    // The same count as a JSON array.
    let body = format!("[{}{{}}]", "{},".repeat(BATCH_EVENTS_MAX));
    let r = server.post_events(ADMIN_KEY, "application/cloudevents-batch+json", body);
    assert_error(&r, 413, "too_many_events");
    // Exactly the limit is taken: each event gets its own verdict.
    let body = "{}\n".repeat(BATCH_EVENTS_MAX);
    let r = server.post_events(ADMIN_KEY, "application/x-ndjson", body);
    assert_eq!(r.status, 200, "status");
    assert_counts(&r.body, 0, 0, 0, BATCH_EVENTS_MAX as u64);
    let errors = r.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), BATCH_EVENTS_MAX);
    assert_eq!(errors[BATCH_EVENTS_MAX - 1]["index"], BATCH_EVENTS_MAX - 1);
    assert_eq!(errors[0]["code"], "missing_attribute");
}

/// (method, path, content type, body, scope needed)
type Endpoint<'a> = (&'a str, String, Option<&'a str>, Option<String>, &'a str);

#[test]
fn scopes_are_enforced_on_every_endpoint() {
    let dir = TestDir::new("scopes");
    let server = Server::start(&dir.data("data"), &[]);
    let (_ingest_id, ingest) = server.create_key(&["ingest"]);
    let (_read_id, read) = server.create_key(&["read"]);
    assert_eq!(server.put_meter("bytes", &sum_meter()).status, 201);
    let t = now_ms() - HOUR_MS;
    let events = ndjson(&[event("s-1", "cus_a", t, json!({"bytes": 5}))]);

    let key_body = json!({"scopes": ["read"]}).to_string();
    let meter_body = sum_meter().to_string();
    let endpoints: Vec<Endpoint<'_>> = vec![
        (
            "POST",
            "/v1/events".into(),
            Some("application/x-ndjson"),
            Some(events.clone()),
            "ingest",
        ),
        ("GET", "/v1/meters".into(), None, None, "read"),
        ("GET", "/v1/meters/bytes".into(), None, None, "read"),
        ("GET", "/v1/meters/bytes/usage".into(), None, None, "read"),
        (
            "PUT",
            "/v1/meters/other".into(),
            Some("application/json"),
            Some(meter_body),
            "admin",
        ),
        ("DELETE", "/v1/meters/nothing".into(), None, None, "admin"),
        ("GET", "/v1/api_keys".into(), None, None, "admin"),
        (
            "POST",
            "/v1/api_keys".into(),
            Some("application/json"),
            Some(key_body),
            "admin",
        ),
        (
            "DELETE",
            "/v1/api_keys/key_000000000000".into(),
            None,
            None,
            "admin",
        ),
    ];
    for (method, path, ct, body, needed) in &endpoints {
        for (name, key) in [
            ("ingest", &ingest),
            ("read", &read),
            ("admin", &ADMIN_KEY.to_owned()),
        ] {
            let r = server.request(method, path, Some(key), *ct, body.clone().map(Into::into));
            let allowed = name == "admin" || name == *needed;
            if allowed {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{name} key on {method} {path}: {} {}",
                    r.status,
                    r.body
                );
            } else {
                assert_error(&r, 403, "insufficient_scope");
                let message = r.body["error"]["message"].as_str().unwrap();
                assert!(message.contains(needed), "{message}");
            }
        }
        // And no key at all.
        let r = server.request(method, path, None, *ct, body.clone().map(Into::into));
        assert_error(&r, 401, "missing_api_key");
    }
    // The ingest key's request was stored once; the read key's was not.
    let rows = server.usage_rows("bytes", "");
    assert_eq!(by_subject(&rows), [("cus_a".to_owned(), 5)].into());
    // Open endpoints need no key.
    assert_eq!(
        server.request("GET", "/healthz", None, None, None).status,
        200
    );
    assert_eq!(
        server.request("GET", "/readyz", None, None, None).status,
        200
    );
    let r = server.request("GET", "/v1/nothing", Some(ADMIN_KEY), None, None);
    assert_error(&r, 404, "route_not_found");
}

#[test]
fn revoked_key_fails_with_401() {
    let dir = TestDir::new("revoke");
    let server = Server::start(&dir.data("data"), &[]);
    let (id, secret) = server.create_key(&["ingest", "read"]);
    assert_eq!(server.get("/v1/meters", &secret).status, 200);
    let listed = server.get("/v1/api_keys", ADMIN_KEY);
    assert_eq!(listed.status, 200);
    let mine = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(mine["scopes"], json!(["ingest", "read"]));
    assert_eq!(mine["revoked_at"], Value::Null);
    assert!(mine.get("secret").is_none(), "never the secret: {mine}");

    let r = server.request(
        "DELETE",
        &format!("/v1/api_keys/{id}"),
        Some(ADMIN_KEY),
        None,
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_error(&server.get("/v1/meters", &secret), 401, "invalid_api_key");
    let r = server.post_events(
        &secret,
        "application/x-ndjson",
        ndjson(&[event("r-1", "cus_a", now_ms(), json!({}))]),
    );
    assert_error(&r, 401, "invalid_api_key");
    let listed = server.get("/v1/api_keys", ADMIN_KEY);
    let mine = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert!(mine["revoked_at"].is_string(), "{mine}");
    // Unknown key ids and bad key requests.
    let r = server.request(
        "DELETE",
        "/v1/api_keys/key_ffffffffffff",
        Some(ADMIN_KEY),
        None,
        None,
    );
    assert_error(&r, 404, "api_key_not_found");
    for (body, code) in [
        (json!({"scopes": ["root"]}), "invalid_scope"),
        (json!({"scopes": []}), "invalid_scope"),
        (json!({"scopes": ["read"], "extra": 1}), "invalid_body"),
    ] {
        let r = server.request(
            "POST",
            "/v1/api_keys",
            Some(ADMIN_KEY),
            Some("application/json"),
            Some(body.to_string().into()),
        );
        assert_error(&r, 400, code);
    }
    // The admin key still works.
    assert_eq!(server.get("/v1/meters", ADMIN_KEY).status, 200);
}

#[test]
fn batch_per_event_errors_keep_the_good_events() {
    let dir = TestDir::new("per-event");
    let server = Server::start(&dir.data("data"), &[]);
    assert_eq!(server.put_meter("bytes", &sum_meter()).status, 201);
    let now = now_ms();
    let t = now - HOUR_MS;
    // Counted earlier, so that a different payload later is a conflict.
    let first = server.ingest(&[event("earlier", "cus_a", t, json!({"bytes": 1000}))]);
    assert_counts(&first, 1, 0, 0, 0);

    let mut no_subject = event("no-subject", "x", t, json!({"bytes": 1}));
    no_subject.as_object_mut().unwrap().remove("subject");
    let mut bad_spec = event("bad-spec", "cus_a", t, json!({"bytes": 1}));
    bad_spec["specversion"] = json!("0.3");
    let mut empty_id = event("", "cus_a", t, json!({"bytes": 1}));
    empty_id["id"] = json!("");
    let mut bad_time = event("bad-time", "cus_a", t, json!({"bytes": 1}));
    bad_time["time"] = json!("yesterday");
    let mut numeric_type = event("num-type", "cus_a", t, json!({"bytes": 1}));
    numeric_type["type"] = json!(7);
    let batch = vec![
        event("ok-1", "cus_a", t, json!({"bytes": 1})),  // 0
        no_subject,                                      // 1 missing_attribute
        bad_spec,                                        // 2 unsupported_specversion
        event("ok-2", "cus_b", t, json!({"bytes": 20})), // 3
        event("old", "cus_a", now - 40 * DAY_MS, json!({"bytes": 1})), // 4 too_old
        event("future", "cus_a", now + HOUR_MS, json!({"bytes": 1})), // 5 in_future
        event("ok-1", "cus_a", t, json!({"bytes": 1})),  // 6 duplicate within the batch
        event("ok-2", "cus_b", t, json!({"bytes": 999})), // 7 conflict within the batch
        event("earlier", "cus_a", t, json!({"bytes": 5})), // 8 conflict with the earlier one
        event("earlier", "cus_a", t, json!({"bytes": 1000})), // 9 duplicate of the earlier one
        empty_id,                                        // 10 empty_attribute
        bad_time,                                        // 11 invalid_time
        numeric_type,                                    // 12 invalid_attribute
        json!([1, 2]),                                   // 13 malformed_event
        event("ok-3", "cus_b", t, json!({"bytes": 300})), // 14
    ];
    let r = server.post_events(
        ADMIN_KEY,
        "application/cloudevents-batch+json",
        Value::Array(batch).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_counts(&r.body, 3, 2, 2, 8);
    let want: Vec<(u64, String)> = [
        (1, "missing_attribute"),
        (2, "unsupported_specversion"),
        (4, "too_old"),
        (5, "in_future"),
        (6, "duplicate"),
        (7, "conflict"),
        (8, "conflict"),
        (9, "duplicate"),
        (10, "empty_attribute"),
        (11, "invalid_time"),
        (12, "invalid_attribute"),
        (13, "malformed_event"),
    ]
    .iter()
    .map(|(i, c)| (*i, (*c).to_owned()))
    .collect();
    assert_eq!(error_codes(&r.body), want);
    let errors = r.body["errors"].as_array().unwrap();
    for e in errors {
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
    }
    // Ids are reported where readable.
    assert_eq!(errors[0].get("id"), Some(&json!("no-subject")));
    assert_eq!(errors[4]["id"], "ok-1");
    assert_eq!(errors[5]["id"], "ok-2");
    assert_eq!(errors[6]["id"], "earlier");
    assert!(errors[1]["message"].as_str().unwrap().contains("0.3"));

    // Only the accepted events count; the first payload of a conflicting identity stays.
    let rows = server.usage_rows("bytes", "");
    assert_eq!(
        by_subject(&rows),
        [("cus_a".to_owned(), 1001), ("cus_b".to_owned(), 320)].into()
    );
    let meter = server.get("/v1/meters/bytes", ADMIN_KEY);
    assert_eq!(meter.body["counted_events"], 4);
}

#[test]
fn content_types_single_batch_and_ndjson() {
    let dir = TestDir::new("content-types");
    let server = Server::start(&dir.data("data"), &[]);
    assert_eq!(server.put_meter("bytes", &sum_meter()).status, 201);
    let t = now_ms() - HOUR_MS;

    // One event.
    let r = server.post_events(
        ADMIN_KEY,
        "application/cloudevents+json; charset=utf-8",
        event("single", "cus_a", t, json!({"bytes": 1})).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_counts(&r.body, 1, 0, 0, 0);
    // One invalid event: a verdict, not a request error.
    let mut bad = event("single-bad", "cus_a", t, json!({"bytes": 1}));
    bad.as_object_mut().unwrap().remove("source");
    let r = server.post_events(ADMIN_KEY, "application/cloudevents+json", bad.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_counts(&r.body, 0, 0, 0, 1);
    assert_eq!(
        error_codes(&r.body),
        vec![(0, "missing_attribute".to_owned())]
    );

    // A JSON array: indexes are array positions.
    let batch = json!([
        event("b-0", "cus_a", t, json!({"bytes": 10})),
        {"specversion": "1.0"},
        event("b-2", "cus_a", t, json!({"bytes": 100})),
    ]);
    let r = server.post_events(
        ADMIN_KEY,
        "application/cloudevents-batch+json",
        batch.to_string(),
    );
    assert_counts(&r.body, 2, 0, 0, 1);
    assert_eq!(
        error_codes(&r.body),
        vec![(1, "missing_attribute".to_owned())]
    );

    // NDJSON: a blank line keeps its number; CRLF line ends and a missing final newline are fine.
    let body = format!(
        "{}\n\n{}\r\n   \n{}\n{}",
        event("n-0", "cus_b", t, json!({"bytes": 1000})),
        r#"{"specversion":"1.0","id":"n-2","#,
        event("n-4", "cus_b", t, json!({"bytes": 10000})),
        event("n-0", "cus_b", t, json!({"bytes": 1000})),
    );
    let r = server.post_events(ADMIN_KEY, "application/x-ndjson", body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_counts(&r.body, 2, 1, 0, 1);
    assert_eq!(
        error_codes(&r.body),
        vec![
            (2, "malformed_event".to_owned()),
            (5, "duplicate".to_owned())
        ]
    );

    // application/json sniffs: an array is a batch, an object one event.
    let r = server.post_events(
        ADMIN_KEY,
        "application/json",
        json!([event("j-0", "cus_c", t, json!({"bytes": 7}))]).to_string(),
    );
    assert_counts(&r.body, 1, 0, 0, 0);
    let r = server.post_events(
        ADMIN_KEY,
        "application/json",
        event("j-1", "cus_c", t, json!({"bytes": 70})).to_string(),
    );
    assert_counts(&r.body, 1, 0, 0, 0);

    let rows = server.usage_rows("bytes", "");
    assert_eq!(
        by_subject(&rows),
        [
            ("cus_a".to_owned(), 111),
            ("cus_b".to_owned(), 11000),
            ("cus_c".to_owned(), 77)
        ]
        .into()
    );
}

#[test]
fn meter_definition_errors() {
    let dir = TestDir::new("meter-errors");
    let server = Server::start(&dir.data("data"), &[]);
    for slug in ["Bytes", "1bytes", "bytes.out", "-x", &"a".repeat(65)] {
        assert_error(
            &server.put_meter(slug, &sum_meter()),
            400,
            "invalid_meter_slug",
        );
        assert_error(
            &server.get(&format!("/v1/meters/{slug}"), ADMIN_KEY),
            400,
            "invalid_meter_slug",
        );
    }
    assert_eq!(server.put_meter(&"a".repeat(64), &sum_meter()).status, 201);
    for aggregation in ["sum", "unique_count", "max", "min", "latest"] {
        let r = server.put_meter("m", &json!({"aggregation": aggregation}));
        assert_error(&r, 422, "value_path_required");
    }
    for path in ["data.bytes", "$.", "$.data[", "$..bytes", "$.data[*]"] {
        let r = server.put_meter("m", &json!({"aggregation": "sum", "value_path": path}));
        assert_error(&r, 422, "invalid_json_path");
    }
    let r = server.put_meter(
        "m",
        &json!({"aggregation": "count", "group_by": {"host": "dest_host"}}),
    );
    assert_error(&r, 422, "invalid_json_path");
    let r = server.put_meter(
        "m",
        &json!({"aggregation": "sum", "value_path": "$.x", "extra": 1}),
    );
    assert_error(&r, 400, "invalid_body");
    let r = server.put_meter("m", &json!({"aggregation": "median", "value_path": "$.x"}));
    assert_error(&r, 400, "invalid_body");
    let r = server.request(
        "PUT",
        "/v1/meters/m",
        Some(ADMIN_KEY),
        Some("application/json"),
        Some("{\"aggregation\":".into()),
    );
    assert_error(&r, 400, "malformed_json");
    // None of the refused definitions exists.
    assert_error(
        &server.get("/v1/meters/m", ADMIN_KEY),
        404,
        "meter_not_found",
    );
    assert_error(&server.delete_meter("m"), 404, "meter_not_found");
    assert_error(&server.usage("m", ""), 404, "meter_not_found");
    let list = server.get("/v1/meters", ADMIN_KEY);
    assert_eq!(
        list.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        list.body
    );
}

#[test]
fn usage_query_errors() {
    let dir = TestDir::new("usage-errors");
    let server = Server::start(&dir.data("data"), &[]);
    let def = json!({
        "aggregation": "sum",
        "value_path": "$.data.bytes",
        "group_by": {"host": "$.data.host"}
    });
    assert_eq!(server.put_meter("bytes", &def).status, 201);
    let to = floor_minute(now_ms());
    let from = to - DAY_MS;
    let range = format!("from={}&to={}", q(&rfc3339(from)), q(&rfc3339(to)));
    // The valid query first, so every failure below is the parameter's fault.
    let ok = server.usage(
        "bytes",
        &format!("{range}&window_size=hour&time_zone=Asia/Kolkata&group_by=host"),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["time_zone"], "Asia/Kolkata");
    assert_eq!(ok.body["window_size"], "hour");
    assert_eq!(ok.body["from"], rfc3339(from));

    let cases: Vec<(String, u16, &str)> = vec![
        ("from=yesterday".into(), 400, "invalid_time"),
        (
            format!("to=2026-13-01T00%3A00%3A00Z&from={}", q(&rfc3339(from))),
            400,
            "invalid_time",
        ),
        (
            format!("from={}&to={}", q(&rfc3339(from + 30_000)), q(&rfc3339(to))),
            400,
            "time_not_minute_aligned",
        ),
        (
            format!("from={}&to={}", q(&rfc3339(from)), q(&rfc3339_ms(to + 1))),
            400,
            "time_not_minute_aligned",
        ),
        (
            format!("from={}&to={}", q(&rfc3339(to)), q(&rfc3339(from))),
            400,
            "empty_time_range",
        ),
        (format!("{range}&group_by=nope"), 400, "unknown_group_by"),
        (
            format!("{range}&group_by=host,nope"),
            400,
            "unknown_group_by",
        ),
        (
            format!("{range}&time_zone=Mars%2FOlympus"),
            400,
            "invalid_time_zone",
        ),
        (
            format!("{range}&window_size=week"),
            400,
            "invalid_window_size",
        ),
        (
            format!("{range}&window_size=Day"),
            400,
            "invalid_window_size",
        ),
        (format!("{range}&limit=10"), 400, "unknown_parameter"),
        (
            format!("{range}&from={}", q(&rfc3339(from))),
            400,
            "duplicate_parameter",
        ),
        (
            format!(
                "from={}&to={}&window_size=minute",
                q(&rfc3339(to - 70 * DAY_MS)),
                q(&rfc3339(to))
            ),
            422,
            "usage_windows_max",
        ),
    ];
    for (query, status, code) in cases {
        let r = server.usage("bytes", &query);
        assert!(r.status == status, "{query}: {} {}", r.status, r.body);
        assert_error(&r, status, code);
    }
    assert_error(&server.usage("nothing", &range), 404, "meter_not_found");
    assert_error(&server.usage("No", &range), 400, "invalid_meter_slug");
}
