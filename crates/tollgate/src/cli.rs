//! Command-line interface: argument definitions and the small commands (usage, meters, keys).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tollgate_api::routes_support::{UsageParams, build_query};
use tollgate_core::meter::{Meter, MeterSlug, MeterSpec};
use tollgate_core::time::{Clock, UnixMs};
use tollgate_store::{Engine, EngineConfig, KeyStore, Metrics, Scope};

use crate::config::{FileConfig, acceptance_window_ms, session_timeout_ms};

/// Tollgate: exact usage metering and billing. Ingest CloudEvents once, define meters, query
/// usage, invoice it.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the data lives and which settings apply.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Data directory (created if missing).
    #[arg(long, default_value = "./tollgate-data", env = "TOLLGATE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Config file (default: tollgate.toml in the data directory, if present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How old an event may be and still count, e.g. 35d (default) or 90d for a backfill.
    /// Also how long dedup remembers every event.
    #[arg(long, value_name = "DURATION")]
    pub acceptance_window: Option<String>,
    /// How long a session without a `session.ended` event counts as open, e.g. 24h (default).
    #[arg(long, value_name = "DURATION")]
    pub session_timeout: Option<String>,
}

impl StoreArgs {
    pub fn file_config(&self) -> anyhow::Result<FileConfig> {
        FileConfig::load(self.config.as_deref(), &self.data_dir)
    }

    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        let file = self.file_config()?;
        Ok(EngineConfig {
            acceptance_window_ms: acceptance_window_ms(self.acceptance_window.as_deref(), &file)?,
            session_timeout_ms: session_timeout_ms(self.session_timeout.as_deref(), &file)?,
        })
    }

    /// Opens the engine (takes the data dir's writer lock).
    pub fn open_engine(&self) -> anyhow::Result<Engine> {
        let config = self.engine_config()?;
        Engine::open(
            &self.data_dir,
            config,
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
        )
        .with_context(|| format!("opening data dir {}", self.data_dir.display()))
    }
}

/// The one real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMs {
        UnixMs::from_timestamp(jiff::Timestamp::now())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    ///
    /// Example: TOLLGATE_ADMIN_KEY=tg_change_me_please tollgate serve --demo
    Serve(Box<crate::serve::ServeArgs>),
    /// Import events from a file through the same validation, dedup and commit path as the API.
    ///
    /// Importing the same file twice adds nothing. Exit code 3 when some events were rejected
    /// or conflicted (the rest are stored).
    Import(crate::import::ImportArgs),
    /// Query a meter's usage (stop the server first, or use GET /v1/meters/{slug}/usage).
    Usage(UsageArgs),
    /// Define, list and delete meters.
    Meters {
        #[command(subcommand)]
        command: MetersCommand,
    },
    /// Create, list and revoke API keys (works while the server runs).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the invoice cycle, list and show invoices.
    Invoice {
        #[command(subcommand)]
        command: crate::invoice_cmd::InvoiceCommand,
    },
    /// Write a finance export (invoices, invoice_lines, credits, credit_notes, usage_daily) as CSV or Parquet.
    ///
    /// Example: tollgate export invoices --from 2026-11-01 --to 2026-12-01 --format parquet --out nov.parquet
    Export(crate::export_cmd::ExportArgs),
    /// Reconcile a month: raw events against rollups, rollups re-priced against invoice lines,
    /// invoices and refunds against the payment provider, ledgers against their entries.
    /// Exit status 4 when a difference is unexplained.
    ///
    /// Example: tollgate reconcile --period 2026-11 --format csv --out nov-recon.csv
    Reconcile(crate::reconcile_cmd::ReconcileArgs),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Send an NDJSON file to a running server and measure throughput and latency.
    ///
    /// Batches of whole lines go to POST /v1/events over keep-alive connections; 503 answers
    /// are retried. Prints events/s, latency percentiles per batch and the verdict totals.
    /// Example: tollgate loadgen --url http://127.0.0.1:8080 --key "$KEY" --file events.ndjson
    Loadgen(crate::loadgen::LoadgenArgs),
    /// Send entitlement checks to a running server at a fixed rate and report their latency.
    ///
    /// Example: tollgate checkload --url http://127.0.0.1:8080 --key "$KEY" --feature egress
    Checkload(crate::checkload::CheckloadArgs),
    /// Time entitlement checks in process on a data directory (no server may run on it).
    #[command(hide = true)]
    CheckBench(crate::checkload::CheckBenchArgs),
    /// Send inspection decisions to a running server at a fixed rate and report their latency.
    ///
    /// The server should have the rule set of `tollgate inspect-bench --write-rules` published.
    /// Example: tollgate inspectload --url http://127.0.0.1:8080 --key "$KEY" --rate 5000
    Inspectload(crate::inspectload::InspectloadArgs),
    /// Time IP lookups (1M ranges) and inspection decisions (100k rules) in process.
    #[command(hide = true)]
    InspectBench(crate::inspectload::InspectBenchArgs),
    /// Follow a proxy access log (nginx or Squid) and send each line to a running server.
    ///
    /// Keeps its position in the data dir, follows rotation (rename and copytruncate), and
    /// never counts a line twice (ids are deterministic). Example:
    /// tollgate tail --format nginx --server http://127.0.0.1:8080 --key "$KEY" /var/log/nginx/access.log
    Tail(crate::tail::TailArgs),
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Meter slug.
    pub meter: String,
    /// Only this subject (customer key).
    #[arg(long)]
    pub subject: Option<String>,
    /// Start, RFC 3339 (inclusive, whole minute).
    #[arg(long)]
    pub from: Option<String>,
    /// End, RFC 3339 (exclusive, whole minute).
    #[arg(long)]
    pub to: Option<String>,
    /// minute | hour | day | month.
    #[arg(long)]
    pub window_size: Option<String>,
    /// IANA time zone of window boundaries (default UTC).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Dimension to keep (repeatable).
    #[arg(long)]
    pub group_by: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum MetersCommand {
    /// List meters.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create or replace a meter from a JSON definition (backfilled from stored events).
    ///
    /// Example: tollgate meters put bytes-out --json '{"event_type":"proxy.request",
    /// "aggregation":"sum","value_path":"$.data.bytes_out"}'
    Put {
        #[command(flatten)]
        store: StoreArgs,
        /// Meter slug.
        slug: String,
        /// The definition as JSON text.
        #[arg(long, conflicts_with = "file")]
        json: Option<String>,
        /// A file holding the definition.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Delete a meter (raw events stay).
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        /// Meter slug.
        slug: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    Ingest,
    Read,
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Ingest => Scope::Ingest,
            ScopeArg::Read => Scope::Read,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown only once).
    Create {
        /// Data directory.
        #[arg(long, default_value = "./tollgate-data", env = "TOLLGATE_DATA_DIR")]
        data_dir: PathBuf,
        /// Scope (repeatable): ingest, read, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<ScopeArg>,
        /// Name for people.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never their secrets).
    List {
        /// Data directory.
        #[arg(long, default_value = "./tollgate-data", env = "TOLLGATE_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Revoke a key by id.
    Revoke {
        /// Data directory.
        #[arg(long, default_value = "./tollgate-data", env = "TOLLGATE_DATA_DIR")]
        data_dir: PathBuf,
        /// Key id (key_...).
        id: String,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => crate::serve::run(*args),
        Command::Import(args) => crate::import::run(args),
        Command::Usage(args) => usage(args),
        Command::Meters { command } => meters(command),
        Command::Keys { command } => keys(command),
        Command::Loadgen(args) => crate::loadgen::run(args),
        Command::Checkload(args) => crate::checkload::run(args),
        Command::CheckBench(args) => crate::checkload::bench(args),
        Command::Inspectload(args) => crate::inspectload::run(args),
        Command::InspectBench(args) => crate::inspectload::bench(args),
        Command::Tail(args) => crate::tail::run(args),
        Command::Invoice { command } => crate::invoice_cmd::run(command),
        Command::Export(args) => crate::export_cmd::run(args),
        Command::Reconcile(args) => crate::reconcile_cmd::run(args),
        Command::Openapi => {
            print!("{}", tollgate_api::openapi::document_json());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let engine = args.store.open_engine()?;
    let slug = MeterSlug::parse(&args.meter)?;
    let params = UsageParams {
        subject: args.subject,
        from: args.from,
        to: args.to,
        window_size: args.window_size,
        time_zone: args.time_zone,
        group_by: args.group_by,
    };
    let query = build_query(params, engine.now(), engine.config().acceptance_window_ms)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    let rows = engine.usage(&slug, &query)?;
    if args.json {
        let data: Vec<_> = rows
            .into_iter()
            .map(tollgate_api::convert::usage_row)
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "data": data }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![vec![
        "subject".to_owned(),
        "window_start".into(),
        "window_end".into(),
        "group".into(),
        "value".into(),
    ]];
    for row in rows {
        let group = row
            .group
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("∅")))
            .collect::<Vec<_>>()
            .join(" ");
        table.push(vec![
            row.subject,
            row.window_start.to_rfc3339(),
            row.window_end.to_rfc3339(),
            group,
            row.value.normalize().to_string(),
        ]);
    }
    print_table(&table);
    Ok(ExitCode::SUCCESS)
}

/// Prints rows as left-aligned columns (the last column right-aligned: numbers).
pub fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == columns {
                    format!("{cell:>w$}", w = widths[c])
                } else {
                    format!("{cell:<w$}", w = widths[c])
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn meters(command: MetersCommand) -> anyhow::Result<ExitCode> {
    match command {
        MetersCommand::List { store } => {
            let engine = store.open_engine()?;
            let mut table = vec![vec![
                "slug".to_owned(),
                "aggregation".into(),
                "event_type".into(),
                "value_path".into(),
                "counted".into(),
            ]];
            for info in engine.meters() {
                let r = tollgate_api::convert::meter_response(&info);
                table.push(vec![
                    r.slug,
                    info.meter.aggregation().as_str().into(),
                    serde_json::to_string(&r.definition.event_type)?,
                    r.definition.value_path.unwrap_or_default(),
                    r.counted_events.to_string(),
                ]);
            }
            print_table(&table);
        }
        MetersCommand::Put {
            store,
            slug,
            json,
            file,
        } => {
            let text = match (json, file) {
                (Some(j), _) => j,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?,
                (None, None) => bail!("give the definition with --json or --file"),
            };
            let body: tollgate_api::types::MeterBody =
                serde_json::from_str(&text).context("meter definition")?;
            let spec: MeterSpec = tollgate_api::convert::meter_spec(body)
                .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
            let meter = Meter::new(MeterSlug::parse(&slug)?, spec)?;
            let engine = store.open_engine()?;
            let created = engine.put_meter_blocking(meter)?;
            println!(
                "{} meter {slug}",
                if created { "created" } else { "replaced" }
            );
        }
        MetersCommand::Delete { store, slug } => {
            let engine = store.open_engine()?;
            if !engine.delete_meter_blocking(MeterSlug::parse(&slug)?)? {
                bail!("no meter `{slug}`");
            }
            println!("deleted meter {slug}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    match command {
        KeysCommand::Create {
            data_dir,
            scopes,
            name,
        } => {
            let store = KeyStore::open(&data_dir)?;
            let scopes: Vec<Scope> = scopes.into_iter().map(Scope::from).collect();
            let created = store.create(&name, &scopes, None, now)?;
            println!("id:     {}", created.key.id);
            println!(
                "scopes: {}",
                scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            println!("secret: {}", created.secret);
            eprintln!("(the secret is shown only now)");
        }
        KeysCommand::List { data_dir } => {
            let store = KeyStore::open(&data_dir)?;
            let mut table = vec![vec![
                "id".to_owned(),
                "name".into(),
                "scopes".into(),
                "created".into(),
                "revoked".into(),
            ]];
            for k in store.list()? {
                table.push(vec![
                    k.id,
                    k.name,
                    k.scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    k.created.to_rfc3339(),
                    k.revoked
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            print_table(&table);
        }
        KeysCommand::Revoke { data_dir, id } => {
            let store = KeyStore::open(&data_dir)?;
            if !store.revoke(&id, now)? {
                bail!("no key `{id}`");
            }
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
