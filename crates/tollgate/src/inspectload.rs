//! `tollgate inspectload` and `tollgate inspect-bench`: how fast inspection decisions and IP
//! lookups are.
//!
//! `inspect-bench` runs in process, on one thread, with deterministic synthetic data:
//! - IP lookups: `--ranges` IPv4 ranges (mostly /24 and /22, some /16 parents and /32 hosts,
//!   half of them closed and followed by a new owner, so lookups check validity) plus a tenth
//!   as many IPv6 /48s; lookups at random addresses (80 % inside a loaded range) and instants,
//!   through the flattened view (what the server uses) and, for comparison, the prefix trie;
//! - decisions: `--rules` rules (60 % exact hosts, 30 % suffixes, 10 % categories of 20 × 500
//!   hosts; about 1 % each with a path prefix, a country, an ASN) and hosts of which a third
//!   hit an exact rule, a third a suffix, a sixth a category, the rest nothing.
//!
//! `--write-rules FILE` writes that rule set as a `POST /v1/inspect/rule_sets` body instead.
//! `inspectload` sends `POST /v1/inspect/decide` for the same hosts to a running server at a
//! fixed rate, open loop (see `checkload`), and prints the latency percentiles.
#![allow(
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "rates and latency percentiles for people, and synthetic data from random bits"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tollgate_core::inspect::{Action, HostMatch, Inspector, Request, Rule, RuleSet};
use tollgate_core::ipmeta::{Allocation, AllocationId, AllocationTable, Cidr};
use tollgate_core::time::UnixMs;

use crate::checkload::{OpenLoop, open_loop_runtime};
/// Most synthetic ranges or rules.
const SYNTHETIC_MAX: usize = 4_000_000;
/// Distinct hosts (and lookup addresses) cycled through.
const SAMPLES: usize = 100_000;

#[derive(Debug, Args)]
pub struct InspectBenchArgs {
    /// IPv4 ranges to load (plus a tenth as many IPv6 /48s); 0 skips the lookups.
    #[arg(long, default_value_t = 1_000_000)]
    pub ranges: usize,
    /// IP lookups to time.
    #[arg(long, default_value_t = 20_000_000)]
    pub lookups: usize,
    /// Rules of the rule set; 0 skips the decisions.
    #[arg(long, default_value_t = 100_000)]
    pub rules: usize,
    /// Decisions to time.
    #[arg(long, default_value_t = 10_000_000)]
    pub decisions: usize,
    /// Write the rule set as a publish body to this file and exit.
    #[arg(long)]
    pub write_rules: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectloadArgs {
    /// Base URL of a running server (with the `inspect-bench --write-rules` set published).
    #[arg(long)]
    pub url: String,
    /// API key with the `ingest` scope.
    #[arg(long)]
    pub key: String,
    /// Decisions per second.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// How long to send.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Rules of the published set (the hosts asked about follow it).
    #[arg(long, default_value_t = 100_000)]
    pub rules: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// SplitMix64: deterministic, no dependency.
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

/// The synthetic rule set of `rules` rules.
fn rule_set(rules_n: usize) -> RuleSet {
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
    RuleSet { rules, categories }
}

/// Hosts asked about: a third exact hits, a third under a suffix, a sixth in a category, the
/// rest misses.
fn hosts(rules_n: usize) -> Vec<String> {
    let mut rng = Rng(11);
    let rules_n = rules_n.max(1);
    (0..SAMPLES)
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
        .collect()
}

/// The synthetic allocation table (flattened) and the IPv4 networks loaded.
fn allocations(ranges: usize) -> anyhow::Result<(AllocationTable, Vec<u32>)> {
    let mut rng = Rng(42);
    let mut table = AllocationTable::new();
    let mut v4 = Vec::with_capacity(ranges);
    let mut n = 0usize;
    let mut attempts = 0usize;
    while n < ranges {
        attempts += 1;
        if attempts > ranges * 4 + 1_000 {
            bail!("could not place {ranges} ranges");
        }
        let r = rng.next();
        let len: u8 = match r % 10 {
            0 => 16,
            1..=2 => 22,
            3 => 32,
            _ => 24,
        };
        let bits = (r >> 32) as u32;
        let net = bits & (u32::MAX << (32 - u32::from(len)));
        let cidr = Cidr::parse(&format!("{}/{len}", Ipv4Addr::from(net)))?;
        let split = r.is_multiple_of(2);
        let a = Allocation {
            id: AllocationId::new(format!("alc_{n}")),
            customer: format!("cus_{}", n % 50_000),
            cidr,
            valid_from: UnixMs(0),
            valid_to: split.then_some(UnixMs(1_000_000)),
        };
        if table.insert(a).is_ok() {
            n += 1;
            v4.push(net);
            if split && n < ranges {
                let b = Allocation {
                    id: AllocationId::new(format!("alc_{n}")),
                    customer: format!("cus_{}", n % 50_000),
                    cidr,
                    valid_from: UnixMs(1_000_000),
                    valid_to: None,
                };
                if table.insert(b).is_ok() {
                    n += 1;
                }
            }
        }
    }
    for i in 0..ranges / 10 {
        let hi = rng.next() & 0xffff_ffff_ffff_0000;
        let net = u128::from(hi) << 64;
        let cidr = Cidr::parse(&format!("{}/48", Ipv6Addr::from(net)))?;
        let _ = table.insert(Allocation {
            id: AllocationId::new(format!("alc_v6_{i}")),
            customer: format!("cus_{}", i % 50_000),
            cidr,
            valid_from: UnixMs(0),
            valid_to: None,
        });
    }
    table.freeze();
    Ok((table, v4))
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub fn bench(args: InspectBenchArgs) -> anyhow::Result<ExitCode> {
    if args.ranges > SYNTHETIC_MAX || args.rules > SYNTHETIC_MAX {
        bail!("--ranges and --rules must be at most {SYNTHETIC_MAX}");
    }
    if let Some(path) = &args.write_rules {
        let set = rule_set(args.rules);
        std::fs::write(path, serde_json::to_vec(&set)?)
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = serde_json::Map::new();
    if args.ranges > 0 && args.lookups > 0 {
        let started = Instant::now();
        let (table, v4) = allocations(args.ranges)?;
        let build = started.elapsed();
        let mut rng = Rng(43);
        let queries: Vec<(IpAddr, UnixMs)> = (0..SAMPLES)
            .map(|_| {
                let r = rng.next();
                let addr = if r.is_multiple_of(5) || v4.is_empty() {
                    (r >> 32) as u32
                } else {
                    v4[(r as usize >> 8) % v4.len()] | ((r >> 40) as u32 & 0xff)
                };
                (
                    IpAddr::V4(Ipv4Addr::from(addr)),
                    UnixMs((r % 2_000_000) as i64),
                )
            })
            .collect();
        let time = |trie: bool| {
            let started = Instant::now();
            let mut found = 0usize;
            for i in 0..args.lookups {
                let (addr, at) = queries[i % queries.len()];
                let hit = if trie {
                    table.lookup_trie(black_box(addr), at)
                } else {
                    table.lookup(black_box(addr), at)
                };
                if black_box(hit).is_some() {
                    found += 1;
                }
            }
            (started.elapsed(), found)
        };
        let (flat, found) = time(false);
        let (trie, _) = time(true);
        out.insert(
            "ip_lookup".into(),
            serde_json::json!({
                "allocations": table.len(),
                "ipv4_ranges": args.ranges,
                "build_seconds": build.as_secs_f64(),
                "lookups": args.lookups,
                "per_second": per_second(args.lookups, flat),
                "ns_each": flat.as_secs_f64() * 1e9 / args.lookups as f64,
                "trie_per_second": per_second(args.lookups, trie),
                "owned_share": found as f64 / args.lookups as f64,
            }),
        );
    }
    if args.rules > 0 && args.decisions > 0 {
        let started = Instant::now();
        let ins = Inspector::compile(rule_set(args.rules)).context("compiling the rule set")?;
        let compile = started.elapsed();
        let hosts = hosts(args.rules);
        let started = Instant::now();
        let mut blocked = 0usize;
        for i in 0..args.decisions {
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
        let took = started.elapsed();
        out.insert(
            "decide".into(),
            serde_json::json!({
                "rules": args.rules,
                "compile_seconds": compile.as_secs_f64(),
                "decisions": args.decisions,
                "per_second": per_second(args.decisions, took),
                "ns_each": took.as_secs_f64() * 1e9 / args.decisions as f64,
                "blocked_share": blocked as f64 / args.decisions as f64,
            }),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: InspectloadArgs) -> anyhow::Result<ExitCode> {
    let runtime = open_loop_runtime(args.connections, args.seconds, args.rate)?;
    let hosts = hosts(args.rules);
    let total = args.rate * args.seconds;
    // Each run records new events: ids unique per run, so re-runs are not duplicates.
    let run_id = std::process::id();
    let load = OpenLoop {
        url: &args.url,
        key: &args.key,
        path: "/v1/inspect/decide",
        rate: args.rate,
        total,
        connections: args.connections,
        marker: b"\"action\":\"allow\"",
    };
    let r = runtime.block_on(load.run(|i| {
        let host = &hosts[(i as usize) % hosts.len()];
        let path = if i % 7 == 0 { "/admin/x" } else { "/" };
        format!(
            r#"{{"customer":"cus_{:06}","client_ip":"192.0.2.{}","dest_host":"{host}","path":"{path}","bytes":{},"request_id":"load-{run_id}-{i}"}}"#,
            i % 10_000,
            i % 250,
            100 + i % 9_000
        )
    }))?
    .report();
    // No 404 is expected from a decision: count one as an error.
    let errors = r.errors + r.not_found;
    // Allowed decisions are not recorded.
    let recorded = r.answered as u64 - r.marked;
    if args.json {
        let out = serde_json::json!({
            "decisions": r.answered,
            "errors": errors,
            "recorded": recorded,
            "seconds": r.seconds,
            "decisions_per_second": r.per_second,
            "target_rate": args.rate,
            "latency_ms": r.latency_ms_json(),
            "release_lag_ms": r.release_lag_ms_json(),
        });
        println!("{out}");
    } else {
        println!(
            "{}; {recorded} flagged or blocked (recorded), {errors} errors",
            r.summary("decisions", args.rate)
        );
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
