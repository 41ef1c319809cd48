//! Black-box tests of entitlements on the request path, the session gauge and alerts:
//! grants from a plan version and per-customer overrides, checks (single and batch) that see
//! usage as soon as its ingest batch is acknowledged, hard and soft limits, concurrent
//! sessions, typed errors, and alert rules that fire once and log `entitlement.exceeded`.
//!
//! The server's clock is real: the subscription starts at the first minute of the current UTC
//! month (customers in UTC, anchored on the 1st), so the billing period is this month and every
//! event is sent with the current time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use common::*;
use serde_json::{Value, json};

const FLAGS: &[&str] = &["--invoice-every", "0s", "--alert-every", "0s"];

fn call(server: &Server, method: &str, path: &str, key: &str, body: Option<&Value>) -> Reply {
    server.request(
        method,
        path,
        Some(key),
        body.map(|_| "application/json"),
        body.map(|b| reqwest::blocking::Body::from(b.to_string())),
    )
}

fn post(server: &Server, path: &str, body: &Value) -> Reply {
    call(server, "POST", path, ADMIN_KEY, Some(body))
}

/// Start of the current UTC month.
fn month_start() -> i64 {
    let (y, m, _) = civil_from_days(now_ms().div_euclid(DAY_MS));
    utc_ms(y, m, 1, 0, 0, 0)
}

fn bytes_event(id: &str, customer: &str, bytes: u64) -> Value {
    event(
        id,
        customer,
        now_ms() - 1_000,
        json!({"bytes_out": bytes, "session_id": "s"}),
    )
}

fn session_event(id: &str, customer: &str, kind: &str, session: &str, time_ms: i64) -> Value {
    let mut e = event(id, customer, time_ms, json!({"session_id": session}));
    e["type"] = json!(kind);
    e
}

/// Meter `bytes-out`, plan `pro` with four features, customers `acme` and `beta` subscribed.
fn setup(server: &Server) {
    let r = server.put_meter(
        "bytes-out",
        &json!({"aggregation": "sum", "event_type": "proxy.request", "value_path": "$.data.bytes_out"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(
        server,
        "/v1/plans",
        &json!({
            "key": "pro", "name": "Pro", "currency": "USD", "interval": "month",
            "prices": [{"key": "base", "name": "Base", "model": {"type": "flat", "amount": "10"}}],
            "entitlements": [
                {"feature": "egress", "kind": "metered", "meter": "bytes-out", "limit": "1000", "period": "billing_period", "enforcement": "hard"},
                {"feature": "sso", "kind": "boolean", "enabled": true},
                {"feature": "seats", "kind": "static", "value": 10},
                {"feature": "sessions", "kind": "concurrent_sessions", "limit": "2"}
            ]
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["versions"][0]["entitlements"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    for key in ["acme", "beta"] {
        let r = post(
            server,
            "/v1/customers",
            &json!({"key": key, "name": key, "currency": "USD", "time_zone": "UTC", "billing_anchor": "2026-01-01"}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let r = post(
            server,
            "/v1/subscriptions",
            &json!({"customer": key, "plan": "pro", "start": rfc3339(month_start())}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

fn check(server: &Server, key: &str, customer: &str, feature: &str, amount: Option<&str>) -> Value {
    let mut body = json!({"customer": customer, "feature": feature});
    if let Some(a) = amount {
        body["amount"] = json!(a);
    }
    let r = call(server, "POST", "/v1/entitlements/check", key, Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[test]
fn metered_limits_see_acknowledged_usage_at_once() {
    let dir = TestDir::new("ent-metered");
    let server = Server::start(&dir.data("d"), FLAGS);
    setup(&server);
    let c = check(&server, ADMIN_KEY, "acme", "egress", None);
    assert_eq!(c["allowed"], true, "{c}");
    assert_eq!(c["reason"], "within_limit");
    assert_eq!(
        (c["used"].as_str(), c["remaining"].as_str()),
        (Some("0"), Some("1000"))
    );
    assert_eq!(c["source"], "plan");
    assert_eq!(ms(&c["resets_at"]), month_end());

    // Usage counts from the ack on: no sleep between ingest and check.
    for (i, bytes) in [600u64, 300].iter().enumerate() {
        let out = server.ingest(&[bytes_event(&format!("e{i}"), "acme", *bytes)]);
        assert_eq!(out["accepted"], 1);
        let c = check(&server, ADMIN_KEY, "acme", "egress", None);
        let used: u64 = [600, 900][i];
        assert_eq!(c["used"].as_str(), Some(used.to_string().as_str()), "{c}");
    }
    // 900 used of 1000: 100 more fits, 101 does not.
    assert_eq!(
        check(&server, ADMIN_KEY, "acme", "egress", Some("100"))["allowed"],
        true
    );
    let c = check(&server, ADMIN_KEY, "acme", "egress", Some("100.5"));
    assert_eq!(
        (c["allowed"].as_bool(), c["reason"].as_str()),
        (Some(false), Some("limit_exceeded"))
    );
    // A re-sent event changes nothing.
    server.ingest(&[bytes_event("e0", "acme", 600)]);
    assert_eq!(
        check(&server, ADMIN_KEY, "acme", "egress", None)["used"],
        "900"
    );
    // Another customer's usage is its own.
    assert_eq!(
        check(&server, ADMIN_KEY, "beta", "egress", None)["used"],
        "0"
    );
    // At the limit, "may I go on?" is no.
    server.ingest(&[bytes_event("e9", "acme", 100)]);
    let c = check(&server, ADMIN_KEY, "acme", "egress", None);
    assert_eq!(
        (c["allowed"].as_bool(), c["remaining"].as_str()),
        (Some(false), Some("0"))
    );

    // An override raises the limit and makes it soft, for acme only.
    let r = call(
        &server,
        "PUT",
        "/v1/customers/acme/entitlements/egress",
        ADMIN_KEY,
        Some(
            &json!({"kind": "metered", "meter": "bytes-out", "limit": "1500", "enforcement": "soft"}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = check(&server, ADMIN_KEY, "acme", "egress", Some("2000"));
    assert_eq!(
        (
            c["allowed"].as_bool(),
            c["reason"].as_str(),
            c["source"].as_str()
        ),
        (Some(true), Some("soft_limit_exceeded"), Some("override"))
    );
    assert_eq!(
        check(&server, ADMIN_KEY, "beta", "egress", None)["limit"],
        "1000"
    );
    let r = call(
        &server,
        "DELETE",
        "/v1/customers/acme/entitlements/egress",
        ADMIN_KEY,
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        check(&server, ADMIN_KEY, "acme", "egress", None)["source"],
        "plan"
    );
    let r = call(
        &server,
        "DELETE",
        "/v1/customers/acme/entitlements/egress",
        ADMIN_KEY,
        None,
    );
    assert_error(&r, 404, "override_not_found");
}

fn month_end() -> i64 {
    let (y, m, _) = civil_from_days(now_ms().div_euclid(DAY_MS));
    if m == 12 {
        utc_ms(y + 1, 1, 1, 0, 0, 0)
    } else {
        utc_ms(y, m + 1, 1, 0, 0, 0)
    }
}

fn ms(v: &Value) -> i64 {
    jiff::Timestamp::from_str_lenient(v.as_str().unwrap())
}

trait Lenient {
    fn from_str_lenient(s: &str) -> i64;
}

impl Lenient for jiff::Timestamp {
    fn from_str_lenient(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }
}

#[test]
fn boolean_static_and_missing_features() {
    let dir = TestDir::new("ent-kinds");
    let server = Server::start(&dir.data("d"), FLAGS);
    setup(&server);
    let c = check(&server, ADMIN_KEY, "acme", "sso", None);
    assert_eq!(
        (c["allowed"].as_bool(), c["reason"].as_str()),
        (Some(true), Some("entitled"))
    );
    let c = check(&server, ADMIN_KEY, "acme", "seats", Some("10"));
    assert_eq!(
        (c["allowed"].as_bool(), c["value"].as_i64()),
        (Some(true), Some(10))
    );
    let c = check(&server, ADMIN_KEY, "acme", "seats", Some("11"));
    assert_eq!(c["reason"], "above_static_value");
    let c = check(&server, ADMIN_KEY, "acme", "teleport", None);
    assert_eq!(
        (c["allowed"].as_bool(), c["reason"].as_str()),
        (Some(false), Some("not_entitled"))
    );
    // Overrides can switch a feature off.
    let r = call(
        &server,
        "PUT",
        "/v1/customers/beta/entitlements/sso",
        ADMIN_KEY,
        Some(&json!({"kind": "boolean", "enabled": false})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        check(&server, ADMIN_KEY, "beta", "sso", None)["reason"],
        "disabled"
    );
    // The listing shows every feature with its standing.
    let r = server.get("/v1/customers/beta/entitlements", ADMIN_KEY);
    assert_eq!(r.status, 200);
    let features: Vec<(&str, &str)> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["grant"]["feature"].as_str().unwrap(),
                s["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        features,
        vec![
            ("egress", "plan"),
            ("seats", "plan"),
            ("sessions", "plan"),
            ("sso", "override")
        ]
    );
}

#[test]
fn batch_checks_answer_each_item_and_ingest_keys_may_check() {
    let dir = TestDir::new("ent-batch");
    let server = Server::start(&dir.data("d"), FLAGS);
    setup(&server);
    let (_, ingest_key) = server.create_key(&["ingest"]);
    let r = call(
        &server,
        "POST",
        "/v1/entitlements/check_batch",
        &ingest_key,
        Some(&json!({"checks": [
            {"customer": "acme", "feature": "sso"},
            {"customer": "nobody", "feature": "sso"},
            {"customer": "acme", "feature": "egress", "amount": -1},
            {"customer": "beta", "feature": "egress", "amount": 5}
        ]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results[0]["result"]["allowed"], true);
    assert_eq!(results[1]["error"]["code"], "customer_not_found");
    assert_eq!(results[2]["error"]["code"], "invalid_amount");
    assert_eq!(results[3]["result"]["remaining"], "1000");
    // Single-check errors are typed.
    let r = call(
        &server,
        "POST",
        "/v1/entitlements/check",
        ADMIN_KEY,
        Some(&json!({"customer": "nobody", "feature": "sso"})),
    );
    assert_error(&r, 404, "customer_not_found");
    let r = call(
        &server,
        "POST",
        "/v1/entitlements/check",
        ADMIN_KEY,
        Some(&json!({"customer": "acme", "feature": "Not A Key"})),
    );
    assert_error(&r, 422, "invalid_feature");
    let r = call(
        &server,
        "POST",
        "/v1/entitlements/check",
        ADMIN_KEY,
        Some(&json!({"customer": "acme", "feature": "sso", "amount": "lots"})),
    );
    assert_error(&r, 400, "invalid_decimal");
    let r = call(
        &server,
        "POST",
        "/v1/entitlements/check",
        ADMIN_KEY,
        Some(&json!({"customer": "acme"})),
    );
    assert_error(&r, 400, "invalid_body");
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"customer": "acme", "feature": "sso"}))
        .collect();
    let r = call(
        &server,
        "POST",
        "/v1/entitlements/check_batch",
        ADMIN_KEY,
        Some(&json!({"checks": many})),
    );
    assert_error(&r, 413, "checks_batch_max");
    // Bad grants are refused with their codes.
    let r = call(
        &server,
        "PUT",
        "/v1/customers/acme/entitlements/x",
        ADMIN_KEY,
        Some(&json!({"kind": "metered", "meter": "nope", "limit": "1"})),
    );
    assert_error(&r, 422, "unknown_meter");
    let r = call(
        &server,
        "PUT",
        "/v1/customers/acme/entitlements/x",
        ADMIN_KEY,
        Some(&json!({"kind": "metered", "meter": "bytes-out", "limit": "-1"})),
    );
    assert_error(&r, 422, "invalid_entitlement");
    let r = call(
        &server,
        "PUT",
        "/v1/customers/acme/entitlements/x",
        ADMIN_KEY,
        Some(&json!({"kind": "boolean", "enabled": true, "limit": "3"})),
    );
    assert_error(&r, 422, "invalid_entitlement");
    let r = call(
        &server,
        "PUT",
        "/v1/customers/nobody/entitlements/x",
        ADMIN_KEY,
        Some(&json!({"kind": "boolean", "enabled": true})),
    );
    assert_error(&r, 404, "customer_not_found");
    let r = post(
        &server,
        "/v1/plans/pro/versions",
        &json!({
            "prices": [{"key": "base", "name": "Base", "model": {"type": "flat", "amount": "10"}}],
            "entitlements": [{"feature": "a", "kind": "boolean", "enabled": true}, {"feature": "a", "kind": "boolean", "enabled": false}]
        }),
    );
    assert_error(&r, 422, "invalid_entitlement");
    // A read key may not change grants.
    let (_, read_key) = server.create_key(&["read"]);
    let r = call(
        &server,
        "PUT",
        "/v1/customers/acme/entitlements/x",
        &read_key,
        Some(&json!({"kind": "boolean", "enabled": true})),
    );
    assert_error(&r, 403, "insufficient_scope");
}

#[test]
fn concurrent_sessions_are_a_gauge_with_a_limit() {
    let dir = TestDir::new("ent-sessions");
    let server = Server::start(
        &dir.data("d"),
        &[FLAGS, &["--session-timeout", "1h"]].concat(),
    );
    setup(&server);
    let t = floor_minute(now_ms()) - 30 * MINUTE_MS;
    server.ingest(&[
        session_event("s1", "acme", "session.started", "a", t),
        session_event("s2", "acme", "session.started", "b", t + MINUTE_MS),
        // An end that arrives before its start still closes the session.
        session_event("s3", "acme", "session.ended", "c", t + 3 * MINUTE_MS),
        session_event("s4", "acme", "session.started", "c", t + 2 * MINUTE_MS),
    ]);
    let c = check(&server, ADMIN_KEY, "acme", "sessions", Some("1"));
    assert_eq!(
        (c["allowed"].as_bool(), c["used"].as_str()),
        (Some(false), Some("2")),
        "{c}"
    );
    server.ingest(&[session_event(
        "s5",
        "acme",
        "session.ended",
        "a",
        t + 10 * MINUTE_MS,
    )]);
    let c = check(&server, ADMIN_KEY, "acme", "sessions", Some("1"));
    assert_eq!(
        (c["allowed"].as_bool(), c["used"].as_str()),
        (Some(true), Some("1")),
        "{c}"
    );

    let q = format!(
        "/v1/customers/acme/sessions?from={}&to={}&window_size=minute",
        q(&rfc3339(t)),
        q(&rfc3339(t + 12 * MINUTE_MS))
    );
    let r = server.get(&q, ADMIN_KEY);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["open_now"], 1);
    assert_eq!(r.body["timeout_seconds"], 3600);
    let peaks: Vec<u64> = r.body["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["peak"].as_u64().unwrap())
        .collect();
    // a from t, b from t+1, c over [t+2, t+3), a ends at t+10.
    assert_eq!(peaks, vec![1, 2, 3, 2, 2, 2, 2, 2, 2, 2, 1, 1]);
    // A restart rebuilds the gauge from the stored events.
    drop(server);
    let server = Server::start(
        &dir.data("d"),
        &[FLAGS, &["--session-timeout", "1h"]].concat(),
    );
    let r = server.get(&q, ADMIN_KEY);
    assert_eq!(r.body["open_now"], 1, "{}", r.body);
    let r = server.get("/v1/customers/acme/sessions?window_size=week", ADMIN_KEY);
    assert_error(&r, 400, "invalid_window_size");
}

#[test]
fn alerts_fire_once_and_limits_announce_when_reached() {
    let dir = TestDir::new("ent-alerts");
    let server = Server::start(&dir.data("d"), FLAGS);
    setup(&server);
    let r = post(
        &server,
        "/v1/alerts",
        &json!({
            "name": "80% of egress",
            "condition": {"type": "usage", "meter": "bytes-out", "threshold": {"kind": "percent_of_limit", "feature": "egress", "percent": "80"}}
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let rule = r.body["id"].as_str().unwrap().to_owned();
    let r = post(
        &server,
        "/v1/alerts",
        &json!({
            "name": "acme spends", "customer": "acme",
            "condition": {"type": "spend", "amount_minor": 500}
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let spend = r.body["id"].as_str().unwrap().to_owned();

    let evaluate = |server: &Server| {
        let r = post(server, "/v1/alerts/evaluate", &json!({}));
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    // Running charges: the $10 base fee (prorated by the time left since the month start:
    // the whole month) is above $5, so the spend alert fires for acme at once.
    let e = evaluate(&server);
    let fired: Vec<(String, String, String)> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["rule"].as_str().unwrap().to_owned(),
                e["customer"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        fired,
        vec![("alert.triggered".into(), spend.clone(), "acme".into())],
        "{e}"
    );

    server.ingest(&[bytes_event("a1", "acme", 700)]);
    assert!(evaluate(&server)["events"].as_array().unwrap().is_empty());
    server.ingest(&[bytes_event("a2", "acme", 100)]);
    let e = evaluate(&server);
    assert_eq!(e["events"].as_array().unwrap().len(), 1, "{e}");
    assert_eq!(e["events"][0]["rule"], rule.as_str());
    assert_eq!(
        (
            e["events"][0]["value"].as_str(),
            e["events"][0]["threshold"].as_str()
        ),
        (Some("800"), Some("800"))
    );
    // Still above: nothing new.
    assert!(evaluate(&server)["events"].as_array().unwrap().is_empty());
    server.ingest(&[bytes_event("a3", "acme", 200)]);
    let e = evaluate(&server);
    assert_eq!(e["events"][0]["type"], "entitlement.exceeded", "{e}");
    assert_eq!(e["events"][0]["rule"], "entitlement:egress");
    assert!(evaluate(&server)["events"].as_array().unwrap().is_empty());

    let r = server.get("/v1/alert_events?customer=acme&limit=2", ADMIN_KEY);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    let after = r.body["next_after"].as_i64().unwrap();
    let r = server.get(
        &format!("/v1/alert_events?customer=acme&after={after}"),
        ADMIN_KEY,
    );
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert!(r.body.get("next_after").is_none());
    // Each logged event is in the webhook outbox, written in the same transaction.
    let r = server.get("/v1/webhook_messages?type=entitlement.exceeded", ADMIN_KEY);
    assert_eq!(r.status, 200, "{}", r.body);
    let messages = r.body["data"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{}", r.body);
    assert_eq!(messages[0]["data"]["customer"], "acme");
    assert_eq!(messages[0]["data"]["rule"], "entitlement:egress");
    let r = server.get("/v1/webhook_messages?type=alert.triggered", ADMIN_KEY);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2, "{}", r.body);
    // Turning a rule off and on starts afresh: it fires again.
    let r = call(
        &server,
        "PATCH",
        &format!("/v1/alerts/{rule}"),
        ADMIN_KEY,
        Some(&json!({"enabled": false})),
    );
    assert_eq!(r.body["enabled"], false);
    assert!(evaluate(&server)["events"].as_array().unwrap().is_empty());
    call(
        &server,
        "PATCH",
        &format!("/v1/alerts/{rule}"),
        ADMIN_KEY,
        Some(&json!({"enabled": true})),
    );
    assert_eq!(evaluate(&server)["events"].as_array().unwrap().len(), 1);
    // Errors.
    let r = post(
        &server,
        "/v1/alerts",
        &json!({"name": "x", "condition": {"type": "usage", "meter": "nope", "threshold": {"kind": "absolute", "value": "1"}}}),
    );
    assert_error(&r, 422, "unknown_meter");
    let r = post(
        &server,
        "/v1/alerts",
        &json!({"name": "x", "condition": {"type": "spend", "amount_minor": 0}}),
    );
    assert_error(&r, 422, "invalid_alert");
    let r = post(
        &server,
        "/v1/alerts",
        &json!({"name": "x", "condition": {"type": "weather"}}),
    );
    assert_error(&r, 422, "invalid_alert");
    let r = call(
        &server,
        "DELETE",
        &format!("/v1/alerts/{rule}"),
        ADMIN_KEY,
        None,
    );
    assert_eq!(r.status, 204);
    let r = server.get(&format!("/v1/alerts/{rule}"), ADMIN_KEY);
    assert_error(&r, 404, "alert_not_found");
}

#[test]
fn the_portal_overview_shows_limits_left_and_sessions_open() {
    let dir = TestDir::new("ent-portal");
    let server = Server::start(&dir.data("d"), FLAGS);
    setup(&server);
    server.ingest(&[
        bytes_event("p1", "acme", 250),
        session_event("p2", "acme", "session.started", "x", now_ms() - MINUTE_MS),
    ]);
    let r = post(&server, "/v1/customers/acme/portal_sessions", &json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    let page = server.get_raw(&format!("/portal/{token}"), ADMIN_KEY);
    assert_eq!(page.status, 200, "{}", page.text);
    let c = check(&server, ADMIN_KEY, "acme", "egress", None);
    assert_eq!(c["used"], "250");
    assert!(
        page.text.contains(
            r#"data-feature="egress" data-used="250" data-limit="1000" data-remaining="750""#
        ),
        "{}",
        page.text
    );
    assert!(
        page.text
            .contains(r#"data-feature="sessions" data-used="1" data-limit="2""#)
    );
    assert!(page.text.contains(r#"id="sessions-now" data-open="1""#));
    let csv = server.get_raw(&format!("/portal/{token}?format=csv"), ADMIN_KEY);
    assert!(
        csv.text.contains("limit,egress,bytes-out,250,,1000"),
        "{}",
        csv.text
    );
    assert!(csv.text.contains("sessions,open now,,1,"), "{}", csv.text);
}
