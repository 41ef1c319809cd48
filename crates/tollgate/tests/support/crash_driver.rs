//! Crash driver: streams batches at a real `tollgate serve`, kills it with SIGKILL at random
//! moments, restarts it, re-sends every batch that was not acknowledged (and some that were),
//! and at the end checks that every event is counted exactly once.
//!
//! Shared by the crash test (`tests/crash.rs`, 20+ kills) and `cargo xtask soak` (1000 kills):
//! both include this file with `#[path]`. Seeded: a failure prints its seed and replays with it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const ADMIN_KEY: &str = "tg_crash_admin_key_0123456789";
const SUBJECTS: u64 = 13;
const SENDERS: usize = 4;
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
pub struct CrashConfig {
    /// The `tollgate` binary.
    pub binary: PathBuf,
    /// A fresh data directory.
    pub data_dir: PathBuf,
    /// Seed of every random choice.
    pub seed: u64,
    /// How many times to kill the server.
    pub kills: u32,
    /// Batches in the whole stream.
    pub batches: u32,
    /// Events per batch.
    pub batch_events: u32,
    /// Longest time between a start and its kill (ms).
    pub kill_after_ms_max: u64,
}

/// What happened.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Kills done.
    pub kills: u32,
    /// Batch sends attempted (including re-sends).
    pub sends: u64,
    /// Batches acknowledged at least once.
    pub batches_acked: u32,
    /// Acknowledged batches sent again on purpose.
    pub acked_resent: u64,
    /// Events missing at the end (expected but not counted).
    pub lost: u64,
    /// Events counted more than once.
    pub double_counted: u64,
    /// Events in the stream.
    pub events: u64,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_133E_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The body of batch `b` and the (subject → bytes, events) it adds.
/// Per subject: (bytes, events).
type Sums = BTreeMap<String, (u64, u64)>;

fn batch_body(cfg: &CrashConfig, base_ms: i64, b: u32) -> (String, Sums) {
    let mut body = String::new();
    let mut adds = BTreeMap::new();
    for i in 0..cfg.batch_events {
        let k = mix(u64::from(b) << 32 | u64::from(i) ^ cfg.seed);
        let subject = format!("c{}", k % SUBJECTS);
        let bytes = 1 + (k >> 8) % 1_000_000;
        let time = rfc3339(base_ms - i64::try_from((k >> 40) % 3_600_000).unwrap_or(0));
        body.push_str(&format!(
            r#"{{"specversion":"1.0","id":"b{b}-e{i}","source":"/crash","type":"t","subject":"{subject}","time":"{time}","data":{{"bytes":{bytes}}}}}"#
        ));
        body.push('\n');
        let e = adds.entry(subject).or_insert((0, 0));
        e.0 += bytes;
        e.1 += 1;
    }
    (body, adds)
}

struct Server {
    child: Child,
    url: String,
}

fn start(cfg: &CrashConfig) -> Result<Server, String> {
    let mut child = Command::new(&cfg.binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&cfg.data_dir)
        .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", cfg.binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(url) => Ok(Server { child, url }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err("the server did not print its address in time".into())
        }
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|_| reqwest::blocking::Client::new())
}

/// Runs the whole scenario. `Err` means the harness itself failed (not a finding).
pub fn run(cfg: &CrashConfig) -> Result<Tally, String> {
    let base_ms = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_millis(),
    )
    .unwrap_or(0)
        - 60_000;
    let mut rng = Rng(cfg.seed);
    let http = client();
    let bodies: Vec<(String, Sums)> = (0..cfg.batches)
        .map(|b| batch_body(cfg, base_ms, b))
        .collect();
    let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (_, adds) in &bodies {
        for (s, (bytes, n)) in adds {
            let e = expected.entry(s.clone()).or_insert((0, 0));
            e.0 += bytes;
            e.1 += n;
        }
    }
    let texts: Arc<Vec<String>> = Arc::new(bodies.iter().map(|(t, _)| t.clone()).collect());
    let mut tally = Tally {
        events: u64::from(cfg.batches) * u64::from(cfg.batch_events),
        ..Tally::default()
    };
    let acked: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(vec![false; cfg.batches as usize]));
    let mut meters_defined = false;
    loop {
        let mut server = start(cfg)?;
        if !meters_defined {
            for (slug, spec) in [
                (
                    "bytes",
                    json!({"aggregation":"sum","value_path":"$.data.bytes"}),
                ),
                ("events", json!({"aggregation":"count"})),
            ] {
                let r = http
                    .put(format!("{}/v1/meters/{slug}", server.url))
                    .bearer_auth(ADMIN_KEY)
                    .json(&spec)
                    .send()
                    .map_err(|e| format!("defining meter: {e}"))?;
                if !r.status().is_success() {
                    return Err(format!("defining meter {slug}: {}", r.status()));
                }
            }
            meters_defined = true;
        }
        let pending: Vec<u32> = {
            let a = acked.lock().map_err(|_| "poisoned")?;
            (0..cfg.batches).filter(|b| !a[*b as usize]).collect()
        };
        let killing = tally.kills < cfg.kills;
        if pending.is_empty() && !killing {
            tally.batches_acked = cfg.batches;
            let result = verify(&http, &server.url, &expected, &mut tally);
            let _ = server.child.kill();
            let _ = server.child.wait();
            result?;
            return Ok(tally);
        }
        // Work list: every unacknowledged batch, plus some acknowledged ones again.
        let mut work: Vec<(u32, bool)> = pending.iter().map(|b| (*b, false)).collect();
        let resend = rng.below(u64::from(cfg.batches / 10 + 1));
        for _ in 0..resend {
            let b = u32::try_from(rng.below(u64::from(cfg.batches))).unwrap_or(0);
            if acked.lock().map_err(|_| "poisoned")?[b as usize] {
                work.push((b, true));
            }
        }
        let work = Arc::new(Mutex::new(work.into_iter().rev().collect::<Vec<_>>()));
        let dead = Arc::new(AtomicBool::new(false));
        let sends = Arc::new(Mutex::new((0u64, 0u64)));
        let mut senders = Vec::new();
        for _ in 0..SENDERS {
            let work = Arc::clone(&work);
            let dead = Arc::clone(&dead);
            let acked = Arc::clone(&acked);
            let sends = Arc::clone(&sends);
            let url = format!("{}/v1/events", server.url);
            let http = http.clone();
            let texts = Arc::clone(&texts);
            let batch_size = cfg.batch_events;
            senders.push(std::thread::spawn(move || {
                while !dead.load(Ordering::Relaxed) {
                    let Some((b, was_acked)) = work.lock().ok().and_then(|mut w| w.pop()) else {
                        break;
                    };
                    let body = texts[b as usize].clone();
                    if let Ok(mut s) = sends.lock() {
                        s.0 += 1;
                        s.1 += u64::from(was_acked);
                    }
                    let response = http
                        .post(&url)
                        .bearer_auth(ADMIN_KEY)
                        .header("content-type", "application/x-ndjson")
                        .body(body)
                        .send()
                        .and_then(|r| r.error_for_status())
                        .and_then(|r| r.json::<Value>());
                    match response {
                        Ok(v) => {
                            let accepted = v["accepted"].as_u64().unwrap_or(0);
                            let duplicates = v["duplicates"].as_u64().unwrap_or(0);
                            assert_eq!(
                                accepted + duplicates,
                                u64::from(batch_size),
                                "an acknowledged batch must count every event as accepted or duplicate: {v}"
                            );
                            if let Ok(mut a) = acked.lock() {
                                a[b as usize] = true;
                            }
                        }
                        Err(_) => {
                            // The server died mid-request: not acknowledged, re-sent later.
                            dead.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        if killing {
            let wait = Duration::from_millis(rng.below(cfg.kill_after_ms_max) + 1);
            let started = Instant::now();
            while started.elapsed() < wait && !dead.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = server.child.kill();
            tally.kills += 1;
        }
        for s in senders {
            s.join()
                .map_err(|_| "a sender panicked (see its message above)")?;
        }
        if !killing {
            let _ = server.child.kill();
        }
        let _ = server.child.wait();
        let (n, r) = *sends.lock().map_err(|_| "poisoned")?;
        tally.sends += n;
        tally.acked_resent += r;
    }
}

/// Compares every subject's counted bytes and events with the stream's.
fn verify(
    http: &reqwest::blocking::Client,
    url: &str,
    expected: &BTreeMap<String, (u64, u64)>,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut counted: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (slug, slot) in [("bytes", 0), ("events", 1)] {
        let v: Value = http
            .get(format!("{url}/v1/meters/{slug}/usage"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .map_err(|e| format!("usage query: {e}"))?;
        for row in v["data"].as_array().ok_or("usage without data")? {
            let subject = row["subject"]
                .as_str()
                .ok_or("row without subject")?
                .to_owned();
            let value: u64 = row["value"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or("value is not an integer")?;
            let e = counted.entry(subject).or_insert((0, 0));
            if slot == 0 { e.0 = value } else { e.1 = value }
        }
    }
    for (subject, (_, want)) in expected {
        let got = counted.get(subject).map_or(0, |c| c.1);
        tally.lost += want.saturating_sub(got);
        tally.double_counted += got.saturating_sub(*want);
    }
    for (subject, (_, got)) in &counted {
        if !expected.contains_key(subject) {
            tally.double_counted += got;
        }
    }
    if tally.lost == 0 && tally.double_counted == 0 && counted != *expected {
        return Err(format!(
            "event counts match but bytes differ: {counted:?} vs {expected:?}"
        ));
    }
    Ok(())
}
