//! Black-box tests of refunds: against localstripe for payments collected by Stripe (a refund
//! runs there exactly once, even when Tollgate is killed between Stripe's answer and its
//! record; a refund not yet sent can be canceled and is then never sent), and out of band for
//! invoices paid by hand (an operator records the outcome). Every amount is checked against
//! what was collected: refunds never exceed it, whatever their origin (by hand, or a credit
//! note that asks for its money back).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "support/stripe_harness.rs"]
mod stripe_harness;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use stripe_harness::*;

/// Waits until refund `id` leaves `pending`; answers it.
fn wait_refund_final(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = expect(
            call(server, "GET", &format!("/v1/refunds/{id}"), None),
            200,
            "refund",
        );
        if r["status"] != "pending" {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "refund still pending: {r}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn refunds_at_stripe(ls: &LocalStripe, charge: &str) -> Vec<Value> {
    ls.list(&format!("/v1/refunds?charge={charge}"))
}

fn refund(server: &Server, inv: &str, body: &Value) -> Reply {
    call(
        server,
        "POST",
        &format!("/v1/invoices/{inv}/refunds"),
        Some(body),
    )
}

/// A customer whose last month's invoice (49.00 EUR) is pushed to localstripe and paid there
/// by a card charge: (Tollgate invoice id, Stripe charge id).
fn paid_at_stripe(server: &Server, ls: &LocalStripe, key: &str) -> (String, String) {
    customer_with_plan(server, key);
    let invoice = finalize_invoice(server, key);
    let inv = invoice["id"].as_str().unwrap().to_owned();
    assert_eq!(invoice["amount_due_minor"], 4900, "{invoice}");
    wait_calls_done(server, 2);
    let si = objects(server, "invoice")[0]["provider_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let charge = ls.card_charge(4900);
    webhook_paid(server, "evt_paid_refunds", &inv, &si, 4900, &charge);
    let got = expect(
        call(server, "GET", &format!("/v1/invoices/{inv}"), None),
        200,
        "invoice",
    );
    assert_eq!(got["status"], "paid");
    (inv, charge)
}

#[test]
fn refunds_of_a_stripe_payment_run_there_once_and_never_exceed_what_was_paid() {
    let dir = TestDir::new("refunds-stripe");
    let ls = LocalStripe::start(&dir);
    let server = start(&dir.data("data"), &ls, &[]);
    let (inv, charge) = paid_at_stripe(&server, &ls, "acme");

    let over = refund(
        &server,
        &inv,
        &json!({"amount_minor": 4901, "reason": "requested_by_customer"}),
    );
    assert_error(&over, 422, "refund_exceeds_collected");
    let first = expect(
        refund(
            &server,
            &inv,
            &json!({"amount_minor": 1000, "reason": "requested_by_customer", "memo": "slow week"}),
        ),
        201,
        "refund",
    );
    assert_eq!(
        (
            first["status"].as_str(),
            first["method"].as_str(),
            first["provider"].as_str()
        ),
        (Some("pending"), Some("provider"), Some("stripe"))
    );
    let id = first["id"].as_str().unwrap().to_owned();
    let done = wait_refund_final(&server, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    let at_stripe = refunds_at_stripe(&ls, &charge);
    assert_eq!(at_stripe.len(), 1, "{at_stripe:#?}");
    assert_eq!(at_stripe[0]["amount"], 1000);
    assert_eq!(at_stripe[0]["metadata"]["tollgate_refund"], id.as_str());
    assert_eq!(done["provider_refund_id"], at_stripe[0]["id"]);
    // The request carried the key derived from the refund, and was sent once.
    let posts: Vec<Value> = ls
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/v1/refunds")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(
        posts[0]["idempotency_key"],
        format!("tollgate-create_refund-{id}-v1-refund").as_str()
    );

    // A credit note for the whole invoice asks for its money back: the 39.00 still collected
    // is refunded, the 10.00 refunded before becomes credit balance.
    let note = expect(
        call(
            &server,
            "POST",
            &format!("/v1/invoices/{inv}/credit_notes"),
            Some(&json!({"full": true, "reason": "product_unsatisfactory", "refund": true})),
        ),
        201,
        "credit note",
    );
    assert_eq!(note["total_minor"], 4900, "{note}");
    assert_eq!(
        note["settlement"],
        json!({"amount_due_minor": 0, "balance_minor": 1000, "refund_minor": 3900})
    );
    let by_note = note["refund"].as_str().unwrap().to_owned();
    let done = wait_refund_final(&server, &by_note);
    assert_eq!(
        (
            done["status"].as_str(),
            done["amount_minor"].as_i64(),
            done["origin"].as_str(),
            done["origin_ref"].as_str()
        ),
        (
            Some("succeeded"),
            Some(3900),
            Some("credit_note"),
            note["id"].as_str()
        )
    );
    let total: i64 = refunds_at_stripe(&ls, &charge)
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 4900, "all that was paid, and no more");

    // The customer's portal shows the note, where its money went, and both refunds.
    let session = expect(
        call(
            &server,
            "POST",
            "/v1/customers/acme/portal_sessions",
            Some(&json!({})),
        ),
        201,
        "portal session",
    );
    let page = server
        .get_raw(
            &format!(
                "/portal/{}/invoices/{inv}",
                session["token"].as_str().unwrap()
            ),
            ADMIN_KEY,
        )
        .text;
    let number = note["number"].as_str().unwrap();
    assert!(page.contains(number), "{page}");
    assert!(page.contains("product unsatisfactory"), "{page}");
    assert!(page.contains("39.00 EUR refunded"), "{page}");
    assert!(
        page.contains("10.00 EUR added to your credit balance"),
        "{page}"
    );
    assert_eq!(page.matches("status succeeded").count(), 2, "{page}");

    // Nothing is left: any further refund is refused.
    let more = refund(&server, &inv, &json!({"reason": "duplicate"}));
    assert_error(&more, 409, "nothing_to_refund");
    let list = expect(
        call(&server, "GET", &format!("/v1/refunds?invoice={inv}"), None),
        200,
        "list",
    );
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    // A provider refund's outcome is the provider's to tell; a final one never changes.
    assert_error(
        &call(&server, "POST", &format!("/v1/refunds/{id}/succeed"), None),
        409,
        "refund_executed_by_provider",
    );
    assert_error(
        &call(&server, "POST", &format!("/v1/refunds/{id}/cancel"), None),
        409,
        "refund_not_pending",
    );
}

#[test]
fn a_crash_between_stripes_answer_and_its_record_refunds_once() {
    let dir = TestDir::new("refunds-crash");
    let ls = LocalStripe::start(&dir);
    let data = dir.data("data");
    let mut server = start(&data, &ls, &["--fault-exit-after-provider-step", "refund"]);
    let (inv, charge) = paid_at_stripe(&server, &ls, "acme");
    post_tolerant(
        &server,
        &format!("/v1/invoices/{inv}/refunds"),
        &json!({"amount_minor": 2500, "reason": "duplicate"}),
    );
    wait_fault_exit(&server);
    server.stop();
    assert_eq!(refunds_at_stripe(&ls, &charge).len(), 1, "Stripe refunded");

    // Restart: the refund's intent is recorded without an outcome, so the worker looks it up
    // at Stripe by its metadata before sending anything, and finds it.
    let server = start(&data, &ls, &[]);
    let list = expect(
        call(&server, "GET", &format!("/v1/refunds?invoice={inv}"), None),
        200,
        "list",
    );
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    let done = wait_refund_final(&server, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    let at_stripe = refunds_at_stripe(&ls, &charge);
    assert_eq!(at_stripe.len(), 1, "no second refund: {at_stripe:#?}");
    assert_eq!(at_stripe[0]["amount"], 2500);
    assert_eq!(done["provider_refund_id"], at_stripe[0]["id"]);
    let posts = ls
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/v1/refunds")
        .count();
    assert_eq!(posts, 1, "found again, not sent again");
    // What is left to refund counts the recovered refund.
    let over = refund(
        &server,
        &inv,
        &json!({"amount_minor": 2401, "reason": "other"}),
    );
    assert_error(&over, 422, "refund_exceeds_collected");
}

#[test]
fn a_refund_not_yet_sent_can_be_canceled_and_is_never_sent() {
    let dir = TestDir::new("refunds-cancel");
    let ls = LocalStripe::start(&dir);
    let data = dir.data("data");
    let mut server = start(&data, &ls, &[]);
    let (inv, charge) = paid_at_stripe(&server, &ls, "acme");
    server.stop();

    // Without Stripe configured nothing sends the refund: it waits in the outbox.
    let mut server = Server::start(&data, &[]);
    let pending = expect(
        call(
            &server,
            "POST",
            &format!("/v1/invoices/{inv}/refunds"),
            Some(&json!({"amount_minor": 700, "reason": "requested_by_customer"})),
        ),
        201,
        "refund",
    );
    let id = pending["id"].as_str().unwrap().to_owned();
    // Provider refunds are settled by the provider, not by hand.
    assert_error(
        &call(&server, "POST", &format!("/v1/refunds/{id}/fail"), None),
        409,
        "refund_executed_by_provider",
    );
    let canceled = expect(
        call(&server, "POST", &format!("/v1/refunds/{id}/cancel"), None),
        200,
        "cancel",
    );
    assert_eq!(canceled["status"], "canceled");
    // A canceled refund releases its amount: all 49.00 can be refunded again.
    let again = expect(
        call(
            &server,
            "POST",
            &format!("/v1/invoices/{inv}/refunds"),
            Some(&json!({"reason": "requested_by_customer"})),
        ),
        201,
        "refund of all",
    );
    assert_eq!(again["amount_minor"], 4900);
    server.stop();

    // With Stripe back, a refund whose request fails (every attempt answered 500 before
    // Stripe acted) stays pending, its call failed; it can no longer be canceled, since its
    // request was recorded as sent. Retried by hand once Stripe answers again, it runs once.
    ls.fault(500, 1_000, "before", "/v1/refunds");
    let server = start(&data, &ls, &["--stripe-attempts", "3"]);
    let id2 = again["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed_call = loop {
        let failed = expect(
            call(
                &server,
                "GET",
                &format!("/v1/providers/stripe/calls?object={id2}&status=failed"),
                None,
            ),
            200,
            "calls",
        );
        if let Some(c) = failed["data"].as_array().unwrap().first() {
            break c["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        expect(
            call(&server, "GET", &format!("/v1/refunds/{id2}"), None),
            200,
            "refund"
        )["status"],
        "pending",
        "out of attempts is not failed: the refund may have reached Stripe"
    );
    assert_error(
        &call(&server, "POST", &format!("/v1/refunds/{id2}/cancel"), None),
        409,
        "refund_in_flight",
    );
    assert_error(
        &call(
            &server,
            "POST",
            "/v1/providers/stripe/calls/pc_missing/retry",
            None,
        ),
        404,
        "provider_call_not_found",
    );
    ls.clear_faults();
    let retried = call(
        &server,
        "POST",
        &format!("/v1/providers/stripe/calls/{failed_call}/retry"),
        None,
    );
    assert_eq!(retried.status, 202, "{}", retried.body);
    let done = wait_refund_final(&server, id2);
    assert_eq!(done["status"], "succeeded", "{done}");
    let at_stripe = refunds_at_stripe(&ls, &charge);
    assert_eq!(
        at_stripe.len(),
        1,
        "only the second refund ran: {at_stripe:#?}"
    );
    assert_eq!(at_stripe[0]["metadata"]["tollgate_refund"], id2);
    let first = expect(
        call(&server, "GET", &format!("/v1/refunds/{id}"), None),
        200,
        "first",
    );
    assert_eq!(first["status"], "canceled");
}

#[test]
fn refunds_of_an_invoice_paid_by_hand_are_recorded_by_an_operator() {
    let dir = TestDir::new("refunds-manual");
    let server = Server::start(
        &dir.data("data"),
        &["--invoice-grace", "0s", "--invoice-every", "0s"],
    );
    customer_with_plan(&server, "acme");
    let invoice = finalize_invoice(&server, "acme");
    let inv = invoice["id"].as_str().unwrap().to_owned();
    let body = json!({"reason": "requested_by_customer"});
    assert_error(&refund(&server, &inv, &body), 409, "nothing_to_refund");
    expect(
        call(&server, "POST", &format!("/v1/invoices/{inv}/pay"), None),
        200,
        "pay",
    );
    assert_error(
        &refund(&server, &inv, &json!({"reason": "because"})),
        400,
        "invalid_reason",
    );
    assert_error(
        &refund(&server, &inv, &json!({"reason": "credit_note"})),
        400,
        "invalid_reason",
    );
    assert_error(
        &refund(
            &server,
            &inv,
            &json!({"reason": "other", "amount_minor": 0}),
        ),
        400,
        "invalid_refund_amount",
    );
    assert_error(
        &refund(&server, "inv_missing", &body),
        404,
        "invoice_not_found",
    );

    let part = expect(
        refund(
            &server,
            &inv,
            &json!({"reason": "other", "amount_minor": 2000}),
        ),
        201,
        "refund",
    );
    assert_eq!(
        (part["method"].as_str(), part["provider"].as_str()),
        (Some("out_of_band"), None)
    );
    let id = part["id"].as_str().unwrap();
    let ok = expect(
        call(&server, "POST", &format!("/v1/refunds/{id}/succeed"), None),
        200,
        "succeed",
    );
    assert_eq!(ok["status"], "succeeded");
    assert!(ok["done_at"].is_string());
    assert_error(
        &call(&server, "POST", &format!("/v1/refunds/{id}/fail"), None),
        409,
        "refund_not_pending",
    );

    // The rest (29.00) by default; it fails, and releases its amount.
    let rest = expect(refund(&server, &inv, &body), 201, "rest");
    assert_eq!(rest["amount_minor"], 2900);
    assert_error(&refund(&server, &inv, &body), 409, "nothing_to_refund");
    let rid = rest["id"].as_str().unwrap();
    let failed = expect(
        call(
            &server,
            "POST",
            &format!("/v1/refunds/{rid}/fail"),
            Some(&json!({"failure": "bank account closed"})),
        ),
        200,
        "fail",
    );
    assert_eq!(
        (failed["status"].as_str(), failed["failure"].as_str()),
        (Some("failed"), Some("bank account closed"))
    );
    let again = expect(refund(&server, &inv, &body), 201, "again");
    assert_eq!(again["amount_minor"], 2900);

    let list = expect(
        call(
            &server,
            "GET",
            "/v1/refunds?customer=acme&status=failed",
            None,
        ),
        200,
        "list",
    );
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_error(
        &call(&server, "GET", "/v1/refunds?status=done", None),
        400,
        "invalid_status",
    );
    assert_error(
        &call(&server, "GET", "/v1/refunds/re_tg_missing", None),
        404,
        "refund_not_found",
    );
}
