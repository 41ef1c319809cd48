//! `cargo xtask bench`: Tollgate's ingest and query figures beside PostgreSQL and SQLite on the
//! same generated files, each checked for exactness against the generator's `expected.json`.
//!
//! Parts (all by default, or chosen with `--only`, repeatable):
//! - `ingest`: `tollgate import` of the NDJSON file into a fresh data dir with the 4 meters;
//!   events/s, peak RSS (`/usr/bin/time`), bytes on disk, then every figure checked.
//! - `http`: `tollgate serve` on `127.0.0.1:0` fed by `tollgate loadgen`; events/s, batch
//!   latency percentiles, the server's peak RSS, then every figure checked.
//! - `query`: usage queries over HTTP with keep-alive on the data dir `ingest` loaded.
//! - `invoice`: the invoice run over the loaded month for every customer, then its
//!   reconciliation (see `invoice.rs`).
//! - `entitlements`: entitlement checks over HTTP at 20,000/s alone and during full-speed
//!   ingest, freshness after an ack, and in process (see `entitlements.rs`).
//! - `inspect`: IP lookups with 1M ranges and decisions with 100k rules in process, and
//!   `POST /v1/inspect/decide` over HTTP at a fixed rate (see `inspect.rs`). It needs no event
//!   data; `--only inspect --events 1000` keeps the generated set small.
//! - `baseline`: PostgreSQL on `127.0.0.1:5432` (psql) and SQLite (in-process) loading the CSV
//!   with their dedup key, the same queries in SQL, the same exactness check. A baseline that
//!   cannot run fails the bench; it never skips.
//!
//! Every part runs `--runs` times (fresh stores each time) and the report shows medians. The
//! table is printed and appended to `docs/BENCHMARKS.md`. Every child process and every wait
//! has a time limit; servers listen on `127.0.0.1` only; the bench stops only processes it
//! started, by their pid.
#![allow(
    clippy::float_arithmetic,
    reason = "rates, percentiles and medians of measurements, never near usage totals"
)]

mod data;
mod entitlements;
mod exact;
mod http;
mod ingest;
mod inspect;
mod invoice;
mod postgres;
mod query;
mod report;
mod server;
mod sql;
pub mod sqlite;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// The seed of every generated file (the generator's output depends on it and on numpy).
pub const SEED: u64 = 42;
/// Days the generated span starts before today (UTC): inside the acceptance window below.
pub const START_DAYS_AGO: i64 = 32;
/// Days the generator covers.
pub const DAYS: i64 = 30;
/// The acceptance window every Tollgate command of the bench runs with.
pub const ACCEPTANCE_WINDOW: &str = "40d";
/// The admin key of the bench's servers (set on first start of each data dir).
pub const ADMIN_KEY: &str = "tg_bench_admin_key_0123456789";
/// Events per HTTP request of the `http` part.
pub const HTTP_BATCH_EVENTS: usize = 1_000;
/// Customers whose month by day Tollgate is asked for, one request each.
pub const CUSTOMER_QUERIES: usize = 10_000;
/// Customers whose month by day a baseline is asked for, at most ...
pub const BASELINE_CUSTOMER_QUERIES: usize = 1_000;
/// ... and for at most this long (the baselines have no index on the customer).
pub const BASELINE_CUSTOMER_BUDGET: Duration = Duration::from_secs(30);
/// Repetitions of each whole-table query; the median is reported.
pub const QUERY_REPEATS: usize = 5;
/// Most rows one Tollgate usage answer may hold (`USAGE_ROWS_MAX` in crates/core/src/limits.rs).
pub const USAGE_ROWS_MAX: u64 = tollgate_core::limits::USAGE_ROWS_MAX as u64;
/// Customers the generator can produce (rows of a per-customer answer).
pub const CUSTOMERS_MAX: u64 = 10_000;

/// The meters every Tollgate store of the bench gets.
pub const METERS: [(&str, &str); 4] = [
    (
        "bytes-in",
        r#"{"aggregation":"sum","value_path":"$.data.bytes_in"}"#,
    ),
    (
        "bytes-out",
        r#"{"aggregation":"sum","value_path":"$.data.bytes_out"}"#,
    ),
    (
        "sessions",
        r#"{"aggregation":"unique_count","value_path":"$.data.session_id"}"#,
    ),
    ("events", r#"{"aggregation":"count"}"#),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Part {
    /// `tollgate import` of the NDJSON file.
    Ingest,
    /// `tollgate serve` fed by `tollgate loadgen`.
    Http,
    /// Usage queries over HTTP on the imported data dir.
    Query,
    /// PostgreSQL and SQLite on the same files.
    Baseline,
    /// The invoice run for every customer over the loaded month.
    Invoice,
    /// Entitlement checks: HTTP alone and under ingest, freshness, in process.
    Entitlements,
    /// IP lookups and inspection decisions in process, and decisions over HTTP.
    Inspect,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Lines to generate (1% of them re-sent duplicates).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Run only this part (repeatable or comma-separated); all parts by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Runs of each part; the report shows the median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// HTTP connections of the `http` part.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

/// What one run of one engine measured; `None` where a figure does not apply.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Measure {
    pub events_per_s: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    /// One customer's month by day: p50, p99 (ms) and how many customers were asked.
    pub customer_p50_ms: Option<f64>,
    pub customer_p99_ms: Option<f64>,
    pub customer_queries: Option<usize>,
    /// All customers × days in one query (ms), `None` when the answer is over a limit.
    pub all_cells_ms: Option<f64>,
    pub sessions_ms: Option<f64>,
    pub totals_ms: Option<f64>,
    /// Batch latency of HTTP ingest: p50, p99, p999 (ms), and 503 retries.
    pub latency_ms: Option<[f64; 3]>,
    pub retries: Option<u64>,
    /// Every figure of expected.json equal (`None`: not checked).
    pub exact: Option<bool>,
}

/// Measurements of every run, per engine.
#[derive(Debug, Default)]
pub struct Results {
    pub tollgate: Vec<Measure>,
    pub http: Vec<Measure>,
    pub postgres: Vec<Measure>,
    pub sqlite: Vec<Measure>,
    pub invoice: Vec<invoice::InvoiceMeasure>,
    pub entitlements: Vec<entitlements::EntitlementMeasure>,
    pub inspect: Vec<inspect::InspectMeasure>,
    pub postgres_version: Option<String>,
    pub sqlite_version: Option<String>,
    /// Differences found by the exactness checks (first ones of each failing check).
    pub differences: Vec<String>,
}

/// Paths and settings every part uses.
pub struct Bench {
    pub root: PathBuf,
    /// The release binary.
    pub tollgate: PathBuf,
    /// Scratch space of this bench process (removed at the end).
    pub work: PathBuf,
    pub data: data::Dataset,
    pub concurrency: usize,
}

impl Bench {
    /// A time limit for work proportional to the data: generous, but never unbounded.
    pub fn budget(&self, base_secs: u64, events_per_sec_floor: u64) -> Duration {
        Duration::from_secs(base_secs + self.data.expected.lines_total / events_per_sec_floor)
    }

    /// `tollgate` with a clean environment.
    pub fn tollgate(&self) -> Command {
        let mut cmd = Command::new(&self.tollgate);
        cmd.env_remove("TOLLGATE_DATA_DIR")
            .env_remove("TOLLGATE_ADMIN_KEY")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// A fresh data dir with the bench's meters defined.
    pub fn fresh_data_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.work.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        for (slug, definition) in METERS {
            let mut cmd = self.tollgate();
            cmd.args(["meters", "put", "--data-dir"])
                .arg(&dir)
                .args(["--acceptance-window", ACCEPTANCE_WINDOW, slug, "--json"])
                .arg(definition);
            run_checked(&mut cmd, Duration::from_secs(60))?;
        }
        Ok(dir)
    }
}

pub fn run(root: &Path, args: BenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.runs > 100 {
        bail!("--runs must be 1..=100");
    }
    if args.events < 1_000 || args.events > 100_000_000 {
        bail!("--events must be 1000..=100000000");
    }
    if args.concurrency == 0 || args.concurrency > 256 {
        bail!("--concurrency must be 1..=256");
    }
    let mut parts = args.only.clone();
    if parts.is_empty() {
        parts = vec![
            Part::Ingest,
            Part::Http,
            Part::Query,
            Part::Invoice,
            Part::Entitlements,
            Part::Inspect,
            Part::Baseline,
        ];
    }
    parts.sort_unstable();
    parts.dedup();
    let command_line = command_line();

    eprintln!("bench: building the release binaries");
    crate::run(Command::new("cargo").args(["build", "--release", "-p", "tollgate"]))?;
    if parts.contains(&Part::Baseline) {
        // The SQLite baseline runs in an optimized build of this binary (see sqlite.rs).
        crate::run(Command::new("cargo").args(["build", "--release", "-p", "xtask"]))?;
    }
    ensure_gnu_time()?;
    let data = data::Dataset::prepare(root, args.events)?;
    let work = root
        .join("target/bench-work")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&work)?;
    let bench = Bench {
        root: root.to_path_buf(),
        tollgate: root.join("target/release/tollgate"),
        work,
        data,
        concurrency: args.concurrency,
    };
    let outcome = run_parts(&bench, &parts, args.runs);
    // Scratch stores can be many GB; they are not kept, whatever happened.
    if let Err(e) = std::fs::remove_dir_all(&bench.work) {
        eprintln!("bench: could not remove {}: {e}", bench.work.display());
    }
    let results = outcome?;
    let text = report::render(&bench, &results, &command_line);
    println!("{text}");
    report::append(&bench.root.join("docs/BENCHMARKS.md"), &text)?;
    println!("appended to docs/BENCHMARKS.md");
    Ok(())
}

fn run_parts(bench: &Bench, parts: &[Part], runs: usize) -> anyhow::Result<Results> {
    let mut results = Results::default();
    let postgres = if parts.contains(&Part::Baseline) {
        // Fail before hours of work, not after.
        let pg = postgres::Postgres::connect()?;
        results.postgres_version = Some(pg.version.clone());
        results.sqlite_version = Some(sqlite::version());
        Some(pg)
    } else {
        None
    };
    for run in 1..=runs {
        eprintln!("bench: run {run} of {runs}");
        let mut tollgate = Measure::default();
        let mut imported: Option<PathBuf> = None;
        if parts.contains(&Part::Ingest) {
            let (m, dir) = ingest::run(bench, run, &mut results.differences)?;
            tollgate = m;
            imported = Some(dir);
        }
        if parts.contains(&Part::Query) || parts.contains(&Part::Invoice) {
            let dir = match imported.take() {
                Some(dir) => dir,
                None => ingest::load_untimed(bench, run)?,
            };
            if parts.contains(&Part::Query) {
                let q = query::run(bench, &dir, &mut results.differences)?;
                tollgate = merge(tollgate, q);
            }
            if parts.contains(&Part::Invoice) {
                results
                    .invoice
                    .push(invoice::run(bench, &dir, &mut results.differences)?);
            }
            std::fs::remove_dir_all(&dir)?;
        }
        if let Some(dir) = imported {
            std::fs::remove_dir_all(&dir)?;
        }
        if parts.contains(&Part::Ingest) || parts.contains(&Part::Query) {
            results.tollgate.push(tollgate);
        }
        if parts.contains(&Part::Http) {
            results
                .http
                .push(http::run(bench, run, &mut results.differences)?);
        }
        if parts.contains(&Part::Entitlements) {
            results.entitlements.push(entitlements::run(bench, run)?);
        }
        if parts.contains(&Part::Inspect) {
            results.inspect.push(inspect::run(bench, run)?);
        }
        if let Some(pg) = &postgres {
            results
                .postgres
                .push(pg.run(bench, &mut results.differences)?);
            results
                .sqlite
                .push(sqlite::run(bench, run, &mut results.differences)?);
        }
    }
    Ok(results)
}

/// `b`'s figures over `a`'s where `b` has them.
fn merge(a: Measure, b: Measure) -> Measure {
    Measure {
        events_per_s: b.events_per_s.or(a.events_per_s),
        peak_rss_bytes: b.peak_rss_bytes.or(a.peak_rss_bytes),
        disk_bytes: b.disk_bytes.or(a.disk_bytes),
        customer_p50_ms: b.customer_p50_ms.or(a.customer_p50_ms),
        customer_p99_ms: b.customer_p99_ms.or(a.customer_p99_ms),
        customer_queries: b.customer_queries.or(a.customer_queries),
        all_cells_ms: b.all_cells_ms.or(a.all_cells_ms),
        sessions_ms: b.sessions_ms.or(a.sessions_ms),
        totals_ms: b.totals_ms.or(a.totals_ms),
        latency_ms: b.latency_ms.or(a.latency_ms),
        retries: b.retries.or(a.retries),
        exact: match (a.exact, b.exact) {
            (Some(x), Some(y)) => Some(x && y),
            (x, y) => x.or(y),
        },
    }
}

/// `cargo xtask bench ...` as typed.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// `/usr/bin/time` (GNU time) reports peak RSS; Debian ships it in the `time` package.
fn ensure_gnu_time() -> anyhow::Result<()> {
    if Path::new("/usr/bin/time").exists() {
        return Ok(());
    }
    crate::run(Command::new("apt-get").args(["install", "-y", "time"]))?;
    if !Path::new("/usr/bin/time").exists() {
        bail!("/usr/bin/time is still missing after installing the `time` package");
    }
    Ok(())
}

/// Runs a command to completion within `limit`, capturing its output; kills it (by its own
/// handle, so only the process this bench started) when the limit passes.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            // `/usr/bin/time` and the like do not pass the signal on: stop what the child
            // started first (by pid), then the child itself.
            for pid in descendants(child.id()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} took longer than {} s; stopped it", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out
        .join()
        .map_err(|_| anyhow::anyhow!("reading stdout failed"))?;
    let stderr = err
        .join()
        .map_err(|_| anyhow::anyhow!("reading stderr failed"))?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Every process below `pid`, each one before its own children (from `/proc`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|p| p.parse().ok()) {
        out.push(child);
        out.extend(descendants(child));
    }
    out
}

/// [`run_with_timeout`], failing unless the command succeeds.
pub fn run_checked(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let out = run_with_timeout(cmd, limit)?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", describe(&out));
    }
    Ok(out)
}

/// Status, stdout and stderr of a finished command, for error messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 2_000),
        tail(&String::from_utf8_lossy(&out.stderr), 2_000)
    )
}

/// The last `max` bytes of a text (on a char boundary).
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Sum of the sizes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `VmHWM` (peak resident set) of a live process, in bytes.
pub fn peak_rss_of(pid: u32) -> anyhow::Result<u64> {
    status_field(pid, "VmHWM")
}

fn status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    kb_field(&status, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// A `Name:  1234 kB` line of a `/proc/*/status` text, in bytes.
pub fn kb_field(status: &str, field: &str) -> Option<u64> {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let kb: u64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Median (mean of the two middle values for an even count); `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    })
}

/// Nearest-rank percentile of sorted values.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a rank between 1 and len"
)]
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// `x` rounded down to a count (0 for negative or NaN, saturating above `usize::MAX`).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "`as` saturates; a count of queries"
)]
pub fn floor_count(x: f64) -> usize {
    x.floor() as usize
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// A deterministic stream of pseudo-random numbers (splitmix64): the same customers are asked
/// for in every run and on every engine.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `count` customers drawn (with replacement) from `customers`.
    pub fn pick<'a>(&mut self, customers: &'a [String], count: usize) -> Vec<&'a str> {
        let len = u64::try_from(customers.len()).unwrap_or(u64::MAX).max(1);
        (0..count)
            .filter_map(|_| {
                let i = usize::try_from(self.next_u64() % len).ok()?;
                customers.get(i).map(String::as_str)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let sorted: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.50), Some(500.0));
        assert_eq!(percentile(&sorted, 0.99), Some(990.0));
        assert_eq!(percentile(&sorted, 0.999), Some(999.0));
        assert_eq!(percentile(&[7.0], 0.999), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn proc_status_fields() {
        let status = "Name:\ttollgate\nVmHWM:\t  466700 kB\nVmRSS:\t   12 kB\n";
        assert_eq!(kb_field(status, "VmHWM"), Some(466_700 * 1024));
        assert_eq!(kb_field(status, "VmRSS"), Some(12 * 1024));
        assert_eq!(kb_field(status, "VmPeak"), None);
    }

    #[test]
    fn the_same_customers_every_time() {
        let customers: Vec<String> = (0..10).map(|i| format!("cus_{i:06}")).collect();
        let a = SplitMix64(SEED).pick(&customers, 100);
        let b = SplitMix64(SEED).pick(&customers, 100);
        assert_eq!(a.len(), 100);
        assert_eq!(a, b);
        assert!(a.iter().all(|c| customers.iter().any(|k| k == c)));
    }

    #[test]
    fn a_command_over_its_limit_is_stopped_with_what_it_started() {
        let started = Instant::now();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 31 & wait"]);
        let result = run_with_timeout(&mut cmd, Duration::from_millis(300));
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
