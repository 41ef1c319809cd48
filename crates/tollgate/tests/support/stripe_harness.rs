//! The localstripe harness shared by the Stripe and refund tests: localstripe (a stateful fake
//! Stripe server from PyPI) started by `localstripe_shim.py` on a random 127.0.0.1 port, the
//! server flags that point Tollgate at it, a plan/customer/invoice set-up, the provider call
//! and object listings, and Stripe webhooks signed by the official `stripe` package.
//!
//! Python comes from `TOLLGATE_PYTHON` or `target/venv` (`cargo xtask venv`); a missing Python,
//! localstripe or stripe package fails the test, it never skips.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{Timestamp, ToSpan};
use serde_json::{Value, json};

use crate::common::*;

pub const STRIPE_KEY: &str = "sk_test_tollgate";
pub const WEBHOOK_SECRET: &str = "whsec_tollgate_test_secret";

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_owned()
}

pub fn support(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

/// The Python with localstripe and stripe (checked once); fails loudly when either is missing.
pub fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(find_python).clone()
}

pub fn find_python() -> PathBuf {
    let python = std::env::var_os("TOLLGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv/bin/python"));
    match Command::new(&python)
        .args(["-c", "import localstripe, stripe"])
        .output()
    {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "localstripe or stripe is missing in {} ({}); run `cargo xtask venv`, or point \
             TOLLGATE_PYTHON at a Python 3 with localstripe 1.15.10 and stripe 16.1.0",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run {}: {e}; run `cargo xtask venv`, or point TOLLGATE_PYTHON at a Python 3 \
             with localstripe and stripe",
            python.display()
        ),
    }
}

/// A running localstripe, killed when dropped.
pub struct LocalStripe {
    child: Child,
    pub base: String,
    client: reqwest::blocking::Client,
}

impl LocalStripe {
    pub fn start(dir: &TestDir) -> LocalStripe {
        let python = python();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        // localstripe cannot report a port it picked: take a free one, then hand it over.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(dir.join(&format!("localstripe-{port}.log"))).unwrap();
            let child = Command::new(&python)
                .arg(support("localstripe_shim.py"))
                .arg(port.to_string())
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap();
            let mut ls = LocalStripe {
                child,
                base: format!("http://127.0.0.1:{port}"),
                client: client.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = ls.child.try_wait() {
                    break; // The port was taken meanwhile: try another.
                }
                if let Ok(r) = ls
                    .client
                    .get(format!("{}/v1/customers", ls.base))
                    .bearer_auth(STRIPE_KEY)
                    .send()
                    && r.status().is_success()
                {
                    return ls;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = ls.child.kill();
            let _ = ls.child.wait();
        }
        panic!(
            "localstripe did not start; see the localstripe-*.log files in {}",
            dir.path().display()
        );
    }

    pub fn get(&self, path: &str) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(STRIPE_KEY)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().unwrap()
    }

    /// A form-encoded POST straight to localstripe (setting up what a customer does there).
    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(STRIPE_KEY)
            .form(form)
            .send()
            .unwrap();
        let status = r.status();
        let body: Value = r.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    /// A succeeded card charge of `amount_minor` EUR cents at localstripe: its id.
    pub fn card_charge(&self, amount_minor: i64) -> String {
        let pm = self.post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "123"),
            ],
        );
        let charge = self.post(
            "/v1/charges",
            &[
                ("amount", &amount_minor.to_string()),
                ("currency", "eur"),
                ("source", pm["id"].as_str().unwrap()),
            ],
        );
        assert_eq!(charge["status"], "succeeded", "{charge}");
        charge["id"].as_str().unwrap().to_owned()
    }

    /// Every object of a list endpoint (localstripe pages by 10 by default).
    pub fn list(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.get(&format!("{path}{sep}limit=100"))["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn fault(&self, status: u16, count: u32, when: &str, path: &str) {
        let r = self
            .client
            .post(format!("{}/_config/tollgate/faults", self.base))
            .json(&json!({"status": status, "count": count, "when": when, "path": path}))
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Clears every injected fault.
    pub fn clear_faults(&self) {
        let r = self
            .client
            .delete(format!("{}/_config/tollgate/faults", self.base))
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }

    pub fn requests(&self) -> Vec<Value> {
        self.client
            .get(format!("{}/_config/tollgate/requests", self.base))
            .send()
            .unwrap()
            .json::<Vec<Value>>()
            .unwrap()
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stripe_flags(ls: &LocalStripe) -> Vec<String> {
    vec![
        "--stripe-secret-key".into(),
        STRIPE_KEY.into(),
        "--stripe-api-base".into(),
        ls.base.clone(),
        "--stripe-webhook-secret".into(),
        WEBHOOK_SECRET.into(),
        "--stripe-backoff-base".into(),
        "50ms".into(),
        "--stripe-backoff-cap".into(),
        "200ms".into(),
        "--stripe-timeout".into(),
        "10s".into(),
        "--invoice-grace".into(),
        "0s".into(),
        "--invoice-every".into(),
        "0s".into(),
        "--alert-every".into(),
        "0s".into(),
    ]
}

pub fn start(data: &std::path::Path, ls: &LocalStripe, extra: &[&str]) -> Server {
    let mut flags = stripe_flags(ls);
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start(data, &refs)
}

pub fn call(server: &Server, method: &str, path: &str, body: Option<&Value>) -> Reply {
    server.request(
        method,
        path,
        Some(ADMIN_KEY),
        body.map(|_| "application/json"),
        body.map(|b| reqwest::blocking::Body::from(b.to_string())),
    )
}

pub fn expect(reply: Reply, status: u16, what: &str) -> Value {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    reply.body
}

/// A flat plan of 49.00 EUR a month (plans are not synced: no call).
pub fn plan(server: &Server) {
    expect(
        call(
            server,
            "POST",
            "/v1/plans",
            Some(&json!({
                "key": "flat", "name": "Flat", "currency": "EUR", "interval": "month",
                "prices": [{"key": "base", "name": "Platform fee", "model": {"type": "flat", "amount": "49.00"}}],
            })),
        ),
        201,
        "plan",
    );
}

pub fn customer_body(key: &str) -> Value {
    json!({"key": key, "name": "Acme", "email": "billing@acme.test", "currency": "EUR"})
}

/// `key` subscribed to the flat plan since the start of last month: one period has ended.
pub fn subscribe(server: &Server, key: &str) {
    let start = Timestamp::now()
        .in_tz("UTC")
        .unwrap()
        .date()
        .first_of_month()
        .checked_sub(1.months())
        .unwrap()
        .in_tz("UTC")
        .unwrap()
        .timestamp()
        .as_millisecond();
    expect(
        call(
            server,
            "POST",
            "/v1/subscriptions",
            Some(&json!({"customer": key, "plan": "flat", "start": rfc3339(start)})),
        ),
        201,
        "subscription",
    );
}

/// The plan, customer `key` and its subscription.
pub fn customer_with_plan(server: &Server, key: &str) {
    plan(server);
    expect(
        call(server, "POST", "/v1/customers", Some(&customer_body(key))),
        201,
        "customer",
    );
    subscribe(server, key);
}

/// A POST to a server that may exit (fault injection) before it answers: the answer, if any,
/// is not looked at.
pub fn post_tolerant(server: &Server, path: &str, body: &Value) {
    let _ = reqwest::blocking::Client::new()
        .post(format!("{}{path}", server.base()))
        .bearer_auth(ADMIN_KEY)
        .json(body)
        .send();
}

/// Runs the invoices; answers the one finalized invoice of `key`.
pub fn finalize_invoice(server: &Server, key: &str) -> Value {
    let run = expect(
        call(server, "POST", "/v1/invoices/run", Some(&json!({}))),
        200,
        "run",
    );
    assert_eq!(run["finalized"], 1, "{run}");
    let list = expect(
        call(server, "GET", &format!("/v1/invoices?customer={key}"), None),
        200,
        "invoices",
    );
    let list = list["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    list[0].clone()
}

pub fn calls(server: &Server) -> Vec<Value> {
    expect(
        call(server, "GET", "/v1/providers/stripe/calls", None),
        200,
        "calls",
    )["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until every call is done (and there are `n`); panics with the calls if one failed.
pub fn wait_calls_done(server: &Server, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = calls(server);
        assert!(
            all.iter().all(|c| c["status"] != "failed"),
            "a call failed: {all:#?}\n{}",
            server.log_text()
        );
        if all.len() == n && all.iter().all(|c| c["status"] == "done") {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "calls not done: {all:#?}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn objects(server: &Server, kind: &str) -> Vec<Value> {
    expect(
        call(
            server,
            "GET",
            &format!("/v1/providers/stripe/objects?kind={kind}"),
            None,
        ),
        200,
        "objects",
    )["data"]
        .as_array()
        .unwrap()
        .clone()
}

pub fn stripe_customers_of(ls: &LocalStripe, key: &str) -> Vec<Value> {
    ls.list("/v1/customers")
        .into_iter()
        .filter(|c| c["metadata"]["tollgate_key"] == key)
        .collect()
}

/// Waits until the server process printed the fault-injection exit.
pub fn wait_fault_exit(server: &Server) {
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

pub fn stripe_tool(command: &str, arg: &str, payload: &str) -> String {
    let mut child = Command::new(python())
        .arg(support("stripe_sign.py"))
        .args([command, WEBHOOK_SECRET, arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A `Stripe-Signature` made by Stripe's library for `payload` at `at_s`.
pub fn stripe_sign(payload: &str, at_s: i64) -> String {
    stripe_tool("sign", &at_s.to_string(), payload)
}

pub fn now_s() -> i64 {
    now_ms() / 1000
}

pub fn post_webhook(server: &Server, payload: &str, signature: Option<&str>) -> Reply {
    let client = reqwest::blocking::Client::new();
    let mut req = client
        .post(format!("{}/v1/providers/stripe/webhook", server.base()))
        .header("content-type", "application/json")
        .body(payload.to_owned());
    if let Some(sig) = signature {
        req = req.header("Stripe-Signature", sig);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().unwrap_or(Value::Null);
    Reply { status, body }
}

/// Tells Tollgate, by a signed `invoice.paid` webhook, that its invoice `inv` (Stripe `si`) was
/// paid by `charge`.
pub fn webhook_paid(
    server: &Server,
    event_id: &str,
    inv: &str,
    si: &str,
    amount_minor: i64,
    charge: &str,
) {
    let paid = stripe_event(
        event_id,
        "invoice.paid",
        json!({"id": si, "object": "invoice", "amount_paid": amount_minor, "charge": charge,
               "status": "paid", "metadata": {"tollgate_invoice": inv}}),
    );
    let r = post_webhook(server, &paid, Some(&stripe_sign(&paid, now_s())));
    assert_eq!(r.status, 200, "invoice.paid: {}", r.body);
}

pub fn stripe_event(id: &str, kind: &str, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "api_version": "2024-06-20",
           "created": now_s(), "data": {"object": object}})
    .to_string()
}
