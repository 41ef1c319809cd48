//! The ingest fast path: one pass over an event's text for the shape nearly every event has,
//! giving the same [`Wire`] as the general parse or declining.
//!
//! The general parse ([`super::parse_wire`]) reads each attribute as a serde_json raw value
//! (one validating pass), then reads `data` again to split its members: about two thirds of
//! the ingest CPU of a typical event went there. This scanner reads the text once, byte by
//! byte, and accepts only a strict subset of JSON: strings without escapes or control
//! characters, numbers without an exponent, `true`, `false`, `null`, and a `data` that is one
//! of those or a flat object of them. Anything else (an escape, a nested container, a
//! duplicate attribute, an extension name the general parse would refuse, any syntax error)
//! makes it decline, and the general parse reads the event and reports what is wrong with the
//! exact error it always gave. So the scanner never decides an error and never accepts what
//! the general parse would not; the properties in the tests hold it to giving the same
//! attributes wherever it accepts.
//!
//! Hand-written rather than another JSON crate: the result must be slices of the original
//! text, identical (number text included) to what serde_json's `arbitrary_precision` raw
//! values give, in one pass and without building a value tree; the crates that are fast at
//! JSON either build their own tree or need a mutable copy of the text.

use std::borrow::Cow;

use super::borrowed::{JsonRef, MEMBERS_EXPECTED, sorted_members};
use super::{Wire, is_extension_name};

/// The attributes of `raw` when it has the common shape, `None` when the general parse must
/// read it (which is also how every malformed or invalid event goes).
pub(super) fn scan(raw: &str) -> Option<Wire<'_>> {
    let mut s = Scanner { text: raw, at: 0 };
    let mut wire = Wire::default();
    s.space();
    s.object(|s, key| {
        if let Some(slot) = wire.string_slot(key) {
            if slot.is_some() {
                return None;
            }
            *slot = Some(Cow::Borrowed(s.string()?));
        } else if key == "data" {
            if wire.data.is_some() {
                return None;
            }
            wire.data = Some(s.data()?);
        } else {
            if !is_extension_name(key) || wire.extensions.iter().any(|(k, _)| k == key) {
                return None;
            }
            let value = s.scalar()?;
            wire.extensions.push((Cow::Borrowed(key), value));
        }
        Some(())
    })?;
    s.space();
    (s.at == raw.len()).then_some(wire)
}

/// `0x01` in every byte of a word.
const BYTES_ONE: u64 = u64::from_le_bytes([1; 8]);
/// The high bit of every byte of a word.
const BYTES_HIGH: u64 = u64::from_le_bytes([0x80; 8]);

/// The high bit set in each byte of `word` below `n` (at most 0x80), or in the lowest such
/// byte and possibly some above it: a byte below `n` borrows into its high bit when `n` is
/// subtracted from every byte (and the borrow may run on upward), while `!word` keeps out
/// the bytes whose high bit was set already. So the lowest bit set, if any, is exact.
fn bytes_below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(BYTES_ONE * u64::from(n)) & !word & BYTES_HIGH
}

/// Where the first byte of `word` (little-endian: the first in the text) lies that ends a
/// string or makes the scanner decline it: `"`, `\\`, or a control character. The lowest
/// flag of each mask is exact, and a false flag only ever lies above a true one of its own
/// mask, so the lowest flag of all three is the first such byte.
pub(super) fn first_stop(word: u64) -> Option<usize> {
    let equal = |b: u8| bytes_below(word ^ (BYTES_ONE * u64::from(b)), 1);
    let stops = equal(b'"') | equal(b'\\') | bytes_below(word, 0x20);
    (stops != 0).then(|| stops.trailing_zeros() as usize / 8)
}

/// A cursor over text not yet known to be valid: every step checks what it reads.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.at += 1)
    }

    /// An object at the cursor: `member(self, key)` reads each member's value, the cursor just
    /// after its colon.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.space();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.space();
            let key = self.string()?;
            self.space();
            self.eat(b':')?;
            self.space();
            member(self, key)?;
            self.space();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string at the cursor, without its quotes; declines escapes and control characters.
    /// Eight bytes at a time (the strings of an event are short: a vectorised search cost
    /// more to set up than it saved, and a test per byte was the largest cost of the scan).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut at = start;
        loop {
            match bytes
                .get(at..at + 8)
                .and_then(|w| <[u8; 8]>::try_from(w).ok())
            {
                Some(word) => match first_stop(u64::from_le_bytes(word)) {
                    Some(k) => at += k,
                    None => {
                        at += 8;
                        continue;
                    }
                },
                None => {
                    while bytes
                        .get(at)
                        .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
                    {
                        at += 1;
                    }
                }
            }
            break;
        }
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        self.at = at + 1;
        self.text.get(start..at)
    }

    /// A number at the cursor (JSON's grammar, no exponent); its text.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let digits = |at: &mut usize| {
            let from = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at > from
        };
        let mut at = start;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        match bytes.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => {
                digits(&mut at);
            }
            _ => return None,
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            if !digits(&mut at) {
                return None;
            }
        }
        // An exponent (serde_json rewrites its text), or a digit after a leading zero.
        if matches!(bytes.get(at), Some(b'e' | b'E' | b'0'..=b'9')) {
            return None;
        }
        self.at = at;
        self.text.get(start..at)
    }

    /// `word` at the cursor.
    fn word(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.text.get(self.at..end) == Some(word)).then(|| self.at = end)
    }

    /// A string, number, `true`, `false` or `null` at the cursor.
    fn scalar(&mut self) -> Option<JsonRef<'a>> {
        Some(match self.peek()? {
            b'"' => JsonRef::String(Cow::Borrowed(self.string()?)),
            b't' => {
                self.word("true")?;
                JsonRef::Bool(true)
            }
            b'f' => {
                self.word("false")?;
                JsonRef::Bool(false)
            }
            b'n' => {
                self.word("null")?;
                JsonRef::Null
            }
            _ => JsonRef::Number(Cow::Borrowed(self.number()?)),
        })
    }

    /// `data`: a scalar, or an object whose members are scalars (sorted by key, a repeated
    /// key keeping its last value, as the general parse gives them).
    fn data(&mut self) -> Option<JsonRef<'a>> {
        if self.peek()? != b'{' {
            return self.scalar();
        }
        let mut members = Vec::with_capacity(MEMBERS_EXPECTED);
        self.object(|s, key| {
            members.push((Cow::Borrowed(key), s.scalar()?));
            Some(())
        })?;
        Some(JsonRef::Object(sorted_members(members)))
    }
}
