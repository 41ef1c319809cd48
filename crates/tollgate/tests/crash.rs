//! Crash safety: kill -9 the server at random moments (seeded, printed), restart it, re-send
//! every unacknowledged batch and some acknowledged ones; at the end every event counts once.
//! `cargo xtask soak --kills 1000` runs the same driver longer. Replay a failure with
//! `TOLLGATE_CRASH_SEED=<seed> cargo nextest run -p tollgate --test crash`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

#[path = "support/crash_driver.rs"]
mod crash_driver;

use crash_driver::{CrashConfig, run};

#[test]
fn kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice() {
    let seed: u64 = std::env::var("TOLLGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test seed: {seed} (replay with TOLLGATE_CRASH_SEED={seed})");
    let dir = std::env::temp_dir().join(format!("tollgate-crash-{}-{seed}", std::process::id()));
    let cfg = CrashConfig {
        binary: env!("CARGO_BIN_EXE_tollgate").into(),
        data_dir: dir.clone(),
        seed,
        kills: 24,
        batches: 300,
        batch_events: 50,
        kill_after_ms_max: 150,
    };
    let tally = run(&cfg).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    println!("{tally:?}");
    assert_eq!(tally.kills, 24, "seed {seed}");
    assert_eq!(
        tally.lost, 0,
        "seed {seed}: acknowledged or re-sent events were lost"
    );
    assert_eq!(
        tally.double_counted, 0,
        "seed {seed}: events were counted twice"
    );
    assert!(
        tally.sends >= u64::from(cfg.batches),
        "seed {seed}: every batch was sent"
    );
    assert_eq!(tally.events, 300 * 50);
}
