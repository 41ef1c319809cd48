//! The report: one table of medians (engine, events/s, ratio to Tollgate import, peak RSS,
//! bytes on disk, query times, exact), the HTTP latency percentiles and notes, printed and
//! appended to `docs/BENCHMARKS.md` under a heading with the date, machine and command.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use super::{
    BASELINE_CUSTOMER_BUDGET, Bench, HTTP_BATCH_EVENTS, Measure, QUERY_REPEATS, Results, SEED,
};

/// What `docs/BENCHMARKS.md` starts with when the bench creates it.
const HEADER: &str = "# Benchmarks

Figures appended by `cargo xtask bench` (code: `xtask/src/bench/`), one section per run of the
command, never edited afterwards. Each heading names the date (UTC), the machine and the exact
command. Every figure is the median over `--runs`; every engine gets fresh storage in every run.

How the figures are produced:

- **Data**: `shared/bench/gen_events.py --seed 42`, 30 days of proxy traffic starting 32 days
  before the run (so all of it lies inside `--acceptance-window 40d`), 1% of lines re-sent
  duplicates. Tollgate reads the NDJSON file, the baselines the CSV file with the same rows.
- **Tollgate import**: `tollgate import` into a fresh data dir that has the 4 meters (`bytes-in`,
  `bytes-out` sums, `sessions` unique count, `events` count). events/s = lines / wall time of the
  whole process (open, import, durable close). Peak RSS from `/usr/bin/time -f %M`. Bytes on
  disk: every file of the data dir.
- **Tollgate HTTP**: `tollgate serve` on `127.0.0.1:0` and `tollgate loadgen` (C keep-alive
  connections, 1,000 events per request) on the same machine, sharing its cores. Latency is per
  batch, from its first attempt to the answer (sent only once the batch is fsynced); `503
  writer_busy` answers are retried and counted. Peak RSS is the server's `VmHWM`.
- **Queries (Tollgate)**: `tollgate serve` on the imported data dir, one keep-alive connection,
  time until the whole answer is read: one customer's 30 days by day (`bytes-out`,
  `window_size=day`) for 10,000 random customers (p50 / p99); every customer × day in one request
  (`bytes-out`); unique sessions per customer (`sessions`); the grand total (`bytes-in`, summed
  by the client). The last three are medians of 5.
- **PostgreSQL**: `psql` against `127.0.0.1:5432`, a fresh database per run. `\\copy` of the CSV
  into a staging table, then `INSERT ... SELECT ... ON CONFLICT (source, id) DO NOTHING` into a
  table whose primary key is (`source`, `id`); events/s = lines / (COPY + INSERT) by `\\timing`.
  Peak RSS: the backend's `VmHWM` (it includes shared buffers it touched). Bytes on disk:
  `pg_total_relation_size`. The same queries in SQL, timed by `\\timing` in one session.
- **SQLite**: embedded through rusqlite in an optimized child process of the bench
  (`xtask bench-sqlite`), WAL, `synchronous=FULL`, `UNIQUE(source, id)`, `INSERT OR IGNORE` from
  the CSV in transactions of 10,000 rows; events/s includes reading the CSV. Peak RSS: the
  child's `VmHWM` right after the load. Bytes on disk: the database's files once closed.
- The baselines have only their dedup key, no index on the customer, so a one-customer query
  scans the table: they answer it for as many random customers (of the same sequence) as fit in
  a 30 s budget, named in the table.
- **exact**: every figure of `expected.json` compared (per customer bytes, unique sessions and
  events; bytes per day; customer-day cells and checksum; totals), plus, for Tollgate, the
  verdict counts and the grand total read over HTTP.
";

pub fn render(bench: &Bench, results: &Results, command_line: &str) -> String {
    let data = &bench.data;
    let mut s = String::new();
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let _ = writeln!(s, "## {today} (UTC), {}: `{command_line}`\n", machine());
    let runs = [
        &results.tollgate,
        &results.http,
        &results.postgres,
        &results.sqlite,
    ]
    .iter()
    .map(|r| r.len())
    .max()
    .unwrap_or(0)
    .max(results.invoice.len())
    .max(results.entitlements.len())
    .max(results.inspect.len());
    let _ = writeln!(
        s,
        "{} lines ({} unique events, {} duplicates), {} customers, 30 days from {}; NDJSON {}, CSV {}. Median of {runs} run(s).\n",
        thousands(data.expected.lines_total),
        thousands(data.expected.unique_events),
        thousands(data.expected.duplicate_lines),
        thousands(u64::try_from(data.customers.len()).unwrap_or(0)),
        data.start,
        file_size(&data.ndjson),
        file_size(&data.csv),
    );
    let table = [
        &results.tollgate,
        &results.http,
        &results.postgres,
        &results.sqlite,
    ]
    .iter()
    .any(|r| !r.is_empty());
    if table {
        s.push_str(
        "| engine | events/s | × Tollgate import | peak RSS | on disk | 1 customer by day p50 / p99 ms (customers) | all customers × days ms | sessions per customer ms | grand total ms | exact |\n",
    );
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|\n");
        let base = median_of(&results.tollgate, |m| m.events_per_s);
        let mut rows: Vec<(String, &Vec<Measure>)> = Vec::new();
        if !results.tollgate.is_empty() {
            let name = if base.is_some() {
                "Tollgate import"
            } else {
                "Tollgate (queries only)"
            };
            rows.push((name.into(), &results.tollgate));
        }
        if !results.http.is_empty() {
            rows.push((
                format!("Tollgate HTTP ({} conns)", bench.concurrency),
                &results.http,
            ));
        }
        if !results.postgres.is_empty() {
            rows.push((
                format!(
                    "PostgreSQL {}",
                    results.postgres_version.as_deref().unwrap_or("")
                ),
                &results.postgres,
            ));
        }
        if !results.sqlite.is_empty() {
            rows.push((
                format!("SQLite {}", results.sqlite_version.as_deref().unwrap_or("")),
                &results.sqlite,
            ));
        }
        for (name, runs) in rows {
            let rate = median_of(runs, |m| m.events_per_s);
            let ratio = match (rate, base) {
                (Some(r), Some(b)) if b > 0.0 => format!("{:.2}×", r / b),
                _ => "—".into(),
            };
            let customer = match (
                median_of(runs, |m| m.customer_p50_ms),
                median_of(runs, |m| m.customer_p99_ms),
            ) {
                (Some(p50), Some(p99)) => format!(
                    "{} / {} ({})",
                    millis(p50),
                    millis(p99),
                    runs.iter()
                        .filter_map(|m| m.customer_queries)
                        .min()
                        .map_or_else(|| "?".into(), |n| thousands(u64::try_from(n).unwrap_or(0)))
                ),
                _ => "—".into(),
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {ratio} | {} | {} | {customer} | {} | {} | {} | {} |",
                rate.map_or_else(|| "—".into(), |r| thousands(round(r))),
                bytes_median(runs, |m| m.peak_rss_bytes),
                bytes_median(runs, |m| m.disk_bytes),
                opt_ms(median_of(runs, |m| m.all_cells_ms)),
                opt_ms(median_of(runs, |m| m.sessions_ms)),
                opt_ms(median_of(runs, |m| m.totals_ms)),
                exact(runs),
            );
        }
        s.push('\n');
    }
    if !results.http.is_empty() {
        let p = |i: usize| median_of(&results.http, |m| m.latency_ms.map(|l| l[i]));
        let retries: u64 = results.http.iter().filter_map(|m| m.retries).sum();
        let _ = writeln!(
            s,
            "HTTP ingest (`tollgate loadgen`, {} connections, {} events per request), latency per batch: p50 {} ms, p99 {} ms, p999 {} ms; {} retries on 503 over all runs.\n",
            bench.concurrency,
            thousands(u64::try_from(HTTP_BATCH_EVENTS).unwrap_or(0)),
            opt_ms(p(0)),
            opt_ms(p(1)),
            opt_ms(p(2)),
            retries
        );
    }
    if !results.tollgate.is_empty()
        && results
            .tollgate
            .iter()
            .any(|m| m.customer_p50_ms.is_some() && m.all_cells_ms.is_none())
    {
        s.push_str(
            "All customers × days in one request is over Tollgate's `USAGE_ROWS_MAX` (200,000 rows) for this data set: no figure.\n\n",
        );
    }
    if !results.invoice.is_empty() {
        let med = |f: fn(&super::invoice::InvoiceMeasure) -> f64| {
            let v: Vec<f64> = results.invoice.iter().map(f).collect();
            super::median(&v)
        };
        let customers = results.invoice.first().map_or(0, |m| m.customers);
        let _ = writeln!(
            s,
            "Invoice run (`POST /v1/invoices/run`, one period over the whole span, {} customers × 1 flat + 3 metered prices): first run (draft + finalize every invoice) {} ms, second run (nothing new) {} ms; setup over HTTP {} ms. Reconciliation of that period (`POST /v1/reconciliation/runs`: {} metered lines recomputed from the raw events, every invoice re-priced, every ledger checked): {} ms. Exact (one invoice each, egress sums to the generator's, no reconciliation difference): {}.\n",
            thousands(u64::try_from(customers).unwrap_or(0)),
            opt_ms(med(|m| m.first_run_ms)),
            opt_ms(med(|m| m.second_run_ms)),
            opt_ms(med(|m| m.setup_ms)),
            thousands(
                results
                    .invoice
                    .first()
                    .map_or(0, |m| m.reconcile_usage_checked)
            ),
            opt_ms(med(|m| m.reconcile_ms)),
            if results.invoice.iter().all(|m| m.exact) {
                "yes"
            } else {
                "no"
            }
        );
    }
    if !results.entitlements.is_empty() {
        let e = &results.entitlements;
        let med = |f: &dyn Fn(&super::entitlements::EntitlementMeasure) -> f64| {
            let v: Vec<f64> = e.iter().map(f).collect();
            super::median(&v).unwrap_or(0.0)
        };
        let customers = e.first().map_or(0, |m| m.customers);
        let _ = writeln!(
            s,
            "Entitlement checks ({} customers subscribed, metered limit on `bytes-out` per month; `tollgate checkload` open loop at {} checks/s over loopback): right after setup, every customer's grants cold, p50 {:.3} ms, p99 {:.3} ms for {} s; then alone {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms; during full-speed HTTP ingest ({:.0} events/s, checks for the first {} s) {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms. An event counts in the next check after its ack: send → counted p50 {:.2} ms, p99 {:.2} ms (200 samples, every one counted). In process (`tollgate check-bench`, one thread): {:.0} checks/s, p50 {:.2} µs, p99 {:.2} µs.\n",
            thousands(u64::try_from(customers).unwrap_or(0)),
            super::entitlements::CHECK_RATE,
            med(&|m| m.cold_ms[0]),
            med(&|m| m.cold_ms[1]),
            super::entitlements::COLD_SECONDS,
            med(&|m| m.idle_rate),
            med(&|m| m.idle_ms[0]),
            med(&|m| m.idle_ms[1]),
            med(&|m| m.idle_ms[2]),
            med(&|m| m.ingest_per_s),
            e.first().map_or(0, |m| m.busy_seconds),
            med(&|m| m.busy_rate),
            med(&|m| m.busy_ms[0]),
            med(&|m| m.busy_ms[1]),
            med(&|m| m.busy_ms[2]),
            med(&|m| m.fresh_ms[0]),
            med(&|m| m.fresh_ms[1]),
            med(&|m| m.inproc_per_s),
            med(&|m| m.inproc_us[0]),
            med(&|m| m.inproc_us[1]),
        );
    }
    if !results.inspect.is_empty() {
        let r = &results.inspect;
        let med = |f: &dyn Fn(&super::inspect::InspectMeasure) -> f64| {
            let v: Vec<f64> = r.iter().map(f).collect();
            super::median(&v).unwrap_or(0.0)
        };
        let _ = writeln!(
            s,
            "Inspection (`tollgate inspect-bench`, one thread): IP lookups with {} IPv4 ranges (+ a tenth as many IPv6 /48s) {:.2}M/s through the flattened view (prefix trie: {:.2}M/s); decisions with {} rules {:.2}M/s. `POST /v1/inspect/decide` over loopback (`tollgate inspectload` open loop at {}/s, {:.0} % flagged or blocked and so recorded before the answer): {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms.\n",
            thousands(super::inspect::RANGES),
            med(&|m| m.lookups_per_s) / 1e6,
            med(&|m| m.trie_lookups_per_s) / 1e6,
            thousands(super::inspect::RULES),
            med(&|m| m.decisions_per_s) / 1e6,
            super::inspect::DECIDE_RATE,
            med(&|m| m.recorded_share) * 100.0,
            med(&|m| m.http_rate),
            med(&|m| m.http_ms[0]),
            med(&|m| m.http_ms[1]),
            med(&|m| m.http_ms[2]),
        );
    }
    if !results.postgres.is_empty() || !results.sqlite.is_empty() {
        let _ = writeln!(
            s,
            "Baselines: one-customer queries for as many customers as fit in {} s (no index on the customer); whole-table queries are medians of {QUERY_REPEATS}; seed {SEED}.\n",
            BASELINE_CUSTOMER_BUDGET.as_secs()
        );
    }
    if !results.differences.is_empty() {
        s.push_str("Differences from expected.json:\n\n");
        for d in &results.differences {
            let _ = writeln!(s, "- {d}");
        }
        s.push('\n');
    }
    s
}

/// Appends the section, creating the file with its header first.
pub fn append(path: &Path, section: &str) -> anyhow::Result<()> {
    let existed = path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if !existed {
        writeln!(file, "{HEADER}")?;
    }
    write!(file, "{section}")?;
    Ok(())
}

/// "2 cores, 24 GiB".
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let gib = (mem_kb as f64 / (1024.0 * 1024.0)).round();
    format!("{cores} cores, {gib:.0} GiB")
}

fn median_of(runs: &[Measure], f: impl Fn(&Measure) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = runs.iter().filter_map(f).collect();
    super::median(&values)
}

fn bytes_median(runs: &[Measure], f: impl Fn(&Measure) -> Option<u64>) -> String {
    median_of(runs, |m| f(m).map(|b| b as f64)).map_or_else(|| "—".into(), mib)
}

fn exact(runs: &[Measure]) -> &'static str {
    let verdicts: Vec<bool> = runs.iter().filter_map(|m| m.exact).collect();
    if verdicts.is_empty() {
        "—"
    } else if verdicts.iter().all(|v| *v) {
        "yes"
    } else {
        "**no**"
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn file_size(path: &Path) -> String {
    std::fs::metadata(path).map_or_else(|_| "?".into(), |m| mib(m.len() as f64))
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), millis)
}

/// Three significant figures or so, never scientific.
fn millis(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.3}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn round(v: f64) -> u64 {
    u64::try_from(super::floor_count(v + 0.5)).unwrap_or(u64::MAX)
}

/// 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(millis(0.0684), "0.068");
        assert_eq!(millis(48.39), "48.4");
        assert_eq!(millis(200.3), "200");
        assert_eq!(round(169_023.6), 169_024);
    }
}
