//! Event frames: the on-disk form of raw events. A group commit writes one frame per
//! [`FRAME_RAW_BYTES_MAX`] of raw events, all in its one transaction, and compresses them on
//! as many threads as there are cores: LZ4 was the largest part of the writer's time, and the
//! writer is the one thread every event passes through.
//!
//! A frame row holds two blobs. `keys`: per event, the 128-bit identity, the 64-bit payload
//! fingerprint and the event time (32 bytes, little-endian), so the dedup index is rebuilt at
//! open without decompressing anything. `events`: LZ4 block (size-prefixed) of per-event records
//! `time_ms: i64 LE, len: u32 LE, raw JSON text` — the event exactly as it was received, which is
//! the source of truth every rollup is recomputed from.

use rusqlite::{Connection, params};
use tollgate_core::dedup::{Fingerprint, IdentityKey};
use tollgate_core::time::UnixMs;

use crate::StoreError;

const KEY_RECORD_BYTES: usize = 32;
const EVENT_HEADER_BYTES: usize = 12;

/// Accumulates the accepted events of one group commit.
#[derive(Default)]
pub(crate) struct FrameBuilder {
    keys: Vec<u8>,
    raw: Vec<u8>,
    count: u32,
    min_time_ms: i64,
    max_time_ms: i64,
}

impl FrameBuilder {
    pub(crate) fn push(&mut self, key: IdentityKey, fp: Fingerprint, time: UnixMs, raw: &str) {
        if self.count == 0 {
            self.min_time_ms = time.0;
            self.max_time_ms = time.0;
        }
        self.min_time_ms = self.min_time_ms.min(time.0);
        self.max_time_ms = self.max_time_ms.max(time.0);
        self.keys.extend_from_slice(&key.0.to_le_bytes());
        self.keys.extend_from_slice(&fp.0.to_le_bytes());
        self.keys.extend_from_slice(&time.0.to_le_bytes());
        self.raw.extend_from_slice(&time.0.to_le_bytes());
        let len = u32::try_from(raw.len()).unwrap_or_else(|_| panic!("event larger than 4 GiB"));
        self.raw.extend_from_slice(&len.to_le_bytes());
        self.raw.extend_from_slice(raw.as_bytes());
        self.count += 1;
    }

    /// Empties the builder, keeping its buffers.
    pub(crate) fn clear(&mut self) {
        self.keys.clear();
        self.raw.clear();
        self.count = 0;
    }

    pub(crate) fn len(&self) -> u32 {
        self.count
    }

    /// Compresses the raw events into `buf` (`lz4_flex::compress_prepend_size`'s layout: u32
    /// LE size, then the block); returns the compressed length. The buffer keeps its largest
    /// length between frames, so it is zeroed only where it grows (zeroing the whole worst
    /// case before every frame cost as much as a tenth of LZ4).
    fn compress(&self, buf: &mut Vec<u8>) -> Result<usize, StoreError> {
        let size = u32::try_from(self.raw.len()).unwrap_or_else(|_| panic!("frame over 4 GiB"));
        let room = 4 + lz4_flex::block::get_maximum_output_size(self.raw.len());
        if buf.len() < room {
            buf.resize(room, 0);
        }
        let (head, block) = buf.split_at_mut(4);
        head.copy_from_slice(&size.to_le_bytes());
        let n = lz4_flex::block::compress_into(&self.raw, block)
            .map_err(|e| StoreError::Corrupt(format!("compressing a frame: {e}")))?;
        Ok(4 + n)
    }

    /// Inserts the frame (inside the caller's transaction) with its compressed `events`.
    /// Returns the stored size.
    fn insert(
        &self,
        conn: &Connection,
        first_event_seq: u64,
        committed: UnixMs,
        events: &[u8],
    ) -> Result<usize, StoreError> {
        conn.prepare_cached(
            "INSERT INTO event_frames (first_event_seq, event_count, min_time_ms, max_time_ms,
                committed_ms, keys, events) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            i64::try_from(first_event_seq).unwrap_or(i64::MAX),
            self.count,
            self.min_time_ms,
            self.max_time_ms,
            committed.0,
            self.keys,
            events
        ])?;
        Ok(events.len() + self.keys.len())
    }
}

/// Raw event bytes after which a group commit starts another frame, so that a large group is
/// compressed on several threads (LZ4's 64 KiB window makes a larger frame compress no better).
pub(crate) const FRAME_RAW_BYTES_MAX: usize = 1 << 20;

/// Most threads one group commit compresses its frames on.
const COMPRESS_THREADS_MAX: usize = 4;

/// The frames of one group commit, in event order. Reused across group commits: its builders
/// and compression buffers keep their memory.
#[derive(Default)]
pub(crate) struct FrameSet {
    frames: Vec<FrameBuilder>,
    /// Builders in use (the rest are kept for later groups).
    used: usize,
    /// One compression buffer per builder.
    compressed: Vec<Vec<u8>>,
}

impl FrameSet {
    /// Empties the set, keeping its buffers.
    pub(crate) fn clear(&mut self) {
        self.used = 0;
    }

    /// Adds an accepted event to the last frame, or to a new one when the last is full.
    pub(crate) fn push(&mut self, key: IdentityKey, fp: Fingerprint, time: UnixMs, raw: &str) {
        let full = self
            .used
            .checked_sub(1)
            .and_then(|last| self.frames.get(last))
            .is_none_or(|f| f.raw.len() >= FRAME_RAW_BYTES_MAX);
        if full {
            if self.frames.len() == self.used {
                self.frames.push(FrameBuilder::default());
                self.compressed.push(Vec::new());
            }
            if let Some(f) = self.frames.get_mut(self.used) {
                f.clear();
            }
            self.used += 1;
        }
        if let Some(f) = self.frames.get_mut(self.used - 1) {
            f.push(key, fp, time, raw);
        }
    }

    /// Events in the set.
    pub(crate) fn len(&self) -> u32 {
        let frames = self.frames.get(..self.used).unwrap_or_default();
        frames.iter().map(FrameBuilder::len).sum()
    }

    /// Compresses every frame (on up to one thread per core) and inserts them inside the
    /// caller's transaction, numbering events from `first_event_seq`. Returns the stored size.
    pub(crate) fn insert(
        &mut self,
        conn: &Connection,
        first_event_seq: u64,
        committed: UnixMs,
    ) -> Result<usize, StoreError> {
        let frames = self.frames.get(..self.used).unwrap_or_default();
        let bufs = self.compressed.get_mut(..self.used).unwrap_or_default();
        let threads = crate::usage::cores().min(COMPRESS_THREADS_MAX);
        let lengths = compress_all(frames, bufs, threads)?;
        let mut seq = first_event_seq;
        let mut bytes = 0;
        for ((frame, buf), n) in frames.iter().zip(&self.compressed).zip(lengths) {
            bytes += frame.insert(conn, seq, committed, buf.get(..n).unwrap_or_default())?;
            seq += u64::from(frame.count);
        }
        Ok(bytes)
    }
}

/// Compresses `frames[i]` into `bufs[i]`, the frames split in runs over up to `threads`
/// threads (this one among them); returns the compressed lengths in frame order.
fn compress_all(
    frames: &[FrameBuilder],
    bufs: &mut [Vec<u8>],
    threads: usize,
) -> Result<Vec<usize>, StoreError> {
    let each = |frames: &[FrameBuilder], bufs: &mut [Vec<u8>]| -> Result<Vec<usize>, StoreError> {
        frames
            .iter()
            .zip(bufs)
            .map(|(f, b)| f.compress(b))
            .collect()
    };
    let threads = threads.min(frames.len());
    if threads <= 1 {
        return each(frames, bufs);
    }
    let run = frames.len().div_ceil(threads);
    let (my_frames, mut frames) = frames.split_at(run);
    let (my_bufs, mut bufs) = bufs.split_at_mut(run);
    std::thread::scope(|scope| {
        let mut helpers = Vec::with_capacity(threads - 1);
        while !frames.is_empty() {
            let n = run.min(frames.len());
            let (f, later_frames) = frames.split_at(n);
            let (b, later_bufs) = std::mem::take(&mut bufs).split_at_mut(n);
            frames = later_frames;
            bufs = later_bufs;
            helpers.push(scope.spawn(move || each(f, b)));
        }
        let mut lengths = each(my_frames, my_bufs)?;
        for helper in helpers {
            let part = helper
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
            lengths.extend(part);
        }
        Ok(lengths)
    })
}

/// One stored frame, as read back.
pub(crate) struct StoredFrame {
    pub(crate) first_event_seq: u64,
    pub(crate) event_count: u32,
    pub(crate) keys: Vec<u8>,
    pub(crate) events: Vec<u8>,
}

impl StoredFrame {
    /// The (identity, fingerprint, time) of every event in the frame.
    pub(crate) fn keys(&self) -> Result<Vec<(IdentityKey, Fingerprint, UnixMs)>, StoreError> {
        if self.keys.len() != self.event_count as usize * KEY_RECORD_BYTES {
            return Err(StoreError::Corrupt(format!(
                "frame at event {} has a key blob of {} bytes for {} events",
                self.first_event_seq,
                self.keys.len(),
                self.event_count
            )));
        }
        Ok(self
            .keys
            .chunks_exact(KEY_RECORD_BYTES)
            .map(|c| {
                let (k, rest) = c.split_at(16);
                let (f, t) = rest.split_at(8);
                (
                    IdentityKey(u128::from_le_bytes(k.try_into().unwrap_or([0; 16]))),
                    Fingerprint(u64::from_le_bytes(f.try_into().unwrap_or([0; 8]))),
                    UnixMs(i64::from_le_bytes(t.try_into().unwrap_or([0; 8]))),
                )
            })
            .collect())
    }

    /// Calls `f(seq, time, raw)` for every event in the frame.
    pub(crate) fn for_each_event(
        &self,
        mut f: impl FnMut(u64, UnixMs, &str) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let corrupt = |what: &str| {
            StoreError::Corrupt(format!("frame at event {}: {what}", self.first_event_seq))
        };
        let raw = lz4_flex::decompress_size_prepended(&self.events)
            .map_err(|e| corrupt(&format!("decompress: {e}")))?;
        let mut at = 0usize;
        for i in 0..u64::from(self.event_count) {
            let header = raw
                .get(at..at + EVENT_HEADER_BYTES)
                .ok_or_else(|| corrupt("truncated"))?;
            let (t, l) = header.split_at(8);
            let time = UnixMs(i64::from_le_bytes(
                t.try_into().map_err(|_| corrupt("time"))?,
            ));
            let len = u32::from_le_bytes(l.try_into().map_err(|_| corrupt("len"))?) as usize;
            at += EVENT_HEADER_BYTES;
            let body = raw
                .get(at..at + len)
                .ok_or_else(|| corrupt("truncated event"))?;
            let text = std::str::from_utf8(body).map_err(|_| corrupt("not UTF-8"))?;
            f(self.first_event_seq + i, time, text)?;
            at += len;
        }
        if at != raw.len() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(())
    }
}

/// Calls `f` for every stored frame in commit order.
pub(crate) fn for_each_frame(
    conn: &Connection,
    mut f: impl FnMut(StoredFrame) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT first_event_seq, event_count, keys, events FROM event_frames ORDER BY frame_seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let first: i64 = row.get(0)?;
        let count: i64 = row.get(1)?;
        f(StoredFrame {
            first_event_seq: u64::try_from(first).map_err(|_| StoreError::Corrupt("seq".into()))?,
            event_count: u32::try_from(count).map_err(|_| StoreError::Corrupt("count".into()))?,
            keys: row.get(2)?,
            events: row.get(3)?,
        })?;
    }
    Ok(())
}

/// The next event sequence number: one past the last stored event.
pub(crate) fn next_event_seq(conn: &Connection) -> Result<u64, StoreError> {
    let next: i64 = conn.query_row(
        "SELECT COALESCE(MAX(first_event_seq + event_count), 1) FROM event_frames",
        [],
        |r| r.get(0),
    )?;
    u64::try_from(next).map_err(|_| StoreError::Corrupt("negative event sequence".into()))
}

/// Calls `f(frame, committed)` for every stored frame that may hold an event with time in
/// `[from, to)` and a sequence number above `after_seq`, in commit order, until `f` returns
/// `Ok(false)`.
pub(crate) fn for_each_frame_in(
    conn: &Connection,
    from: UnixMs,
    to: UnixMs,
    after_seq: u64,
    mut f: impl FnMut(StoredFrame, UnixMs) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT first_event_seq, event_count, keys, events, committed_ms FROM event_frames
         WHERE max_time_ms >= ?1 AND min_time_ms < ?2 AND first_event_seq + event_count > ?3
         ORDER BY frame_seq",
    )?;
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let mut rows = stmt.query(rusqlite::params![from.0, to.0, after])?;
    while let Some(row) = rows.next()? {
        let first: i64 = row.get(0)?;
        let count: i64 = row.get(1)?;
        let go_on = f(
            StoredFrame {
                first_event_seq: u64::try_from(first)
                    .map_err(|_| StoreError::Corrupt("seq".into()))?,
                event_count: u32::try_from(count)
                    .map_err(|_| StoreError::Corrupt("count".into()))?,
                keys: row.get(2)?,
                events: row.get(3)?,
            },
            UnixMs(row.get(4)?),
        )?;
        if !go_on {
            break;
        }
    }
    Ok(())
}

/// Calls `f(frame, committed)` for every stored frame that holds an event with a sequence
/// number above `after_seq`, in log order, until `f` returns `Ok(false)`. Starts at the frame
/// holding `after_seq + 1` (index `event_frames_by_first_seq`), so a reader that keeps a cursor
/// does not scan the frames before it.
pub(crate) fn for_each_frame_after(
    conn: &Connection,
    after_seq: u64,
    mut f: impl FnMut(StoredFrame, UnixMs) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_event_seq, event_count, keys, events, committed_ms FROM event_frames
         WHERE first_event_seq >= coalesce((SELECT max(first_event_seq) FROM event_frames
                                             WHERE first_event_seq <= ?1), 0)
         ORDER BY first_event_seq",
    )?;
    let next = i64::try_from(after_seq.saturating_add(1)).unwrap_or(i64::MAX);
    let mut rows = stmt.query(rusqlite::params![next])?;
    while let Some(row) = rows.next()? {
        let first: i64 = row.get(0)?;
        let count: i64 = row.get(1)?;
        let go_on = f(
            StoredFrame {
                first_event_seq: u64::try_from(first)
                    .map_err(|_| StoreError::Corrupt("seq".into()))?,
                event_count: u32::try_from(count)
                    .map_err(|_| StoreError::Corrupt("count".into()))?,
                keys: row.get(2)?,
                events: row.get(3)?,
            },
            UnixMs(row.get(4)?),
        )?;
        if !go_on {
            break;
        }
    }
    Ok(())
}
