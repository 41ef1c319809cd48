//! Storage faults: a read-only data dir, a full disk, a corrupt database file and a log that
//! cannot be written give a clear
//! error at start or a 503 with a typed code — never a silent loss or a panic loop.
//!
//! The disk-full test mounts a small tmpfs (the suite runs as root, as CI does); if the mount
//! is refused the test fails and says so, it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

/// A real store with one meter, made by the CLI.
fn create_store(data: &std::path::Path) {
    let out = run(&[
        "meters",
        "put",
        "--data-dir",
        data.to_str().unwrap(),
        "bytes",
        "--json",
        r#"{"aggregation":"sum","value_path":"$.data.bytes"}"#,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
}

/// Runs `tollgate serve` as the unprivileged user `nobody`, so permission bits apply.
#[test]
fn a_read_only_data_dir_fails_at_start_with_a_clear_error() {
    let dir = TestDir::new("readonly");
    let data = dir.data("data");
    // A real store first, then taken away from the user that will run the server.
    create_store(&data);
    // nobody may reach the directory (and the binary) but not write in it.
    let mut p = data.clone();
    while let Some(parent) = p.parent() {
        let _ = Command::new("chmod").arg("o+x").arg(parent).status();
        p = parent.to_owned();
    }
    let chmod = Command::new("chmod")
        .args(["-R", "a+rX,a-w"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(chmod.success());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .output()
        .expect("setpriv (util-linux) runs the server as nobody");
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&data)
        .status();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not writable"),
        "the error names the cause: {stderr}"
    );
    assert!(
        stderr.contains(data.to_str().unwrap()),
        "the error names the dir: {stderr}"
    );
}

#[test]
fn a_corrupt_database_file_fails_at_start_with_a_clear_error() {
    let dir = TestDir::new("corruptdb");
    let data = dir.data("data");
    create_store(&data);
    let db = data.join("tollgate.db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().take(100) {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["meters", "list"],
    ] {
        let out = tollgate()
            .args(&args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not a database") || stderr.contains("corrupt"),
            "the error says the file is damaged: {stderr}"
        );
    }
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_typed_503_and_loses_nothing() {
    let dir = TestDir::new("diskfull");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tollgate-test"])
        .arg(&mnt)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "this test needs root to mount a small tmpfs at {}",
        mnt.display()
    );
    let _mount = Mount(mnt.clone());
    let data = mnt.join("data");
    let mut server = Server::start(&data, &[]);
    put_events_meter(&server);
    let now = now_ms();
    let mut acked = 0u64;
    let mut full = None;
    // A new database takes about 1.7 MiB (16 KiB pages); the batches fill the rest.
    for b in 0..2_000 {
        let events: Vec<_> = (0..50)
            .map(|i| {
                let noise: String = (0..40)
                    .map(|k| format!("{:x}", (b * 7919 + i * 104_729 + k * 31) % 16))
                    .collect();
                event(
                    &format!("b{b}-{i}"),
                    "c1",
                    now - 60_000,
                    json!({"noise": noise, "n": b * 1000 + i}),
                )
            })
            .collect();
        let reply = server.post_events(ADMIN_KEY, "application/x-ndjson", ndjson(&events));
        if reply.status == 200 {
            assert_eq!(reply.body["accepted"], 50);
            acked += 50;
        } else {
            full = Some((b, events, reply));
            break;
        }
    }
    let (b, events, reply) = full.expect("4 MiB must fill up");
    assert_error(&reply, 503, "disk_full");
    assert!(acked > 0, "some batches fit before the disk filled");
    // Everything acknowledged is there, nothing else.
    let counted: i128 = server.usage_rows("events", "").iter().map(int_value).sum();
    assert_eq!(counted, i128::from(acked));
    // Health stays honest and the server keeps answering.
    assert_eq!(server.get("/healthz", ADMIN_KEY).status, 200);
    // More room: the refused batch is retried and counts once.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(grown.success());
    let retry = server.post_events(ADMIN_KEY, "application/x-ndjson", ndjson(&events));
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.body["accepted"], 50, "batch {b} was not half-stored");
    server.stop();
    let server = Server::start(&data, &[]);
    let counted: i128 = server.usage_rows("events", "").iter().map(int_value).sum();
    assert_eq!(
        counted,
        i128::from(acked) + 50,
        "after a restart, exactly what was acknowledged"
    );
}

#[test]
fn a_log_that_cannot_be_written_does_not_stop_the_server() {
    // The log on a full disk: every write to stderr fails with ENOSPC. Logging at debug so
    // that requests and the writer log as much as they ever do.
    let dir = TestDir::new("logfull");
    let data = dir.data("data");
    let mut cmd = tollgate();
    cmd.env("RUST_LOG", "debug").stderr(Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full opens"),
    ));
    let mut server = Server::start_from(cmd, &data, &[], dir.join("none.log"));
    put_events_meter(&server);
    let now = now_ms();
    let events: Vec<_> = (0..200)
        .map(|i| event(&format!("e{i}"), "c1", now - 60_000, json!({"n": i})))
        .collect();
    let reply = server.post_events(ADMIN_KEY, "application/x-ndjson", ndjson(&events));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["accepted"], 200);
    // Errors are still typed answers, not dropped connections.
    let bad = server.post_events(ADMIN_KEY, "application/x-ndjson", "{not json\n");
    assert_eq!(bad.status, 200, "{:?}", bad.body);
    assert_eq!(bad.body["rejected"], 1);
    assert_error(
        &server.get("/v1/meters", "tg_wrong_key_0000000000"),
        401,
        "invalid_api_key",
    );
    let counted: i128 = server.usage_rows("events", "").iter().map(int_value).sum();
    assert_eq!(counted, 200);
    assert!(server.is_running(), "the server is still up");
}

/// Defines the `events` meter (a count) on a running server.
fn put_events_meter(server: &Server) {
    let reply = server.put_meter("events", &json!({"aggregation":"count"}));
    assert_eq!(reply.status, 201, "{:?}", reply.body);
}
