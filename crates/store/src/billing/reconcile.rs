//! Reconciliation in the database: load what the four comparisons read, run them (the core's),
//! apply the repairs rules allow, and keep the report.
//!
//! Owns: choosing what a period covers (every invoice that is not a draft and whose billing
//! period starts in the month, in its customer's time zone), loading each comparison's inputs
//! — the rollups the invoices' metered lines read and the same usage recomputed from the raw
//! events in one pass over the month's frames; each period re-priced from the rollups alone
//! and what its invoice and later adjustments billed, less what late-correction credit notes
//! gave back; each invoice's provider record (fetched
//! from the provider by the caller, or Tollgate's copy of what its webhooks said); each
//! customer's ledger — the overpayment refund rule, and `reconciliation_runs`.
//!
//! Does not own: the comparisons and classes (`tollgate_core::reconcile`), HTTP to the
//! provider (the binary fetches and passes [`ProviderViews`]), scheduling.
//!
//! Invariants: a run changes nothing but its own report, except the repairs a rule asks for;
//! a repair is made once (an overpayment already refunded by rule is not refunded again).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use rusqlite::{OptionalExtension, params};
use rust_decimal::Decimal;
use tollgate_core::billing::{Customer, CustomerKey, Period};
use tollgate_core::event::Subject;
use tollgate_core::invoice::{InvoiceStatus, LineKind};
use tollgate_core::meter::MeterSlug;
use tollgate_core::provider::{PaymentState, Provider};
use tollgate_core::reconcile::{
    self, Class, Difference, Kind, LedgerInput, PricedLine, ProviderInvoice, Report,
    TollgateInvoice, UsageCell,
};
use tollgate_core::refund::{RefundOrigin, RefundReason, RefundStatus};
use tollgate_core::time::UnixMs;
use tollgate_core::usage::UsageQuery;

use super::refunds::{NewRefund, Refund, RefundFilter, create_refund_in};
use super::{
    BillingStore, BillingStoreError, Invoice, InvoiceFilter, LIST_LIMIT_MAX, entries_in, from_json,
    grants_in, to_json,
};
use crate::Engine;
use crate::engine::LateEvents;
use crate::keys::random_hex;
use crate::providers;

/// Most reconciliation reports one listing returns.
pub const RECONCILIATION_LIST_MAX: usize = 100;

/// The provider's own records of Tollgate's invoices, fetched by the caller: invoice id →
/// the provider's record (`None`: the provider has none).
pub type ProviderViews = BTreeMap<String, Option<ProviderInvoice>>;

/// What one run should do.
#[derive(Clone, Debug)]
pub struct ReconcileOptions {
    /// The month (any day of it).
    pub month: Date,
    /// The provider's records, when fetched; `None`: compare with Tollgate's copy.
    pub provider_views: Option<ProviderViews>,
    /// Refund what was collected beyond what an invoice asked (origin `rule`).
    pub refund_overpayments: bool,
    /// Now.
    pub now: UnixMs,
}

/// A stored report's summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// `recon_…`.
    pub id: String,
    /// `2026-11`.
    pub period: String,
    /// Started.
    pub started_ms: UnixMs,
    /// Differences.
    pub differences: u64,
    /// Of which unexplained.
    pub unexplained: u64,
}

/// `2026-11` for a month.
pub fn month_label(month: Date) -> String {
    format!("{:04}-{:02}", month.year(), month.month())
}

/// Every invoice, in id order.
fn all_invoices(store: &BillingStore) -> Result<Vec<Invoice>, BillingStoreError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.invoices(&InvoiceFilter {
            customer: None,
            status: None,
            after: after.clone(),
            limit: LIST_LIMIT_MAX,
        })?;
        let done = page.len() < LIST_LIMIT_MAX;
        after = page.last().map(|i| i.id.clone());
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// Of `all`, the invoices whose billing period starts in `month` (in the customer's zone), not
/// drafts.
fn invoices_of_month(
    all: &[Invoice],
    customers: &BTreeMap<CustomerKey, Customer>,
    month: Date,
) -> Vec<Invoice> {
    let (y, m) = (month.year(), month.month());
    all.iter()
        .filter(|inv| inv.status != InvoiceStatus::Draft)
        .filter(|inv| {
            let tz = customers
                .get(&inv.content.draft.customer)
                .map_or(TimeZone::UTC, |c| c.time_zone.tz().clone());
            let start = inv.content.draft.period.start.to_timestamp().to_zoned(tz);
            start.year() == y && start.month() == m
        })
        .cloned()
        .collect()
}

fn all_customers(
    store: &BillingStore,
) -> Result<BTreeMap<CustomerKey, Customer>, BillingStoreError> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.customers(after.as_deref(), LIST_LIMIT_MAX)?;
        let done = page.len() < LIST_LIMIT_MAX;
        after = page.last().map(|c| c.key.as_str().to_owned());
        out.extend(page.into_iter().map(|c| (c.key.clone(), c)));
        if done {
            return Ok(out);
        }
    }
}

fn span_text(p: Period) -> String {
    format!("{}/{}", p.start.to_rfc3339(), p.end.to_rfc3339())
}

fn usage_total(
    query: impl Fn(&UsageQuery) -> Result<Vec<tollgate_core::usage::UsageRow>, String>,
    subject: &Subject,
    span: Period,
) -> Result<Decimal, BillingStoreError> {
    let rows = query(&UsageQuery {
        subject: Some(subject.clone()),
        from: span.start,
        to: span.end,
        window: None,
        time_zone: TimeZone::UTC,
        group_by: Vec::new(),
    })
    .map_err(|e| BillingStoreError::Invalid {
        code: "reconcile_usage_failed",
        message: e,
    })?;
    Ok(rows.iter().map(|r| r.value).sum())
}

/// (1): every metered charge line's rollup against the raw events recomputed.
fn usage_cells(
    engine: &Engine,
    invoices: &[Invoice],
) -> Result<(Vec<UsageCell>, LateEvents), BillingStoreError> {
    let mut needs: Vec<(&Invoice, MeterSlug, Period)> = Vec::new();
    for inv in invoices {
        for line in &inv.content.draft.lines {
            if let (LineKind::Charge, Some(meter)) = (line.kind, &line.meter) {
                needs.push((inv, meter.clone(), line.segment));
            }
        }
    }
    let subjects: HashSet<String> = invoices
        .iter()
        .map(|i| i.content.draft.customer.as_str().to_owned())
        .collect();
    let meters: Vec<MeterSlug> = needs
        .iter()
        .map(|(_, m, _)| m.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (from, to) = invoices
        .iter()
        .map(|i| i.content.draft.period)
        .fold((UnixMs(i64::MAX), UnixMs(i64::MIN)), |(a, b), p| {
            (a.min(p.start), b.max(p.end))
        });
    let first_final = invoices
        .iter()
        .filter_map(|i| i.finalized_ms)
        .min()
        .unwrap_or(UnixMs(i64::MAX));
    if from >= to {
        return Ok((Vec::new(), BTreeMap::new()));
    }
    let fresh = engine.recompute(&meters, &subjects, from, to, first_final)?;
    let mut cells = Vec::with_capacity(needs.len());
    for (inv, meter, span) in needs {
        let customer = inv.content.draft.customer.as_str();
        let subject = Subject::parse(customer).map_err(|e| BillingStoreError::Invalid {
            code: "reconcile_usage_failed",
            message: format!("customer {customer}: {e}"),
        })?;
        let rollup = usage_total(
            |q| engine.usage(&meter, q).map_err(|e| e.to_string()),
            &subject,
            span,
        )?;
        let recomputed = match fresh.usage.get(&meter) {
            Some(u) => usage_total(|q| u.query(q).map_err(|e| e.to_string()), &subject, span)?,
            None => Decimal::ZERO,
        };
        cells.push(UsageCell {
            customer: customer.to_owned(),
            invoice: inv.id.clone(),
            meter: meter.to_string(),
            span: span_text(span),
            rollup,
            recomputed,
        });
    }
    Ok((cells, fresh.late))
}

/// (2): each period re-priced from the rollups alone, against its invoice's charges plus the
/// later adjustments of the period.
fn priced_lines(
    engine: &Engine,
    store: &BillingStore,
    customers: &BTreeMap<CustomerKey, Customer>,
    all: &[Invoice],
    invoices: &[Invoice],
    late: &LateEvents,
) -> Result<Vec<PricedLine>, BillingStoreError> {
    let (_, catalog) = store.catalog()?;
    let subscriptions: BTreeMap<String, tollgate_core::billing::Subscription> = store
        .subscriptions(None)?
        .into_iter()
        .map(|s| (s.id.0.clone(), s))
        .collect();
    let mut by_subscription: BTreeMap<&str, Vec<&Invoice>> = BTreeMap::new();
    for i in all
        .iter()
        .filter(|i| !matches!(i.status, InvoiceStatus::Draft | InvoiceStatus::Void))
    {
        by_subscription
            .entry(i.content.draft.subscription.0.as_str())
            .or_default()
            .push(i);
    }
    let notes = store.read(super::credit_notes::notes_by_invoice)?;
    let mut out = Vec::new();
    for inv in invoices.iter().filter(|i| i.status != InvoiceStatus::Void) {
        let d = &inv.content.draft;
        let customer = customers
            .get(&d.customer)
            .ok_or_else(|| super::not_found("customer", d.customer.as_str()))?;
        let sub = subscriptions
            .get(&d.subscription.0)
            .ok_or_else(|| super::not_found("subscription", d.subscription.0.as_str()))?;
        let expected = super::run::reprice_period(engine, &catalog, customer, sub, d.period)?;
        // Every non-draft, non-void invoice of the subscription bills this period (its own
        // charges, later invoices' adjustments).
        let billed_by = by_subscription
            .get(d.subscription.0.as_str())
            .map_or(&[][..], Vec::as_slice);
        let key = |l: &tollgate_core::invoice::Line| {
            format!("{} @ {}", l.price_key, l.segment.start.to_rfc3339())
        };
        let mut lines: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for l in expected.lines.iter().filter(|l| l.kind == LineKind::Charge) {
            lines.entry(key(l)).or_default().0 += l.amount_minor;
        }
        for i in billed_by {
            // What late-correction credit notes gave back counts against what was billed.
            let given_back = notes
                .get(&i.id)
                .map(|n| super::credit_notes::corrections_as_lines(i, n))
                .unwrap_or_default();
            for l in i
                .content
                .draft
                .lines
                .iter()
                .chain(&given_back)
                .filter(|l| l.period == d.period)
            {
                lines.entry(key(l)).or_default().1 += l.amount_minor;
            }
        }
        let finalized = inv.finalized_ms.unwrap_or(UnixMs(i64::MAX));
        let late_events = late.get(d.customer.as_str()).is_some_and(|events| {
            events
                .iter()
                .any(|(t, c)| *t >= d.period.start && *t < d.period.end && *c > finalized)
        });
        for (line, (expected_minor, billed_minor)) in lines {
            out.push(PricedLine {
                customer: d.customer.as_str().to_owned(),
                invoice: inv.id.clone(),
                line,
                expected_minor,
                billed_minor,
                late_events,
            });
        }
    }
    Ok(out)
}

fn provider_state_name(state: PaymentState) -> &'static str {
    match state {
        PaymentState::Paid | PaymentState::PartiallyRefunded | PaymentState::Refunded => "paid",
        PaymentState::Open | PaymentState::Failed => "open",
        PaymentState::Disputed => "disputed",
        PaymentState::Void => "void",
    }
}

impl BillingStore {
    /// The invoices a month's reconciliation covers, each with the provider id of its pushed
    /// copy (`None`: never pushed): what the caller fetches the provider's records for.
    pub fn reconcile_scope(
        &self,
        month: Date,
    ) -> Result<Vec<(String, Option<String>)>, BillingStoreError> {
        let customers = all_customers(self)?;
        let invoices = invoices_of_month(&all_invoices(self)?, &customers, month);
        self.read(|c| {
            invoices
                .iter()
                .map(|inv| {
                    let id = providers::object_in(c, Provider::Stripe, "invoice", &inv.id)?
                        .map(|o| o.provider_id);
                    Ok((inv.id.clone(), id))
                })
                .collect()
        })
    }

    /// Reconciles a month; keeps and returns the report.
    pub fn reconcile(
        &self,
        engine: &Engine,
        opts: &ReconcileOptions,
    ) -> Result<Report, BillingStoreError> {
        let started = opts.now;
        let customers = all_customers(self)?;
        let all = all_invoices(self)?;
        let invoices = invoices_of_month(&all, &customers, opts.month);
        let mut report = Report {
            id: format!("recon_{}", random_hex(8)),
            period: month_label(opts.month),
            started_at: started.to_rfc3339(),
            finished_at: String::new(),
            checked: BTreeMap::new(),
            differences: Vec::new(),
            provider_fetched: opts.provider_views.is_some(),
        };

        let (cells, late) = usage_cells(engine, &invoices)?;
        report.checked.insert(Kind::Usage, cells.len() as u64);
        report.differences.extend(reconcile::compare_usage(&cells));

        let priced = priced_lines(engine, self, &customers, &all, &invoices, &late)?;
        report.checked.insert(Kind::Pricing, priced.len() as u64);
        report
            .differences
            .extend(reconcile::compare_pricing(&priced));

        let (provider_diffs, provider_checked) = self.provider_differences(&invoices, opts)?;
        report.checked.insert(Kind::Provider, provider_checked);
        report.differences.extend(provider_diffs);

        let mut ledger_checked = 0;
        let in_scope: BTreeSet<&CustomerKey> =
            invoices.iter().map(|i| &i.content.draft.customer).collect();
        let mut by_customer: BTreeMap<&CustomerKey, Vec<&Invoice>> = BTreeMap::new();
        for inv in &all {
            by_customer
                .entry(&inv.content.draft.customer)
                .or_default()
                .push(inv);
        }
        for key in in_scope {
            let theirs = by_customer.get(key).map_or(&[][..], Vec::as_slice);
            let (diffs, n) = self.ledger_differences(key, theirs)?;
            ledger_checked += n;
            report.differences.extend(diffs);
        }
        report.checked.insert(Kind::Ledger, ledger_checked);

        report.sort();
        report.finished_at = opts.now.max(started).to_rfc3339();
        self.save_report(&report, started)?;
        Ok(report)
    }

    fn provider_differences(
        &self,
        invoices: &[Invoice],
        opts: &ReconcileOptions,
    ) -> Result<(Vec<Difference>, u64), BillingStoreError> {
        let provider_in_use = opts.provider_views.is_some()
            || providers::sync_target().is_some()
            || self.read(|c| {
                Ok(c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM provider_objects WHERE kind = 'invoice')",
                    [],
                    |r| r.get::<_, bool>(0),
                )?)
            })?;
        if !provider_in_use {
            return Ok((Vec::new(), 0));
        }
        let mut out = Vec::new();
        let mut checked = 0u64;
        for inv in invoices {
            checked += 1;
            let refunds = self.refunds(&RefundFilter {
                invoice: Some(inv.id.clone()),
                limit: LIST_LIMIT_MAX,
                ..RefundFilter::default()
            })?;
            let t = TollgateInvoice {
                customer: inv.content.draft.customer.as_str().to_owned(),
                invoice: inv.id.clone(),
                status: inv.status.as_str().to_owned(),
                amount_due_minor: inv.content.amount_due_minor,
                refunded_minor: refunds
                    .iter()
                    .filter(|r| r.provider.is_some() && r.status == RefundStatus::Succeeded)
                    .map(|r| r.amount_minor)
                    .sum(),
            };
            let p = match &opts.provider_views {
                Some(views) => views.get(&inv.id).cloned().flatten(),
                None => self
                    .read(|c| {
                        Ok(providers::object_in(
                            c,
                            Provider::Stripe,
                            "invoice",
                            &inv.id,
                        )?)
                    })?
                    .map(|o| ProviderInvoice {
                        object: format!("stripe {}", o.provider_id),
                        status: provider_state_name(o.payment.state).to_owned(),
                        amount_due_minor: o.payment.amount_due_minor,
                        amount_paid_minor: o.payment.amount_paid_minor,
                        amount_refunded_minor: o.payment.amount_refunded_minor,
                    }),
            };
            let mut diffs = reconcile::compare_provider(&t, p.as_ref());
            if opts.refund_overpayments {
                for d in &mut diffs {
                    if d.field == "amount_paid_minor" && d.class == Class::AmountDrift {
                        d.repair = Some(self.refund_overpayment(inv, d, &refunds, opts.now)?);
                    }
                }
            }
            out.extend(diffs);
        }
        Ok((out, checked))
    }

    /// The overpayment rule: refunds what was collected beyond what the invoice asked, once.
    fn refund_overpayment(
        &self,
        inv: &Invoice,
        d: &Difference,
        refunds: &[Refund],
        now: UnixMs,
    ) -> Result<String, BillingStoreError> {
        if let Some(done) = refunds
            .iter()
            .find(|r| r.origin == RefundOrigin::Rule && r.status.reserves())
        {
            return Ok(format!("refund {} (earlier run)", done.id));
        }
        let excess: i64 = d.delta.parse().unwrap_or(0);
        if excess <= 0 {
            return Ok("nothing to refund".into());
        }
        let refund = self.write(|tx| {
            create_refund_in(
                tx,
                &NewRefund {
                    invoice: inv.id.clone(),
                    amount_minor: Some(excess),
                    reason: RefundReason::Overpayment,
                    memo: format!("overpayment found by reconciliation: {}", d.right.object),
                    origin: RefundOrigin::Rule,
                    origin_ref: Some(format!("reconciliation {}", d.right.object)),
                    actor: "reconciliation".into(),
                },
                now,
            )
        });
        Ok(match refund {
            Ok(r) => format!("refund {}", r.id),
            Err(e) => format!("refund refused: {} ({})", e, e.code()),
        })
    }

    fn ledger_differences(
        &self,
        key: &CustomerKey,
        theirs: &[&Invoice],
    ) -> Result<(Vec<Difference>, u64), BillingStoreError> {
        let (grants, entries) = self.read(|c| Ok((grants_in(c, key)?, entries_in(c, key)?)))?;
        let invoices: Vec<(String, i64, bool)> = theirs
            .iter()
            .filter(|i| i.status != InvoiceStatus::Draft)
            .map(|i| {
                (
                    i.id.clone(),
                    i.content.credits_applied_minor,
                    i.status == InvoiceStatus::Void,
                )
            })
            .collect();
        Ok(reconcile::compare_ledger(&LedgerInput {
            customer: key.as_str(),
            grants: &grants,
            entries: &entries,
            invoices: &invoices,
        }))
    }

    fn save_report(&self, report: &Report, started: UnixMs) -> Result<(), BillingStoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO reconciliation_runs (id, period, started_ms, finished_ms, differences,
                    unexplained, doc) VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)",
                params![
                    report.id,
                    report.period,
                    started.0,
                    report.differences.len() as i64,
                    report.unexplained() as i64,
                    to_json(report)?
                ],
            )?;
            Ok(())
        })
    }

    /// A stored report.
    pub fn reconciliation_report(&self, id: &str) -> Result<Report, BillingStoreError> {
        self.read(|c| {
            let doc: Option<String> = c
                .prepare_cached("SELECT doc FROM reconciliation_runs WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            from_json(
                "reconciliation report",
                &doc.ok_or_else(|| super::not_found("reconciliation report", id))?,
            )
        })
    }

    /// Stored reports, newest first, of one period or all.
    pub fn reconciliation_runs(
        &self,
        period: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunSummary>, BillingStoreError> {
        self.read(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT id, period, started_ms, differences, unexplained
                     FROM reconciliation_runs WHERE (?1 IS NULL OR period = ?1)
                     ORDER BY started_ms DESC, id DESC LIMIT ?2",
                )?
                .query_map(
                    params![period, limit.min(RECONCILIATION_LIST_MAX) as i64],
                    |r| {
                        Ok(RunSummary {
                            id: r.get(0)?,
                            period: r.get(1)?,
                            started_ms: UnixMs(r.get(2)?),
                            differences: r.get(3)?,
                            unexplained: r.get(4)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}
