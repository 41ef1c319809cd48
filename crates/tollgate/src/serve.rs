//! `tollgate serve`: the HTTP server on one data directory.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use tollgate_api::AppState;
use tollgate_core::provider::Provider;
use tollgate_core::time::Clock;
use tollgate_store::billing::entitlements::Checker;
use tollgate_store::ipmeta::{GeoDb, IpMeta};
use tollgate_store::keys::KEY_SECRET_BYTES_MIN;
use tollgate_store::{BillingStore, KeyStore, ProviderStore, WebhookStore};

use crate::cli::{StoreArgs, SystemClock};

/// Default listen address.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8080";
/// How often entitlement views are loaded in the background (ms): how soon after a write, or
/// after start, a customer's next check finds its view already loaded.
const GRANT_LOAD_EVERY_MS: u64 = 50;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long)]
    pub listen: Option<String>,
    /// On first start, define example meters and load a small generated sample of proxy traffic.
    #[arg(long)]
    pub demo: bool,
    /// How long after a period ends late events still update its draft invoice (default 24h).
    #[arg(long, value_name = "DURATION")]
    pub invoice_grace: Option<String>,
    /// How often to run the invoice cycle: draft ended periods, finalize drafts past their
    /// grace period (default 60s; 0s turns the scheduler off).
    #[arg(long, value_name = "DURATION")]
    pub invoice_every: Option<String>,
    /// How often to evaluate alert rules and metered limits (default 10s; 0s turns it off).
    #[arg(long, value_name = "DURATION")]
    pub alert_every: Option<String>,
    /// How often to reconcile the previous month (default 24h; 0s turns it off). Reports are
    /// kept (GET /v1/reconciliation/runs) and published as metrics.
    #[arg(long, value_name = "DURATION")]
    pub reconcile_every: Option<String>,
    /// Reconciliation refunds what was collected beyond what an invoice asked.
    #[arg(long)]
    pub reconcile_refund_overpayments: bool,
    /// Webhooks: delay before the first retry of a failed delivery; it doubles after each
    /// failure, with jitter (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub webhook_backoff_base: Option<String>,
    /// Webhooks: longest delay between two attempts (default 6h).
    #[arg(long, value_name = "DURATION")]
    pub webhook_backoff_cap: Option<String>,
    /// Webhooks: timeout of one delivery request (default 10s, at most 60s).
    #[arg(long, value_name = "DURATION")]
    pub webhook_timeout: Option<String>,
    /// Webhooks: attempts of one delivery before it is marked failed (default 16).
    #[arg(long, value_name = "N")]
    pub webhook_attempts: Option<u32>,
    /// Webhooks: consecutive failed attempts that disable an endpoint (default 50).
    #[arg(long, value_name = "N")]
    pub webhook_disable_after: Option<u32>,
    /// A MaxMind-format database (GeoIP2/GeoLite2 Country, City or ASN) for enrichment;
    /// repeatable. Re-read on SIGHUP or POST /v1/ip/enrichment/reload.
    #[arg(long, value_name = "FILE")]
    pub enrichment_db: Vec<std::path::PathBuf>,
    /// Automatic credit notes (from late corrections) with a total below this many minor units
    /// are issued at once; larger ones wait for approval (default 10000).
    #[arg(long, value_name = "MINOR_UNITS")]
    pub credit_auto_issue_below: Option<i64>,
    /// Stripe: the secret API key (`sk_…`). With it, customers are synced to Stripe and
    /// finalized invoices pushed there (see docs/stripe.md).
    #[arg(long, env = "TOLLGATE_STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,
    /// Stripe: the API's base URL (default https://api.stripe.com; tests point it at a fake).
    #[arg(long, value_name = "URL")]
    pub stripe_api_base: Option<String>,
    /// Stripe: the signing secret (`whsec_…`) of the webhook endpoint that points at
    /// POST /v1/providers/stripe/webhook. Without it that route answers 404.
    #[arg(long, env = "TOLLGATE_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,
    /// Stripe: delay before the first retry of a failed call; it doubles after each failure,
    /// with jitter (default 2s).
    #[arg(long, value_name = "DURATION")]
    pub stripe_backoff_base: Option<String>,
    /// Stripe: longest delay between two attempts of a call (default 1h).
    #[arg(long, value_name = "DURATION")]
    pub stripe_backoff_cap: Option<String>,
    /// Stripe: attempts of one call before it is marked failed (default 12).
    #[arg(long, value_name = "N")]
    pub stripe_attempts: Option<u32>,
    /// Stripe: timeout of one request (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub stripe_timeout: Option<String>,
    /// Test-only fault injection: fold this event (JSON, one CloudEvent) into the rollups at
    /// start without storing it, as if a rollup had been altered (reconciliation tests).
    #[arg(long, hide = true, value_name = "EVENT")]
    pub fault_rollup_event: Option<String>,
    /// Test-only fault injection: exit right after Stripe answers the named step of a call,
    /// before its outcome is recorded (crash-safety tests).
    /// Orb: the API key. With it, accepted events of the types in `[orb.events]` are
    /// forwarded to Orb, customers synced and Orb invoices read back (see docs/orb.md).
    #[arg(long, env = "TOLLGATE_ORB_API_KEY", hide_env_values = true)]
    pub orb_api_key: Option<String>,
    /// Orb: the API's base URL (default https://api.withorb.com; tests point it at a recorder).
    #[arg(long, value_name = "URL")]
    pub orb_api_base: Option<String>,
    /// Orb: delay before the first retry of a failed request; it doubles after each failure,
    /// with jitter (default 1s).
    #[arg(long, value_name = "DURATION")]
    pub orb_backoff_base: Option<String>,
    /// Orb: longest delay between two attempts (default 5m). Forwarding retries forever.
    #[arg(long, value_name = "DURATION")]
    pub orb_backoff_cap: Option<String>,
    /// Orb: attempts of one customer sync before it is marked failed (default 12).
    #[arg(long, value_name = "N")]
    pub orb_attempts: Option<u32>,
    /// Orb: timeout of one request (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub orb_timeout: Option<String>,
    /// Test-only fault injection: exit right after a provider (Stripe or Orb) answers the
    /// named step, before its outcome is recorded (crash-safety tests).
    #[arg(long, hide = true, value_name = "STEP")]
    pub fault_exit_after_provider_step: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = args.store.file_config()?;
    let listen = args
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| LISTEN_DEFAULT.to_owned());
    let admin_secret = std::env::var("TOLLGATE_ADMIN_KEY")
        .ok()
        .filter(|s| !s.is_empty());
    if let Some(secret) = &admin_secret
        && secret.len() < KEY_SECRET_BYTES_MIN
    {
        bail!("TOLLGATE_ADMIN_KEY must be at least {KEY_SECRET_BYTES_MIN} characters");
    }
    let invoice_grace_ms = crate::config::invoice_grace_ms(args.invoice_grace.as_deref(), &file)?;
    let invoice_every_ms = crate::config::invoice_every_ms(args.invoice_every.as_deref(), &file)?;
    let alert_every_ms = crate::config::alert_every_ms(args.alert_every.as_deref(), &file)?;
    let reconcile_every_ms =
        crate::config::reconcile_every_ms(args.reconcile_every.as_deref(), &file)?;
    let reconcile_refund_overpayments =
        args.reconcile_refund_overpayments || file.reconcile_refund_overpayments == Some(true);
    let credit_policy = crate::config::credit_policy(args.credit_auto_issue_below, &file)?;
    let dropin = crate::config::dropin_mapping(&file)?;
    let webhook_config = crate::config::webhook_config(
        &crate::config::WebhookFlags {
            backoff_base: args.webhook_backoff_base.clone(),
            backoff_cap: args.webhook_backoff_cap.clone(),
            timeout: args.webhook_timeout.clone(),
            attempts: args.webhook_attempts,
            disable_after: args.webhook_disable_after,
        },
        &file,
    )?;
    let stripe_config = crate::config::stripe_config(&crate::config::StripeFlags {
        secret_key: args.stripe_secret_key.clone(),
        api_base: args.stripe_api_base.clone(),
        backoff_base: args.stripe_backoff_base.clone(),
        backoff_cap: args.stripe_backoff_cap.clone(),
        attempts: args.stripe_attempts,
        timeout: args.stripe_timeout.clone(),
        fault_exit_after_step: args.fault_exit_after_provider_step.clone(),
    })?;
    let orb_config = crate::config::orb_config(
        &crate::config::OrbFlags {
            api_key: args.orb_api_key.clone(),
            api_base: args.orb_api_base.clone(),
            backoff_base: args.orb_backoff_base.clone(),
            backoff_cap: args.orb_backoff_cap.clone(),
            attempts: args.orb_attempts,
            timeout: args.orb_timeout.clone(),
            fault_exit_after_step: args.fault_exit_after_provider_step.clone(),
        },
        &file,
    )?;
    let stripe_meters_config = crate::config::stripe_meters_config(stripe_config.as_ref(), &file)?;
    let engine = args.store.open_engine()?;
    let keys = KeyStore::open(&args.store.data_dir)?;
    let billing = BillingStore::open(&args.store.data_dir)?;
    let webhooks = WebhookStore::open(&args.store.data_dir)?;
    let providers = ProviderStore::open(&args.store.data_dir)?;
    if stripe_config.is_some() || orb_config.is_some() {
        // This process owns the data directory: leases of a process that died are void.
        providers.release_leases()?;
    }
    let mut orb_pulls = None;
    let orb = match &orb_config {
        None => None,
        Some(config) => {
            tollgate_store::providers::enable_sync(Provider::Orb);
            let n = providers.backfill(Provider::Orb, SystemClock.now())?;
            if n > 0 {
                tracing::info!(calls = n, "Orb: enqueued customers not synced yet");
            }
            if config.mapping.is_empty() {
                tracing::warn!("Orb: no [orb.events] in the config file; no event is forwarded");
            }
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            orb_pulls = Some(rx);
            Some(tollgate_api::OrbLink {
                store: tollgate_store::OrbStore::open(&args.store.data_dir)?,
                pull: tx,
            })
        }
    };
    if stripe_config.is_some() {
        tollgate_store::providers::enable_sync(Provider::Stripe);
        let n = providers.backfill(Provider::Stripe, SystemClock.now())?;
        if n > 0 {
            tracing::info!(
                calls = n,
                "Stripe: enqueued customers and invoices not synced yet"
            );
        }
    }
    let stripe_meters = match &stripe_meters_config {
        Some(_) => Some(tollgate_store::StripeMeterStore::open(
            &args.store.data_dir,
        )?),
        None => None,
    };
    if let Some(created) = keys.bootstrap_admin(admin_secret.as_deref(), SystemClock.now())? {
        if admin_secret.is_some() {
            let _ = writeln!(
                std::io::stderr(),
                "admin API key {} set from TOLLGATE_ADMIN_KEY",
                created.key.id
            );
        } else {
            // The one place the secret is shown: if it cannot be, say so and stop, rather
            // than run with a key nobody knows.
            writeln!(
                std::io::stdout(),
                "admin API key (shown only once): {}",
                created.secret
            )
            .context("showing the new admin API key on stdout (revoke it with `tollgate keys`)")?;
        }
    }
    if args.demo {
        crate::demo::seed(&engine, &billing)?;
    }
    let enrichment_dbs = if args.enrichment_db.is_empty() {
        file.enrichment_dbs.clone().unwrap_or_default()
    } else {
        args.enrichment_db.clone()
    };
    let geo = GeoDb::open(enrichment_dbs).map_err(anyhow::Error::msg)?;
    let ip = IpMeta::open(&args.store.data_dir, geo).context("loading IP allocations")?;
    let inspect = tollgate_store::inspect::Inspection::open(&args.store.data_dir)
        .context("loading the inspection rule set")?;
    let provider_records: Option<Arc<dyn tollgate_api::ProviderRecords>> = match &stripe_config {
        Some(c) => Some(Arc::new(crate::reconcile_cmd::StripeRecords::new(
            &c.api_base,
            &c.secret_key,
            std::time::Duration::from_millis(c.timeout_ms.unsigned_abs()),
        )?)),
        None => None,
    };
    let state = Arc::new(AppState {
        engine,
        keys,
        billing,
        invoice_grace_ms,
        checker: Checker::new(),
        webhooks,
        ip,
        credit_policy,
        providers,
        stripe_webhook_secret: args.stripe_webhook_secret.clone().filter(|s| !s.is_empty()),
        dropin,
        inspect,
        provider_records,
        reconcile_refund_overpayments,
        orb,
        stripe_meters,
    });
    if let Some(raw) = &args.fault_rollup_event {
        let time = state.engine.now();
        state
            .engine
            .inject_rollup_fault(raw, time)
            .context("--fault-rollup-event")?;
        let _ = writeln!(
            std::io::stderr(),
            "fault injection: a rollup was altered by an event that is not stored"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tollgate-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        // Written without `println!`, which panics when stdout cannot be written: the line
        // is for whoever started the server, and serving does not depend on it.
        let _ = writeln!(std::io::stdout(), "listening on http://{addr}");
        tokio::spawn(crate::webhook_worker::run(
            Arc::clone(&state),
            webhook_config,
        ));
        if let Some(config) = stripe_config {
            tokio::spawn(crate::provider_worker::run(Arc::clone(&state), config));
        }
        if let Some(config) = stripe_meters_config {
            crate::stripe_meter_worker::spawn(Arc::clone(&state), config);
        }
        if let (Some(config), Some(pulls)) = (orb_config, orb_pulls) {
            crate::orb_worker::spawn(Arc::clone(&state), config, pulls);
        }
        tokio::spawn(reload_on_sighup(Arc::clone(&state)));
        tokio::spawn(grant_loader(Arc::clone(&state)));
        if invoice_every_ms > 0 {
            tokio::spawn(invoice_scheduler(Arc::clone(&state), invoice_every_ms));
        }
        if alert_every_ms > 0 {
            tokio::spawn(alert_scheduler(Arc::clone(&state), alert_every_ms));
        }
        if reconcile_every_ms > 0 {
            tokio::spawn(crate::reconcile_cmd::scheduler(
                Arc::clone(&state),
                reconcile_every_ms,
            ));
        }
        tracing::info!(%addr, data_dir = %args.store.data_dir.display(), "serving");
        axum::serve(listener, tollgate_api::router(Arc::clone(&state)))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")
    })?;
    drop(runtime);
    tracing::info!("stopped accepting requests; flushing the writer");
    match Arc::try_unwrap(state) {
        Ok(state) => state.engine.close(),
        Err(_) => tracing::warn!("requests still hold the engine; it closes when they finish"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the invoice cycle every `every_ms`: drafts for ended periods, late events into drafts,
/// finalization after the grace period. Errors are logged and retried at the next tick.
async fn invoice_scheduler(state: Arc<AppState>, every_ms: i64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(every_ms.unsigned_abs()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = Arc::clone(&state);
        let outcome = tokio::task::spawn_blocking(move || {
            let now = st.engine.now();
            tollgate_api::routes_support::run_cycle(&st, None, None, Default::default(), None)
                .map(|r| (r, now))
        })
        .await;
        match outcome {
            Ok(Ok((report, now))) => {
                if report.created + report.updated + report.finalized > 0
                    || !report.errors.is_empty()
                {
                    tracing::info!(
                        "{}",
                        tollgate_api::routes_support::describe_run(&report, now)
                    );
                }
                for e in &report.errors {
                    tracing::warn!(subscription = %e.subscription, code = %e.code, "{}", e.message);
                }
            }
            Ok(Err(e)) => tracing::error!(code = e.code, "invoice run failed: {}", e.message),
            Err(e) => tracing::error!("invoice run panicked: {e}"),
        }
    }
}

/// Evaluates alert rules and metered limits every `every_ms`. Each pass commits what fired, so
/// a rule fires once however often this runs; errors are logged and retried at the next tick.
async fn alert_scheduler(state: Arc<AppState>, every_ms: i64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(every_ms.unsigned_abs()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = Arc::clone(&state);
        match tokio::task::spawn_blocking(move || tollgate_api::routes_support::run_evaluation(&st))
            .await
        {
            Ok(Ok(report)) => {
                for e in &report.events {
                    tracing::info!(rule = %e.rule, customer = %e.customer, "{}", e.event_type);
                }
                for s in &report.skipped {
                    tracing::debug!("alert not evaluated: {s}");
                }
            }
            Ok(Err(e)) => tracing::error!(code = e.code, "alert evaluation failed: {}", e.message),
            Err(e) => tracing::error!("alert evaluation panicked: {e}"),
        }
    }
}

/// Loads entitlement views in the background ([`Checker::refresh`]): every customer's at
/// start, then those a write changed and those due for their periodic reload, so checks
/// rarely read the database themselves. Errors are logged and retried at the next tick.
async fn grant_loader(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(GRANT_LOAD_EVERY_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = Arc::clone(&state);
        let pass = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            st.checker
                .refresh(&st.billing, st.engine.now())
                .map(|r| (r, started.elapsed()))
        });
        match pass.await {
            Ok(Ok((r, took))) if r.changed + r.expired > 0 => tracing::debug!(
                changed = r.changed,
                expired = r.expired,
                ms = took.as_millis(),
                "entitlement views loaded"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "loading entitlement views failed; retrying"),
            Err(e) => tracing::error!("loading entitlement views panicked: {e}"),
        }
    }
}

/// Re-reads the enrichment databases on every SIGHUP; a failure keeps the ones in use.
async fn reload_on_sighup(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let st = Arc::clone(&state);
            match tokio::task::spawn_blocking(move || st.ip.geo.reload()).await {
                Ok(Ok(n)) => tracing::info!(databases = n, "enrichment databases reloaded"),
                Ok(Err(e)) => tracing::error!("enrichment reload failed: {e}"),
                Err(e) => tracing::error!("enrichment reload panicked: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
