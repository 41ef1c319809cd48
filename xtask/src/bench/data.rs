//! The generated files: `shared/bench/gen_events.py` run once per (events, start day) into
//! `target/bench-data/n{N}-{start}/`, and its `expected.json` read into types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::ToSpan;
use jiff::civil::Date;
use serde::Deserialize;

use super::{DAYS, SEED, START_DAYS_AGO};

/// `expected.json`: the exact answers after dedup on (`source`, `id`).
#[derive(Debug, Deserialize)]
pub struct Expected {
    pub start: String,
    pub lines_total: u64,
    pub duplicate_lines: u64,
    pub unique_events: u64,
    pub totals: Totals,
    /// UTC day (`YYYY-MM-DD`) → bytes.
    pub per_day_bytes: BTreeMap<String, u64>,
    /// `cus_NNNNNN` → figures.
    pub customers: BTreeMap<String, CustomerFigures>,
}

#[derive(Debug, Deserialize)]
pub struct Totals {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub bytes: u64,
    pub unique_sessions: u64,
    pub customers_with_events: u64,
    pub customer_day_cells: u64,
    pub customer_day_checksum: u64,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
pub struct CustomerFigures {
    pub bytes: u64,
    pub unique_sessions: u64,
    pub events: u64,
}

/// One generated data set.
pub struct Dataset {
    /// The directory holding the files.
    pub dir: PathBuf,
    pub ndjson: PathBuf,
    pub csv: PathBuf,
    pub expected: Expected,
    /// First UTC day of the span.
    pub start: Date,
    /// `YYYY-MM-DDT00:00:00Z` of the first day and of the day after the last.
    pub from: String,
    pub to: String,
    /// The customers of `expected.json`, in order.
    pub customers: Vec<String>,
}

impl Dataset {
    /// Generates the files unless `expected.json` is already there.
    pub fn prepare(root: &Path, events: u64) -> anyhow::Result<Dataset> {
        let today = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let start = today
            .checked_sub(START_DAYS_AGO.days())
            .context("start day")?;
        let dir = root.join(format!("target/bench-data/n{events}-{start}"));
        let expected_path = dir.join("expected.json");
        if expected_path.exists() {
            eprintln!("bench: using the data in {}", dir.display());
        } else {
            let python = crate::venv(root)?;
            let generator = root.join("../shared/bench/gen_events.py");
            if !generator.exists() {
                bail!(
                    "{} is missing: the bench needs shared/ beside the repository",
                    generator.display()
                );
            }
            eprintln!("bench: generating {events} events into {}", dir.display());
            let mut cmd = Command::new(python);
            cmd.arg(&generator)
                .args(["--events", &events.to_string()])
                .args(["--seed", &SEED.to_string()])
                .arg("--out")
                .arg(&dir)
                .args(["--start", &start.to_string()]);
            // ~7 s per million lines and 2 GB of memory per 10 million, by its README.
            super::run_checked(&mut cmd, Duration::from_secs(300 + events / 20_000))?;
        }
        let data = Dataset::open(&dir)?;
        if data.start != start || data.expected.lines_total != events {
            bail!(
                "{} holds start {} and {} lines, not {start} and {events}",
                expected_path.display(),
                data.start,
                data.expected.lines_total
            );
        }
        Ok(data)
    }

    /// Reads a generated data set.
    pub fn open(dir: &Path) -> anyhow::Result<Dataset> {
        let expected_path = dir.join("expected.json");
        let text = std::fs::read_to_string(&expected_path)
            .with_context(|| format!("reading {}", expected_path.display()))?;
        let expected: Expected = serde_json::from_str(&text).context("parsing expected.json")?;
        let start: Date = expected
            .start
            .parse()
            .with_context(|| format!("start {:?} of expected.json", expected.start))?;
        let end = start.checked_add(DAYS.days()).context("end day")?;
        let customers = expected.customers.keys().cloned().collect();
        Ok(Dataset {
            dir: dir.to_path_buf(),
            ndjson: dir.join("events.ndjson"),
            csv: dir.join("events.csv"),
            expected,
            start,
            from: format!("{start}T00:00:00Z"),
            to: format!("{end}T00:00:00Z"),
            customers,
        })
    }

    /// `YYYY-MM-DD` of day `d` (0-based) of the span.
    pub fn day(&self, d: i64) -> anyhow::Result<String> {
        Ok(self
            .start
            .checked_add(d.days())
            .context("day of the span")?
            .to_string())
    }
}
