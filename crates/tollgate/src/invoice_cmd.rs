//! `tollgate invoice`: run the invoice cycle, list and show invoices.
//!
//! `run` opens the data directory (stop the server first, or use `POST /v1/invoices/run`); it
//! is idempotent, so running it twice creates nothing new. `list` and `show` only read.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tollgate_core::billing::CustomerKey;
use tollgate_core::invoice::InvoiceStatus;
use tollgate_store::BillingStore;
use tollgate_store::billing::InvoiceFilter;
use tollgate_store::billing::run::{self, RunOptions};

use crate::cli::{StoreArgs, print_table};

#[derive(Debug, Subcommand)]
pub enum InvoiceCommand {
    /// Draft invoices for ended periods, update drafts with late events, finalize drafts whose
    /// grace period is over. Exit code 3 when some subscription could not be invoiced.
    ///
    /// Example: tollgate invoice run --period 2026-11
    Run(RunArgs),
    /// List invoices.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this customer.
        #[arg(long)]
        customer: Option<String>,
        /// draft | finalized | paid | void.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one invoice as JSON, or as printable HTML with --html.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// Invoice id (inv_...).
        id: String,
        /// Print the HTML page instead of JSON.
        #[arg(long)]
        html: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only the periods that start in this local month, YYYY-MM.
    #[arg(long)]
    pub period: Option<String>,
    /// Only this customer.
    #[arg(long)]
    pub customer: Option<String>,
    /// Grace period after a period ends (default 24h, or invoice_grace in the config file).
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn customer(text: Option<&str>) -> anyhow::Result<Option<CustomerKey>> {
    text.map(|c| CustomerKey::parse(c).map_err(|e| anyhow::anyhow!("--customer: {e}")))
        .transpose()
}

pub fn run(command: InvoiceCommand) -> anyhow::Result<ExitCode> {
    match command {
        InvoiceCommand::Run(args) => run_cycle(args),
        InvoiceCommand::List {
            store,
            customer: c,
            status,
        } => {
            let billing = BillingStore::open(&store.data_dir)?;
            let status = status
                .map(|s| {
                    InvoiceStatus::parse(&s)
                        .with_context(|| format!("--status `{s}`: draft, finalized, paid or void"))
                })
                .transpose()?;
            let mut table = vec![vec![
                "id".to_owned(),
                "number".into(),
                "status".into(),
                "customer".into(),
                "period_start".into(),
                "total".into(),
            ]];
            let mut after = None;
            loop {
                let page = billing.invoices(&InvoiceFilter {
                    customer: customer(c.as_deref())?,
                    status,
                    after: after.clone(),
                    limit: tollgate_store::billing::LIST_LIMIT_MAX,
                })?;
                let last = page.len() < tollgate_store::billing::LIST_LIMIT_MAX;
                after = page.last().map(|i| i.id.clone());
                for inv in page {
                    let d = &inv.content.draft;
                    table.push(vec![
                        inv.id.clone(),
                        inv.number.clone().unwrap_or_else(|| "-".into()),
                        inv.status.as_str().into(),
                        d.customer.to_string(),
                        d.period.start.to_rfc3339(),
                        format!("{} {}", d.currency.format(d.total_minor), d.currency),
                    ]);
                }
                if last {
                    break;
                }
            }
            print_table(&table);
            Ok(ExitCode::SUCCESS)
        }
        InvoiceCommand::Show { store, id, html } => {
            let billing = BillingStore::open(&store.data_dir)?;
            let inv = billing.invoice(&id)?;
            if html {
                let c = billing.customer(&inv.content.draft.customer)?;
                let page = tollgate_api::render::invoice_page(
                    &inv,
                    &c.name,
                    c.email.as_deref(),
                    c.time_zone.name(),
                );
                println!("{}", askama::Template::render(&page)?);
            } else {
                let body = tollgate_api::convert::billing::invoice_response(&inv);
                println!("{}", serde_json::to_string_pretty(&body)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_cycle(args: RunArgs) -> anyhow::Result<ExitCode> {
    let file = args.store.file_config()?;
    let grace_ms = crate::config::invoice_grace_ms(args.grace.as_deref(), &file)?;
    let period = args
        .period
        .as_deref()
        .map(|p| {
            tollgate_api::convert::billing::month(p)
                .map_err(|e| anyhow::anyhow!("--period: {}", e.message))
        })
        .transpose()?;
    let engine = args.store.open_engine()?;
    let billing = BillingStore::open(&args.store.data_dir)?;
    let opts = RunOptions {
        now: engine.now(),
        grace_ms,
        acceptance_window_ms: engine.config().acceptance_window_ms,
        period,
        customer: customer(args.customer.as_deref())?,
        finalize_now: BTreeSet::new(),
        only_period_start: None,
        credit_policy: Some(crate::config::credit_policy(
            None,
            &args.store.file_config()?,
        )?),
    };
    let started = std::time::Instant::now();
    let report = run::run(&engine, &billing, &opts)?;
    let elapsed = started.elapsed();
    engine.close();
    if args.json {
        // The same shape as POST /v1/invoices/run answers.
        let body = tollgate_api::convert::billing::run_response(report.clone());
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        println!(
            "{} subscriptions: {} drafted, {} updated, {} finalized, {} unchanged ({:.3} s)",
            report.subscriptions,
            report.created,
            report.updated,
            report.finalized,
            report.unchanged,
            elapsed.as_secs_f64()
        );
        for e in &report.errors {
            eprintln!("{}: {} ({})", e.subscription, e.message, e.code);
        }
    }
    if report.errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else if report.subscriptions == 0 {
        bail!("no subscription could be invoiced")
    } else {
        Ok(ExitCode::from(3))
    }
}
