//! Splitting request bodies into the JSON text of each event, without parsing the events.
//!
//! Each span keeps the index the client knows the event by: the array position for a JSON
//! batch, the line number minus one for NDJSON (blank lines are skipped but keep their number).

use std::ops::Range;

use serde_json::value::RawValue;

/// Spans of the non-blank lines of an NDJSON body, indexed by line number − 1.
pub fn ndjson_spans(body: &str) -> Vec<(usize, Range<usize>)> {
    let mut spans = Vec::new();
    let mut start = 0usize;
    // Every newline ends a line, and the text after the last one is a line too (empty when
    // the body ends with a newline), as `str::split` gives them; memchr finds them with SIMD.
    let ends = memchr::memchr_iter(b'\n', body.as_bytes()).chain(std::iter::once(body.len()));
    for (line, end) in ends.enumerate() {
        let text = body.get(start..end).unwrap_or_default();
        let trimmed = text.trim_end_matches('\r');
        if !trimmed.trim().is_empty() {
            spans.push((line, start..start + trimmed.len()));
        }
        start = end + 1;
    }
    spans
}

/// Spans of the elements of a JSON array body. Fails when the body is not a JSON array.
pub fn array_spans(body: &str) -> Result<Vec<(usize, Range<usize>)>, serde_json::Error> {
    let items: Vec<&RawValue> = serde_json::from_str(body)?;
    let base = body.as_ptr() as usize;
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            // Borrowed from `body`, so the element's address lies inside it.
            let at = raw.get().as_ptr() as usize - base;
            (i, at..at + raw.get().len())
        })
        .collect())
}
