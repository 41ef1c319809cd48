//! `tollgate checkload` and `tollgate check-bench`: how fast entitlement checks are answered.
//!
//! `checkload` sends `POST /v1/entitlements/check` to a running server at a fixed rate (open
//! loop, see [`OpenLoop`]: requests are released on schedule whatever the server does, and a
//! request's latency includes any wait behind a slow answer, so a slow server cannot hide its
//! queueing by slowing the sender), over `--connections` keep-alive connections, for customers picked by a fixed sequence from `--customers-file`
//! (one key per line) or from `PREFIX000000 ..`. It prints the achieved rate and latency
//! percentiles; answers other than 200 are counted as errors, 404s (unknown customer) apart.
//!
//! `check-bench` opens a data directory in process (the server must not run on it) and times
//! single calls of the checker (the code behind the endpoint, without HTTP) on one thread.
//!
//! `inspectload` shares the open loop ([`OpenLoop`]), its limits and runtime
//! ([`open_loop_runtime`]) and its report ([`Totals::report`], [`Report`]).
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
    let runtime = open_loop_runtime(args.connections, args.seconds, args.rate)?;
    let total = args.rate * args.seconds;
    let picker = Picker::new(
        args.customers_file.as_deref(),
        &args.customer_prefix,
        args.customers,
    )?;
    let r = runtime.block_on(send_all(&args, picker, total))?.report();
    if args.json {
        let out = serde_json::json!({
            "checks": r.answered,
            "errors": r.errors,
            "unknown_customers": r.not_found,
            "allowed": r.marked,
            "seconds": r.seconds,
            "checks_per_second": r.per_second,
            "target_rate": args.rate,
            "latency_ms": r.latency_ms_json(),
            "release_lag_ms": r.release_lag_ms_json(),
        });
        println!("{out}");
    } else {
        println!(
            "{}; {} allowed, {} unknown customers, {} errors",
            r.summary("checks", args.rate),
            r.marked,
            r.not_found,
            r.errors
        );
    }
    Ok(if r.errors == 0 && r.not_found == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The async runtime of an open-loop command, once `connections`, `seconds` and `rate` are
/// within their limits.
pub(crate) fn open_loop_runtime(
    connections: usize,
    seconds: u64,
    rate: u64,
) -> anyhow::Result<tokio::runtime::Runtime> {
    if !(1..=CONNECTIONS_MAX).contains(&connections) {
        bail!("--connections must be 1..={CONNECTIONS_MAX}");
    }
    if !(1..=SECONDS_MAX).contains(&seconds) || !(1..=RATE_MAX).contains(&rate) {
        bail!("--seconds must be 1..={SECONDS_MAX} and --rate 1..={RATE_MAX}");
    }
    // One thread: the client must not take both cores from the server it measures.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// What an open-loop run came to.
#[derive(Default)]
pub(crate) struct Totals {
    /// Latency of every request answered 2xx.
    pub latencies: Vec<Duration>,
    /// Latency of every 2xx answer whose body contains the marker (also in `latencies`).
    pub marked_latencies: Vec<Duration>,
    /// Requests that failed: transport, timeout, any status but 2xx and 404.
    pub errors: u64,
    /// Requests answered 404.
    pub not_found: u64,
    /// 2xx answers whose body contains the marker.
    pub marked: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// How late each request was released against its nominal due time.
    pub release_lags: Vec<Duration>,
}

impl Totals {
    /// The figures people read: answers, rate and latency percentiles.
    pub(crate) fn report(self) -> Report {
        let mut sorted = self.latencies;
        sorted.sort_unstable();
        let mut lags = self.release_lags;
        lags.sort_unstable();
        let mut marked = self.marked_latencies;
        marked.sort_unstable();
        // The unmarked answers' latencies: every latency, less the marked ones (both sorted).
        let mut unmarked = Vec::with_capacity(sorted.len() - marked.len().min(sorted.len()));
        let mut m = marked.iter().peekable();
        for l in &sorted {
            if m.peek() == Some(&l) {
                m.next();
            } else {
                unmarked.push(*l);
            }
        }
        let seconds = self.elapsed.as_secs_f64();
        Report {
            answered: sorted.len(),
            errors: self.errors,
            not_found: self.not_found,
            marked: self.marked,
            seconds,
            per_second: sorted.len() as f64 / seconds,
            p50: percentile(&sorted, 0.5),
            p99: percentile(&sorted, 0.99),
            p999: percentile(&sorted, 0.999),
            max: sorted.last().copied().unwrap_or_default(),
            marked_p99: percentile(&marked, 0.99),
            unmarked_p99: percentile(&unmarked, 0.99),
            lag_p99: percentile(&lags, 0.99),
            lag_max: lags.last().copied().unwrap_or_default(),
        }
    }
}

/// What an open-loop run is reported as ([`Totals::report`]).
pub(crate) struct Report {
    /// Requests answered 2xx.
    pub answered: usize,
    /// As in [`Totals`].
    pub errors: u64,
    /// As in [`Totals`].
    pub not_found: u64,
    /// As in [`Totals`].
    pub marked: u64,
    /// How long the run took.
    pub seconds: f64,
    /// Answers per second achieved.
    pub per_second: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    marked_p99: Duration,
    unmarked_p99: Duration,
    lag_p99: Duration,
    lag_max: Duration,
}

impl Report {
    /// The latency percentiles in ms: `{"p50", "p99", "p999", "max", "marked_p99",
    /// "unmarked_p99"}` (the last two: p99 of the answers with and without the marker).
    pub(crate) fn latency_ms_json(&self) -> serde_json::Value {
        serde_json::json!({
            "p50": ms(self.p50),
            "p99": ms(self.p99),
            "p999": ms(self.p999),
            "max": ms(self.max),
            "marked_p99": ms(self.marked_p99),
            "unmarked_p99": ms(self.unmarked_p99),
        })
    }

    /// How late requests were released against the schedule, in ms: `{"p99", "max"}`.
    pub(crate) fn release_lag_ms_json(&self) -> serde_json::Value {
        serde_json::json!({ "p99": ms(self.lag_p99), "max": ms(self.lag_max) })
    }

    /// `N {what} in S s (R/s, target T/s): p50 … ms, p99 … ms, p999 … ms, max … ms`.
    pub(crate) fn summary(&self, what: &str, target_rate: u64) -> String {
        format!(
            "{} {what} in {:.1} s ({:.0}/s, target {target_rate}/s): p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms; released late by p99 {:.3} ms, max {:.3} ms",
            self.answered,
            self.seconds,
            self.per_second,
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            ms(self.lag_p99),
            ms(self.lag_max)
        )
    }
}

/// An open-loop run: `POST {url}{path}` with the bodies `body(i)` for `i` in `0..total` at
/// `rate` per second, over `connections` keep-alive HTTP/1 connections. Counts the answers
/// whose body contains `marker`.
///
/// Pacing: a pacer thread sleeps until the nominal due time (`start + i / rate`) of the next
/// request and then releases every request due by then (one or two at 20,000/s: the sleep's
/// precision is some 50-100 µs), round robin over the connections, each of which sends its
/// queue in order. Requests arrive as an even stream, as the checks of many independent
/// proxies do, not in bursts of a timer tick. A request's latency runs from its release, so
/// time it waits behind a slow answer on its connection, or behind the client's own thread, is
/// counted (no coordinated omission). How late releases were against the nominal schedule (a
/// client that cannot keep up, or a pacer thread not scheduled in time) is reported apart as
/// the release lag.
pub(crate) struct OpenLoop<'a> {
    pub url: &'a str,
    pub key: &'a str,
    pub path: &'a str,
    pub rate: u64,
    pub total: u64,
    pub connections: usize,
    pub marker: &'static [u8],
}

/// One request handed to a connection: when it was released, and its body.
type Released = (Instant, bytes::Bytes);

/// One keep-alive HTTP/1 connection of a load client.
type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// Longest a load request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl OpenLoop<'_> {
    pub(crate) async fn run(&self, mut body: impl FnMut(u64) -> String) -> anyhow::Result<Totals> {
        let uri: hyper::Uri = format!("{}{}", self.url.trim_end_matches('/'), self.path)
            .parse()
            .context("--url")?;
        let target = Target {
            addr: uri
                .authority()
                .context("--url needs a host and port")?
                .as_str()
                .to_owned(),
            uri,
            auth: format!("Bearer {}", self.key),
        };
        let target = Arc::new(target);
        let mut queues = Vec::with_capacity(self.connections);
        let mut workers = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            let sender = target.connect().await?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Released>();
            queues.push(tx);
            workers.push(tokio::spawn(send_queue(
                Arc::clone(&target),
                sender,
                rx,
                self.marker,
            )));
        }
        let started = Instant::now();
        let interval_ns = 1_000_000_000 / self.rate;
        let (total, pacer_releases) = (self.total, tokio::sync::mpsc::unbounded_channel());
        let (releases, mut released) = pacer_releases;
        let pacer = std::thread::Builder::new()
            .name("load-pacer".into())
            .spawn(move || pace(started, interval_ns, total, &releases))
            .context("starting the pacer thread")?;
        let mut lags = Vec::with_capacity(usize::try_from(self.total).unwrap_or(0));
        let mut i = 0u64;
        while let Some((due, now)) = released.recv().await {
            while i < due {
                lags.push(now - (started + Duration::from_nanos(i * interval_ns)));
                let q = &queues[usize::try_from(i).unwrap_or(0) % queues.len()];
                if q.send((now, body(i).into())).is_err() {
                    bail!("a load connection stopped");
                }
                i += 1;
            }
        }
        if pacer.join().is_err() {
            bail!("the pacer thread panicked");
        }
        drop(queues);
        let mut out = Totals::default();
        for w in workers {
            let t = w.await.context("a load worker")?;
            out.latencies.extend(t.latencies);
            out.marked_latencies.extend(t.marked_latencies);
            out.errors += t.errors;
            out.not_found += t.not_found;
            out.marked += t.marked;
        }
        out.elapsed = started.elapsed();
        out.release_lags = lags;
        Ok(out)
    }
}

/// The pacer: sleeps until the next request is due, then sends `(requests due so far, now)`,
/// until all `total` are released or the receiver is gone.
fn pace(
    started: Instant,
    interval_ns: u64,
    total: u64,
    releases: &tokio::sync::mpsc::UnboundedSender<(u64, Instant)>,
) {
    let mut i = 0u64;
    while i < total {
        let next = started + Duration::from_nanos(i * interval_ns);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let now = Instant::now();
        let elapsed = u64::try_from((now - started).as_nanos()).unwrap_or(u64::MAX);
        let due = (elapsed / interval_ns + 1).min(total);
        if releases.send((due, now)).is_err() {
            return;
        }
        i = due;
    }
}

/// Where a load client sends: the address, the full URI and the authorization header.
struct Target {
    addr: String,
    uri: hyper::Uri,
    auth: String,
}

impl Target {
    /// A new keep-alive connection, its driver spawned on the current runtime.
    async fn connect(&self) -> anyhow::Result<Sender> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends one request and reads its whole answer: status and body.
    async fn send(
        &self,
        sender: &mut Sender,
        body: bytes::Bytes,
    ) -> anyhow::Result<(hyper::StatusCode, bytes::Bytes)> {
        use http_body_util::BodyExt;
        sender.ready().await?;
        let request = hyper::Request::post(&self.uri)
            .header(hyper::header::HOST, &self.addr)
            .header(hyper::header::AUTHORIZATION, &self.auth)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(body))?;
        let answer = sender.send_request(request).await?;
        let status = answer.status();
        let body = answer.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Sends one connection's queue in order; a broken connection is counted as an error and
/// replaced before the next request.
async fn send_queue(
    target: Arc<Target>,
    mut sender: Sender,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Released>,
    marker: &'static [u8],
) -> Totals {
    let mut t = Totals::default();
    let mut broken = false;
    while let Some((released, body)) = queue.recv().await {
        if broken {
            match target.connect().await {
                Ok(s) => {
                    sender = s;
                    broken = false;
                }
                Err(_) => {
                    t.errors += 1;
                    continue;
                }
            }
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, target.send(&mut sender, body)).await {
            Ok(Ok((status, text))) if status.is_success() => {
                let latency = released.elapsed();
                t.latencies.push(latency);
                if text.windows(marker.len()).any(|w| w == marker) {
                    t.marked += 1;
                    t.marked_latencies.push(latency);
                }
            }
            Ok(Ok((status, _))) if status == hyper::StatusCode::NOT_FOUND => t.not_found += 1,
            Ok(Ok(_)) => t.errors += 1,
            Ok(Err(_)) | Err(_) => {
                t.errors += 1;
                broken = true;
            }
        }
    }
    t
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_sorts_latencies_and_prints_its_percentiles() {
        let totals = Totals {
            latencies: (1..=4).rev().map(Duration::from_millis).collect(),
            errors: 1,
            not_found: 2,
            marked: 3,
            elapsed: Duration::from_secs(2),
            release_lags: vec![Duration::from_micros(500), Duration::from_micros(100)],
            marked_latencies: vec![Duration::from_millis(3)],
        };
        let r = totals.report();
        assert_eq!((r.answered, r.errors, r.not_found, r.marked), (4, 1, 2, 3));
        assert_eq!(
            r.summary("checks", 5),
            "4 checks in 2.0 s (2/s, target 5/s): p50 2.000 ms, p99 4.000 ms, p999 4.000 ms, max 4.000 ms; released late by p99 0.500 ms, max 0.500 ms"
        );
        assert_eq!(r.latency_ms_json()["max"], serde_json::json!(4.0));
        assert_eq!(r.latency_ms_json()["marked_p99"], serde_json::json!(3.0));
        assert_eq!(r.latency_ms_json()["unmarked_p99"], serde_json::json!(4.0));
    }
}
