//! Event frames: the on-disk form of raw events, one frame per group commit.
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

    /// Inserts the frame (inside the caller's transaction), compressing into `buf`. Returns
    /// the stored size.
    pub(crate) fn insert(
        &self,
        conn: &Connection,
        first_event_seq: u64,
        committed: UnixMs,
        buf: &mut Vec<u8>,
    ) -> Result<usize, StoreError> {
        // Same layout as `lz4_flex::compress_prepend_size`: u32 LE size, then the block. The
        // buffer keeps its largest length between frames, so it is zeroed only where it grows
        // (zeroing the whole worst case before every frame cost as much as a tenth of LZ4).
        let size = u32::try_from(self.raw.len()).unwrap_or_else(|_| panic!("frame over 4 GiB"));
        let room = 4 + lz4_flex::block::get_maximum_output_size(self.raw.len());
        if buf.len() < room {
            buf.resize(room, 0);
        }
        let (head, block) = buf.split_at_mut(4);
        head.copy_from_slice(&size.to_le_bytes());
        let n = lz4_flex::block::compress_into(&self.raw, block)
            .map_err(|e| StoreError::Corrupt(format!("compressing a frame: {e}")))?;
        let events: &[u8] = buf.get(..4 + n).unwrap_or_default();
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
