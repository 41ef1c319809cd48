//! Tests for identity, fingerprint and the dedup index: the verdict table, forgetting, pruning,
//! and the property that re-sending any batch changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::event::Event;

const RECEIVED: UnixMs = UnixMs(1_780_000_000_000);

fn event(raw: &str) -> Event {
    Event::parse(raw, RECEIVED).unwrap()
}

fn event_with(source: &str, id: &str, data: &str) -> Event {
    let raw = format!(
        r#"{{"specversion":"1.0","id":{},"source":{},"type":"t","subject":"c","data":{data}}}"#,
        serde_json::to_string(id).unwrap(),
        serde_json::to_string(source).unwrap(),
    );
    event(&raw)
}

#[test]
fn identity_is_unambiguous_across_the_source_id_boundary() {
    assert_ne!(identity_of("ab", "c"), identity_of("a", "bc"));
    assert_ne!(identity_of("", "abc"), identity_of("abc", ""));
    assert_ne!(identity_of("a", "b"), identity_of("b", "a"));
    assert_eq!(identity_of("ab", "c"), identity_of("ab", "c"));
}

/// The identity is XXH3-128 of the length-prefixed pair whatever the lengths: short pairs are
/// hashed from a stack buffer, long ones from the heap, and stored identities must not change.
#[test]
fn identity_is_the_hash_of_the_length_prefixed_pair_at_every_length() {
    for (source_len, id_len) in [(0, 0), (14, 36), (60, 60), (119, 1), (120, 0), (300, 200)] {
        let source = "s".repeat(source_len);
        let id = "i".repeat(id_len);
        let mut bytes = (source_len as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(source.as_bytes());
        bytes.extend_from_slice(id.as_bytes());
        assert_eq!(
            identity_of(&source, &id),
            IdentityKey(xxhash_rust::xxh3::xxh3_128(&bytes)),
            "{source_len} + {id_len}"
        );
    }
    // A value pinned from before the buffer changed: stored frames keep their identities.
    assert_eq!(
        identity_of("/proxy/edge-09", "57e1faba-6510-7204-d800-5cdd08a0d146").0,
        226_281_952_962_764_495_603_906_624_508_305_018_347
    );
}

#[test]
fn identity_of_event_is_source_and_id_only() {
    let a = event_with("s", "1", "{\"v\":1}");
    let b = event_with("s", "1", "{\"v\":2}");
    let c = event_with("s", "2", "{\"v\":1}");
    let d = event_with("t", "1", "{\"v\":1}");
    assert_eq!(identity(&a), identity(&b));
    assert_eq!(identity(&a), identity_of("s", "1"));
    assert_ne!(identity(&a), identity(&c));
    assert_ne!(identity(&a), identity(&d));
}

#[test]
fn fingerprint_ignores_object_key_order_at_every_depth() {
    let a = event_with(
        "s",
        "1",
        r#"{"a":1,"b":{"x":[1,{"p":true,"q":null}],"y":"z"}}"#,
    );
    let b = event_with(
        "s",
        "1",
        r#"{"b":{"y":"z","x":[1,{"q":null,"p":true}]},"a":1}"#,
    );
    assert_eq!(fingerprint(&a), fingerprint(&b));
}

#[test]
fn fingerprint_ignores_attribute_order_and_identity() {
    let a = event(
        r#"{"specversion":"1.0","id":"1","source":"s","type":"t","subject":"c","x":1,"y":2}"#,
    );
    let b = event(
        r#"{"y":2,"x":1,"subject":"c","type":"t","source":"other","id":"2","specversion":"1.0"}"#,
    );
    assert_eq!(fingerprint(&a), fingerprint(&b));
}

#[test]
fn fingerprint_sees_every_payload_change() {
    let base = r#"{"specversion":"1.0","id":"1","source":"s","type":"t","subject":"c",
        "time":"2026-05-01T00:00:00Z","datacontenttype":"application/json",
        "data":{"v":1,"list":[1,2],"s":"a"},"ext":"e"}"#;
    let fp = fingerprint(&event(base));
    let changes = [
        (r#""type":"t""#, r#""type":"u""#),
        (r#""subject":"c""#, r#""subject":"d""#),
        (
            r#""time":"2026-05-01T00:00:00Z""#,
            r#""time":"2026-05-01T00:00:01Z""#,
        ),
        // The same instant written differently is a different payload: time is hashed as sent.
        (
            r#""time":"2026-05-01T00:00:00Z""#,
            r#""time":"2026-05-01T02:00:00+02:00""#,
        ),
        (
            r#""datacontenttype":"application/json""#,
            r#""datacontenttype":"text/json""#,
        ),
        (r#""ext":"e""#, r#""ext":"f""#),
        (r#""ext":"e""#, r#""ext2":"e""#),
        (r#""v":1"#, r#""v":2"#),
        (r#""v":1"#, r#""v":"1""#),
        (r#""v":1"#, r#""v":1.0"#),
        (r#""v":1"#, r#""v":true"#),
        (r#""v":1"#, r#""v":null"#),
        (r#""v":1"#, r#""w":1"#),
        (r#""list":[1,2]"#, r#""list":[2,1]"#),
        (r#""list":[1,2]"#, r#""list":[1,2,3]"#),
        (r#""list":[1,2]"#, r#""list":[[1,2]]"#),
        (r#""s":"a""#, r#""s":"a ""#),
    ];
    for (from, to) in changes {
        let changed = base.replacen(from, to, 1);
        assert_ne!(changed, base);
        assert_ne!(fingerprint(&event(&changed)), fp, "{from} -> {to}");
    }
    // Leaving out an optional attribute changes it too.
    for optional in [
        r#""time":"2026-05-01T00:00:00Z","#,
        r#","ext":"e""#,
        r#""data":{"v":1,"list":[1,2],"s":"a"},"#,
    ] {
        let without = base.replacen(optional, "", 1);
        assert_ne!(without, base);
        assert_ne!(fingerprint(&event(&without)), fp, "without {optional}");
    }
}

#[test]
fn fingerprint_has_48_bits() {
    for i in 0..64 {
        let fp = fingerprint(&event_with("s", "1", &i.to_string()));
        assert_eq!(fp.0 >> 48, 0);
    }
}

#[test]
fn offer_accepts_then_duplicate_then_conflict_and_the_first_stays() {
    let mut index = Index::new();
    assert!(index.is_empty());
    let key = identity_of("s", "1");
    let t = UnixMs(1_780_000_000_000);
    assert_eq!(index.offer(key, Fingerprint(7), t), Verdict::Accepted);
    assert_eq!(index.len(), 1);
    assert_eq!(index.offer(key, Fingerprint(7), t), Verdict::Duplicate);
    assert_eq!(index.offer(key, Fingerprint(8), t), Verdict::Conflict);
    // The conflicting payload did not replace the first one.
    assert_eq!(index.offer(key, Fingerprint(7), t), Verdict::Duplicate);
    assert_eq!(index.offer(key, Fingerprint(8), t), Verdict::Conflict);
    // The time of a re-send does not matter, only identity and payload.
    assert_eq!(
        index.offer(key, Fingerprint(7), UnixMs(t.0 + 86_400_000)),
        Verdict::Duplicate
    );
    assert_eq!(index.len(), 1);
    let other = identity_of("s", "2");
    assert_eq!(index.offer(other, Fingerprint(8), t), Verdict::Accepted);
    assert_eq!(index.len(), 2);
}

#[test]
fn offer_compares_only_the_48_fingerprint_bits() {
    let mut index = Index::new();
    let key = identity_of("s", "1");
    assert_eq!(
        index.offer(key, Fingerprint(5), UnixMs(0)),
        Verdict::Accepted
    );
    assert_eq!(
        index.offer(key, Fingerprint(5 | (1 << 60)), UnixMs(0)),
        Verdict::Duplicate
    );
}

#[test]
fn offer_with_real_events() {
    let mut index = Index::new();
    let first = event_with("s", "1", r#"{"a":1,"b":2}"#);
    let resent = event_with("s", "1", r#"{"b":2,"a":1}"#);
    let changed = event_with("s", "1", r#"{"a":1,"b":3}"#);
    let offer = |index: &mut Index, e: &Event| index.offer(identity(e), fingerprint(e), e.time);
    assert_eq!(offer(&mut index, &first), Verdict::Accepted);
    assert_eq!(offer(&mut index, &resent), Verdict::Duplicate);
    assert_eq!(offer(&mut index, &changed), Verdict::Conflict);
    assert_eq!(offer(&mut index, &first), Verdict::Duplicate);
}

#[test]
fn verdicts_are_ordered_by_how_much_they_change_and_have_codes() {
    assert!(Verdict::Accepted < Verdict::Duplicate);
    assert!(Verdict::Duplicate < Verdict::Conflict);
    assert_eq!(Verdict::Accepted.code(), "accepted");
    assert_eq!(Verdict::Duplicate.code(), "duplicate");
    assert_eq!(Verdict::Conflict.code(), "conflict");
}

#[test]
fn forget_undoes_an_offer() {
    let mut index = Index::new();
    let a = identity_of("s", "a");
    let b = identity_of("s", "b");
    assert_eq!(index.offer(a, Fingerprint(1), UnixMs(0)), Verdict::Accepted);
    assert_eq!(index.offer(b, Fingerprint(1), UnixMs(0)), Verdict::Accepted);
    index.forget(a);
    assert_eq!(index.len(), 1);
    // Forgotten: a different payload is now accepted, not a conflict.
    assert_eq!(index.offer(a, Fingerprint(2), UnixMs(0)), Verdict::Accepted);
    assert_eq!(
        index.offer(b, Fingerprint(1), UnixMs(0)),
        Verdict::Duplicate
    );
    // Forgetting an unknown identity changes nothing.
    index.forget(identity_of("s", "zzz"));
    assert_eq!(index.len(), 2);
}

#[test]
fn insert_remembers_and_overwrites() {
    let mut index = Index::new();
    let key = identity_of("s", "1");
    index.insert(key, Fingerprint(3), UnixMs(0));
    assert_eq!(
        index.offer(key, Fingerprint(3), UnixMs(0)),
        Verdict::Duplicate
    );
    index.insert(key, Fingerprint(4), UnixMs(0));
    assert_eq!(
        index.offer(key, Fingerprint(4), UnixMs(0)),
        Verdict::Duplicate
    );
    assert_eq!(
        index.offer(key, Fingerprint(3), UnixMs(0)),
        Verdict::Conflict
    );
    assert_eq!(index.len(), 1);
}

#[test]
fn prune_before_drops_whole_days_before_the_cutoff() {
    let day = |d: i64| UnixMs(d * DAY_MS);
    let mut index = Index::new();
    index.reserve(4);
    let keys: Vec<IdentityKey> = (0..4).map(|i| identity_of("s", &i.to_string())).collect();
    // Days 20000 (start), 20000 (last ms), 20001 (start), 20002 (noon).
    index.insert(keys[0], Fingerprint(0), day(20_000));
    index.insert(keys[1], Fingerprint(0), UnixMs(day(20_001).0 - 1));
    index.insert(keys[2], Fingerprint(0), day(20_001));
    index.insert(keys[3], Fingerprint(0), UnixMs(day(20_002).0 + DAY_MS / 2));

    // A cutoff inside day 20001 keeps that whole day: its early events may still be accepted.
    assert_eq!(index.prune_before(UnixMs(day(20_001).0 + 5)), 2);
    assert_eq!(index.len(), 2);
    assert_eq!(
        index.offer(keys[0], Fingerprint(0), day(20_000)),
        Verdict::Accepted
    );
    index.forget(keys[0]);
    assert_eq!(
        index.offer(keys[2], Fingerprint(0), day(20_001)),
        Verdict::Duplicate
    );

    // Pruning again at the same cutoff drops nothing.
    assert_eq!(index.prune_before(UnixMs(day(20_001).0 + 5)), 0);
    // A cutoff exactly at the start of day 20002 drops day 20001 only.
    assert_eq!(index.prune_before(day(20_002)), 1);
    assert_eq!(
        index.offer(keys[3], Fingerprint(0), day(20_002)),
        Verdict::Duplicate
    );
    assert_eq!(index.len(), 1);
    assert_eq!(index.prune_before(day(20_003)), 1);
    assert!(index.is_empty());
}

#[derive(Clone, Debug)]
struct Sent {
    source: u8,
    id: u8,
    payload: u8,
    day: u8,
}

fn sent() -> impl Strategy<Value = Sent> {
    (0u8..3, 0u8..8, 0u8..3, 0u8..5).prop_map(|(source, id, payload, day)| Sent {
        source,
        id,
        payload,
        day,
    })
}

fn key_of(s: &Sent) -> IdentityKey {
    identity_of(&format!("src-{}", s.source), &format!("{}", s.id))
}

fn fp_of(s: &Sent) -> Fingerprint {
    let e = event_with(
        &format!("src-{}", s.source),
        &s.id.to_string(),
        &format!("{{\"v\":{}}}", s.payload),
    );
    fingerprint(&e)
}

fn time_of(s: &Sent) -> UnixMs {
    UnixMs(20_000 * DAY_MS + i64::from(s.day) * DAY_MS)
}

/// Offers a stream; returns the identities accepted, in order.
fn offer_all(index: &mut Index, stream: &[Sent]) -> Vec<IdentityKey> {
    stream
        .iter()
        .filter(|s| index.offer(key_of(s), fp_of(s), time_of(s)) == Verdict::Accepted)
        .map(key_of)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Re-sending any batch (a slice of what was sent, in any order) accepts nothing new, and
    /// the accepted identities are exactly the distinct identities, each accepted once.
    #[test]
    fn resending_any_batch_changes_nothing(
        stream in prop::collection::vec(sent(), 0..40),
        resend in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let mut once = Index::new();
        let accepted_once = offer_all(&mut once, &stream);

        let mut twice = Index::new();
        let mut accepted_twice = offer_all(&mut twice, &stream);
        let batch: Vec<Sent> = if stream.is_empty() {
            Vec::new()
        } else {
            resend.iter().map(|i| stream[i.index(stream.len())].clone()).collect()
        };
        let again = offer_all(&mut twice, &batch);
        prop_assert!(again.is_empty(), "re-sent events were accepted: {:?}", again);
        accepted_twice.extend(offer_all(&mut twice, &stream));

        let set_once: HashSet<IdentityKey> = accepted_once.iter().copied().collect();
        let set_twice: HashSet<IdentityKey> = accepted_twice.iter().copied().collect();
        prop_assert_eq!(&set_once, &set_twice);
        let distinct: HashSet<IdentityKey> = stream.iter().map(key_of).collect();
        prop_assert_eq!(accepted_once.len(), distinct.len());
        prop_assert_eq!(accepted_twice.len(), distinct.len());
        prop_assert_eq!(&set_once, &distinct);
        prop_assert_eq!(once.len(), distinct.len());
        prop_assert_eq!(twice.len(), distinct.len());
    }

    /// For each identity the first payload offered wins: later offers are Duplicate exactly
    /// when their payload equals the first one's.
    #[test]
    fn first_payload_decides_later_verdicts(stream in prop::collection::vec(sent(), 1..40)) {
        let mut index = Index::new();
        let mut first: std::collections::HashMap<IdentityKey, u8> = std::collections::HashMap::new();
        for s in &stream {
            let verdict = index.offer(key_of(s), fp_of(s), time_of(s));
            let want = match first.get(&key_of(s)) {
                None => {
                    first.insert(key_of(s), s.payload);
                    Verdict::Accepted
                }
                Some(p) if *p == s.payload => Verdict::Duplicate,
                Some(_) => Verdict::Conflict,
            };
            prop_assert_eq!(verdict, want);
        }
    }

    /// Pruning at a day boundary keeps exactly the identities of that day and later.
    #[test]
    fn prune_keeps_exactly_recent_days(stream in prop::collection::vec(sent(), 0..40), cut in 0u8..6) {
        let mut index = Index::new();
        offer_all(&mut index, &stream);
        let cutoff = UnixMs(20_000 * DAY_MS + i64::from(cut) * DAY_MS);
        let mut days: std::collections::HashMap<IdentityKey, u8> = std::collections::HashMap::new();
        for s in &stream {
            days.entry(key_of(s)).or_insert(s.day);
        }
        let dropped = index.prune_before(cutoff);
        let want_dropped = days.values().filter(|d| **d < cut).count();
        prop_assert_eq!(dropped, want_dropped);
        prop_assert_eq!(index.len(), days.len() - want_dropped);
    }
}

proptest! {
    /// Offering a run of events at once gives each the verdict that offering them one by one
    /// gives: repeats inside a look-ahead run, across runs and against earlier identities.
    #[test]
    fn offering_a_run_decides_as_offering_one_by_one(
        earlier in prop::collection::vec((0u8..40, 0u8..3), 0..30),
        run in prop::collection::vec((0u8..40, 0u8..3), 0..100),
    ) {
        let event = |(id, fp): (u8, u8)| {
            (IdentityKey(u128::from(id) << 120 | u128::from(id)), Fingerprint(u64::from(fp)), UnixMs(1_000))
        };
        let mut one = Index::default();
        let mut all = Index::default();
        for e in earlier.iter().copied().map(event) {
            one.insert(e.0, e.1, e.2);
            all.insert(e.0, e.1, e.2);
        }
        let want: Vec<Verdict> = run.iter().copied().map(event).map(|(k, f, t)| one.offer(k, f, t)).collect();
        let mut got = Vec::new();
        all.offer_all(run.iter().copied().map(event), |v| got.push(v));
        prop_assert_eq!(got, want);
        prop_assert_eq!(all.len(), one.len());
    }
}

/// Fingerprints are stored with every event and compared with those of events sent later, so
/// their values must not change from one version to the next: these were computed by the
/// version that first stored them, for payloads that reach every branch of the hash.
#[test]
fn fingerprints_keep_their_stored_values() {
    let cases: [(&str, u64); 6] = [
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","subject":"c","data":{"bytes_out":5120,"session_id":"s-1"}}"#,
            12_505_609_241_330,
        ),
        (
            r#"{"specversion":"1.0","id":"2","source":"s","type":"t","subject":"c","time":"2026-11-05T10:00:00.5Z","datacontenttype":"application/json","data":{"z":[1,2.50,{"b":null,"a":true}],"a":"é\"\\u0041","n":-1e5}}"#,
            92_487_115_964_756,
        ),
        (
            r#"{"specversion":"1.0","id":"3","source":"s","type":"t","subject":"c","data":"just text","ext1":"x","ext2":"y"}"#,
            268_815_793_559_016,
        ),
        (
            r#"{"specversion":"1.0","id":"4","source":"s","type":"t","subject":"c"}"#,
            281_008_869_905_461,
        ),
        (
            r#"{"specversion":"1.0","id":"5","source":"s","type":"t","subject":"c","data":[]}"#,
            202_621_071_250_564,
        ),
        (
            r#"{"specversion":"1.0","id":"6","source":"s","type":"proxy.request","subject":"customer-0042","time":"2026-11-05T10:00:00Z","data":{"bytes_in":312,"bytes_out":98304,"session_id":"3f1c9a7e-5b2d-4e8f-9a6c-1d2e3f4a5b6c","region":"eu-west","status":200,"path":"/a/very/long/path/that/pushes/the/payload/past/two/hundred/and/forty/bytes/of/hashed/input/so/the/long/branch/runs"}}"#,
            194_562_952_132_012,
        ),
    ];
    let mut got = Vec::new();
    for (raw, _) in cases {
        let owned = fingerprint(&event(raw));
        let borrowed = fingerprint(&crate::event::EventRef::parse(raw, RECEIVED).unwrap());
        assert_eq!(owned, borrowed, "{raw}");
        got.push(owned.0);
    }
    let want: Vec<u64> = cases.iter().map(|(_, fp)| *fp).collect();
    assert_eq!(got, want);
}
