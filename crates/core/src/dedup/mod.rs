//! dedup: when two events are the same event, and the index that remembers every identity.
//!
//! Owns: the identity of an event — a 128-bit hash of (`source`, `id`) — and its payload
//! fingerprint; the in-memory [`Index`] of every identity accepted inside the acceptance
//! window; the [`Verdict`] for each incoming event. Does not own: persistence (the store
//! rebuilds the index from stored events at start) or the window check ([`crate::event`]).
//!
//! Invariants: an identity is accepted at most once while it is in the index; an identity is
//! kept in the index at least as long as events of its time can be accepted. A re-sent event
//! with the same fingerprint is a `Duplicate`; with a different fingerprint, a `Conflict`, and
//! the first stays.
//!
//! Exactness: identities are compared by a 128-bit XXH3 hash (chance of any collision among 10^10
//! identities is below 10^-18); payloads by a 48-bit fingerprint, so a conflicting re-send is
//! mistaken for a duplicate with chance 2^-48 (it is never counted twice either way).

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::Value;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::event::{AttributeRef, Attributes, JsonRef};
use crate::time::{DAY_MS, UnixMs};

/// The identity of an event: a 128-bit hash of (`source`, `id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey(pub u128);

/// A fingerprint of everything in an event except its identity (48 significant bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u64);

const FINGERPRINT_BITS: u32 = 48;
const FINGERPRINT_MASK: u64 = (1 << FINGERPRINT_BITS) - 1;
/// Room the fingerprint's buffer starts with: the hashed bytes of a typical event (a longer
/// one grows it).
const FINGERPRINT_BUFFER_BYTES: usize = 512;

/// The outcome of offering an event to the index, in order of how much it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// New identity: the event counts.
    Accepted,
    /// Same identity, same payload: already counted, nothing changes.
    Duplicate,
    /// Same identity, different payload: the first stays, this one is refused.
    Conflict,
}

impl Verdict {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Duplicate => "duplicate",
            Verdict::Conflict => "conflict",
        }
    }
}

/// The identity of an event.
pub fn identity<E: Attributes + ?Sized>(event: &E) -> IdentityKey {
    identity_of(event.source(), event.id())
}

/// The identity of (`source`, `id`). Length-prefixed so that no two pairs share an encoding.
pub fn identity_of(source: &str, id: &str) -> IdentityKey {
    // Hashed in one call over one buffer, on the stack for the usual lengths (a path-like
    // source and a UUID take about 60 bytes) so the ingest path neither allocates nor zeroes
    // the buffer for the longest pair the limits allow on every event.
    const STACK_BYTES: usize = 128;
    let len = 8 + source.len() + id.len();
    let mut stack = [0u8; STACK_BYTES];
    let mut heap = Vec::new();
    let buf: &mut [u8] = match stack.get_mut(..len) {
        Some(buf) => buf,
        None => {
            heap.resize(len, 0);
            &mut heap
        }
    };
    let (head, rest) = buf.split_at_mut(8);
    head.copy_from_slice(&(source.len() as u64).to_le_bytes());
    let (src, idb) = rest.split_at_mut(source.len());
    src.copy_from_slice(source.as_bytes());
    idb.copy_from_slice(id.as_bytes());
    IdentityKey(xxh3_128(buf))
}

/// The payload fingerprint: type, subject, time as sent, datacontenttype, data and extensions.
/// Object keys are hashed in sorted order, so key order on the wire does not matter; numbers
/// are hashed as written.
///
/// The hashed bytes are gathered into one buffer and hashed in one call: XXH3 of the whole is
/// XXH3 fed the same bytes piece by piece, and one call saves the streaming state's setup and a
/// copy per piece (an event is dozens of pieces of a few bytes).
pub fn fingerprint<E: Attributes + ?Sized>(event: &E) -> Fingerprint {
    let mut h = Vec::with_capacity(FINGERPRINT_BUFFER_BYTES);
    hash_str(&mut h, event.event_type());
    hash_str(&mut h, event.subject());
    hash_opt(&mut h, event.time_text());
    hash_opt(&mut h, event.datacontenttype());
    hash_attribute(&mut h, event.data());
    for (k, v) in event.extensions() {
        hash_str(&mut h, k);
        hash_attribute(&mut h, v);
    }
    Fingerprint(xxh3_64(&h) & FINGERPRINT_MASK)
}

fn hash_attribute(h: &mut Vec<u8>, v: AttributeRef<'_>) {
    match v {
        AttributeRef::Json(v) => hash_value(h, v),
        AttributeRef::Borrowed(v) => hash_json_ref(h, v),
        // A string attribute hashes as the JSON string it is.
        AttributeRef::Str(s) => {
            h.extend_from_slice(b"s");
            hash_str(h, s);
        }
    }
}

/// [`hash_value`] of the same JSON read from text: the same bytes in the same order (members
/// of a [`JsonRef::Object`] are already sorted by key).
fn hash_json_ref(h: &mut Vec<u8>, v: &JsonRef<'_>) {
    match v {
        JsonRef::Null => h.extend_from_slice(b"n"),
        JsonRef::Bool(b) => h.extend_from_slice(if *b { b"t" } else { b"f" }),
        JsonRef::Number(n) => {
            h.extend_from_slice(b"#");
            hash_str(h, n);
        }
        JsonRef::String(s) => {
            h.extend_from_slice(b"s");
            hash_str(h, s);
        }
        JsonRef::Array(items) => {
            h.extend_from_slice(b"[");
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_json_ref(h, item);
            }
        }
        JsonRef::Object(members) => {
            h.extend_from_slice(b"{");
            h.extend_from_slice(&(members.len() as u64).to_le_bytes());
            for (k, item) in members {
                hash_str(h, k);
                hash_json_ref(h, item);
            }
        }
    }
}

fn hash_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn hash_opt(h: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => h.push(0),
        Some(s) => {
            h.push(1);
            hash_str(h, s);
        }
    }
}

fn hash_value(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => h.extend_from_slice(b"n"),
        Value::Bool(b) => h.extend_from_slice(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            h.extend_from_slice(b"#");
            hash_str(h, n.as_str());
        }
        Value::String(s) => {
            h.extend_from_slice(b"s");
            hash_str(h, s);
        }
        Value::Array(items) => {
            h.extend_from_slice(b"[");
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_value(h, item);
            }
        }
        Value::Object(map) => {
            h.extend_from_slice(b"{");
            h.extend_from_slice(&(map.len() as u64).to_le_bytes());
            // serde_json's map iterates in key order unless its `preserve_order` feature is on
            // somewhere in the build; sort only when it is not already sorted.
            if map.keys().is_sorted() {
                for (k, item) in map {
                    hash_str(h, k);
                    hash_value(h, item);
                }
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (k, item) in entries {
                    hash_str(h, k);
                    hash_value(h, item);
                }
            }
        }
    }
}

/// Identity keys are already uniform hashes: the map uses their low 64 bits as the hash.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low 64 bits of a uniform hash"
    )]
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Every identity accepted inside the acceptance window, with its fingerprint and UTC day.
///
/// One entry is 16 bytes of key and 8 bytes of value (48-bit fingerprint, 16-bit day), about
/// 28–55 bytes of memory per event with the hash table's spare room.
pub struct Index {
    /// Split by the identity's top bits, so that a growing index resizes one small table at a
    /// time instead of doubling one huge table (whose old and new copies would coexist).
    shards: Vec<Shard>,
    len: usize,
}

type Shard = HashMap<u128, u64, BuildHasherDefault<IdentityHasher>>;

/// log2 of the number of shards.
const SHARD_BITS: u32 = 8;

/// Events whose identities [`Index::offer_all`] looks up before offering them.
const OFFER_AHEAD: usize = 16;

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..1 << SHARD_BITS).map(|_| Shard::default()).collect(),
            len: 0,
        }
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&mut self, key: IdentityKey) -> &mut Shard {
        let at = (key.0 >> (128 - SHARD_BITS)) as usize;
        &mut self.shards[at]
    }

    /// Number of identities held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reserves room for `additional` more identities.
    pub fn reserve(&mut self, additional: usize) {
        let per_shard = additional >> SHARD_BITS;
        for shard in &mut self.shards {
            shard.reserve(per_shard);
        }
    }

    /// Decides an event and, when it is accepted, remembers it at once so that a later event
    /// in the same batch sees it. Undo with [`Index::forget`] if the batch is not committed.
    pub fn offer(&mut self, key: IdentityKey, fp: Fingerprint, time: UnixMs) -> Verdict {
        use std::collections::hash_map::Entry;
        match self.shard(key).entry(key.0) {
            Entry::Vacant(slot) => {
                slot.insert(pack(fp, time));
                self.len += 1;
                Verdict::Accepted
            }
            Entry::Occupied(slot) => {
                if *slot.get() & FINGERPRINT_MASK == fp.0 & FINGERPRINT_MASK {
                    Verdict::Duplicate
                } else {
                    Verdict::Conflict
                }
            }
        }
    }

    /// Decides `events` in order, as [`Index::offer`] would one by one, writing each verdict
    /// into `verdicts`. A large index lives mostly outside the CPU caches, and one offer was a
    /// chain of two cache misses; here the identities of a run of [`OFFER_AHEAD`] events are
    /// looked up first, lookups that do not depend on each other and so wait for memory
    /// together, and then offered while their table slots are in cache.
    pub fn offer_all(
        &mut self,
        events: impl Iterator<Item = (IdentityKey, Fingerprint, UnixMs)> + Clone,
        mut verdict: impl FnMut(Verdict),
    ) {
        let mut ahead = events.clone();
        for (i, (key, fp, time)) in events.enumerate() {
            if i % OFFER_AHEAD == 0 {
                let mut found = 0usize;
                for (key, _, _) in ahead.by_ref().take(OFFER_AHEAD) {
                    found += usize::from(self.shard(key).contains_key(&key.0));
                }
                // The count is only there so that the lookups are not optimised away.
                std::hint::black_box(found);
            }
            verdict(self.offer(key, fp, time));
        }
    }

    /// Remembers an identity known to be stored (rebuilding the index at start).
    pub fn insert(&mut self, key: IdentityKey, fp: Fingerprint, time: UnixMs) {
        if self.shard(key).insert(key.0, pack(fp, time)).is_none() {
            self.len += 1;
        }
    }

    /// Forgets identities offered in a batch that was not committed.
    pub fn forget(&mut self, key: IdentityKey) {
        if self.shard(key).remove(&key.0).is_some() {
            self.len -= 1;
        }
    }

    /// Drops identities of events whose UTC day lies wholly before `cutoff`: such events can no
    /// longer be accepted, so their identities can never come back as anything but `too_old`.
    pub fn prune_before(&mut self, cutoff: UnixMs) -> usize {
        let cutoff_day = cutoff.0.div_euclid(DAY_MS);
        let before = self.len;
        for shard in &mut self.shards {
            shard.retain(|_, packed| i64::from(day_of(*packed)) >= cutoff_day);
        }
        self.len = self.shards.iter().map(HashMap::len).sum();
        before - self.len
    }
}

fn pack(fp: Fingerprint, time: UnixMs) -> u64 {
    let day = time.0.div_euclid(DAY_MS).clamp(0, i64::from(u16::MAX)) as u64;
    (day << FINGERPRINT_BITS) | (fp.0 & FINGERPRINT_MASK)
}

fn day_of(packed: u64) -> u16 {
    (packed >> FINGERPRINT_BITS) as u16
}
