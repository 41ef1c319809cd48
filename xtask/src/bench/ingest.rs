//! The `ingest` part: `tollgate import` of the NDJSON file into a fresh data dir that has the
//! 4 meters, under `/usr/bin/time` for the peak RSS; then every figure checked.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use super::{ACCEPTANCE_WINDOW, Bench, Measure, exact};

/// Imports into a fresh data dir and measures; returns the figures and the loaded data dir
/// (the `query` part reads it; the caller removes it).
pub fn run(
    bench: &Bench,
    run: usize,
    differences: &mut Vec<String>,
) -> anyhow::Result<(Measure, PathBuf)> {
    let dir = bench.fresh_data_dir(&format!("import-{run}"))?;
    let rss_file = bench.work.join(format!("import-{run}.rss"));
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(&bench.tollgate)
        .args(["import", "--quiet", "--data-dir"])
        .arg(&dir)
        .args(["--acceptance-window", ACCEPTANCE_WINDOW])
        .arg(&bench.data.ndjson)
        .env("RUST_LOG", "warn")
        .env_remove("TOLLGATE_DATA_DIR");
    eprintln!("bench: tollgate import (run {run})");
    let started = Instant::now();
    let out = super::run_with_timeout(&mut cmd, bench.budget(300, 2_000))?;
    let wall = started.elapsed();
    if !out.status.success() {
        bail!("tollgate import failed: {}", super::describe(&out));
    }
    eprint!("  {}", String::from_utf8_lossy(&out.stdout));
    let rss_kb: u64 = std::fs::read_to_string(&rss_file)
        .context("reading /usr/bin/time's output")?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .context("no peak RSS in /usr/bin/time's output")?;
    let lines = bench.data.expected.lines_total;
    let mut m = Measure {
        events_per_s: Some(lines as f64 / wall.as_secs_f64()),
        peak_rss_bytes: Some(rss_kb * 1024),
        disk_bytes: Some(super::dir_bytes(&dir)?),
        ..Measure::default()
    };
    let figures = exact::tollgate_figures(bench, &dir)?;
    m.exact = Some(exact::verdict(
        "Tollgate import",
        &bench.data,
        &figures,
        differences,
    )?);
    Ok((m, dir))
}

/// A loaded data dir for the `query` part when `ingest` does not run: imported, not measured.
pub fn load_untimed(bench: &Bench, run: usize) -> anyhow::Result<PathBuf> {
    let dir = bench.fresh_data_dir(&format!("query-{run}"))?;
    let mut cmd = bench.tollgate();
    cmd.args(["import", "--quiet", "--data-dir"])
        .arg(&dir)
        .args(["--acceptance-window", ACCEPTANCE_WINDOW])
        .arg(&bench.data.ndjson);
    eprintln!("bench: loading a data dir for the query part (not measured)");
    super::run_checked(&mut cmd, bench.budget(300, 2_000))?;
    Ok(dir)
}
