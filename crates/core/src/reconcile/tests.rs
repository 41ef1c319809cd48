//! Tests for the reconciliation comparisons: each finds its difference with the exact amount
//! and class, and agreeing numbers report nothing.

#![allow(clippy::unwrap_used)]

use rust_decimal::Decimal;

use super::*;
use crate::billing::CustomerKey;
use crate::ledger::{self, Grant};
use crate::money::Currency;
use crate::time::UnixMs;

#[test]
fn usage_differences_are_exact_and_unexplained() {
    let cell = |rollup: i64, recomputed: i64| UsageCell {
        customer: "acme".into(),
        invoice: "inv_1".into(),
        meter: "bytes-out".into(),
        span: "2026-11-01T00:00:00Z/2026-12-01T00:00:00Z".into(),
        rollup: Decimal::new(rollup, 1),
        recomputed: Decimal::new(recomputed, 1),
    };
    assert!(compare_usage(&[cell(15, 15)]).is_empty());
    let d = compare_usage(&[cell(15, 10)]);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].class, d[0].delta.as_str(), d[0].right.value.as_str()),
        (Class::Unexplained, "0.5", "1.5")
    );
}

#[test]
fn pricing_differences_are_late_events_only_when_events_came_after_finalization() {
    let line = |late| PricedLine {
        customer: "acme".into(),
        invoice: "inv_1".into(),
        line: "egress @ 2026-11-01T00:00:00Z".into(),
        expected_minor: 900,
        billed_minor: 1_000,
        late_events: late,
    };
    let d = compare_pricing(&[line(true)]);
    assert_eq!(
        (d[0].class, d[0].delta.as_str()),
        (Class::LateEventAfterFinalization, "-100")
    );
    assert_eq!(compare_pricing(&[line(false)])[0].class, Class::Unexplained);
    let mut same = line(false);
    same.expected_minor = 1_000;
    assert!(compare_pricing(&[same]).is_empty());
}

#[test]
fn provider_differences_are_classified() {
    let t = TollgateInvoice {
        customer: "acme".into(),
        invoice: "inv_1".into(),
        status: "finalized".into(),
        amount_due_minor: 4_900,
        refunded_minor: 0,
    };
    let p = ProviderInvoice {
        object: "stripe in_1".into(),
        status: "open".into(),
        amount_due_minor: 4_900,
        amount_paid_minor: 0,
        amount_refunded_minor: 0,
    };
    assert!(compare_provider(&t, Some(&p)).is_empty());
    assert_eq!(
        compare_provider(&t, None)[0].class,
        Class::MissingProviderRecord
    );
    // Paid there, not here: a lost webhook.
    let paid = ProviderInvoice {
        status: "paid".into(),
        amount_paid_minor: 4_900,
        ..p.clone()
    };
    let d = compare_provider(&t, Some(&paid));
    assert_eq!((d.len(), d[0].class), (1, Class::StatusDrift));
    // Changed there: a different amount, and more paid than asked.
    let changed = ProviderInvoice {
        status: "paid".into(),
        amount_due_minor: 5_000,
        amount_paid_minor: 9_800,
        ..p.clone()
    };
    let t_paid = TollgateInvoice {
        status: "paid".into(),
        ..t.clone()
    };
    let d = compare_provider(&t_paid, Some(&changed));
    let fields: Vec<(&str, Class, &str)> = d
        .iter()
        .map(|d| (d.field.as_str(), d.class, d.delta.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("amount_due_minor", Class::AmountDrift, "100"),
            ("amount_paid_minor", Class::AmountDrift, "4900"),
        ]
    );
    let refunded = ProviderInvoice {
        amount_refunded_minor: 500,
        ..paid
    };
    let d = compare_provider(&t_paid, Some(&refunded));
    assert_eq!(
        (d[0].field.as_str(), d[0].delta.as_str()),
        ("refunded_minor", "500")
    );
}

#[test]
fn ledger_differences_find_unbalanced_transactions_and_wrong_draws() {
    let grant = Grant {
        id: "grant_1".into(),
        customer: CustomerKey::parse("acme").unwrap(),
        amount_minor: 1_000,
        currency: Currency::parse("EUR").unwrap(),
        priority: 0,
        granted_ms: UnixMs(0),
        expires_ms: None,
        reason: "test".into(),
    };
    let mut entries = ledger::grant_entries(&grant, "txn_g").unwrap();
    entries.extend(ledger::draw(
        std::slice::from_ref(&grant),
        &entries.clone(),
        grant.currency,
        400,
        UnixMs(10),
        "txn_d",
        "inv_1",
    ));
    let invoices = vec![("inv_1".to_owned(), 400, false)];
    let input = LedgerInput {
        customer: "acme",
        grants: std::slice::from_ref(&grant),
        entries: &entries,
        invoices: &invoices,
    };
    let (d, checked) = compare_ledger(&input);
    assert!(d.is_empty(), "{d:#?}");
    assert_eq!(checked, 2 + 2 + 1);
    // One entry altered: its transaction no longer balances, the grant's balance moves and
    // the invoice's draw no longer matches its credits.
    let mut altered = entries.clone();
    let i = altered
        .iter()
        .position(|e| e.account == Account::InvoiceSettlement)
        .unwrap();
    altered[i].amount_minor = 300;
    let input = LedgerInput {
        entries: &altered,
        ..input
    };
    let (d, _) = compare_ledger(&input);
    let fields: Vec<(&str, &str)> = d
        .iter()
        .map(|d| (d.field.as_str(), d.delta.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("transaction_sum_minor", "-100"),
            ("credits_applied_minor", "-100")
        ]
    );
    assert!(d.iter().all(|d| d.class == Class::Unexplained));
}

#[test]
fn the_report_counts_and_writes_csv() {
    let mut report = Report {
        id: "recon_1".into(),
        period: "2026-11".into(),
        started_at: "2026-12-01T00:00:00Z".into(),
        finished_at: "2026-12-01T00:00:01Z".into(),
        checked: BTreeMap::new(),
        differences: compare_pricing(&[PricedLine {
            customer: "acme, inc".into(),
            invoice: "inv_1".into(),
            line: "egress".into(),
            expected_minor: 1,
            billed_minor: 2,
            late_events: false,
        }]),
        provider_fetched: false,
    };
    report.sort();
    assert_eq!(report.unexplained(), 1);
    assert_eq!(report.counts()[&(Kind::Pricing, Class::Unexplained)], 1);
    let csv = report.to_csv();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("period,kind,class,"));
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("2026-11,pricing,unexplained,\"acme, inc\",inv_1,")
    );
}
