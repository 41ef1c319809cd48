//! Black-box tests of forwarding accepted events to Stripe Billing meter events against
//! localstripe (`tests/support/localstripe_shim.py` on 127.0.0.1, a random port; it adds
//! `POST /v1/billing/meter_events`, validated as Stripe documents it, with Stripe's dedup by
//! `identifier` and its idempotent replays): every mapped event reaches Stripe once with
//! Tollgate's dedup identity as its identifier, the Stripe customer id of its subject and its
//! value; events of customers not synced yet wait and go once the customer is synced; events
//! outside Stripe's 35-day window and invalid values are passed over and counted visibly;
//! 429/500 (and a lost answer) are retried; a kill between Stripe's answer and the cursor's move
//! (the hidden `--fault-exit-after-provider-step stripe-meter-event`) counts nothing twice; a
//! permanent refusal stops forwarding visibly until resumed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "support/stripe_harness.rs"]
mod stripe_harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use stripe_harness::*;

fn write_config(dir: &TestDir) -> PathBuf {
    let path = dir.join("tollgate.toml");
    std::fs::write(
        &path,
        r#"
acceptance_window = "90d"
[stripe_meters.events."proxy.request"]
event_name = "proxy_bytes"
value = "$.data.bytes"
[stripe_meters.events."session.started"]
event_name = "sessions"
"#,
    )
    .unwrap();
    path
}

fn start_meters(dir: &TestDir, data: &Path, ls: &LocalStripe, extra: &[&str]) -> Server {
    let config = write_config(dir);
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    start(data, ls, &args)
}

fn status(server: &Server) -> Value {
    expect(
        call(
            server,
            "GET",
            "/v1/providers/stripe/meter_events/status",
            None,
        ),
        200,
        "status",
    )
}

/// Waits until `done` holds of the status.
fn wait_status(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(server);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {s:#}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn caught_up(s: &Value) -> bool {
    s["lag_events"] == 0 && s["log_last_seq"].as_u64() > Some(0)
}

/// What localstripe took: its events by identifier, the duplicate refusals, the replays.
fn recorded(ls: &LocalStripe) -> (BTreeMap<String, Value>, Value) {
    let v: Value = reqwest::blocking::get(format!("{}/_config/tollgate/meter_events", ls.base))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["problems"], json!([]), "events naming unknown customers");
    let mut by_id = BTreeMap::new();
    for e in v["events"].as_array().unwrap() {
        let id = e["identifier"].as_str().unwrap().to_owned();
        assert!(by_id.insert(id.clone(), e.clone()).is_none(), "{id} twice");
    }
    (by_id, v)
}

fn customer(server: &Server, key: &str) {
    expect(
        call(server, "POST", "/v1/customers", Some(&customer_body(key))),
        201,
        "customer",
    );
}

fn stripe_id(ls: &LocalStripe, key: &str) -> String {
    let c = stripe_customers_of(ls, key);
    assert_eq!(c.len(), 1, "{c:#?}");
    c[0]["id"].as_str().unwrap().to_owned()
}

/// `n` proxy requests for each of `who`, a minute old, with `bytes` = i + 1.
fn traffic(prefix: &str, who: &[&str], n: usize) -> Vec<Value> {
    let now = now_ms();
    let mut events = Vec::new();
    for i in 0..n {
        for w in who {
            events.push(event(
                &format!("{prefix}-{w}-{i}"),
                w,
                now - 60_000 + i as i64,
                json!({"bytes": i + 1}),
            ));
        }
    }
    events
}

fn metric(server: &Server, name: &str) -> String {
    let metrics = server.get("/metrics", ADMIN_KEY).body;
    let text = metrics
        .as_str()
        .map(str::to_owned)
        .unwrap_or(metrics.to_string());
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_owned()
}

#[test]
fn events_reach_stripe_once_and_unsynced_customers_wait() {
    let dir = TestDir::new("stripe-meters");
    let ls = LocalStripe::start(&dir);
    let server = start_meters(&dir, &dir.data("data"), &ls, &[]);
    customer(&server, "acme");
    customer(&server, "globex");
    wait_calls_done(&server, 2);
    let (acme, globex) = (stripe_id(&ls, "acme"), stripe_id(&ls, "globex"));

    let now = now_ms();
    let mut events = traffic("m", &["acme", "globex", "initech"], 4);
    // Counted 1 each (no value path for sessions).
    let mut session = event("s-1", "acme", now - 1_000, json!({}));
    session["type"] = json!("session.started");
    events.push(session);
    // Not mapped: skipped.
    let mut other = event("o-1", "acme", now - 1_000, json!({}));
    other["type"] = json!("session.ended");
    events.push(other);
    // 40 days old: accepted by Tollgate (90-day window), outside Stripe's 35 days.
    events.push(event(
        "old-1",
        "acme",
        now - 40 * DAY_MS,
        json!({"bytes": 9}),
    ));
    // Not a whole number: Stripe cannot take it.
    events.push(event(
        "frac-1",
        "globex",
        now - 1_000,
        json!({"bytes": 1.5}),
    ));
    server.ingest(&events);
    server.ingest(&events); // Tollgate's dedup: nothing new reaches Stripe.

    let s = wait_status(&server, "caught up with initech waiting", |s| {
        caught_up(s) && s["waiting_events"] == 4
    });
    assert_eq!(s["state"], "running", "{s:#}");
    assert_eq!(
        s["forwarded_events"], 9,
        "4 acme + 4 globex + 1 session: {s:#}"
    );
    assert_eq!(s["skipped_events"], 1, "{s:#}");
    assert_eq!(s["out_of_window_events"], 1, "{s:#}");
    assert_eq!(s["invalid_events"], 1, "{s:#}");
    assert_eq!(s["duplicate_events"], 0, "{s:#}");
    assert_eq!(
        s["waiting_customers"],
        json!([{"customer": "initech", "events": 4}])
    );
    let note = s["last_passed_over"].as_str().unwrap();
    assert!(note.contains("frac-1"), "{note}");
    let (got, _) = recorded(&ls);
    assert_eq!(got.len(), 9, "{got:#?}");

    // initech is synced: its parked events go, once.
    customer(&server, "initech");
    wait_calls_done(&server, 3);
    let initech = stripe_id(&ls, "initech");
    let s = wait_status(&server, "initech's events sent", |s| {
        caught_up(s) && s["waiting_events"] == 0 && s["forwarded_events"] == 13
    });
    assert_eq!(s["waiting_customers"], json!([]));

    let (got, log) = recorded(&ls);
    assert_eq!(got.len(), 13, "every forwarded event once: {got:#?}");
    assert_eq!(log["duplicates"], json!([]));
    let cus_of = BTreeMap::from([
        ("acme", acme.as_str()),
        ("globex", globex.as_str()),
        ("initech", initech.as_str()),
    ]);
    let mut per_customer: BTreeMap<String, i64> = BTreeMap::new();
    for (id, e) in &got {
        assert!(
            id.starts_with("tollgate_") && id.len() == "tollgate_".len() + 32,
            "{id}"
        );
        let cus = e["payload"]["stripe_customer_id"].as_str().unwrap();
        assert!(cus_of.values().any(|c| *c == cus), "{e}");
        let ts = e["timestamp"].as_i64().unwrap();
        assert!((now / 1000 - 120..=now / 1000 + 1).contains(&ts), "{e}");
        let value: i64 = e["payload"]["value"].as_str().unwrap().parse().unwrap();
        if e["event_name"] == "proxy_bytes" {
            *per_customer.entry(cus.to_owned()).or_default() += value;
        } else {
            assert_eq!((e["event_name"].as_str(), value), (Some("sessions"), 1));
            assert_eq!(cus, acme);
        }
    }
    // bytes 1+2+3+4 per customer.
    for cus in cus_of.values() {
        assert_eq!(per_customer[*cus], 10, "{per_customer:?}");
    }
    // Every request carried an Idempotency-Key.
    assert!(
        ls.requests()
            .iter()
            .filter(|r| r["path"] == "/v1/billing/meter_events")
            .all(|r| r["idempotency_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("tollgate-meter-event-")))
    );
    assert_eq!(
        metric(&server, "tollgate_stripe_meter_events_forwarded_total"),
        "tollgate_stripe_meter_events_forwarded_total 13"
    );
    assert_eq!(
        metric(&server, "tollgate_stripe_meter_events_out_of_window_total"),
        "tollgate_stripe_meter_events_out_of_window_total 1"
    );
}

#[test]
fn throttling_server_errors_and_lost_answers_are_retried() {
    let dir = TestDir::new("stripe-meters-retry");
    let ls = LocalStripe::start(&dir);
    let server = start_meters(&dir, &dir.data("data"), &ls, &[]);
    customer(&server, "acme");
    wait_calls_done(&server, 1);
    ls.fault(429, 1, "before", "/v1/billing/meter_events");
    ls.fault(500, 1, "before", "/v1/billing/meter_events");
    // Stripe did the work, the answer was lost: the retry is replayed by the same key.
    ls.fault(500, 1, "after", "/v1/billing/meter_events");
    server.ingest(&traffic("r", &["acme"], 3));
    let s = wait_status(&server, "caught up", |s| {
        caught_up(s) && s["forwarded_events"] == 3
    });
    assert_eq!(s["state"], "running", "{s:#}");
    assert_eq!(s["failures"], 0);
    let (got, log) = recorded(&ls);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(log["replays"].as_array().unwrap().len(), 1, "{log:#}");
    let statuses = ls
        .requests()
        .iter()
        .filter(|r| r["path"] == "/v1/billing/meter_events")
        .count();
    assert_eq!(statuses, 6, "3 events + 3 retries");
    assert!(metric(&server, "tollgate_stripe_meter_retries_total").ends_with(" 3"));
}

#[test]
fn a_kill_between_stripes_answer_and_the_cursor_counts_nothing_twice() {
    for forget_keys in [false, true] {
        let dir = TestDir::new("stripe-meters-crash");
        let ls = LocalStripe::start(&dir);
        let data = dir.data("data");
        let mut server = start_meters(
            &dir,
            &data,
            &ls,
            &["--fault-exit-after-provider-step", "stripe-meter-event"],
        );
        customer(&server, "acme");
        wait_calls_done(&server, 1);
        server.ingest(&traffic("c", &["acme"], 5));
        wait_fault_exit(&server);
        server.stop();
        if forget_keys {
            // As if the restart came after Stripe's 24 hours of idempotency keys: the
            // identifier alone is recognised.
            let r = reqwest::blocking::Client::new()
                .delete(format!("{}/_config/tollgate/idempotency", ls.base))
                .send()
                .unwrap();
            assert!(r.status().is_success());
        }
        let server = start_meters(&dir, &data, &ls, &[]);
        let s = wait_status(&server, "caught up after the kill", |s| {
            caught_up(s) && s["forwarded_events"] == 5
        });
        let (got, log) = recorded(&ls);
        assert_eq!(got.len(), 5, "every event once: {got:#?}");
        if forget_keys {
            assert_eq!(s["duplicate_events"], 1, "{s:#}");
            assert_eq!(log["duplicates"].as_array().unwrap().len(), 1, "{log:#}");
        } else {
            assert_eq!(s["duplicate_events"], 0, "{s:#}");
            assert_eq!(log["replays"].as_array().unwrap().len(), 1, "{log:#}");
        }
    }
}

#[test]
fn a_permanent_refusal_stops_forwarding_visibly_until_resumed() {
    let dir = TestDir::new("stripe-meters-stop");
    let ls = LocalStripe::start(&dir);
    let server = start_meters(&dir, &dir.data("data"), &ls, &[]);
    customer(&server, "acme");
    wait_calls_done(&server, 1);
    ls.fault(400, 1, "before", "/v1/billing/meter_events");
    server.ingest(&traffic("p", &["acme"], 2));
    let s = wait_status(&server, "stopped", |s| s["state"] == "stopped");
    assert_eq!(s["stopped_code"], "stripe_meter_rejected", "{s:#}");
    assert_eq!(s["last_http_status"], 400);
    assert!(
        s["last_error"].as_str().unwrap().contains("injected fault"),
        "{s:#}"
    );
    assert_eq!(s["forwarded_events"], 0);
    assert_eq!(
        metric(&server, "tollgate_stripe_meter_stopped"),
        "tollgate_stripe_meter_stopped 1"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(recorded(&ls).0.len(), 0, "nothing sent while stopped");
    let r = expect(
        call(
            &server,
            "POST",
            "/v1/providers/stripe/meter_events/resume",
            None,
        ),
        200,
        "resume",
    );
    assert_eq!(r["resumed"], true);
    let s = wait_status(&server, "caught up after resume", |s| {
        caught_up(s) && s["forwarded_events"] == 2
    });
    assert_eq!(s["state"], "running");
    assert_eq!(recorded(&ls).0.len(), 2);
}

#[test]
fn the_routes_answer_404_when_meter_forwarding_is_off() {
    let dir = TestDir::new("stripe-meters-off");
    let ls = LocalStripe::start(&dir);
    // Stripe is configured, but nothing is mapped in [stripe_meters].
    let server = start(&dir.data("data"), &ls, &[]);
    for (method, path) in [
        ("GET", "/v1/providers/stripe/meter_events/status"),
        ("POST", "/v1/providers/stripe/meter_events/resume"),
    ] {
        assert_error(
            &call(&server, method, path, None),
            404,
            "provider_not_configured",
        );
    }
}
