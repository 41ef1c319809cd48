//! Decision speed of the inspector: 100k rules (exact hosts, suffixes, categories, a few
//! path, country and ASN rules), decisions for random hosts on one thread.
//!
//! `cargo run --release -p tollgate-core --example inspect_bench [RULES] [DECISIONS]`
#![allow(
    clippy::print_stdout,
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::unwrap_used,
    missing_docs
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use tollgate_core::inspect::{Action, HostMatch, Inspector, Request, Rule, RuleSet};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rules_n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let decisions: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let mut rng = Rng(7);
    let mut categories: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in 0..20 {
        categories.insert(
            format!("cat{c}"),
            (0..500).map(|i| format!("c{c}-{i}.example")).collect(),
        );
    }
    let actions = [Action::Allow, Action::Flag, Action::Block];
    let mut rules = Vec::with_capacity(rules_n);
    for i in 0..rules_n {
        let r = rng.next();
        let host = match r % 10 {
            0..=5 => Some(HostMatch::Exact(format!("h{}.d{}.example", i, i % 5000))),
            6..=8 => Some(HostMatch::Suffix(format!("d{i}.example"))),
            _ => Some(HostMatch::Category(format!("cat{}", i % 20))),
        };
        rules.push(Rule {
            id: format!("r{i}"),
            host,
            path_prefix: r.is_multiple_of(97).then(|| "/admin".to_owned()),
            country: r.is_multiple_of(89).then(|| "DE".to_owned()),
            asn: r.is_multiple_of(83).then_some(64500),
            action: actions[(r >> 8) as usize % 3],
            category: None,
        });
    }
    let started = Instant::now();
    let ins = Inspector::compile(RuleSet { rules, categories }).unwrap();
    let compile = started.elapsed();
    // Hosts: a third exact hits, a third under a suffix, a sixth in a category, the rest misses.
    let hosts: Vec<String> = (0..100_000)
        .map(|_| {
            let r = rng.next();
            let i = (r >> 16) as usize % rules_n;
            match r % 6 {
                0 | 1 => format!("h{}.d{}.example", i, i % 5000),
                2 | 3 => format!("www.api.d{i}.example"),
                4 => format!("cdn.c{}-{}.example", i % 20, i % 500),
                _ => format!("x{i}.unknown.org"),
            }
        })
        .collect();
    let started = Instant::now();
    let mut blocked = 0usize;
    for i in 0..decisions {
        let req = Request {
            dest_host: &hosts[i % hosts.len()],
            path: if i % 7 == 0 { "/admin/x" } else { "/" },
            country: Some("DE"),
            asn: Some(64500),
        };
        if black_box(ins.decide(black_box(&req))).action == Action::Block {
            blocked += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "inspect decide: {} rules compiled in {:.2} s; {} decisions in {:.2} s = {:.2}M decisions/s on one thread ({:.0} ns each); {:.1}% blocked",
        rules_n,
        compile.as_secs_f64(),
        decisions,
        secs,
        decisions as f64 / secs / 1e6,
        secs * 1e9 / decisions as f64,
        100.0 * blocked as f64 / decisions as f64
    );
}
