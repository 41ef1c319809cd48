//! The invoice run: load → decide → commit.
//!
//! For every subscription it drafts an invoice for each billing period that has ended and has
//! none, re-prices drafts still in their grace period (late events land there), and finalizes
//! drafts whose grace period is over: a gapless number for the year, prepaid credit drawn down,
//! content fixed. Every decision is the core's (`invoice::draft`, `ledger::draw`); this module
//! loads inputs (usage from the engine's rollups, earlier invoices for adjustments) and commits
//! every outcome of one run in one transaction. Running it again with nothing new changes
//! nothing.
//!
//! Cost: one rollup lookup per (subscription, period segment, metered price) — proportional to
//! customers, not to events.

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;
use rusqlite::{OptionalExtension, params};
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::billing::{
    BillingError, Customer, CustomerKey, Cycle, Period, Plan, PlanKey, Subscription,
};
use tollgate_core::credit_note::{
    CreditPolicy, CreditReason, CreditRequest, LineCredit, LineRequest, Origin,
};
use tollgate_core::event::Subject;
use tollgate_core::invoice::{
    self, Billed, Catalog, CreditAsk, CreditRoom, DraftInput, InvoiceDraft, InvoiceStatus, Line,
    UsageKey, UsageTable,
};
use tollgate_core::ledger;
use tollgate_core::time::UnixMs;
use tollgate_core::usage::UsageQuery;
use tollgate_core::webhook::EventType;

use super::credit_notes::{CreditNote, NewCreditNote, create_credit_note_in};
use super::{
    BillingStore, BillingStoreError, Invoice, InvoiceContent, append_entries, entries_in,
    grants_in, to_json,
};
use crate::Engine;
use crate::keys::random_hex;

/// Most billing periods one subscription is walked through in one run (100 years monthly).
pub const RUN_PERIODS_PER_SUBSCRIPTION_MAX: usize = 1_200;
/// Default grace period after a period ends, during which late events update the draft (ms).
pub const GRACE_MS_DEFAULT: i64 = 24 * 3600 * 1000;

/// What one run should do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The instant the run acts at.
    pub now: UnixMs,
    /// Grace period after a period ends (ms).
    pub grace_ms: i64,
    /// The engine's acceptance window: how long after a period late events can still arrive.
    pub acceptance_window_ms: i64,
    /// Only the periods that start in this local calendar month (`year`, `month`).
    pub period: Option<(i16, i8)>,
    /// Only this customer.
    pub customer: Option<CustomerKey>,
    /// Finalize these draft invoices now, whatever their grace period says.
    pub finalize_now: BTreeSet<String>,
    /// Only the period that starts at this instant (finalizing one invoice early).
    pub only_period_start: Option<UnixMs>,
    /// Late corrections that lower a finalized period become credit notes against its invoice
    /// under this policy (issued below its limit, pending approval above); `None`: they stay
    /// negative adjustment lines on the next invoice.
    pub credit_policy: Option<CreditPolicy>,
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// Subscriptions looked at.
    pub subscriptions: u32,
    /// Drafts created.
    pub created: u32,
    /// Drafts whose lines changed (late events).
    pub updated: u32,
    /// Invoices finalized.
    pub finalized: u32,
    /// Drafts looked at that did not change.
    pub unchanged: u32,
    /// Credit notes created for late corrections that lowered finalized periods.
    pub credit_notes: u32,
    /// Subscriptions that could not be invoiced, with why.
    pub errors: Vec<RunError>,
    /// Where the time went.
    pub timings: RunTimings,
}

/// Milliseconds per stage of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RunTimings {
    /// Loading customers, plans, subscriptions and invoices.
    pub load_ms: f64,
    /// Reading usage and pricing every period (the core's decisions).
    pub price_ms: f64,
    /// Writing drafts, numbers, ledger entries; one transaction.
    pub commit_ms: f64,
}

#[allow(clippy::float_arithmetic)] // Durations for people, never near money.
fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// A subscription the run could not invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunError {
    /// The subscription.
    pub subscription: String,
    /// The stable code.
    pub code: String,
    /// Why.
    pub message: String,
}

enum Action {
    Create {
        id: String,
        draft: InvoiceDraft,
        grace_until: UnixMs,
        finalize: bool,
    },
    Update {
        id: String,
        draft: InvoiceDraft,
        finalize: bool,
    },
}

/// Runs the invoice cycle once.
pub fn run(
    engine: &Engine,
    store: &BillingStore,
    opts: &RunOptions,
) -> Result<RunReport, BillingStoreError> {
    let _one_at_a_time = store.run_lock.lock();
    let started = std::time::Instant::now();
    let (plans, catalog) = store.catalog()?;
    let subs = store.subscriptions(opts.customer.as_ref())?;
    let customers = store.read(|c| {
        let mut stmt = c.prepare("SELECT doc FROM customers WHERE (?1 IS NULL OR key = ?1)")?;
        let docs = stmt
            .query_map(
                params![opts.customer.as_ref().map(CustomerKey::as_str)],
                |r| r.get::<_, String>(0),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        docs.iter()
            .map(|d| super::from_json::<Customer>("customer", d).map(|c| (c.key.clone(), c)))
            .collect::<Result<BTreeMap<_, _>, _>>()
    })?;
    let mut invoices: BTreeMap<String, BTreeMap<UnixMs, Invoice>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.invoices(&super::InvoiceFilter {
            customer: opts.customer.clone(),
            status: None,
            after: after.clone(),
            limit: super::LIST_LIMIT_MAX,
        })?;
        let done = page.len() < super::LIST_LIMIT_MAX;
        after = page.last().map(|i| i.id.clone());
        for inv in page {
            invoices
                .entry(inv.content.draft.subscription.0.clone())
                .or_default()
                .insert(inv.content.draft.period.start, inv);
        }
        if done {
            break;
        }
    }

    let notes = match opts.credit_policy {
        Some(_) => Some(store.read(super::credit_notes::notes_by_invoice)?),
        None => None,
    };
    let mut report = RunReport::default();
    report.timings.load_ms = ms_since(started);
    let started = std::time::Instant::now();
    let mut actions = Vec::new();
    for sub in &subs {
        report.subscriptions += 1;
        let mine = invoices.remove(&sub.id.0).unwrap_or_default();
        let input = Loaded {
            plans: &plans,
            catalog: &catalog,
            customers: &customers,
            notes: notes.as_ref(),
        };
        match plan_subscription(engine, &input, sub, mine, opts) {
            Ok(mut a) => actions.append(&mut a),
            Err(e) => report.errors.push(RunError {
                subscription: sub.id.0.clone(),
                code: e.code().to_owned(),
                message: e.to_string(),
            }),
        }
    }
    report.timings.price_ms = ms_since(started);
    let started = std::time::Instant::now();
    store.write(|tx| {
        let mut numbers = Numbers::default();
        let with_grants: BTreeSet<String> = {
            let mut stmt = tx.prepare_cached("SELECT DISTINCT customer FROM credit_grants")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?
        };
        for action in actions {
            let asks = match &action {
                Action::Create { draft, .. } | Action::Update { draft, .. } => {
                    draft.credit_asks.clone()
                }
            };
            if let Some(policy) = opts.credit_policy {
                late_credit_notes(tx, &asks, policy, opts.now, &mut report)?;
            }
            match action {
                Action::Create {
                    id,
                    draft,
                    grace_until,
                    finalize,
                } => {
                    let (status, number, finalized, content) = if finalize {
                        let (number, content) =
                            finalize_content(tx, &mut numbers, &with_grants, &id, draft, opts.now)?;
                        ("finalized", Some(number), Some(opts.now.0), content)
                    } else {
                        ("draft", None, None, content_of(draft, 0))
                    };
                    let d = &content.draft;
                    tx.prepare_cached(
                        "INSERT INTO invoices (id, customer, subscription, period_start_ms, period_end_ms,
                            status, number, doc, grace_until_ms, created_ms, updated_ms, finalized_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
                    )?
                    .execute(params![
                        id,
                        d.customer.as_str(),
                        d.subscription.0,
                        d.period.start.0,
                        d.period.end.0,
                        status,
                        number,
                        to_json(&content)?,
                        grace_until.0,
                        opts.now.0,
                        finalized
                    ])?;
                    report.created += 1;
                    if finalize {
                        report.finalized += 1;
                        super::enqueue_invoice_event(
                            tx,
                            EventType::InvoiceFinalized,
                            (id.as_str(), number.as_deref(), InvoiceStatus::Finalized),
                            &content,
                            opts.now,
                        )?;
                    }
                }
                Action::Update {
                    id,
                    draft,
                    finalize: false,
                } => {
                    let changed = tx
                        .prepare_cached(
                            "UPDATE invoices SET doc = ?2, updated_ms = ?3
                             WHERE id = ?1 AND status = 'draft' AND doc != ?2",
                        )?
                        .execute(params![id, to_json(&content_of(draft, 0))?, opts.now.0])?;
                    if changed > 0 {
                        report.updated += 1;
                    } else {
                        report.unchanged += 1;
                    }
                }
                Action::Update {
                    id,
                    draft,
                    finalize: true,
                } => {
                    let (number, content) =
                        finalize_content(tx, &mut numbers, &with_grants, &id, draft, opts.now)?;
                    let n = tx
                        .prepare_cached(
                            "UPDATE invoices SET status = 'finalized', number = ?2, doc = ?3,
                                finalized_ms = ?4, updated_ms = ?4
                             WHERE id = ?1 AND status = 'draft'",
                        )?
                        .execute(params![id, number, to_json(&content)?, opts.now.0])?;
                    assert_eq!(n, 1, "invoice {id} was not a draft at finalization");
                    report.finalized += 1;
                    super::enqueue_invoice_event(
                        tx,
                        EventType::InvoiceFinalized,
                        (id.as_str(), Some(number.as_str()), InvoiceStatus::Finalized),
                        &content,
                        opts.now,
                    )?;
                }
            }
        }
        numbers.store(tx)
    })?;
    report.timings.commit_ms = ms_since(started);
    Ok(report)
}

/// Creates the credit notes a draft asked for (one per credited invoice, a line per credited
/// line), in the run's transaction. A note the invoice can no longer take (a cap reached
/// meanwhile) is reported as an error of the run instead of failing it.
fn late_credit_notes(
    tx: &rusqlite::Transaction<'_>,
    asks: &[CreditAsk],
    policy: CreditPolicy,
    now: UnixMs,
    report: &mut RunReport,
) -> Result<(), BillingStoreError> {
    let mut by_invoice: BTreeMap<&str, Vec<&CreditAsk>> = BTreeMap::new();
    for ask in asks {
        by_invoice
            .entry(ask.invoice.as_str())
            .or_default()
            .push(ask);
    }
    for (invoice, asks) in by_invoice {
        let new = NewCreditNote {
            invoice: invoice.to_owned(),
            request: CreditRequest::Lines(
                asks.iter()
                    .map(|a| LineRequest {
                        line: a.line,
                        credit: LineCredit::AmountMinor(a.amount_minor),
                    })
                    .collect(),
            ),
            reason: CreditReason::LateCorrection,
            memo: format!(
                "usage of {} – {} corrected after the invoice was finalized",
                asks[0].period.start.to_rfc3339(),
                asks[0].period.end.to_rfc3339()
            ),
            origin: Origin::LateCorrection,
            actor: "invoice_run".into(),
            require_approval: false,
            refund: false,
            quantities: asks.iter().map(|a| (a.line, a.quantity)).collect(),
        };
        match create_credit_note_in(tx, &new, policy, now) {
            Ok(_) => report.credit_notes += 1,
            Err(BillingStoreError::Credit(e)) => report.errors.push(RunError {
                subscription: String::new(),
                code: e.code().to_owned(),
                message: format!("late-correction credit note for {invoice} refused: {e}"),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn content_of(draft: InvoiceDraft, credits_applied_minor: i64) -> InvoiceContent {
    let amount_due_minor = draft.total_minor - credits_applied_minor;
    InvoiceContent {
        draft,
        credits_applied_minor,
        amount_due_minor,
    }
}

/// Gapless invoice numbers per UTC year, taken inside the run's transaction: read once per
/// year, handed out in order, written back before commit.
#[derive(Default)]
struct Numbers {
    last: BTreeMap<i64, i64>,
}

impl Numbers {
    fn next(
        &mut self,
        tx: &rusqlite::Connection,
        now: UnixMs,
    ) -> Result<String, BillingStoreError> {
        let year = i64::from(now.to_timestamp().to_zoned(TimeZone::UTC).year());
        let last = match self.last.get(&year) {
            Some(n) => *n,
            None => tx
                .prepare_cached("SELECT last FROM invoice_numbers WHERE year = ?1")?
                .query_row(params![year], |r| r.get(0))
                .optional()?
                .unwrap_or(0),
        };
        let seq = last + 1;
        self.last.insert(year, seq);
        Ok(format!("TG-{year}-{seq:06}"))
    }

    fn store(&self, tx: &rusqlite::Connection) -> Result<(), BillingStoreError> {
        for (year, last) in &self.last {
            tx.prepare_cached(
                "INSERT INTO invoice_numbers (year, last) VALUES (?1, ?2)
                 ON CONFLICT (year) DO UPDATE SET last = excluded.last",
            )?
            .execute(params![year, last])?;
        }
        Ok(())
    }
}

/// The finalized form of a draft: its number, and prepaid credit drawn (ledger entries
/// appended in the same transaction). Customers without grants skip the ledger.
fn finalize_content(
    tx: &rusqlite::Connection,
    numbers: &mut Numbers,
    with_grants: &BTreeSet<String>,
    id: &str,
    draft: InvoiceDraft,
    now: UnixMs,
) -> Result<(String, InvoiceContent), BillingStoreError> {
    let number = numbers.next(tx, now)?;
    let customer = draft.customer.clone();
    if !with_grants.contains(customer.as_str()) {
        return Ok((number, content_of(draft, 0)));
    }
    let grants = grants_in(tx, &customer)?;
    let mut entries = entries_in(tx, &customer)?;
    let expired = ledger::expire(&grants, &entries, now, &format!("txn_{}", random_hex(8)));
    append_entries(tx, &customer, &expired)?;
    entries.extend(expired);
    let drawn = ledger::draw(
        &grants,
        &entries,
        draft.currency,
        draft.total_minor,
        now,
        &format!("txn_{}", random_hex(8)),
        id,
    );
    append_entries(tx, &customer, &drawn)?;
    let credits: i64 = drawn
        .iter()
        .filter(|e| e.account == ledger::Account::InvoiceSettlement)
        .map(|e| e.amount_minor)
        .sum();
    Ok((number, content_of(draft, credits)))
}

/// What a run loaded once for every subscription.
struct Loaded<'a> {
    plans: &'a BTreeMap<PlanKey, Plan>,
    catalog: &'a Catalog,
    customers: &'a BTreeMap<CustomerKey, Customer>,
    /// Credit notes by invoice, when late corrections become credit notes.
    notes: Option<&'a NotesByInvoice>,
}

/// Credit notes by invoice id.
type NotesByInvoice = BTreeMap<String, Vec<CreditNote>>;

fn plan_subscription(
    engine: &Engine,
    input: &Loaded<'_>,
    sub: &Subscription,
    mut mine: BTreeMap<UnixMs, Invoice>,
    opts: &RunOptions,
) -> Result<Vec<Action>, BillingStoreError> {
    let (plans, catalog, customers) = (input.plans, input.catalog, input.customers);
    let customer = customers
        .get(&sub.customer)
        .ok_or_else(|| super::not_found("customer", sub.customer.as_str()))?;
    let cycle = Cycle::new(customer, interval_of(plans, sub)?);
    let periods = periods_to_invoice(&cycle, sub, opts)?;
    let mut actions = Vec::new();
    for period in periods {
        let existing = mine.get(&period.start);
        if existing.is_some_and(|i| i.status.is_final()) {
            continue;
        }
        let draft = draft_period(
            engine,
            catalog,
            customer,
            sub,
            period,
            &mine,
            opts.acceptance_window_ms,
            None,
            input.notes,
        )?;
        let (action, id) = match existing {
            None => {
                let id = format!("inv_{}", random_hex(8));
                let grace_until = UnixMs(period.end.0.saturating_add(opts.grace_ms));
                let finalize = opts.now >= grace_until;
                (
                    Action::Create {
                        id: id.clone(),
                        draft: draft.clone(),
                        grace_until,
                        finalize,
                    },
                    id,
                )
            }
            Some(inv) => {
                let finalize = opts.now >= inv.grace_until || opts.finalize_now.contains(&inv.id);
                (
                    Action::Update {
                        id: inv.id.clone(),
                        draft: draft.clone(),
                        finalize,
                    },
                    inv.id.clone(),
                )
            }
        };
        let finalize = matches!(
            action,
            Action::Create { finalize: true, .. } | Action::Update { finalize: true, .. }
        );
        actions.push(action);
        // Later periods of this run see this one as billed, and the corrections it asked as
        // credit notes as given back (the notes are written at commit).
        let mut draft = draft;
        for ask in std::mem::take(&mut draft.credit_asks) {
            let template = mine
                .values()
                .find(|i| i.id == ask.invoice)
                .and_then(|i| i.content.draft.lines.iter().find(|l| l.number == ask.line));
            if let Some(t) = template {
                let given_back = Line {
                    kind: invoice::LineKind::Adjustment,
                    quantity: -ask.quantity,
                    previously_billed_minor: None,
                    amount_minor: -ask.amount_minor,
                    ..t.clone()
                };
                draft.lines.push(given_back);
            }
        }
        let now = opts.now;
        mine.insert(
            period.start,
            Invoice {
                id,
                number: None,
                status: if finalize {
                    InvoiceStatus::Finalized
                } else {
                    InvoiceStatus::Draft
                },
                content: content_of(draft, 0),
                grace_until: now,
                created_ms: now,
                updated_ms: now,
                finalized_ms: finalize.then_some(now),
                paid_ms: None,
                voided_ms: None,
            },
        );
    }
    Ok(actions)
}

/// Drafts `period` of `sub`, correcting earlier finalized periods that late events may have
/// reached since the subscription's last finalization: a period's events can arrive until its
/// end + the acceptance window, and the last finalized invoice already re-priced every period
/// whose window was still open then. So the set is bounded by the window, whatever the
/// interval (a yearly plan's late January event is still billed a year later).
// The inputs are the run's loaded state; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
fn draft_period(
    engine: &Engine,
    catalog: &Catalog,
    customer: &Customer,
    sub: &Subscription,
    period: Period,
    mine: &BTreeMap<UnixMs, Invoice>,
    acceptance_window_ms: i64,
    forecast_at: Option<UnixMs>,
    notes: Option<&NotesByInvoice>,
) -> Result<InvoiceDraft, BillingStoreError> {
    let last_finalized = mine
        .values()
        .filter(|i| i.status.is_final())
        .filter_map(|i| i.finalized_ms)
        .max()
        .unwrap_or(UnixMs(i64::MIN));
    let correctable: Vec<&Invoice> = mine
        .values()
        .filter(|i| {
            let p = i.content.draft.period;
            i.status.is_final()
                && p.end <= period.start
                && p.end.0.saturating_add(acceptance_window_ms) > last_finalized.0
        })
        .collect();
    // With credit notes for late corrections: what notes gave back counts as billed, and each
    // line's room to give back more.
    let mut room = notes.map(|_| CreditRoom::default());
    let mut lines: Vec<Vec<Line>> = Vec::with_capacity(correctable.len());
    for inv in &correctable {
        let mut all = inv.content.draft.lines.clone();
        if let (Some(notes), Some(room)) = (notes, room.as_mut()) {
            let of = notes.get(&inv.id).map_or(&[][..], Vec::as_slice);
            all.extend(super::credit_notes::corrections_as_lines(inv, of));
            super::credit_notes::credit_room_of(room, inv, of)?;
        }
        lines.push(all);
    }
    let earlier: Vec<Billed<'_>> = correctable
        .iter()
        .zip(&lines)
        .map(|(i, lines)| Billed {
            period: i.content.draft.period,
            voided: i.status == InvoiceStatus::Void,
            lines,
        })
        .collect();
    let needs = invoice::usage_needs(sub, catalog, &period, &earlier)?;
    let mut usage = load_usage(engine, &sub.customer, needs)?;
    if let Some(now) = forecast_at {
        usage = invoice::forecast::extrapolate(&usage, now);
    }
    Ok(invoice::draft(&DraftInput {
        customer,
        subscription: sub,
        catalog,
        period,
        earlier: &earlier,
        usage: &usage,
        credit_room: room.as_ref(),
    })?)
}

/// What `period` of `sub` charges when priced from the rollups now, on its own (no adjustments
/// of earlier periods): what reconciliation compares with what was billed for the period.
pub(crate) fn reprice_period(
    engine: &Engine,
    catalog: &Catalog,
    customer: &Customer,
    sub: &Subscription,
    period: Period,
) -> Result<InvoiceDraft, BillingStoreError> {
    draft_period(
        engine,
        catalog,
        customer,
        sub,
        period,
        &BTreeMap::new(),
        0,
        None,
        None,
    )
}

/// The invoice the customer's running subscription would get for the period containing `now`,
/// priced with the usage so far (nothing is stored): the running charges, including
/// adjustments the next invoice will carry. `None` when no subscription runs now.
pub fn upcoming(
    engine: &Engine,
    store: &BillingStore,
    customer: &CustomerKey,
    now: UnixMs,
    acceptance_window_ms: i64,
) -> Result<Option<InvoiceDraft>, BillingStoreError> {
    running(engine, store, customer, now, acceptance_window_ms, false)
}

/// The same invoice as [`upcoming`], priced with the usage so far extrapolated linearly to
/// the end of the period ([`invoice::forecast::extrapolate`]): the forecast of the period's
/// charges. `None` when no subscription runs now.
pub fn forecast(
    engine: &Engine,
    store: &BillingStore,
    customer: &CustomerKey,
    now: UnixMs,
    acceptance_window_ms: i64,
) -> Result<Option<InvoiceDraft>, BillingStoreError> {
    running(engine, store, customer, now, acceptance_window_ms, true)
}

fn running(
    engine: &Engine,
    store: &BillingStore,
    customer: &CustomerKey,
    now: UnixMs,
    acceptance_window_ms: i64,
    forecast: bool,
) -> Result<Option<InvoiceDraft>, BillingStoreError> {
    let c = store.customer(customer)?;
    let (plans, catalog) = store.catalog()?;
    let Some(sub) = store
        .subscriptions(Some(customer))?
        .into_iter()
        .find(|s| s.phase_at(now).is_some())
    else {
        return Ok(None);
    };
    let period = Cycle::new(&c, interval_of(&plans, &sub)?).period_containing(now)?;
    let mine: BTreeMap<UnixMs, Invoice> = store
        .invoices(&super::InvoiceFilter {
            customer: Some(customer.clone()),
            status: None,
            after: None,
            limit: super::LIST_LIMIT_MAX,
        })?
        .into_iter()
        .filter(|i| i.content.draft.subscription == sub.id)
        .map(|i| (i.content.draft.period.start, i))
        .collect();
    draft_period(
        engine,
        &catalog,
        &c,
        &sub,
        period,
        &mine,
        acceptance_window_ms,
        forecast.then_some(now),
        Some(&store.read(super::credit_notes::notes_by_invoice)?),
    )
    .map(Some)
}

/// The billing interval of a subscription: its first plan's (plan changes keep it).
fn interval_of(
    plans: &BTreeMap<PlanKey, Plan>,
    sub: &Subscription,
) -> Result<tollgate_core::billing::Interval, BillingStoreError> {
    let first = sub.phases.first().ok_or_else(|| BillingError::Conflict {
        reason: "subscription without phases".into(),
    })?;
    let plan = plans
        .get(&first.plan)
        .ok_or_else(|| super::not_found("plan", first.plan.as_str()))?;
    Ok(plan.interval)
}

/// The ended periods of a subscription, oldest first.
fn periods_to_invoice(
    cycle: &Cycle<'_>,
    sub: &Subscription,
    opts: &RunOptions,
) -> Result<Vec<Period>, BillingStoreError> {
    let ended = |p: &Period| p.end <= opts.now && sub.overlaps(p);
    if let Some((year, month)) = opts.period {
        return Ok(cycle
            .period_starting_in(year, month)?
            .filter(|p| ended(p))
            .into_iter()
            .collect());
    }
    if let Some(start) = opts.only_period_start {
        let p = cycle.period_containing(start)?;
        return Ok([p]
            .into_iter()
            .filter(|p| p.start == start && ended(p))
            .collect());
    }
    let mut out = Vec::new();
    let mut p = cycle.period_containing(sub.start())?;
    while p.end <= opts.now && sub.overlaps(&p) && out.len() < RUN_PERIODS_PER_SUBSCRIPTION_MAX {
        out.push(p);
        p = cycle.period_containing(p.end)?;
    }
    Ok(out)
}

fn load_usage(
    engine: &Engine,
    customer: &CustomerKey,
    needs: BTreeSet<UsageKey>,
) -> Result<UsageTable, BillingStoreError> {
    let subject = Subject::parse(customer.as_str()).map_err(|e| BillingError::Invalid {
        field: "customer",
        reason: e.to_string(),
    })?;
    let mut table = UsageTable::new();
    for key in needs {
        let rows = engine
            .usage(
                &key.meter,
                &UsageQuery {
                    subject: Some(subject.clone()),
                    from: key.span.start,
                    to: key.span.end,
                    window: None,
                    time_zone: TimeZone::UTC,
                    group_by: Vec::new(),
                },
            )
            .map_err(|e| BillingError::Conflict {
                reason: format!("usage of meter {}: {e}", key.meter),
            })?;
        let quantity = rows.iter().map(|r| r.value).sum::<Decimal>();
        table.insert(key, quantity);
    }
    Ok(table)
}
