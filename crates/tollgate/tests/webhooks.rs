//! Black-box tests of webhooks: a real HTTP receiver on 127.0.0.1:0 (a small std::net server
//! in this file) that can be told to answer 500, hang past the timeout, or recover; the real
//! binary delivering to it. Asserts at-least-once delivery after failures and timeouts, the
//! retry schedule's lower bounds, disabling after a run of failures, the delivery log, replay,
//! signatures (verified with the crate's `verify`; a tampered body fails), invoice events from
//! the same transaction as the invoice change, and that a kill -9 mid-delivery loses nothing.
//!
//! Backoff, timeout and the disable rule are set small by flags so each test takes seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use jiff::{Timestamp, ToSpan};
use serde_json::{Value, json};
use tollgate_core::time::UnixMs;
use tollgate_core::webhook::{self, SIGNATURE_TOLERANCE_MS_DEFAULT};

// ---------------------------------------------------------------------------------------------
// The receiver

/// How the receiver answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// 200.
    Ok,
    /// 500.
    Fail,
    /// Never answers: as the mode, until the mode changes; from the script, for 5 s (past
    /// every timeout used here). Then closes without an answer.
    Hang,
}

/// One request as received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    signature: String,
    message_id: String,
    event_type: String,
    body: Vec<u8>,
    answered: Option<u16>,
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Mode>,
    mode: Option<Mode>,
    received: Vec<Received>,
}

/// A receiver on 127.0.0.1:0: answers from a script first, then by its mode.
#[derive(Clone)]
struct Receiver {
    url: String,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared {
            mode: Some(mode),
            ..Shared::default()
        }));
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve_one(stream, &s));
            }
        });
        Receiver { url, shared }
    }

    /// Answers these first, in order, then by the mode.
    fn script(&self, modes: &[Mode]) {
        self.shared
            .lock()
            .unwrap()
            .script
            .extend(modes.iter().copied());
    }

    fn set_mode(&self, mode: Mode) {
        self.shared.lock().unwrap().mode = Some(mode);
    }

    fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// Waits until `pred` holds for the requests received (at most 60 s).
    fn wait_for(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received {:?}",
                got.iter()
                    .map(|r| (&r.event_type, &r.message_id, r.answered))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve_one(stream: TcpStream, shared: &Mutex<Shared>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    // The record's index is taken under the same lock as the push: concurrent connections
    // must not mark each other's records.
    let (mode, scripted, index) = {
        let mut s = shared.lock().unwrap();
        let scripted = s.script.pop_front();
        let mode = scripted.or(s.mode).unwrap_or(Mode::Ok);
        s.received.push(Received {
            path,
            signature: header("tollgate-signature"),
            message_id: header("tollgate-message-id"),
            event_type: header("tollgate-event-type"),
            body,
            answered: None,
        });
        (mode, scripted.is_some(), s.received.len() - 1)
    };
    let status = match mode {
        Mode::Ok => 200,
        Mode::Fail => 500,
        Mode::Hang => {
            let until = Instant::now() + Duration::from_secs(if scripted { 5 } else { 60 });
            while (scripted || shared.lock().unwrap().mode == Some(Mode::Hang))
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
    };
    // Recorded before the answer is written: the server may act on the answer (and the test
    // read this log) before this thread runs again.
    shared.lock().unwrap().received[index].answered = Some(status);
    let mut stream = stream;
    let reason = if status == 200 {
        "OK"
    } else {
        "Internal Server Error"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let _ = stream.flush();
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn call(server: &Server, method: &str, path: &str, body: Option<&Value>) -> Reply {
    server.request(
        method,
        path,
        Some(ADMIN_KEY),
        body.map(|_| "application/json"),
        body.map(|b| reqwest::blocking::Body::from(b.to_string())),
    )
}

fn expect(reply: Reply, status: u16, what: &str) -> Value {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    reply.body
}

/// Creates an endpoint; returns (id, secret).
fn create_endpoint(server: &Server, url: &str, types: &[&str]) -> (String, String) {
    let body = expect(
        call(
            server,
            "POST",
            "/v1/webhook_endpoints",
            Some(&json!({"url": url, "event_types": types, "description": "test receiver"})),
        ),
        201,
        "create endpoint",
    );
    let id = body["id"].as_str().unwrap().to_owned();
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with("we_") && secret.starts_with("whsec_"),
        "{body}"
    );
    (id, secret)
}

/// Sends a `webhook.test` ping to an endpoint; returns the message id.
fn ping(server: &Server, endpoint: &str) -> String {
    let body = expect(
        call(
            server,
            "POST",
            &format!("/v1/webhook_endpoints/{endpoint}/test"),
            None,
        ),
        202,
        "test ping",
    );
    assert_eq!(body["type"], "webhook.test", "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn message(server: &Server, id: &str) -> Value {
    expect(
        call(server, "GET", &format!("/v1/webhook_messages/{id}"), None),
        200,
        "message",
    )
}

/// Waits until the message's deliveries satisfy `pred` (at most 60 s).
fn wait_message(server: &Server, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = message(server, id);
        if pred(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {m}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn delivered(m: &Value) -> bool {
    let d = m["deliveries"].as_array().unwrap();
    !d.is_empty() && d.iter().all(|d| d["status"] == "delivered")
}

fn ms_of(v: &Value) -> i64 {
    v.as_str()
        .unwrap()
        .parse::<Timestamp>()
        .unwrap()
        .as_millisecond()
}

/// Checks a received request's signature with the crate's verifier (now: the real clock).
fn verify(secret: &str, r: &Received) -> Result<(), webhook::SignatureError> {
    webhook::verify(
        secret,
        &r.signature,
        &r.body,
        UnixMs(now_ms()),
        SIGNATURE_TOLERANCE_MS_DEFAULT,
    )
}

fn fast_flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--invoice-every",
        "0s",
        "--webhook-backoff-base",
        "200ms",
        "--webhook-backoff-cap",
        "800ms",
        "--webhook-timeout",
        "1s",
    ];
    flags.extend_from_slice(extra);
    flags
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn failures_and_a_timeout_are_retried_until_delivered_and_logged() {
    let dir = TestDir::new("wh-retry");
    let server = Server::start(&dir.data("data"), &fast_flags(&[]));
    let rx = Receiver::start(Mode::Ok);
    rx.script(&[Mode::Fail, Mode::Fail, Mode::Hang]);
    let (endpoint, secret) = create_endpoint(&server, &rx.url, &["invoice.paid"]);
    let id = ping(&server, &endpoint);
    // The hang ends by the worker's timeout; the receiver stays in `Ok` mode for the rest.
    let m = wait_message(&server, &id, "delivery after 500, 500, timeout", delivered);
    let d = &m["deliveries"].as_array().unwrap()[0];
    assert_eq!(d["endpoint_id"], endpoint.as_str(), "{m}");
    assert_eq!(d["attempts"], 4, "{m}");
    let log = d["attempts_log"].as_array().unwrap();
    let statuses: Vec<Option<u64>> = log.iter().map(|a| a["http_status"].as_u64()).collect();
    assert_eq!(statuses, [Some(500), Some(500), None, Some(200)], "{m}");
    assert!(
        log[2]["error"]
            .as_str()
            .unwrap()
            .starts_with("timeout after 1000 ms"),
        "{m}"
    );
    assert_eq!(d["last_http_status"], 200, "{m}");
    assert!(d["delivered_at"].is_string(), "{m}");
    // Backoff: each retry starts no sooner than half its exponential delay after the attempt
    // before it ended (200 ms, 400 ms, 800 ms → at least 100, 200, 400 ms).
    for (i, floor_ms) in [(1, 100), (2, 200), (3, 400)] {
        let prev_end = ms_of(&log[i - 1]["at"]) + log[i - 1]["duration_ms"].as_i64().unwrap();
        let gap = ms_of(&log[i]["at"]) - prev_end;
        assert!(
            gap >= floor_ms - 2,
            "attempt {i} came {gap} ms after the one before: {m}"
        );
    }
    // The receiver saw the same message four times, each signed validly.
    let got = rx.wait_for("four requests", |r| r.len() >= 4);
    assert_eq!(got.len(), 4);
    for r in &got {
        assert_eq!(r.message_id, id);
        assert_eq!(r.event_type, "webhook.test");
        assert_eq!(r.path, "/hook");
        verify(&secret, r).unwrap();
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["data"]["endpoint_id"], endpoint.as_str());
    }
    let e = expect(
        call(
            &server,
            "GET",
            &format!("/v1/webhook_endpoints/{endpoint}"),
            None,
        ),
        200,
        "endpoint",
    );
    assert_eq!(
        (e["enabled"].as_bool(), e["consecutive_failures"].as_u64()),
        (Some(true), Some(0)),
        "{e}"
    );
}

#[test]
fn a_run_of_failures_disables_the_endpoint_and_enabling_and_replay_deliver() {
    let dir = TestDir::new("wh-disable");
    let server = Server::start(
        &dir.data("data"),
        &fast_flags(&["--webhook-disable-after", "3", "--webhook-attempts", "10"]),
    );
    let rx = Receiver::start(Mode::Fail);
    let (endpoint, secret) = create_endpoint(&server, &rx.url, &["alert.triggered"]);
    let id = ping(&server, &endpoint);
    let deadline = Instant::now() + Duration::from_secs(60);
    let e = loop {
        let e = expect(
            call(
                &server,
                "GET",
                &format!("/v1/webhook_endpoints/{endpoint}"),
                None,
            ),
            200,
            "endpoint",
        );
        if e["enabled"] == false {
            break e;
        }
        assert!(Instant::now() < deadline, "never disabled: {e}");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(e["consecutive_failures"], 3, "{e}");
    let reason = e["disabled_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("disabled after 3 consecutive failed attempts (last: HTTP 500)"),
        "{reason}"
    );
    // Disabled: nothing more is sent; the delivery waits, pending, with its three attempts.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.received().len(), 3, "no attempt while disabled");
    let m = message(&server, &id);
    let d = &m["deliveries"][0];
    assert_eq!(
        (d["status"].as_str(), d["attempts"].as_u64()),
        (Some("pending"), Some(3)),
        "{m}"
    );
    assert_eq!(d["attempts_log"].as_array().unwrap().len(), 3, "{m}");
    // A replay to a disabled endpoint is refused with a typed error.
    let r = call(
        &server,
        "POST",
        &format!("/v1/webhook_messages/{id}/replay"),
        Some(&json!({"endpoint_id": endpoint})),
    );
    assert_error(&r, 409, "endpoint_disabled");

    // The receiver recovers; enabling the endpoint resets the run and delivers what waited.
    rx.set_mode(Mode::Ok);
    let e = expect(
        call(
            &server,
            "PATCH",
            &format!("/v1/webhook_endpoints/{endpoint}"),
            Some(&json!({"enabled": true})),
        ),
        200,
        "enable",
    );
    assert_eq!(
        (
            e["enabled"].as_bool(),
            e["consecutive_failures"].as_u64(),
            e["disabled_reason"].is_null()
        ),
        (Some(true), Some(0), true),
        "{e}"
    );
    let m = wait_message(&server, &id, "delivery after enabling", delivered);
    assert_eq!(m["deliveries"][0]["attempts"], 4, "{m}");

    // Replay: a new delivery of a delivered message, to the given endpoint.
    let replayed = expect(
        call(
            &server,
            "POST",
            &format!("/v1/webhook_messages/{id}/replay"),
            Some(&json!({"endpoint_id": endpoint})),
        ),
        202,
        "replay",
    );
    let new_id = replayed["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let m = wait_message(&server, &id, "the replay delivered", |m| {
        m["deliveries"].as_array().unwrap().len() == 2 && delivered(m)
    });
    assert_eq!(m["deliveries"][1]["id"], new_id.as_str(), "{m}");
    let got = rx.wait_for("two successful receipts", |r| {
        r.iter().filter(|r| r.answered == Some(200)).count() >= 2
    });
    let ok: Vec<&Received> = got.iter().filter(|r| r.answered == Some(200)).collect();
    assert!(
        ok.iter()
            .all(|r| r.message_id == id && r.body == ok[0].body)
    );
    verify(&secret, ok[1]).unwrap();

    // Typed errors.
    assert_error(
        &call(
            &server,
            "POST",
            "/v1/webhook_messages/msg_000000000000000000000000/replay",
            None,
        ),
        404,
        "message_not_found",
    );
    assert_error(
        &call(&server, "GET", "/v1/webhook_endpoints/we_nope", None),
        404,
        "endpoint_not_found",
    );
}

#[test]
fn invoice_events_are_signed_and_a_tampered_body_fails() {
    let dir = TestDir::new("wh-invoices");
    let server = Server::start(&dir.data("data"), &fast_flags(&["--invoice-grace", "0s"]));
    let rx = Receiver::start(Mode::Ok);
    let (endpoint, secret) = create_endpoint(
        &server,
        &rx.url,
        &["invoice.finalized", "invoice.paid", "invoice.voided"],
    );
    // Another endpoint subscribed to alerts only: it gets no invoice message.
    let other = Receiver::start(Mode::Ok);
    create_endpoint(&server, &other.url, &["alert.triggered"]);

    // A customer billed 49.00 USD a month since the start of the month before last: two
    // months have ended, so one run finalizes two invoices.
    expect(
        call(
            &server,
            "POST",
            "/v1/plans",
            Some(&json!({
                "key": "flat", "name": "Flat", "currency": "USD", "interval": "month",
                "prices": [{"key": "base", "name": "Platform", "model": {"type": "flat", "amount": "49.00"}}],
            })),
        ),
        201,
        "plan",
    );
    expect(
        call(
            &server,
            "POST",
            "/v1/customers",
            Some(&json!({
                "key": "acme", "name": "Acme", "currency": "USD",
            })),
        ),
        201,
        "customer",
    );
    let start = Timestamp::now()
        .in_tz("UTC")
        .unwrap()
        .date()
        .first_of_month()
        .checked_sub(2.months())
        .unwrap()
        .in_tz("UTC")
        .unwrap()
        .timestamp()
        .as_millisecond();
    expect(
        call(
            &server,
            "POST",
            "/v1/subscriptions",
            Some(&json!({
                "customer": "acme", "plan": "flat", "start": rfc3339(start),
            })),
        ),
        201,
        "subscription",
    );
    let run = expect(
        call(&server, "POST", "/v1/invoices/run", Some(&json!({}))),
        200,
        "run",
    );
    assert_eq!(run["finalized"], 2, "{run}");
    let invoices = expect(
        call(&server, "GET", "/v1/invoices?customer=acme", None),
        200,
        "list",
    );
    let invoices = invoices["data"].as_array().unwrap().clone();
    assert_eq!(invoices.len(), 2);
    let (a, b) = (
        invoices[0]["id"].as_str().unwrap(),
        invoices[1]["id"].as_str().unwrap(),
    );
    expect(
        call(&server, "POST", &format!("/v1/invoices/{a}/pay"), None),
        200,
        "pay",
    );
    expect(
        call(&server, "POST", &format!("/v1/invoices/{b}/void"), None),
        200,
        "void",
    );

    let got = rx.wait_for("four invoice messages", |r| {
        r.iter().filter(|r| r.answered == Some(200)).count() >= 4
    });
    let mut kinds: Vec<(String, String)> = Vec::new();
    for r in &got {
        verify(&secret, r).unwrap();
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], r.event_type.as_str());
        assert_eq!(body["id"], r.message_id.as_str());
        let data = &body["data"];
        assert_eq!(
            (
                data["customer"].as_str(),
                data["currency"].as_str(),
                data["total_minor"].as_i64()
            ),
            (Some("acme"), Some("USD"), Some(4900)),
            "{body}"
        );
        assert!(
            data["number"].as_str().unwrap().starts_with("TG-"),
            "{body}"
        );
        kinds.push((
            r.event_type.clone(),
            data["id"].as_str().unwrap().to_owned(),
        ));
    }
    kinds.sort();
    let mut want = vec![
        ("invoice.finalized".to_owned(), a.to_owned()),
        ("invoice.finalized".to_owned(), b.to_owned()),
        ("invoice.paid".to_owned(), a.to_owned()),
        ("invoice.voided".to_owned(), b.to_owned()),
    ];
    want.sort();
    assert_eq!(kinds, want);
    assert!(other.received().is_empty(), "not subscribed to invoices");

    // Tampering: one changed byte of the body, a moved timestamp, another secret, an old
    // signature — each fails with its typed error.
    let r = &got[0];
    let mut tampered = r.clone();
    let i = tampered.body.iter().position(|b| *b == b'4').unwrap();
    tampered.body[i] = b'5';
    assert_eq!(
        verify(&secret, &tampered),
        Err(webhook::SignatureError::Mismatch)
    );
    let (t, rest) = r.signature.split_once(',').unwrap();
    let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let mut moved = r.clone();
    moved.signature = format!("t={},{rest}", t - 1);
    assert_eq!(
        verify(&secret, &moved),
        Err(webhook::SignatureError::Mismatch)
    );
    assert_eq!(
        verify("whsec_other", r),
        Err(webhook::SignatureError::Mismatch)
    );
    let late = webhook::verify(
        &secret,
        &r.signature,
        &r.body,
        UnixMs(t * 1000 + SIGNATURE_TOLERANCE_MS_DEFAULT + 1000),
        SIGNATURE_TOLERANCE_MS_DEFAULT,
    );
    assert_eq!(late.unwrap_err().code(), "signature_too_old");

    // The outbox lists them by type; the one message's log shows the 200.
    let list = expect(
        call(
            &server,
            "GET",
            "/v1/webhook_messages?type=invoice.finalized",
            None,
        ),
        200,
        "messages",
    );
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let first = list["data"][0]["id"].as_str().unwrap();
    let page = expect(
        call(
            &server,
            "GET",
            &format!("/v1/webhook_messages?type=invoice.finalized&after={first}"),
            None,
        ),
        200,
        "page",
    );
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    let m = message(&server, first);
    assert_eq!(
        m["deliveries"].as_array().unwrap().len(),
        1,
        "one subscribed endpoint: {m}"
    );
    assert_eq!(m["deliveries"][0]["endpoint_id"], endpoint.as_str());

    // Rotation: the new secret signs, and the old one still does for a while (two v1 values).
    let rotated = expect(
        call(
            &server,
            "POST",
            &format!("/v1/webhook_endpoints/{endpoint}/rotate_secret"),
            None,
        ),
        200,
        "rotate",
    );
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    let ping_id = ping(&server, &endpoint);
    let got = rx.wait_for("the ping", |r| r.iter().any(|r| r.message_id == ping_id));
    let r = got.iter().find(|r| r.message_id == ping_id).unwrap();
    assert_eq!(r.signature.matches("v1=").count(), 2, "{}", r.signature);
    verify(&new_secret, r).unwrap();
    verify(&secret, r).unwrap();
    // The secret is shown on creation and rotation only.
    let listed = expect(
        call(&server, "GET", "/v1/webhook_endpoints", None),
        200,
        "list",
    );
    assert!(!listed.to_string().contains("whsec_"), "{listed}");
}

#[test]
fn bad_endpoint_definitions_get_typed_errors() {
    let dir = TestDir::new("wh-errors");
    let server = Server::start(&dir.data("data"), &fast_flags(&[]));
    let post = |body: Value| call(&server, "POST", "/v1/webhook_endpoints", Some(&body));
    assert_error(
        &post(json!({"url": "ftp://x.test/", "event_types": ["invoice.paid"]})),
        400,
        "invalid_url",
    );
    assert_error(
        &post(json!({"url": "http:///x", "event_types": ["invoice.paid"]})),
        400,
        "invalid_url",
    );
    assert_error(
        &post(json!({"url": "http://x.test/", "event_types": ["invoice.created"]})),
        400,
        "unknown_event_type",
    );
    assert_error(
        &post(json!({"url": "http://x.test/", "event_types": []})),
        400,
        "invalid_event_types",
    );
    let long = format!("http://x.test/{}", "a".repeat(3000));
    assert_error(
        &post(json!({"url": long, "event_types": ["invoice.paid"]})),
        422,
        "webhook_url_bytes_max",
    );
    assert_error(
        &post(json!({"url": "http://x.test/", "event_types": ["invoice.paid"], "secret": "x"})),
        400,
        "invalid_body",
    );
    let (id, _) = create_endpoint(&server, "http://x.test/", &["invoice.paid"]);
    assert_error(
        &call(
            &server,
            "PATCH",
            &format!("/v1/webhook_endpoints/{id}"),
            Some(&json!({"url": "nope"})),
        ),
        400,
        "invalid_url",
    );
    assert_error(
        &call(&server, "GET", "/v1/webhook_messages?type=x.y", None),
        400,
        "unknown_event_type",
    );
    assert_error(
        &call(&server, "GET", "/v1/webhook_messages/msg_x", None),
        404,
        "message_not_found",
    );
    let r = server.request("GET", "/v1/webhook_endpoints", None, None, None);
    assert_error(&r, 401, "missing_api_key");
    let (_, read_key) = server.create_key(&["read"]);
    let r = server.request("GET", "/v1/webhook_endpoints", Some(&read_key), None, None);
    assert_error(&r, 403, "insufficient_scope");
    expect(
        call(
            &server,
            "DELETE",
            &format!("/v1/webhook_endpoints/{id}"),
            None,
        ),
        204,
        "delete",
    );
    assert_error(
        &call(
            &server,
            "DELETE",
            &format!("/v1/webhook_endpoints/{id}"),
            None,
        ),
        404,
        "endpoint_not_found",
    );
}

#[test]
fn a_kill_mid_delivery_loses_no_message() {
    let dir = TestDir::new("wh-crash");
    let data = dir.data("data");
    // Timeout 3 s: the kill comes while requests hang; the lease (timeout + 5 s) then expires
    // and the restarted server sends again.
    let flags = [
        "--invoice-every",
        "0s",
        "--webhook-backoff-base",
        "200ms",
        "--webhook-backoff-cap",
        "800ms",
        "--webhook-timeout",
        "3s",
    ];
    let mut server = Server::start(&data, &flags);
    let rx = Receiver::start(Mode::Hang);
    let (endpoint, secret) = create_endpoint(&server, &rx.url, &["invoice.paid"]);
    // Six messages: four in flight (the per-endpoint limit), two waiting for a permit.
    let ids: Vec<String> = (0..6).map(|_| ping(&server, &endpoint)).collect();
    rx.wait_for("four requests in flight", |r| r.len() >= 4);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        rx.received().len(),
        4,
        "at most four requests in flight to one endpoint"
    );
    server.stop();
    rx.set_mode(Mode::Ok);
    let server = Server::start(&data, &flags);
    for id in &ids {
        wait_message(&server, id, "delivery after the restart", delivered);
    }
    let got = rx.received();
    for id in &ids {
        let ok: Vec<&Received> = got
            .iter()
            .filter(|r| &r.message_id == id && r.answered == Some(200))
            .collect();
        assert!(!ok.is_empty(), "message {id} was delivered");
        verify(&secret, ok[0]).unwrap();
    }
}
