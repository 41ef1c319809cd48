//! Reconciliation: the four comparisons that tell finance where two numbers disagree, and why.
//!
//! Owns: the comparisons, each a pure function of what the shell loaded —
//! [`compare_usage`] (usage recomputed from raw events against the rollups invoices read),
//! [`compare_pricing`] (each period re-priced from the rollups against what its invoice and later
//! adjustments billed), [`compare_provider`] (an invoice, its refunds and payments against the
//! payment provider's record), [`compare_ledger`] (the ledger's transactions, grants and
//! invoice draws against the sums of their entries); the [`Difference`] they report with its
//! [`Class`]; the [`Report`] and its CSV form.
//!
//! Does not own: loading (the store), fetching the provider's records (the binary), repairs
//! (the store creates refunds by rule), scheduling.
//!
//! Classification: a usage difference is always `unexplained` (rollups and raw events must
//! agree exactly); a pricing difference is `late_event_after_finalization` when events of the
//! period were committed after its invoice was finalized (the next invoice carries the
//! adjustment), `unexplained` otherwise; provider differences are `missing_provider_record`,
//! `amount_drift` or `status_drift`; ledger differences are `unexplained`. Only `unexplained`
//! differences make a run fail.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ledger::{Account, Entry, Grant, TxnKind};

/// Which comparison found a difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// (1) Raw events recomputed against stored rollups.
    Usage,
    /// (2) Rollups re-priced against invoice lines.
    Pricing,
    /// (3) Invoices, credit notes and refunds against the payment provider's records.
    Provider,
    /// (4) Ledger balances against the sums of their entries.
    Ledger,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Usage, Kind::Pricing, Kind::Provider, Kind::Ledger];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::Pricing => "pricing",
            Kind::Provider => "provider",
            Kind::Ledger => "ledger",
        }
    }
}

/// Why two numbers differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Events of a finalized period arrived after its invoice was finalized.
    LateEventAfterFinalization,
    /// Tollgate has an invoice (or refund) the provider has no record of.
    MissingProviderRecord,
    /// The provider's amount differs from Tollgate's.
    AmountDrift,
    /// The provider's status differs from Tollgate's (a dropped webhook, a change made there).
    StatusDrift,
    /// Nothing known explains it.
    Unexplained,
}

impl Class {
    /// Every class.
    pub const ALL: [Class; 5] = [
        Class::LateEventAfterFinalization,
        Class::MissingProviderRecord,
        Class::AmountDrift,
        Class::StatusDrift,
        Class::Unexplained,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::LateEventAfterFinalization => "late_event_after_finalization",
            Class::MissingProviderRecord => "missing_provider_record",
            Class::AmountDrift => "amount_drift",
            Class::StatusDrift => "status_drift",
            Class::Unexplained => "unexplained",
        }
    }
}

/// One side of a comparison: which object, and what it says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// What was read (`rollup bytes-out`, `invoice inv_… line 2`, `stripe in_…`).
    pub object: String,
    /// Its value: a decimal quantity, minor units, or a status.
    pub value: String,
}

/// A difference between two numbers that should agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Which comparison.
    pub kind: Kind,
    /// Why.
    pub class: Class,
    /// Whose.
    pub customer: String,
    /// The invoice concerned, if any.
    pub invoice: Option<String>,
    /// What was compared (`quantity`, `amount_minor`, `status`, `balance_minor`, …).
    pub field: String,
    /// Tollgate's side (or the side that should hold).
    pub left: Side,
    /// The other side.
    pub right: Side,
    /// `right − left` for numbers (exact), empty for statuses.
    pub delta: String,
    /// For people.
    pub detail: String,
    /// What a rule did about it (`refund re_tg_…`), if anything.
    pub repair: Option<String>,
}

/// A reconciliation run's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `recon_…`.
    pub id: String,
    /// The period reconciled (`2026-11`).
    pub period: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// How many values each comparison checked.
    pub checked: BTreeMap<Kind, u64>,
    /// Every difference, by kind, customer, invoice.
    pub differences: Vec<Difference>,
    /// Whether the provider's own records were fetched (`false`: Tollgate's copy of what its
    /// webhooks said was used).
    pub provider_fetched: bool,
}

impl Report {
    /// Differences per (kind, class).
    pub fn counts(&self) -> BTreeMap<(Kind, Class), u64> {
        let mut out = BTreeMap::new();
        for d in &self.differences {
            *out.entry((d.kind, d.class)).or_insert(0) += 1;
        }
        out
    }

    /// How many differences nothing explains.
    pub fn unexplained(&self) -> usize {
        self.differences
            .iter()
            .filter(|d| d.class == Class::Unexplained)
            .count()
    }

    /// Sorts the differences into their stable order.
    pub fn sort(&mut self) {
        self.differences.sort_by(|a, b| {
            (a.kind, &a.customer, &a.invoice, &a.field, &a.left.object).cmp(&(
                b.kind,
                &b.customer,
                &b.invoice,
                &b.field,
                &b.left.object,
            ))
        });
    }

    /// The differences as CSV (RFC 4180, header first).
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "period,kind,class,customer,invoice,field,left_object,left_value,right_object,right_value,delta,detail,repair\n",
        );
        for d in &self.differences {
            let cells = [
                self.period.as_str(),
                d.kind.as_str(),
                d.class.as_str(),
                d.customer.as_str(),
                d.invoice.as_deref().unwrap_or(""),
                d.field.as_str(),
                d.left.object.as_str(),
                d.left.value.as_str(),
                d.right.object.as_str(),
                d.right.value.as_str(),
                d.delta.as_str(),
                d.detail.as_str(),
                d.repair.as_deref().unwrap_or(""),
            ];
            let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
            let _ = writeln!(out, "{}", line.join(","));
        }
        out
    }
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn side(object: impl Into<String>, value: impl Into<String>) -> Side {
    Side {
        object: object.into(),
        value: value.into(),
    }
}

// ---- (1) usage ----

/// One usage cell an invoice line read: a meter's usage of a customer over a span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageCell {
    /// Customer (the events' subject).
    pub customer: String,
    /// The invoice whose line read it.
    pub invoice: String,
    /// Meter slug.
    pub meter: String,
    /// The span, as text (`2026-11-01T00:00:00Z/2026-12-01T00:00:00Z`).
    pub span: String,
    /// What the rollups answer.
    pub rollup: Decimal,
    /// What the raw events give, recomputed.
    pub recomputed: Decimal,
}

/// (1) Every cell whose rollup differs from its recomputation.
pub fn compare_usage(cells: &[UsageCell]) -> Vec<Difference> {
    cells
        .iter()
        .filter(|c| c.rollup != c.recomputed)
        .map(|c| Difference {
            kind: Kind::Usage,
            class: Class::Unexplained,
            customer: c.customer.clone(),
            invoice: Some(c.invoice.clone()),
            field: "quantity".into(),
            left: side(
                format!("raw events, meter {} over {}", c.meter, c.span),
                c.recomputed.normalize().to_string(),
            ),
            right: side(
                format!("rollup, meter {} over {}", c.meter, c.span),
                c.rollup.normalize().to_string(),
            ),
            delta: (c.rollup - c.recomputed).normalize().to_string(),
            detail: "the stored rollup does not equal the raw events it was built from".into(),
            repair: None,
        })
        .collect()
}

// ---- (2) pricing ----

/// One priced line of a period: what re-pricing from the rollups says it should charge, and
/// what its invoice and later adjustments billed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedLine {
    /// Customer.
    pub customer: String,
    /// The invoice of the period.
    pub invoice: String,
    /// `price key @ segment start` (identifies the line across invoices).
    pub line: String,
    /// Re-priced now (minor units).
    pub expected_minor: i64,
    /// Billed: the period's charge plus every later adjustment of it (minor units).
    pub billed_minor: i64,
    /// Events of the period were committed after its invoice was finalized.
    pub late_events: bool,
}

/// (2) Every line whose re-priced amount differs from what was billed.
pub fn compare_pricing(lines: &[PricedLine]) -> Vec<Difference> {
    lines
        .iter()
        .filter(|l| l.expected_minor != l.billed_minor)
        .map(|l| {
            let (class, detail) = if l.late_events {
                (
                    Class::LateEventAfterFinalization,
                    "events of the period arrived after its invoice was finalized; the next invoice carries the adjustment",
                )
            } else {
                (
                    Class::Unexplained,
                    "the invoice does not charge what its usage prices to, and no late event explains it",
                )
            };
            Difference {
                kind: Kind::Pricing,
                class,
                customer: l.customer.clone(),
                invoice: Some(l.invoice.clone()),
                field: "amount_minor".into(),
                left: side(format!("billed {}", l.line), l.billed_minor.to_string()),
                right: side(format!("re-priced {}", l.line), l.expected_minor.to_string()),
                delta: (l.expected_minor - l.billed_minor).to_string(),
                detail: detail.into(),
                repair: None,
            }
        })
        .collect()
}

// ---- (3) provider ----

/// What Tollgate says about an invoice's money.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TollgateInvoice {
    /// Customer.
    pub customer: String,
    /// Invoice id.
    pub invoice: String,
    /// `finalized`, `paid`, `void`.
    pub status: String,
    /// What it asked the customer to pay (minor units).
    pub amount_due_minor: i64,
    /// Σ succeeded refunds at the provider (minor units).
    pub refunded_minor: i64,
}

/// What the provider says about it (`None` when it has no record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderInvoice {
    /// `stripe in_…`.
    pub object: String,
    /// `open`, `paid`, `void`, `uncollectible`, `draft`.
    pub status: String,
    /// Amount due there (minor units).
    pub amount_due_minor: i64,
    /// Paid there (minor units).
    pub amount_paid_minor: i64,
    /// Refunded there (minor units).
    pub amount_refunded_minor: i64,
}

/// (3) Differences between an invoice and the provider's record of it.
pub fn compare_provider(t: &TollgateInvoice, p: Option<&ProviderInvoice>) -> Vec<Difference> {
    let base =
        |class, field: &str, left: Side, right: Side, delta: String, detail: &str| Difference {
            kind: Kind::Provider,
            class,
            customer: t.customer.clone(),
            invoice: Some(t.invoice.clone()),
            field: field.into(),
            left,
            right,
            delta,
            detail: detail.into(),
            repair: None,
        };
    let ours = format!("tollgate {}", t.invoice);
    let Some(p) = p else {
        return vec![base(
            Class::MissingProviderRecord,
            "invoice",
            side(&ours, &t.status),
            side("provider", "none"),
            String::new(),
            "the invoice was never recorded at the provider",
        )];
    };
    let mut out = Vec::new();
    if p.amount_due_minor != t.amount_due_minor {
        out.push(base(
            Class::AmountDrift,
            "amount_due_minor",
            side(&ours, t.amount_due_minor.to_string()),
            side(&p.object, p.amount_due_minor.to_string()),
            (p.amount_due_minor - t.amount_due_minor).to_string(),
            "the provider asks for a different amount than the invoice",
        ));
    }
    let provider_paid = p.status == "paid";
    let status_differs = match t.status.as_str() {
        "paid" => !provider_paid,
        "void" => p.status != "void",
        _ => provider_paid || p.status == "void",
    };
    if status_differs {
        out.push(base(
            Class::StatusDrift,
            "status",
            side(&ours, &t.status),
            side(&p.object, &p.status),
            String::new(),
            "the provider's status differs (a webhook was lost, or the invoice was changed there)",
        ));
    }
    if provider_paid && p.amount_paid_minor > p.amount_due_minor.max(t.amount_due_minor) {
        out.push(base(
            Class::AmountDrift,
            "amount_paid_minor",
            side(&ours, t.amount_due_minor.to_string()),
            side(&p.object, p.amount_paid_minor.to_string()),
            (p.amount_paid_minor - t.amount_due_minor).to_string(),
            "overpayment: more was collected than the invoice asked",
        ));
    }
    if p.amount_refunded_minor != t.refunded_minor {
        out.push(base(
            Class::AmountDrift,
            "refunded_minor",
            side(
                format!("tollgate refunds of {}", t.invoice),
                t.refunded_minor.to_string(),
            ),
            side(&p.object, p.amount_refunded_minor.to_string()),
            (p.amount_refunded_minor - t.refunded_minor).to_string(),
            "the provider refunded a different amount than Tollgate's succeeded refunds",
        ));
    }
    out
}

// ---- (4) ledger ----

/// A customer's ledger and the invoices that drew on it.
#[derive(Clone, Debug)]
pub struct LedgerInput<'a> {
    /// Customer.
    pub customer: &'a str,
    /// Grants.
    pub grants: &'a [Grant],
    /// Entries.
    pub entries: &'a [Entry],
    /// `(invoice id, credits applied, voided)` of the customer's non-draft invoices.
    pub invoices: &'a [(String, i64, bool)],
}

/// (4) Transactions that do not sum to zero, grants whose entries do not add up to them,
/// credit balances below zero, and invoices whose credits differ from their net draws.
/// Returns the differences and how many values were checked.
pub fn compare_ledger(input: &LedgerInput<'_>) -> (Vec<Difference>, u64) {
    let mut out = Vec::new();
    let mut checked = 0u64;
    let diff = |field: &str, left: Side, right: Side, delta: i128, detail: &str| Difference {
        kind: Kind::Ledger,
        class: Class::Unexplained,
        customer: input.customer.to_owned(),
        invoice: None,
        field: field.into(),
        left,
        right,
        delta: delta.to_string(),
        detail: detail.into(),
        repair: None,
    };
    let mut txns: BTreeMap<&str, i128> = BTreeMap::new();
    let mut granted: BTreeMap<&str, i128> = BTreeMap::new();
    let mut credit: BTreeMap<&str, i128> = BTreeMap::new();
    let mut drawn: BTreeMap<&str, i128> = BTreeMap::new();
    for e in input.entries {
        let amount = i128::from(e.amount_minor);
        *txns.entry(e.txn.as_str()).or_default() += amount;
        if e.account == Account::CustomerCredit {
            *credit.entry(e.grant.as_str()).or_default() += amount;
            if e.kind == TxnKind::Grant {
                *granted.entry(e.grant.as_str()).or_default() += amount;
            }
        }
        if e.account == Account::InvoiceSettlement
            && let Some(inv) = &e.invoice
        {
            *drawn.entry(inv.as_str()).or_default() += amount;
        }
    }
    for (txn, sum) in &txns {
        checked += 1;
        if *sum != 0 {
            out.push(diff(
                "transaction_sum_minor",
                side(format!("ledger transaction {txn}"), "0"),
                side(format!("Σ entries of {txn}"), sum.to_string()),
                *sum,
                "a ledger transaction's entries do not sum to zero",
            ));
        }
    }
    for g in input.grants {
        checked += 2;
        let got = granted.get(g.id.as_str()).copied().unwrap_or(0);
        if got != i128::from(g.amount_minor) {
            out.push(diff(
                "granted_minor",
                side(format!("grant {}", g.id), g.amount_minor.to_string()),
                side(format!("Σ grant entries of {}", g.id), got.to_string()),
                got - i128::from(g.amount_minor),
                "the grant's entries do not add up to the grant",
            ));
        }
        let left = credit.get(g.id.as_str()).copied().unwrap_or(0);
        if left < 0 {
            out.push(diff(
                "balance_minor",
                side(format!("grant {}", g.id), ">= 0"),
                side(
                    format!("Σ customer_credit entries of {}", g.id),
                    left.to_string(),
                ),
                left,
                "the grant's credit balance is below zero",
            ));
        }
    }
    for (inv, credits, voided) in input.invoices {
        checked += 1;
        let net = drawn.get(inv.as_str()).copied().unwrap_or(0);
        let expected = if *voided { 0 } else { i128::from(*credits) };
        if net != expected {
            let mut d = diff(
                "credits_applied_minor",
                side(
                    format!("invoice {inv} credits applied"),
                    expected.to_string(),
                ),
                side(
                    format!("Σ invoice_settlement entries of {inv}"),
                    net.to_string(),
                ),
                net - expected,
                "the credit an invoice applied differs from what its ledger draws took",
            );
            d.invoice = Some(inv.clone());
            out.push(d);
        }
    }
    (out, checked)
}
