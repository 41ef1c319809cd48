//! The invoice run against its invariants: an invoice recomputed from the raw events equals the
//! stored one (from an oracle that dedups the generated events itself, and from an engine
//! reopened on the same data directory, whose rollups are rebuilt by replaying raw frames);
//! and after finalization with prepaid credit the ledger balances, draws follow the greedy
//! rule, and the balance is what the unexpired grants have left.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use proptest::prelude::*;
use rust_decimal::Decimal;
use tollgate_core::billing::{
    Customer, CustomerKey, Cycle, Interval, Period, Phase, Plan, PlanKey, Subscription,
    SubscriptionChange, SubscriptionId, ZoneName,
};
use tollgate_core::event::Subject;
use tollgate_core::event::batch::ndjson_spans;
use tollgate_core::invoice::{
    self, Billed, Catalog, DraftInput, InvoiceChange, InvoiceDraft, InvoiceStatus, UsageKey,
    UsageTable,
};
use tollgate_core::ledger::{Account, Grant};
use tollgate_core::meter::{Meter, MeterSlug, MeterSpec};
use tollgate_core::money::Currency;
use tollgate_core::pricing::{Price, PriceKey, PriceModel, Tier};
use tollgate_core::time::{FixedClock, MINUTE_MS, UnixMs};
use tollgate_core::usage::UsageQuery;
use tollgate_store::billing::run::{self, RunOptions};
use tollgate_store::billing::{Invoice, InvoiceFilter};
use tollgate_store::{BatchOutcome, BillingStore, Engine, EngineConfig, Metrics};

/// 2026-11-20T00:00:00Z: after the September and October periods of every customer.
const NOW: UnixMs = UnixMs(1_795_132_800_000);
/// 2026-09-01T00:00:00Z: the earliest event and subscription start.
const SEP_1: UnixMs = UnixMs(1_788_220_800_000);
const DAY_MS: i64 = 86_400_000;
/// 2026-10-15T00:00:00Z: an earlier invoice run, when only the first period of most customers
/// has ended.
const RUN1: UnixMs = UnixMs(1_792_022_400_000);
/// Wide enough that every generated event is accepted and every earlier period is correctable.
const WINDOW_MS: i64 = 120 * DAY_MS;
/// Minutes between `SEP_1` and one minute before `NOW`: where event times fall.
const EVENT_MINUTES: i64 = (NOW.0 - SEP_1.0) / MINUTE_MS - 1;
const CUSTOMERS: usize = 3;
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Chatham",
];
const TAX_RATES: &[&str] = &["0", "0.07", "0.19", "0.2125"];

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-invoice-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &TempDir) -> Engine {
    Engine::open(
        &dir.0,
        EngineConfig {
            acceptance_window_ms: WINDOW_MS,
            ..EngineConfig::default()
        },
        Arc::new(FixedClock(NOW)),
        Arc::new(Metrics::new()),
    )
    .unwrap()
}

fn d(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

fn slug(text: &str) -> MeterSlug {
    MeterSlug::parse(text).unwrap()
}

fn customer_key(i: usize) -> CustomerKey {
    CustomerKey::parse(&format!("cust-{i}")).unwrap()
}

// ---- generated input ----

/// One generated event. `subject == CUSTOMERS` is a subject nobody is billed for.
#[derive(Clone, Debug)]
struct Ev {
    source: u8,
    id: u16,
    subject: usize,
    /// Milliseconds after `SEP_1`.
    offset_ms: i64,
    bytes: u64,
}

impl Ev {
    fn subject(&self) -> String {
        if self.subject < CUSTOMERS {
            customer_key(self.subject).to_string()
        } else {
            "stranger".into()
        }
    }

    fn time(&self) -> UnixMs {
        UnixMs(SEP_1.0 + self.offset_ms)
    }

    fn line(&self) -> String {
        format!(
            r#"{{"specversion":"1.0","id":"e{}","source":"/src{}","type":"proxy.request","subject":"{}","time":"{}","data":{{"bytes":{}}}}}"#,
            self.id,
            self.source,
            self.subject(),
            self.time().to_rfc3339(),
            self.bytes
        )
    }
}

/// Local midnights of `ZONES` in UTC (hours × 60 + minutes), where periods start and end.
const MIDNIGHTS_UTC_MINUTES: &[i64] = &[
    0,
    22 * 60,
    23 * 60,
    4 * 60,
    5 * 60,
    18 * 60 + 30,
    10 * 60 + 15,
    11 * 60 + 15,
];

/// Milliseconds after `SEP_1`, below `max_ms`: anywhere, or on (or one millisecond before) an
/// instant where some customer's period may start, since that is where an off-by-one would hide.
fn offset_ms(max_ms: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => 0..max_ms,
        1 => (0..max_ms / DAY_MS, prop::sample::select(MIDNIGHTS_UTC_MINUTES), any::<bool>())
            .prop_map(move |(day, minutes, before)| {
                let at = day * DAY_MS + minutes * MINUTE_MS - i64::from(before);
                at.clamp(0, max_ms - 1)
            }),
    ]
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0u8..2,
        0u16..150,
        0..=CUSTOMERS,
        offset_ms(EVENT_MINUTES * MINUTE_MS),
        0u64..2_000_000_000,
    )
        .prop_map(|(source, id, subject, offset_ms, bytes)| Ev {
            source,
            id,
            subject,
            offset_ms,
            bytes,
        })
}

/// An event that arrives after the first invoice run, for a period it may already have billed.
fn late_ev() -> impl Strategy<Value = Ev> {
    (ev(), offset_ms(RUN1.0 - SEP_1.0)).prop_map(|(e, offset_ms)| Ev { offset_ms, ..e })
}

/// How one customer is set up.
#[derive(Clone, Debug)]
struct CustomerSpec {
    zone: usize,
    /// Day of August 2026 the periods are anchored on (31: Aug 31, Sep 30, Oct 31, …).
    anchor_day: i8,
    tax: usize,
    /// Subscription start, minutes after `SEP_1`.
    start_minutes: i64,
    /// Trial length in minutes.
    trial_minutes: Option<i64>,
    /// Cancellation, minutes after the start.
    cancel_minutes: Option<i64>,
}

fn customer_spec() -> impl Strategy<Value = CustomerSpec> {
    (
        0..ZONES.len(),
        1i8..=31,
        0..TAX_RATES.len(),
        0i64..20 * 1440,
        prop::option::weighted(0.3, 1i64..12 * 1440),
        prop::option::weighted(0.3, 1i64..70 * 1440),
    )
        .prop_map(
            |(zone, anchor_day, tax, start_minutes, trial_minutes, cancel_minutes)| CustomerSpec {
                zone,
                anchor_day,
                tax,
                start_minutes,
                trial_minutes,
                cancel_minutes,
            },
        )
}

/// A prepaid grant, times in days relative to `NOW` (negative: before).
#[derive(Clone, Debug)]
struct GrantSpec {
    amount_minor: i64,
    priority: u32,
    granted_days: i64,
    /// Days after the grant it expires.
    expires_after_days: Option<i64>,
}

fn grant_spec() -> impl Strategy<Value = GrantSpec> {
    (1i64..6_000, 0u32..3, -90i64..3, prop::option::of(1i64..120)).prop_map(
        |(amount_minor, priority, granted_days, expires_after_days)| GrantSpec {
            amount_minor,
            priority,
            granted_days,
            expires_after_days,
        },
    )
}

// ---- the scenario ----

fn sum_meter() -> Meter {
    let spec: MeterSpec =
        serde_json::from_str(r#"{"aggregation":"sum","value_path":"$.data.bytes"}"#).unwrap();
    Meter::new(slug("bytes"), spec).unwrap()
}

fn count_meter() -> Meter {
    let spec: MeterSpec = serde_json::from_str(r#"{"aggregation":"count"}"#).unwrap();
    Meter::new(slug("requests"), spec).unwrap()
}

/// A flat fee, a graduated price on bytes (with a free allowance and a cap) and a package price
/// on the request count (with an allowance and a minimum): every proration rule is exercised.
fn prices() -> Vec<Price> {
    vec![
        Price {
            key: PriceKey::parse("base").unwrap(),
            name: "Base fee".into(),
            meter: None,
            model: PriceModel::Flat { amount: d("20") },
            free_units: Decimal::ZERO,
            minimum_amount: None,
            maximum_amount: None,
        },
        Price {
            key: PriceKey::parse("traffic").unwrap(),
            name: "Traffic".into(),
            meter: Some(slug("bytes")),
            model: PriceModel::Graduated {
                tiers: vec![
                    Tier {
                        up_to: Some(d("5000000000")),
                        unit_price: d("0.000000002"),
                        flat_fee: Decimal::ZERO,
                    },
                    Tier {
                        up_to: None,
                        unit_price: d("0.000000001"),
                        flat_fee: d("1.5"),
                    },
                ],
            },
            free_units: d("100000000"),
            minimum_amount: None,
            maximum_amount: Some(d("25")),
        },
        Price {
            key: PriceKey::parse("requests").unwrap(),
            name: "Requests".into(),
            meter: Some(slug("requests")),
            model: PriceModel::Package {
                package_size: d("2"),
                package_price: d("0.25"),
            },
            free_units: d("5"),
            minimum_amount: Some(d("0.5")),
            maximum_amount: None,
        },
    ]
}

fn ingest(engine: &Engine, lines: &[String]) -> BatchOutcome {
    let body = lines.join("\n");
    let spans = ndjson_spans(&body);
    engine.ingest_blocking(engine.prepare(body, spans)).unwrap()
}

/// Ingests the events in batches cut by `cuts`, re-sending the batches `resend` picks. The count
/// meter is defined after the first batch, so it is backfilled from stored frames.
fn ingest_all(engine: &Engine, events: &[Ev], cuts: &[usize], resend: &[bool]) {
    let lines: Vec<String> = events.iter().map(Ev::line).collect();
    engine.put_meter_blocking(sum_meter()).unwrap();
    let mut at = 0;
    let mut k = 0;
    while at < lines.len() {
        let n = cuts[k % cuts.len()].min(lines.len() - at);
        let first = ingest(engine, &lines[at..at + n]);
        assert_eq!(first.rejected, 0, "{:?}", first.errors);
        if resend[k % resend.len()] {
            let again = ingest(engine, &lines[at..at + n]);
            assert_eq!((again.accepted, again.rejected), (0, 0), "a re-sent batch");
        }
        if k == 0 {
            engine.put_meter_blocking(count_meter()).unwrap();
        }
        at += n;
        k += 1;
    }
}

/// The customer and subscription of one spec, as the test means them.
fn customer_of(i: usize, spec: &CustomerSpec) -> Customer {
    Customer {
        key: customer_key(i),
        name: format!("Customer {i}"),
        email: None,
        currency: Currency::parse("USD").unwrap(),
        time_zone: ZoneName::parse(ZONES[spec.zone]).unwrap(),
        billing_anchor: Date::new(2026, 8, spec.anchor_day).unwrap(),
        tax_rate: d(TAX_RATES[spec.tax]),
        metadata: BTreeMap::new(),
        created_ms: SEP_1,
    }
}

fn plan_key() -> PlanKey {
    PlanKey::parse("metered").unwrap()
}

/// Creates the plan, customers and subscriptions; returns the subscriptions as stored.
fn set_up_billing(store: &BillingStore, specs: &[CustomerSpec]) -> Vec<Subscription> {
    let usd = Currency::parse("USD").unwrap();
    store
        .create_plan(&Plan {
            key: plan_key(),
            name: "Metered".into(),
            currency: usd,
            interval: Interval::Month,
            created_ms: SEP_1,
        })
        .unwrap();
    let version = store
        .publish_version(&plan_key(), prices(), Vec::new(), SEP_1)
        .unwrap();
    assert_eq!(version.version, 1);
    let mut subs = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        store.create_customer(&customer_of(i, spec)).unwrap();
        let start = UnixMs(SEP_1.0 + spec.start_minutes * MINUTE_MS);
        let sub = Subscription::new(
            SubscriptionId(format!("sub_{i:016x}")),
            customer_key(i),
            Phase {
                plan: plan_key(),
                version: 1,
                start,
            },
            spec.trial_minutes.map(|m| UnixMs(start.0 + m * MINUTE_MS)),
            SEP_1,
        )
        .unwrap();
        store.create_subscription(&sub).unwrap();
        let sub = match spec.cancel_minutes {
            Some(m) => store
                .change_subscription(
                    &sub.id.0,
                    SubscriptionChange::Cancel {
                        at: UnixMs(start.0 + m * MINUTE_MS),
                    },
                )
                .unwrap(),
            None => sub,
        };
        subs.push(sub);
    }
    subs
}

fn run_options() -> RunOptions {
    run_options_at(NOW)
}

fn run_options_at(now: UnixMs) -> RunOptions {
    RunOptions {
        now,
        grace_ms: 0,
        acceptance_window_ms: WINDOW_MS,
        period: None,
        customer: None,
        finalize_now: BTreeSet::new(),
        only_period_start: None,
        credit_policy: None,
    }
}

fn invoices_of(store: &BillingStore, customer: &CustomerKey) -> Vec<Invoice> {
    let mut all = store
        .invoices(&InvoiceFilter {
            customer: Some(customer.clone()),
            status: None,
            after: None,
            limit: 1_000,
        })
        .unwrap();
    all.sort_by_key(|i| i.content.draft.period.start);
    all
}

/// The ended periods a subscription overlaps, walked from its start by the customer's cycle.
fn expected_periods(customer: &Customer, sub: &Subscription) -> Vec<Period> {
    let cycle = Cycle::new(customer, Interval::Month);
    let mut out = Vec::new();
    let mut p = cycle.period_containing(sub.start()).unwrap();
    while p.end <= NOW && sub.overlaps(&p) {
        out.push(p);
        p = cycle.period_containing(p.end).unwrap();
    }
    out
}

// ---- the oracles ----

/// The events that count: the first of each (source, id) in ingest order.
fn distinct(events: &[Ev]) -> Vec<&Ev> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert((e.source, e.id)))
        .collect()
}

/// Usage straight from the events: Σ bytes or the number of events, by subject and span.
fn oracle_usage(events: &[&Ev], customer: &CustomerKey, needs: &BTreeSet<UsageKey>) -> UsageTable {
    needs
        .iter()
        .map(|key| {
            let mine = events
                .iter()
                .filter(|e| e.subject() == customer.as_str() && key.span.contains(e.time()));
            let q = match key.meter.as_str() {
                "bytes" => mine.map(|e| Decimal::from(e.bytes)).sum(),
                "requests" => Decimal::from(mine.count()),
                other => panic!("no oracle for meter {other}"),
            };
            (key.clone(), q)
        })
        .collect()
}

/// Usage as the engine's rollups answer it (what the invoice run reads).
fn engine_usage(engine: &Engine, customer: &CustomerKey, needs: &BTreeSet<UsageKey>) -> UsageTable {
    let subject = Subject::parse(customer.as_str()).unwrap();
    needs
        .iter()
        .map(|key| {
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
                .unwrap();
            (key.clone(), rows.iter().map(|r| r.value).sum())
        })
        .collect()
}

/// Drafts every stored invoice of a customer again, with usage from `usage`, each seeing the
/// customer's earlier stored invoices as billed; returns (stored, recomputed) pairs.
fn redraft(
    customer: &Customer,
    sub: &Subscription,
    catalog: &Catalog,
    stored: &[Invoice],
    mut usage: impl FnMut(&Invoice, &BTreeSet<UsageKey>) -> UsageTable,
) -> Vec<(InvoiceDraft, InvoiceDraft)> {
    stored
        .iter()
        .map(|inv| {
            let period = inv.content.draft.period;
            let earlier: Vec<Billed<'_>> = stored
                .iter()
                .filter(|e| e.content.draft.period.end <= period.start)
                .map(|e| Billed {
                    period: e.content.draft.period,
                    voided: e.status == InvoiceStatus::Void,
                    lines: &e.content.draft.lines,
                })
                .collect();
            let needs = invoice::usage_needs(sub, catalog, &period, &earlier).unwrap();
            let table = usage(inv, &needs);
            let draft = invoice::draft(&DraftInput {
                customer,
                subscription: sub,
                catalog,
                period,
                earlier: &earlier,
                usage: &table,
                credit_room: None,
            })
            .unwrap();
            (inv.content.draft.clone(), draft)
        })
        .collect()
}

fn invoice_numbers(store: &BillingStore) -> Vec<String> {
    let mut numbers: Vec<String> = store
        .invoices(&InvoiceFilter {
            limit: 1_000,
            ..InvoiceFilter::default()
        })
        .unwrap()
        .into_iter()
        .filter_map(|i| i.number)
        .collect();
    numbers.sort();
    numbers
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Any stream (duplicates and conflicting re-uses of an id included), cut into any batches,
    /// invoiced once with no grace: each stored invoice equals the draft priced from usage
    /// computed straight from the events, and equals it again after the engine is reopened and
    /// its rollups are rebuilt from the raw frames.
    #[test]
    fn an_invoice_recomputed_from_raw_events_equals_the_stored_one(
        specs in prop::collection::vec(customer_spec(), CUSTOMERS),
        events in prop::collection::vec(ev(), 1..160),
        resent in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        cuts in prop::collection::vec(1usize..40, 1..8),
        resend in prop::collection::vec(any::<bool>(), 8),
    ) {
        // Exact copies of earlier events, sent again later in the stream.
        let mut events = events;
        for r in &resent {
            let copy = events[r.index(events.len())].clone();
            events.push(copy);
        }
        let dir = TempDir::new("recompute");
        let engine = open(&dir);
        ingest_all(&engine, &events, &cuts, &resend);
        let store = BillingStore::open(&dir.0).unwrap();
        let subs = set_up_billing(&store, &specs);
        let report = run::run(&engine, &store, &run_options()).unwrap();
        prop_assert!(report.errors.is_empty(), "{:?}", report.errors);
        prop_assert_eq!(report.created, report.finalized, "grace 0 finalizes every draft");
        let (_, catalog) = store.catalog().unwrap();
        let counted = distinct(&events);

        let mut invoiced = 0;
        for (i, (spec, sub)) in specs.iter().zip(&subs).enumerate() {
            let customer = customer_of(i, spec);
            let stored = invoices_of(&store, &customer.key);
            let periods: Vec<Period> = stored.iter().map(|i| i.content.draft.period).collect();
            prop_assert_eq!(&periods, &expected_periods(&customer, sub), "one invoice per ended period");
            for inv in &stored {
                prop_assert_eq!(inv.status, InvoiceStatus::Finalized);
                prop_assert_eq!(inv.content.credits_applied_minor, 0);
                prop_assert_eq!(inv.content.amount_due_minor, inv.content.draft.total_minor);
                prop_assert!(
                    inv.content.draft.lines.iter().all(|l| l.kind == invoice::LineKind::Charge),
                    "nothing changed after finalization, so nothing is adjusted"
                );
            }
            invoiced += stored.len();
            for (stored, recomputed) in redraft(&customer, sub, &catalog, &stored, |_, needs| {
                let oracle = oracle_usage(&counted, &customer.key, needs);
                assert_eq!(oracle, engine_usage(&engine, &customer.key, needs), "rollups = raw events");
                oracle
            }) {
                prop_assert_eq!(stored, recomputed, "stored invoice = invoice from raw events");
            }
        }
        let numbers = invoice_numbers(&store);
        let gapless: Vec<String> = (1..=invoiced).map(|n| format!("TG-2026-{n:06}")).collect();
        prop_assert_eq!(numbers, gapless, "numbers are gapless within the year");

        // Reopen: rollups are rebuilt by replaying the raw frames.
        engine.close();
        let engine = open(&dir);
        for (i, (spec, sub)) in specs.iter().zip(&subs).enumerate() {
            let customer = customer_of(i, spec);
            let stored = invoices_of(&store, &customer.key);
            for (stored, recomputed) in redraft(&customer, sub, &catalog, &stored, |_, needs| {
                let replayed = engine_usage(&engine, &customer.key, needs);
                assert_eq!(replayed, oracle_usage(&counted, &customer.key, needs), "replayed rollups = raw events");
                replayed
            }) {
                prop_assert_eq!(stored, recomputed, "stored invoice = invoice from replayed rollups");
            }
        }
        let again = run::run(&engine, &store, &run_options()).unwrap();
        prop_assert_eq!(
            (again.created, again.updated, again.finalized, again.errors.len()),
            (0, 0, 0, 0),
            "running again with nothing new changes nothing"
        );
    }

    /// Events that arrive after their period was invoiced: the next run's invoices correct it
    /// with adjustment lines. Every stored invoice equals the draft from the events known when
    /// it was finalized (the first run's from the early events, the second run's from all of
    /// them), and once a later invoice exists, what was billed for each (period, price) over
    /// all invoices equals pricing that period's full usage at once.
    #[test]
    fn late_events_are_billed_as_adjustments_equal_to_a_recomputation(
        specs in prop::collection::vec(customer_spec(), CUSTOMERS),
        early in prop::collection::vec(ev(), 1..100),
        late in prop::collection::vec(late_ev(), 1..60),
    ) {
        let dir = TempDir::new("late");
        let engine = open(&dir);
        ingest_all(&engine, &early, &[early.len()], &[false]);
        let store = BillingStore::open(&dir.0).unwrap();
        let subs = set_up_billing(&store, &specs);
        let first = run::run(&engine, &store, &run_options_at(RUN1)).unwrap();
        prop_assert!(first.errors.is_empty(), "{:?}", first.errors);
        // Late events, and the early ones again (duplicates, or conflicts that change nothing).
        let late_lines: Vec<String> = late.iter().chain(&early).map(Ev::line).collect();
        let outcome = ingest(&engine, &late_lines);
        prop_assert_eq!(outcome.rejected, 0);
        let second = run::run(&engine, &store, &run_options()).unwrap();
        prop_assert!(second.errors.is_empty(), "{:?}", second.errors);

        let all: Vec<Ev> = early.iter().chain(&late).cloned().collect();
        let counted_early = distinct(&early);
        let counted_all = distinct(&all);
        let (_, catalog) = store.catalog().unwrap();
        for (i, (spec, sub)) in specs.iter().zip(&subs).enumerate() {
            let customer = customer_of(i, spec);
            let stored = invoices_of(&store, &customer.key);
            let periods: Vec<Period> = stored.iter().map(|i| i.content.draft.period).collect();
            prop_assert_eq!(&periods, &expected_periods(&customer, sub));
            for (stored, recomputed) in redraft(&customer, sub, &catalog, &stored, |inv, needs| {
                let known = if inv.finalized_ms == Some(RUN1) { &counted_early } else { &counted_all };
                oracle_usage(known, &customer.key, needs)
            }) {
                prop_assert_eq!(stored, recomputed, "stored invoice = invoice from the events known then");
            }
            if !stored.iter().any(|i| i.finalized_ms == Some(NOW)) {
                continue;
            }
            let mut billed: BTreeMap<(Period, PriceKey), i64> = BTreeMap::new();
            for line in stored.iter().flat_map(|i| &i.content.draft.lines) {
                *billed.entry((line.period, line.price_key.clone())).or_default() += line.amount_minor;
            }
            let mut at_once: BTreeMap<(Period, PriceKey), i64> = BTreeMap::new();
            for p in &periods {
                let needs = invoice::usage_needs(sub, &catalog, p, &[]).unwrap();
                let usage = oracle_usage(&counted_all, &customer.key, &needs);
                let fresh = invoice::draft(&DraftInput {
                    customer: &customer,
                    subscription: sub,
                    catalog: &catalog,
                    period: *p,
                    earlier: &[],
                    usage: &usage,
                    credit_room: None,
                })
                .unwrap();
                for line in fresh.lines {
                    *at_once.entry((line.period, line.price_key)).or_default() += line.amount_minor;
                }
            }
            prop_assert_eq!(billed, at_once, "billed over time = priced at once");
        }
    }

    /// Finalization with prepaid grants (some expired, some not yet granted, several
    /// priorities): every ledger transaction sums to zero, each invoice drew
    /// min(total, what was left), the balance equals the customer_credit entries of the
    /// unexpired grants, and voiding gives the credit back.
    #[test]
    fn the_ledger_balances_after_finalization_with_grants(
        specs in prop::collection::vec(customer_spec(), CUSTOMERS),
        events in prop::collection::vec(ev(), 1..80),
        grants in prop::collection::vec(prop::collection::vec(grant_spec(), 0..5), CUSTOMERS),
    ) {
        let dir = TempDir::new("ledger");
        let engine = open(&dir);
        ingest_all(&engine, &events, &[events.len()], &[false]);
        let store = BillingStore::open(&dir.0).unwrap();
        set_up_billing(&store, &specs);
        let usd = Currency::parse("USD").unwrap();
        for (c, gs) in grants.iter().enumerate() {
            for (g, spec) in gs.iter().enumerate() {
                let granted_ms = UnixMs(NOW.0 + spec.granted_days * DAY_MS);
                store
                    .grant_credit(&Grant {
                        id: format!("grant_{c}{g:02}"),
                        customer: customer_key(c),
                        amount_minor: spec.amount_minor,
                        currency: usd,
                        priority: spec.priority,
                        granted_ms,
                        expires_ms: spec.expires_after_days.map(|e| UnixMs(granted_ms.0 + e * DAY_MS)),
                        reason: "test".into(),
                    })
                    .unwrap();
            }
        }
        let report = run::run(&engine, &store, &run_options()).unwrap();
        prop_assert!(report.errors.is_empty(), "{:?}", report.errors);

        for c in 0..CUSTOMERS {
            let key = customer_key(c);
            let (grants, entries) = store.credits(&key).unwrap();
            let usable = |g: &Grant| g.granted_ms <= NOW && g.expires_ms.is_none_or(|e| NOW < e);
            let credit_of = |grant: &str, entries: &[tollgate_core::ledger::Entry]| -> i64 {
                entries
                    .iter()
                    .filter(|e| e.grant == grant && e.account == Account::CustomerCredit && e.at <= NOW)
                    .map(|e| e.amount_minor)
                    .sum()
            };
            assert_txns_balance(&entries);
            for g in &grants {
                let left = credit_of(&g.id, &entries);
                prop_assert!(left >= 0, "grant {} went negative: {}", g.id, left);
                if g.expires_ms.is_some_and(|e| e <= NOW) {
                    prop_assert_eq!(left, 0, "grant {} expired at finalization", g.id);
                }
            }
            let unexpired: i64 = grants.iter().filter(|g| usable(g)).map(|g| credit_of(&g.id, &entries)).sum();
            let balance = store.balance(&key, NOW).unwrap();
            prop_assert_eq!(balance.available_minor, unexpired, "balance = unexpired grants' credit");

            // Each invoice, in finalization order, drew min(total, what was left).
            let mut invoices = invoices_of(&store, &key);
            invoices.sort_by(|a, b| a.number.cmp(&b.number));
            let mut left: i64 = grants.iter().filter(|g| usable(g)).map(|g| g.amount_minor).sum();
            for inv in &invoices {
                let total = inv.content.draft.total_minor;
                let drawn: i64 = entries
                    .iter()
                    .filter(|e| e.invoice.as_deref() == Some(inv.id.as_str()) && e.account == Account::InvoiceSettlement)
                    .map(|e| e.amount_minor)
                    .sum();
                prop_assert_eq!(inv.content.credits_applied_minor, drawn);
                prop_assert_eq!(drawn, total.max(0).min(left), "invoice {} draws greedily", inv.id);
                prop_assert_eq!(inv.content.amount_due_minor, total - drawn);
                left -= drawn;
            }
            prop_assert_eq!(balance.available_minor, left, "what the invoices left");

            // Voiding the last invoice gives its credit back to grants still usable.
            if let Some(last) = invoices.last() {
                let voided = store.change_invoice(&last.id, InvoiceChange::Void, NOW).unwrap();
                prop_assert_eq!(voided.status, InvoiceStatus::Void);
                let (_, entries) = store.credits(&key).unwrap();
                assert_txns_balance(&entries);
                let after = store.balance(&key, NOW).unwrap();
                prop_assert_eq!(
                    after.available_minor,
                    balance.available_minor + last.content.credits_applied_minor
                );
            }
        }
    }
}

/// Every ledger transaction's entries sum to zero, computed here rather than by the core.
fn assert_txns_balance(entries: &[tollgate_core::ledger::Entry]) {
    let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
    for e in entries {
        *sums.entry(e.txn.as_str()).or_default() += i128::from(e.amount_minor);
    }
    for (txn, sum) in sums {
        assert_eq!(sum, 0, "transaction {txn} does not balance");
    }
}
