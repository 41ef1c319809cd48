//! The `http` part: `tollgate serve` on a fresh data dir with the 4 meters, fed the NDJSON file
//! by `tollgate loadgen` (C connections, 1,000 events per request); the server's peak RSS is
//! read just before it is stopped; then every figure checked.

use anyhow::{Context, bail};
use serde::Deserialize;

use super::server::Server;
use super::{ADMIN_KEY, Bench, HTTP_BATCH_EVENTS, Measure, exact};

/// `tollgate loadgen --json`, the fields the bench reads.
#[derive(Debug, Deserialize)]
struct Loadgen {
    complete: bool,
    events: u64,
    events_per_second: f64,
    latency_ms: Latency,
    accepted: u64,
    duplicates: u64,
    conflicts: u64,
    rejected: u64,
    retries: u64,
}

#[derive(Debug, Deserialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
}

pub fn run(bench: &Bench, run: usize, differences: &mut Vec<String>) -> anyhow::Result<Measure> {
    let dir = bench.fresh_data_dir(&format!("http-{run}"))?;
    let server = Server::start(bench, &dir)?;
    eprintln!(
        "bench: tollgate loadgen -> {} ({} connections, run {run})",
        server.base, bench.concurrency
    );
    let limit = bench.budget(300, 2_000);
    let mut cmd = bench.tollgate();
    cmd.args([
        "loadgen",
        "--url",
        &server.base,
        "--key",
        ADMIN_KEY,
        "--file",
    ])
    .arg(&bench.data.ndjson)
    .args(["--concurrency", &bench.concurrency.to_string()])
    .args(["--batch-events", &HTTP_BATCH_EVENTS.to_string()])
    .args(["--max-seconds", &limit.as_secs().to_string(), "--json"]);
    let out = super::run_with_timeout(&mut cmd, limit + std::time::Duration::from_secs(30))?;
    if !out.status.success() {
        bail!("tollgate loadgen failed: {}", super::describe(&out));
    }
    let report: Loadgen =
        serde_json::from_slice(&out.stdout).context("parsing tollgate loadgen --json")?;
    let peak_rss = server.peak_rss_bytes()?;
    server.stop()?;
    eprintln!(
        "  {} events, {:.0} events/s, p50 {:.1} ms p99 {:.1} ms p999 {:.1} ms; accepted {} duplicates {} conflicts {} rejected {}; retries {}",
        report.events,
        report.events_per_second,
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.latency_ms.p999,
        report.accepted,
        report.duplicates,
        report.conflicts,
        report.rejected,
        report.retries
    );
    let want = &bench.data.expected;
    let mut exact_verdicts = report.complete
        && report.events == want.lines_total
        && report.accepted == want.unique_events
        && report.duplicates == want.duplicate_lines
        && report.conflicts == 0
        && report.rejected == 0;
    if !exact_verdicts {
        differences.push(format!(
            "Tollgate HTTP: verdicts accepted {} duplicates {} conflicts {} rejected {} of {} events; expected {} accepted and {} duplicates of {}",
            report.accepted,
            report.duplicates,
            report.conflicts,
            report.rejected,
            report.events,
            want.unique_events,
            want.duplicate_lines,
            want.lines_total
        ));
    }
    let figures = exact::tollgate_figures(bench, &dir)?;
    exact_verdicts &= exact::verdict("Tollgate HTTP", &bench.data, &figures, differences)?;
    let m = Measure {
        events_per_s: Some(report.events_per_second),
        peak_rss_bytes: Some(peak_rss),
        disk_bytes: Some(super::dir_bytes(&dir)?),
        latency_ms: Some([
            report.latency_ms.p50,
            report.latency_ms.p99,
            report.latency_ms.p999,
        ]),
        retries: Some(report.retries),
        exact: Some(exact_verdicts),
        ..Measure::default()
    };
    std::fs::remove_dir_all(&dir)?;
    Ok(m)
}
