//! Project tasks: `cargo xtask ci` (the whole test suite, installing what it needs),
//! `cargo xtask openapi` (regenerates docs/openapi.json) and `cargo xtask bench` (ingest and
//! query figures beside PostgreSQL and SQLite, appended to docs/BENCHMARKS.md).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// numpy version the benchmark generator is pinned to (shared/bench/README.md).
const NUMPY_VERSION: &str = "2.4.6";
/// pyarrow version the export tests read Parquet files back with (an independent reader).
const PYARROW_VERSION: &str = "26.0.1";
/// The Python packages the tests use, pinned: the data generator's (numpy), the export
/// reader (pyarrow), the payment-provider fake (localstripe) and the official clients the
/// provider and drop-in ingest tests drive (stripe, orb-billing, openmeter).
const PY_PACKAGES: &[(&str, &str)] = &[
    ("numpy", NUMPY_VERSION),
    ("pyarrow", PYARROW_VERSION),
    ("localstripe", "1.15.10"),
    ("stripe", "16.1.0"),
    ("orb-billing", "4.90.0"),
    ("openmeter", "1.0.0b236"),
];

#[derive(Parser)]
#[command(name = "xtask", about = "Tollgate project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run everything CI runs: fmt, clippy, the whole test suite. Installs what it needs.
    Ci,
    /// Regenerate docs/openapi.json from the code.
    Openapi,
    /// Create the Python venv the tests use (target/venv, the pinned `PY_PACKAGES`: numpy for
    /// the data generator, pyarrow to read exports back, localstripe and the official Stripe,
    /// Orb and OpenMeter clients for the provider and drop-in ingest tests).
    Venv,
    /// Measure ingest and queries (Tollgate import, HTTP, PostgreSQL, SQLite), check every
    /// answer against expected.json, and append the table to docs/BENCHMARKS.md.
    ///
    /// Needs PostgreSQL on 127.0.0.1:5432 (user postgres) for the baseline part.
    Bench(bench::BenchArgs),
    /// Kill -9 the server again and again under load; print kills, batches, lost, double-counted.
    Soak {
        /// How many times to kill the server.
        #[arg(long, default_value_t = 1000)]
        kills: u32,
        /// Seed of every random choice (printed; replays a failure).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Internal: the SQLite baseline of `bench`, run by it in an optimized build of xtask.
    #[command(hide = true)]
    BenchSqlite(bench::sqlite::ChildArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.command {
        Task::Ci => ci(&root),
        Task::Openapi => openapi(&root),
        Task::Venv => venv(&root).map(|_| ()),
        Task::Bench(args) => bench::run(&root, args),
        Task::BenchSqlite(args) => bench::sqlite::child(&args),
        Task::Soak { kills, seed } => soak::soak(&root, kills, seed),
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the root")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes target/venv with [`PY_PACKAGES`] at their pinned versions, installing Debian's
/// python3-venv if `venv` is missing.
fn venv(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("target/venv");
    let python = dir.join("bin/python");
    let expected = PY_PACKAGES
        .iter()
        .map(|(name, version)| format!("('{name}', '{version}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let pinned_ok = |p: &Path| {
        succeeds(Command::new(p).args([
            "-c",
            &format!(
                "from importlib.metadata import version\n\
                 for name, want in [{expected}]:\n    assert version(name) == want, name"
            ),
        ]))
    };
    if python.exists() && pinned_ok(&python) {
        return Ok(python);
    }
    if !python.exists() {
        if !succeeds(Command::new("python3").args(["-m", "venv", "--help"])) {
            run(Command::new("apt-get").arg("update"))?;
            run(Command::new("apt-get").args(["install", "-y", "python3", "python3-venv"]))?;
        }
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    }
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--quiet"]);
    pip.args(
        PY_PACKAGES
            .iter()
            .map(|(name, version)| format!("{name}=={version}")),
    );
    run(&mut pip)?;
    if !pinned_ok(&python) {
        bail!(
            "the pinned Python packages ({expected}) did not install into {}",
            dir.display()
        );
    }
    Ok(python)
}

/// Installs Debian's chromium when it is missing: the portal's browser tests drive it headless.
fn chromium() -> anyhow::Result<()> {
    if succeeds(Command::new("chromium").arg("--version")) {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get").args(["install", "-y", "chromium"]))?;
    if !succeeds(Command::new("chromium").arg("--version")) {
        bail!("chromium did not install");
    }
    Ok(())
}

fn ci(root: &Path) -> anyhow::Result<()> {
    let python = venv(root)?;
    // Portal browser tests.
    chromium()?;
    let shared = root.join("../shared/bench/gen_events.py");
    if !shared.exists() {
        bail!(
            "{} is missing: the tests need shared/ beside the repository",
            shared.display()
        );
    }
    // Proxy access-log tests run the real nginx and Squid.
    install_proxies()?;
    run(Command::new("cargo").args(["fmt", "--all", "--check"]))?;
    run(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let nextest = succeeds(Command::new("cargo").args(["nextest", "--version"]));
    let mut test = Command::new("cargo");
    if nextest {
        test.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        eprintln!("cargo-nextest not found; using cargo test");
        test.args(["test", "--workspace", "--no-fail-fast"]);
    }
    test.env("TOLLGATE_PYTHON", &python);
    run(&mut test)?;
    println!("ci: all checks passed");
    Ok(())
}

/// Installs Debian's `nginx` and `squid` with apt-get when either is missing (the proxy-log
/// tests run them on 127.0.0.1 ports as the current user; they are never started as services).
fn install_proxies() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("nginx", "/usr/sbin/nginx"), ("squid", "/usr/sbin/squid")]
        .into_iter()
        .filter(|(_, path)| !Path::new(path).exists())
        .map(|(pkg, _)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} with apt-get", missing.join(" "));
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    // The packages' maintainer scripts may start system services; the tests need none of them.
    for service in &missing {
        let _ = Command::new("service").args([*service, "stop"]).status();
    }
    Ok(())
}

fn openapi(root: &Path) -> anyhow::Result<()> {
    let out = Command::new("cargo")
        .args(["run", "--quiet", "-p", "tollgate", "--", "openapi"])
        .output()
        .context("running tollgate openapi")?;
    if !out.status.success() {
        bail!(
            "tollgate openapi failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = root.join("docs/openapi.json");
    std::fs::write(&path, &out.stdout)?;
    println!("wrote {}", path.display());
    Ok(())
}
