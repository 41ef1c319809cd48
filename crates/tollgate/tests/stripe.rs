//! Black-box tests of the Stripe integration against localstripe (a stateful fake Stripe
//! server from PyPI, run by `tests/support/localstripe_shim.py` on 127.0.0.1 with a random
//! port): customers synced with Tollgate's key in metadata, finalized invoices pushed with
//! their lines and finalized there, ids recorded; retries of 429/5xx; a crash between a call
//! and its record creating no second Stripe object; and Stripe webhooks verified (signatures
//! made and checked by the official `stripe` Python package) and applied once. The harness is
//! `support/stripe_harness.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "support/stripe_harness.rs"]
mod stripe_harness;

use common::*;
use serde_json::{Value, json};
use stripe_harness::*;

#[test]
fn customers_and_finalized_invoices_are_pushed_and_finalized_in_stripe() {
    let dir = TestDir::new("stripe-push");
    let ls = LocalStripe::start(&dir);
    let server = start(&dir.data("data"), &ls, &[]);
    customer_with_plan(&server, "acme");
    wait_calls_done(&server, 1);
    let customers = stripe_customers_of(&ls, "acme");
    assert_eq!(customers.len(), 1, "{customers:#?}");
    let cus = customers[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(customers[0]["name"], "Acme");
    assert_eq!(customers[0]["email"], "billing@acme.test");

    let invoice = finalize_invoice(&server, "acme");
    let inv = invoice["id"].as_str().unwrap();
    wait_calls_done(&server, 2);
    let stripe_invoices = ls.list(&format!("/v1/invoices?customer={cus}"));
    assert_eq!(stripe_invoices.len(), 1, "{stripe_invoices:#?}");
    let si = &stripe_invoices[0];
    assert_eq!(si["metadata"]["tollgate_invoice"], inv);
    assert_eq!(si["status"], "open", "finalized in Stripe: {si}");
    assert_eq!(si["amount_due"], 4900);
    assert_eq!(si["currency"], "eur");
    let lines = ls.get(&format!(
        "/v1/invoices/{}/lines",
        si["id"].as_str().unwrap()
    ));
    let lines = lines["data"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["amount"], 4900);
    assert_eq!(lines[0]["description"], invoice["lines"][0]["description"]);

    // The ids are recorded.
    let recorded = objects(&server, "invoice");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["tollgate_key"], inv);
    assert_eq!(recorded[0]["provider_id"], si["id"]);
    assert_eq!(
        recorded[0]["customer_provider_id"].as_str(),
        Some(cus.as_str())
    );
    assert_eq!(recorded[0]["payment_state"], "open");
    assert_eq!(recorded[0]["amount_due_minor"], 4900);
    let recorded = objects(&server, "customer");
    assert_eq!(recorded[0]["provider_id"].as_str(), Some(cus.as_str()));

    // A change of the customer updates the same Stripe customer.
    expect(
        call(
            &server,
            "PATCH",
            "/v1/customers/acme",
            Some(&json!({"name": "Acme GmbH"})),
        ),
        200,
        "patch",
    );
    wait_calls_done(&server, 3);
    let customers = stripe_customers_of(&ls, "acme");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0]["id"].as_str(), Some(cus.as_str()));
    assert_eq!(customers[0]["name"], "Acme GmbH");

    // Every POST carried an idempotency key derived from the object, version and step.
    let posts: Vec<Value> = ls
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert!(!posts.is_empty());
    for p in &posts {
        let key = p["idempotency_key"].as_str().unwrap_or("");
        assert!(key.starts_with("tollgate-"), "{p}");
    }
    let finalize_key = format!("tollgate-push_invoice-{inv}-v1-finalize");
    assert!(
        posts
            .iter()
            .any(|p| p["idempotency_key"] == finalize_key.as_str()),
        "{posts:#?}"
    );
}

#[test]
fn failed_answers_are_retried_with_backoff_and_a_lost_answer_makes_no_second_object() {
    let dir = TestDir::new("stripe-retry");
    let ls = LocalStripe::start(&dir);
    let server = start(&dir.data("data"), &ls, &[]);
    // The customer is created, but the answer is lost as a 503; then a 429 refuses the first
    // invoice item outright.
    ls.fault(503, 1, "after", "/v1/customers");
    ls.fault(429, 1, "before", "/v1/invoiceitems");
    customer_with_plan(&server, "acme");
    let done = wait_calls_done(&server, 1);
    let log = done[0]["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(log[0]["http_status"], 503);
    assert!(
        log[0]["error"].as_str().unwrap().contains("503"),
        "{log:#?}"
    );
    assert!(log[1]["error"].is_null(), "{log:#?}");
    assert_eq!(
        stripe_customers_of(&ls, "acme").len(),
        1,
        "the retry found the customer the lost answer had created"
    );

    let invoice = finalize_invoice(&server, "acme");
    let all = wait_calls_done(&server, 2);
    let push = all.iter().find(|c| c["kind"] == "push_invoice").unwrap();
    let log = push["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(log[0]["http_status"], 429);
    let cus = objects(&server, "customer")[0]["provider_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let si = ls.list(&format!("/v1/invoices?customer={cus}"));
    assert_eq!(si.len(), 1);
    assert_eq!(si[0]["metadata"]["tollgate_invoice"], invoice["id"]);
    assert_eq!(si[0]["amount_due"], 4900);
}

#[test]
fn a_crash_between_a_call_and_its_record_creates_no_second_stripe_object() {
    let dir = TestDir::new("stripe-crash");
    let ls = LocalStripe::start(&dir);
    let data = dir.data("data");

    // Crash right after Stripe created the customer, before Tollgate recorded it.
    let mut server = start(
        &data,
        &ls,
        &["--fault-exit-after-provider-step", "create-customer-acme"],
    );
    plan(&server);
    post_tolerant(&server, "/v1/customers", &customer_body("acme"));
    wait_fault_exit(&server);
    server.stop();
    assert_eq!(stripe_customers_of(&ls, "acme").len(), 1);

    // Restart: the call runs again, finds the customer, records it.
    let mut server = start(&data, &ls, &["--fault-exit-after-provider-step", "invoice"]);
    wait_calls_done(&server, 1);
    let customers = stripe_customers_of(&ls, "acme");
    assert_eq!(customers.len(), 1, "no second customer: {customers:#?}");
    let cus = customers[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        objects(&server, "customer")[0]["provider_id"].as_str(),
        Some(cus.as_str())
    );

    // Crash right after Stripe created the invoice (its item was recorded before).
    subscribe(&server, "acme");
    post_tolerant(&server, "/v1/invoices/run", &json!({}));
    wait_fault_exit(&server);
    server.stop();
    assert_eq!(ls.list(&format!("/v1/invoices?customer={cus}")).len(), 1);

    let server = start(&data, &ls, &[]);
    wait_calls_done(&server, 2);
    let list = expect(
        call(&server, "GET", "/v1/invoices?customer=acme", None),
        200,
        "invoices",
    );
    let inv = list["data"][0]["id"].as_str().unwrap().to_owned();
    let si = ls.list(&format!("/v1/invoices?customer={cus}"));
    assert_eq!(si.len(), 1, "no second invoice: {si:#?}");
    assert_eq!(si[0]["metadata"]["tollgate_invoice"], inv.as_str());
    assert_eq!(si[0]["status"], "open", "finalized after the restart");
    let lines = ls.get(&format!(
        "/v1/invoices/{}/lines",
        si[0]["id"].as_str().unwrap()
    ));
    assert_eq!(
        lines["data"].as_array().unwrap().len(),
        1,
        "no line twice: {lines}"
    );
    assert_eq!(objects(&server, "invoice")[0]["provider_id"], si[0]["id"]);
    assert!(
        ls.list(&format!("/v1/invoiceitems?customer={cus}"))
            .is_empty(),
        "no stray pending item"
    );
}

// ---- webhooks ----

#[test]
fn stripe_webhooks_are_verified_and_applied_once() {
    let dir = TestDir::new("stripe-webhooks");
    let ls = LocalStripe::start(&dir);
    let server = start(&dir.data("data"), &ls, &[]);
    customer_with_plan(&server, "acme");
    let invoice = finalize_invoice(&server, "acme");
    let inv = invoice["id"].as_str().unwrap().to_owned();
    wait_calls_done(&server, 2);
    let si = objects(&server, "invoice")[0]["provider_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let meta = json!({"tollgate_invoice": inv});

    // Tollgate's signature scheme is Stripe's: a header made by Tollgate's core verifies
    // with stripe.Webhook.construct_event.
    let probe = stripe_event("evt_probe", "customer.created", json!({"id": "cus_x"}));
    let ours =
        tollgate_core::webhook::signature_header(&[WEBHOOK_SECRET], now_s(), probe.as_bytes());
    assert_eq!(stripe_tool("verify", &ours, &probe), "ok evt_probe");

    // A failed payment attempt: recorded, the invoice stays finalized.
    let failed = stripe_event(
        "evt_failed_1",
        "invoice.payment_failed",
        json!({"id": si, "object": "invoice", "attempt_count": 1, "amount_paid": 0, "metadata": meta}),
    );
    let r = post_webhook(&server, &failed, Some(&stripe_sign(&failed, now_s())));
    let body = expect(r, 200, "payment_failed");
    assert_eq!(
        (body["outcome"].as_str(), body["duplicate"].as_bool()),
        (Some("payment_failed"), Some(false))
    );
    let rec = &objects(&server, "invoice")[0];
    assert_eq!(
        (
            rec["payment_state"].as_str(),
            rec["failed_attempts"].as_u64()
        ),
        (Some("failed"), Some(1))
    );
    let got = expect(
        call(&server, "GET", &format!("/v1/invoices/{inv}"), None),
        200,
        "invoice",
    );
    assert_eq!(got["status"], "finalized");

    // Paid: the invoice is paid, by the same transition as POST /v1/invoices/{id}/pay.
    let paid = stripe_event(
        "evt_paid_1",
        "invoice.paid",
        json!({"id": si, "object": "invoice", "amount_paid": 4900, "charge": "ch_test_1",
               "status": "paid", "metadata": meta}),
    );
    let sig = stripe_sign(&paid, now_s());
    assert_eq!(stripe_tool("verify", &sig, &paid), "ok evt_paid_1");
    let body = expect(post_webhook(&server, &paid, Some(&sig)), 200, "paid");
    assert_eq!(body["outcome"], "invoice_paid");
    assert_eq!(body["invoice"], inv.as_str());
    let got = expect(
        call(&server, "GET", &format!("/v1/invoices/{inv}"), None),
        200,
        "invoice",
    );
    assert_eq!(got["status"], "paid");
    let paid_at = got["paid_at"].clone();
    let rec = objects(&server, "invoice")[0].clone();
    assert_eq!(rec["payment_state"], "paid");
    assert_eq!(rec["amount_paid_minor"], 4900);
    assert_eq!(rec["charge_id"], "ch_test_1");

    // The same event again (as Stripe retries: freshly signed) changes nothing.
    let body = expect(
        post_webhook(&server, &paid, Some(&stripe_sign(&paid, now_s()))),
        200,
        "paid again",
    );
    assert_eq!(
        (body["duplicate"].as_bool(), body["outcome"].as_str()),
        (Some(true), Some("invoice_paid"))
    );
    let again = expect(
        call(&server, "GET", &format!("/v1/invoices/{inv}"), None),
        200,
        "invoice",
    );
    assert_eq!(again["paid_at"], paid_at);
    assert_eq!(objects(&server, "invoice")[0], rec);

    // Refunds and disputes are recorded against the charge.
    let refunded = stripe_event(
        "evt_refund_1",
        "charge.refunded",
        json!({"id": "ch_test_1", "object": "charge", "invoice": si, "amount": 4900, "amount_refunded": 1000}),
    );
    let body = expect(
        post_webhook(&server, &refunded, Some(&stripe_sign(&refunded, now_s()))),
        200,
        "refunded",
    );
    assert_eq!(body["outcome"], "refund_recorded");
    let rec = objects(&server, "invoice")[0].clone();
    assert_eq!(
        (
            rec["payment_state"].as_str(),
            rec["amount_refunded_minor"].as_i64()
        ),
        (Some("partially_refunded"), Some(1000))
    );
    let dispute = stripe_event(
        "evt_dispute_1",
        "charge.dispute.created",
        json!({"id": "dp_1", "object": "dispute", "charge": "ch_test_1", "amount": 3900, "reason": "fraudulent"}),
    );
    let body = expect(
        post_webhook(&server, &dispute, Some(&stripe_sign(&dispute, now_s()))),
        200,
        "dispute",
    );
    assert_eq!(body["outcome"], "dispute_recorded");
    let rec = objects(&server, "invoice")[0].clone();
    assert_eq!(
        (
            rec["payment_state"].as_str(),
            rec["amount_disputed_minor"].as_i64()
        ),
        (Some("disputed"), Some(3900))
    );

    // Types Tollgate does not act on are acknowledged and ignored.
    let other = stripe_event(
        "evt_other",
        "customer.updated",
        json!({"id": "cus_x", "object": "customer"}),
    );
    let body = expect(
        post_webhook(&server, &other, Some(&stripe_sign(&other, now_s()))),
        200,
        "other",
    );
    assert_eq!(body["outcome"], "ignored");

    // Refusals, each agreeing with Stripe's own library.
    let late = stripe_event(
        "evt_paid_2",
        "invoice.paid",
        json!({"id": si, "amount_paid": 1}),
    );
    let tampered_sig = stripe_sign(&paid, now_s());
    assert!(stripe_tool("verify", &tampered_sig, &late).starts_with("SignatureVerificationError"));
    assert_error(
        &post_webhook(&server, &late, Some(&tampered_sig)),
        400,
        "stripe_signature_invalid",
    );
    let old_sig = stripe_sign(&late, now_s() - 600);
    assert!(stripe_tool("verify", &old_sig, &late).starts_with("SignatureVerificationError"));
    assert_error(
        &post_webhook(&server, &late, Some(&old_sig)),
        400,
        "stripe_signature_expired",
    );
    let other_secret =
        tollgate_core::webhook::signature_header(&["whsec_other"], now_s(), late.as_bytes());
    assert_error(
        &post_webhook(&server, &late, Some(&other_secret)),
        400,
        "stripe_signature_invalid",
    );
    assert_error(
        &post_webhook(&server, &late, None),
        400,
        "stripe_signature_missing",
    );
    assert_error(
        &post_webhook(&server, &late, Some("garbage")),
        400,
        "stripe_signature_invalid",
    );
    // None of them changed anything.
    assert_eq!(objects(&server, "invoice")[0], rec);

    // Without a signing secret the route is off.
    drop(server);
    let plain = Server::start(&dir.data("plain"), &[]);
    assert_error(
        &post_webhook(&plain, &paid, Some(&stripe_sign(&paid, now_s()))),
        404,
        "provider_not_configured",
    );
}
