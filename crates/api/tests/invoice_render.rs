//! Snapshot tests of rendered invoices: the HTML of `render::invoice_page` for hand-built,
//! deterministic invoices (fixed ids, instants and amounts) in a two-digit (USD), a zero-digit
//! (JPY) and a three-digit (KWD) currency. The fixtures are built by hand rather than through
//! the pricing code so that a pricing change cannot silently move a rendering snapshot; each
//! fixture is checked for its own arithmetic (line amounts are their exact charges rounded once,
//! subtotal = Σ lines, total = subtotal + tax, amount due = total − credits) before rendering.
//!
//! Snapshots live in `tests/snapshots/`; review changes with `cargo insta review` (or run with
//! `INSTA_UPDATE=always` and read the diff).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use askama::Template;
use rust_decimal::Decimal;
use tollgate_core::billing::{CustomerKey, Period, PlanKey, SubscriptionId};
use tollgate_core::invoice::{InvoiceDraft, InvoiceStatus, Line, LineKind};
use tollgate_core::meter::MeterSlug;
use tollgate_core::money::{Currency, round_to_minor};
use tollgate_core::pricing::{Charge, PriceKey, Proration, TierCharge};
use tollgate_core::time::UnixMs;
use tollgate_store::billing::{Invoice, InvoiceContent};

fn d(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

/// An RFC 3339 instant with its offset, e.g. `2026-10-01T00:00:00+02:00`.
fn at(text: &str) -> UnixMs {
    UnixMs::from_timestamp(text.parse::<jiff::Timestamp>().unwrap())
}

fn period(start: &str, end: &str) -> Period {
    Period::new(at(start), at(end))
}

fn proration(segment: &Period, period: &Period) -> Proration {
    Proration {
        active_seconds: segment.seconds(),
        period_seconds: period.seconds(),
    }
}

/// A charge without tiers, allowance, minimum or maximum.
fn plain_charge(quantity: Decimal, amount: Decimal) -> Charge {
    Charge {
        quantity,
        free_units: Decimal::ZERO,
        billable_quantity: quantity,
        tiers: Vec::new(),
        minimum_true_up: Decimal::ZERO,
        maximum_reduction: Decimal::ZERO,
        amount,
    }
}

/// The fields every line of one invoice shares; the rest is given per line.
struct LineBase {
    plan: &'static str,
    plan_version: u32,
    period: Period,
}

impl LineBase {
    #[allow(clippy::too_many_arguments)] // One fixture line; a builder would only rename them.
    fn line(
        &self,
        number: u32,
        kind: LineKind,
        key: &str,
        description: &str,
        model: &str,
        meter: Option<&str>,
        segment: Period,
        charge: Charge,
        previously_billed_minor: Option<i64>,
        amount_minor: i64,
    ) -> Line {
        let line_period = if kind == LineKind::Adjustment {
            segment
        } else {
            self.period
        };
        Line {
            number,
            kind,
            price_key: PriceKey::parse(key).unwrap(),
            description: description.to_owned(),
            model: model.to_owned(),
            meter: meter.map(|m| MeterSlug::parse(m).unwrap()),
            plan: PlanKey::parse(self.plan).unwrap(),
            plan_version: self.plan_version,
            period: line_period,
            segment,
            proration: proration(&segment, &line_period),
            quantity: charge.quantity,
            charge,
            previously_billed_minor,
            amount_minor,
        }
    }
}

/// Checks a fixture's own arithmetic, so that a snapshot never records an impossible invoice.
fn assert_fixture_consistent(inv: &Invoice) {
    let draft = &inv.content.draft;
    draft.assert_consistent();
    for line in &draft.lines {
        if line.kind == LineKind::Charge {
            assert_eq!(
                round_to_minor(line.charge.amount, draft.currency).unwrap(),
                line.amount_minor,
                "line {} is its exact charge rounded once",
                line.number
            );
        }
        assert_eq!(
            line.charge.tiers.iter().map(|t| t.amount).sum::<Decimal>(),
            if line.charge.tiers.is_empty() {
                Decimal::ZERO
            } else {
                line.charge.amount - line.charge.minimum_true_up + line.charge.maximum_reduction
            },
            "line {}: tiers add up to the usage charge",
            line.number
        );
    }
    let tax = round_to_minor(
        draft.currency.to_major(draft.subtotal_minor) * draft.tax_rate,
        draft.currency,
    )
    .unwrap();
    assert_eq!(
        tax, draft.tax_minor,
        "tax is the subtotal × rate, rounded once"
    );
    assert_eq!(
        inv.content.amount_due_minor,
        draft.total_minor - inv.content.credits_applied_minor
    );
}

fn render(inv: &Invoice, name: &str, email: Option<&str>, tz: &str) -> String {
    assert_fixture_consistent(inv);
    tollgate_api::render::invoice_page(inv, name, email, tz)
        .render()
        .unwrap()
}

/// Every amount printed as `<number> <code>` (the caption "Amounts in USD" is not one).
fn amounts(html: &str, code: &str) -> Vec<String> {
    let needle = format!(" {code}");
    let mut out = Vec::new();
    for (i, _) in html.match_indices(&needle) {
        let head = &html[..i];
        let start = head
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_digit() || *c == '.' || *c == '-')
            .last()
            .map(|(j, _)| j);
        if let Some(j) = start {
            out.push(head[j..].to_owned());
        }
    }
    out
}

fn minor_digits_shown(amount: &str) -> usize {
    amount.split_once('.').map_or(0, |(_, frac)| frac.len())
}

/// USD, Europe/Berlin (the period holds the October DST change: 31 days + 1 hour), finalized,
/// subscribed mid-period (every line prorated), a flat, a two-tier graduated and a package line,
/// 19 % tax, prepaid credit applied. The customer name needs HTML escaping.
fn usd_finalized() -> Invoice {
    let usd = Currency::parse("USD").unwrap();
    let period = period("2026-10-01T00:00:00+02:00", "2026-11-01T00:00:00+01:00");
    // Subscribed on 2026-10-16 local time: 1,386,000 of 2,682,000 seconds.
    let segment = Period::new(at("2026-10-16T00:00:00+02:00"), period.end);
    let base = LineBase {
        plan: "pro",
        plan_version: 3,
        period,
    };
    let lines = vec![
        // 49.00 × 1386000 / 2682000 = 25.3221… → 25.32
        base.line(
            1,
            LineKind::Charge,
            "platform",
            "Platform fee",
            "flat",
            None,
            segment,
            plain_charge(Decimal::ZERO, d("25.32214765100671140939597315")),
            None,
            2532,
        ),
        // 10000 × 0.002 = 20.000; 5000 × 0.001 + 5 flat = 10.000; 30.00 in all.
        base.line(
            2,
            LineKind::Charge,
            "requests",
            "API requests",
            "graduated",
            Some("requests"),
            segment,
            Charge {
                tiers: vec![
                    TierCharge {
                        from: Decimal::ZERO,
                        up_to: Some(d("10000")),
                        units: d("10000"),
                        unit_price: d("0.002"),
                        flat_fee: Decimal::ZERO,
                        amount: d("20.000"),
                    },
                    TierCharge {
                        from: d("10000"),
                        up_to: None,
                        units: d("5000"),
                        unit_price: d("0.001"),
                        flat_fee: d("5"),
                        amount: d("10.000"),
                    },
                ],
                ..plain_charge(d("15000"), d("30.000"))
            },
            None,
            3000,
        ),
        // ceil(250.75 / 100) = 3 packages × 9.50 = 28.50
        base.line(
            3,
            LineKind::Charge,
            "egress",
            "Egress (per 100 GB)",
            "package",
            Some("egress-gb"),
            segment,
            plain_charge(d("250.75"), d("28.50")),
            None,
            2850,
        ),
    ];
    // 83.82 × 0.19 = 15.9258 → 15.93; total 99.75; 20.00 of credit; 79.75 due.
    Invoice {
        id: "inv_00000000000000a1".into(),
        number: Some("TG-2026-000042".into()),
        status: InvoiceStatus::Finalized,
        content: InvoiceContent {
            draft: InvoiceDraft {
                customer: CustomerKey::parse("acme-gmbh").unwrap(),
                subscription: SubscriptionId("sub_00000000000000b1".into()),
                currency: usd,
                period,
                lines,
                subtotal_minor: 8382,
                tax_rate: d("0.19"),
                tax_minor: 1593,
                total_minor: 9975,
                credit_asks: Vec::new(),
            },
            credits_applied_minor: 2000,
            amount_due_minor: 7975,
        },
        grace_until: at("2026-11-02T00:00:00+01:00"),
        created_ms: at("2026-11-01T00:05:00+01:00"),
        updated_ms: at("2026-11-02T00:10:00+01:00"),
        finalized_ms: Some(at("2026-11-02T00:10:00+01:00")),
        paid_ms: None,
        voided_ms: None,
    }
}

/// JPY (no minor digits), Asia/Tokyo, a draft: a flat line, a capped per-unit line and a volume
/// line trued up to its minimum; 10 % tax; no credit.
fn jpy_draft() -> Invoice {
    let jpy = Currency::parse("JPY").unwrap();
    let period = period("2026-11-01T00:00:00+09:00", "2026-12-01T00:00:00+09:00");
    let base = LineBase {
        plan: "starter-jp",
        plan_version: 1,
        period,
    };
    let lines = vec![
        base.line(
            1,
            LineKind::Charge,
            "base",
            "Base plan",
            "flat",
            None,
            period,
            plain_charge(Decimal::ZERO, d("3000")),
            None,
            3000,
        ),
        // 12345 × 0.35 = 4320.75, capped at 4000.
        base.line(
            2,
            LineKind::Charge,
            "compute",
            "Compute minutes",
            "per_unit",
            Some("compute-minutes"),
            period,
            Charge {
                maximum_reduction: d("320.75"),
                ..plain_charge(d("12345"), d("4000"))
            },
            None,
            4000,
        ),
        // 40 × 2 = 80 in the first tier, trued up to the 500 minimum.
        base.line(
            3,
            LineKind::Charge,
            "storage",
            "Storage",
            "volume",
            Some("storage-gb"),
            period,
            Charge {
                tiers: vec![TierCharge {
                    from: Decimal::ZERO,
                    up_to: Some(d("100")),
                    units: d("40"),
                    unit_price: d("2"),
                    flat_fee: Decimal::ZERO,
                    amount: d("80"),
                }],
                minimum_true_up: d("420"),
                ..plain_charge(d("40"), d("500"))
            },
            None,
            500,
        ),
    ];
    // 7500 × 0.10 = 750; total 8250.
    Invoice {
        id: "inv_00000000000000a2".into(),
        number: None,
        status: InvoiceStatus::Draft,
        content: InvoiceContent {
            draft: InvoiceDraft {
                customer: CustomerKey::parse("sakura-kk").unwrap(),
                subscription: SubscriptionId("sub_00000000000000b2".into()),
                currency: jpy,
                period,
                lines,
                subtotal_minor: 7500,
                tax_rate: d("0.10"),
                tax_minor: 750,
                total_minor: 8250,
                credit_asks: Vec::new(),
            },
            credits_applied_minor: 0,
            amount_due_minor: 8250,
        },
        grace_until: at("2026-12-02T00:00:00+09:00"),
        created_ms: at("2026-12-01T00:05:00+09:00"),
        updated_ms: at("2026-12-01T06:00:00+09:00"),
        finalized_ms: None,
        paid_ms: None,
        voided_ms: None,
    }
}

/// KWD (three minor digits), Asia/Kuwait, finalized: November's flat and per-unit (with a free
/// allowance) lines, and an adjustment of October's per-unit line for 40 late messages; 5 % tax.
fn kwd_with_adjustment() -> Invoice {
    let kwd = Currency::parse("KWD").unwrap();
    let period = period("2026-11-01T00:00:00+03:00", "2026-12-01T00:00:00+03:00");
    let october = self::period("2026-10-01T00:00:00+03:00", "2026-11-01T00:00:00+03:00");
    let base = LineBase {
        plan: "gulf",
        plan_version: 2,
        period,
    };
    let with_allowance = |quantity: &str, billable: &str, amount: &str| Charge {
        free_units: d("100"),
        billable_quantity: d(billable),
        ..plain_charge(d(quantity), d(amount))
    };
    let mut adjustment = base.line(
        3,
        LineKind::Adjustment,
        "messages",
        "Messages",
        "per_unit",
        Some("messages"),
        october,
        // October re-priced with 840 messages: (840 − 100) × 0.0125 = 9.25; 8.750 was billed
        // for 800.
        with_allowance("840", "740", "9.2500"),
        Some(8750),
        500,
    );
    adjustment.quantity = d("40");
    let lines = vec![
        base.line(
            1,
            LineKind::Charge,
            "support",
            "Support",
            "flat",
            None,
            period,
            plain_charge(Decimal::ZERO, d("12.500")),
            None,
            12500,
        ),
        // (987 − 100) × 0.0125 = 11.0875 → 11.088 (half to even).
        base.line(
            2,
            LineKind::Charge,
            "messages",
            "Messages",
            "per_unit",
            Some("messages"),
            period,
            with_allowance("987", "887", "11.0875"),
            None,
            11088,
        ),
        adjustment,
    ];
    // 24.088 × 0.05 = 1.2044 → 1.204; total 25.292.
    Invoice {
        id: "inv_00000000000000a3".into(),
        number: Some("TG-2026-000043".into()),
        status: InvoiceStatus::Finalized,
        content: InvoiceContent {
            draft: InvoiceDraft {
                customer: CustomerKey::parse("gulf-trading").unwrap(),
                subscription: SubscriptionId("sub_00000000000000b3".into()),
                currency: kwd,
                period,
                lines,
                subtotal_minor: 24088,
                tax_rate: d("0.05"),
                tax_minor: 1204,
                total_minor: 25292,
                credit_asks: Vec::new(),
            },
            credits_applied_minor: 0,
            amount_due_minor: 25292,
        },
        grace_until: at("2026-12-02T00:00:00+03:00"),
        created_ms: at("2026-12-01T00:05:00+03:00"),
        updated_ms: at("2026-12-02T00:10:00+03:00"),
        finalized_ms: Some(at("2026-12-02T00:10:00+03:00")),
        paid_ms: None,
        voided_ms: None,
    }
}

#[test]
fn usd_finalized_invoice() {
    let html = render(
        &usd_finalized(),
        "Müller & Söhne <GmbH>",
        Some("billing@acme.example"),
        "Europe/Berlin",
    );
    assert!(
        html.contains("<title>Invoice TG-2026-000042 · Müller &#38; Söhne &#60;GmbH&#62;</title>")
    );
    assert!(html.contains("<span class=\"status\">finalized</span>"));
    assert!(html.contains("<dt>Period</dt><dd>2026-10-01 – 2026-10-31</dd>"));
    assert!(html.contains("<dt>Issued</dt><dd>2026-11-02</dd>"));
    assert!(html.contains("prorated: 1386000 of 2682000 seconds"));
    assert!(html.contains("10000 units × 0.002 (0–10000)"));
    assert!(html.contains("5000 units × 0.001 (10000–∞) + 5"));
    assert!(html.contains("250.75 egress-gb"));
    assert!(html.contains("<td>Subtotal</td><td class=\"num\">83.82 USD</td>"));
    assert!(html.contains("<td>Tax (19 %)</td><td class=\"num\">15.93 USD</td>"));
    assert!(html.contains("<td>Total</td><td class=\"num\">99.75 USD</td>"));
    assert!(html.contains("−20.00 USD"));
    assert!(html.contains("<td>Amount due</td><td class=\"num\">79.75 USD</td>"));
    assert!(!html.contains("Adjustment"));
    let shown = amounts(&html, "USD");
    assert_eq!(shown.len(), 8, "3 lines and 5 totals: {shown:?}");
    assert!(
        shown.iter().all(|a| minor_digits_shown(a) == 2),
        "{shown:?}"
    );
    insta::assert_snapshot!("usd_finalized", html);
}

#[test]
fn jpy_draft_invoice() {
    let html = render(&jpy_draft(), "Sakura K.K.", None, "Asia/Tokyo");
    assert!(html.contains("<h1>Draft invoice</h1>"));
    assert!(html.contains("<span class=\"status\">draft</span>"));
    assert!(html.contains("<dt>Issued</dt><dd>not yet issued</dd>"));
    assert!(!html.contains("<dt>E-mail</dt>"), "no e-mail, no row");
    assert!(html.contains("<dt>Period</dt><dd>2026-11-01 – 2026-11-30</dd>"));
    assert!(html.contains("capped, 320.75 not charged"));
    assert!(html.contains("minimum true-up 420"));
    assert!(html.contains("<td>Total</td><td class=\"num\">8250 JPY</td>"));
    assert!(
        !html.contains("Prepaid credit"),
        "no credit applied, no row"
    );
    assert!(
        !html.contains("prorated"),
        "every line covers the whole period"
    );
    let shown = amounts(&html, "JPY");
    assert_eq!(
        shown.len(),
        7,
        "3 lines and 4 totals (no credit row): {shown:?}"
    );
    assert!(
        shown.iter().all(|a| minor_digits_shown(a) == 0),
        "{shown:?}"
    );
    insta::assert_snapshot!("jpy_draft", html);
}

#[test]
fn kwd_invoice_with_an_adjustment() {
    let html = render(
        &kwd_with_adjustment(),
        "Gulf Trading W.L.L.",
        Some("ap@gulf.example"),
        "Asia/Kuwait",
    );
    assert!(html.contains("Adjustment: Messages for 2026-10-01 – 2026-10-31"));
    assert!(html.contains("previously billed 8.750 KWD"));
    assert!(html.contains("100 units free"));
    assert!(
        html.contains("40 messages"),
        "an adjustment shows the change in usage"
    );
    assert!(html.contains("<td class=\"num\">0.500 KWD</td>"));
    assert!(html.contains("<td class=\"num\">11.088 KWD</td>"));
    assert!(html.contains("<td>Tax (5 %)</td><td class=\"num\">1.204 KWD</td>"));
    assert!(html.contains("<td>Total</td><td class=\"num\">25.292 KWD</td>"));
    let shown = amounts(&html, "KWD");
    assert_eq!(
        shown.len(),
        8,
        "3 lines, 1 previously billed, 4 totals (no credit row): {shown:?}"
    );
    assert!(
        shown.iter().all(|a| minor_digits_shown(a) == 3),
        "{shown:?}"
    );
    insta::assert_snapshot!("kwd_adjustment", html);
}
