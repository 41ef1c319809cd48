//! Tests for credit notes: full, by line (quantity, amount, the rest), by amount; tax on the
//! running subtotal; every cap (line amount, line quantity, invoice subtotal); statuses and the
//! approval policy; settlement; and properties: any sequence of notes never credits more than
//! the invoice charged, and a final `Full` note brings the total credited to exactly the
//! invoice's total.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use proptest::prelude::*;

use super::*;
use crate::billing::{CustomerKey, Period, PlanKey, SubscriptionId};
use crate::invoice::{Line, LineKind};
use crate::money::Currency;
use crate::pricing::{Charge, PriceKey, Proration};
use crate::time::UnixMs;

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn line(number: u32, quantity: &str, amount_minor: i64) -> Line {
    let period = Period::new(UnixMs(0), UnixMs(86_400_000));
    Line {
        number,
        kind: if amount_minor < 0 {
            LineKind::Adjustment
        } else {
            LineKind::Charge
        },
        price_key: PriceKey::parse(&format!("p{number}")).unwrap(),
        description: format!("Line {number}"),
        model: "per_unit".into(),
        meter: None,
        plan: PlanKey::parse("pro").unwrap(),
        plan_version: 1,
        period,
        segment: period,
        proration: Proration::FULL,
        quantity: d(quantity),
        charge: Charge {
            quantity: d(quantity),
            free_units: Decimal::ZERO,
            billable_quantity: d(quantity),
            tiers: Vec::new(),
            minimum_true_up: Decimal::ZERO,
            maximum_reduction: Decimal::ZERO,
            amount: Decimal::new(amount_minor, 2),
        },
        previously_billed_minor: None,
        amount_minor,
    }
}

/// An invoice in USD with these (quantity, amount) lines and a tax rate.
fn invoice(lines: &[(&str, i64)], tax_rate: &str) -> InvoiceDraft {
    let currency = Currency::parse("USD").unwrap();
    let lines: Vec<Line> = lines
        .iter()
        .enumerate()
        .map(|(i, (q, a))| line(u32::try_from(i + 1).unwrap(), q, *a))
        .collect();
    let subtotal_minor: i64 = lines.iter().map(|l| l.amount_minor).sum();
    let tax_rate = d(tax_rate);
    let tax_minor = round_to_minor(
        currency
            .to_major(subtotal_minor)
            .checked_mul(tax_rate)
            .unwrap(),
        currency,
    )
    .unwrap();
    InvoiceDraft {
        customer: CustomerKey::parse("acme").unwrap(),
        subscription: SubscriptionId("sub_0000000000000001".into()),
        currency,
        period: Period::new(UnixMs(0), UnixMs(86_400_000)),
        lines,
        subtotal_minor,
        credit_asks: Vec::new(),
        tax_rate,
        tax_minor,
        total_minor: subtotal_minor + tax_minor,
    }
}

fn issue(
    inv: &InvoiceDraft,
    notes: &mut Vec<CreditDraft>,
    request: CreditRequest,
) -> Result<CreditDraft, CreditNoteError> {
    let earlier = Credited::of(notes.iter().map(|n| (n, CreditStatus::Issued))).unwrap();
    let note = draft(inv, InvoiceStatus::Finalized, &earlier, &request)?;
    notes.push(note.clone());
    Ok(note)
}

fn lines(req: &[(u32, LineCredit)]) -> CreditRequest {
    CreditRequest::Lines(
        req.iter()
            .map(|(line, credit)| LineRequest {
                line: *line,
                credit: credit.clone(),
            })
            .collect(),
    )
}

#[test]
fn a_full_note_gives_back_the_whole_invoice_with_its_tax() {
    let inv = invoice(&[("10", 1_000), ("3", 2_999)], "0.2");
    let note = draft(
        &inv,
        InvoiceStatus::Paid,
        &Credited::default(),
        &CreditRequest::Full,
    )
    .unwrap();
    assert_eq!(note.subtotal_minor, 3_999);
    assert_eq!(note.tax_minor, inv.tax_minor);
    assert_eq!(note.total_minor, inv.total_minor);
    assert_eq!(note.lines.len(), 2);
    assert_eq!(note.lines[0].quantity, Some(d("10")));
    let mut notes = vec![note];
    assert_eq!(
        issue(&inv, &mut notes, CreditRequest::Full),
        Err(CreditNoteError::NothingToCredit)
    );
}

#[test]
fn quantity_credits_use_the_average_unit_price_and_the_last_part_takes_the_rest() {
    // 3 units for 10.00: a third is 3.333… → 3.33; three thirds sum to exactly 10.00.
    let inv = invoice(&[("3", 1_000)], "0");
    let mut notes = Vec::new();
    for _ in 0..2 {
        let n = issue(
            &inv,
            &mut notes,
            lines(&[(1, LineCredit::Quantity(d("1")))]),
        )
        .unwrap();
        assert_eq!(n.total_minor, 333);
    }
    let last = issue(
        &inv,
        &mut notes,
        lines(&[(1, LineCredit::Quantity(d("1")))]),
    )
    .unwrap();
    assert_eq!(last.total_minor, 334);
    let err = issue(
        &inv,
        &mut notes,
        lines(&[(1, LineCredit::Quantity(d("1")))]),
    )
    .unwrap_err();
    assert_eq!(err.code(), "credit_exceeds_creditable");
}

#[test]
fn tax_follows_the_running_subtotal_so_parts_sum_to_the_invoice_tax() {
    // 7% of 0.05 is 0.0035 → 0.00 alone; credited in five parts of 0.01 the tax still sums to
    // the invoice's tax on 0.05 (0.00), and on 1.00 in thirds to exactly 0.07.
    let inv = invoice(&[("1", 100)], "0.07");
    assert_eq!(inv.tax_minor, 7);
    let mut notes = Vec::new();
    for amount in [33, 33, 34] {
        issue(&inv, &mut notes, CreditRequest::AmountMinor(amount)).unwrap();
    }
    let tax: i64 = notes.iter().map(|n| n.tax_minor).sum();
    let total: i64 = notes.iter().map(|n| n.total_minor).sum();
    assert_eq!(tax, 7);
    assert_eq!(total, inv.total_minor);
}

#[test]
fn every_cap_is_enforced_with_its_own_error() {
    let inv = invoice(&[("10", 1_000), ("1", 500)], "0");
    let mut notes = Vec::new();
    let cases: Vec<(CreditRequest, &str)> = vec![
        (
            lines(&[(1, LineCredit::AmountMinor(1_001))]),
            "credit_exceeds_creditable",
        ),
        (
            lines(&[(1, LineCredit::Quantity(d("10.5")))]),
            "credit_exceeds_creditable",
        ),
        (
            lines(&[(3, LineCredit::Remaining)]),
            "invalid_credit_request",
        ),
        (
            lines(&[(1, LineCredit::Remaining), (1, LineCredit::Remaining)]),
            "invalid_credit_request",
        ),
        (lines(&[]), "invalid_credit_request"),
        (
            lines(&[(1, LineCredit::AmountMinor(0))]),
            "invalid_credit_request",
        ),
        (
            lines(&[(1, LineCredit::Quantity(d("-1")))]),
            "invalid_credit_request",
        ),
        (CreditRequest::AmountMinor(0), "invalid_credit_request"),
        (
            CreditRequest::AmountMinor(1_501),
            "credit_exceeds_creditable",
        ),
    ];
    for (request, code) in cases {
        let err = issue(&inv, &mut notes, request.clone()).unwrap_err();
        assert_eq!(err.code(), code, "{request:?}: {err}");
    }
    assert!(notes.is_empty(), "refused requests leave nothing behind");
    // An amount credit leaves less subtotal than the lines' rests: `Full` trims the last line.
    issue(&inv, &mut notes, CreditRequest::AmountMinor(700)).unwrap();
    let full = issue(&inv, &mut notes, CreditRequest::Full).unwrap();
    assert_eq!(full.subtotal_minor, 800);
    assert_eq!(full.lines.len(), 1, "{full:?}");
    assert_eq!(full.lines[0].invoice_line, Some(1));
    assert_eq!(
        full.lines[0].quantity, None,
        "a trimmed line is not its whole quantity"
    );
}

#[test]
fn negative_adjustment_lines_cannot_be_credited_and_lower_what_can() {
    let inv = invoice(&[("5", 1_000), ("-2", -400)], "0.1");
    let err = issue(&inv, &mut Vec::new(), lines(&[(2, LineCredit::Remaining)])).unwrap_err();
    assert_eq!(err.code(), "credit_exceeds_creditable");
    let full = issue(&inv, &mut Vec::new(), CreditRequest::Full).unwrap();
    assert_eq!(full.subtotal_minor, 600);
    assert_eq!(full.total_minor, inv.total_minor);
}

#[test]
fn only_finalized_and_paid_invoices_are_credited() {
    let inv = invoice(&[("1", 100)], "0");
    for status in [InvoiceStatus::Draft, InvoiceStatus::Void] {
        let err = draft(&inv, status, &Credited::default(), &CreditRequest::Full).unwrap_err();
        assert_eq!(err.code(), "invoice_not_creditable");
    }
}

#[test]
fn pending_notes_reserve_and_rejected_ones_release() {
    let inv = invoice(&[("1", 1_000)], "0");
    let pending = draft(
        &inv,
        InvoiceStatus::Finalized,
        &Credited::default(),
        &CreditRequest::AmountMinor(800),
    )
    .unwrap();
    let with_pending = Credited::of([(&pending, CreditStatus::PendingApproval)]).unwrap();
    let err = draft(
        &inv,
        InvoiceStatus::Finalized,
        &with_pending,
        &CreditRequest::AmountMinor(300),
    )
    .unwrap_err();
    assert_eq!(err.code(), "credit_exceeds_creditable");
    let rejected = Credited::of([(&pending, CreditStatus::Rejected)]).unwrap();
    assert!(
        draft(
            &inv,
            InvoiceStatus::Finalized,
            &rejected,
            &CreditRequest::AmountMinor(1_000)
        )
        .is_ok()
    );
}

#[test]
fn statuses_move_only_from_pending() {
    use CreditChange::{Approve, Reject};
    use CreditStatus::{Issued, PendingApproval, Rejected};
    assert_eq!(PendingApproval.apply(Approve), Ok(Issued));
    assert_eq!(PendingApproval.apply(Reject), Ok(Rejected));
    for from in [Issued, Rejected] {
        for change in [Approve, Reject] {
            assert_eq!(
                from.apply(change).unwrap_err().code(),
                "credit_note_not_pending"
            );
        }
    }
    for s in [PendingApproval, Issued, Rejected] {
        assert_eq!(CreditStatus::parse(s.as_str()), Some(s));
    }
}

#[test]
fn policy_issues_small_automatic_notes_and_queues_large_ones() {
    let policy = CreditPolicy {
        auto_issue_below_minor: 5_000,
    };
    assert_eq!(
        initial_status(Origin::LateCorrection, 4_999, policy, false),
        CreditStatus::Issued
    );
    assert_eq!(
        initial_status(Origin::LateCorrection, 5_000, policy, false),
        CreditStatus::PendingApproval
    );
    assert_eq!(
        initial_status(Origin::Manual, 1_000_000, policy, false),
        CreditStatus::Issued
    );
    for origin in [Origin::Manual, Origin::LateCorrection] {
        assert_eq!(
            initial_status(origin, 1, policy, true),
            CreditStatus::PendingApproval
        );
    }
}

#[test]
fn settlement_lowers_what_is_owed_first_then_the_balance() {
    let split = |due, balance, refund| Settlement {
        amount_due_minor: due,
        balance_minor: balance,
        refund_minor: refund,
    };
    assert_eq!(
        settle(InvoiceStatus::Finalized, 700, 1_000),
        split(700, 300, 0)
    );
    assert_eq!(
        settle(InvoiceStatus::Finalized, 5_000, 1_000),
        split(1_000, 0, 0)
    );
    assert_eq!(
        settle(InvoiceStatus::Paid, 5_000, 1_000),
        split(0, 1_000, 0)
    );
    // Asked for its money back: the balance part is refunded as far as the payment allows.
    assert_eq!(
        settle(InvoiceStatus::Paid, 5_000, 1_000).refund_up_to(600),
        split(0, 400, 600)
    );
    assert_eq!(
        settle(InvoiceStatus::Paid, 5_000, 1_000).refund_up_to(9_000),
        split(0, 0, 1_000)
    );
    assert_eq!(
        settle(InvoiceStatus::Finalized, 700, 1_000).refund_up_to(9_000),
        split(700, 0, 300)
    );
}

fn request_strategy() -> impl Strategy<Value = CreditRequest> {
    prop_oneof![
        Just(CreditRequest::Full),
        (1_i64..3_000).prop_map(CreditRequest::AmountMinor),
        prop::collection::vec(
            (
                1_u32..5,
                prop_oneof![
                    Just(LineCredit::Remaining),
                    (1_i64..2_000).prop_map(LineCredit::AmountMinor),
                    (1_i64..40).prop_map(|q| LineCredit::Quantity(Decimal::new(q, 1))),
                ]
            ),
            1..4
        )
        .prop_map(|v| {
            CreditRequest::Lines(
                v.into_iter()
                    .map(|(line, credit)| LineRequest { line, credit })
                    .collect(),
            )
        }),
    ]
}

proptest! {
    #[test]
    fn notes_never_exceed_the_invoice_and_full_reaches_it_exactly(
        amounts in prop::collection::vec((1_i64..20, -500_i64..3_000), 1..5),
        rate in prop_oneof![Just("0"), Just("0.07"), Just("0.2"), Just("0.195")],
        requests in prop::collection::vec(request_strategy(), 0..8),
    ) {
        let spec: Vec<(String, i64)> =
            amounts.iter().map(|(q, a)| (q.to_string(), *a)).collect();
        let spec_ref: Vec<(&str, i64)> = spec.iter().map(|(q, a)| (q.as_str(), *a)).collect();
        let inv = invoice(&spec_ref, rate);
        let mut notes = Vec::new();
        for r in requests {
            let _ = issue(&inv, &mut notes, r);
            let credited = Credited::of(notes.iter().map(|n| (n, CreditStatus::Issued))).unwrap();
            prop_assert!(credited.subtotal_minor <= inv.subtotal_minor.max(0));
            prop_assert!(credited.total_minor() <= inv.total_minor.max(0));
            for l in &inv.lines {
                let (q, a) = credited.lines.get(&l.number).copied().unwrap_or_default();
                prop_assert!(a <= l.amount_minor.max(0));
                prop_assert!(q <= l.quantity.max(Decimal::ZERO));
            }
        }
        let _ = issue(&inv, &mut notes, CreditRequest::Full);
        let credited = Credited::of(notes.iter().map(|n| (n, CreditStatus::Issued))).unwrap();
        if inv.subtotal_minor > 0 {
            prop_assert_eq!(credited.subtotal_minor, inv.subtotal_minor);
            prop_assert_eq!(credited.total_minor(), inv.total_minor);
        } else {
            prop_assert!(notes.is_empty());
        }
    }
}
