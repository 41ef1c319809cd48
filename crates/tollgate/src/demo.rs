//! `serve --demo`: example meters and a small, deterministic sample of proxy traffic.
//!
//! Seeds only when none of the example meters exist yet, so restarting a demo server never
//! re-sends the sample. The sample spans the three days before the current UTC day, for 40
//! customers, in the same shape as the benchmark data (`shared/bench/gen_events.py`).

use anyhow::Context;
use tollgate_core::meter::{Meter, MeterSlug, MeterSpec};
use tollgate_core::time::{DAY_MS, UnixMs};
use tollgate_store::Engine;

/// Events in the demo sample.
const DEMO_EVENTS: u64 = 30_000;
const DEMO_CUSTOMERS: u64 = 40;
const DEMO_DAYS: i64 = 3;

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

pub fn seed(engine: &Engine) -> anyhow::Result<()> {
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
