//! The `inspect` part: IP lookups and inspection decisions.
//!
//! In process (`tollgate inspect-bench`, one thread): lookups in an allocation table of 1M IPv4
//! ranges (+100k IPv6 /48s) through the flattened view the server uses and through the prefix
//! trie it replaced, and decisions against 100k rules. Over loopback HTTP: `tollgate serve`
//! with that rule set published, `tollgate inspectload` sending `POST /v1/inspect/decide` open
//! loop at `DECIDE_RATE`/s for 10 s (about half the decisions are flags or blocks, each
//! answered once its event is durable).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::server::Server;
use super::{ADMIN_KEY, Bench};

/// Decisions per second of the HTTP figures.
pub const DECIDE_RATE: u64 = 5_000;
/// IPv4 ranges of the lookup figures.
pub const RANGES: u64 = 1_000_000;
/// Rules of the decision figures.
pub const RULES: u64 = 100_000;
/// Seconds of HTTP load.
const SECONDS: u64 = 10;

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct InspectMeasure {
    /// Lookups/s through the flattened view, and through the prefix trie.
    pub lookups_per_s: f64,
    pub trie_lookups_per_s: f64,
    /// Decisions/s in process.
    pub decisions_per_s: f64,
    /// HTTP: achieved rate, p50 / p99 / p999 (ms), share recorded (flag or block).
    pub http_rate: f64,
    pub http_ms: [f64; 3],
    pub recorded_share: f64,
}

#[derive(Debug, Deserialize)]
struct InspectBench {
    ip_lookup: IpLookup,
    decide: Decide,
}

#[derive(Debug, Deserialize)]
struct IpLookup {
    per_second: f64,
    trie_per_second: f64,
}

#[derive(Debug, Deserialize)]
struct Decide {
    per_second: f64,
}

#[derive(Debug, Deserialize)]
struct Inspectload {
    decisions: u64,
    errors: u64,
    recorded: u64,
    decisions_per_second: f64,
    latency_ms: Latency,
}

#[derive(Debug, Deserialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
}

pub fn run(bench: &Bench, run: usize) -> anyhow::Result<InspectMeasure> {
    let mut cmd = bench.tollgate();
    cmd.args(["inspect-bench", "--ranges", &RANGES.to_string()])
        .args(["--lookups", "20000000", "--rules", &RULES.to_string()])
        .args(["--decisions", "10000000"]);
    let out = super::run_checked(&mut cmd, Duration::from_secs(600))?;
    let inproc: InspectBench = serde_json::from_slice(&out.stdout).context("inspect-bench")?;
    eprintln!(
        "  in process: {:.2}M lookups/s (trie {:.2}M/s), {:.2}M decisions/s",
        inproc.ip_lookup.per_second / 1e6,
        inproc.ip_lookup.trie_per_second / 1e6,
        inproc.decide.per_second / 1e6
    );

    let dir = bench.fresh_data_dir(&format!("inspect-{run}"))?;
    let rules = bench.work.join(format!("inspect-rules-{run}.json"));
    let mut cmd = bench.tollgate();
    cmd.args([
        "inspect-bench",
        "--rules",
        &RULES.to_string(),
        "--write-rules",
    ])
    .arg(&rules);
    super::run_checked(&mut cmd, Duration::from_secs(120))?;
    let server = Server::start_with(
        bench,
        &dir,
        &["--invoice-every", "0s", "--alert-every", "0s"],
    )?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let url = format!("{}/v1/inspect/rule_sets", server.base);
    let response = client
        .post(&url)
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(std::fs::read(&rules)?)
        .send()
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text()?;
    if !status.is_success() {
        bail!("POST {url}: {status}: {}", super::tail(&text, 500));
    }
    let mut cmd = bench.tollgate();
    cmd.args([
        "inspectload",
        "--url",
        &server.base,
        "--key",
        ADMIN_KEY,
        "--json",
    ])
    .args(["--rate", &DECIDE_RATE.to_string()])
    .args(["--seconds", &SECONDS.to_string()])
    .args(["--rules", &RULES.to_string()]);
    let out = super::run_with_timeout(&mut cmd, Duration::from_secs(SECONDS + 120))?;
    if !out.status.success() {
        bail!("tollgate inspectload failed: {}", super::describe(&out));
    }
    let load: Inspectload = serde_json::from_slice(&out.stdout).context("inspectload --json")?;
    if load.errors > 0 {
        bail!(
            "{} of {} decisions failed",
            load.errors,
            load.decisions + load.errors
        );
    }
    eprintln!(
        "  HTTP: {:.0} decisions/s, p50 {:.3} ms p99 {:.3} ms p999 {:.3} ms, {} recorded",
        load.decisions_per_second,
        load.latency_ms.p50,
        load.latency_ms.p99,
        load.latency_ms.p999,
        load.recorded
    );
    server.stop()?;
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_file(&rules)?;
    Ok(InspectMeasure {
        lookups_per_s: inproc.ip_lookup.per_second,
        trie_lookups_per_s: inproc.ip_lookup.trie_per_second,
        decisions_per_s: inproc.decide.per_second,
        http_rate: load.decisions_per_second,
        http_ms: [
            load.latency_ms.p50,
            load.latency_ms.p99,
            load.latency_ms.p999,
        ],
        recorded_share: load.recorded as f64 / load.decisions.max(1) as f64,
    })
}
