//! The `query` part: `tollgate serve` on the data dir `ingest` loaded, asked over HTTP with
//! keep-alive (one connection, one request at a time):
//! - one customer's month by day (`bytes-out`, `window_size=day` over the 30 days) for
//!   [`CUSTOMER_QUERIES`] random customers: p50 and p99;
//! - every customer × day in one request (`bytes-out`): median of [`QUERY_REPEATS`];
//! - unique sessions per customer (`sessions`, one window, all customers): median;
//! - the grand total (`bytes-in`, one window, all customers, summed by the client): median.
//!
//! A request's time runs until the last byte of its body is in (checking that it is UTF-8
//! comes after); for the grand total it includes parsing the answer and summing it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::exact::{UsageAnswer, integer_value};
use super::server::Server;
use super::{ADMIN_KEY, Bench, CUSTOMER_QUERIES, Measure, QUERY_REPEATS, SEED, SplitMix64};

pub fn run(
    bench: &Bench,
    data_dir: &Path,
    differences: &mut Vec<String>,
) -> anyhow::Result<Measure> {
    let server = Server::start(bench, data_dir)?;
    eprintln!("bench: usage queries over HTTP -> {}", server.base);
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(300))
        .build()?;
    let data = &bench.data;
    let get = |meter: &str, query: &str| -> anyhow::Result<(Duration, String)> {
        let url = format!("{}/v1/meters/{meter}/usage?{query}", server.base);
        let started = Instant::now();
        let response = client
            .get(&url)
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .send()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        // Timed until the last byte is in; checking it is UTF-8 (37 MB for all customers ×
        // days) is the client's work, done after.
        let bytes = response.bytes()?;
        let took = started.elapsed();
        let body = String::from_utf8(bytes.to_vec()).context("the answer is not UTF-8")?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", super::tail(&body, 500));
        }
        Ok((took, body))
    };
    let range = format!("from={}&to={}", data.from, data.to);

    let mut rng = SplitMix64(SEED);
    let mut times: Vec<f64> = Vec::with_capacity(CUSTOMER_QUERIES);
    for customer in rng.pick(&data.customers, CUSTOMER_QUERIES) {
        let (took, _) = get(
            "bytes-out",
            &format!("subject={customer}&{range}&window_size=day"),
        )?;
        times.push(super::ms(took));
    }
    times.sort_by(f64::total_cmp);

    let repeat = |f: &dyn Fn() -> anyhow::Result<Duration>| -> anyhow::Result<Option<f64>> {
        let mut t = Vec::with_capacity(QUERY_REPEATS);
        for _ in 0..QUERY_REPEATS {
            t.push(super::ms(f()?));
        }
        Ok(super::median(&t))
    };
    // The answer would pass USAGE_ROWS_MAX (a 422): there is no single-request figure.
    let all_cells_ms = if data.expected.totals.customer_day_cells <= super::USAGE_ROWS_MAX {
        repeat(&|| Ok(get("bytes-out", &format!("{range}&window_size=day"))?.0))?
    } else {
        None
    };
    let sessions_ms = repeat(&|| Ok(get("sessions", &range)?.0))?;
    let total_in = std::cell::Cell::new(0u128);
    let totals_ms = repeat(&|| {
        let started = Instant::now();
        let (_, body) = get("bytes-in", &range)?;
        let answer: UsageAnswer = serde_json::from_str(&body)?;
        let mut sum = 0u128;
        for row in &answer.data {
            sum += integer_value(&row.value)?;
        }
        total_in.set(sum);
        Ok(started.elapsed())
    })?;
    server.stop()?;

    let want = u128::from(data.expected.totals.bytes_in);
    let totals_exact = total_in.get() == want;
    if !totals_exact {
        differences.push(format!(
            "Tollgate query: grand total bytes_in over HTTP: expected {want}, got {}",
            total_in.get()
        ));
    }
    let m = Measure {
        customer_p50_ms: super::percentile(&times, 0.50),
        customer_p99_ms: super::percentile(&times, 0.99),
        customer_queries: Some(times.len()),
        all_cells_ms,
        sessions_ms,
        totals_ms,
        exact: Some(totals_exact),
        ..Measure::default()
    };
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));
    eprintln!(
        "  one customer by day: p50 {} p99 {} ({} customers); all cells {}; sessions {}; totals {}",
        show(m.customer_p50_ms),
        show(m.customer_p99_ms),
        times.len(),
        show(m.all_cells_ms),
        show(m.sessions_ms),
        show(m.totals_ms)
    );
    Ok(m)
}
