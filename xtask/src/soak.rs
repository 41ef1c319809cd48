//! `cargo xtask soak --kills 1000`: the crash test, longer. Starts the release binary, kills it
//! with SIGKILL at random moments, re-sends what was not acknowledged (and some of what was),
//! and prints the tally: kills, batches, lost, double-counted. Non-zero exit on any loss or
//! double count.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

#[path = "../../crates/tollgate/tests/support/crash_driver.rs"]
#[allow(dead_code)]
mod crash_driver;

/// Runs the soak.
pub fn soak(root: &Path, kills: u32, seed: Option<u64>) -> anyhow::Result<()> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "tollgate"])
        .status()
        .context("building the release binary")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
    });
    let data_dir = root.join(format!("target/soak-{}-{seed}", std::process::id()));
    println!(
        "soak: {kills} kills, seed {seed} (replay with --seed {seed}), data {}",
        data_dir.display()
    );
    let cfg = crash_driver::CrashConfig {
        binary: root.join("target/release/tollgate"),
        data_dir: data_dir.clone(),
        seed,
        kills,
        // About 20 batches per kill cycle keeps every cycle busy at the moment of the kill,
        // while the store stays small enough that each restart's replay is quick.
        batches: kills.saturating_mul(20).max(100),
        batch_events: 20,
        kill_after_ms_max: 200,
    };
    let started = std::time::Instant::now();
    let tally = crash_driver::run(&cfg).map_err(|e| anyhow::anyhow!("seed {seed}: {e}"))?;
    let _ = std::fs::remove_dir_all(&data_dir);
    println!(
        "soak: kills {}, batches {}, sends {}, acknowledged batches re-sent {}, events {}, lost {}, double-counted {} ({:.0} s)",
        tally.kills,
        cfg.batches,
        tally.sends,
        tally.acked_resent,
        tally.events,
        tally.lost,
        tally.double_counted,
        started.elapsed().as_secs_f64()
    );
    if tally.lost > 0 || tally.double_counted > 0 {
        bail!(
            "seed {seed}: {} events lost, {} double-counted",
            tally.lost,
            tally.double_counted
        );
    }
    Ok(())
}
