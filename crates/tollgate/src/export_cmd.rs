//! `tollgate export KIND --from --to --format --out FILE`: the finance exports of
//! `GET /v1/exports/{kind}` from the data directory (stop the server first, or use the API).
//! Same rows, same schema (`docs/exports.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tollgate_api::export::format::{self, Format};
use tollgate_api::export::{self, Kind, Range};
use tollgate_store::BillingStore;

use crate::cli::StoreArgs;

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// invoices | invoice_lines | credits | credit_notes | usage_daily.
    pub kind: String,
    /// First date, YYYY-MM-DD (in each customer's time zone).
    #[arg(long)]
    pub from: String,
    /// First date after the range, YYYY-MM-DD.
    #[arg(long)]
    pub to: String,
    /// csv | parquet.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Where to write the file (`-` for standard output).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let kind = Kind::parse(&args.kind).with_context(|| {
        format!(
            "unknown export `{}`: invoices, invoice_lines, credits, credit_notes, usage_daily",
            args.kind
        )
    })?;
    let fmt = Format::parse(&args.format)
        .with_context(|| format!("--format `{}`: csv or parquet", args.format))?;
    let range = Range::parse(&args.from, &args.to).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let engine = args.store.open_engine()?;
    let billing = BillingStore::open(&args.store.data_dir)?;
    let table = export::build(&engine, &billing, kind, &range)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    engine.close();
    let bytes = format::encode(&table, fmt).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if args.out.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(&bytes)?;
    } else {
        std::fs::write(&args.out, &bytes)
            .with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!(
            "{} rows of {} written to {}",
            table.rows.len(),
            kind.name(),
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
