//! Tests of the session gauge: open counts, peaks, order independence, pruning.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use proptest::prelude::*;

use super::*;
use crate::event::Event;

const T: i64 = 1_000_000;

fn ev(side: Side, id: &str) -> SessionEvent {
    SessionEvent {
        side,
        session: id.into(),
    }
}

#[test]
fn reads_session_events_only() {
    let parse = |t: &str, data: &str| {
        let raw = format!(
            r#"{{"specversion":"1.0","id":"1","source":"s","type":"{t}","subject":"c","data":{data}}}"#
        );
        SessionEvent::of(&Event::parse(&raw, UnixMs(0)).unwrap())
    };
    assert_eq!(
        parse("session.started", r#"{"session_id":"abc"}"#),
        Some(ev(Side::Started, "abc"))
    );
    assert_eq!(
        parse("session.ended", r#"{"session_id":42}"#),
        Some(ev(Side::Ended, "42"))
    );
    assert_eq!(parse("proxy.request", r#"{"session_id":"abc"}"#), None);
    assert_eq!(parse("session.started", r#"{"session_id":""}"#), None);
    assert_eq!(parse("session.started", r#"{}"#), None);
}

#[test]
fn open_sessions_and_timeouts() {
    let mut b = SessionBook::new(100);
    b.observe("c", &ev(Side::Started, "a"), UnixMs(T));
    b.observe("c", &ev(Side::Started, "b"), UnixMs(T + 10));
    b.observe("c", &ev(Side::Ended, "a"), UnixMs(T + 50));
    b.observe("other", &ev(Side::Started, "a"), UnixMs(T));
    assert_eq!(b.open_at("c", UnixMs(T - 1)), 0);
    assert_eq!(b.open_at("c", UnixMs(T)), 1);
    assert_eq!(b.open_at("c", UnixMs(T + 10)), 2);
    assert_eq!(
        b.open_at("c", UnixMs(T + 50)),
        1,
        "a ended at +50 (half-open)"
    );
    assert_eq!(
        b.open_at("c", UnixMs(T + 109)),
        1,
        "b has no end: open until +110"
    );
    assert_eq!(b.open_at("c", UnixMs(T + 110)), 0);
    assert_eq!(b.open_at("nobody", UnixMs(T)), 0);
    assert_eq!(b.len(), 3);
}

#[test]
fn an_end_before_its_start_waits_for_the_start() {
    let mut b = SessionBook::new(1_000);
    b.observe("c", &ev(Side::Ended, "a"), UnixMs(T + 50));
    assert_eq!(b.open_at("c", UnixMs(T + 10)), 0);
    b.observe("c", &ev(Side::Started, "a"), UnixMs(T));
    assert_eq!(b.open_at("c", UnixMs(T + 10)), 1);
    assert_eq!(b.open_at("c", UnixMs(T + 50)), 0);
}

#[test]
fn peaks_per_window() {
    let mut b = SessionBook::new(10_000);
    // a: [0, 30), b: [10, 20), c: [20, 40), d: [35, 60)
    for (id, s, e) in [("a", 0, 30), ("b", 10, 20), ("c", 20, 40), ("d", 35, 60)] {
        b.observe("c", &ev(Side::Started, id), UnixMs(T + s));
        b.observe("c", &ev(Side::Ended, id), UnixMs(T + e));
    }
    let bounds: Vec<UnixMs> = [0, 10, 20, 30, 40, 50]
        .iter()
        .map(|x| UnixMs(T + x))
        .collect();
    let peaks: Vec<u64> = b.peaks("c", &bounds).iter().map(|w| w.peak).collect();
    // [0,10): a=1; [10,20): a,b=2; [20,30): a,c=2 (b ends at 20); [30,40): c, then c+d at 35=2;
    // [40,50): d=1
    assert_eq!(peaks, vec![1, 2, 2, 2, 1]);
}

#[test]
fn pruning_drops_closed_sessions_only() {
    let mut b = SessionBook::new(100);
    b.observe("c", &ev(Side::Started, "old"), UnixMs(T));
    b.observe("c", &ev(Side::Ended, "old"), UnixMs(T + 5));
    b.observe("c", &ev(Side::Started, "new"), UnixMs(T + 1_000));
    b.observe("gone", &ev(Side::Started, "x"), UnixMs(T));
    b.prune_before(UnixMs(T + 500));
    assert_eq!(b.len(), 1);
    assert_eq!(b.open_at("c", UnixMs(T + 1_000)), 1);
}

/// Brute force: the open count at every instant of a small range.
fn brute_peak(spans: &[(i64, i64)], from: i64, to: i64) -> u64 {
    (from..to)
        .map(|t| spans.iter().filter(|(s, e)| *s <= t && t < *e).count() as u64)
        .max()
        .unwrap_or(0)
}

proptest! {
    /// Any order of the same events gives the same gauge, and peaks equal a brute-force count.
    #[test]
    fn order_independent_and_exact(
        spans in proptest::collection::vec((0i64..200, 0i64..60, any::<bool>()), 1..30),
        seed in any::<u64>(),
    ) {
        let timeout = 50;
        let mut events = Vec::new();
        let mut truth = Vec::new();
        for (i, (start, len, ends)) in spans.iter().enumerate() {
            let id = format!("s{i}");
            events.push((ev(Side::Started, &id), *start));
            let end = if *ends { start + len } else { start + timeout };
            if *ends {
                events.push((ev(Side::Ended, &id), start + len));
            }
            truth.push((*start, end));
        }
        let mut forward = SessionBook::new(timeout);
        for (e, t) in &events {
            forward.observe("c", e, UnixMs(*t));
        }
        let mut shuffled = events.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut backward = SessionBook::new(timeout);
        for (e, t) in &shuffled {
            backward.observe("c", e, UnixMs(*t));
        }
        let bounds: Vec<UnixMs> = (0..=13).map(|k| UnixMs(k * 20)).collect();
        let a = forward.peaks("c", &bounds);
        prop_assert_eq!(&a, &backward.peaks("c", &bounds));
        for w in &a {
            prop_assert_eq!(w.peak, brute_peak(&truth, w.start.0, w.end.0));
        }
        for t in 0..260 {
            let expect = truth.iter().filter(|(s, e)| *s <= t && t < *e).count() as u64;
            prop_assert_eq!(forward.open_at("c", UnixMs(t)), expect);
        }
    }
}
