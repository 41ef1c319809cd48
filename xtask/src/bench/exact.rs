//! Exactness: the figures an engine answers, gathered into one shape, compared with every
//! figure of `expected.json`. Tollgate's figures come from `tollgate usage --json`; the
//! baselines build theirs from SQL.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::data::{CustomerFigures, Dataset};
use super::{ACCEPTANCE_WINDOW, Bench, CUSTOMERS_MAX, USAGE_ROWS_MAX};

/// `customer_day_checksum` is taken modulo this (see `customer_day_checksum_def`).
const CHECKSUM_MOD: u128 = (1 << 61) - 1;
/// Differences listed per check; the rest are counted.
const DIFFERENCES_SHOWN_MAX: usize = 10;

/// One customer-day cell: bytes (in + out) and events.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cell {
    pub bytes: u128,
    pub events: u128,
}

/// What an engine says about the data set.
#[derive(Debug, Default)]
pub struct Figures {
    /// Per customer over the whole span.
    pub customers: BTreeMap<String, Customer>,
    /// (customer, `YYYY-MM-DD`) → cell; only cells with events.
    pub cells: BTreeMap<(String, String), Cell>,
    pub bytes_in: u128,
    pub bytes_out: u128,
    pub unique_sessions: u128,
    pub events: u128,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Customer {
    pub bytes: u128,
    pub unique_sessions: u128,
    pub events: u128,
}

impl From<CustomerFigures> for Customer {
    fn from(c: CustomerFigures) -> Customer {
        Customer {
            bytes: c.bytes.into(),
            unique_sessions: c.unique_sessions.into(),
            events: c.events.into(),
        }
    }
}

/// Compares every figure of `expected.json`; returns the differences (empty when exact), at
/// most [`DIFFERENCES_SHOWN_MAX`] of them plus a count of the rest.
pub fn compare(data: &Dataset, got: &Figures) -> anyhow::Result<Vec<String>> {
    let want = &data.expected;
    let mut diffs: Vec<String> = Vec::new();
    let mut check = |what: &str, want: u128, got: u128| {
        if want != got {
            diffs.push(format!("{what}: expected {want}, got {got}"));
        }
    };
    let t = &want.totals;
    check("totals.bytes_in", t.bytes_in.into(), got.bytes_in);
    check("totals.bytes_out", t.bytes_out.into(), got.bytes_out);
    check("totals.bytes", t.bytes.into(), got.bytes_in + got.bytes_out);
    check(
        "totals.unique_sessions",
        t.unique_sessions.into(),
        got.unique_sessions,
    );
    check("unique_events", want.unique_events.into(), got.events);
    let with_events = got.customers.values().filter(|c| c.events > 0).count();
    check(
        "totals.customers_with_events",
        t.customers_with_events.into(),
        u128::try_from(with_events)?,
    );
    check(
        "totals.customer_day_cells",
        t.customer_day_cells.into(),
        u128::try_from(got.cells.len())?,
    );

    // Per day, and the checksum of the customer-day table.
    let day_index: BTreeMap<String, u128> = (0..super::DAYS)
        .map(|d| Ok((data.day(d)?, u128::try_from(d)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut per_day: BTreeMap<&str, u128> = BTreeMap::new();
    let mut checksum = 0u128;
    let mut stray_cells = 0usize;
    for ((customer, day), cell) in &got.cells {
        let (Some(d), Some(c)) = (day_index.get(day), customer_number(customer)) else {
            stray_cells += 1;
            continue;
        };
        *per_day.entry(day.as_str()).or_default() += cell.bytes;
        checksum = (checksum + (c * 30 + d + 1) % CHECKSUM_MOD * (cell.bytes % CHECKSUM_MOD))
            % CHECKSUM_MOD;
    }
    if stray_cells > 0 {
        diffs.push(format!(
            "{stray_cells} customer-day cells outside the span or of unknown customers"
        ));
    }
    let mut check = |what: &str, want: u128, got: u128| {
        if want != got {
            diffs.push(format!("{what}: expected {want}, got {got}"));
        }
    };
    check(
        "totals.customer_day_checksum",
        t.customer_day_checksum.into(),
        checksum,
    );
    for (day, bytes) in &want.per_day_bytes {
        check(
            &format!("per_day_bytes[{day}]"),
            (*bytes).into(),
            per_day.get(day.as_str()).copied().unwrap_or(0),
        );
    }

    // Per customer.
    for (name, figures) in &want.customers {
        let want_c = Customer::from(*figures);
        let got_c = got.customers.get(name).copied().unwrap_or_default();
        if want_c != got_c {
            diffs.push(format!(
                "customers[{name}]: expected bytes {} sessions {} events {}, got bytes {} sessions {} events {}",
                want_c.bytes,
                want_c.unique_sessions,
                want_c.events,
                got_c.bytes,
                got_c.unique_sessions,
                got_c.events
            ));
        }
    }
    for (name, c) in &got.customers {
        if !want.customers.contains_key(name) && *c != Customer::default() {
            diffs.push(format!("customers[{name}]: not expected, got {c:?}"));
        }
    }
    let total = diffs.len();
    if total > DIFFERENCES_SHOWN_MAX {
        diffs.truncate(DIFFERENCES_SHOWN_MAX);
        diffs.push(format!(
            "... and {} more differences",
            total - DIFFERENCES_SHOWN_MAX
        ));
    }
    Ok(diffs)
}

/// Checks `got`, prints the verdict and keeps the first differences; true when exact.
pub fn verdict(
    engine: &str,
    data: &Dataset,
    got: &Figures,
    differences: &mut Vec<String>,
) -> anyhow::Result<bool> {
    let diffs = compare(data, got)?;
    if diffs.is_empty() {
        eprintln!("bench: {engine}: exact (every figure of expected.json)");
        return Ok(true);
    }
    eprintln!("bench: {engine}: NOT exact; first differences:");
    for d in &diffs {
        eprintln!("  {d}");
        differences.push(format!("{engine}: {d}"));
    }
    Ok(false)
}

/// `cus_000123` → 123.
fn customer_number(subject: &str) -> Option<u128> {
    subject.strip_prefix("cus_")?.parse().ok()
}

/// An exact usage value: an integer, possibly written with a zero fraction.
pub fn integer_value(text: &str) -> anyhow::Result<u128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !fraction.bytes().all(|b| b == b'0') {
        bail!("usage value {text} is not an integer");
    }
    whole
        .parse()
        .with_context(|| format!("usage value {text} is not a number"))
}

#[derive(Debug, Deserialize)]
pub struct UsageAnswer {
    pub data: Vec<UsageRow>,
}

#[derive(Debug, Deserialize)]
pub struct UsageRow {
    pub subject: String,
    pub window_start: String,
    pub window_end: String,
    pub value: String,
}

/// Tollgate's figures for a stopped data dir, from `tollgate usage --json`.
pub fn tollgate_figures(bench: &Bench, data_dir: &Path) -> anyhow::Result<Figures> {
    let data = &bench.data;
    let whole = |meter: &str| -> anyhow::Result<BTreeMap<String, u128>> {
        let rows = usage_cli(bench, data_dir, meter, &data.from, &data.to, false)?;
        let mut out = BTreeMap::new();
        for row in rows {
            if row.window_start != data.from || row.window_end != data.to {
                bail!(
                    "{meter}: a row outside the one window [{}, {}): {row:?}",
                    data.from,
                    data.to
                );
            }
            if out
                .insert(row.subject.clone(), integer_value(&row.value)?)
                .is_some()
            {
                bail!("{meter}: two rows for {}", row.subject);
            }
        }
        Ok(out)
    };
    // A day-by-day answer of every customer may pass the row limit: ask in slices of days.
    let days_per_request = if data.expected.totals.customer_day_cells <= USAGE_ROWS_MAX {
        super::DAYS
    } else {
        i64::try_from(USAGE_ROWS_MAX / CUSTOMERS_MAX)?
    };
    let daily = |meter: &str| -> anyhow::Result<BTreeMap<(String, String), u128>> {
        let mut out = BTreeMap::new();
        let mut d = 0;
        while d < super::DAYS {
            let end = (d + days_per_request).min(super::DAYS);
            let from = format!("{}T00:00:00Z", data.day(d)?);
            let to = format!("{}T00:00:00Z", data.day(end)?);
            for row in usage_cli(bench, data_dir, meter, &from, &to, true)? {
                let day = row
                    .window_start
                    .strip_suffix("T00:00:00Z")
                    .with_context(|| format!("{meter}: not a UTC day: {row:?}"))?
                    .to_owned();
                let key = (row.subject.clone(), day);
                if out.insert(key, integer_value(&row.value)?).is_some() {
                    bail!("{meter}: two rows for one cell: {row:?}");
                }
            }
            d = end;
        }
        Ok(out)
    };
    let bytes_in = whole("bytes-in")?;
    let bytes_out = whole("bytes-out")?;
    let sessions = whole("sessions")?;
    let events = whole("events")?;
    let mut figures = Figures::default();
    for (map, slot) in [
        (&bytes_in, 0usize),
        (&bytes_out, 0),
        (&sessions, 1),
        (&events, 2),
    ] {
        for (subject, value) in map {
            let c = figures.customers.entry(subject.clone()).or_default();
            match slot {
                0 => c.bytes += value,
                1 => c.unique_sessions += value,
                _ => c.events += value,
            }
        }
    }
    figures.bytes_in = bytes_in.values().sum();
    figures.bytes_out = bytes_out.values().sum();
    // Session ids are unique per (customer, day, slot), so the total is the per-customer sum.
    figures.unique_sessions = sessions.values().sum();
    figures.events = events.values().sum();
    for (key, n) in daily("events")? {
        figures.cells.entry(key).or_default().events = n;
    }
    for meter in ["bytes-in", "bytes-out"] {
        for (key, bytes) in daily(meter)? {
            figures.cells.entry(key).or_default().bytes += bytes;
        }
    }
    Ok(figures)
}

fn usage_cli(
    bench: &Bench,
    data_dir: &Path,
    meter: &str,
    from: &str,
    to: &str,
    by_day: bool,
) -> anyhow::Result<Vec<UsageRow>> {
    let mut cmd = bench.tollgate();
    cmd.args(["usage", "--data-dir"])
        .arg(data_dir)
        .args(["--acceptance-window", ACCEPTANCE_WINDOW, meter])
        .args(["--from", from, "--to", to, "--json"]);
    if by_day {
        cmd.args(["--window-size", "day"]);
    }
    // Opening a data dir replays its frames (about a second per million events).
    let out = super::run_checked(&mut cmd, bench.budget(120, 20_000))?;
    let answer: UsageAnswer = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing `tollgate usage {meter}` output"))?;
    Ok(answer.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_values_are_exact_integers() {
        assert_eq!(integer_value("34175522704").ok(), Some(34_175_522_704));
        assert_eq!(integer_value("12.000").ok(), Some(12));
        assert!(integer_value("12.5").is_err());
        assert!(integer_value("-").is_err());
        assert_eq!(customer_number("cus_000123"), Some(123));
        assert_eq!(customer_number("acme"), None);
    }
}
