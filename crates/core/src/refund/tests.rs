//! Tests for refunds: the status machine, amounts against what is left, and the property that
//! whatever is asked, changed or reported, refunds never exceed what was collected.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

#[test]
fn only_a_pending_refund_changes_and_each_final_status_stays() {
    for change in [
        RefundChange::Succeed,
        RefundChange::Fail,
        RefundChange::Cancel,
    ] {
        let after = RefundStatus::Pending.apply(change).unwrap();
        assert!(after.is_final());
        for again in [
            RefundChange::Succeed,
            RefundChange::Fail,
            RefundChange::Cancel,
        ] {
            let err = after.apply(again).unwrap_err();
            assert_eq!(err.code(), "refund_not_pending");
        }
    }
    assert_eq!(
        RefundStatus::Pending.apply(RefundChange::Cancel),
        Ok(RefundStatus::Canceled)
    );
}

#[test]
fn statuses_round_trip_and_provider_statuses_map() {
    for s in RefundStatus::ALL {
        assert_eq!(RefundStatus::parse(s.as_str()), Some(s));
    }
    assert_eq!(RefundStatus::parse("done"), None);
    assert_eq!(
        RefundStatus::from_provider("requires_action"),
        Some(RefundStatus::Pending)
    );
    assert_eq!(
        RefundStatus::from_provider("succeeded"),
        Some(RefundStatus::Succeeded)
    );
    assert_eq!(RefundStatus::from_provider("weird"), None);
}

#[test]
fn refundable_takes_the_larger_of_own_and_provider_refunds() {
    assert_eq!(refundable(10_000, 3_000, 0), 7_000);
    // Refunded in the provider's dashboard: counts although Tollgate did not make it.
    assert_eq!(refundable(10_000, 3_000, 5_000), 5_000);
    assert_eq!(refundable(10_000, 12_000, 0), 0);
    assert_eq!(refundable(0, 0, 0), 0);
}

#[test]
fn amounts_are_checked_against_what_is_left() {
    assert_eq!(check_amount(None, 700), Ok(700));
    assert_eq!(check_amount(Some(300), 700), Ok(300));
    assert_eq!(
        check_amount(Some(701), 700).unwrap_err().code(),
        "refund_exceeds_collected"
    );
    assert_eq!(
        check_amount(Some(0), 700).unwrap_err().code(),
        "invalid_refund_amount"
    );
    assert_eq!(
        check_amount(Some(-5), 700).unwrap_err().code(),
        "invalid_refund_amount"
    );
    assert_eq!(
        check_amount(Some(1), 0).unwrap_err().code(),
        "nothing_to_refund"
    );
    assert!(memo(&"x".repeat(REFUND_MEMO_BYTES_MAX + 1)).is_err());
}

#[derive(Clone, Debug)]
enum Op {
    /// Ask for a refund (`None`: all that is left).
    Ask(Option<i64>),
    /// Change the n-th refund (modulo how many there are).
    Change(usize, RefundChange),
    /// The provider reports a running refunded total (only ever grows, never above collected).
    ProviderRefunded(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::option::of(-100i64..15_000).prop_map(Op::Ask),
        (
            0usize..32,
            prop_oneof![
                Just(RefundChange::Succeed),
                Just(RefundChange::Fail),
                Just(RefundChange::Cancel)
            ]
        )
            .prop_map(|(i, c)| Op::Change(i, c)),
        (0i64..12_000).prop_map(Op::ProviderRefunded),
    ]
}

proptest! {
    /// Whatever is asked, changed or reported in whatever order, the refunds that reserve money
    /// (pending and succeeded) never exceed what was collected, and the succeeded ones never
    /// do either.
    #[test]
    fn refunds_never_exceed_what_was_collected(
        collected in 0i64..12_000,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut refunds: Vec<(i64, RefundStatus)> = Vec::new();
        let mut provider_refunded = 0i64;
        for op in ops {
            match op {
                Op::Ask(amount) => {
                    let left = refundable(collected, reserved(refunds.iter().copied()), provider_refunded);
                    match check_amount(amount, left) {
                        Ok(a) => {
                            prop_assert!(a > 0 && a <= left);
                            refunds.push((a, RefundStatus::Pending));
                        }
                        Err(RefundError::NothingToRefund) => prop_assert_eq!(left, 0),
                        Err(RefundError::ExceedsRefundable { asked, left: l }) => {
                            prop_assert!(asked > l);
                        }
                        Err(RefundError::InvalidAmount { amount }) => prop_assert!(amount <= 0),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Change(i, change) => {
                    if !refunds.is_empty() {
                        let n = i % refunds.len();
                        if let Ok(next) = refunds[n].1.apply(change) {
                            refunds[n].1 = next;
                        }
                    }
                }
                Op::ProviderRefunded(total) => {
                    // The provider's total grows and stays within the charge.
                    provider_refunded = provider_refunded.max(total.min(collected));
                }
            }
            let reserved_now = reserved(refunds.iter().copied());
            prop_assert!(reserved_now <= collected, "reserved {reserved_now} > collected {collected}");
            let succeeded: i64 = refunds
                .iter()
                .filter(|(_, s)| *s == RefundStatus::Succeeded)
                .map(|(a, _)| a)
                .sum();
            prop_assert!(succeeded <= collected);
        }
    }
}
