//! `tollgate checkload` and `tollgate check-bench`: how fast entitlement checks are answered.
//!
//! `checkload` sends `POST /v1/entitlements/check` to a running server at a fixed rate (open
//! loop: request `i` is due at `start + i / rate`, and its latency runs from when it was due,
//! so a slow server cannot hide its queueing by slowing the sender), over `--connections`
//! keep-alive connections, for customers picked by a fixed sequence from `--customers-file`
//! (one key per line) or from `PREFIX000000 ..`. It prints the achieved rate and latency
//! percentiles; answers other than 200 are counted as errors, 404s (unknown customer) apart.
//!
//! `check-bench` opens a data directory in process (the server must not run on it) and times
//! single calls of the checker (the code behind the endpoint, without HTTP) on one thread.
#![allow(
    clippy::float_arithmetic,
    reason = "rates and latency percentiles for people, never near usage"
)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rust_decimal::Decimal;
use tollgate_core::billing::CustomerKey;
use tollgate_core::entitlement::FeatureKey;
use tollgate_store::BillingStore;
use tollgate_store::billing::entitlements::Checker;

use crate::cli::StoreArgs;
use crate::loadgen::percentile;

/// Most connections.
const CONNECTIONS_MAX: usize = 256;
/// Longest run.
const SECONDS_MAX: u64 = 3_600;
/// Highest rate.
const RATE_MAX: u64 = 1_000_000;

#[derive(Debug, Args)]
pub struct CheckloadArgs {
    /// Base URL of a running server.
    #[arg(long)]
    pub url: String,
    /// API key with the `read` or `ingest` scope.
    #[arg(long)]
    pub key: String,
    /// Checks per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// How long to send.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Customer keys are PREFIX followed by a six-digit number below `--customers`.
    #[arg(long, default_value = "cus_")]
    pub customer_prefix: String,
    /// How many customers to spread the checks over.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Pick customers from this file (one key per line) instead of PREFIX + number.
    #[arg(long, conflicts_with_all = ["customer_prefix", "customers"])]
    pub customers_file: Option<std::path::PathBuf>,
    /// The feature checked.
    #[arg(long)]
    pub feature: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckBenchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Checks to time.
    #[arg(long, default_value_t = 1_000_000)]
    pub checks: u64,
    /// Customer keys are PREFIX followed by a six-digit number below `--customers`.
    #[arg(long, default_value = "cus_")]
    pub customer_prefix: String,
    /// How many customers to spread the checks over.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Pick customers from this file (one key per line) instead of PREFIX + number.
    #[arg(long, conflicts_with_all = ["customer_prefix", "customers"])]
    pub customers_file: Option<std::path::PathBuf>,
    /// The feature checked.
    #[arg(long)]
    pub feature: String,
}

/// Most customer keys a picker holds.
const PICKER_KEYS_MAX: usize = 1_000_000;

/// The same pseudo-random sequence of customers in every run (xorshift64).
struct Picker {
    state: u64,
    keys: Vec<String>,
}

impl Picker {
    /// Keys from `file` (one per line, blank lines skipped), or `prefix` + six digits below
    /// `customers`.
    fn new(file: Option<&std::path::Path>, prefix: &str, customers: u64) -> anyhow::Result<Picker> {
        let keys: Vec<String> = match file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            None => (0..customers.min(PICKER_KEYS_MAX as u64))
                .map(|i| format!("{prefix}{i:06}"))
                .collect(),
        };
        if keys.is_empty() || keys.len() > PICKER_KEYS_MAX {
            bail!(
                "1..={PICKER_KEYS_MAX} customers are needed, got {}",
                keys.len()
            );
        }
        Ok(Picker {
            state: 0x2545_F491_4F6C_DD1D,
            keys,
        })
    }

    fn next(&mut self) -> &str {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let i = usize::try_from(self.state % self.keys.len() as u64).unwrap_or(0);
        &self.keys[i]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn run(args: CheckloadArgs) -> anyhow::Result<ExitCode> {
    if !(1..=CONNECTIONS_MAX).contains(&args.connections) {
        bail!("--connections must be 1..={CONNECTIONS_MAX}");
    }
    if !(1..=SECONDS_MAX).contains(&args.seconds) || !(1..=RATE_MAX).contains(&args.rate) {
        bail!("--seconds must be 1..={SECONDS_MAX} and --rate 1..={RATE_MAX}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let total = args.rate * args.seconds;
    let picker = Picker::new(
        args.customers_file.as_deref(),
        &args.customer_prefix,
        args.customers,
    )?;
    let Totals {
        latencies,
        errors,
        not_found: unknown,
        marked: allowed,
        elapsed,
    } = runtime.block_on(send_all(&args, picker, total))?;
    let mut sorted = latencies;
    sorted.sort_unstable();
    let answered = sorted.len();
    let rate = answered as f64 / elapsed.as_secs_f64();
    let (p50, p99, p999, max) = (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        percentile(&sorted, 0.999),
        sorted.last().copied().unwrap_or_default(),
    );
    if args.json {
        let out = serde_json::json!({
            "checks": answered,
            "errors": errors,
            "unknown_customers": unknown,
            "allowed": allowed,
            "seconds": elapsed.as_secs_f64(),
            "checks_per_second": rate,
            "target_rate": args.rate,
            "latency_ms": {"p50": ms(p50), "p99": ms(p99), "p999": ms(p999), "max": ms(max)},
        });
        println!("{out}");
    } else {
        println!(
            "{answered} checks in {:.1} s ({rate:.0}/s, target {}/s): p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms; {allowed} allowed, {unknown} unknown customers, {errors} errors",
            elapsed.as_secs_f64(),
            args.rate,
            ms(p50),
            ms(p99),
            ms(p999),
            ms(max)
        );
    }
    Ok(if errors == 0 && unknown == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What an open-loop run came to.
#[derive(Default)]
pub(crate) struct Totals {
    /// Latency of every request answered 2xx.
    pub latencies: Vec<Duration>,
    /// Requests that failed: transport, timeout, any status but 2xx and 404.
    pub errors: u64,
    /// Requests answered 404.
    pub not_found: u64,
    /// 2xx answers whose body contains the marker.
    pub marked: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

/// An open-loop run: `POST {url}{path}` with the bodies `body(i)` for `i` in `0..total`,
/// request `i` due at `start + i / rate`, over `connections` keep-alive connections. Latency
/// runs from when a request was due. Counts the answers whose body contains `marker`.
pub(crate) struct OpenLoop<'a> {
    pub url: &'a str,
    pub key: &'a str,
    pub path: &'a str,
    pub rate: u64,
    pub total: u64,
    pub connections: usize,
    pub marker: &'static [u8],
}

impl OpenLoop<'_> {
    pub(crate) async fn run(&self, mut body: impl FnMut(u64) -> String) -> anyhow::Result<Totals> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(self.connections)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        let endpoint = format!("{}{}", self.url.trim_end_matches('/'), self.path);
        let auth = format!("Bearer {}", self.key);
        // Each request carries the instant it was due.
        let (tx, rx) = tokio::sync::mpsc::channel::<(Instant, String)>(self.connections * 4);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut workers = Vec::new();
        for _ in 0..self.connections {
            let (client, endpoint, auth, rx) = (
                client.clone(),
                endpoint.clone(),
                auth.clone(),
                Arc::clone(&rx),
            );
            let marker = self.marker;
            workers.push(tokio::spawn(async move {
                let mut t = Totals::default();
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((due, body)) = next else {
                        break;
                    };
                    let answer = client
                        .post(&endpoint)
                        .header(reqwest::header::AUTHORIZATION, &auth)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body)
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status().is_success() => {
                            let text = r.bytes().await.unwrap_or_default();
                            t.latencies.push(due.elapsed());
                            if text.windows(marker.len()).any(|w| w == marker) {
                                t.marked += 1;
                            }
                        }
                        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => t.not_found += 1,
                        _ => t.errors += 1,
                    }
                }
                t
            }));
        }
        let started = Instant::now();
        let interval_ns = 1_000_000_000 / self.rate;
        for i in 0..self.total {
            let due = started + Duration::from_nanos(i * interval_ns);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
            if tx.send((due, body(i))).await.is_err() {
                break;
            }
        }
        drop(tx);
        let mut out = Totals::default();
        for w in workers {
            let t = w.await.context("a load worker")?;
            out.latencies.extend(t.latencies);
            out.errors += t.errors;
            out.not_found += t.not_found;
            out.marked += t.marked;
        }
        out.elapsed = started.elapsed();
        Ok(out)
    }
}

async fn send_all(args: &CheckloadArgs, mut picker: Picker, total: u64) -> anyhow::Result<Totals> {
    let feature = args.feature.clone();
    OpenLoop {
        url: &args.url,
        key: &args.key,
        path: "/v1/entitlements/check",
        rate: args.rate,
        total,
        connections: args.connections,
        marker: b"\"allowed\":true",
    }
    .run(|_| {
        let customer = picker.next();
        format!(r#"{{"customer":"{customer}","feature":"{feature}"}}"#)
    })
    .await
}

pub fn bench(args: CheckBenchArgs) -> anyhow::Result<ExitCode> {
    let engine = args.store.open_engine()?;
    let billing = BillingStore::open(&args.store.data_dir)?;
    let checker = Checker::new();
    let feature = FeatureKey::parse(&args.feature).context("--feature")?;
    let mut picker = Picker::new(
        args.customers_file.as_deref(),
        &args.customer_prefix,
        args.customers,
    )?;
    let keys: Vec<CustomerKey> = (0..picker.keys.len().min(100_000))
        .map(|_| CustomerKey::parse(picker.next()).context("a customer key"))
        .collect::<anyhow::Result<_>>()?;
    let now = engine.now();
    // Warm the cache: the first check of each customer reads its grants from the database.
    for k in &keys {
        checker
            .check(&engine, &billing, k, &feature, Decimal::ZERO, now)
            .with_context(|| format!("checking {k}"))?;
    }
    let mut times = Vec::with_capacity(usize::try_from(args.checks).unwrap_or(0));
    let started = Instant::now();
    for i in 0..args.checks {
        let k = &keys[usize::try_from(i).unwrap_or(0) % keys.len()];
        let t = Instant::now();
        let c = checker.check(&engine, &billing, k, &feature, Decimal::ZERO, now)?;
        times.push(t.elapsed());
        std::hint::black_box(c);
    }
    let elapsed = started.elapsed();
    times.sort_unstable();
    let out = serde_json::json!({
        "checks": args.checks,
        "customers": keys.len(),
        "checks_per_second": args.checks as f64 / elapsed.as_secs_f64(),
        "latency_us": {
            "p50": percentile(&times, 0.5).as_secs_f64() * 1e6,
            "p99": percentile(&times, 0.99).as_secs_f64() * 1e6,
            "p999": percentile(&times, 0.999).as_secs_f64() * 1e6,
        },
    });
    println!("{out}");
    drop(billing);
    engine.close();
    Ok(ExitCode::SUCCESS)
}
