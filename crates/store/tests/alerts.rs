//! Alerts over time, with a clock the test moves: a usage alert fires once in a period and
//! recovers when the next period starts; unusual usage is found in generated hourly traffic
//! with an injected spike and not in steady traffic; the state survives a restart of the
//! stores, so nothing fires twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rust_decimal::Decimal;
use tollgate_core::alert::{AlertId, AlertRule, AnomalyParams, Condition, Threshold};
use tollgate_core::billing::{
    Customer, CustomerKey, Interval, Phase, Plan, PlanKey, Subscription, SubscriptionId, ZoneName,
};
use tollgate_core::event::batch::ndjson_spans;
use tollgate_core::meter::{Meter, MeterSlug, MeterSpec};
use tollgate_core::money::Currency;
use tollgate_core::pricing::{Price, PriceKey, PriceModel};
use tollgate_core::time::{Clock, HOUR_MS, UnixMs};
use tollgate_store::billing::alerts::{EvalReport, EventFilter, evaluate};
use tollgate_store::billing::entitlements::Checker;
use tollgate_store::{BillingStore, Engine, EngineConfig, Metrics};

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

struct World {
    dir: std::path::PathBuf,
    clock: Arc<TestClock>,
    engine: Engine,
    store: BillingStore,
    checker: Checker,
    next_id: u64,
}

impl World {
    fn open(dir: std::path::PathBuf, clock: Arc<TestClock>, next_id: u64) -> World {
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
        let store = BillingStore::open(&dir).unwrap();
        World {
            dir,
            clock,
            engine,
            store,
            checker: Checker::new(),
            next_id,
        }
    }

    fn new(label: &str, start: &str) -> World {
        let dir =
            std::env::temp_dir().join(format!("tollgate-alerts-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let w = World::open(dir, Arc::new(TestClock(AtomicI64::new(at(start).0))), 0);
        let spec: MeterSpec =
            serde_json::from_str(r#"{"aggregation":"sum","value_path":"$.data.bytes"}"#).unwrap();
        w.engine
            .put_meter_blocking(Meter::new(MeterSlug::parse("bytes").unwrap(), spec).unwrap())
            .unwrap();
        w
    }

    fn set_now(&self, t: UnixMs) {
        self.clock.0.store(t.0, Ordering::SeqCst);
    }

    fn customer(&self, key: &str, since: UnixMs) {
        let usd = Currency::parse("USD").unwrap();
        self.store
            .create_customer(&Customer {
                key: CustomerKey::parse(key).unwrap(),
                name: key.into(),
                email: None,
                currency: usd,
                time_zone: ZoneName::utc(),
                billing_anchor: jiff::civil::date(2000, 1, 1),
                tax_rate: Decimal::ZERO,
                metadata: Default::default(),
                created_ms: since,
            })
            .unwrap();
        let plan = PlanKey::parse("monthly").unwrap();
        if self.store.plan(&plan).is_err() {
            self.store
                .create_plan(&Plan {
                    key: plan.clone(),
                    name: "Monthly".into(),
                    currency: usd,
                    interval: Interval::Month,
                    created_ms: since,
                })
                .unwrap();
            self.store
                .publish_version(
                    &plan,
                    vec![Price {
                        key: PriceKey::parse("bytes").unwrap(),
                        name: "Bytes".into(),
                        meter: Some(MeterSlug::parse("bytes").unwrap()),
                        model: PriceModel::PerUnit {
                            unit_price: Decimal::new(1, 2),
                        },
                        free_units: Decimal::ZERO,
                        minimum_amount: None,
                        maximum_amount: None,
                    }],
                    Vec::new(),
                    since,
                )
                .unwrap();
        }
        self.store
            .create_subscription(
                &Subscription::new(
                    SubscriptionId(format!("sub_{key}")),
                    CustomerKey::parse(key).unwrap(),
                    Phase {
                        plan,
                        version: 1,
                        start: since,
                    },
                    None,
                    since,
                )
                .unwrap(),
            )
            .unwrap();
    }

    fn send(&mut self, customer: &str, time: UnixMs, bytes: u64) {
        self.next_id += 1;
        let line = format!(
            r#"{{"specversion":"1.0","id":"e{}","source":"/t","type":"proxy.request","subject":"{customer}","time":"{}","data":{{"bytes":{bytes}}}}}"#,
            self.next_id,
            time.to_rfc3339()
        );
        let spans = ndjson_spans(&line);
        let out = self
            .engine
            .ingest_blocking(self.engine.prepare(line, spans))
            .unwrap();
        assert_eq!(out.accepted, 1, "{out:?}");
    }

    fn rule(&self, id: &str, customer: Option<&str>, condition: Condition) {
        self.store
            .create_alert(&AlertRule {
                id: AlertId(id.into()),
                name: id.into(),
                customer: customer.map(|c| CustomerKey::parse(c).unwrap()),
                condition,
                enabled: true,
                created_ms: self.engine.now(),
            })
            .unwrap();
    }

    fn evaluate(&self) -> EvalReport {
        evaluate(
            &self.engine,
            &self.store,
            &self.checker,
            self.engine.now(),
            WINDOW_MS,
        )
        .unwrap()
    }
}

fn kinds(r: &EvalReport) -> Vec<(String, String, UnixMs)> {
    r.events
        .iter()
        .map(|e| (e.event_type.clone(), e.customer.to_string(), e.period_start))
        .collect()
}

#[test]
fn a_usage_alert_fires_once_per_period_and_recovers_when_the_period_ends() {
    let mut w = World::new("usage", "2026-03-10T00:00:00Z");
    w.customer("acme", at("2026-03-01T00:00:00Z"));
    w.customer("zeta", at("2026-03-01T00:00:00Z"));
    w.rule(
        "alr_usage",
        None,
        Condition::Usage {
            meter: MeterSlug::parse("bytes").unwrap(),
            threshold: Threshold::Absolute {
                value: Decimal::from(1_000),
            },
        },
    );
    let march = at("2026-03-01T00:00:00Z");
    w.send("acme", at("2026-03-09T00:00:00Z"), 999);
    assert!(w.evaluate().events.is_empty());
    w.send("acme", at("2026-03-09T01:00:00Z"), 1);
    assert_eq!(
        kinds(&w.evaluate()),
        vec![("alert.triggered".into(), "acme".into(), march)]
    );
    w.send("acme", at("2026-03-09T02:00:00Z"), 5_000);
    assert!(w.evaluate().events.is_empty(), "fires once per period");
    // Reopening the stores (a restart) keeps where each rule stood.
    let World {
        dir,
        clock,
        engine,
        store,
        next_id,
        ..
    } = w;
    drop(store);
    engine.close();
    let mut w = World::open(dir, clock, next_id);
    assert!(
        w.evaluate().events.is_empty(),
        "nothing fires twice after a restart"
    );
    // April: March recovers; April's usage is below the threshold.
    w.set_now(at("2026-04-02T00:00:00Z"));
    assert_eq!(
        kinds(&w.evaluate()),
        vec![("alert.recovered".into(), "acme".into(), march)]
    );
    w.send("zeta", at("2026-04-01T12:00:00Z"), 1_500);
    w.send("acme", at("2026-04-01T12:00:00Z"), 2_000);
    let april = at("2026-04-01T00:00:00Z");
    assert_eq!(
        kinds(&w.evaluate()),
        vec![
            ("alert.triggered".into(), "acme".into(), april),
            ("alert.triggered".into(), "zeta".into(), april)
        ]
    );
    let log = w
        .store
        .alert_events(&EventFilter {
            rule: Some("alr_usage".into()),
            limit: 100,
            ..EventFilter::default()
        })
        .unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.windows(2).all(|p| p[0].seq < p[1].seq));
}

#[test]
fn a_spend_alert_follows_running_charges() {
    let mut w = World::new("spend", "2026-05-20T00:00:00Z");
    w.customer("acme", at("2026-05-01T00:00:00Z"));
    w.rule(
        "alr_spend",
        Some("acme"),
        Condition::Spend {
            amount_minor: 10_000,
        },
    );
    // $0.01 per byte: 9,999 bytes are $99.99.
    w.send("acme", at("2026-05-19T00:00:00Z"), 9_999);
    assert!(w.evaluate().events.is_empty());
    w.send("acme", at("2026-05-19T00:01:00Z"), 1);
    let r = w.evaluate();
    assert_eq!(r.events.len(), 1, "{r:?}");
    assert_eq!(r.events[0].value, Decimal::from(10_000));
    assert_eq!(r.events[0].subject, "spend:USD");
}

/// Hourly traffic for `hours` hours before `now`: `base` ± a deterministic wobble of up to
/// 10 %, in four events per hour.
fn steady_traffic(w: &mut World, customer: &str, now: UnixMs, hours: i64, base: u64) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for h in (1..=hours).rev() {
        let hour = now.0.div_euclid(HOUR_MS) * HOUR_MS - h * HOUR_MS;
        for q in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let wobble = x % (base / 10 + 1);
            w.send(
                customer,
                UnixMs(hour + q * 15 * 60_000),
                (base + wobble) / 4,
            );
        }
    }
}

#[test]
fn unusual_usage_finds_an_injected_spike_and_nothing_in_steady_traffic() {
    let now = at("2026-06-15T12:10:00Z");
    let mut w = World::new("anomaly", "2026-06-15T12:10:00Z");
    w.customer("steady", at("2026-06-01T00:00:00Z"));
    w.customer("spiky", at("2026-06-01T00:00:00Z"));
    let unusual = |id: &str, customer: &str| {
        (
            id.to_owned(),
            Some(customer.to_owned()),
            Condition::UnusualUsage {
                meter: MeterSlug::parse("bytes").unwrap(),
                params: AnomalyParams::default(),
            },
        )
    };
    let (id, c, cond) = unusual("alr_steady", "steady");
    w.rule(&id, c.as_deref(), cond);
    // 48 hours of steady traffic for both; for `spiky` the last complete hour (11:00) carries
    // ten times its usual usage.
    steady_traffic(&mut w, "steady", now, 48, 40_000);
    steady_traffic(&mut w, "spiky", at("2026-06-15T11:10:00Z"), 47, 40_000);
    w.send("spiky", at("2026-06-15T11:30:00Z"), 400_000);
    // Every hour of the steady customer's last day, judged in turn, is usual.
    for h in (0..24).rev() {
        w.set_now(UnixMs(now.0 - h * HOUR_MS));
        let r = w.evaluate();
        assert!(r.events.is_empty(), "hour -{h}: {r:?}");
        assert_eq!(r.observations, 1);
    }
    let (id, c, cond) = unusual("alr_spiky", "spiky");
    w.rule(&id, c.as_deref(), cond);
    let spike_hour = at("2026-06-15T11:00:00Z");
    let r = w.evaluate();
    assert_eq!(
        kinds(&r),
        vec![("alert.triggered".into(), "spiky".into(), spike_hour)],
        "{r:?}"
    );
    let fired = &r.events[0];
    assert_eq!(fired.value, Decimal::from(400_000));
    assert!(fired.threshold < Decimal::from(400_000) && fired.threshold > Decimal::from(44_000));
    // The next hour is back to normal: the spike recovers.
    w.set_now(UnixMs(now.0 + HOUR_MS));
    w.send("spiky", at("2026-06-15T12:20:00Z"), 40_000);
    let r = w.evaluate();
    assert_eq!(
        kinds(&r),
        vec![("alert.recovered".into(), "spiky".into(), spike_hour)],
        "{r:?}"
    );
}
