//! Late usage on a yearly plan: an event accepted after its year's invoice was finalized is
//! billed by an adjustment on the next year's invoice, although that invoice is drafted long
//! after the acceptance window of the corrected year has closed. The run re-prices every
//! earlier period whose window was still open at the subscription's last finalization.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rust_decimal::Decimal;
use tollgate_core::billing::{
    Customer, CustomerKey, Interval, Phase, Plan, PlanKey, Subscription, SubscriptionId, ZoneName,
};
use tollgate_core::event::batch::ndjson_spans;
use tollgate_core::invoice::{InvoiceStatus, LineKind};
use tollgate_core::meter::{Meter, MeterSlug, MeterSpec};
use tollgate_core::money::Currency;
use tollgate_core::pricing::{Price, PriceKey, PriceModel};
use tollgate_core::time::{Clock, UnixMs};
use tollgate_store::billing::InvoiceFilter;
use tollgate_store::billing::run::{self, RunOptions};
use tollgate_store::{BillingStore, Engine, EngineConfig, Metrics};

/// A clock the test moves.
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> UnixMs {
        UnixMs(self.0.load(Ordering::SeqCst))
    }
}

fn at(text: &str) -> UnixMs {
    UnixMs::from_timestamp(text.parse::<jiff::Timestamp>().unwrap())
}

const WINDOW_MS: i64 = 35 * 86_400_000;

fn event(id: &str, time: &str, bytes: u64) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"/t","type":"proxy.request","subject":"acme","time":"{time}","data":{{"bytes":{bytes}}}}}"#
    )
}

fn run_at(engine: &Engine, store: &BillingStore, now: UnixMs) -> run::RunReport {
    run::run(
        engine,
        store,
        &RunOptions {
            now,
            grace_ms: 0,
            acceptance_window_ms: WINDOW_MS,
            period: None,
            customer: None,
            finalize_now: BTreeSet::new(),
            only_period_start: None,
            credit_policy: None,
        },
    )
    .unwrap()
}

#[test]
fn late_usage_of_a_yearly_period_is_billed_a_year_later() {
    let dir = std::env::temp_dir().join(format!("tollgate-late-usage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clock = Arc::new(TestClock(AtomicI64::new(at("2025-12-20T00:00:00Z").0)));
    let engine = Engine::open(
        &dir,
        EngineConfig {
            acceptance_window_ms: WINDOW_MS,
            ..EngineConfig::default()
        },
        clock.clone(),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let spec: MeterSpec =
        serde_json::from_str(r#"{"aggregation":"sum","value_path":"$.data.bytes"}"#).unwrap();
    let meter = MeterSlug::parse("bytes").unwrap();
    engine
        .put_meter_blocking(Meter::new(meter.clone(), spec).unwrap())
        .unwrap();
    let store = BillingStore::open(&dir).unwrap();
    let usd = Currency::parse("USD").unwrap();
    let key = CustomerKey::parse("acme").unwrap();
    store
        .create_customer(&Customer {
            key: key.clone(),
            name: "Acme".into(),
            email: None,
            currency: usd,
            time_zone: ZoneName::utc(),
            billing_anchor: jiff::civil::date(2000, 1, 1),
            tax_rate: Decimal::ZERO,
            metadata: Default::default(),
            created_ms: at("2025-01-01T00:00:00Z"),
        })
        .unwrap();
    let plan = PlanKey::parse("yearly").unwrap();
    store
        .create_plan(&Plan {
            key: plan.clone(),
            name: "Yearly".into(),
            currency: usd,
            interval: Interval::Year,
            created_ms: at("2025-01-01T00:00:00Z"),
        })
        .unwrap();
    store
        .publish_version(
            &plan,
            vec![Price {
                key: PriceKey::parse("bytes").unwrap(),
                name: "Bytes".into(),
                meter: Some(meter),
                model: PriceModel::PerUnit {
                    unit_price: Decimal::ONE,
                },
                free_units: Decimal::ZERO,
                minimum_amount: None,
                maximum_amount: None,
            }],
            Vec::new(),
            at("2025-01-01T00:00:00Z"),
        )
        .unwrap();
    let sub = Subscription::new(
        SubscriptionId("sub_yearly".into()),
        key.clone(),
        Phase {
            plan,
            version: 1,
            start: at("2025-01-01T00:00:00Z"),
        },
        None,
        at("2025-01-01T00:00:00Z"),
    )
    .unwrap();
    store.create_subscription(&sub).unwrap();

    let ingest = |line: String| {
        let spans = ndjson_spans(&line);
        let outcome = engine.ingest_blocking(engine.prepare(line, spans)).unwrap();
        assert_eq!(outcome.accepted, 1, "{outcome:?}");
    };
    ingest(event("e1", "2025-12-15T00:00:00Z", 100));
    // 2026-01-02: 2025 ends and is finalized with 100 units.
    let r = run_at(&engine, &store, at("2026-01-02T00:00:00Z"));
    assert_eq!((r.created, r.finalized), (1, 1), "{r:?}");
    // 2026-01-10: a late event for 2025, inside its 35-day window.
    clock
        .0
        .store(at("2026-01-10T00:00:00Z").0, Ordering::SeqCst);
    ingest(event("e2", "2025-12-31T00:00:00Z", 50));
    // 2027-01-02: 2026 ends; 2025's window closed eleven months ago, its late 50 units are
    // still owed.
    let r = run_at(&engine, &store, at("2027-01-02T00:00:00Z"));
    assert_eq!((r.created, r.finalized), (1, 1), "{r:?}");
    let invoices = store
        .invoices(&InvoiceFilter {
            customer: Some(key),
            status: None,
            after: None,
            limit: 10,
        })
        .unwrap();
    let y2026 = invoices
        .iter()
        .find(|i| i.content.draft.period.start == at("2026-01-01T00:00:00Z"))
        .expect("the 2026 invoice");
    assert_eq!(y2026.status, InvoiceStatus::Finalized);
    let adjustments: Vec<_> = y2026
        .content
        .draft
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Adjustment)
        .collect();
    assert_eq!(adjustments.len(), 1, "{:?}", y2026.content.draft.lines);
    let adj = adjustments[0];
    assert_eq!(adj.period.start, at("2025-01-01T00:00:00Z"));
    assert_eq!(adj.quantity, Decimal::from(50));
    assert_eq!(adj.amount_minor, 5_000);
    assert_eq!(adj.previously_billed_minor, Some(10_000));
    // A third year corrects nothing more: 2025's window had closed by the 2026 finalization.
    let r = run_at(&engine, &store, at("2028-01-02T00:00:00Z"));
    assert_eq!((r.created, r.finalized), (1, 1), "{r:?}");
    let y2027 = store
        .invoices(&InvoiceFilter {
            limit: 10,
            ..InvoiceFilter::default()
        })
        .unwrap()
        .into_iter()
        .find(|i| i.content.draft.period.start == at("2027-01-01T00:00:00Z"))
        .expect("the 2027 invoice");
    assert!(
        y2027
            .content
            .draft
            .lines
            .iter()
            .all(|l| l.kind == LineKind::Charge),
        "{:?}",
        y2027.content.draft.lines
    );
    drop(store);
    engine.close();
    let _ = std::fs::remove_dir_all(&dir);
}
