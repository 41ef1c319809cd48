//! `serve --demo`: example meters and a small, deterministic sample of proxy traffic.
//!
//! Seeds only when none of the example meters exist yet, so restarting a demo server never
//! re-sends the sample. The sample spans the 30 days before the current UTC day, for 40
//! customers, in the same shape as the benchmark data (`shared/bench/gen_events.py`).
//!
//! Billing: two plans (`proxy-pro` in USD with a flat fee, graduated egress, packaged requests
//! and capped sessions; `proxy-jp` in JPY), the 40 customers in four time zones, each
//! subscribed since the start of the previous month, and a prepaid credit for one of them. The
//! server's invoice scheduler then drafts and finalizes last month's invoices at start.

use anyhow::Context;
use tollgate_core::billing::{
    Customer, CustomerKey, Interval, Phase, Plan, PlanKey, Subscription, SubscriptionId, ZoneName,
};
use tollgate_core::ledger::Grant;
use tollgate_core::meter::{Meter, MeterSlug, MeterSpec};
use tollgate_core::money::Currency;
use tollgate_core::pricing::Price;
use tollgate_core::time::{DAY_MS, UnixMs};
use tollgate_store::{BillingStore, Engine};

/// Events in the demo sample.
const DEMO_EVENTS: u64 = 30_000;
const DEMO_CUSTOMERS: u64 = 40;
const DEMO_DAYS: i64 = 30;

/// The example meters: name and JSON definition.
pub const DEMO_METERS: &[(&str, &str)] = &[
    (
        "bytes-in",
        r#"{"description":"Bytes received from clients","aggregation":"sum","value_path":"$.data.bytes_in"}"#,
    ),
    (
        "bytes-out",
        r#"{"description":"Bytes sent to clients","aggregation":"sum","value_path":"$.data.bytes_out"}"#,
    ),
    (
        "requests",
        r#"{"description":"Proxy requests by destination and status","event_type":"proxy.request","aggregation":"count","group_by":{"dest_host":"$.data.dest_host","status":"$.data.status"}}"#,
    ),
    (
        "sessions",
        r#"{"description":"Distinct proxy sessions","aggregation":"unique_count","value_path":"$.data.session_id"}"#,
    ),
    (
        "errors",
        r#"{"description":"Requests answered 5xx","event_type":"proxy.request","aggregation":"count","filters":{"$.data.status":{"gte":500}}}"#,
    ),
];

/// splitmix64: a tiny deterministic generator; the demo needs repeatability, not quality.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_133E_11EB);
    z ^ (z >> 31)
}

/// The example plans: key, name, currency, prices as JSON.
const DEMO_PLANS: &[(&str, &str, &str, &str)] = &[
    (
        "proxy-pro",
        "Proxy Pro",
        "USD",
        r#"[
          {"key":"platform","name":"Platform fee","model":{"type":"flat","amount":"49.00"}},
          {"key":"egress","name":"Egress","meter":"bytes-out","free_units":"100000000",
           "model":{"type":"graduated","tiers":[
             {"up_to":"1000000000","unit_price":"0.0000000001","flat_fee":"0"},
             {"up_to":null,"unit_price":"0.00000000008","flat_fee":"0"}]}},
          {"key":"requests","name":"Requests (per 1,000)","meter":"requests",
           "model":{"type":"package","package_size":"1000","package_price":"0.05"}},
          {"key":"sessions","name":"Sessions","meter":"sessions","maximum_amount":"5.00",
           "model":{"type":"per_unit","unit_price":"0.02"}}
        ]"#,
    ),
    (
        "proxy-jp",
        "Proxy Japan",
        "JPY",
        r#"[
          {"key":"platform","name":"Platform fee","model":{"type":"flat","amount":"5000"}},
          {"key":"egress","name":"Egress","meter":"bytes-out",
           "model":{"type":"per_unit","unit_price":"0.000000012"}}
        ]"#,
    ),
];

/// Plans, customers, subscriptions and a credit grant, once.
fn seed_billing(engine: &Engine, billing: &BillingStore) -> anyhow::Result<()> {
    let now = engine.now();
    if billing.plan(&PlanKey::parse("proxy-pro")?).is_ok() {
        return Ok(());
    }
    for (key, name, currency, prices) in DEMO_PLANS {
        let plan = Plan {
            key: PlanKey::parse(key)?,
            name: (*name).to_owned(),
            currency: Currency::parse(currency)?,
            interval: Interval::Month,
            created_ms: now,
        };
        billing.create_plan(&plan)?;
        let prices: Vec<Price> = serde_json::from_str(prices).context("demo prices")?;
        billing.publish_version(&plan.key, prices, Vec::new(), now)?;
    }
    // Subscriptions start at local midnight of the first day of the previous month, so last
    // month is invoiced in full as soon as the server runs its first cycle.
    let today = now.to_timestamp().to_zoned(jiff::tz::TimeZone::UTC).date();
    let start_date = today
        .first_of_month()
        .checked_sub(jiff::Span::new().months(1))?;
    let mut first_start = None;
    let zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Singapore"];
    for n in 0..DEMO_CUSTOMERS {
        let japanese = n % 10 == 9;
        let zone = if japanese {
            "Asia/Tokyo"
        } else {
            zones[(n % 4) as usize]
        };
        let customer = Customer {
            key: CustomerKey::parse(&format!("cus_{n:04}"))?,
            name: format!("Customer {n:02}"),
            email: Some(format!("billing+{n:02}@example.com")),
            currency: Currency::parse(if japanese { "JPY" } else { "USD" })?,
            time_zone: ZoneName::parse(zone)?,
            billing_anchor: jiff::civil::date(2000, 1, 1),
            tax_rate: if zone == "Europe/Berlin" {
                rust_decimal::Decimal::new(19, 2)
            } else {
                rust_decimal::Decimal::ZERO
            },
            metadata: Default::default(),
            created_ms: now,
        };
        billing.create_customer(&customer)?;
        let start = UnixMs::from_timestamp(
            start_date
                .to_zoned(customer.time_zone.tz().clone())?
                .timestamp(),
        );
        first_start.get_or_insert(start);
        let plan = PlanKey::parse(if japanese { "proxy-jp" } else { "proxy-pro" })?;
        let sub = Subscription::new(
            SubscriptionId(format!("sub_demo{n:04}")),
            customer.key.clone(),
            Phase {
                plan,
                version: 1,
                start,
            },
            None,
            now,
        )?;
        billing.create_subscription(&sub)?;
    }
    billing.grant_credit(&Grant {
        id: "grant_demo0001".into(),
        customer: CustomerKey::parse("cus_0001")?,
        amount_minor: 2_000,
        currency: Currency::parse("USD")?,
        priority: 10,
        granted_ms: first_start.unwrap_or(now),
        expires_ms: None,
        reason: "welcome credit".into(),
    })?;
    Ok(())
}

pub fn seed(engine: &Engine, billing: &BillingStore) -> anyhow::Result<()> {
    seed_billing(engine, billing)?;
    let mut created_any = false;
    for (slug, json) in DEMO_METERS {
        let slug = MeterSlug::parse(slug)?;
        if engine.meter(&slug).is_some() {
            continue;
        }
        let spec: MeterSpec = serde_json::from_str(json).context("demo meter")?;
        engine.put_meter_blocking(Meter::new(slug, spec)?)?;
        created_any = true;
    }
    if !created_any {
        return Ok(());
    }
    let today = engine.now().0.div_euclid(DAY_MS) * DAY_MS;
    let start = today - DEMO_DAYS * DAY_MS;
    let span = u64::try_from(DEMO_DAYS * DAY_MS).unwrap_or(1);
    let mut times: Vec<i64> = (0..DEMO_EVENTS)
        .map(|i| start + i64::try_from(mix(i) % span).unwrap_or(0))
        .collect();
    times.sort_unstable();
    let mut body = String::with_capacity(usize::try_from(DEMO_EVENTS).unwrap_or(0) * 300);
    for (i, t) in (0..DEMO_EVENTS).zip(times) {
        let r = mix(i ^ 0xD1CE);
        // Skewed customers: the low numbers are the busy ones.
        let customer = (r % DEMO_CUSTOMERS) * ((r >> 8) % DEMO_CUSTOMERS) / DEMO_CUSTOMERS;
        let kind = match (r >> 16) % 20 {
            0 => "session.started",
            1 => "session.ended",
            _ => "proxy.request",
        };
        let status =
            [200, 200, 200, 200, 200, 200, 204, 301, 404, 429, 502, 503][((r >> 24) % 12) as usize];
        let bytes_in = 200 + (r >> 32) % 4_000;
        let bytes_out = 500 + (mix(r) % 2_000_000);
        let session = (t - start) / 3_600_000 % 6;
        let host = [
            "api.example.com",
            "cdn.example.net",
            "shop.example.org",
            "img.example.net",
            "video.example.com",
        ][((r >> 40) % 5) as usize];
        let time = UnixMs(t).to_rfc3339();
        body.push_str(&format!(
            r#"{{"specversion":"1.0","id":"demo-{i:08}","source":"/proxy/demo","type":"{kind}","subject":"cus_{customer:04}","time":"{time}","data":{{"bytes_in":{bytes_in},"bytes_out":{bytes_out},"session_id":"s-{customer}-{session}","dest_host":"{host}","status":{status}}}}}"#
        ));
        body.push('\n');
    }
    let spans = tollgate_core::event::batch::ndjson_spans(&body);
    let outcome = engine.ingest_blocking(engine.prepare(body, spans))?;
    tracing::info!(
        accepted = outcome.accepted,
        duplicates = outcome.duplicates,
        meters = DEMO_METERS.len(),
        "demo data loaded"
    );
    Ok(())
}
