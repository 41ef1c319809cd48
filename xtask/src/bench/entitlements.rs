//! The `entitlements` part: entitlement checks on the request path.
//!
//! A fresh data dir with the 4 meters; `tollgate serve` gets one plan granting a metered limit
//! on `bytes-out` per calendar month and a concurrent-sessions limit, and every customer of the
//! data set a subscription. Then, over loopback HTTP, `tollgate checkload` sends
//! `POST /v1/entitlements/check` at 20,000/s (open loop, latency from each check's release):
//! first for `COLD_SECONDS` right after setup (every customer's grants not yet loaded, reported
//! apart), then alone, then while `tollgate loadgen` ingests the NDJSON file at full speed. Freshness:
//! 200 times, one event is sent and the customer checked right after its acknowledgement; the
//! time from sending to a check that counts it is reported (and every check must count it).
//! Finally the server stops and `tollgate check-bench` times the checker in process.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use super::server::Server;
use super::{ADMIN_KEY, Bench, HTTP_BATCH_EVENTS};

/// Checks per second of the HTTP figures.
pub const CHECK_RATE: u64 = 20_000;
/// Seconds of checks right after setup (every customer's view cold), reported apart.
pub const COLD_SECONDS: u64 = 3;
/// Freshness samples.
const FRESHNESS_SAMPLES: usize = 200;

const PLAN: &str = r#"{
  "key": "bench-limits", "name": "Limits", "currency": "USD", "interval": "month",
  "prices": [{"key": "platform", "name": "Platform", "model": {"type": "flat", "amount": "10.00"}}],
  "entitlements": [
    {"feature": "egress", "kind": "metered", "meter": "bytes-out", "limit": "5000000000000", "period": "month", "enforcement": "hard"},
    {"feature": "sessions", "kind": "concurrent_sessions", "limit": "100", "enforcement": "soft"}
  ]
}"#;

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct EntitlementMeasure {
    pub customers: usize,
    /// In process: checks/s on one thread, p50 and p99 (µs).
    pub inproc_per_s: f64,
    pub inproc_us: [f64; 2],
    /// HTTP at `CHECK_RATE`, alone: achieved rate, p50 / p99 / p999 (ms).
    pub idle_rate: f64,
    pub idle_ms: [f64; 3],
    /// The first `COLD_SECONDS` of checks after setup: p50 / p99 (ms).
    pub cold_ms: [f64; 2],
    /// HTTP at `CHECK_RATE` while ingest runs: achieved rate, p50 / p99 / p999 (ms), and how
    /// fast ingest ran meanwhile (events/s over its whole run).
    pub busy_rate: f64,
    pub busy_ms: [f64; 3],
    pub busy_seconds: u64,
    pub ingest_per_s: f64,
    /// From sending an event to a check that counts it: p50, p99 (ms).
    pub fresh_ms: [f64; 2],
}

#[derive(Debug, Deserialize)]
struct Checkload {
    checks: u64,
    errors: u64,
    unknown_customers: u64,
    checks_per_second: f64,
    latency_ms: Latency,
}

#[derive(Debug, Deserialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
}

#[derive(Debug, Deserialize)]
struct Loadgen {
    events_per_second: f64,
}

#[derive(Debug, Deserialize)]
struct CheckBench {
    checks_per_second: f64,
    latency_us: Latency,
}

pub fn run(bench: &Bench, run: usize) -> anyhow::Result<EntitlementMeasure> {
    let dir = bench.fresh_data_dir(&format!("entitlements-{run}"))?;
    let server = Server::start_with(
        bench,
        &dir,
        &["--invoice-every", "0s", "--alert-every", "0s"],
    )?;
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    let send = |path: &str, body: &Value| -> anyhow::Result<Value> {
        let url = format!("{}{path}", server.base);
        let response = client
            .post(&url)
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .json(body)
            .send()
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text()?;
        if !status.is_success() {
            bail!("POST {url}: {status}: {}", super::tail(&text, 500));
        }
        Ok(serde_json::from_str(&text)?)
    };
    let data = &bench.data;
    eprintln!(
        "bench: entitlements: {} customers -> {}",
        data.customers.len(),
        server.base
    );
    send("/v1/plans", &serde_json::from_str(PLAN)?)?;
    let start = format!("{}T00:00:00Z", data.start);
    for key in &data.customers {
        send(
            "/v1/customers",
            &json!({"key": key, "name": key, "currency": "USD", "billing_anchor": data.start.to_string()}),
        )?;
        send(
            "/v1/subscriptions",
            &json!({"customer": key, "plan": "bench-limits", "start": start}),
        )?;
    }

    // The checks pick among exactly the customers subscribed above.
    let customers_file = dir.with_extension("customers.txt");
    std::fs::write(&customers_file, data.customers.join("\n"))?;
    let checkload = |seconds: u64| -> anyhow::Result<Checkload> {
        let mut cmd = bench.tollgate();
        cmd.args(["checkload", "--url", &server.base, "--key", ADMIN_KEY])
            .args(["--feature", "egress", "--json"])
            .args(["--rate", &CHECK_RATE.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .arg("--customers-file")
            .arg(&customers_file);
        let out = super::run_with_timeout(&mut cmd, Duration::from_secs(seconds + 120))?;
        if !out.status.success() {
            bail!("tollgate checkload failed: {}", super::describe(&out));
        }
        let r: Checkload = serde_json::from_slice(&out.stdout).context("checkload --json")?;
        if r.errors > 0 || r.unknown_customers > 0 {
            bail!(
                "{} of {} checks failed and {} named an unknown customer",
                r.errors,
                r.checks + r.errors + r.unknown_customers,
                r.unknown_customers
            );
        }
        Ok(r)
    };
    // Cold start: every customer's grants were just written, so the first check of each loads
    // them from SQLite. Measured and reported apart; "alone" is the steady state after it.
    let cold = checkload(COLD_SECONDS)?;
    eprintln!(
        "  cold start ({COLD_SECONDS} s): {:.0} checks/s, p50 {:.3} ms p99 {:.3} ms",
        cold.checks_per_second, cold.latency_ms.p50, cold.latency_ms.p99
    );
    let idle = checkload(10)?;
    eprintln!(
        "  alone: {:.0} checks/s, p50 {:.3} ms p99 {:.3} ms p999 {:.3} ms",
        idle.checks_per_second, idle.latency_ms.p50, idle.latency_ms.p99, idle.latency_ms.p999
    );

    // Checks while the whole file is ingested: loadgen in the background, checks for roughly
    // as long as ingest takes at ~300k events/s (at least 3 s).
    let busy_seconds = (data.expected.lines_total / 300_000).clamp(3, 60);
    let limit = bench.budget(300, 2_000);
    let mut ingest = bench.tollgate();
    ingest
        .args([
            "loadgen",
            "--url",
            &server.base,
            "--key",
            ADMIN_KEY,
            "--file",
        ])
        .arg(&data.ndjson)
        .args(["--concurrency", &bench.concurrency.to_string()])
        .args(["--batch-events", &HTTP_BATCH_EVENTS.to_string()])
        .args(["--max-seconds", &limit.as_secs().to_string(), "--json"])
        .stdout(std::process::Stdio::piped());
    let loadgen = ingest.spawn().context("starting tollgate loadgen")?;
    let busy = checkload(busy_seconds);
    let loaded = loadgen.wait_with_output()?;
    let busy = busy?;
    if !loaded.status.success() {
        bail!("tollgate loadgen failed: {}", super::describe(&loaded));
    }
    let ingest_rate: Loadgen = serde_json::from_slice(&loaded.stdout).context("loadgen --json")?;
    eprintln!(
        "  under ingest ({:.0} events/s): {:.0} checks/s, p50 {:.3} ms p99 {:.3} ms p999 {:.3} ms",
        ingest_rate.events_per_second,
        busy.checks_per_second,
        busy.latency_ms.p50,
        busy.latency_ms.p99,
        busy.latency_ms.p999
    );

    let customer = data.customers.first().context("no customers")?.clone();
    let used = |v: &Value| -> anyhow::Result<u128> {
        v["used"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no `used` in {v}"))
    };
    let check = json!({"customer": customer, "feature": "egress"});
    let mut before = used(&send("/v1/entitlements/check", &check)?)?;
    let mut fresh = Vec::with_capacity(FRESHNESS_SAMPLES);
    for i in 0..FRESHNESS_SAMPLES {
        let now = jiff::Timestamp::now();
        let event = json!({
            "specversion": "1.0", "id": format!("fresh-{run}-{i}"), "source": "/bench/fresh",
            "type": "proxy.request", "subject": customer, "time": now.to_string(),
            "data": {"bytes_in": 0, "bytes_out": 1, "session_id": "fresh"}
        });
        let started = Instant::now();
        let answer = send("/v1/events", &event)?;
        if answer["accepted"] != 1 {
            bail!("freshness event not accepted: {answer}");
        }
        let after = used(&send("/v1/entitlements/check", &check)?)?;
        fresh.push(started.elapsed().as_secs_f64() * 1000.0);
        if after != before + 1 {
            bail!(
                "a check right after the ack saw {after}, expected {}",
                before + 1
            );
        }
        before = after;
    }
    fresh.sort_by(f64::total_cmp);
    server.stop()?;

    let mut cmd = bench.tollgate();
    cmd.args(["check-bench", "--data-dir"])
        .arg(&dir)
        .args(["--acceptance-window", super::ACCEPTANCE_WINDOW])
        .args(["--feature", "egress", "--checks", "1000000"])
        .arg("--customers-file")
        .arg(&customers_file);
    let out = super::run_checked(&mut cmd, bench.budget(300, 50_000))?;
    let inproc: CheckBench = serde_json::from_slice(&out.stdout).context("check-bench")?;
    eprintln!(
        "  in process: {:.0} checks/s, p50 {:.2} µs p99 {:.2} µs",
        inproc.checks_per_second, inproc.latency_us.p50, inproc.latency_us.p99
    );
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_file(&customers_file)?;
    Ok(EntitlementMeasure {
        customers: data.customers.len(),
        inproc_per_s: inproc.checks_per_second,
        inproc_us: [inproc.latency_us.p50, inproc.latency_us.p99],
        idle_rate: idle.checks_per_second,
        cold_ms: [cold.latency_ms.p50, cold.latency_ms.p99],
        idle_ms: [
            idle.latency_ms.p50,
            idle.latency_ms.p99,
            idle.latency_ms.p999,
        ],
        busy_rate: busy.checks_per_second,
        busy_ms: [
            busy.latency_ms.p50,
            busy.latency_ms.p99,
            busy.latency_ms.p999,
        ],
        busy_seconds,
        ingest_per_s: ingest_rate.events_per_second,
        fresh_ms: [
            super::percentile(&fresh, 0.5).unwrap_or(0.0),
            super::percentile(&fresh, 0.99).unwrap_or(0.0),
        ],
    })
}
