//! `tollgate import`: a file of events through the same validation, dedup and commit path as
//! `POST /v1/events`.
//!
//! The file is read in chunks of whole lines; NDJSON chunks are prepared (parsed, validated) on
//! two threads while this one reads the next chunk and the writer commits the previous ones, and
//! are submitted in file order, with a bounded number of chunks in flight. The other formats
//! are prepared on this thread.
//!
//! Formats: CloudEvents NDJSON, and the flattened CSV layout of the benchmark data
//! (first columns `specversion,id,source,type,subject,time`, every further column goes into
//! `data`; values that are plain integers become JSON numbers, except in columns whose name ends
//! in `_id`, which stay strings), and proxy access logs (nginx, Squid; see
//! `tollgate_core::accesslog`), whose events get their `subject` from the client address.
#![allow(
    clippy::float_arithmetic,
    reason = "events per second for people, never near usage"
)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tollgate_core::accesslog::LogFormat;
use tollgate_core::event::EventError;
use tollgate_core::event::batch::ndjson_spans;
use tollgate_core::ipmeta::attribution::attribute_body;
use tollgate_store::engine::{Pending, PreparedBatch};
use tollgate_store::ipmeta::IpMetaStore;
use tollgate_store::{BatchOutcome, Engine, ItemError};

use crate::cli::StoreArgs;

/// Bytes read per chunk (whole lines; a chunk grows to hold a longer line).
const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Chunks prepared but not yet answered by the writer.
const CHUNKS_IN_FLIGHT_MAX: usize = 4;
/// Errors listed in the summary; the rest are counted.
const ERRORS_SHOWN_MAX: usize = 20;
/// CSV rows per chunk.
const CSV_ROWS_PER_CHUNK: usize = 10_000;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// One CloudEvent (JSON) per line.
    Ndjson,
    /// The flattened CSV layout (header line first).
    Csv,
    /// nginx access log: `combined`, or the extended `tollgate` log_format (see the README).
    Nginx,
    /// Squid's native access.log.
    Squid,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Input format.
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: Format,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The file to import.
    pub file: PathBuf,
}

/// Running totals and the first errors.
#[derive(Default)]
struct Tally {
    outcome: BatchOutcome,
    errors_total: usize,
}

impl Tally {
    fn add(&mut self, first_line: usize, o: BatchOutcome) {
        self.outcome.accepted += o.accepted;
        self.outcome.duplicates += o.duplicates;
        self.outcome.conflicts += o.conflicts;
        self.outcome.rejected += o.rejected;
        for e in o.errors {
            if e.code == "duplicate" {
                continue;
            }
            self.errors_total += 1;
            if self.outcome.errors.len() < ERRORS_SHOWN_MAX {
                self.outcome.errors.push(ItemError {
                    index: first_line + e.index,
                    ..e
                });
            }
        }
    }

    fn events(&self) -> usize {
        let o = &self.outcome;
        o.accepted + o.duplicates + o.conflicts + o.rejected
    }
}

struct Importer<'a> {
    engine: &'a Engine,
    in_flight: VecDeque<(usize, Pending)>,
    tally: Tally,
    bar: ProgressBar,
    started: Instant,
    /// Body buffers handed back by the writer, reused for later chunks.
    spare: Vec<String>,
}

impl Importer<'_> {
    fn submit(&mut self, first_line: usize, batch: PreparedBatch) -> anyhow::Result<()> {
        while self.in_flight.len() >= CHUNKS_IN_FLIGHT_MAX {
            self.collect_one()?;
        }
        let rx = self.engine.submit(batch)?;
        self.in_flight.push_back((first_line, rx));
        Ok(())
    }

    /// Submits a prepared chunk of `lines` lines that starts at `first_line`, and moves
    /// `first_line` past it.
    fn submit_lines(
        &mut self,
        first_line: &mut usize,
        (lines, batch): (usize, PreparedBatch),
    ) -> anyhow::Result<()> {
        self.submit(*first_line, batch)?;
        *first_line += lines;
        Ok(())
    }

    fn collect_one(&mut self) -> anyhow::Result<()> {
        let Some((first_line, rx)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (outcome, body) = rx.blocking_outcome()?;
        if self.spare.len() < CHUNKS_IN_FLIGHT_MAX {
            self.spare.push(body);
        }
        self.tally.add(first_line, outcome);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let o = &self.tally.outcome;
        self.bar.set_message(format!(
            "{:.0} events/s  accepted {}  duplicates {}  conflicts {}  rejected {}",
            self.tally.events() as f64 / secs,
            o.accepted,
            o.duplicates,
            o.conflicts,
            o.rejected
        ));
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<Tally> {
        while !self.in_flight.is_empty() {
            self.collect_one()?;
        }
        self.bar.finish_and_clear();
        Ok(self.tally)
    }
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let engine = args.store.open_engine()?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let started = Instant::now();
    let mut importer = Importer {
        engine: &engine,
        in_flight: VecDeque::new(),
        tally: Tally::default(),
        bar,
        started,
        spare: Vec::new(),
    };
    match args.format {
        Format::Ndjson => import_ndjson(&mut importer, file)?,
        Format::Csv => import_csv(&mut importer, file)?,
        Format::Nginx => import_log(&mut importer, &args, LogFormat::Nginx)?,
        Format::Squid => import_log(&mut importer, &args, LogFormat::Squid)?,
    }
    let tally = importer.finish()?;
    engine.close();
    let secs = started.elapsed().as_secs_f64();
    let o = &tally.outcome;
    println!(
        "imported {}: {} events in {:.2} s ({:.0} events/s)",
        args.file.display(),
        tally.events(),
        secs,
        tally.events() as f64 / secs.max(1e-9)
    );
    println!(
        "  accepted {}, duplicates {}, conflicts {}, rejected {}",
        o.accepted, o.duplicates, o.conflicts, o.rejected
    );
    for e in &o.errors {
        println!(
            "  line {}: {}: {}{}",
            e.index + 1,
            e.code,
            e.message,
            e.id.as_ref()
                .map(|id| format!(" (id {id})"))
                .unwrap_or_default()
        );
    }
    if tally.errors_total > o.errors.len() {
        println!("  ... and {} more", tally.errors_total - o.errors.len());
    }
    Ok(if o.rejected + o.conflicts > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn import_ndjson(importer: &mut Importer<'_>, file: File) -> anyhow::Result<()> {
    let engine = importer.engine;
    std::thread::scope(|scope| {
        let mut ahead = PrepareAhead::start(scope, engine);
        let mut file = file;
        let mut carry: Vec<u8> = Vec::new();
        let mut first_line = 0usize;
        loop {
            // Reuse a body buffer the writer handed back, so chunks do not fault in fresh memory.
            let mut buf = importer
                .spare
                .pop()
                .map(String::into_bytes)
                .unwrap_or_default();
            buf.clear();
            buf.append(&mut carry);
            // Into the spare room without zeroing it first, a whole chunk unless the file ends.
            buf.reserve(CHUNK_BYTES);
            let n = (&mut file).take(CHUNK_BYTES as u64).read_to_end(&mut buf)?;
            let at_end = n == 0;
            if buf.is_empty() {
                break;
            }
            // Cut after the last newline; the rest waits for the next chunk.
            let cut = if at_end {
                buf.len()
            } else {
                match buf.iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None => {
                        carry = buf;
                        continue;
                    }
                }
            };
            carry.extend_from_slice(&buf[cut..]);
            buf.truncate(cut);
            importer.bar.inc(buf.len() as u64);
            if let Some(prepared) = ahead.push(buf)? {
                importer.submit_lines(&mut first_line, prepared)?;
            }
            if at_end {
                break;
            }
        }
        for prepared in ahead.finish()? {
            importer.submit_lines(&mut first_line, prepared)?;
        }
        Ok(())
    })
}

/// Threads that prepare (parse, validate) NDJSON chunks while the reading thread reads the next
/// ones and submits the prepared ones in file order. The parse is the longest step of an
/// import; on two threads it keeps the cores busy while the writer and the apply thread wait
/// on each other. Submission stays in file order, so which copy of a repeated event counts
/// first does not change.
const PREPARE_THREADS: usize = 2;

/// Chunks handed to the prepare threads round-robin; chunk `i` is prepared by thread
/// `i % PREPARE_THREADS` and taken back in the same order, with its count of lines.
struct PrepareAhead {
    jobs: Vec<crossbeam_channel::Sender<Vec<u8>>>,
    done: Vec<crossbeam_channel::Receiver<(usize, PreparedBatch)>>,
    sent: usize,
    taken: usize,
}

impl PrepareAhead {
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        engine: &'scope Engine,
    ) -> PrepareAhead {
        let mut jobs = Vec::with_capacity(PREPARE_THREADS);
        let mut done = Vec::with_capacity(PREPARE_THREADS);
        for _ in 0..PREPARE_THREADS {
            let (job_tx, job_rx) = crossbeam_channel::bounded::<Vec<u8>>(1);
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            scope.spawn(move || {
                for chunk in job_rx {
                    let lines = memchr::memchr_iter(b'\n', &chunk).count();
                    if done_tx.send((lines, prepare_chunk(engine, chunk))).is_err() {
                        break;
                    }
                }
            });
            jobs.push(job_tx);
            done.push(done_rx);
        }
        PrepareAhead {
            jobs,
            done,
            sent: 0,
            taken: 0,
        }
    }

    /// Hands a chunk to its thread; returns the oldest prepared chunk (its lines and batch) once
    /// every thread has one to work on.
    fn push(&mut self, chunk: Vec<u8>) -> anyhow::Result<Option<(usize, PreparedBatch)>> {
        let thread = self.sent % PREPARE_THREADS;
        self.jobs[thread]
            .send(chunk)
            .map_err(|_| anyhow::anyhow!("a prepare thread stopped"))?;
        self.sent += 1;
        if self.sent - self.taken < PREPARE_THREADS {
            return Ok(None);
        }
        self.take().map(Some)
    }

    fn take(&mut self) -> anyhow::Result<(usize, PreparedBatch)> {
        let thread = self.taken % PREPARE_THREADS;
        let prepared = self.done[thread]
            .recv()
            .map_err(|_| anyhow::anyhow!("a prepare thread stopped"))?;
        self.taken += 1;
        Ok(prepared)
    }

    /// The chunks still being prepared, in order; the threads end.
    fn finish(mut self) -> anyhow::Result<Vec<(usize, PreparedBatch)>> {
        let mut rest = Vec::with_capacity(self.sent - self.taken);
        while self.taken < self.sent {
            rest.push(self.take()?);
        }
        Ok(rest)
    }
}

/// Prepares one chunk of whole lines. Lines that are not UTF-8 are rejected by number; the
/// valid ones around them still count.
fn prepare_chunk(engine: &Engine, chunk: Vec<u8>) -> PreparedBatch {
    match String::from_utf8(chunk) {
        Ok(text) => {
            let spans = ndjson_spans(&text);
            engine.prepare(text, spans)
        }
        Err(e) => {
            let bytes = e.into_bytes();
            let mut text = String::with_capacity(bytes.len());
            let mut bad = Vec::new();
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                match std::str::from_utf8(line) {
                    Ok(s) => text.push_str(s),
                    Err(_) => bad.push(i),
                }
                text.push('\n');
            }
            let spans = ndjson_spans(&text);
            let mut batch = engine.prepare(text, spans);
            for i in bad {
                batch.reject(
                    i,
                    &EventError::Malformed {
                        message: "line is not UTF-8".into(),
                    },
                );
            }
            batch
        }
    }
}

/// Lines of an access log per chunk.
const LOG_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// An access log: whole lines into events with deterministic ids, attributed to customers by
/// client address, through the same path as every other event. An incomplete last line (no
/// newline yet) is left out and reported, so a later import or `tail` reads it once whole.
fn import_log(
    importer: &mut Importer<'_>,
    args: &ImportArgs,
    format: LogFormat,
) -> anyhow::Result<()> {
    let ip = IpMetaStore::open(&args.store.data_dir)?;
    let table = ip.load_table()?;
    let sources = ip.load_sources()?;
    let Some(key) = crate::accesslog::key_of(&args.file)? else {
        eprintln!("{}: no complete line yet", args.file.display());
        return Ok(());
    };
    let mut file = File::open(&args.file)?;
    let mut offset = 0u64;
    let mut first_line = 0usize;
    loop {
        let bytes = crate::accesslog::read_lines(&mut file, offset, LOG_CHUNK_BYTES)?;
        if bytes.is_empty() {
            break;
        }
        importer.bar.inc(bytes.len() as u64);
        let chunk = crate::accesslog::convert(format, key, offset, first_line, &bytes);
        let now = importer.engine.now();
        let (body, spans) = match attribute_body(&chunk.body, &chunk.spans, &sources, &table, now) {
            Some((body, spans, _)) => (body, spans),
            None => (chunk.body, chunk.spans),
        };
        let mut batch = importer.engine.prepare(body, spans);
        for (i, message) in chunk.bad {
            batch.reject(i, &EventError::Malformed { message });
        }
        // Indexes are already line numbers of the file.
        importer.submit(0, batch)?;
        offset += bytes.len() as u64;
        first_line += chunk.lines;
    }
    let len = file.metadata()?.len();
    if len > offset {
        eprintln!(
            "{}: the last line (line {}) has no newline yet and was not imported",
            args.file.display(),
            first_line + 1
        );
    }
    Ok(())
}

/// Columns every CSV file must start with, in order.
const CSV_ATTRIBUTES: [&str; 6] = ["specversion", "id", "source", "type", "subject", "time"];

fn import_csv(importer: &mut Importer<'_>, file: File) -> anyhow::Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::new(file));
    let headers = reader.headers().context("reading the CSV header")?.clone();
    if headers.len() < CSV_ATTRIBUTES.len()
        || headers
            .iter()
            .zip(CSV_ATTRIBUTES)
            .any(|(h, want)| h != want)
    {
        bail!(
            "the CSV header must start with {}",
            CSV_ATTRIBUTES.join(",")
        );
    }
    let data_columns: Vec<(String, bool)> = headers
        .iter()
        .skip(CSV_ATTRIBUTES.len())
        .map(|h| (h.to_owned(), !h.ends_with("_id")))
        .collect();
    let mut body = String::new();
    let mut bad: Vec<(usize, String)> = Vec::new();
    let mut rows_in_chunk = 0usize;
    let mut first_line = 1usize; // line 0 is the header
    let mut record = csv::StringRecord::new();
    loop {
        let more = match reader.read_record(&mut record) {
            Ok(more) => more,
            Err(e) => {
                bad.push((rows_in_chunk, e.to_string()));
                body.push('\n');
                rows_in_chunk += 1;
                true
            }
        };
        if more && !record.is_empty() {
            if let Some(pos) = record.position() {
                importer.bar.set_position(pos.byte());
            }
            match csv_event(&record, &data_columns) {
                Ok(json) => body.push_str(&json),
                Err(message) => bad.push((rows_in_chunk, message)),
            }
            body.push('\n');
            rows_in_chunk += 1;
        }
        if rows_in_chunk >= CSV_ROWS_PER_CHUNK || (!more && rows_in_chunk > 0) {
            let text = std::mem::take(&mut body);
            let spans = ndjson_spans(&text);
            let mut batch = importer.engine.prepare(text, spans);
            for (i, message) in bad.drain(..) {
                batch.reject(i, &EventError::Malformed { message });
            }
            importer.submit(first_line, batch)?;
            first_line += rows_in_chunk;
            rows_in_chunk = 0;
        }
        if !more {
            break;
        }
    }
    Ok(())
}

/// One CSV row as CloudEvent JSON text.
fn csv_event(
    record: &csv::StringRecord,
    data_columns: &[(String, bool)],
) -> Result<String, String> {
    if record.len() != CSV_ATTRIBUTES.len() + data_columns.len() {
        return Err(format!(
            "row has {} fields, the header {}",
            record.len(),
            CSV_ATTRIBUTES.len() + data_columns.len()
        ));
    }
    let mut event = serde_json::Map::new();
    for (name, value) in CSV_ATTRIBUTES.iter().zip(record.iter()) {
        if !value.is_empty() {
            event.insert(
                (*name).to_owned(),
                serde_json::Value::String(value.to_owned()),
            );
        }
    }
    let mut data = serde_json::Map::new();
    for ((name, numeric), value) in data_columns
        .iter()
        .zip(record.iter().skip(CSV_ATTRIBUTES.len()))
    {
        if value.is_empty() {
            continue;
        }
        let json = if *numeric && is_plain_integer(value) {
            serde_json::Value::Number(
                value
                    .parse()
                    .map_err(|_| format!("column {name}: bad number"))?,
            )
        } else {
            serde_json::Value::String(value.to_owned())
        };
        data.insert(name.clone(), json);
    }
    event.insert("data".into(), serde_json::Value::Object(data));
    serde_json::to_string(&event).map_err(|e| e.to_string())
}

/// `0`, `-12`, `4096`: digits without leading zeros, so the text survives as a number.
fn is_plain_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}
