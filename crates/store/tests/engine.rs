//! The engine against its invariants: exactly once across restarts, rollups equal a
//! recomputation from raw events, one writer per data directory, corrupt data refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use tollgate_core::event::batch::ndjson_spans;
use tollgate_core::meter::{Meter, MeterSlug, MeterSpec};
use tollgate_core::time::{FixedClock, UnixMs};
use tollgate_core::usage::{UsageQuery, WindowSize};
use tollgate_store::{BatchOutcome, Engine, EngineConfig, Metrics, StoreError};

/// 2026-11-20T00:00:00Z
const NOW: UnixMs = UnixMs(1_795_132_800_000);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-store-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t ^ N
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn open(dir: &TempDir) -> Engine {
    Engine::open(
        &dir.0,
        EngineConfig::default(),
        Arc::new(FixedClock(NOW)),
        Arc::new(Metrics::new()),
    )
    .unwrap()
}

fn event(id: u32, subject: &str, minutes_ago: i64, bytes: u64) -> String {
    let time = UnixMs(NOW.0 - minutes_ago * 60_000).to_rfc3339();
    format!(
        r#"{{"specversion":"1.0","id":"e{id}","source":"/test","type":"proxy.request","subject":"{subject}","time":"{time}","data":{{"bytes":{bytes},"session_id":"s{}"}}}}"#,
        id % 7
    )
}

/// `n` events, ids `0..n`, over `subjects` subjects and the last 900 minutes, event `id`
/// carrying `id` bytes.
fn spread_events(n: u32, subjects: u32) -> Vec<String> {
    (0..n)
        .map(|id| {
            event(
                id,
                &format!("c{}", id % subjects),
                i64::from(id % 900),
                u64::from(id),
            )
        })
        .collect()
}

fn ingest(engine: &Engine, lines: &[String]) -> BatchOutcome {
    let body = lines.join("\n");
    let spans = ndjson_spans(&body);
    engine.ingest_blocking(engine.prepare(body, spans)).unwrap()
}

fn sum_meter(slug: &str) -> Meter {
    let spec: MeterSpec =
        serde_json::from_str(r#"{"aggregation":"sum","value_path":"$.data.bytes"}"#).unwrap();
    Meter::new(MeterSlug::parse(slug).unwrap(), spec).unwrap()
}

fn unique_meter(slug: &str) -> Meter {
    let spec: MeterSpec =
        serde_json::from_str(r#"{"aggregation":"unique_count","value_path":"$.data.session_id"}"#)
            .unwrap();
    Meter::new(MeterSlug::parse(slug).unwrap(), spec).unwrap()
}

fn usage(engine: &Engine, slug: &str, window: Option<WindowSize>) -> Vec<(String, i64, String)> {
    let q = UsageQuery {
        subject: None,
        from: UnixMs(NOW.0 - 30 * 86_400_000),
        to: UnixMs(NOW.0 + 60_000),
        window,
        time_zone: jiff::tz::TimeZone::UTC,
        group_by: vec![],
    };
    engine
        .usage(&MeterSlug::parse(slug).unwrap(), &q)
        .unwrap()
        .into_iter()
        .map(|r| (r.subject, r.window_start.0, r.value.to_string()))
        .collect()
}

#[test]
fn exactly_once_across_restart() {
    let dir = TempDir::new("restart");
    let lines: Vec<String> = (0..100)
        .map(|i| event(i, &format!("c{}", i % 3), i64::from(i), 1 << 40))
        .collect();
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    let first = ingest(&engine, &lines);
    assert_eq!((first.accepted, first.duplicates), (100, 0));
    let before = usage(&engine, "bytes", Some(WindowSize::Hour));
    let again = ingest(&engine, &lines);
    assert_eq!((again.accepted, again.duplicates), (0, 100));
    assert_eq!(usage(&engine, "bytes", Some(WindowSize::Hour)), before);
    engine.close();

    let engine = open(&dir);
    assert_eq!(
        usage(&engine, "bytes", Some(WindowSize::Hour)),
        before,
        "rebuilt from raw events"
    );
    let after_restart = ingest(&engine, &lines);
    assert_eq!((after_restart.accepted, after_restart.duplicates), (0, 100));
    let mut changed = lines[5].clone();
    changed = changed.replace("\"bytes\":1099511627776", "\"bytes\":1");
    let conflict = ingest(&engine, &[changed]);
    assert_eq!(conflict.conflicts, 1);
    assert_eq!(conflict.errors[0].code, "conflict");
    assert_eq!(
        usage(&engine, "bytes", Some(WindowSize::Hour)),
        before,
        "the first stays"
    );
    // Totals above 2^53 stay exact.
    let total: u128 = usage(&engine, "bytes", None)
        .iter()
        .map(|r| r.2.parse::<u128>().unwrap())
        .sum();
    assert_eq!(total, 100 * (1u128 << 40));
}

#[test]
fn a_meter_defined_later_equals_one_defined_before() {
    let dir = TempDir::new("backfill");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("early")).unwrap();
    engine
        .put_meter_blocking(unique_meter("early-sessions"))
        .unwrap();
    let lines: Vec<String> = (0..300)
        .map(|i| event(i, &format!("c{}", i % 5), i64::from(i) * 7, u64::from(i)))
        .collect();
    ingest(&engine, &lines[..150]);
    engine.put_meter_blocking(sum_meter("late")).unwrap();
    engine
        .put_meter_blocking(unique_meter("late-sessions"))
        .unwrap();
    ingest(&engine, &lines[150..]);
    for w in [None, Some(WindowSize::Minute), Some(WindowSize::Day)] {
        assert_eq!(usage(&engine, "early", w), usage(&engine, "late", w));
        assert_eq!(
            usage(&engine, "early-sessions", w),
            usage(&engine, "late-sessions", w)
        );
    }
    assert!(
        engine
            .delete_meter_blocking(MeterSlug::parse("late").unwrap())
            .unwrap()
    );
    assert!(
        !engine
            .delete_meter_blocking(MeterSlug::parse("late").unwrap())
            .unwrap()
    );
}

#[test]
fn one_writer_per_data_dir() {
    let dir = TempDir::new("lock");
    let engine = open(&dir);
    let second = Engine::open(
        &dir.0,
        EngineConfig::default(),
        Arc::new(FixedClock(NOW)),
        Arc::new(Metrics::new()),
    );
    assert!(matches!(second, Err(StoreError::Locked { .. })));
    engine.close();
    let third = Engine::open(
        &dir.0,
        EngineConfig::default(),
        Arc::new(FixedClock(NOW)),
        Arc::new(Metrics::new()),
    );
    assert!(third.is_ok(), "the lock is released on close");
}

#[test]
fn a_damaged_frame_is_refused_at_open() {
    let dir = TempDir::new("corrupt");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    ingest(&engine, &[event(1, "c", 1, 5)]);
    engine.close();
    let conn = rusqlite::Connection::open(dir.0.join(tollgate_store::DB_FILE)).unwrap();
    conn.execute("UPDATE event_frames SET events = x'0500000001'", [])
        .unwrap();
    drop(conn);
    let reopened = Engine::open(
        &dir.0,
        EngineConfig::default(),
        Arc::new(FixedClock(NOW)),
        Arc::new(Metrics::new()),
    );
    match reopened {
        Err(e) => assert_eq!(e.code(), "storage_corrupt", "{e}"),
        Ok(_) => panic!("a damaged frame must not open silently"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any split of a stream into batches, with any batch re-sent, gives the usage of the
    /// distinct events, and the same after a restart.
    #[test]
    fn splits_and_resends_change_nothing(
        events in prop::collection::vec((0u32..60, 0usize..4, 0i64..5000, 0u64..1_000_000), 1..120),
        cuts in prop::collection::vec(1usize..20, 1..10),
        resend in prop::collection::vec(any::<bool>(), 10),
    ) {
        let dir = TempDir::new("prop");
        let engine = open(&dir);
        engine.put_meter_blocking(sum_meter("bytes")).unwrap();
        // The first occurrence of an id wins; later ones with other payloads are conflicts.
        let mut seen = std::collections::HashMap::new();
        let lines: Vec<String> = events
            .iter()
            .map(|(id, c, m, b)| {
                seen.entry(*id).or_insert((*c, *m, *b));
                event(*id, &format!("c{c}"), *m, *b)
            })
            .collect();
        let mut expected = std::collections::BTreeMap::<String, u128>::new();
        for (c, _, b) in seen.values() {
            *expected.entry(format!("c{c}")).or_default() += u128::from(*b);
        }
        let mut at = 0usize;
        let mut k = 0usize;
        while at < lines.len() {
            let n = cuts[k % cuts.len()].min(lines.len() - at);
            ingest(&engine, &lines[at..at + n]);
            if resend[k % resend.len()] {
                let o = ingest(&engine, &lines[at..at + n]);
                prop_assert_eq!(o.accepted, 0);
            }
            at += n;
            k += 1;
        }
        let got: std::collections::BTreeMap<String, u128> = usage(&engine, "bytes", None)
            .into_iter()
            .map(|(s, _, v)| (s, v.parse().unwrap()))
            .collect();
        prop_assert_eq!(&got, &expected);
        engine.close();
        let engine = open(&dir);
        let again: std::collections::BTreeMap<String, u128> = usage(&engine, "bytes", None)
            .into_iter()
            .map(|(s, _, v)| (s, v.parse().unwrap()))
            .collect();
        prop_assert_eq!(again, got);
    }
}

/// An answer for every subject is the shards' answers merged in subject order, and equals the
/// per-subject answers put together.
#[test]
fn all_subject_answers_are_ordered_and_equal_per_subject_answers() {
    let dir = TempDir::new("shards");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    let lines: Vec<String> = (0..600)
        .map(|i| {
            event(
                i,
                &format!("cust-{:03}", (i * 37) % 97),
                i64::from(i % 300),
                u64::from(i),
            )
        })
        .collect();
    ingest(&engine, &lines);
    let all = usage(&engine, "bytes", Some(WindowSize::Hour));
    let subjects: Vec<&String> = all.iter().map(|r| &r.0).collect();
    assert!(
        subjects.windows(2).all(|w| w[0] <= w[1]),
        "ordered by subject"
    );
    let distinct: std::collections::BTreeSet<&String> = subjects.iter().copied().collect();
    assert_eq!(distinct.len(), 97);
    let mut pieced = Vec::new();
    for s in distinct {
        let q = UsageQuery {
            subject: Some(tollgate_core::event::Subject::parse(s).unwrap()),
            from: UnixMs(NOW.0 - 30 * 86_400_000),
            to: UnixMs(NOW.0 + 60_000),
            window: Some(WindowSize::Hour),
            time_zone: jiff::tz::TimeZone::UTC,
            group_by: vec![],
        };
        for r in engine
            .usage(&MeterSlug::parse("bytes").unwrap(), &q)
            .unwrap()
        {
            pieced.push((r.subject, r.window_start.0, r.value.to_string()));
        }
    }
    assert_eq!(all, pieced);
}

/// A subject sent with JSON escapes is counted under its unescaped text, the same customer as
/// the plain spelling; a duplicate's report names its unescaped id.
#[test]
fn escaped_subjects_and_ids_count_as_their_text() {
    let dir = TempDir::new("escaped");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    let plain = event(1, "cust-a", 1, 10);
    let escaped = event(2, "cust-a", 1, 5)
        .replace("\"subject\":\"cust-a\"", "\"subject\":\"cust\\u002da\"")
        .replace("\"id\":\"e2\"", "\"id\":\"e\\u0032\"");
    assert!(escaped.contains("\\u002d") && escaped.contains("\\u0032"));
    let first = ingest(&engine, &[plain, escaped.clone()]);
    assert_eq!(first.accepted, 2);
    let rows = usage(&engine, "bytes", None);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].2.as_str()), ("cust-a", "15"));
    let again = ingest(&engine, &[escaped]);
    assert_eq!(again.duplicates, 1);
    assert_eq!(again.errors[0].id.as_deref(), Some("e2"));
}

/// Each subject's usage of a meter over one window, read as an integer.
fn totals<T: std::str::FromStr>(
    engine: &Engine,
    slug: &str,
) -> std::collections::BTreeMap<String, T>
where
    T::Err: std::fmt::Debug,
{
    usage(engine, slug, None)
        .into_iter()
        .map(|(subject, _, value)| (subject, value.parse().unwrap()))
        .collect()
}

/// Subjects are numbered while batches are prepared: many subjects over many batches, in
/// every rollup shard and with meters added between batches, each count under their own name.
#[test]
fn subjects_numbered_at_prepare_count_under_their_own_names() {
    let dir = TempDir::new("numbers");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    let mut want: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for round in 0..5u32 {
        if round == 2 {
            engine.put_meter_blocking(unique_meter("sessions")).unwrap();
        }
        // Subjects overlap between rounds, and each round brings new ones.
        let lines: Vec<String> = (0..200u32)
            .map(|i| {
                let id = round * 1000 + i;
                let subject = format!("c{}", (i * 7 + round * 31) % (60 + round * 20));
                *want.entry(subject.clone()).or_default() += u64::from(id);
                event(id, &subject, i64::from(i % 50), u64::from(id))
            })
            .collect();
        assert_eq!(ingest(&engine, &lines).accepted, 200);
    }
    let got: std::collections::BTreeMap<String, u64> = totals(&engine, "bytes");
    assert_eq!(got, want);
    engine.close();
    let engine = open(&dir);
    let replayed: std::collections::BTreeMap<String, u64> = totals(&engine, "bytes");
    assert_eq!(replayed, want, "rebuilt from raw events");
}

/// A group large enough to be folded on several threads (every shard of two meters) counts
/// exactly what one thread would.
#[test]
fn a_large_group_counts_exactly_when_folded_on_several_threads() {
    let dir = TempDir::new("parallel-fold");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    engine.put_meter_blocking(unique_meter("sessions")).unwrap();
    let mut bytes: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut sessions: std::collections::BTreeMap<String, std::collections::BTreeSet<u32>> =
        std::collections::BTreeMap::new();
    let lines: Vec<String> = (0..9_000u32)
        .map(|id| {
            let subject = format!("c{}", id % 997);
            *bytes.entry(subject.clone()).or_default() += u64::from(id);
            sessions.entry(subject.clone()).or_default().insert(id % 7);
            event(id, &subject, i64::from(id % 600), u64::from(id))
        })
        .collect();
    assert_eq!(ingest(&engine, &lines).accepted, 9_000);
    let got: std::collections::BTreeMap<String, u64> = totals(&engine, "bytes");
    assert_eq!(got, bytes);
    let got: std::collections::BTreeMap<String, usize> = totals(&engine, "sessions");
    let want: std::collections::BTreeMap<String, usize> = sessions
        .into_iter()
        .map(|(s, set)| (s, set.len()))
        .collect();
    assert_eq!(got, want);
}

/// A group larger than one frame's worth of raw events is stored as several frames, numbered
/// one after another and compressed on several threads, and replays to the same counts.
#[test]
fn a_large_group_is_stored_as_several_frames_and_replays_exactly() {
    let dir = TempDir::new("frames");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    let lines = spread_events(30_000, 101);
    let raw_bytes: usize = lines.iter().map(String::len).sum();
    assert!(
        raw_bytes > 3 << 20,
        "{raw_bytes} bytes make at least four frames"
    );
    assert_eq!(ingest(&engine, &lines).accepted, 30_000);
    let before: std::collections::BTreeMap<String, u64> = totals(&engine, "bytes");
    engine.close();

    let conn = rusqlite::Connection::open(dir.0.join(tollgate_store::DB_FILE)).unwrap();
    let frames: Vec<(i64, i64)> = conn
        .prepare("SELECT first_event_seq, event_count FROM event_frames ORDER BY frame_seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(conn);
    assert!(frames.len() >= 4, "{frames:?}");
    let mut next = 1;
    for (first, count) in &frames {
        assert_eq!(
            *first, next,
            "frames numbered one after another: {frames:?}"
        );
        next += count;
    }
    assert_eq!(next, 30_001);

    let engine = open(&dir);
    let after: std::collections::BTreeMap<String, u64> = totals(&engine, "bytes");
    assert_eq!(after, before);
    let want: u64 = (0..30_000u64).sum();
    assert_eq!(after.values().sum::<u64>(), want);
    let again = ingest(&engine, &lines);
    assert_eq!((again.accepted, again.duplicates), (0, 30_000));
    let log = engine.events_after(29_990, 100).unwrap();
    assert_eq!(log.events.len(), 10);
}

/// The writer's commits are copied from the WAL into the database file in the background,
/// while the engine runs (the writer does not checkpoint inside its commits).
#[test]
fn committed_frames_reach_the_database_file_in_the_background() {
    let dir = TempDir::new("checkpoint");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    let db = dir.0.join(tollgate_store::DB_FILE);
    let before = std::fs::metadata(&db).unwrap().len();
    let lines = spread_events(20_000, 53);
    assert_eq!(ingest(&engine, &lines).accepted, 20_000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = std::fs::metadata(&db).unwrap().len();
        if now > before + (256 << 10) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {now} bytes (from {before})"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    engine.close();
}

/// A batch prepared by one engine and handed to another is read again under the second
/// engine's meters (its subject numbers and readings belong to the first).
#[test]
fn a_batch_prepared_by_another_engine_counts_under_this_engines_meters() {
    let (dir_a, dir_b) = (TempDir::new("engine-a"), TempDir::new("engine-b"));
    let (a, b) = (open(&dir_a), open(&dir_b));
    a.put_meter_blocking(unique_meter("m")).unwrap();
    b.put_meter_blocking(sum_meter("m")).unwrap();
    // Engine b numbers `c9` first, so the two engines give `c1` different numbers.
    assert_eq!(ingest(&b, &[event(1, "c9", 1, 5)]).accepted, 1);
    let body = [event(2, "c1", 1, 7), event(3, "c1", 1, 8)].join("\n");
    let spans = ndjson_spans(&body);
    let prepared = a.prepare(body, spans);
    assert_eq!(b.ingest_blocking(prepared).unwrap().accepted, 2);
    let mut got = usage(&b, "m", None);
    got.sort();
    let values: Vec<(String, String)> = got.into_iter().map(|(s, _, v)| (s, v)).collect();
    assert_eq!(
        values,
        [
            ("c1".to_owned(), "15".to_owned()),
            ("c9".to_owned(), "5".to_owned())
        ]
    );
}

/// A batch prepared before a meter was added is folded into the new meter too: the writer
/// reads such events again instead of using readings made under the old meters.
#[test]
fn a_batch_prepared_before_a_meter_change_counts_in_the_new_meter() {
    let dir = TempDir::new("epoch");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    let body = [event(1, "c1", 1, 7), event(2, "c1", 1, 8)].join("\n");
    let spans = ndjson_spans(&body);
    let prepared = engine.prepare(body, spans);
    engine.put_meter_blocking(unique_meter("sessions")).unwrap();
    let outcome = engine.ingest_blocking(prepared).unwrap();
    assert_eq!(outcome.accepted, 2);
    assert_eq!(usage(&engine, "bytes", None)[0].2, "15");
    assert_eq!(usage(&engine, "sessions", None)[0].2, "2");
}

fn page_size(dir: &TempDir) -> i64 {
    let conn = rusqlite::Connection::open(dir.0.join(tollgate_store::DB_FILE)).unwrap();
    conn.query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap()
}

/// A new data dir's database gets 16 KiB pages; one created with SQLite's default 4 KiB pages
/// keeps them and still stores, counts and replays events.
#[test]
fn new_databases_get_16_kib_pages_and_older_ones_keep_theirs() {
    let fresh = TempDir::new("pages-new");
    drop(open(&fresh));
    assert_eq!(page_size(&fresh), 16_384);

    let older = TempDir::new("pages-old");
    {
        let conn = rusqlite::Connection::open(older.0.join(tollgate_store::DB_FILE)).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE probe (x INTEGER);")
            .unwrap();
    }
    assert_eq!(page_size(&older), 4_096);
    let lines: Vec<String> = (0..200).map(|i| event(i, "cus_a", 5, 10)).collect();
    {
        let engine = open(&older);
        engine.put_meter_blocking(sum_meter("bytes")).unwrap();
        assert_eq!(ingest(&engine, &lines).accepted, 200);
        engine.close();
    }
    assert_eq!(page_size(&older), 4_096);
    let engine = open(&older);
    assert_eq!(ingest(&engine, &lines).duplicates, 200);
    let total: i64 = usage(&engine, "bytes", None)
        .iter()
        .map(|(_, _, v)| v.parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 2_000);
}

/// Batches folded in one group keep their readings apart: a batch prepared before a meter was
/// added (read again) between two current ones, each with a repeated event, over 40 subjects
/// so that every rollup shard gets events of several batches.
#[test]
fn a_group_of_current_and_stale_batches_counts_each_event_once() {
    let dir = TempDir::new("mixed-group");
    let engine = open(&dir);
    engine.put_meter_blocking(sum_meter("bytes")).unwrap();
    let subject = |i: u32| format!("c{}", i % 40);
    let lines = |ids: std::ops::Range<u32>, again: u32| {
        let mut lines: Vec<String> = ids
            .map(|i| event(i, &subject(i), 1, u64::from(i)))
            .collect();
        lines.push(event(again, &subject(again), 1, u64::from(again)));
        lines.join("\n")
    };
    let prepare = |body: String| {
        let spans = ndjson_spans(&body);
        engine.prepare(body, spans)
    };
    // Prepared under the old meters, submitted between two batches prepared under the new.
    let stale = prepare(lines(300..600, 5));
    engine.put_meter_blocking(unique_meter("sessions")).unwrap();
    let first = prepare(lines(0..300, 10));
    let last = prepare(lines(600..900, 650));
    let pending = [
        engine.submit(first).unwrap(),
        engine.submit(stale).unwrap(),
        engine.submit(last).unwrap(),
    ];
    let accepted: usize = pending
        .into_iter()
        .map(|p| p.blocking_outcome().unwrap().0.accepted)
        .sum();
    assert_eq!(accepted, 900);

    let mut bytes = std::collections::BTreeMap::<String, i64>::new();
    let mut sessions = std::collections::BTreeMap::<String, std::collections::BTreeSet<u32>>::new();
    for i in 0..900u32 {
        *bytes.entry(subject(i)).or_default() += i64::from(i);
        sessions.entry(subject(i)).or_default().insert(i % 7);
    }
    let got: Vec<(String, i64)> = usage(&engine, "bytes", None)
        .into_iter()
        .map(|(s, _, v)| (s, v.parse().unwrap()))
        .collect();
    assert_eq!(got, bytes.into_iter().collect::<Vec<_>>());
    let got: Vec<(String, i64)> = usage(&engine, "sessions", None)
        .into_iter()
        .map(|(s, _, v)| (s, v.parse().unwrap()))
        .collect();
    let want: Vec<(String, i64)> = sessions
        .into_iter()
        .map(|(s, set)| (s, set.len() as i64))
        .collect();
    assert_eq!(got, want);
}
