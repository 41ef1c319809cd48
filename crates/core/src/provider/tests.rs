#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use serde_json::json;

#[test]
fn idempotency_keys_depend_only_on_object_version_and_step() {
    let a = idempotency_key(CallKind::PushInvoice, "inv_1", 1, "item-0");
    assert_eq!(a, "tollgate-push_invoice-inv_1-v1-item-0");
    assert_eq!(
        a,
        idempotency_key(CallKind::PushInvoice, "inv_1", 1, "item-0")
    );
    assert_ne!(
        a,
        idempotency_key(CallKind::PushInvoice, "inv_1", 1, "item-1")
    );
    assert_ne!(
        idempotency_key(CallKind::SyncCustomer, "acme", 5, "update"),
        idempotency_key(CallKind::SyncCustomer, "acme", 6, "update")
    );
}

#[test]
fn retryable_answers() {
    for s in [None, Some(409), Some(429), Some(500), Some(503)] {
        assert!(retryable(s), "{s:?}");
    }
    for s in [Some(400), Some(401), Some(404), Some(402)] {
        assert!(!retryable(s), "{s:?}");
    }
}

#[test]
fn kinds_and_states_round_trip() {
    for k in CallKind::ALL {
        assert_eq!(CallKind::parse(k.as_str()), Some(k));
    }
    assert_eq!(
        PaymentState::parse("partially_refunded"),
        Some(PaymentState::PartiallyRefunded)
    );
    assert_eq!(PaymentState::parse("nope"), None);
}

fn event(kind: &str, object: serde_json::Value) -> StripeEvent {
    let body = json!({"id": "evt_1", "type": kind, "data": {"object": object}});
    StripeEvent::parse(body.to_string().as_bytes()).unwrap()
}

#[test]
fn parses_the_four_types_and_ignores_others() {
    let paid = event(
        "invoice.paid",
        json!({"id": "in_1", "amount_paid": 1200, "charge": "ch_1"}),
    );
    assert_eq!(
        paid.event,
        ProviderEvent::InvoicePaid {
            invoice: "in_1".into(),
            amount_paid_minor: 1200,
            charge: Some("ch_1".into())
        }
    );
    let failed = event(
        "invoice.payment_failed",
        json!({"id": "in_1", "attempt_count": 2}),
    );
    assert!(matches!(
        failed.event,
        ProviderEvent::InvoicePaymentFailed {
            attempt_count: Some(2),
            ..
        }
    ));
    let refunded = event(
        "charge.refunded",
        json!({"id": "ch_1", "invoice": "in_1", "amount_refunded": 200}),
    );
    assert!(matches!(
        refunded.event,
        ProviderEvent::ChargeRefunded {
            amount_refunded_minor: 200,
            ..
        }
    ));
    let dispute = event(
        "charge.dispute.created",
        json!({"id": "dp_1", "charge": "ch_1", "amount": 1200}),
    );
    assert!(matches!(
        dispute.event,
        ProviderEvent::DisputeCreated {
            amount_minor: 1200,
            ..
        }
    ));
    assert_eq!(
        event("customer.created", json!({"id": "cus_1"})).event,
        ProviderEvent::Ignored
    );
}

#[test]
fn a_known_type_without_its_fields_is_invalid() {
    let body = json!({"id": "evt_1", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}});
    assert_eq!(
        StripeEvent::parse(body.to_string().as_bytes())
            .unwrap_err()
            .code(),
        "provider_event_invalid"
    );
    assert!(StripeEvent::parse(b"not json").is_err());
}

#[test]
fn events_move_the_payment_record_and_repeat_harmlessly() {
    let start = PaymentRecord {
        amount_due_minor: 1200,
        ..PaymentRecord::default()
    };
    let failed = ProviderEvent::InvoicePaymentFailed {
        invoice: "in_1".into(),
        attempt_count: Some(1),
    };
    let r = start.apply(&failed);
    assert_eq!((r.state, r.failed_attempts), (PaymentState::Failed, 1));
    let paid = ProviderEvent::InvoicePaid {
        invoice: "in_1".into(),
        amount_paid_minor: 1200,
        charge: Some("ch_1".into()),
    };
    let r = r.apply(&paid);
    assert_eq!((r.state, r.amount_paid_minor), (PaymentState::Paid, 1200));
    assert_eq!(r.apply(&paid), r, "the same event twice changes nothing");
    let part = ProviderEvent::ChargeRefunded {
        charge: "ch_1".into(),
        invoice: None,
        amount_refunded_minor: 200,
    };
    let r = r.apply(&part);
    assert_eq!(
        (r.state, r.amount_refunded_minor),
        (PaymentState::PartiallyRefunded, 200)
    );
    assert_eq!(r.apply(&part), r);
    let all = ProviderEvent::ChargeRefunded {
        charge: "ch_1".into(),
        invoice: None,
        amount_refunded_minor: 1200,
    };
    assert_eq!(r.apply(&all).state, PaymentState::Refunded);
    let dispute = ProviderEvent::DisputeCreated {
        charge: "ch_1".into(),
        amount_minor: 1200,
    };
    let d = r.apply(&dispute);
    assert_eq!(
        (d.state, d.amount_disputed_minor),
        (PaymentState::Disputed, 1200)
    );
}
