//! `tollgate tail` against the real server: follows a log through rename rotation (with the old
//! file still written after the rename), copytruncate, and a restart across a rotation; counts
//! every line exactly once, identical lines at different positions included; reports lines that
//! do not parse with their line number.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `[dd/Mon/yyyy:HH:MM:SS +0000]` of an instant.
fn clf_time(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let secs = ms.rem_euclid(DAY_MS) / 1000;
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[usize::try_from(m - 1).unwrap()],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

struct Log {
    start_ms: i64,
    bytes_written: u64,
    lines_written: u64,
    last: String,
    last_bytes: u64,
}

impl Log {
    /// A new line, one second after the previous one.
    fn line(&mut self, bytes: u64) -> String {
        let time = clf_time(self.start_ms + 1000 * self.lines_written as i64);
        self.last = format!("127.0.0.1 - - [{time}] \"GET /x HTTP/1.1\" 200 {bytes} \"-\" \"t\"\n");
        self.last_bytes = bytes;
        self.bytes_written += bytes;
        self.lines_written += 1;
        self.last.clone()
    }

    /// The previous line again, identical (same second, client, request, size): both count.
    fn again(&mut self) -> String {
        self.bytes_written += self.last_bytes;
        self.lines_written += 1;
        self.last.clone()
    }
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn totals(server: &Server) -> (i128, i128) {
    let from = q(&rfc3339(floor_minute(now_ms()) - DAY_MS));
    let to = q(&rfc3339(floor_minute(now_ms()) + 10 * MINUTE_MS));
    let sum = |meter: &str| {
        let rows = server.usage_rows(meter, &format!("from={from}&to={to}"));
        by_subject(&rows).get("cus_local").copied().unwrap_or(0)
    };
    (sum("requests"), sum("bytes-out"))
}

fn wait_for(server: &Server, log: &Log, what: &str) {
    let want = (i128::from(log.lines_written), i128::from(log.bytes_written));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = totals(server);
        if got == want {
            // Nothing more arrives later (no line counted twice).
            std::thread::sleep(Duration::from_millis(400));
            assert_eq!(totals(server), want, "{what}: counted twice");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: got {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_tail(server: &Server, state: &Path, log: &Path, stderr: &Path) -> Proc {
    Proc(
        tollgate()
            .args([
                "tail",
                "--format",
                "nginx",
                "--poll",
                "50ms",
                "--server",
                server.base(),
            ])
            .args(["--key", ADMIN_KEY, "--data-dir"])
            .arg(state)
            .arg(log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn tail_follows_rotation_and_restarts_without_counting_twice() {
    let dir = TestDir::new("tail");
    let server = Server::start(&dir.data("data"), &[]);
    let created = server.request(
        "POST",
        "/v1/ip/allocations",
        Some(ADMIN_KEY),
        Some("application/json"),
        Some(reqwest::blocking::Body::from(
            json!({"customer": "cus_local", "cidr": "127.0.0.0/8",
                   "valid_from": rfc3339(floor_minute(now_ms()) - DAY_MS)})
            .to_string(),
        )),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        server
            .put_meter("requests", &json!({"aggregation": "count"}))
            .status,
        201
    );
    assert_eq!(
        server
            .put_meter(
                "bytes-out",
                &json!({"aggregation": "sum", "value_path": "$.data.bytes_out"})
            )
            .status,
        201
    );
    let path = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let state = dir.join("tail-state");
    let mut log = Log {
        start_ms: floor_minute(now_ms()) - 10 * MINUTE_MS,
        bytes_written: 0,
        lines_written: 0,
        last: String::new(),
        last_bytes: 0,
    };

    // Identical lines at different positions both count; a bad line is reported.
    let mut text = log.line(100);
    text.push_str(&log.again());
    text.push_str(&log.line(250));
    text.push_str("garbage that nginx never wrote\n");
    text.push_str(&log.line(7));
    append(&path, &text);
    let stderr1 = dir.join("tail1.err");
    let tail = start_tail(&server, &state, &path, &stderr1);
    wait_for(&server, &log, "first lines");
    let err = std::fs::read_to_string(&stderr1).unwrap();
    assert!(err.contains("line 4:"), "{err}");

    // Rename rotation: the proxy still writes to the old file before it reopens.
    std::fs::rename(&path, &rotated).unwrap();
    let late = log.line(11);
    append(&rotated, &late);
    let mut fresh = log.line(100);
    fresh.push_str(&log.again());
    fresh.push_str(&log.line(31));
    append(&path, &fresh);
    let later = log.line(13);
    append(&rotated, &later);
    wait_for(&server, &log, "after rename");

    // copytruncate (logrotate shifts .1 to .2 first): copy, truncate in place, new lines.
    let pending = log.line(17);
    append(&path, &pending);
    std::fs::rename(&rotated, dir.join("access.log.2")).unwrap();
    std::fs::copy(&path, &rotated).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut after = String::new();
    for b in [100, 100, 100, 100, 100, 19] {
        after.push_str(&log.line(b));
    }
    append(&path, &after);
    wait_for(&server, &log, "after copytruncate");

    // Stopped (killed) while the log is written and rotated; a restart finishes the old file.
    drop(tail);
    let mut while_down = String::new();
    for b in [23, 29] {
        while_down.push_str(&log.line(b));
    }
    append(&path, &while_down);
    std::fs::rename(&path, &rotated).unwrap();
    let mut newest = String::new();
    for b in [100, 37] {
        newest.push_str(&log.line(b));
    }
    append(&path, &newest);
    let stderr2 = dir.join("tail2.err");
    let tail = start_tail(&server, &state, &path, &stderr2);
    wait_for(&server, &log, "after restart");
    drop(tail);

    // Reading both files again from scratch (no position) adds nothing.
    for f in [&rotated, &path] {
        let out = tollgate()
            .args([
                "tail",
                "--once",
                "--format",
                "nginx",
                "--server",
                server.base(),
            ])
            .args(["--key", ADMIN_KEY, "--data-dir"])
            .arg(dir.join("fresh-state"))
            .arg(f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("accepted 0"),
            "{}",
            describe(&out)
        );
    }
    wait_for(&server, &log, "after re-reading");
}
