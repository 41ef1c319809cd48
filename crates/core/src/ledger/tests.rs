//! Tests for the credit ledger: grant validation, draw-down order (priority, earliest expiry,
//! never-expiring last, oldest, id), draws limited to usable grants of the currency, reversal,
//! expiry, balances at an instant, and a property over random sequences of grants, draws,
//! reversals and expiries: transactions balance, no grant goes negative, and the balance is the
//! sum of the usable grants' `customer_credit` entries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

// ---- helpers ----

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn grant(id: &str, amount_minor: i64, priority: u32, granted: i64, expires: Option<i64>) -> Grant {
    Grant {
        id: id.into(),
        customer: CustomerKey::parse("acme").unwrap(),
        amount_minor,
        currency: usd(),
        priority,
        granted_ms: UnixMs(granted),
        expires_ms: expires.map(UnixMs),
        reason: "promotion".into(),
    }
}

/// The grant entries of all `grants`, one transaction each.
fn granted(grants: &[Grant]) -> Vec<Entry> {
    grants
        .iter()
        .flat_map(|g| grant_entries(g, &format!("txn_{}", g.id)).unwrap())
        .collect()
}

/// `customer_credit` of one grant, from all entries.
fn remaining_of(entries: &[Entry], grant: &str) -> i64 {
    entries
        .iter()
        .filter(|e| e.grant == grant && e.account == Account::CustomerCredit)
        .map(|e| e.amount_minor)
        .sum()
}

/// (grant, amount) moved into `invoice_settlement` by `entries`, in order.
fn settled(entries: &[Entry]) -> Vec<(String, i64)> {
    entries
        .iter()
        .filter(|e| e.account == Account::InvoiceSettlement)
        .map(|e| (e.grant.clone(), e.amount_minor))
        .collect()
}

fn pairs(rows: &[(&str, i64)]) -> Vec<(String, i64)> {
    rows.iter().map(|(g, a)| ((*g).to_owned(), *a)).collect()
}

// ---- grants ----

#[test]
fn grant_entries_move_credit_from_granted_to_the_customer() {
    let g = grant("grant_1", 5000, 0, 100, Some(200));
    let entries = grant_entries(&g, "txn_1").unwrap();
    assert_eq!(entries.len(), 2);
    let by_account: Vec<(Account, i64)> = entries
        .iter()
        .map(|e| (e.account, e.amount_minor))
        .collect();
    assert_eq!(
        by_account,
        vec![
            (Account::CreditGranted, -5000),
            (Account::CustomerCredit, 5000)
        ]
    );
    for e in &entries {
        assert_eq!(e.txn, "txn_1");
        assert_eq!(e.kind, TxnKind::Grant);
        assert_eq!(e.grant, "grant_1");
        assert_eq!(e.at, UnixMs(100));
        assert_eq!(e.invoice, None);
    }
    assert_balanced(&entries);
}

#[test]
fn grant_entries_validation() {
    let field = |g: Grant| match grant_entries(&g, "txn") {
        Err(BillingError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(field(grant("g", 0, 0, 100, None)), "amount_minor");
    assert_eq!(field(grant("g", -1, 0, 100, None)), "amount_minor");
    assert_eq!(field(grant("g", 10, 0, 100, Some(100))), "expires_at");
    assert_eq!(field(grant("g", 10, 0, 100, Some(99))), "expires_at");
    assert!(grant_entries(&grant("g", 1, 0, 100, Some(101)), "txn").is_ok());
    assert!(grant_entries(&grant("g", i64::MAX, 0, 100, None), "txn").is_ok());
}

// ---- draws ----

/// Six grants of 10 whose draw-down order is e, f, d, c, b, a.
fn six_grants() -> Vec<Grant> {
    vec![
        // A higher priority number comes last whatever its expiry.
        grant("a", 10, 1, 0, Some(150)),
        // Never expiring, granted later than c.
        grant("b", 10, 0, 10, None),
        // Never expiring, oldest.
        grant("c", 10, 0, 5, None),
        // Expires after e and f.
        grant("d", 10, 0, 20, Some(1000)),
        // Earliest expiry; ties with f on expiry and grant time, so the id decides.
        grant("f", 10, 0, 30, Some(500)),
        grant("e", 10, 0, 30, Some(500)),
    ]
}

#[test]
fn draw_order_is_priority_then_expiry_then_age_then_id() {
    let grants = six_grants();
    let entries = granted(&grants);
    let out = draw(&grants, &entries, usd(), 55, UnixMs(100), "txn_d", "inv_1");
    assert_eq!(
        settled(&out),
        pairs(&[
            ("e", 10),
            ("f", 10),
            ("d", 10),
            ("c", 10),
            ("b", 10),
            ("a", 5)
        ])
    );
    for e in &out {
        assert_eq!(e.kind, TxnKind::Draw);
        assert_eq!(e.invoice.as_deref(), Some("inv_1"));
        assert_eq!(e.at, UnixMs(100));
        assert_eq!(e.txn, "txn_d");
    }
    assert_balanced(&out);
    // The balance lists grants in the same order.
    let b = balance(&grants, &entries, usd(), UnixMs(100)).unwrap();
    let order: Vec<&str> = b.grants.iter().map(|g| g.grant.as_str()).collect();
    assert_eq!(order, ["e", "f", "d", "c", "b", "a"]);
}

#[test]
fn draws_continue_where_earlier_draws_stopped() {
    let grants = six_grants();
    let mut entries = granted(&grants);
    let first = draw(&grants, &entries, usd(), 15, UnixMs(100), "txn_1", "inv_1");
    assert_eq!(settled(&first), pairs(&[("e", 10), ("f", 5)]));
    entries.extend(first);
    let second = draw(&grants, &entries, usd(), 12, UnixMs(101), "txn_2", "inv_2");
    assert_eq!(settled(&second), pairs(&[("f", 5), ("d", 7)]));
    entries.extend(second);
    assert_eq!(remaining_of(&entries, "e"), 0);
    assert_eq!(remaining_of(&entries, "f"), 0);
    assert_eq!(remaining_of(&entries, "d"), 3);
    assert_balanced(&entries);
}

#[test]
fn draw_never_exceeds_what_is_available() {
    let grants = vec![grant("g1", 10, 0, 0, None), grant("g2", 20, 0, 0, None)];
    let entries = granted(&grants);
    let out = draw(&grants, &entries, usd(), 100, UnixMs(5), "txn", "inv");
    assert_eq!(settled(&out), pairs(&[("g1", 10), ("g2", 20)]));
    // Nothing for a zero or negative amount.
    assert!(draw(&grants, &entries, usd(), 0, UnixMs(5), "txn", "inv").is_empty());
    assert!(draw(&grants, &entries, usd(), -50, UnixMs(5), "txn", "inv").is_empty());
    // Nothing once everything is spent.
    let mut all = entries.clone();
    all.extend(out);
    assert!(draw(&grants, &all, usd(), 1, UnixMs(6), "txn", "inv").is_empty());
    // Nothing without grants.
    assert!(draw(&[], &[], usd(), 1, UnixMs(6), "txn", "inv").is_empty());
}

#[test]
fn draw_uses_only_usable_grants_of_the_currency() {
    let mut in_euros = grant("eur", 100, 0, 0, None);
    in_euros.currency = eur();
    let grants = vec![
        in_euros,
        // Not granted yet at 100.
        grant("future", 100, 0, 101, None),
        // Expired exactly at 100 (expiry is exclusive).
        grant("expired", 100, 0, 0, Some(100)),
        // Still usable at 100.
        grant("last_ms", 7, 0, 0, Some(101)),
        // Usable from exactly 100.
        grant("fresh", 5, 0, 100, None),
    ];
    let entries = granted(&grants);
    let out = draw(&grants, &entries, usd(), 1000, UnixMs(100), "txn", "inv");
    assert_eq!(settled(&out), pairs(&[("last_ms", 7), ("fresh", 5)]));
    let out = draw(&grants, &entries, eur(), 1000, UnixMs(100), "txn", "inv");
    assert_eq!(settled(&out), pairs(&[("eur", 100)]));
    // Before any grant is usable, nothing.
    assert!(draw(&grants, &entries, usd(), 1000, UnixMs(-1), "txn", "inv").is_empty());
}

// ---- reversal ----

#[test]
fn reverse_gives_back_exactly_what_an_invoice_drew() {
    let grants = vec![grant("g1", 30, 0, 0, None), grant("g2", 50, 1, 0, None)];
    let mut entries = granted(&grants);
    let d1 = draw(&grants, &entries, usd(), 40, UnixMs(10), "txn_1", "inv_1");
    entries.extend(d1);
    let d2 = draw(&grants, &entries, usd(), 15, UnixMs(11), "txn_2", "inv_2");
    entries.extend(d2);
    let d3 = draw(&grants, &entries, usd(), 5, UnixMs(12), "txn_3", "inv_1");
    entries.extend(d3);
    // inv_1 drew 30 from g1 and 10 + 5 from g2; inv_2 drew 15 from g2.
    let back = reverse(&entries, "inv_1", UnixMs(20), "txn_r");
    let rows: Vec<(String, Account, i64)> = back
        .iter()
        .map(|e| (e.grant.clone(), e.account, e.amount_minor))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("g1".into(), Account::InvoiceSettlement, -30),
            ("g1".into(), Account::CustomerCredit, 30),
            ("g2".into(), Account::InvoiceSettlement, -15),
            ("g2".into(), Account::CustomerCredit, 15),
        ]
    );
    for e in &back {
        assert_eq!(e.kind, TxnKind::Reversal);
        assert_eq!(e.invoice.as_deref(), Some("inv_1"));
        assert_eq!(e.at, UnixMs(20));
    }
    entries.extend(back);
    assert_balanced(&entries);
    assert_eq!(remaining_of(&entries, "g1"), 30);
    assert_eq!(remaining_of(&entries, "g2"), 50 - 15);
    // Reversing again gives nothing; an unknown invoice gives nothing.
    assert!(reverse(&entries, "inv_1", UnixMs(21), "txn_r2").is_empty());
    assert!(reverse(&entries, "inv_9", UnixMs(21), "txn_r3").is_empty());
    // inv_2 is untouched and can still be reversed.
    assert_eq!(
        settled(&reverse(&entries, "inv_2", UnixMs(22), "txn_r4")),
        pairs(&[("g2", -15)])
    );
}

// ---- expiry ----

#[test]
fn expire_moves_what_is_left_to_credit_expired() {
    let grants = vec![
        grant("short", 10, 0, 0, Some(100)),
        grant("long", 10, 0, 0, Some(200)),
        grant("forever", 10, 0, 0, None),
    ];
    let mut entries = granted(&grants);
    let spent = draw(&grants, &entries, usd(), 3, UnixMs(50), "txn_d", "inv");
    entries.extend(spent);
    assert!(expire(&grants, &entries, UnixMs(99), "txn_x").is_empty());
    let out = expire(&grants, &entries, UnixMs(100), "txn_x");
    let rows: Vec<(&str, Account, i64, UnixMs)> = out
        .iter()
        .map(|e| (e.grant.as_str(), e.account, e.amount_minor, e.at))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("short", Account::CustomerCredit, -7, UnixMs(100)),
            ("short", Account::CreditExpired, 7, UnixMs(100)),
        ]
    );
    assert!(
        out.iter()
            .all(|e| e.kind == TxnKind::Expiry && e.invoice.is_none())
    );
    entries.extend(out);
    assert_eq!(remaining_of(&entries, "short"), 0);
    // Expiring again at the same or a later instant does nothing more for it.
    assert!(expire(&grants, &entries, UnixMs(150), "txn_y").is_empty());
    // Much later: "long" expires, "forever" never does.
    let out = expire(&grants, &entries, UnixMs(10_000), "txn_z");
    assert!(settled(&out).is_empty());
    assert_eq!(
        out.iter()
            .filter(|e| e.account == Account::CreditExpired)
            .map(|e| (e.grant.as_str(), e.amount_minor))
            .collect::<Vec<_>>(),
        vec![("long", 10)]
    );
    entries.extend(out);
    assert_balanced(&entries);
    assert_eq!(remaining_of(&entries, "forever"), 10);
}

#[test]
fn credit_given_back_to_an_expired_grant_expires_again() {
    let grants = vec![grant("g", 100, 0, 0, Some(1000))];
    let mut entries = granted(&grants);
    entries.extend(draw(
        &grants,
        &entries,
        usd(),
        60,
        UnixMs(500),
        "txn_d",
        "inv",
    ));
    entries.extend(expire(&grants, &entries, UnixMs(1000), "txn_x1"));
    assert_eq!(remaining_of(&entries, "g"), 0);
    entries.extend(reverse(&entries, "inv", UnixMs(2000), "txn_r"));
    assert_eq!(remaining_of(&entries, "g"), 60);
    // Not spendable: the grant has expired.
    assert_eq!(
        balance(&grants, &entries, usd(), UnixMs(2000))
            .unwrap()
            .available_minor,
        0
    );
    assert!(draw(&grants, &entries, usd(), 10, UnixMs(2000), "txn", "inv2").is_empty());
    entries.extend(expire(&grants, &entries, UnixMs(3000), "txn_x2"));
    assert_eq!(remaining_of(&entries, "g"), 0);
    assert_balanced(&entries);
}

#[test]
fn balance_before_a_late_expiry_does_not_panic() {
    let grants = vec![grant("g", 100, 0, 0, Some(1000))];
    let mut entries = granted(&grants);
    entries.extend(draw(
        &grants,
        &entries,
        usd(),
        100,
        UnixMs(500),
        "txn_d",
        "inv",
    ));
    entries.extend(reverse(&entries, "inv", UnixMs(2000), "txn_r"));
    entries.extend(expire(&grants, &entries, UnixMs(3000), "txn_x"));
    assert_balanced(&entries);
    let b = balance(&grants, &entries, usd(), UnixMs(1500)).unwrap();
    assert_eq!(b.available_minor, 0);
    assert_eq!(
        b.grants,
        vec![GrantBalance {
            grant: "g".into(),
            remaining_minor: 0,
            expired: true
        }]
    );
}

// ---- balances ----

#[test]
fn balance_at_an_instant() {
    let mut in_euros = grant("eur", 999, 0, 0, None);
    in_euros.currency = eur();
    let grants = vec![
        grant("g1", 100, 0, 0, Some(1000)),
        grant("g2", 50, 0, 500, None),
        in_euros,
    ];
    let mut entries = granted(&grants);
    entries.extend(draw(
        &grants,
        &entries,
        usd(),
        30,
        UnixMs(200),
        "txn_d1",
        "inv_1",
    ));
    entries.extend(draw(
        &grants,
        &entries,
        usd(),
        90,
        UnixMs(600),
        "txn_d2",
        "inv_2",
    ));
    // g1: 100 − 30 − 70 = 0; g2: 50 − 20 = 30.
    let available = |t: i64| {
        balance(&grants, &entries, usd(), UnixMs(t))
            .unwrap()
            .available_minor
    };
    // Before anything: nothing.
    assert_eq!(available(-1), 0);
    // Granted, not yet drawn.
    assert_eq!(available(0), 100);
    // The draw at 200 counts from 200 on.
    assert_eq!(available(199), 100);
    assert_eq!(available(200), 70);
    // g2 arrives at 500.
    assert_eq!(available(500), 120);
    assert_eq!(available(600), 30);
    // g1 is empty anyway; at its expiry it is listed as expired.
    let b = balance(&grants, &entries, usd(), UnixMs(1000)).unwrap();
    assert_eq!(b.available_minor, 30);
    assert_eq!(
        b.grants,
        vec![
            GrantBalance {
                grant: "g1".into(),
                remaining_minor: 0,
                expired: true
            },
            GrantBalance {
                grant: "g2".into(),
                remaining_minor: 30,
                expired: false
            },
        ]
    );
    assert_eq!(b.currency, usd());
    // Another currency is kept apart.
    assert_eq!(
        balance(&grants, &entries, eur(), UnixMs(1000))
            .unwrap()
            .available_minor,
        999
    );
}

#[test]
fn expired_grants_count_zero_before_their_expiry_entry() {
    let grants = vec![grant("g", 100, 0, 0, Some(1000))];
    let entries = granted(&grants);
    let b = balance(&grants, &entries, usd(), UnixMs(999)).unwrap();
    assert_eq!(b.available_minor, 100);
    let b = balance(&grants, &entries, usd(), UnixMs(1000)).unwrap();
    assert_eq!(b.available_minor, 0);
    assert_eq!(
        b.grants,
        vec![GrantBalance {
            grant: "g".into(),
            remaining_minor: 0,
            expired: true
        }]
    );
}

#[test]
#[should_panic(expected = "does not balance")]
fn an_unbalanced_transaction_is_a_bug() {
    let mut entries = granted(&[grant("g", 10, 0, 0, None)]);
    entries[1].amount_minor = 11;
    assert_balanced(&entries);
}

// ---- property ----

#[derive(Clone, Debug)]
enum Op {
    Grant {
        amount_minor: i64,
        priority: u32,
        expires_in: Option<i64>,
        in_euros: bool,
    },
    Draw {
        amount_minor: i64,
        invoice: u8,
        in_euros: bool,
    },
    Reverse {
        invoice: u8,
    },
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1_i64..1000, 0_u32..3, proptest::option::of(1_i64..400), proptest::bool::weighted(0.2))
            .prop_map(|(amount_minor, priority, expires_in, in_euros)| Op::Grant {
                amount_minor,
                priority,
                expires_in,
                in_euros,
            }),
        4 => (-50_i64..1500, 0_u8..5, proptest::bool::weighted(0.2)).prop_map(
            |(amount_minor, invoice, in_euros)| Op::Draw {
                amount_minor,
                invoice,
                in_euros,
            }
        ),
        2 => (0_u8..5).prop_map(|invoice| Op::Reverse { invoice }),
        1 => Just(Op::Expire),
    ]
}

/// What must hold after every step of a history.
fn check_invariants(grants: &[Grant], entries: &[Entry], now: UnixMs) -> Result<(), TestCaseError> {
    assert_balanced(entries);
    let total: i128 = entries.iter().map(|e| i128::from(e.amount_minor)).sum();
    prop_assert_eq!(total, 0);
    for g in grants {
        prop_assert!(
            remaining_of(entries, &g.id) >= 0,
            "grant {} is negative",
            g.id
        );
    }
    for currency in [usd(), eur()] {
        let want: i64 = grants
            .iter()
            .filter(|g| g.currency == currency)
            .filter(|g| g.granted_ms <= now && g.expires_ms.is_none_or(|e| now < e))
            .map(|g| remaining_of(entries, &g.id))
            .sum();
        let b = balance(grants, entries, currency, now).unwrap();
        prop_assert_eq!(b.available_minor, want);
        let listed: i64 = b.grants.iter().map(|g| g.remaining_minor).sum();
        prop_assert_eq!(listed, want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_ledger_histories_stay_consistent(
        steps in proptest::collection::vec((op(), 0_i64..150), 1..60),
    ) {
        let mut grants: Vec<Grant> = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut now = 1000_i64;
        for (i, (op, advance)) in steps.into_iter().enumerate() {
            now += advance;
            let t = UnixMs(now);
            let txn = format!("txn_{i:03}");
            match op {
                Op::Grant { amount_minor, priority, expires_in, in_euros } => {
                    let mut g = grant(&format!("grant_{i:03}"), amount_minor, priority, now, expires_in.map(|e| now + e));
                    if in_euros {
                        g.currency = eur();
                    }
                    entries.extend(grant_entries(&g, &txn).unwrap());
                    grants.push(g);
                }
                Op::Draw { amount_minor, invoice, in_euros } => {
                    let currency = if in_euros { eur() } else { usd() };
                    let available = balance(&grants, &entries, currency, t).unwrap().available_minor;
                    let out = draw(&grants, &entries, currency, amount_minor, t, &txn, &format!("inv_{invoice}"));
                    let drawn: i64 = settled(&out).iter().map(|(_, a)| *a).sum();
                    prop_assert_eq!(drawn, amount_minor.max(0).min(available));
                    for (id, amount) in settled(&out) {
                        prop_assert!(amount > 0);
                        let g = grants.iter().find(|g| g.id == id).unwrap();
                        prop_assert_eq!(g.currency, currency);
                        prop_assert!(g.granted_ms <= t && g.expires_ms.is_none_or(|e| t < e));
                    }
                    entries.extend(out);
                    if drawn < amount_minor {
                        // Short: every usable grant of the currency is now empty.
                        let left = balance(&grants, &entries, currency, t).unwrap().available_minor;
                        prop_assert_eq!(left, 0);
                    }
                }
                Op::Reverse { invoice } => {
                    let invoice = format!("inv_{invoice}");
                    let out = reverse(&entries, &invoice, t, &txn);
                    entries.extend(out);
                    // Net settlement of the invoice is back to zero, per grant.
                    for g in &grants {
                        let net: i64 = entries
                            .iter()
                            .filter(|e| e.grant == g.id && e.invoice.as_deref() == Some(invoice.as_str()))
                            .filter(|e| e.account == Account::InvoiceSettlement)
                            .map(|e| e.amount_minor)
                            .sum();
                        prop_assert_eq!(net, 0);
                    }
                }
                Op::Expire => {
                    entries.extend(expire(&grants, &entries, t, &txn));
                    for g in grants.iter().filter(|g| g.expires_ms.is_some_and(|e| e <= t)) {
                        prop_assert_eq!(remaining_of(&entries, &g.id), 0);
                    }
                }
            }
            check_invariants(&grants, &entries, t)?;
        }
    }
}
