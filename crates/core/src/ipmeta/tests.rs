//! Tests of `ipmeta`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::attribution::{
    ATTRIBUTION_EXTENSION, Attributed, AttributionSource, AttributionSources, UNATTRIBUTED_SUBJECT,
    attribute_body, attribute_event,
};
use super::*;

fn alloc(id: &str, customer: &str, cidr: &str, from: i64, to: Option<i64>) -> Allocation {
    Allocation {
        id: AllocationId::new(id),
        customer: customer.into(),
        cidr: Cidr::parse(cidr).unwrap(),
        valid_from: UnixMs(from),
        valid_to: to.map(UnixMs),
    }
}

fn ip(text: &str) -> IpAddr {
    parse_ip(text).unwrap()
}

#[test]
fn cidr_parsing_is_strict() {
    assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(Cidr::parse("2001:db8::/32").unwrap().prefix_len(), 32);
    assert_eq!(
        Cidr::parse("192.0.2.7").unwrap().to_string(),
        "192.0.2.7/32"
    );
    assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().prefix_len(), 0);
    for bad in [
        "10.0.0.1/8",
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/x",
        "nope/8",
        "::/129",
        "",
    ] {
        let e = Cidr::parse(bad).unwrap_err();
        assert_eq!(e.code(), "invalid_cidr", "{bad}");
    }
    assert_eq!(parse_ip("300.1.1.1").unwrap_err().code(), "invalid_ip");
    assert_eq!(parse_ip("[2001:db8::1]").unwrap(), ip("2001:db8::1"));
}

#[test]
fn longest_prefix_wins() {
    let t = AllocationTable::build([
        alloc("a", "cus_wide", "10.0.0.0/8", 0, None),
        alloc("b", "cus_narrow", "10.1.0.0/16", 0, None),
        alloc("c", "cus_host", "10.1.2.3/32", 0, None),
        alloc("d", "cus_v6", "2001:db8::/32", 0, None),
    ])
    .unwrap();
    let owner = |a: &str| t.lookup(ip(a), UnixMs(5)).map(|a| a.customer.as_str());
    assert_eq!(owner("10.9.9.9"), Some("cus_wide"));
    assert_eq!(owner("10.1.9.9"), Some("cus_narrow"));
    assert_eq!(owner("10.1.2.3"), Some("cus_host"));
    assert_eq!(owner("10.1.2.4"), Some("cus_narrow"));
    assert_eq!(owner("11.0.0.1"), None);
    assert_eq!(owner("2001:db8:ffff::1"), Some("cus_v6"));
    assert_eq!(owner("2001:db9::1"), None);
    // IPv4-mapped IPv6 is the IPv4 address.
    assert_eq!(owner("::ffff:10.1.2.3"), Some("cus_host"));
}

#[test]
fn validity_is_half_open_and_falls_back_to_shorter_prefixes() {
    let t = AllocationTable::build([
        alloc("wide", "cus_isp", "10.0.0.0/8", 0, None),
        alloc("old", "cus_old", "10.1.0.0/16", 100, Some(200)),
        alloc("new", "cus_new", "10.1.0.0/16", 200, Some(300)),
    ])
    .unwrap();
    let owner = |at: i64| t.lookup(ip("10.1.0.1"), UnixMs(at)).map(|a| a.id.as_str());
    assert_eq!(owner(99), Some("wide"));
    assert_eq!(owner(100), Some("old"));
    assert_eq!(owner(199), Some("old"));
    assert_eq!(owner(200), Some("new"));
    assert_eq!(owner(299), Some("new"));
    assert_eq!(owner(300), Some("wide"));
    assert_eq!(t.lookup(ip("12.0.0.1"), UnixMs(150)), None);
}

#[test]
fn overlapping_allocations_of_one_prefix_are_refused() {
    let mut t = AllocationTable::build([alloc("a", "x", "10.1.0.0/16", 100, Some(200))]).unwrap();
    let e = t
        .insert(alloc("b", "y", "10.1.0.0/16", 150, None))
        .unwrap_err();
    assert_eq!(e.code(), "allocation_overlap");
    let e = t
        .insert(alloc("c", "y", "10.1.0.0/16", 0, Some(101)))
        .unwrap_err();
    assert_eq!(e.code(), "allocation_overlap");
    // Touching intervals do not overlap; nested prefixes may overlap in time.
    t.insert(alloc("d", "y", "10.1.0.0/16", 200, None)).unwrap();
    t.insert(alloc("e", "z", "10.1.2.0/24", 0, None)).unwrap();
    assert_eq!(
        t.insert(alloc("f", "x", "10.0.0.0/8", 5, Some(5)))
            .unwrap_err()
            .code(),
        "invalid_validity"
    );
    assert_eq!(
        t.insert(alloc("g", "", "10.0.0.0/8", 5, None))
            .unwrap_err()
            .code(),
        "invalid_customer"
    );
}

fn sources() -> AttributionSources {
    AttributionSources::build([AttributionSource {
        source: "/edge".into(),
        address_field: "client_ip".into(),
    }])
    .unwrap()
}

#[test]
fn attribution_rewrites_only_configured_events_without_subject() {
    let t = AllocationTable::build([alloc("alc_1", "cus_a", "192.0.2.0/24", 0, None)]).unwrap();
    let s = sources();
    let now = UnixMs(1_000_000);
    let raw = r#"{"specversion":"1.0","id":"1","source":"/edge","type":"t","time":"1970-01-01T00:00:01Z","data":{"client_ip":"192.0.2.9","bytes":12345678901234567890}}"#;
    let Attributed::Rewritten { text, subject } = attribute_event(raw, &s, &t, now) else {
        panic!("not rewritten")
    };
    assert_eq!(subject, "cus_a");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["subject"], "cus_a");
    assert_eq!(v[ATTRIBUTION_EXTENSION], "alc_1 192.0.2.0/24");
    // Numbers keep their exact text.
    assert!(text.contains("12345678901234567890"));

    let with_subject = raw.replace(r#""id":"1","#, r#""id":"1","subject":"cus_z","#);
    assert_eq!(
        attribute_event(&with_subject, &s, &t, now),
        Attributed::Unchanged
    );
    let other_source = raw.replace("/edge", "/other");
    assert_eq!(
        attribute_event(&other_source, &s, &t, now),
        Attributed::Unchanged
    );

    let unowned = raw.replace("192.0.2.9", "198.51.100.1");
    let Attributed::Rewritten { subject, text } = attribute_event(&unowned, &s, &t, now) else {
        panic!()
    };
    assert_eq!(subject, UNATTRIBUTED_SUBJECT);
    assert!(text.contains("no owner of 198.51.100.1"));
    let garbage = raw.replace("192.0.2.9", "not-an-ip");
    let Attributed::Rewritten { subject, .. } = attribute_event(&garbage, &s, &t, now) else {
        panic!()
    };
    assert_eq!(subject, UNATTRIBUTED_SUBJECT);
}

#[test]
fn attribution_uses_the_event_time() {
    let t = AllocationTable::build([
        alloc("alc_old", "cus_old", "192.0.2.0/24", 0, Some(10_000)),
        alloc("alc_new", "cus_new", "192.0.2.0/24", 10_000, None),
    ])
    .unwrap();
    let raw = |time: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"1","source":"/edge","type":"t","time":"{time}","data":{{"client_ip":"192.0.2.1"}}}}"#
        )
    };
    let subject = |r: &str, now: i64| match attribute_event(r, &sources(), &t, UnixMs(now)) {
        Attributed::Rewritten { subject, .. } => subject,
        Attributed::Unchanged => panic!(),
    };
    assert_eq!(subject(&raw("1970-01-01T00:00:09Z"), 50_000), "cus_old");
    assert_eq!(subject(&raw("1970-01-01T00:00:10Z"), 50_000), "cus_new");
    // No time: the receive time decides.
    let no_time = raw("x").replace(r#""time":"x","#, "");
    assert_eq!(subject(&no_time, 5), "cus_old");
}

#[test]
fn attribute_body_keeps_indexes_and_untouched_events() {
    let t = AllocationTable::build([alloc("alc_1", "cus_a", "192.0.2.0/24", 0, None)]).unwrap();
    let text = "{\"source\":\"/edge\",\"data\":{\"client_ip\":\"192.0.2.1\"}}\n{\"source\":\"/x\",\"subject\":\"s\"}\n";
    let spans = crate::event::batch::ndjson_spans(text);
    let (body, out, tally) = attribute_body(text, &spans, &sources(), &t, UnixMs(0)).unwrap();
    assert_eq!(tally.attributed, 1);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].0, spans[1].0);
    assert_eq!(
        &body[out[1].1.clone()],
        "{\"source\":\"/x\",\"subject\":\"s\"}"
    );
    assert!(body[out[0].1.clone()].contains("cus_a"));
    let empty = AttributionSources::default();
    assert!(attribute_body(text, &spans, &empty, &t, UnixMs(0)).is_none());
}

mod flat_view {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use proptest::prelude::*;

    use super::*;

    /// True for the first case of the process: one /24-index check per run, as each builds 64 MiB.
    fn allocs_large_index_once() -> bool {
        static CASES: AtomicUsize = AtomicUsize::new(0);
        CASES.fetch_add(1, Ordering::Relaxed) < 1
    }

    /// Nested and adjacent IPv4 prefixes near each other (so they overlap often), two
    /// intervals each, and the edges of the address space.
    fn arb_allocations() -> impl Strategy<Value = Vec<(u32, u8, i64, Option<i64>)>> {
        prop::collection::vec(
            (
                prop_oneof![0u32..4096, Just(0), Just(u32::MAX)],
                prop_oneof![Just(0u8), 20u8..=32],
                0i64..10,
                prop::option::of(1i64..10),
            ),
            0..40,
        )
    }

    proptest! {
        #[test]
        fn flattened_lookups_equal_trie_lookups(
            allocs in arb_allocations(),
            queries in prop::collection::vec((prop_oneof![0u32..4200, Just(u32::MAX), any::<u32>()], 0i64..12), 1..64),
            v6_bits in prop::collection::vec((any::<u16>(), 0u8..=128), 0..8),
        ) {
            let mut table = AllocationTable::new();
            for (n, (bits, len, from, span)) in allocs.into_iter().enumerate() {
                // Spread the low bits to the top sometimes, so blocks differ.
                let base = if n % 3 == 0 { bits.rotate_right(12) } else { bits };
                let net = base & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                let cidr = Cidr::parse(&format!("{}/{len}", Ipv4Addr::from(net))).unwrap();
                let _ = table.insert(Allocation {
                    id: AllocationId::new(format!("a{n}")),
                    customer: format!("c{n}"),
                    cidr,
                    valid_from: UnixMs(from),
                    valid_to: span.map(|s| UnixMs(from + s)),
                });
            }
            for (n, (hextet, len)) in v6_bits.into_iter().enumerate() {
                let net = (u128::from(hextet) << 112) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                let cidr = Cidr::parse(&format!("{}/{len}", Ipv6Addr::from(net))).unwrap();
                let _ = table.insert(Allocation {
                    id: AllocationId::new(format!("v6_{n}")),
                    customer: format!("c6{n}"),
                    cidr,
                    valid_from: UnixMs(0),
                    valid_to: None,
                });
            }
            let trie_only = table.clone();
            let mut small = table.clone();
            small.freeze_with(BLOCK_BITS_SMALL);
            // The /24 index of large tables, on a small one (one test case of them is enough:
            // each builds 64 MiB).
            let large = allocs_large_index_once().then(|| {
                let mut t = table.clone();
                t.freeze_with(BLOCK_BITS_LARGE);
                t
            });
            for (addr, at) in queries {
                for a in [IpAddr::V4(Ipv4Addr::from(addr)), IpAddr::V6(Ipv6Addr::from(u128::from(addr) << 100))] {
                    let trie = trie_only.lookup(a, UnixMs(at)).map(|x| x.id.clone());
                    let flat = small.lookup(a, UnixMs(at)).map(|x| x.id.clone());
                    prop_assert_eq!(&flat, &trie, "{} at {}", a, at);
                    if let Some(large) = &large {
                        let flat = large.lookup(a, UnixMs(at)).map(|x| x.id.clone());
                        prop_assert_eq!(&flat, &trie, "/24 index: {} at {}", a, at);
                    }
                    prop_assert_eq!(small.lookup_trie(a, UnixMs(at)).map(|x| x.id.clone()), trie);
                }
            }
        }
    }
}

#[test]
fn every_one_of_the_most_sources_is_found() {
    let t = AllocationTable::build([alloc("alc_1", "cus_a", "192.0.2.0/24", 0, None)]).unwrap();
    let s = AttributionSources::build((0..crate::limits::ATTRIBUTION_SOURCES_MAX).map(|i| {
        AttributionSource {
            source: format!("/edge/{i:04}"),
            address_field: format!("ip{i}"),
        }
    }))
    .unwrap();
    let raw = |i: usize| {
        format!(
            r#"{{"specversion":"1.0","id":"1","source":"/edge/{i:04}","type":"t","data":{{"ip{i}":"192.0.2.9"}}}}"#
        )
    };
    for i in [0, 1, 499, crate::limits::ATTRIBUTION_SOURCES_MAX - 1] {
        let Attributed::Rewritten { subject, .. } = attribute_event(&raw(i), &s, &t, UnixMs(0))
        else {
            panic!("source {i} not attributed")
        };
        assert_eq!(subject, "cus_a");
    }
    let unknown = raw(7).replace("/edge/0007", "/edge/x");
    assert_eq!(
        attribute_event(&unknown, &s, &t, UnixMs(0)),
        Attributed::Unchanged
    );
    assert_eq!(
        attribute_event(&raw(3), &AttributionSources::default(), &t, UnixMs(0)),
        Attributed::Unchanged
    );
}

#[test]
fn the_source_is_read_exactly_however_it_is_written() {
    let t = AllocationTable::build([alloc("alc_1", "cus_a", "192.0.2.0/24", 0, None)]).unwrap();
    let s = sources();
    let attributed = |raw: &str| match attribute_event(raw, &s, &t, UnixMs(0)) {
        Attributed::Rewritten { subject, .. } => Some(subject),
        Attributed::Unchanged => None,
    };
    let cases = [
        // Escaped in the text: still the configured `/edge` (the text search missed it).
        (
            r#"{"id":"1","source":"\u002fedge","type":"t","specversion":"1.0","data":{"client_ip":"192.0.2.9"}}"#,
            true,
        ),
        // Spaces around the colon.
        (
            r#"{"id":"1","source" :  "/edge","type":"t","specversion":"1.0","data":{"client_ip":"192.0.2.9"}}"#,
            true,
        ),
        // A nested `source` key before the event's own.
        (
            r#"{"data":{"source":"/other","client_ip":"192.0.2.9"},"id":"1","source":"/edge","type":"t","specversion":"1.0"}"#,
            true,
        ),
        // `source` as a value, and an unconfigured source.
        (
            r#"{"id":"1","type":"source","source":"/other","specversion":"1.0","data":{"client_ip":"192.0.2.9"}}"#,
            false,
        ),
        (
            r#"{"id":"1","source":"/other","type":"t","specversion":"1.0","data":{"client_ip":"192.0.2.9"}}"#,
            false,
        ),
        // The configured source's text elsewhere does not make the event configured.
        (
            r#"{"id":"1","source":"/other","type":"/edge","specversion":"1.0","data":{"client_ip":"192.0.2.9"}}"#,
            false,
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(attributed(raw).is_some(), want, "{raw}");
    }
}
