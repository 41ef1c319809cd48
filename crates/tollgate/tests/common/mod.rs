//! Shared helpers of the black-box tests: a fresh temporary directory per test, the real
//! `tollgate` binary started on `127.0.0.1:0` (killed when dropped), a small blocking HTTP
//! client, CloudEvent builders and UTC time formatting without extra crates.
//!
//! Every test owns its directory and its server, so tests run in parallel and repeatedly.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The admin key every test server is bootstrapped with.
pub const ADMIN_KEY: &str = "tg_test_admin_key_0123456789abcdef";

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Directories

/// A directory under the system temp dir, unique to this test, removed when dropped.
pub struct TestDir {
    root: PathBuf,
}

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!(
            "tollgate-it-{label}-{}-{nanos}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&root).unwrap();
        TestDir { root }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A path inside the directory (not created).
    pub fn join(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A data directory inside this directory (created by tollgate on first use).
    pub fn data(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

// ---------------------------------------------------------------------------------------------
// The binary

/// The `tollgate` binary with a clean environment (no inherited TOLLGATE_* settings).
pub fn tollgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env_remove("TOLLGATE_DATA_DIR")
        .env_remove("TOLLGATE_ADMIN_KEY")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs a CLI command to completion.
pub fn run(args: &[&str]) -> Output {
    tollgate().args(args).output().unwrap()
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running `tollgate serve`, killed (and reaped) when dropped.
pub struct Server {
    child: Option<Child>,
    base: String,
    log: PathBuf,
    client: reqwest::blocking::Client,
}

impl Server {
    /// Starts `tollgate serve --data-dir DATA --listen 127.0.0.1:0 EXTRA...` with [`ADMIN_KEY`]
    /// and waits until it prints its address. Its stderr goes to `DATA.log`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        static STARTS: AtomicU64 = AtomicU64::new(0);
        let log =
            data_dir.with_extension(format!("{}.log", STARTS.fetch_add(1, Ordering::Relaxed)));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = tollgate();
        cmd.stderr(Stdio::from(log_file));
        Server::start_from(cmd, data_dir, extra, log)
    }

    /// [`Server::start`] from a prepared `tollgate` command (its stderr and environment set
    /// by the caller); `log` is where [`Server::log_text`] reads.
    pub fn start_from(mut cmd: Command, data_dir: &Path, extra: &[&str], log: PathBuf) -> Server {
        let mut child = cmd
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads the address, then keeps draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if let Some(addr) = line.trim().strip_prefix("listening on ") {
                            let _ = tx.send(addr.to_owned());
                            break;
                        }
                    }
                }
            }
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = Server {
            child: Some(child),
            base: String::new(),
            log,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .unwrap(),
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                assert!(addr.starts_with("http://127.0.0.1:"), "address {addr}");
                server.base = addr;
            }
            Err(_) => {
                server.stop();
                panic!(
                    "tollgate serve did not print `listening on http://...`; its log:\n{}",
                    server.log_text()
                );
            }
        }
        server
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the process (SIGKILL: no graceful shutdown, like a crash) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request. `key` becomes `Authorization: Bearer <key>`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Option<reqwest::blocking::Body>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("request {path} failed: {e}\n{}", self.log_text()));
        Reply::read(resp)
    }

    /// A request with a raw Authorization header value.
    pub fn request_with_auth_header(&self, method: &str, path: &str, auth: &str) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("authorization", auth)
            .send()
            .unwrap();
        Reply::read(resp)
    }

    /// `POST /v1/events`.
    pub fn post_events(&self, key: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.request(
            "POST",
            "/v1/events",
            Some(key),
            Some(content_type),
            Some(reqwest::blocking::Body::from(body.into())),
        )
    }

    /// `POST /v1/events` of NDJSON with the admin key, expecting 200.
    pub fn ingest(&self, events: &[Value]) -> Value {
        let reply = self.post_events(ADMIN_KEY, "application/x-ndjson", ndjson(events));
        assert_eq!(reply.status, 200, "ingest: {}", reply.body);
        reply.body
    }

    /// GET with a key.
    pub fn get(&self, path: &str, key: &str) -> Reply {
        self.request("GET", path, Some(key), None, None)
    }

    /// GET with a key, keeping the body as the exact text sent and the content type (for
    /// byte-for-byte comparisons and HTML pages).
    pub fn get_raw(&self, path: &str, key: &str) -> RawReply {
        let mut resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .unwrap_or_else(|e| panic!("request {path} failed: {e}\n{}", self.log_text()));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut text = String::new();
        resp.read_to_string(&mut text).unwrap();
        RawReply {
            status,
            content_type,
            text,
        }
    }

    /// `PUT /v1/meters/{slug}` with the admin key.
    pub fn put_meter(&self, slug: &str, definition: &Value) -> Reply {
        self.request(
            "PUT",
            &format!("/v1/meters/{slug}"),
            Some(ADMIN_KEY),
            Some("application/json"),
            Some(reqwest::blocking::Body::from(definition.to_string())),
        )
    }

    /// `DELETE /v1/meters/{slug}` with the admin key.
    pub fn delete_meter(&self, slug: &str) -> Reply {
        self.request(
            "DELETE",
            &format!("/v1/meters/{slug}"),
            Some(ADMIN_KEY),
            None,
            None,
        )
    }

    /// `GET /v1/meters/{slug}/usage?QUERY` with the admin key.
    pub fn usage(&self, slug: &str, query: &str) -> Reply {
        self.get(&format!("/v1/meters/{slug}/usage?{query}"), ADMIN_KEY)
    }

    /// Usage rows of a successful query.
    pub fn usage_rows(&self, slug: &str, query: &str) -> Vec<Value> {
        let reply = self.usage(slug, query);
        assert_eq!(reply.status, 200, "usage {slug}?{query}: {}", reply.body);
        reply.body["data"].as_array().unwrap().clone()
    }

    /// Creates an API key over HTTP; returns (id, secret).
    pub fn create_key(&self, scopes: &[&str]) -> (String, String) {
        let reply = self.request(
            "POST",
            "/v1/api_keys",
            Some(ADMIN_KEY),
            Some("application/json"),
            Some(reqwest::blocking::Body::from(
                json!({"name": "test", "scopes": scopes}).to_string(),
            )),
        );
        assert_eq!(reply.status, 201, "create key: {}", reply.body);
        let id = reply.body["id"].as_str().unwrap().to_owned();
        let secret = reply.body["secret"].as_str().unwrap().to_owned();
        assert!(id.starts_with("key_"), "{}", reply.body);
        assert!(secret.starts_with("tg_"), "{}", reply.body);
        (id, secret)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A response: status and body (JSON when it parses, else a JSON string of the text).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    fn read(resp: reqwest::blocking::Response) -> Reply {
        let status = resp.status().as_u16();
        let mut text = String::new();
        let mut resp = resp;
        resp.read_to_string(&mut text).unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply { status, body }
    }
}

/// A response kept as text, with its content type.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

/// Asserts an error answer: the status, and a body of exactly
/// `{"error": {"code": CODE, "message": "...", ["details": {...}]}}`.
pub fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (status, Some(code)),
        "expected {status} {code}, got {} {}",
        reply.status,
        reply.body
    );
    let top = reply.body.as_object().unwrap();
    assert_eq!(top.len(), 1, "only `error` at the top: {}", reply.body);
    let error = top["error"].as_object().unwrap();
    let message = error["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "a message: {}", reply.body);
    for key in error.keys() {
        assert!(
            ["code", "message", "details"].contains(&key.as_str()),
            "unexpected field `{key}`: {}",
            reply.body
        );
    }
    if let Some(details) = error.get("details") {
        assert!(details.is_object(), "details is an object: {}", reply.body);
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A valid CloudEvent.
pub fn event(id: &str, subject: &str, time_ms: i64, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/test/it",
        "type": "proxy.request",
        "subject": subject,
        "time": rfc3339_ms(time_ms),
        "data": data,
    })
}

/// Events as NDJSON text (one per line, trailing newline).
pub fn ndjson(events: &[Value]) -> String {
    let mut out = String::new();
    for e in events {
        out.push_str(&e.to_string());
        out.push('\n');
    }
    out
}

/// The integer value of a usage row (`value` is an exact decimal string).
pub fn int_value(row: &Value) -> i128 {
    let text = row["value"].as_str().unwrap();
    text.parse()
        .unwrap_or_else(|_| panic!("value `{text}` is not an integer: {row}"))
}

/// (subject → value) of one-window usage rows; panics on a repeated subject.
pub fn by_subject(rows: &[Value]) -> std::collections::BTreeMap<String, i128> {
    let mut out = std::collections::BTreeMap::new();
    for row in rows {
        let subject = row["subject"].as_str().unwrap().to_owned();
        assert!(
            out.insert(subject, int_value(row)).is_none(),
            "one row per subject: {row}"
        );
    }
    out
}

/// Checks that an ingest answer has exactly these counts.
pub fn assert_counts(body: &Value, accepted: u64, duplicates: u64, conflicts: u64, rejected: u64) {
    let got = (
        body["accepted"].as_u64(),
        body["duplicates"].as_u64(),
        body["conflicts"].as_u64(),
        body["rejected"].as_u64(),
    );
    assert_eq!(
        got,
        (
            Some(accepted),
            Some(duplicates),
            Some(conflicts),
            Some(rejected)
        ),
        "counts (accepted, duplicates, conflicts, rejected) of {body}"
    );
}

/// The (index, code) pairs of an ingest answer's errors, in order.
pub fn error_codes(body: &Value) -> Vec<(u64, String)> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Time

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Floors to a whole minute.
pub fn floor_minute(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// (year, month, day) of a count of days since 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// ms of a UTC date and time.
pub fn utc_ms(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
    days_from_civil(y, mo, d) * DAY_MS + h * HOUR_MS + mi * MINUTE_MS + s * 1000
}

/// `YYYY-MM-DD` of the UTC day holding `ms`.
pub fn date_text(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_ms(ms: i64) -> String {
    let rem = ms.rem_euclid(DAY_MS);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        date_text(ms),
        rem / HOUR_MS,
        rem % HOUR_MS / MINUTE_MS,
        rem % MINUTE_MS / 1000,
        rem % 1000
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form the server answers whole seconds in.
pub fn rfc3339(ms: i64) -> String {
    assert_eq!(ms.rem_euclid(1000), 0, "whole seconds only");
    let rem = ms.rem_euclid(DAY_MS);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date_text(ms),
        rem / HOUR_MS,
        rem % HOUR_MS / MINUTE_MS,
        rem % MINUTE_MS / 1000
    )
}

/// A query string value: RFC 3339 with `:` and `+` safe in a URL.
pub fn q(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

#[test]
fn time_helpers_agree_with_known_dates() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2026, 3, 29), 20_541);
    assert_eq!(civil_from_days(20_541), (2026, 3, 29));
    assert_eq!(
        rfc3339_ms(utc_ms(2026, 10, 25, 1, 30, 5) + 7),
        "2026-10-25T01:30:05.007Z"
    );
    assert_eq!(
        rfc3339(utc_ms(2024, 2, 29, 23, 59, 0)),
        "2024-02-29T23:59:00Z"
    );
}
