//! Black-box tests of credit notes: by quantity, by amount, four-eyes approval and rejection,
//! every cap and typed error, settlement (an unpaid invoice owes less; a paid one's note
//! becomes credit balance in the ledger), gapless numbers that rejected notes do not take,
//! voiding refused once notes exist, and notes surviving a restart.
//!
//! The scenario, priced by hand (USD, cents; customer `acme`, UTC, 19 % tax): two months ago
//! `base` flat 49.00 → 4900 and `transfer` 1000 bytes × 0.01 → 1000; subtotal 5900, tax
//! 59.00 × 0.19 = 11.21 → 1121, total 7021.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use common::*;
use std::str::FromStr;

use jiff::{Timestamp, ToSpan};
use serde_json::{Value, json};

const SERVE_FLAGS: &[&str] = &[
    "--acceptance-window",
    "120d",
    "--invoice-every",
    "0s",
    "--invoice-grace",
    "1h",
];

fn call(server: &Server, method: &str, path: &str, key: &str, body: Option<&Value>) -> Reply {
    server.request(
        method,
        path,
        Some(key),
        body.map(|_| "application/json"),
        body.map(|b| reqwest::blocking::Body::from(b.to_string())),
    )
}

fn expect(reply: Reply, status: u16, what: &str) -> Value {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    reply.body
}

fn post(server: &Server, path: &str, body: &Value) -> Reply {
    call(server, "POST", path, ADMIN_KEY, Some(body))
}

/// Sets up meters, plan, customer, subscription and usage two months ago; runs that month and
/// returns its finalized invoice.
fn finalized_invoice(server: &Server) -> Value {
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
    expect(post(server, "/v1/plans", &plan), 201, "plan");
    let customer = json!({
        "key": "acme", "name": "Acme", "currency": "USD", "time_zone": "UTC", "tax_rate": "0.19",
    });
    expect(post(server, "/v1/customers", &customer), 201, "customer");
    let this_month = Timestamp::now()
        .in_tz("UTC")
        .unwrap()
        .date()
        .first_of_month();
    let m2 = this_month.checked_sub(2.months()).unwrap();
    let m2_start = m2.in_tz("UTC").unwrap().timestamp().as_millisecond();
    expect(
        post(
            server,
            "/v1/subscriptions",
            &json!({"customer": "acme", "plan": "pro", "start": rfc3339(m2_start)}),
        ),
        201,
        "subscription",
    );
    let events: Vec<Value> = (0..4)
        .map(|i| {
            event(
                &format!("e{i}"),
                "acme",
                m2_start + (i + 1) * 86_400_000,
                json!({"bytes": 250}),
            )
        })
        .collect();
    assert_counts(&server.ingest(&events), 4, 0, 0, 0);
    let period = format!("{:04}-{:02}", m2.year(), m2.month());
    expect(
        post(server, "/v1/invoices/run", &json!({"period": period})),
        200,
        "run",
    );
    let list = expect(
        server.get("/v1/invoices?customer=acme", ADMIN_KEY),
        200,
        "invoices",
    );
    let mut inv = list["data"][0].clone();
    if inv["status"] == "draft" {
        // A long grace period (the late-correction test): finalize it by hand.
        let id = inv["id"].as_str().unwrap().to_owned();
        inv = expect(
            post(server, &format!("/v1/invoices/{id}/finalize"), &json!({})),
            200,
            "finalize",
        );
    }
    assert_eq!(inv["status"], "finalized", "{inv}");
    assert_eq!(
        (
            inv["subtotal_minor"].as_i64(),
            inv["tax_minor"].as_i64(),
            inv["total_minor"].as_i64(),
            inv["amount_due_minor"].as_i64()
        ),
        (Some(5900), Some(1121), Some(7021), Some(7021)),
        "{inv}"
    );
    inv
}

fn number_of(note: &Value) -> u32 {
    let text = note["number"].as_str().unwrap_or_else(|| panic!("{note}"));
    let year = Timestamp::now().in_tz("UTC").unwrap().year();
    let prefix = format!("CN-{year}-");
    assert!(
        text.starts_with(&prefix) && text.len() == prefix.len() + 6,
        "{text}"
    );
    text[prefix.len()..].parse().unwrap()
}

#[test]
fn credit_notes_credit_what_is_left_and_never_more() {
    let dir = TestDir::new("credit-notes");
    let data = dir.data("data");
    let mut server = Server::start(&data, SERVE_FLAGS);
    let inv = finalized_invoice(&server);
    let id = inv["id"].as_str().unwrap().to_owned();
    let notes_path = format!("/v1/invoices/{id}/credit_notes");

    // A quarter of the transfer: 250 × 0.01 = 2.50; tax 2.50 × 0.19 = 0.475 → 0.48 (half to
    // even); the unpaid invoice owes 2.98 less.
    let first = expect(
        post(
            &server,
            &notes_path,
            &json!({"reason": "product_unsatisfactory", "memo": "outage on the 3rd",
                    "lines": [{"line": 2, "quantity": "250"}]}),
        ),
        201,
        "by quantity",
    );
    assert_eq!(first["status"], "issued", "{first}");
    assert_eq!(number_of(&first), 1);
    assert_eq!(
        (
            first["lines"][0]["invoice_line"].as_u64(),
            first["lines"][0]["quantity"].as_str(),
            first["lines"][0]["amount_minor"].as_i64(),
            first["subtotal_minor"].as_i64(),
            first["tax_minor"].as_i64(),
            first["total_minor"].as_i64(),
        ),
        (
            Some(2),
            Some("250"),
            Some(250),
            Some(250),
            Some(48),
            Some(298)
        ),
        "{first}"
    );
    assert_eq!(
        first["settlement"],
        json!({"amount_due_minor": 298, "balance_minor": 0, "refund_minor": 0})
    );
    assert_eq!(first["invoice_number"], inv["number"]);
    assert_eq!(first["memo"], "outage on the 3rd");

    // Caps and typed errors; none of them stores anything.
    for (body, status, code) in [
        (
            json!({"reason": "other", "lines": [{"line": 2, "quantity": "751"}]}),
            422,
            "credit_exceeds_creditable",
        ),
        (
            json!({"reason": "other", "amount_minor": 5_651}),
            422,
            "credit_exceeds_creditable",
        ),
        (
            json!({"reason": "other", "lines": [{"line": 9}]}),
            422,
            "invalid_credit_request",
        ),
        (
            json!({"reason": "other", "full": true, "amount_minor": 5}),
            400,
            "invalid_credit_request",
        ),
        (json!({"reason": "other"}), 400, "invalid_credit_request"),
        (
            json!({"reason": "other", "lines": [{"line": 1, "quantity": "1", "amount_minor": 5}]}),
            400,
            "invalid_credit_request",
        ),
        (
            json!({"reason": "other", "lines": [{"line": 2, "quantity": "x"}]}),
            400,
            "invalid_decimal",
        ),
        (
            json!({"reason": "bogus", "full": true}),
            400,
            "invalid_reason",
        ),
        (
            json!({"reason": "other", "full": true, "extra": 1}),
            400,
            "invalid_body",
        ),
    ] {
        assert_error(&post(&server, &notes_path, &body), status, code);
    }
    assert_error(
        &post(
            &server,
            "/v1/invoices/inv_nope/credit_notes",
            &json!({"reason": "other", "full": true}),
        ),
        404,
        "invoice_not_found",
    );
    let (_, reader) = server.create_key(&["read"]);
    assert_error(
        &call(
            &server,
            "POST",
            &notes_path,
            &reader,
            Some(&json!({"reason": "other", "full": true})),
        ),
        403,
        "insufficient_scope",
    );

    // Four eyes: a pending note reserves its amount until rejected, and takes no number.
    let pending = expect(
        post(
            &server,
            &notes_path,
            &json!({"reason": "goodwill", "amount_minor": 1_000, "require_approval": true}),
        ),
        201,
        "pending",
    );
    assert_eq!(
        (pending["status"].as_str(), pending["number"].as_str()),
        (Some("pending_approval"), None),
        "{pending}"
    );
    assert!(pending["settlement"].is_null());
    // 5900 − 250 − 1000 pending = 4650 left.
    assert_error(
        &post(
            &server,
            &notes_path,
            &json!({"reason": "other", "amount_minor": 4_651}),
        ),
        422,
        "credit_exceeds_creditable",
    );
    let listed = expect(
        server.get("/v1/credit_notes?status=pending_approval", ADMIN_KEY),
        200,
        "pending list",
    );
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pending["id"].as_str().unwrap()]);
    let pid = pending["id"].as_str().unwrap();
    let rejected = expect(
        post(
            &server,
            &format!("/v1/credit_notes/{pid}/reject"),
            &json!({}),
        ),
        200,
        "reject",
    );
    assert_eq!(rejected["status"], "rejected");
    assert!(rejected["number"].is_null() && rejected["rejected_at"].is_string());
    assert_error(
        &post(
            &server,
            &format!("/v1/credit_notes/{pid}/approve"),
            &json!({}),
        ),
        409,
        "credit_note_not_pending",
    );

    // Approved by someone else: numbered next (the rejected one took no number), checked again,
    // settled. Running subtotal 1250: tax 12.50 × 0.19 = 2.375 → 2.38; this note 2.38 − 0.48.
    let (approver_id, approver) = server.create_key(&["admin"]);
    let second = expect(
        post(
            &server,
            &notes_path,
            &json!({"reason": "goodwill", "amount_minor": 1_000, "require_approval": true}),
        ),
        201,
        "second pending",
    );
    let sid = second["id"].as_str().unwrap();
    let approved = expect(
        call(
            &server,
            "POST",
            &format!("/v1/credit_notes/{sid}/approve"),
            &approver,
            None,
        ),
        200,
        "approve",
    );
    assert_eq!(approved["status"], "issued", "{approved}");
    assert_eq!(number_of(&approved), 2);
    assert_eq!(approved["decided_by"], approver_id.as_str());
    assert_eq!(
        (
            approved["tax_minor"].as_i64(),
            approved["total_minor"].as_i64()
        ),
        (Some(190), Some(1_190))
    );
    assert_eq!(
        approved["settlement"],
        json!({"amount_due_minor": 1_190, "balance_minor": 0, "refund_minor": 0})
    );

    // An invoice with credit notes is not voided (it would give back twice).
    assert_error(
        &post(&server, &format!("/v1/invoices/{id}/void"), &json!({})),
        409,
        "conflict",
    );

    // Paid, then credited in full: what is left (subtotal 4650, tax 11.21 − 2.38 = 8.83) goes to
    // the customer's credit balance; all notes together equal the invoice's total exactly.
    expect(
        post(&server, &format!("/v1/invoices/{id}/pay"), &json!({})),
        200,
        "pay",
    );
    let full = expect(
        post(
            &server,
            &notes_path,
            &json!({"reason": "order_change", "full": true}),
        ),
        201,
        "full",
    );
    assert_eq!(
        (
            full["subtotal_minor"].as_i64(),
            full["tax_minor"].as_i64(),
            full["total_minor"].as_i64()
        ),
        (Some(4_650), Some(883), Some(5_533)),
        "{full}"
    );
    assert_eq!(
        full["settlement"],
        json!({"amount_due_minor": 0, "balance_minor": 5_533, "refund_minor": 0})
    );
    assert_eq!(number_of(&full), 3);
    let grant = full["credit_grant"].as_str().unwrap();
    let balance = expect(
        server.get("/v1/customers/acme/credit_balance", ADMIN_KEY),
        200,
        "balance",
    );
    assert_eq!(balance["available_minor"], 5_533, "{balance}");
    assert_eq!(balance["grants"][0]["grant"], grant, "{balance}");
    assert_error(
        &post(
            &server,
            &notes_path,
            &json!({"reason": "other", "full": true}),
        ),
        409,
        "nothing_to_credit",
    );
    let of_invoice = expect(
        server.get(&format!("/v1/credit_notes?invoice={id}"), ADMIN_KEY),
        200,
        "by invoice",
    );
    let issued_total: i64 = of_invoice["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["status"] == "issued")
        .map(|n| n["total_minor"].as_i64().unwrap())
        .sum();
    assert_eq!(issued_total, 7_021);
    // The finance export holds every note, issued ones totalling the invoice.
    let today = Timestamp::now().in_tz("UTC").unwrap().date();
    let csv = server.get_raw(
        &format!(
            "/v1/exports/credit_notes?from={}&to={}&format=csv",
            today.checked_sub(1.day()).unwrap(),
            today.checked_add(1.day()).unwrap()
        ),
        ADMIN_KEY,
    );
    assert_eq!(csv.status, 200, "{}", csv.text);
    let mut rows = csv.text.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{}", csv.text);
    let exported: i64 = rows
        .iter()
        .filter(|r| r[col("status")] == "issued")
        .map(|r| r[col("total_minor")].parse::<i64>().unwrap())
        .sum();
    assert_eq!(exported, 7_021, "{}", csv.text);
    assert!(
        rows.iter()
            .any(|r| r[col("status")] == "rejected" && r[col("number")].is_empty()),
        "{}",
        csv.text
    );
    assert_error(
        &server.get("/v1/credit_notes?status=open", ADMIN_KEY),
        400,
        "invalid_status",
    );
    assert_error(
        &server.get("/v1/credit_notes/cn_nope", ADMIN_KEY),
        404,
        "credit_note_not_found",
    );

    // Everything survives a restart, unchanged.
    let before = expect(
        server.get(&format!("/v1/credit_notes?invoice={id}"), ADMIN_KEY),
        200,
        "before restart",
    );
    server.stop();
    let server = Server::start(&data, SERVE_FLAGS);
    let after = expect(
        server.get(&format!("/v1/credit_notes?invoice={id}"), ADMIN_KEY),
        200,
        "after restart",
    );
    assert_eq!(before, after);
    let one = expect(
        server.get(
            &format!("/v1/credit_notes/{}", first["id"].as_str().unwrap()),
            &reader,
        ),
        200,
        "read key reads",
    );
    assert_eq!(one, first);
}

/// Runs the invoice cycle (no period: every ended period, and re-prices drafts).
fn run_all(server: &Server) -> Value {
    expect(post(server, "/v1/invoices/run", &json!({})), 200, "run")
}

fn late_notes(server: &Server, invoice: &str) -> Vec<Value> {
    expect(
        server.get(&format!("/v1/credit_notes?invoice={invoice}"), ADMIN_KEY),
        200,
        "notes",
    )["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["origin"] == "late_correction")
        .cloned()
        .collect()
}

/// The transfer adjustment lines of the drafts that correct the finalized period.
fn transfer_adjustments(server: &Server, corrected: &str) -> Vec<Value> {
    let list = expect(
        server.get("/v1/invoices?customer=acme&status=draft", ADMIN_KEY),
        200,
        "drafts",
    );
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["lines"].as_array().unwrap().clone())
        .filter(|l| {
            l["kind"] == "adjustment"
                && l["price"] == "transfer"
                && l["period"]["start"] == corrected
        })
        .collect()
}

#[test]
fn a_late_correction_that_lowers_a_finalized_period_becomes_a_credit_note_by_policy() {
    let dir = TestDir::new("credit-notes-late");
    // A grace period long enough that last month's invoice stays a draft the runs re-price
    // (late corrections of the finalized month before surface on it).
    let server = Server::start(
        &dir.data("data"),
        &[
            "--acceptance-window",
            "120d",
            "--invoice-every",
            "0s",
            "--invoice-grace",
            "743h",
            "--credit-auto-issue-below",
            "300",
        ],
    );
    let inv = finalized_invoice(&server);
    let id = inv["id"].as_str().unwrap().to_owned();
    let period_start = inv["period"]["start"].as_str().unwrap().to_owned();
    let m2_start = Timestamp::from_str(&period_start).unwrap().as_millisecond();
    // Goodwill first: 6.00 of the 10.00 transfer line.
    expect(
        post(
            &server,
            &format!("/v1/invoices/{id}/credit_notes"),
            &json!({"reason": "goodwill", "lines": [{"line": 2, "amount_minor": 600}]}),
        ),
        201,
        "goodwill",
    );

    // A correction event lowers the finalized period by 300 bytes = 3.00 (+ 0.57 tax = 3.57,
    // above the 3.00 limit): a note pending approval, not a negative line on the next invoice.
    assert_counts(
        &server.ingest(&[event(
            "fix-1",
            "acme",
            m2_start + 5 * DAY_MS,
            json!({"bytes": -300}),
        )]),
        1,
        0,
        0,
        0,
    );
    let report = run_all(&server);
    assert_eq!(report["credit_notes"], 1, "{report}");
    let notes = late_notes(&server, &id);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    let first = &notes[0];
    assert_eq!(
        (
            first["status"].as_str(),
            first["reason"].as_str(),
            first["created_by"].as_str(),
            first["total_minor"].as_i64(),
            first["lines"][0]["invoice_line"].as_u64(),
            first["lines"][0]["amount_minor"].as_i64(),
            first["lines"][0]["quantity"].as_str()
        ),
        (
            Some("pending_approval"),
            Some("late_correction"),
            Some("invoice_run"),
            Some(357),
            Some(2),
            Some(300),
            Some("300")
        ),
        "{first}"
    );
    assert!(
        transfer_adjustments(&server, &period_start).is_empty(),
        "given back by the note, not by a line"
    );
    // Running again asks nothing twice.
    let again = run_all(&server);
    assert_eq!(again["credit_notes"], 0, "{again}");
    assert_eq!(late_notes(&server, &id).len(), 1);

    // 200 bytes less again: the line has 10.00 − 6.00 − 3.00 = 1.00 left to give back, so a
    // note of 1.00 (+0.19, issued: below the limit) and a −1.00 adjustment for the rest.
    assert_counts(
        &server.ingest(&[event(
            "fix-2",
            "acme",
            m2_start + 6 * DAY_MS,
            json!({"bytes": -200}),
        )]),
        1,
        0,
        0,
        0,
    );
    let report = run_all(&server);
    assert_eq!(report["credit_notes"], 1, "{report}");
    let notes = late_notes(&server, &id);
    let second = notes
        .iter()
        .find(|n| n["id"] != first["id"])
        .unwrap()
        .clone();
    assert_eq!(
        (
            second["status"].as_str(),
            second["total_minor"].as_i64(),
            second["lines"][0]["amount_minor"].as_i64()
        ),
        (Some("issued"), Some(119), Some(100)),
        "{second}"
    );
    let adj = transfer_adjustments(&server, &period_start);
    assert_eq!(adj.len(), 1, "{adj:#?}");
    assert_eq!(adj[0]["amount_minor"], -100, "{adj:#?}");
    let again = run_all(&server);
    assert_eq!(again["credit_notes"], 0, "{again}");

    // The pending note is approved: issued and numbered, lowering what the invoice owes.
    let approved = expect(
        post(
            &server,
            &format!("/v1/credit_notes/{}/approve", first["id"].as_str().unwrap()),
            &json!({}),
        ),
        200,
        "approve",
    );
    assert_eq!(approved["status"], "issued");
    assert_eq!(approved["settlement"]["amount_due_minor"], 357);
}
