//! Reading proxy access logs: whole lines of a file into CloudEvent NDJSON, shared by
//! `import --format nginx|squid` and `tail`.
//!
//! Only complete lines (ending in `\n`) are read: a line still being written is left for the
//! next read, so a line is never turned into an event twice with different contents. The file's
//! key (see `tollgate_core::accesslog`) needs its first complete line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use tollgate_core::accesslog::{LogFormat, event_id, file_key, parse_line};

/// The key of a file, or `None` while its first line is incomplete.
pub fn key_of(path: &Path) -> std::io::Result<Option<u64>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut first = Vec::new();
    reader
        .by_ref()
        .take(tollgate_core::limits::ACCESS_LOG_LINE_BYTES_MAX as u64 + 1)
        .read_until(b'\n', &mut first)?;
    Ok(first.ends_with(b"\n").then(|| file_key(&first)))
}

/// Events from a run of whole lines.
#[derive(Debug, Default)]
pub struct LogChunk {
    /// One event per line; a bad line is an empty line.
    pub body: String,
    /// Spans of the good lines, indexed by line number − 1 within the file.
    pub spans: Vec<(usize, Range<usize>)>,
    /// Bad lines: (line number − 1, why).
    pub bad: Vec<(usize, String)>,
    /// Lines in the chunk.
    pub lines: usize,
}

/// Turns `bytes` (whole lines, starting at byte `offset` and line `first_line` of the file
/// with key `key`) into events.
pub fn convert(
    format: LogFormat,
    key: u64,
    offset: u64,
    first_line: usize,
    bytes: &[u8],
) -> LogChunk {
    let mut chunk = LogChunk::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let end = bytes[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| at + i);
        let raw = &bytes[at..end];
        let index = first_line + chunk.lines;
        let line_offset = offset + at as u64;
        let text = std::str::from_utf8(raw)
            .map(|t| t.trim_end_matches('\r'))
            .map_err(|_| "line is not UTF-8".to_owned());
        match text {
            Ok("") => {}
            Ok(t) => match parse_line(format, t) {
                Ok(record) => {
                    let start = chunk.body.len();
                    chunk
                        .body
                        .push_str(&record.to_event(format, &event_id(key, line_offset, raw)));
                    chunk.spans.push((index, start..chunk.body.len()));
                }
                Err(e) => chunk.bad.push((index, e.to_string())),
            },
            Err(e) => chunk.bad.push((index, e)),
        }
        chunk.body.push('\n');
        chunk.lines += 1;
        at = end + 1;
    }
    chunk
}

/// Reads whole lines from `file` starting at `offset`, at most about `max_bytes` (always at
/// least one whole line when there is one). Returns the bytes (ending in `\n`, or empty).
pub fn read_lines(file: &mut File, offset: u64, max_bytes: usize) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.by_ref().take(max_bytes as u64).read_to_end(&mut buf)?;
    match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => buf.truncate(i + 1),
        None if buf.len() >= max_bytes => {
            // One line longer than max_bytes: read to its end.
            let mut rest = Vec::new();
            BufReader::new(file.by_ref()).read_until(b'\n', &mut rest)?;
            if rest.ends_with(b"\n") {
                buf.extend_from_slice(&rest);
            } else {
                buf.clear();
            }
        }
        None => buf.clear(),
    }
    Ok(buf)
}
