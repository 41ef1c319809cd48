//! Lookup speed of the allocation table: 1M IPv4 ranges (plus 100k IPv6), lookups at random
//! addresses and instants, on one thread.
//!
//! `cargo run --release -p tollgate-core --example ipmeta_bench [RANGES] [LOOKUPS]`
#![allow(
    clippy::print_stdout,
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::unwrap_used,
    missing_docs
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use tollgate_core::ipmeta::{Allocation, AllocationId, AllocationTable, Cidr};
use tollgate_core::time::UnixMs;

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ranges: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let lookups: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000_000);
    let mut rng = Rng(42);
    let started = Instant::now();
    let mut table = AllocationTable::new();
    let mut v4 = Vec::with_capacity(ranges);
    let mut n = 0usize;
    // Mostly /24s and /22s (customer blocks), some /16 parents and /32 hosts; half of them with
    // a closed interval followed by a new owner, so lookups exercise the validity check.
    while n < ranges {
        let r = rng.next();
        let len = match r % 10 {
            0 => 16,
            1..=2 => 22,
            3 => 32,
            _ => 24,
        } as u8;
        let bits = (r >> 32) as u32;
        let net = if len == 0 {
            0
        } else {
            bits & (u32::MAX << (32 - u32::from(len)))
        };
        let cidr = Cidr::parse(&format!("{}/{len}", Ipv4Addr::from(net))).unwrap();
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
        let cidr = Cidr::parse(&format!("{}/48", Ipv6Addr::from(net))).unwrap();
        let _ = table.insert(Allocation {
            id: AllocationId::new(format!("alc_v6_{i}")),
            customer: format!("cus_{}", i % 50_000),
            cidr,
            valid_from: UnixMs(0),
            valid_to: None,
        });
    }
    let build = started.elapsed();
    // Addresses: 80% inside a loaded range, 20% anywhere; instants spread over both halves.
    let queries: Vec<(IpAddr, UnixMs)> = (0..1_000_000)
        .map(|_| {
            let r = rng.next();
            let addr = if r.is_multiple_of(5) {
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
    let started = Instant::now();
    let mut found = 0usize;
    for i in 0..lookups {
        let (addr, at) = queries[i % queries.len()];
        if black_box(table.lookup(black_box(addr), at)).is_some() {
            found += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ipmeta lookup: {} allocations ({} IPv4 ranges + IPv6 /48s) built in {:.2} s; {} lookups in {:.2} s = {:.2}M lookups/s on one thread ({:.0} ns each); {:.1}% had an owner",
        table.len(),
        ranges,
        build.as_secs_f64(),
        lookups,
        secs,
        lookups as f64 / secs / 1e6,
        secs * 1e9 / lookups as f64,
        100.0 * found as f64 / lookups as f64
    );
}
