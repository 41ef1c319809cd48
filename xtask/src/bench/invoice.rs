//! The `invoice` part: the invoice run over the loaded month.
//!
//! On the data dir `ingest` loaded, `tollgate serve` (scheduler off, no grace) gets one plan
//! with a flat fee and 3 metered prices (graduated egress, per-unit ingress, packaged sessions),
//! every customer of the data set with a billing anchor on the span's first day (so the whole
//! span is one period), and a subscription each. Then `POST /v1/invoices/run` for that period
//! is timed twice: the first run drafts and finalizes an invoice per customer, the second finds
//! nothing to do. Then `POST /v1/reconciliation/runs` for the period is timed: every metered
//! line's usage recomputed from the raw events, every invoice re-priced, every ledger checked.
//! Exactness: one invoice per customer, the egress lines' quantities sum to the generator's
//! total `bytes_out`, and reconciliation finds no difference.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::server::Server;
use super::{ADMIN_KEY, Bench};

/// What one invoice run measured.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct InvoiceMeasure {
    pub customers: usize,
    /// Creating customers and subscriptions over HTTP (not the figure of the issue).
    pub setup_ms: f64,
    /// The first run: draft + finalize every invoice.
    pub first_run_ms: f64,
    /// The second run: nothing new.
    pub second_run_ms: f64,
    /// Reconciliation of the period (`POST /v1/reconciliation/runs`).
    #[serde(default)]
    pub reconcile_ms: f64,
    /// Usage cells (metered lines) reconciliation recomputed from raw events.
    #[serde(default)]
    pub reconcile_usage_checked: u64,
    pub exact: bool,
}

const PLAN: &str = r#"{
  "key": "bench", "name": "Bench plan", "currency": "USD", "interval": "month",
  "prices": [
    {"key": "platform", "name": "Platform", "model": {"type": "flat", "amount": "10.00"}},
    {"key": "egress", "name": "Egress", "meter": "bytes-out", "free_units": "1000000",
     "model": {"type": "graduated", "tiers": [
       {"up_to": "1000000000", "unit_price": "0.0000000001"},
       {"up_to": null, "unit_price": "0.00000000008"}]}},
    {"key": "ingress", "name": "Ingress", "meter": "bytes-in",
     "model": {"type": "per_unit", "unit_price": "0.00000000005"}},
    {"key": "sessions", "name": "Sessions", "meter": "sessions", "maximum_amount": "50",
     "model": {"type": "package", "package_size": "100", "package_price": "0.25"}}
  ]
}"#;

pub fn run(
    bench: &Bench,
    data_dir: &Path,
    differences: &mut Vec<String>,
) -> anyhow::Result<InvoiceMeasure> {
    let server = Server::start_with(
        bench,
        data_dir,
        &["--invoice-every", "0s", "--invoice-grace", "0s"],
    )?;
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(600))
        .build()?;
    let send =
        |method: reqwest::Method, path: &str, body: Option<&Value>| -> anyhow::Result<Value> {
            let url = format!("{}{path}", server.base);
            let mut req = client
                .request(method.clone(), &url)
                .header("authorization", format!("Bearer {ADMIN_KEY}"));
            if let Some(b) = body {
                req = req.json(b);
            }
            let response = req.send().with_context(|| format!("{method} {url}"))?;
            let status = response.status();
            let text = response.text()?;
            if !status.is_success() {
                bail!("{method} {url}: {status}: {}", super::tail(&text, 500));
            }
            Ok(serde_json::from_str(&text)?)
        };
    let data = &bench.data;
    let anchor = data.start.to_string();
    let period = anchor.get(..7).context("period")?.to_owned();
    let start = format!("{anchor}T00:00:00Z");
    eprintln!(
        "bench: invoice run: {} customers, period {period} -> {}",
        data.customers.len(),
        server.base
    );
    let setup = Instant::now();
    let plan: Value = serde_json::from_str(PLAN)?;
    send(reqwest::Method::POST, "/v1/plans", Some(&plan))?;
    for key in &data.customers {
        send(
            reqwest::Method::POST,
            "/v1/customers",
            Some(&json!({"key": key, "name": key, "currency": "USD", "billing_anchor": anchor})),
        )?;
        send(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(&json!({"customer": key, "plan": "bench", "start": start})),
        )?;
    }
    let setup_ms = super::ms(setup.elapsed());

    let timed = |label: &str| -> anyhow::Result<(f64, Value)> {
        let started = Instant::now();
        let report = send(
            reqwest::Method::POST,
            "/v1/invoices/run",
            Some(&json!({"period": period})),
        )?;
        let took = super::ms(started.elapsed());
        eprintln!("  {label} run: {took:.1} ms: {report}");
        Ok((took, report))
    };
    let (first_run_ms, first) = timed("first")?;
    let (second_run_ms, second) = timed("second")?;
    let started = Instant::now();
    let recon = send(
        reqwest::Method::POST,
        "/v1/reconciliation/runs",
        Some(&json!({"period": period})),
    )?;
    let reconcile_ms = super::ms(started.elapsed());
    let found = recon
        .get("differences")
        .and_then(Value::as_array)
        .map_or(usize::MAX, Vec::len);
    let reconcile_usage_checked = recon
        .pointer("/checked/usage")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    eprintln!(
        "  reconciliation: {reconcile_ms:.1} ms, {found} difference(s), checked {}",
        recon.get("checked").unwrap_or(&Value::Null)
    );

    let customers = data.customers.len();
    let mut exact = true;
    let count = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX);
    let n = u64::try_from(customers).unwrap_or(u64::MAX);
    if count(&first, "created") != n || count(&first, "finalized") != n {
        differences.push(format!(
            "invoice run: first run should draft and finalize {n}: {first}"
        ));
        exact = false;
    }
    if found != 0 {
        differences.push(format!(
            "reconciliation of a clean period found {found} difference(s): {}",
            super::tail(&recon.to_string(), 2_000)
        ));
        exact = false;
    }
    if count(&second, "created") != 0 || count(&second, "finalized") != 0 {
        differences.push(format!(
            "invoice run: second run should do nothing: {second}"
        ));
        exact = false;
    }
    // Every invoice, paged: one per customer, egress quantities summing to bytes_out.
    let mut after = String::new();
    let mut invoices = 0u64;
    let mut egress = 0u128;
    loop {
        let page = send(
            reqwest::Method::GET,
            &format!("/v1/invoices?limit=1000&after={after}"),
            None,
        )?;
        let data = page
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for inv in &data {
            invoices += 1;
            for line in inv
                .get("lines")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if line.get("price").and_then(Value::as_str) == Some("egress") {
                    let q = line.get("quantity").and_then(Value::as_str).unwrap_or("x");
                    egress += q
                        .parse::<u128>()
                        .with_context(|| format!("egress quantity {q}"))?;
                }
            }
        }
        match page.get("next_after").and_then(Value::as_str) {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    server.stop()?;
    if invoices != n {
        differences.push(format!(
            "invoice run: {invoices} invoices for {n} customers"
        ));
        exact = false;
    }
    let want = u128::from(data.expected.totals.bytes_out);
    if egress != want {
        differences.push(format!(
            "invoice run: egress quantities sum to {egress}, bytes_out is {want}"
        ));
        exact = false;
    }
    Ok(InvoiceMeasure {
        customers,
        setup_ms,
        first_run_ms,
        second_run_ms,
        reconcile_ms,
        reconcile_usage_checked,
        exact,
    })
}
