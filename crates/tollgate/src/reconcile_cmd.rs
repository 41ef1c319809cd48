//! Reconciliation from the command line (`tollgate reconcile --period 2026-11`), on a schedule
//! inside `serve`, and the Stripe reader that fetches the provider's own records of invoices.
//!
//! Owns: the CLI (report as JSON, CSV or a summary; exit status 4 when anything is
//! unexplained), the scheduler loop (reconciles the previous month every `--reconcile-every`),
//! and [`StripeRecords`] (`GET /v1/invoices/{id}` and the charge's refunded total). Does not
//! own: the comparisons (`tollgate_core::reconcile`) or loading (`tollgate_store`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use tollgate_api::{AppState, ProviderRecords};
use tollgate_core::reconcile::{ProviderInvoice, Report};
use tollgate_store::BillingStore;
use tollgate_store::billing::reconcile::{ProviderViews, ReconcileOptions};

use crate::cli::StoreArgs;

/// Exit status when a reconciliation finds a difference nothing explains.
pub const EXIT_UNEXPLAINED: u8 = 4;

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The month: invoices whose billing period starts in it (customer's zone), YYYY-MM.
    #[arg(long)]
    pub period: String,
    /// json (the whole report), csv (one row per difference) or summary (counts).
    #[arg(long, default_value = "summary")]
    pub format: String,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Refund what was collected beyond what an invoice asked (a refund with origin `rule`).
    #[arg(long)]
    pub refund_overpayments: bool,
    /// Stripe secret key: fetch Stripe's own records of pushed invoices (without it, the
    /// provider side is Tollgate's copy of what Stripe's webhooks said).
    #[arg(long, env = "TOLLGATE_STRIPE_SECRET_KEY")]
    pub stripe_secret_key: Option<String>,
    /// Stripe's API base URL.
    #[arg(long, default_value = "https://api.stripe.com")]
    pub stripe_api_base: String,
}

pub fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    if !["json", "csv", "summary"].contains(&args.format.as_str()) {
        bail!("--format is json, csv or summary");
    }
    let month = tollgate_api::routes_support::parse_month(&args.period)
        .map_err(|e| anyhow::anyhow!("--period: {e}"))?;
    let engine = args.store.open_engine()?;
    let billing = BillingStore::open(&args.store.data_dir)?;
    let views = match args.stripe_secret_key.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => {
            let records = StripeRecords::new(&args.stripe_api_base, key, Duration::from_secs(30))?;
            let scope = billing.reconcile_scope(month)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            Some(
                runtime
                    .block_on(records.fetch(scope))
                    .map_err(|e| anyhow::anyhow!("reading Stripe: {e}"))?,
            )
        }
        None => None,
    };
    let started = std::time::Instant::now();
    let report = billing.reconcile(
        &engine,
        &ReconcileOptions {
            month,
            provider_views: views,
            refund_overpayments: args.refund_overpayments,
            now: engine.now(),
        },
    )?;
    let elapsed = started.elapsed();
    engine.close();
    let text = match args.format.as_str() {
        "json" => serde_json::to_string_pretty(&report)? + "\n",
        "csv" => report.to_csv(),
        _ => summary(&report, elapsed),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    if report.unexplained() > 0 {
        eprintln!(
            "{} unexplained difference(s) in {}",
            report.unexplained(),
            report.period
        );
        return Ok(ExitCode::from(EXIT_UNEXPLAINED));
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(report: &Report, elapsed: Duration) -> String {
    let mut out = format!(
        "reconciliation {} of {} ({:.2} s): {} difference(s), {} unexplained\n",
        report.id,
        report.period,
        elapsed.as_secs_f64(),
        report.differences.len(),
        report.unexplained()
    );
    for (kind, n) in &report.checked {
        out.push_str(&format!("  checked {:<9} {n}\n", kind.as_str()));
    }
    for ((kind, class), n) in report.counts() {
        out.push_str(&format!(
            "  {:<9} {:<30} {n}\n",
            kind.as_str(),
            class.as_str()
        ));
    }
    out
}

/// Reconciles the month before the current one (UTC) every `every_ms`, inside `serve`.
pub async fn scheduler(state: Arc<AppState>, every_ms: i64) {
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms.unsigned_abs()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the first run waits one interval (a start is not a reason).
    tick.tick().await;
    loop {
        tick.tick().await;
        let today = state
            .engine
            .now()
            .to_timestamp()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let Ok(last_month) = today.first_of_month().yesterday() else {
            continue;
        };
        let refund = state.reconcile_refund_overpayments;
        match tollgate_api::routes_support::run_reconciliation(&state, last_month, refund).await {
            Ok(report) if report.differences.is_empty() => {
                tracing::info!(period = %report.period, id = %report.id, "reconciled: no differences");
            }
            Ok(report) => tracing::warn!(
                period = %report.period,
                id = %report.id,
                differences = report.differences.len(),
                unexplained = report.unexplained(),
                "reconciliation found differences"
            ),
            Err(e) => tracing::error!(code = e.code, "reconciliation failed: {}", e.message),
        }
    }
}

/// Reads Stripe's own records of invoices.
pub struct StripeRecords {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl StripeRecords {
    /// A reader of the Stripe API at `base` with the secret key `key`.
    pub fn new(base: &str, key: &str, timeout: Duration) -> anyhow::Result<StripeRecords> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the Stripe client")?;
        Ok(StripeRecords {
            client,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    /// `GET path`: the object, `None` on 404.
    async fn get(&self, path: &str) -> Result<Option<Value>, String> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("GET {path}: the answer is not JSON: {e}"))?;
        if !(200..300).contains(&status) {
            return Err(format!("GET {path}: Stripe answered {status}: {body}"));
        }
        Ok(Some(body))
    }

    async fn invoice(&self, id: &str) -> Result<Option<ProviderInvoice>, String> {
        let Some(inv) = self.get(&format!("/v1/invoices/{id}")).await? else {
            return Ok(None);
        };
        let int = |v: &Value, k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
        let charge = match inv.get("charge") {
            Some(Value::String(c)) => Some(c.clone()),
            Some(Value::Object(o)) => o.get("id").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        let refunded = match charge {
            Some(c) => self
                .get(&format!("/v1/charges/{c}"))
                .await?
                .map_or(0, |ch| int(&ch, "amount_refunded")),
            None => 0,
        };
        Ok(Some(ProviderInvoice {
            object: format!("stripe {id}"),
            status: inv
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            amount_due_minor: int(&inv, "amount_due"),
            amount_paid_minor: int(&inv, "amount_paid"),
            amount_refunded_minor: refunded,
        }))
    }
}

impl ProviderRecords for StripeRecords {
    fn fetch(
        &self,
        scope: Vec<(String, Option<String>)>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<ProviderViews, String>> + Send + '_>,
    > {
        Box::pin(async move {
            let mut views = ProviderViews::new();
            for (invoice, provider_id) in scope {
                let view = match provider_id {
                    Some(id) => self.invoice(&id).await?,
                    None => None,
                };
                views.insert(invoice, view);
            }
            Ok(views)
        })
    }
}
