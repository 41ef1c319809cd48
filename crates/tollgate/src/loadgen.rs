//! `tollgate loadgen`: sends an NDJSON file of events to a running server's `POST /v1/events`
//! and measures ingest throughput and acknowledgement latency, as a client would see them.
//!
//! One reader thread streams the file in batches of whole lines through a bounded channel (the
//! file is never held in memory); `--concurrency` async workers take batches and POST them over
//! keep-alive connections. A `503` (`writer_busy` and friends) is retried with a short backoff;
//! re-sending is safe because ingest is exactly-once. The latency of a batch runs from its first
//! attempt to the answer, so backoff shows up in the percentiles. Everything is bounded: batch
//! size and bytes, workers, retries per batch, and the whole run (`--max-seconds`).
//!
//! Exit codes: 0 every event answered; 3 every event answered but some were rejected or
//! conflicted; 1 failure (an HTTP error other than 503, retries exhausted, `--max-seconds`).
#![allow(
    clippy::float_arithmetic,
    reason = "rates and latency percentiles for people, never near usage"
)]

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use clap::Args;
use tollgate_api::types::IngestResponse;
use tollgate_core::limits::{BATCH_EVENTS_MAX, BODY_BYTES_MAX};

/// Most concurrent workers (connections).
pub const CONCURRENCY_MAX: usize = 256;
/// Largest body one batch may grow to; a batch is sent early when the next line would pass it.
const BATCH_BYTES_MAX: usize = BODY_BYTES_MAX / 4;
/// Attempts after the first one that a single batch may make on `503`.
const RETRIES_PER_BATCH_MAX: u32 = 100;
/// First backoff after a `503`; it doubles per retry up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
/// Longest backoff between two attempts of one batch.
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// Longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest `--max-seconds`: one day.
const MAX_SECONDS_MAX: u64 = 86_400;
/// Per-event errors (other than duplicates) listed in the summary; the rest are counted.
const ERRORS_SHOWN_MAX: usize = 10;

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Base URL of a running server, e.g. http://127.0.0.1:8080 (events go to /v1/events).
    #[arg(long)]
    pub url: String,
    /// API key with the `ingest` scope.
    #[arg(long)]
    pub key: String,
    /// NDJSON file of CloudEvents, one per line.
    #[arg(long)]
    pub file: PathBuf,
    /// Concurrent requests (each on its own keep-alive connection).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Lines per request.
    #[arg(long, default_value_t = 1_000)]
    pub batch_events: usize,
    /// Give up (exit 1) when the run takes longer than this.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One request's worth of lines.
struct Batch {
    /// 0-based line number of the first line in the file.
    first_line: usize,
    /// Non-blank lines (events) in the body.
    events: usize,
    body: Bytes,
}

/// Totals shared by the workers, updated once per answered batch.
#[derive(Default)]
struct Tally {
    events: usize,
    batches: usize,
    accepted: usize,
    duplicates: usize,
    conflicts: usize,
    rejected: usize,
    retries: u64,
    latencies: Vec<Duration>,
    /// First per-event errors other than `duplicate`: (line number, code, message).
    errors: Vec<(usize, String, String)>,
    errors_total: usize,
}

type Shared = Arc<Mutex<Tally>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn run(args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    if !(1..=CONCURRENCY_MAX).contains(&args.concurrency) {
        bail!("--concurrency must be 1..={CONCURRENCY_MAX}");
    }
    if !(1..=BATCH_EVENTS_MAX).contains(&args.batch_events) {
        bail!("--batch-events must be 1..={BATCH_EVENTS_MAX}");
    }
    if !(1..=MAX_SECONDS_MAX).contains(&args.max_seconds) {
        bail!("--max-seconds must be 1..={MAX_SECONDS_MAX}");
    }
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let endpoint = format!("{}/v1/events", args.url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tollgate-loadgen")
        .build()
        .context("starting the async runtime")?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(2 * args.concurrency);
    let stop = Arc::new(AtomicBool::new(false));
    let batch_events = args.batch_events;
    let reader_stop = Arc::clone(&stop);
    let started = Instant::now();
    let reader = std::thread::Builder::new()
        .name("loadgen-reader".into())
        .spawn(move || read_batches(file, batch_events, &tx, &reader_stop))
        .context("starting the reader thread")?;

    let shared: Shared = Arc::default();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let deadline = Duration::from_secs(args.max_seconds);
    let outcome: anyhow::Result<bool> = runtime.block_on(async {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency {
            let worker = Worker {
                client: client.clone(),
                endpoint: endpoint.clone(),
                auth: format!("Bearer {}", args.key),
                shared: Arc::clone(&shared),
                stop: Arc::clone(&stop),
            };
            let rx = Arc::clone(&rx);
            workers.spawn(async move { worker.run(&rx).await });
        }
        drop(rx);
        let all = async {
            while let Some(joined) = workers.join_next().await {
                joined.context("a worker panicked")??;
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(deadline, all).await {
            Ok(result) => result.map(|()| true),
            Err(_) => Ok(false),
        }
    });
    // Dropping the runtime drops any aborted worker and with it the channel's receiver, so a
    // reader blocked on a full channel wakes up and ends.
    stop.store(true, Ordering::Relaxed);
    drop(runtime);
    let elapsed = started.elapsed();
    let read = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    let complete = outcome?;
    read?;
    let tally = std::mem::take(&mut *lock(&shared));
    let summary = Summary::new(&args, &tally, elapsed, complete);
    if args.json {
        println!("{}", serde_json::to_string(&summary.json(&tally))?);
    } else {
        summary.print(&tally);
    }
    if !complete {
        bail!(
            "stopped after --max-seconds {}: {} of the file's events were answered",
            args.max_seconds,
            tally.events
        );
    }
    Ok(if tally.rejected + tally.conflicts > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Bytes read from the file at a time. Batches are slices of these blocks, not copies; under
/// jemalloc's `oversize_threshold` (8 MiB), so a freed block's pages serve the next one.
const READ_BLOCK_BYTES: usize = 4 << 20;

/// Streams the file as batches of at most `batch_events` lines (and [`BATCH_BYTES_MAX`]).
///
/// The file is read in blocks of [`READ_BLOCK_BYTES`] and each batch is a slice of its block
/// (lines found with `memchr`); only the unfinished batch at a block's end is copied, to the
/// start of the next block. Reading line by line into a batch buffer copied every byte twice
/// in user space (a quarter of the load generator's samples); the kernel's copy into a fresh
/// block costs more than into one reused buffer, but less than those two copies.
fn read_batches(
    file: File,
    batch_events: usize,
    tx: &tokio::sync::mpsc::Sender<Batch>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    read_batches_by(file, batch_events, READ_BLOCK_BYTES, tx, stop)
}

/// [`read_batches`] reading `block_bytes` at a time.
fn read_batches_by(
    mut file: File,
    batch_events: usize,
    block_bytes: usize,
    tx: &tokio::sync::mpsc::Sender<Batch>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    // Sends `lines` as a batch (the file's last line gets the newline it lacks); false when
    // the run is stopping.
    let send = |lines: Bytes, events: usize, first_line: usize| -> bool {
        let body = if lines.last().is_none_or(|b| *b == b'\n') {
            lines
        } else {
            let mut with_newline = lines.to_vec();
            with_newline.push(b'\n');
            Bytes::from(with_newline)
        };
        let batch = Batch {
            first_line,
            events,
            body,
        };
        !stop.load(Ordering::Relaxed) && tx.blocking_send(batch).is_ok()
    };
    let too_long =
        |line: usize| anyhow::anyhow!("line {line} is longer than {BATCH_BYTES_MAX} bytes");
    let block_bytes = block_bytes.max(1);
    // The unfinished batch (and line) at the end of the last block.
    let mut carry: Vec<u8> = Vec::new();
    let mut first_line = 0usize;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut block = Vec::with_capacity(carry.len() + block_bytes);
        block.append(&mut carry);
        let read = (&mut file)
            .take(u64::try_from(block_bytes).unwrap_or(u64::MAX))
            .read_to_end(&mut block)
            .context("reading the file")?;
        let eof = read == 0;
        let block = Bytes::from(block);
        let (mut start, mut at, mut events, mut lines) = (0usize, 0usize, 0usize, 0usize);
        while at < block.len() {
            let end = match memchr::memchr(b'\n', &block[at..]) {
                Some(i) => at + i + 1,
                None if eof => block.len(),
                None => break,
            };
            // With the newline a last line without one is sent with.
            let line_bytes = end - at + usize::from(block[end - 1] != b'\n');
            if line_bytes > BATCH_BYTES_MAX {
                return Err(too_long(first_line + lines + 1));
            }
            if at - start + line_bytes > BATCH_BYTES_MAX && lines > 0 {
                if !send(block.slice(start..at), events, first_line) {
                    return Ok(());
                }
                first_line += lines;
                (start, events, lines) = (at, 0, 0);
            }
            lines += 1;
            if !block[at..end].trim_ascii().is_empty() {
                events += 1;
            }
            at = end;
            if events >= batch_events {
                if !send(block.slice(start..at), events, first_line) {
                    return Ok(());
                }
                first_line += lines;
                (start, events, lines) = (at, 0, 0);
            }
        }
        if eof {
            if events > 0 {
                send(block.slice(start..), events, first_line);
            }
            return Ok(());
        }
        if block.len() - at > BATCH_BYTES_MAX {
            return Err(too_long(first_line + lines + 1));
        }
        // Its lines are counted again with the next block.
        carry = block[start..].to_vec();
    }
}

struct Worker {
    client: reqwest::Client,
    endpoint: String,
    auth: String,
    shared: Shared,
    stop: Arc<AtomicBool>,
}

impl Worker {
    async fn run(
        self,
        rx: &tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Batch>>,
    ) -> anyhow::Result<()> {
        loop {
            let next = rx.lock().await.recv().await;
            let Some(batch) = next else {
                return Ok(());
            };
            if let Err(e) = self.send(&batch).await {
                // Tell the reader to stop; the other workers finish their current batch.
                self.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }

    async fn send(&self, batch: &Batch) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut retries = 0u32;
        let mut backoff = BACKOFF_FIRST;
        let answer = loop {
            let response = self
                .client
                .post(&self.endpoint)
                .header(reqwest::header::AUTHORIZATION, &self.auth)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(batch.body.clone())
                .send()
                .await
                .with_context(|| format!("POST {}", self.endpoint))?;
            let status = response.status();
            if status == reqwest::StatusCode::OK {
                break response
                    .json::<IngestResponse>()
                    .await
                    .context("reading the ingest answer")?;
            }
            let text = response.text().await.unwrap_or_default();
            if status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
                bail!(
                    "POST {} (lines {}..): {status}: {text}",
                    self.endpoint,
                    batch.first_line + 1
                );
            }
            if retries >= RETRIES_PER_BATCH_MAX {
                bail!(
                    "POST {} (lines {}..): still 503 after {retries} retries: {text}",
                    self.endpoint,
                    batch.first_line + 1
                );
            }
            retries += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        };
        let latency = started.elapsed();
        let mut tally = lock(&self.shared);
        tally.events += batch.events;
        tally.batches += 1;
        tally.accepted += answer.accepted;
        tally.duplicates += answer.duplicates;
        tally.conflicts += answer.conflicts;
        tally.rejected += answer.rejected;
        tally.retries += u64::from(retries);
        tally.latencies.push(latency);
        for e in answer.errors {
            if e.code == "duplicate" {
                continue;
            }
            tally.errors_total += 1;
            if tally.errors.len() < ERRORS_SHOWN_MAX {
                tally
                    .errors
                    .push((batch.first_line + e.index + 1, e.code, e.message));
            }
        }
        Ok(())
    }
}

/// The figures of a run.
struct Summary {
    file: String,
    url: String,
    concurrency: usize,
    batch_events: usize,
    seconds: f64,
    events_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    complete: bool,
}

impl Summary {
    fn new(args: &LoadgenArgs, tally: &Tally, elapsed: Duration, complete: bool) -> Summary {
        let mut sorted = tally.latencies.clone();
        sorted.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        let seconds = elapsed.as_secs_f64();
        Summary {
            file: args.file.display().to_string(),
            url: args.url.clone(),
            concurrency: args.concurrency,
            batch_events: args.batch_events,
            seconds,
            events_per_second: tally.events as f64 / seconds.max(1e-9),
            p50_ms: ms(percentile(&sorted, 0.50)),
            p99_ms: ms(percentile(&sorted, 0.99)),
            p999_ms: ms(percentile(&sorted, 0.999)),
            max_ms: ms(sorted.last().copied().unwrap_or_default()),
            complete,
        }
    }

    fn print(&self, tally: &Tally) {
        println!(
            "loadgen {} -> {}: {} events in {:.2} s ({:.0} events/s){}",
            self.file,
            self.url,
            tally.events,
            self.seconds,
            self.events_per_second,
            if self.complete {
                ""
            } else {
                " (stopped by --max-seconds)"
            }
        );
        println!(
            "  {} batches of up to {} events, concurrency {}, retries {}",
            tally.batches, self.batch_events, self.concurrency, tally.retries
        );
        println!(
            "  latency per batch: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        );
        println!(
            "  accepted {}, duplicates {}, conflicts {}, rejected {}",
            tally.accepted, tally.duplicates, tally.conflicts, tally.rejected
        );
        for (line, code, message) in &tally.errors {
            println!("  line {line}: {code}: {message}");
        }
        if tally.errors_total > tally.errors.len() {
            println!("  ... and {} more", tally.errors_total - tally.errors.len());
        }
    }

    fn json(&self, tally: &Tally) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "url": self.url,
            "complete": self.complete,
            "events": tally.events,
            "batches": tally.batches,
            "batch_events": self.batch_events,
            "concurrency": self.concurrency,
            "seconds": self.seconds,
            "events_per_second": self.events_per_second,
            "latency_ms": {
                "p50": self.p50_ms,
                "p99": self.p99_ms,
                "p999": self.p999_ms,
                "max": self.max_ms,
            },
            "accepted": tally.accepted,
            "duplicates": tally.duplicates,
            "conflicts": tally.conflicts,
            "rejected": tally.rejected,
            "retries": tally.retries,
            "errors": tally.errors.iter().map(|(line, code, message)| {
                serde_json::json!({"line": line, "code": code, "message": message})
            }).collect::<Vec<_>>(),
            "errors_total": tally.errors_total,
        })
    }
}

/// Nearest-rank percentile of sorted samples (zero when there are none).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a rank between 1 and len; `as` saturates"
)]
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0);
    let index = (rank as usize).min(sorted.len()) - 1;
    sorted[index]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn batches_of(text: &str, batch_events: usize) -> Vec<(usize, usize, String)> {
        batches_by(text, batch_events, READ_BLOCK_BYTES)
    }

    fn batches_by(text: &str, batch_events: usize, block: usize) -> Vec<(usize, usize, String)> {
        let path = std::env::temp_dir().join(format!(
            "tollgate-loadgen-{}-{batch_events}-{block}-{}.ndjson",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        read_batches_by(
            File::open(&path).unwrap(),
            batch_events,
            block,
            &tx,
            &AtomicBool::new(false),
        )
        .unwrap();
        drop(tx);
        std::fs::remove_file(&path).unwrap();
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push((
                b.first_line,
                b.events,
                String::from_utf8(b.body.to_vec()).unwrap(),
            ));
        }
        out
    }

    /// The batches by their definition: whole lines, each ending in a newline, `batch_events`
    /// non-blank ones per batch, the rest in a last batch if it has an event.
    fn batches_by_definition(text: &str, batch_events: usize) -> Vec<(usize, usize, String)> {
        let mut out = Vec::new();
        let (mut body, mut events, mut first, mut lines) = (String::new(), 0, 0, 0);
        for line in text.split_inclusive('\n') {
            body.push_str(line);
            if !line.ends_with('\n') {
                body.push('\n');
            }
            lines += 1;
            if !line.trim().is_empty() {
                events += 1;
            }
            if events == batch_events {
                out.push((first, events, std::mem::take(&mut body)));
                first += lines;
                (events, lines) = (0, 0);
            }
        }
        if events > 0 {
            out.push((first, events, body));
        }
        out
    }

    #[test]
    fn batches_are_the_same_whatever_the_read_block() {
        let texts = [
            "a\nbb\n\nccc\ndddd\neeeee",
            "{\"id\":1}\n{\"id\":2}\n  \n{\"id\":3}\n\n\n",
            "\n\n\nonly\n",
            "x",
            "",
        ];
        for text in texts {
            for batch_events in 1..=4 {
                let want = batches_by_definition(text, batch_events);
                for block in 1..=12 {
                    assert_eq!(
                        batches_by(text, batch_events, block),
                        want,
                        "{text:?}, {batch_events} events per batch, blocks of {block}"
                    );
                }
            }
        }
    }

    #[test]
    fn batches_hold_whole_lines_and_know_their_first_line() {
        let got = batches_of("a\nb\n\nc\nd\ne", 2);
        assert_eq!(
            got,
            vec![
                (0, 2, "a\nb\n".to_owned()),
                (2, 2, "\nc\nd\n".to_owned()),
                (5, 1, "e\n".to_owned()),
            ]
        );
        assert!(batches_of("", 10).is_empty());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(500));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(990));
        assert_eq!(percentile(&sorted, 0.999), Duration::from_millis(999));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
