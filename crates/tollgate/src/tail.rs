//! `tollgate tail`: follow a proxy access log and send its lines to a running server.
//!
//! Why over HTTP: a real deployment runs `serve`, which owns the data directory; `tail` runs
//! beside each proxy and sends events to `POST /v1/events` like any other client, so it needs
//! no lock and no shared disk. The server attributes each event to a customer by its client
//! address.
//!
//! Exactly once: every line's id is deterministic (file key, offset, content), so sending a
//! line twice is a `duplicate` and changes nothing. The position (file key, byte offset, line
//! number) is written to `<data-dir>/tail/<hash of the path>.json` only after the server
//! answered, so a crash re-sends at most the last batch, which the server recognises.
//!
//! Rotation:
//! - **rename** (logrotate's default, then the proxy reopens): the path points to a new file
//!   (another inode). The old file is drained to its end, and kept open and drained while the
//!   proxy may still write to it, then the new file is read from its start.
//! - **copytruncate**: the file shrinks below the position. The lines between the position
//!   and the truncation were copied to `FILE.1`: if its key (first line) is ours, it is read
//!   from the position to its end; then the truncated file is read from its start.
//! - **restart**: when the stored key is not the key of the file at the path any more, the
//!   file was rotated while `tail` was stopped: `FILE.1` is read from the stored position if
//!   its key matches, then the new file from its start.
//!
//! Lines that do not parse are counted and reported on stderr with their line number.
#![allow(
    clippy::float_arithmetic,
    reason = "backoff seconds for people, never near usage"
)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tollgate_core::accesslog::{LogFormat, file_key};

use crate::accesslog::{convert, read_lines};

/// Bytes of whole lines per request.
const BATCH_BYTES: usize = 1024 * 1024;
/// Polls without growth after which a rotated-away file is closed.
const ROTATED_IDLE_POLLS: u32 = 20;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TailFormat {
    /// nginx `combined` or the extended `tollgate` log_format.
    Nginx,
    /// Squid's native access.log.
    Squid,
}

impl TailFormat {
    fn log_format(self) -> LogFormat {
        match self {
            TailFormat::Nginx => LogFormat::Nginx,
            TailFormat::Squid => LogFormat::Squid,
        }
    }
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Log format.
    #[arg(long, value_enum)]
    pub format: TailFormat,
    /// Base URL of the server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub server: String,
    /// API key with the `ingest` scope.
    #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
    pub key: String,
    /// Where positions are kept (`tail/` inside it); needs no lock, works beside `serve`.
    #[arg(long, default_value = "./tollgate-data", env = "TOLLGATE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// How often to look for new lines.
    #[arg(long, default_value = "250ms")]
    pub poll: String,
    /// Send what is there and exit (no following).
    #[arg(long)]
    pub once: bool,
    /// The log file.
    pub file: PathBuf,
}

/// What is kept across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Position {
    path: String,
    file_key: u64,
    offset: u64,
    line: usize,
}

/// One open file being read.
struct Follow {
    file: File,
    inode: u64,
    key: Option<u64>,
    offset: u64,
    line: usize,
}

impl Follow {
    fn open(path: &Path) -> std::io::Result<Follow> {
        let file = File::open(path)?;
        let inode = file.metadata()?.ino();
        Ok(Follow {
            file,
            inode,
            key: None,
            offset: 0,
            line: 0,
        })
    }

    /// The key from the open handle (not the path, which may point elsewhere by now).
    fn ensure_key(&mut self) -> std::io::Result<Option<u64>> {
        if self.key.is_none() {
            self.key = self.read_key()?;
        }
        Ok(self.key)
    }

    fn read_key(&mut self) -> std::io::Result<Option<u64>> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut first = Vec::new();
        BufReader::new(self.file.by_ref())
            .take(tollgate_core::limits::ACCESS_LOG_LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut first)?;
        Ok(first.ends_with(b"\n").then(|| file_key(&first)))
    }

    /// Whether the file was truncated and rewritten since its key was read (a copytruncate
    /// noticed only after the file grew past the old position again).
    fn rewritten(&mut self) -> std::io::Result<bool> {
        match self.key {
            None => Ok(false),
            Some(key) => Ok(self.read_key()? != Some(key)),
        }
    }
}

struct Sender {
    client: reqwest::blocking::Client,
    url: String,
    key: String,
    format: LogFormat,
    name: String,
    bad_lines: usize,
}

#[derive(Deserialize)]
struct IngestAnswer {
    accepted: usize,
    duplicates: usize,
    conflicts: usize,
    rejected: usize,
    errors: Vec<IngestAnswerError>,
}

#[derive(Deserialize)]
struct IngestAnswerError {
    index: usize,
    code: String,
    message: String,
}

impl Sender {
    /// Sends every whole line of `f` after its position; returns the bytes consumed.
    fn pump(&mut self, f: &mut Follow, mut save: impl FnMut(&Follow)) -> anyhow::Result<u64> {
        let Some(key) = f.ensure_key()? else {
            return Ok(0);
        };
        let mut consumed = 0u64;
        loop {
            let bytes = read_lines(&mut f.file, f.offset, BATCH_BYTES)?;
            if bytes.is_empty() {
                return Ok(consumed);
            }
            let chunk = convert(self.format, key, f.offset, f.line, &bytes);
            for (i, why) in &chunk.bad {
                self.bad_lines += 1;
                eprintln!("{} line {}: {why}", self.name, i + 1);
            }
            if !chunk.spans.is_empty() {
                self.send(chunk.body, f.line)?;
            }
            f.offset += bytes.len() as u64;
            f.line += chunk.lines;
            consumed += bytes.len() as u64;
            save(f);
        }
    }

    /// Posts one NDJSON body until the server answers it (503 and connection errors retry).
    fn send(&self, body: String, first_line: usize) -> anyhow::Result<()> {
        let mut backoff = 0.1f64;
        loop {
            let sent = self
                .client
                .post(&self.url)
                .bearer_auth(&self.key)
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send();
            match sent {
                Ok(r) if r.status().is_success() => {
                    let a: IngestAnswer = r.json().context("reading the server's answer")?;
                    for e in a.errors.iter().filter(|e| e.code != "duplicate") {
                        eprintln!(
                            "{} line {}: {}: {}",
                            self.name,
                            first_line + e.index + 1,
                            e.code,
                            e.message
                        );
                    }
                    println!(
                        "sent {} events: accepted {}, duplicates {}, conflicts {}, rejected {}",
                        a.accepted + a.duplicates + a.conflicts + a.rejected,
                        a.accepted,
                        a.duplicates,
                        a.conflicts,
                        a.rejected
                    );
                    return Ok(());
                }
                Ok(r) if r.status().as_u16() == 503 => {}
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().unwrap_or_default();
                    bail!("the server answered {status}: {text}");
                }
                Err(e) => eprintln!("sending to {}: {e}; retrying", self.url),
            }
            std::thread::sleep(Duration::from_secs_f64(backoff));
            backoff = (backoff * 2.0).min(5.0);
        }
    }
}

fn rotated_sibling(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Reads `FILE.1` from `offset` when it is the file with `key` (the rest of a rotated file).
fn rescue(
    sender: &mut Sender,
    path: &Path,
    key: u64,
    offset: u64,
    line: usize,
) -> anyhow::Result<()> {
    let sibling = rotated_sibling(path);
    let Ok(mut old) = Follow::open(&sibling) else {
        return Ok(());
    };
    if old.ensure_key()? == Some(key) && old.file.metadata()?.len() >= offset {
        old.offset = offset;
        old.line = line;
        sender.pump(&mut old, |_| {})?;
    }
    Ok(())
}

fn position_path(data_dir: &Path, file: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    let hash = path_hash(abs.to_string_lossy().as_bytes());
    data_dir.join("tail").join(format!("{hash:016x}.json"))
}

/// FNV-1a: a stable name for the position file of a path (no new dependency for 8 bytes).
fn path_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn load_position(path: &Path) -> anyhow::Result<Option<Position>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("position file {} is damaged", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the position atomically (temp file, fsync, rename).
fn save_position(path: &Path, pos: &Position) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(serde_json::to_string(pos).unwrap_or_default().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

pub fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let poll = humantime::parse_duration(&args.poll)
        .with_context(|| format!("--poll `{}` is not a duration", args.poll))?;
    let pos_path = position_path(&args.data_dir, &args.file);
    if let Some(dir) = pos_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut sender = Sender {
        client: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        url: format!("{}/v1/events", args.server.trim_end_matches('/')),
        key: args.key.clone(),
        format: args.format.log_format(),
        name: args.file.display().to_string(),
        bad_lines: 0,
    };
    let path_text = args.file.display().to_string();
    let save = |f: &Follow| {
        if let Some(key) = f.key {
            let pos = Position {
                path: path_text.clone(),
                file_key: key,
                offset: f.offset,
                line: f.line,
            };
            if let Err(e) = save_position(&pos_path, &pos) {
                eprintln!("writing position {}: {e}", pos_path.display());
            }
        }
    };

    let mut cur =
        Follow::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    if let Some(pos) = load_position(&pos_path)? {
        let len = cur.file.metadata()?.len();
        if cur.ensure_key()? == Some(pos.file_key) && len >= pos.offset {
            cur.offset = pos.offset;
            cur.line = pos.line;
        } else {
            // Rotated while stopped: finish the old file first.
            rescue(&mut sender, &args.file, pos.file_key, pos.offset, pos.line)?;
        }
    }
    let mut rotated: Option<(Follow, u32)> = None;
    loop {
        if let Some((old, idle)) = rotated.as_mut() {
            if old.rewritten()? {
                // Rotated further and reused: nothing of it is ours any more.
                *idle = ROTATED_IDLE_POLLS;
            } else if sender.pump(old, |_| {})? == 0 {
                *idle += 1;
            } else {
                *idle = 0;
            }
            if *idle >= ROTATED_IDLE_POLLS {
                rotated = None;
            }
        }
        match std::fs::metadata(&args.file) {
            Ok(meta) if meta.ino() != cur.inode => {
                // Renamed away; a new file is at the path.
                sender.pump(&mut cur, &save)?;
                let new = Follow::open(&args.file)?;
                let old = std::mem::replace(&mut cur, new);
                rotated = Some((old, 0));
            }
            Ok(meta) if meta.len() < cur.offset || cur.rewritten()? => {
                // Truncated in place (copytruncate): the rest is in FILE.1.
                if let Some(key) = cur.key {
                    rescue(&mut sender, &args.file, key, cur.offset, cur.line)?;
                }
                cur.offset = 0;
                cur.line = 0;
                cur.key = None;
            }
            _ => {}
        }
        sender.pump(&mut cur, &save)?;
        if args.once {
            break;
        }
        std::thread::sleep(poll);
    }
    Ok(if sender.bad_lines > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
