//! Black-box tests of reconciliation without a payment provider: a clean period reports zero
//! differences; a late correction that lowers the month is repaired by the invoice run's credit
//! note, after which the month reconciles clean; a late event after finalization, a rollup
//! altered behind the raw events' back,
//! and a ledger entry altered in the database are each found with their exact amount and
//! class; reports are kept and readable as JSON, CSV and an HTML page; metrics show the last
//! run; and `tollgate reconcile` exits 4 on anything unexplained.
//!
//! The scenario (USD, cents; customer `acme`, UTC, no tax): two months ago `base` flat 49.00
//! and `transfer` 1000 bytes × 0.01 = 10.00; a 10.00 grant is drawn at finalization.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use common::*;
use jiff::{Timestamp, ToSpan};
use serde_json::{Value, json};

const SERVE_FLAGS: &[&str] = &[
    "--acceptance-window",
    "120d",
    "--invoice-every",
    "0s",
    // Long enough that last month's invoice stays a draft the runs re-price (the longest
    // allowed): corrections of the finalized month surface on it.
    "--invoice-grace",
    "743h",
    "--alert-every",
    "0s",
];

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

/// Two months ago, as (`YYYY-MM`, its first instant in ms).
fn two_months_ago() -> (String, i64) {
    let m2 = Timestamp::now()
        .in_tz("UTC")
        .unwrap()
        .date()
        .first_of_month()
        .checked_sub(2.months())
        .unwrap();
    (
        format!("{:04}-{:02}", m2.year(), m2.month()),
        m2.in_tz("UTC").unwrap().timestamp().as_millisecond(),
    )
}

/// Meter, plan, customer with a 10.00 grant, subscription, 1000 bytes two months ago, and that
/// month's invoice finalized. Returns the invoice.
fn finalized_month(server: &Server) -> Value {
    let (period, start) = two_months_ago();
    let r = server.put_meter(
        "bytes",
        &json!({"aggregation": "sum", "value_path": "$.data.bytes"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let plan = json!({
        "key": "pro", "name": "Pro", "currency": "USD", "interval": "month",
        "prices": [
            {"key": "base", "name": "Platform fee", "model": {"type": "flat", "amount": "49.00"}},
            {"key": "transfer", "name": "Data transfer", "meter": "bytes",
             "model": {"type": "per_unit", "unit_price": "0.01"}},
        ],
    });
    expect(call(server, "POST", "/v1/plans", Some(&plan)), 201, "plan");
    let customer = json!({"key": "acme", "name": "Acme", "currency": "USD", "time_zone": "UTC"});
    expect(
        call(server, "POST", "/v1/customers", Some(&customer)),
        201,
        "customer",
    );
    expect(
        call(
            server,
            "POST",
            "/v1/customers/acme/credit_grants",
            Some(&json!({"amount_minor": 1000, "currency": "USD", "reason": "welcome"})),
        ),
        201,
        "grant",
    );
    expect(
        call(
            server,
            "POST",
            "/v1/subscriptions",
            Some(&json!({"customer": "acme", "plan": "pro", "start": rfc3339(start)})),
        ),
        201,
        "subscription",
    );
    let events: Vec<Value> = (0..4)
        .map(|i| {
            event(
                &format!("e{i}"),
                "acme",
                start + (i + 1) * DAY_MS,
                json!({"bytes": 250}),
            )
        })
        .collect();
    assert_counts(&server.ingest(&events), 4, 0, 0, 0);
    expect(
        call(
            server,
            "POST",
            "/v1/invoices/run",
            Some(&json!({"period": period})),
        ),
        200,
        "run",
    );
    let list = expect(
        call(server, "GET", "/v1/invoices?customer=acme", None),
        200,
        "invoices",
    );
    let mut inv = list["data"][0].clone();
    if inv["status"] == "draft" {
        let id = inv["id"].as_str().unwrap().to_owned();
        inv = expect(
            call(server, "POST", &format!("/v1/invoices/{id}/finalize"), None),
            200,
            "finalize",
        );
    }
    assert_eq!(
        (
            inv["status"].as_str(),
            inv["total_minor"].as_i64(),
            inv["credits_applied_minor"].as_i64(),
            inv["amount_due_minor"].as_i64()
        ),
        (Some("finalized"), Some(5900), Some(1000), Some(4900)),
        "{inv}"
    );
    inv
}

fn reconcile(server: &Server, period: &str) -> Value {
    expect(
        call(
            server,
            "POST",
            "/v1/reconciliation/runs",
            Some(&json!({"period": period})),
        ),
        201,
        "reconcile",
    )
}

fn differences(report: &Value) -> Vec<Value> {
    report["differences"].as_array().unwrap().clone()
}

#[test]
fn reconciliation_finds_each_injected_difference_and_nothing_in_a_clean_period() {
    let dir = TestDir::new("reconcile");
    let data = dir.data("data");
    let mut server = Server::start(&data, SERVE_FLAGS);
    let inv = finalized_month(&server);
    let id = inv["id"].as_str().unwrap().to_owned();
    let (period, start) = two_months_ago();

    // Clean: every comparison agrees, and each checked something.
    let clean = reconcile(&server, &period);
    assert_eq!(differences(&clean), Vec::<Value>::new(), "{clean:#}");
    assert_eq!(clean["period"], period.as_str());
    for kind in ["usage", "pricing", "ledger"] {
        assert!(
            clean["checked"][kind].as_u64().unwrap() > 0,
            "{kind}: {clean}"
        );
    }
    assert_eq!(clean["checked"]["provider"], 0, "no provider in use");
    assert_eq!(clean["provider_fetched"], false);

    // A late event inside the acceptance window, after finalization: 100 more bytes = 1.00.
    assert_counts(
        &server.ingest(&[event(
            "late-1",
            "acme",
            start + 10 * DAY_MS,
            json!({"bytes": 100}),
        )]),
        1,
        0,
        0,
        0,
    );
    let late = reconcile(&server, &period);
    let d = differences(&late);
    assert_eq!(d.len(), 1, "{late:#}");
    assert_eq!(
        (
            d[0]["kind"].as_str(),
            d[0]["class"].as_str(),
            d[0]["invoice"].as_str(),
            d[0]["left"]["value"].as_str(),
            d[0]["right"]["value"].as_str(),
            d[0]["delta"].as_str()
        ),
        (
            Some("pricing"),
            Some("late_event_after_finalization"),
            Some(id.as_str()),
            Some("1000"),
            Some("1100"),
            Some("100")
        ),
        "{late:#}"
    );
    let metrics = server.get_raw("/metrics", ADMIN_KEY).text;
    assert!(
        metrics.contains(
            "tollgate_reconciliation_differences{kind=\"pricing\",class=\"late_event_after_finalization\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tollgate_reconciliation_differences{kind=\"usage\",class=\"unexplained\"} 0"
        )
    );

    // The stored reports: listed newest first, readable as CSV and as a page.
    let runs = expect(
        call(
            &server,
            "GET",
            &format!("/v1/reconciliation/runs?period={period}"),
            None,
        ),
        200,
        "runs",
    );
    let runs = runs["data"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], late["id"]);
    assert_eq!(
        (
            runs[0]["differences"].as_u64(),
            runs[0]["unexplained"].as_u64()
        ),
        (Some(1), Some(0))
    );
    let late_id = late["id"].as_str().unwrap();
    let csv = server
        .get_raw(
            &format!("/v1/reconciliation/runs/{late_id}?format=csv"),
            ADMIN_KEY,
        )
        .text;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[1].starts_with(&format!(
            "{period},pricing,late_event_after_finalization,acme,{id},amount_minor,"
        )),
        "{csv}"
    );
    let page = server
        .get_raw(
            &format!("/v1/reconciliation/runs/{late_id}?format=html"),
            ADMIN_KEY,
        )
        .text;
    assert!(page.contains("late_event_after_finalization") && page.contains("0 unexplained"));
    // The same page in a browser, through a signed admin link (no API key needed); a
    // customer's portal link does not open it, and it does not open a customer's portal.
    let admin = expect(
        call(&server, "POST", "/v1/admin_sessions", Some(&json!({}))),
        201,
        "admin session",
    );
    let admin_token = admin["token"].as_str().unwrap().to_owned();
    assert!(
        admin["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/admin/{admin_token}/reconciliation"))
    );
    let list_page = server
        .get_raw(&format!("/admin/{admin_token}/reconciliation"), "")
        .text;
    assert!(list_page.contains(late_id) && list_page.contains(clean["id"].as_str().unwrap()));
    let report_page = server.get_raw(
        &format!("/admin/{admin_token}/reconciliation/{late_id}"),
        "",
    );
    assert_eq!(report_page.status, 200);
    assert!(report_page.text.contains("late_event_after_finalization"));
    let customer = expect(
        call(
            &server,
            "POST",
            "/v1/customers/acme/portal_sessions",
            Some(&json!({})),
        ),
        201,
        "portal session",
    );
    let customer_token = customer["token"].as_str().unwrap();
    assert_eq!(
        server
            .get_raw(&format!("/admin/{customer_token}/reconciliation"), "")
            .status,
        401
    );
    assert_eq!(
        server.get_raw(&format!("/portal/{admin_token}"), "").status,
        401
    );
    assert_error(
        &call(
            &server,
            "GET",
            "/v1/reconciliation/runs/recon_missing",
            None,
        ),
        404,
        "reconciliation_run_not_found",
    );
    assert_error(
        &call(
            &server,
            "POST",
            "/v1/reconciliation/runs",
            Some(&json!({"period": "2026-13"})),
        ),
        400,
        "invalid_period",
    );
    assert_error(
        &call(
            &server,
            "GET",
            &format!("/v1/reconciliation/runs/{late_id}?format=pdf"),
            None,
        ),
        400,
        "invalid_format",
    );

    // A correction lowers the month by 300 bytes (net −200 against what was billed): the
    // invoice run gives it back by a credit note on the finalized invoice, after which the
    // period reconciles clean.
    assert_counts(
        &server.ingest(&[event(
            "late-2",
            "acme",
            start + 11 * DAY_MS,
            json!({"bytes": -300}),
        )]),
        1,
        0,
        0,
        0,
    );
    let before = reconcile(&server, &period);
    assert_eq!(differences(&before)[0]["delta"], "-200", "{before:#}");
    let run = expect(
        call(&server, "POST", "/v1/invoices/run", Some(&json!({}))),
        200,
        "run",
    );
    assert_eq!(run["credit_notes"], 1, "{run}");
    let repaired = reconcile(&server, &period);
    assert_eq!(differences(&repaired), Vec::<Value>::new(), "{repaired:#}");
    server.stop();

    // A rollup altered behind the raw events' back: 500 bytes counted that no stored event
    // carries. Usage and pricing disagree, and nothing explains it.
    let ghost = json!({"specversion": "1.0", "id": "ghost", "source": "/test", "type": "t",
        "subject": "acme", "time": rfc3339(start + 12 * DAY_MS), "data": {"bytes": 500}});
    let mut server = Server::start(
        &data,
        &[SERVE_FLAGS, &["--fault-rollup-event", &ghost.to_string()]].concat(),
    );
    let altered = reconcile(&server, &period);
    let d = differences(&altered);
    let usage: Vec<&Value> = d.iter().filter(|x| x["kind"] == "usage").collect();
    assert_eq!(usage.len(), 1, "{altered:#}");
    assert_eq!(
        (
            usage[0]["class"].as_str(),
            usage[0]["left"]["value"].as_str(),
            usage[0]["right"]["value"].as_str(),
            usage[0]["delta"].as_str()
        ),
        (Some("unexplained"), Some("800"), Some("1300"), Some("500"))
    );
    let pricing: Vec<&Value> = d.iter().filter(|x| x["kind"] == "pricing").collect();
    assert_eq!(pricing.len(), 1);
    assert_eq!(pricing[0]["delta"], "500", "the ghost's 500 bytes");
    server.stop();

    // A ledger entry altered in the database: the draw of 10.00 now says 7.00.
    {
        let conn = rusqlite::Connection::open(data.join("tollgate.db")).unwrap();
        let (seq, doc): (i64, String) = conn
            .query_row(
                "SELECT seq, doc FROM ledger_entries WHERE doc LIKE '%invoice_settlement%'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let mut entry: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(entry["amount_minor"], 1000, "{entry}");
        entry["amount_minor"] = json!(700);
        conn.execute(
            "UPDATE ledger_entries SET doc = ?2 WHERE seq = ?1",
            rusqlite::params![seq, entry.to_string()],
        )
        .unwrap();
    }
    // `tollgate reconcile` (server stopped) finds it and exits 4: unexplained.
    let out = tollgate()
        .args([
            "reconcile",
            "--data-dir",
            data.to_str().unwrap(),
            "--acceptance-window",
            "120d",
            "--period",
            &period,
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let csv = String::from_utf8(out.stdout).unwrap();
    let ledger: Vec<&str> = csv.lines().filter(|l| l.contains(",ledger,")).collect();
    assert_eq!(ledger.len(), 2, "{csv}");
    assert!(
        ledger
            .iter()
            .any(|l| l.contains(",transaction_sum_minor,") && l.contains(",-300,"))
    );
    assert!(
        ledger
            .iter()
            .any(|l| l.contains(",credits_applied_minor,") && l.contains(",-300,"))
    );
    // The CLI ran on its own rollups (rebuilt from the raw events): no usage difference.
    assert!(!csv.contains(",usage,"), "{csv}");
    let out = tollgate()
        .args([
            "reconcile",
            "--data-dir",
            data.to_str().unwrap(),
            "--period",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

// ---- against the payment provider (localstripe) ----

#[path = "support/stripe_harness.rs"]
mod stripe_harness;

/// `key` with a Stripe customer, subscribed to the flat plan since last month.
fn stripe_customer(server: &Server, key: &str) {
    let body =
        json!({"key": key, "name": key, "email": format!("{key}@example.test"), "currency": "EUR"});
    expect(
        call(server, "POST", "/v1/customers", Some(&body)),
        201,
        "customer",
    );
    stripe_harness::subscribe(server, key);
}

fn provider_id(server: &Server, kind: &str, key: &str) -> String {
    stripe_harness::objects(server, kind)
        .into_iter()
        .find(|o| o["tollgate_key"] == key)
        .unwrap_or_else(|| panic!("no {kind} {key}"))["provider_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Pays Stripe invoice `si` at localstripe with a card made the customer's default: the charge.
fn pay_at_stripe(ls: &stripe_harness::LocalStripe, cus: &str, si: &str) -> String {
    let pm = ls.post(
        "/v1/payment_methods",
        &[
            ("type", "card"),
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ],
    );
    let pm = pm["id"].as_str().unwrap();
    ls.post(
        &format!("/v1/payment_methods/{pm}/attach"),
        &[("customer", cus)],
    );
    ls.post(
        &format!("/v1/customers/{cus}"),
        &[("invoice_settings[default_payment_method]", pm)],
    );
    let paid = ls.post(&format!("/v1/invoices/{si}/pay"), &[]);
    assert_eq!(paid["status"], "paid", "{paid}");
    // localstripe expands the charge; Stripe gives its id unless asked to expand it.
    let charge = &ls.get(&format!("/v1/invoices/{si}"))["charge"];
    charge
        .as_str()
        .or_else(|| charge["id"].as_str())
        .unwrap_or_else(|| panic!("no charge on {paid}"))
        .to_owned()
}

fn last_month() -> String {
    let m1 = Timestamp::now()
        .in_tz("UTC")
        .unwrap()
        .date()
        .first_of_month()
        .checked_sub(1.months())
        .unwrap();
    format!("{:04}-{:02}", m1.year(), m1.month())
}

#[test]
fn reconciliation_against_stripe_finds_lost_webhooks_changes_there_and_refunds_overpayments() {
    use stripe_harness::*;
    let dir = TestDir::new("reconcile-stripe");
    let ls = LocalStripe::start(&dir);
    let data = dir.data("data");
    let mut server = start(&data, &ls, &[]);
    plan(&server);
    for key in ["acme", "beta", "gamma"] {
        stripe_customer(&server, key);
    }
    let run = expect(
        call(&server, "POST", "/v1/invoices/run", Some(&json!({}))),
        200,
        "run",
    );
    assert_eq!(run["finalized"], 3, "{run}");
    wait_calls_done(&server, 6);
    let inv = |key: &str| {
        expect(
            call(
                &server,
                "GET",
                &format!("/v1/invoices?customer={key}"),
                None,
            ),
            200,
            "invoices",
        )["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (acme, beta, gamma) = (inv("acme"), inv("beta"), inv("gamma"));
    // acme pays at Stripe and the webhook arrives: both sides agree.
    let acme_si = provider_id(&server, "invoice", &acme);
    let acme_charge = pay_at_stripe(&ls, &provider_id(&server, "customer", "acme"), &acme_si);
    webhook_paid(&server, "evt_acme", &acme, &acme_si, 4900, &acme_charge);
    let period = last_month();
    let clean = reconcile(&server, &period);
    let d = differences(&clean);
    // beta and gamma are open at Stripe and finalized here: in agreement too.
    assert_eq!(d, Vec::<Value>::new(), "{clean:#}");
    assert_eq!(clean["checked"]["provider"], 3);
    assert_eq!(clean["provider_fetched"], true);

    // beta pays at Stripe, but the webhook is lost.
    pay_at_stripe(
        &ls,
        &provider_id(&server, "customer", "beta"),
        &provider_id(&server, "invoice", &beta),
    );
    // acme's payment is partly refunded in Stripe's dashboard: a change made there.
    ls.post(
        "/v1/refunds",
        &[("charge", &acme_charge), ("amount", "500")],
    );
    // gamma paid twice (a duplicate payment outside the invoice): Stripe's webhook said 98.00.
    let gamma_charge = ls.card_charge(9800);
    let gamma_si = provider_id(&server, "invoice", &gamma);
    webhook_paid(&server, "evt_gamma", &gamma, &gamma_si, 9800, &gamma_charge);

    let drift = reconcile(&server, &period);
    let d = differences(&drift);
    let found: Vec<(String, String, String, String)> = d
        .iter()
        .map(|x| {
            (
                x["invoice"].as_str().unwrap().to_owned(),
                x["class"].as_str().unwrap().to_owned(),
                x["field"].as_str().unwrap().to_owned(),
                x["delta"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut want = vec![
        (
            acme.clone(),
            "amount_drift".into(),
            "refunded_minor".into(),
            "500".into(),
        ),
        (
            beta.clone(),
            "status_drift".into(),
            "status".into(),
            String::new(),
        ),
        (
            gamma.clone(),
            "status_drift".into(),
            "status".into(),
            String::new(),
        ),
    ];
    want.sort();
    let mut found_sorted = found.clone();
    found_sorted.sort();
    assert_eq!(found_sorted, want, "{drift:#}");
    assert_eq!(drift["checked"]["provider"], 3);
    server.stop();

    // Offline, against Tollgate's copy of the webhooks, with the overpayment rule: gamma's
    // 49.00 paid beyond its invoice is refunded (by rule), once.
    let offline = |extra: &[&str]| {
        let out = tollgate()
            .args([
                "reconcile",
                "--data-dir",
                data.to_str().unwrap(),
                "--period",
                &period,
                "--format",
                "json",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let report = offline(&["--refund-overpayments"]);
    let over: Vec<Value> = differences(&report)
        .into_iter()
        .filter(|x| x["field"] == "amount_paid_minor")
        .collect();
    assert_eq!(over.len(), 1, "{report:#}");
    assert_eq!(
        (over[0]["invoice"].as_str(), over[0]["delta"].as_str()),
        (Some(gamma.as_str()), Some("4900"))
    );
    let repair = over[0]["repair"].as_str().unwrap().to_owned();
    assert!(repair.starts_with("refund re_tg_"), "{repair}");
    let again = offline(&["--refund-overpayments"]);
    let repair2 = differences(&again)
        .into_iter()
        .find(|x| x["field"] == "amount_paid_minor")
        .unwrap()["repair"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(repair2.ends_with("(earlier run)"), "{repair2}");

    // Back online, the rule's refund runs at Stripe exactly once.
    let server = start(&data, &ls, &[]);
    let refund_id = repair.trim_start_matches("refund ").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = expect(
            call(&server, "GET", &format!("/v1/refunds/{refund_id}"), None),
            200,
            "refund",
        );
        if r["status"] == "succeeded" {
            assert_eq!(
                (
                    r["origin"].as_str(),
                    r["reason"].as_str(),
                    r["amount_minor"].as_i64()
                ),
                (Some("rule"), Some("overpayment"), Some(4900))
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{r}\n{}",
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let at_stripe = ls.list(&format!("/v1/refunds?charge={gamma_charge}"));
    assert_eq!(at_stripe.len(), 1, "{at_stripe:#?}");
    assert_eq!(at_stripe[0]["amount"], 4900);
}
