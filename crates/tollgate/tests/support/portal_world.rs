//! A small billing world for the portal and export tests: meters, a plan, several customers
//! in different time zones subscribed since the start of last month, traffic last month and
//! this month with hosts named after each customer (so a leak is visible as text), last
//! month's invoices finalized, and a prepaid credit grant for each.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use jiff::{Timestamp, ToSpan};
use serde_json::{Value, json};

use crate::common::*;

/// Flags of every server here: events up to 120 days old are accepted, no scheduler, and a
/// period's draft is finalized one hour after the period ends.
pub const SERVE_FLAGS: &[&str] = &[
    "--acceptance-window",
    "120d",
    "--invoice-every",
    "0s",
    "--invoice-grace",
    "1h",
];

const ZONES: [&str; 6] = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "UTC",
    "Australia/Sydney",
    "America/Los_Angeles",
];

/// One customer of the world.
#[derive(Debug, Clone)]
pub struct Cust {
    pub key: String,
    pub name: String,
    pub tz: &'static str,
    /// The hosts its traffic went to (unique to it).
    pub hosts: Vec<String>,
    /// Its invoices' ids.
    pub invoices: Vec<String>,
    /// A portal token (valid for an hour).
    pub token: String,
}

pub fn call(server: &Server, method: &str, path: &str, body: Option<&Value>) -> Reply {
    server.request(
        method,
        path,
        Some(ADMIN_KEY),
        body.map(|_| "application/json"),
        body.map(|b| reqwest::blocking::Body::from(b.to_string())),
    )
}

pub fn ok(reply: Reply, status: u16, what: &str) -> Value {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    reply.body
}

/// Local midnight of the first day of last month, in `tz`, as ms.
pub fn last_month_start(tz: &str) -> i64 {
    let this = Timestamp::now().in_tz(tz).unwrap().date().first_of_month();
    this.checked_add((-1).months())
        .unwrap()
        .in_tz(tz)
        .unwrap()
        .timestamp()
        .as_millisecond()
}

/// A signed portal link for `key`; returns the token.
pub fn portal_token(server: &Server, key: &str, seconds: i64) -> String {
    let body = ok(
        call(
            server,
            "POST",
            &format!("/v1/customers/{key}/portal_sessions"),
            Some(&json!({"expires_in_seconds": seconds})),
        ),
        201,
        "portal session",
    );
    let url = body["url"].as_str().unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(url.ends_with(&format!("/portal/{token}")), "{body}");
    assert_eq!(body["customer"].as_str(), Some(key), "{body}");
    token
}

/// Builds the world on a running server: `n` customers.
pub fn build(server: &Server, n: usize) -> Vec<Cust> {
    ok(
        server.put_meter(
            "bytes-out",
            &json!({"description": "Bytes out", "aggregation": "sum", "value_path": "$.data.bytes_out",
                    "group_by": {"host": "$.data.dest_host"}}),
        ),
        201,
        "meter bytes-out",
    );
    ok(
        server.put_meter(
            "requests",
            &json!({"description": "Requests", "aggregation": "count",
                    "group_by": {"host": "$.data.dest_host"}}),
        ),
        201,
        "meter requests",
    );
    ok(
        call(
            server,
            "POST",
            "/v1/plans",
            Some(
                &json!({"key": "pro", "name": "Pro", "currency": "USD", "interval": "month",
                "prices": [
                  {"key": "base", "name": "Platform fee", "model": {"type": "flat", "amount": "49.00"}},
                  {"key": "egress", "name": "Data transfer", "meter": "bytes-out", "free_units": "1000000",
                   "model": {"type": "graduated", "tiers": [
                      {"up_to": "1000000000", "unit_price": "0.00000002"},
                      {"up_to": null, "unit_price": "0.00000001"}]}},
                  {"key": "api", "name": "API requests", "meter": "requests",
                   "model": {"type": "package", "package_size": "10", "package_price": "0.05"}}
                ]}),
            ),
        ),
        201,
        "plan",
    );
    let now = now_ms();
    let mut out = Vec::new();
    for i in 0..n {
        let tz = ZONES[i % ZONES.len()];
        let key = format!("cus_{i:02}");
        let name = format!("Customer {i:02} Ltd");
        ok(
            call(
                server,
                "POST",
                "/v1/customers",
                Some(
                    &json!({"key": key, "name": name, "currency": "USD", "time_zone": tz,
                             "tax_rate": "0.19", "email": format!("billing@{key}.example")}),
                ),
            ),
            201,
            "customer",
        );
        let start = last_month_start(tz);
        ok(
            call(
                server,
                "POST",
                "/v1/subscriptions",
                Some(&json!({"customer": key, "plan": "pro", "start": rfc3339(start)})),
            ),
            201,
            "subscription",
        );
        ok(
            call(
                server,
                "POST",
                &format!("/v1/customers/{key}/credit_grants"),
                Some(
                    &json!({"amount_minor": 500 + i as i64, "currency": "USD", "reason": "welcome"}),
                ),
            ),
            201,
            "grant",
        );
        let hosts: Vec<String> = (0..3).map(|h| format!("h{h}-{key}.example")).collect();
        // Events: every 7 hours from the start of last month until now, bytes varying by
        // customer and host.
        let mut events = Vec::new();
        let mut t = start + 3 * MINUTE_MS;
        let mut k = 0_i64;
        while t < now - MINUTE_MS {
            let host = &hosts[(k % 3) as usize];
            events.push(event(
                &format!("{key}-e{k}"),
                &key,
                t,
                json!({"bytes_out": 1_000_000 * (i as i64 + 1) + 7919 * k, "dest_host": host}),
            ));
            t += 7 * HOUR_MS + 13 * MINUTE_MS;
            k += 1;
        }
        let r = server.ingest(&events);
        assert_eq!(r["rejected"].as_u64(), Some(0), "{r}");
        out.push(Cust {
            key,
            name,
            tz,
            hosts,
            invoices: Vec::new(),
            token: String::new(),
        });
    }
    // Every ended period is invoiced: last month (finalized once its hour of grace is over).
    let run = ok(
        call(server, "POST", "/v1/invoices/run", Some(&json!({}))),
        200,
        "invoice run",
    );
    assert_eq!(run["errors"].as_array().map(Vec::len), Some(0), "{run}");
    for c in &mut out {
        // A period that ended less than the grace ago (the hour after a month ends in the
        // customer's zone) is still a draft: finalize it, so the world is the same at any time.
        let drafts = ok(
            server.get(
                &format!("/v1/invoices?customer={}&status=draft", c.key),
                ADMIN_KEY,
            ),
            200,
            "drafts",
        );
        for d in drafts["data"].as_array().unwrap() {
            let ended = Timestamp::from_str(d["period"]["end"].as_str().unwrap())
                .unwrap()
                .as_millisecond()
                <= now_ms();
            if ended {
                let id = d["id"].as_str().unwrap();
                ok(
                    call(server, "POST", &format!("/v1/invoices/{id}/finalize"), None),
                    200,
                    "finalize",
                );
            }
        }
        let list = ok(
            server.get(&format!("/v1/invoices?customer={}", c.key), ADMIN_KEY),
            200,
            "invoices",
        );
        c.invoices = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(!c.invoices.is_empty(), "{} has an invoice: {list}", c.key);
        c.token = portal_token(server, &c.key, 3600);
    }
    out
}

/// The value of every `attr="..."` in an HTML text, in order.
pub fn attrs(html: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}
