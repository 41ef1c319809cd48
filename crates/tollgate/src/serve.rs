//! `tollgate serve`: the HTTP server on one data directory.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use tollgate_api::AppState;
use tollgate_core::time::Clock;
use tollgate_store::KeyStore;
use tollgate_store::keys::KEY_SECRET_BYTES_MIN;

use crate::cli::{StoreArgs, SystemClock};

/// Default listen address.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8080";

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
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = args.store.file_config()?;
    let listen = args
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| LISTEN_DEFAULT.to_owned());
    let admin_secret = std::env::var("TOLLGATE_ADMIN_KEY")
        .ok()
        .filter(|s| !s.is_empty());
    if let Some(secret) = &admin_secret
        && secret.len() < KEY_SECRET_BYTES_MIN
    {
        bail!("TOLLGATE_ADMIN_KEY must be at least {KEY_SECRET_BYTES_MIN} characters");
    }
    let engine = args.store.open_engine()?;
    let keys = KeyStore::open(&args.store.data_dir)?;
    if let Some(created) = keys.bootstrap_admin(admin_secret.as_deref(), SystemClock.now())? {
        if admin_secret.is_some() {
            eprintln!(
                "admin API key {} set from TOLLGATE_ADMIN_KEY",
                created.key.id
            );
        } else {
            println!("admin API key (shown only once): {}", created.secret);
        }
    }
    if args.demo {
        crate::demo::seed(&engine)?;
    }
    let state = Arc::new(AppState { engine, keys });
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
        println!("listening on http://{addr}");
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
