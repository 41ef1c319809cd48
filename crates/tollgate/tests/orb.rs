//! Black-box tests of the Orb integration against a local recorder
//! (`tests/support/orb_recorder.py` on 127.0.0.1, a random port) that answers like Orb and
//! validates every request body against the official `orb-billing` package's request types:
//! accepted events forwarded exactly once in batches within the limit, late events through
//! backfills, 429/5xx retried, a crash between Orb's answer and Tollgate's record (the hidden
//! `--fault-exit-after-provider-step`) counting nothing twice, a permanent refusal stopping
//! forwarding visibly, customers synced, invoices read back.
//!
//! Python comes from `TOLLGATE_PYTHON` or `target/venv` (`cargo xtask venv`); a missing Python,
//! orb-billing or pydantic fails the test, it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const ORB_KEY: &str = "orb_test_key_tollgate";
/// Events per ingest request in these tests (small, so that batching shows).
const BATCH: usize = 7;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_owned()
}

/// The Python with orb-billing and pydantic (checked once); fails loudly when missing.
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(find_python).clone()
}

fn find_python() -> PathBuf {
    let python = std::env::var_os("TOLLGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv/bin/python"));
    match Command::new(&python)
        .args(["-c", "import orb, pydantic"])
        .output()
    {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "orb-billing or pydantic is missing in {} ({}); run `cargo xtask venv`, or point \
             TOLLGATE_PYTHON at a Python 3 with orb-billing 4.90.0",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run {}: {e}; run `cargo xtask venv`, or point TOLLGATE_PYTHON at a Python 3 \
             with orb-billing",
            python.display()
        ),
    }
}

/// A running recorder, killed when dropped.
struct Recorder {
    child: Child,
    base: String,
    client: reqwest::blocking::Client,
}

impl Recorder {
    fn start(dir: &TestDir, page_size: usize) -> Recorder {
        let log = std::fs::File::create(dir.join("orb-recorder.log")).unwrap();
        let mut child = Command::new(python())
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/orb_recorder.py"))
            .args(["--api-key", ORB_KEY, "--page-size", &page_size.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("listening ").unwrap_or_else(|| {
            panic!(
                "the Orb recorder did not start: {line:?}; see {}",
                dir.join("orb-recorder.log").display()
            )
        });
        Recorder {
            base: format!("http://127.0.0.1:{port}"),
            child,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    fn state(&self) -> Value {
        self.client
            .get(format!("{}/_recorder/state", self.base))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn fault(&self, path: &str, statuses: &[u16]) {
        let r = self
            .client
            .post(format!("{}/_recorder/faults", self.base))
            .json(&json!({"path": path, "statuses": statuses}))
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }

    fn seed_invoices(&self, invoices: &[Value]) {
        let r = self
            .client
            .post(format!("{}/_recorder/invoices", self.base))
            .json(invoices)
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Fails the test if any request body did not validate against orb-billing's types.
    fn assert_all_valid(&self) -> Value {
        let state = self.state();
        assert_eq!(
            state["invalid"].as_array().unwrap().len(),
            0,
            "requests that orb-billing's types refuse: {:#}",
            state["invalid"]
        );
        state
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &TestDir) -> PathBuf {
    let path = dir.join("tollgate.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[orb]
batch_events = {BATCH}
pull_every = "0s"
[orb.events."proxy.request"]
event_name = "proxy_request"
properties = {{ bytes = "$.data.bytes", host = "$.data.host" }}
"#
        ),
    )
    .unwrap();
    path
}

fn start(dir: &TestDir, data: &Path, rec: &Recorder, extra: &[&str]) -> Server {
    let config = write_config(dir);
    let mut args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--orb-api-key".into(),
        ORB_KEY.into(),
        "--orb-api-base".into(),
        rec.base.clone(),
        "--orb-backoff-base".into(),
        "50ms".into(),
        "--orb-backoff-cap".into(),
        "200ms".into(),
        "--orb-timeout".into(),
        "10s".into(),
        "--invoice-every".into(),
        "0s".into(),
        "--alert-every".into(),
        "0s".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(data, &refs)
}

fn call(server: &Server, method: &str, path: &str, body: Option<&Value>) -> Reply {
    server.request(
        method,
        path,
        Some(ADMIN_KEY),
        body.map(|_| "application/json"),
        body.map(|b| reqwest::blocking::Body::from(b.to_string())),
    )
}

fn status(server: &Server) -> Value {
    let r = call(server, "GET", "/v1/providers/orb/status", None);
    assert_eq!(r.status, 200, "status: {}", r.body);
    r.body
}

/// Waits until every accepted event is forwarded (or skipped) and no batch is in flight.
fn wait_caught_up(server: &Server) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(server);
        if s["lag_events"] == 0 && s["plan"].is_null() && s["log_last_seq"].as_u64() > Some(0) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "forwarding did not catch up: {s:#}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_fault_exit(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.log_text().contains("fault injection: exiting") {
        assert!(
            Instant::now() < deadline,
            "no fault exit: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Events within Orb's grace period for acme and globex, `n` each, and `late` more for acme two
/// days old (to go through a backfill), plus 3 of a type that is not forwarded.
fn traffic(prefix: &str, n: usize, late: usize) -> Vec<Value> {
    let now = now_ms();
    let mut events = Vec::new();
    for i in 0..n {
        for who in ["acme", "globex"] {
            events.push(event(
                &format!("{prefix}-{who}-{i}"),
                who,
                now - 60_000 + i as i64,
                json!({"bytes": i + 1, "host": "example.com", "nested": {"x": 1}}),
            ));
        }
    }
    for i in 0..late {
        events.push(event(
            &format!("{prefix}-late-{i}"),
            "acme",
            now - 2 * 24 * 3600 * 1000 + i as i64 * 1000,
            json!({"bytes": 100 + i, "host": "late.example.com"}),
        ));
    }
    for i in 0..3 {
        let mut e = event(&format!("{prefix}-other-{i}"), "acme", now, json!({}));
        e["type"] = json!("session.started");
        events.push(e);
    }
    events
}

/// The recorder's events by idempotency key.
fn recorded(state: &Value) -> BTreeMap<String, Value> {
    state["events"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn ingest_requests(state: &Value) -> Vec<Value> {
    state["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/ingest" && r["status"] == 200)
        .cloned()
        .collect()
}

#[test]
fn events_are_forwarded_once_in_batches_and_late_ones_through_backfills() {
    let dir = TestDir::new("orb-forward");
    let rec = Recorder::start(&dir, 100);
    let data = dir.data("data");
    let server = start(&dir, &data, &rec, &[]);
    let events = traffic("f", 10, 9);
    server.ingest(&events);
    // Sent again: Tollgate's dedup answers duplicates; nothing new reaches Orb.
    server.ingest(&events);
    let s = wait_caught_up(&server);
    assert_eq!(s["state"], "running", "{s:#}");
    assert_eq!(s["forwarded_events"], 29, "{s:#}");
    assert_eq!(s["skipped_events"], 3, "{s:#}");
    assert_eq!(s["failures"], 0);

    let state = rec.assert_all_valid();
    let got = recorded(&state);
    assert_eq!(got.len(), 29, "every forwarded event once");
    assert_eq!(state["duplicates"], 0, "no event sent twice");
    for (key, e) in &got {
        assert!(
            key.starts_with("tollgate_") && key.len() == "tollgate_".len() + 32,
            "{key}"
        );
        assert_eq!(e["event"]["event_name"], "proxy_request");
        let props = e["event"]["properties"].as_object().unwrap();
        assert!(
            props.contains_key("bytes") && props.contains_key("host"),
            "{e}"
        );
        assert!(!props.contains_key("nested"), "only mapped properties: {e}");
    }
    // Batches respect the limit.
    let requests = ingest_requests(&state);
    for r in &requests {
        let n = r["body"]["events"].as_array().unwrap().len();
        assert!(n <= BATCH, "a batch of {n} events");
    }
    assert!(
        requests.len() >= 29usize.div_ceil(BATCH),
        "{}",
        requests.len()
    );
    // Late events went through closed backfills of acme; live ones did not.
    let backfills = state["backfills"].as_array().unwrap();
    assert!(!backfills.is_empty());
    for b in backfills {
        assert_eq!(b["external_customer_id"], "acme", "{b}");
        assert_eq!(b["status"], "reflected", "closed: {b}");
    }
    let late: Vec<_> = got
        .values()
        .filter(|e| e["event"]["properties"]["host"] == "late.example.com")
        .collect();
    assert_eq!(late.len(), 9);
    assert!(
        late.iter().all(|e| e["backfill_id"].is_string()),
        "{late:?}"
    );
    assert!(
        got.values()
            .filter(|e| e["event"]["properties"]["host"] == "example.com")
            .all(|e| e["backfill_id"].is_null())
    );
    assert_eq!(
        backfills
            .iter()
            .map(|b| b["events_ingested"].as_u64().unwrap())
            .sum::<u64>(),
        9
    );
    assert!(s["backfills"].as_u64().unwrap() >= 1);
    let metrics = server.get("/metrics", ADMIN_KEY).body;
    let text = metrics
        .as_str()
        .map(str::to_owned)
        .unwrap_or(metrics.to_string());
    assert!(
        text.contains("tollgate_orb_events_forwarded_total 29"),
        "{text}"
    );
}

#[test]
fn throttling_and_server_errors_are_retried() {
    let dir = TestDir::new("orb-retry");
    let rec = Recorder::start(&dir, 100);
    rec.fault("/v1/ingest", &[429, 500, 503]);
    let server = start(&dir, &dir.data("data"), &rec, &[]);
    server.ingest(&traffic("r", 2, 0));
    let s = wait_caught_up(&server);
    assert_eq!(s["forwarded_events"], 4, "{s:#}");
    assert_eq!(s["state"], "running");
    let state = rec.assert_all_valid();
    assert_eq!(recorded(&state).len(), 4);
    let statuses: Vec<u64> = state["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/ingest")
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(&statuses[..3], &[429, 500, 503], "{statuses:?}");
    assert_eq!(state["duplicates"], 0);
}

#[test]
fn a_crash_between_orbs_answer_and_the_record_counts_nothing_twice() {
    for step in [
        "orb-ingest",
        "orb-backfill-create",
        "orb-backfill-ingest",
        "orb-backfill-close",
    ] {
        let dir = TestDir::new("orb-crash");
        let rec = Recorder::start(&dir, 100);
        let data = dir.data("data");
        let mut server = start(
            &dir,
            &data,
            &rec,
            &["--fault-exit-after-provider-step", step],
        );
        server.ingest(&traffic("c", 2, 3));
        wait_fault_exit(&server);
        server.stop();

        let server = start(&dir, &data, &rec, &[]);
        let s = wait_caught_up(&server);
        assert_eq!(s["forwarded_events"], 7, "{step}: {s:#}");
        let state = rec.assert_all_valid();
        let got = recorded(&state);
        assert_eq!(got.len(), 7, "{step}: every event once");
        let backfills = state["backfills"].as_array().unwrap();
        assert_eq!(backfills.len(), 1, "{step}: one backfill: {backfills:#?}");
        assert_eq!(backfills[0]["status"], "reflected", "{step}");
        assert_eq!(backfills[0]["events_ingested"], 3, "{step}");
        let resent = state["duplicates"].as_u64().unwrap();
        match step {
            // The batch Orb acknowledged was sent again with the same keys: recognised.
            "orb-ingest" | "orb-backfill-ingest" => assert!(resent > 0, "{step}: {resent}"),
            _ => assert_eq!(resent, 0, "{step}"),
        }
    }
}

#[test]
fn a_permanent_refusal_stops_forwarding_visibly_until_resumed() {
    let dir = TestDir::new("orb-stop");
    let rec = Recorder::start(&dir, 100);
    rec.fault("/v1/ingest", &[400]);
    let server = start(&dir, &dir.data("data"), &rec, &[]);
    server.ingest(&traffic("s", 2, 0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status(&server);
        if s["state"] == "stopped" {
            break s;
        }
        assert!(Instant::now() < deadline, "not stopped: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(s["stopped_code"], "orb_rejected", "{s:#}");
    assert_eq!(s["last_http_status"], 400);
    assert!(s["last_error"].as_str().unwrap().contains("400"), "{s:#}");
    assert_eq!(s["cursor_seq"], 0, "nothing skipped past: {s:#}");
    assert!(!s["plan"].is_null(), "the batch stays planned: {s:#}");
    let metrics = server.get("/metrics", ADMIN_KEY).body;
    let text = metrics
        .as_str()
        .map(str::to_owned)
        .unwrap_or(metrics.to_string());
    assert!(text.contains("tollgate_orb_stopped 1"), "{text}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        recorded(&rec.state()).len(),
        0,
        "nothing sent while stopped"
    );

    let r = call(&server, "POST", "/v1/providers/orb/resume", None);
    assert_eq!(
        (r.status, &r.body["resumed"]),
        (200, &json!(true)),
        "{}",
        r.body
    );
    let s = wait_caught_up(&server);
    assert_eq!(
        (s["state"].as_str(), s["forwarded_events"].as_u64()),
        (Some("running"), Some(4))
    );
    assert_eq!(recorded(&rec.assert_all_valid()).len(), 4);
}

fn orb_invoice(id: &str, customer: &str, status: &str, due: &str) -> Value {
    json!({
        "id": id, "invoice_number": format!("ORB-{id}"), "status": status, "currency": "USD",
        "amount_due": due, "total": due, "subtotal": due,
        "invoice_date": "2026-05-01T00:00:00+00:00",
        "customer": {"id": format!("orb_{customer}"), "external_customer_id": customer},
    })
}

#[test]
fn customers_are_synced_and_invoices_read_back() {
    let dir = TestDir::new("orb-customers");
    let rec = Recorder::start(&dir, 2);
    let data = dir.data("data");
    // A crash right after Orb created the customer: the restart finds it, makes no second one.
    let mut server = start(
        &dir,
        &data,
        &rec,
        &[
            "--fault-exit-after-provider-step",
            "orb-create-customer-acme",
        ],
    );
    let _ = reqwest::blocking::Client::new()
        .post(format!("{}/v1/customers", server.base()))
        .bearer_auth(ADMIN_KEY)
        .json(
            &json!({"key": "acme", "name": "Acme", "email": "billing@acme.test",
                      "currency": "USD", "metadata": {"plan": "pro"}}),
        )
        .send();
    wait_fault_exit(&server);
    server.stop();

    let server = start(&dir, &data, &rec, &[]);
    let r = call(
        &server,
        "PATCH",
        "/v1/customers/acme",
        Some(&json!({"name": "Acme Corp"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &server,
        "POST",
        "/v1/customers",
        Some(&json!({"key": "nomail", "name": "No Mail", "currency": "USD"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&server);
        let state = rec.state();
        let acme = state["customers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["external_customer_id"] == "acme")
            .cloned();
        if s["customer_syncs_pending"] == 0
            && acme.as_ref().is_some_and(|c| c["name"] == "Acme Corp")
        {
            assert_eq!(
                s["customer_syncs_failed"], 1,
                "the customer without e-mail: {s:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "customers not synced: {s:#} {state:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = rec.assert_all_valid();
    let customers = state["customers"].as_array().unwrap();
    assert_eq!(customers.len(), 1, "one Orb customer: {customers:#?}");
    let acme = &customers[0];
    assert_eq!(acme["email"], "billing@acme.test");
    assert_eq!(acme["metadata"]["tollgate_key"], "acme");
    assert_eq!(acme["metadata"]["plan"], "pro");
    let creates = state["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/customers" && r["method"] == "POST")
        .count();
    assert_eq!(creates, 1);

    // Invoices: three for acme (two pages of two), one paid, one void.
    rec.seed_invoices(&[
        orb_invoice("inv_1", "acme", "issued", "12.50"),
        orb_invoice("inv_2", "acme", "paid", "40.00"),
        orb_invoice("inv_3", "acme", "void", "0.00"),
        orb_invoice("inv_9", "globex", "issued", "1.00"),
    ]);
    let r = call(&server, "POST", "/v1/providers/orb/pull", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["invoices"], 3, "{}", r.body);
    assert_eq!(r.body["customers"], 2, "{}", r.body);
    // Pulling again changes nothing.
    assert_eq!(
        call(&server, "POST", "/v1/providers/orb/pull", None).body["invoices"],
        3
    );
    let list = call(
        &server,
        "GET",
        "/v1/providers/orb/invoices?customer=acme",
        None,
    );
    assert_eq!(list.status, 200, "{}", list.body);
    let data = list.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{data:#?}");
    let by_id: BTreeMap<&str, &Value> = data
        .iter()
        .map(|i| (i["orb_invoice_id"].as_str().unwrap(), i))
        .collect();
    assert_eq!(by_id["inv_1"]["amount_due_minor"], 1250);
    assert_eq!(by_id["inv_1"]["payment_state"], "open");
    assert_eq!(by_id["inv_1"]["amount_paid_minor"], 0);
    assert_eq!(by_id["inv_2"]["payment_state"], "paid");
    assert_eq!(by_id["inv_2"]["amount_paid_minor"], 4000);
    assert_eq!(by_id["inv_3"]["payment_state"], "void");
    let pages = rec.assert_all_valid()["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/invoices" && r["query"]["external_customer_id"] == "acme")
        .count();
    assert_eq!(pages, 4, "two pulls of two pages each");
}

#[test]
fn orb_routes_answer_404_when_orb_is_off() {
    let dir = TestDir::new("orb-off");
    let server = Server::start(&dir.data("data"), &[]);
    for (method, path) in [
        ("GET", "/v1/providers/orb/status"),
        ("GET", "/v1/providers/orb/invoices"),
        ("POST", "/v1/providers/orb/pull"),
        ("POST", "/v1/providers/orb/resume"),
    ] {
        let r = call(&server, method, path, None);
        assert_error(&r, 404, "provider_not_configured");
    }
}
