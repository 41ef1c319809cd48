//! The `tollgate` binary: configuration, CLI, wiring and shutdown.
//!
//! Every command that opens a store takes `--data-dir` (default `./tollgate-data`). Exit codes:
//! 0 success; 1 failure (bad input, storage error); 3 `import` or `loadgen` finished but some
//! events were rejected or conflicted (all others are stored).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod accesslog;
mod checkload;
mod cli;
mod config;
mod demo;
mod export_cmd;
mod import;
mod inspectload;
mod invoice_cmd;
mod loadgen;
mod orb_worker;
mod outbox_worker;
mod provider_worker;
mod reconcile_cmd;
mod serve;
mod stripe_meter_worker;
mod tail;
mod webhook_worker;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

/// jemalloc: events are allocated by the thread that parses them and freed by another; glibc's
/// per-arena locks serialised the threads on exactly that pattern, and mimalloc's eager return
/// of pages to the OS made the kernel zero the same memory over and over.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written (its disk is full, stderr is closed) is dropped. By
    // default the subscriber reports such a failure with `eprintln!`, which panics when stderr
    // cannot be written either: the thread that logged died, a request got no answer at all
    // and `serve` did not even start. Serving matters more than its log.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .init();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(1)
        }
    }
}
