//! Black-box tests of billing: customers, plans, subscriptions, the invoice run, invoices
//! (lines priced by hand from the events sent, tax, gapless numbers, status changes), late
//! events corrected by adjustment lines, line explanations, the HTML page, prepaid credits,
//! typed errors, currencies with 0 and 3 minor digits, and the `tollgate invoice` commands.
//!
//! The server uses the real clock, so every scenario happens in the past: subscriptions start
//! at local midnight of the first day of the month three months ago, events are dated in the
//! months since (inside a 120-day acceptance window), and `POST /v1/invoices/run` invoices the
//! ended months one at a time. The scheduler is off (`--invoice-every 0s`), so only the test
//! runs the cycle; the grace period is 1 h, so a month that ended is finalized by its run (one
//! test uses 31 days to keep last month a draft).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use jiff::{Timestamp, ToSpan, Zoned};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// Flags of every server here: events up to 120 days old are accepted, no scheduler, and a
/// period's draft is finalized one hour after the period ends.
const SERVE_FLAGS: &[&str] = &[
    "--acceptance-window",
    "120d",
    "--invoice-every",
    "0s",
    "--invoice-grace",
    "1h",
];
const GRACE_MS: i64 = HOUR_MS;
const BERLIN: &str = "Europe/Berlin";
const ACME_NAME: &str = "Acme Widgets GmbH";

// Indices into `Months::starts`.
const M3: usize = 0;
const M2: usize = 1;
const M1: usize = 2;
const M0: usize = 3;
const NEXT: usize = 4;

// ---------------------------------------------------------------------------------------------
// Time

/// Local month starts around now in one time zone: three months ago, two, one, this month and
/// the next (each at local midnight of the first day).
struct Months {
    tz: &'static str,
    starts: Vec<Zoned>,
}

impl Months {
    fn new(tz: &'static str) -> Months {
        let this = Timestamp::now().in_tz(tz).unwrap().date().first_of_month();
        let starts = (-3_i32..=1)
            .map(|k| this.checked_add(k.months()).unwrap().in_tz(tz).unwrap())
            .collect();
        Months { tz, starts }
    }

    /// ms of the start of month `i`.
    fn start(&self, i: usize) -> i64 {
        self.starts[i].timestamp().as_millisecond()
    }

    /// `YYYY-MM` of month `i`, as `POST /v1/invoices/run` takes it.
    fn period(&self, i: usize) -> String {
        let d = self.starts[i].date();
        format!("{:04}-{:02}", d.year(), d.month())
    }

    /// ms of a local wall-clock time in month `i`.
    fn at(&self, i: usize, day: i8, hour: i8, minute: i8) -> i64 {
        let d = self.starts[i].date();
        jiff::civil::date(d.year(), d.month(), day)
            .at(hour, minute, 0, 0)
            .in_tz(self.tz)
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    /// Seconds in month `i` (local time: a month with a DST change is an hour off).
    fn seconds(&self, i: usize) -> i64 {
        (self.start(i + 1) - self.start(i)) / 1000
    }
}

/// ms of an RFC 3339 text in a JSON answer.
fn ms(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a time text: {v}"));
    text.parse::<Timestamp>()
        .unwrap_or_else(|e| panic!("`{text}`: {e}"))
        .as_millisecond()
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn call(
    server: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    server.request(
        method,
        path,
        key,
        body.map(|_| "application/json"),
        body.map(|b| reqwest::blocking::Body::from(b.to_string())),
    )
}

/// POST with the admin key and a JSON body.
fn post(server: &Server, path: &str, body: &Value) -> Reply {
    call(server, "POST", path, Some(ADMIN_KEY), Some(body))
}

/// POST with the admin key and no body (status changes of invoices).
fn post_empty(server: &Server, path: &str) -> Reply {
    call(server, "POST", path, Some(ADMIN_KEY), None)
}

/// The body of an answer that must have `status`.
fn expect(reply: Reply, status: u16, what: &str) -> Value {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    reply.body
}

/// GET with the admin key, expecting 200.
fn get_ok(server: &Server, path: &str) -> Value {
    expect(server.get(path, ADMIN_KEY), 200, path)
}

/// `POST /v1/invoices/run`, expecting 200; the report without its timings.
fn run_invoices(server: &Server, body: &Value) -> Value {
    without_timings(expect(
        post(server, "/v1/invoices/run", body),
        200,
        "invoice run",
    ))
}

/// A run report with its `timings_ms` checked (a number of ms for every stage) and removed, so
/// the counts compare whole.
fn without_timings(mut report: Value) -> Value {
    let timings = report
        .as_object_mut()
        .and_then(|o| o.remove("timings_ms"))
        .unwrap_or_else(|| panic!("a run report has timings_ms: {report}"));
    for stage in ["load", "price", "commit"] {
        assert!(
            timings[stage].as_f64().is_some_and(|ms| ms >= 0.0),
            "timings_ms.{stage}: {timings}"
        );
    }
    report
}

/// What a run reports, as a JSON value to compare whole.
fn report(subscriptions: u32, created: u32, updated: u32, finalized: u32, unchanged: u32) -> Value {
    json!({
        "subscriptions": subscriptions,
        "created": created,
        "updated": updated,
        "finalized": finalized,
        "unchanged": unchanged,
        "credit_notes": 0,
        "errors": [],
    })
}

/// The invoices of a customer, in id order.
fn invoices_of(server: &Server, customer: &str) -> Vec<Value> {
    get_ok(
        server,
        &format!("/v1/invoices?customer={customer}&limit=1000"),
    )["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// The one invoice of `customer` whose period starts at `start_ms`.
fn invoice_for(server: &Server, customer: &str, start_ms: i64) -> Value {
    let found: Vec<Value> = invoices_of(server, customer)
        .into_iter()
        .filter(|i| ms(&i["period"]["start"]) == start_ms)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one invoice of {customer} for the period starting {}: {found:?}",
        rfc3339(start_ms)
    );
    found.into_iter().next().unwrap()
}

fn dec(v: &Value) -> Decimal {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal text: {v}"));
    text.parse()
        .unwrap_or_else(|e| panic!("`{text}` is not a decimal: {e}"))
}

/// (year, sequence) of an invoice number, checking it is `TG-YYYY-NNNNNN`.
fn number_parts(number: &Value) -> (i32, u32) {
    let text = number
        .as_str()
        .unwrap_or_else(|| panic!("no number: {number}"));
    let b = text.as_bytes();
    let ok = b.len() == 14
        && text.starts_with("TG-")
        && b[3..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..].iter().all(u8::is_ascii_digit);
    assert!(ok, "`{text}` does not match ^TG-\\d{{4}}-\\d{{6}}$");
    (text[3..7].parse().unwrap(), text[8..].parse().unwrap())
}

/// Checks one line's identity, quantity and amount.
#[allow(clippy::too_many_arguments)] // One line's fields, named at the call site by position.
fn assert_line(
    line: &Value,
    number: u64,
    kind: &str,
    price: &str,
    meter: Option<&str>,
    quantity: Decimal,
    amount_minor: i64,
    previously_billed_minor: Option<i64>,
) {
    let got = (
        line["number"].as_u64(),
        line["kind"].as_str(),
        line["price"].as_str(),
        line["meter"].as_str(),
        dec(&line["quantity"]),
        line["amount_minor"].as_i64(),
        line["previously_billed_minor"].as_i64(),
    );
    let want = (
        Some(number),
        Some(kind),
        Some(price),
        meter,
        quantity,
        Some(amount_minor),
        previously_billed_minor,
    );
    assert_eq!(got, want, "line {line}");
}

/// Checks the arithmetic every invoice must satisfy and the expected totals.
fn assert_totals(inv: &Value, subtotal: i64, tax: i64, total: i64) {
    let lines = inv["lines"].as_array().unwrap();
    let sum: i64 = lines
        .iter()
        .map(|l| l["amount_minor"].as_i64().unwrap())
        .sum();
    assert_eq!(
        sum,
        inv["subtotal_minor"].as_i64().unwrap(),
        "Σ lines: {inv}"
    );
    assert_eq!(
        (
            inv["subtotal_minor"].as_i64(),
            inv["tax_minor"].as_i64(),
            inv["total_minor"].as_i64()
        ),
        (Some(subtotal), Some(tax), Some(total)),
        "subtotal, tax, total of {inv}"
    );
}

// ---------------------------------------------------------------------------------------------
// The USD scenario: plan `pro`, customer `acme` in Berlin

/// Version 1 of plan `pro`:
/// - `base`: flat 49.00 a month;
/// - `transfer`: graduated on `bytes`, units 1..=1000 at 0.01245, then 0.0005 a unit plus a
///   2.00 fee once the quantity enters the second tier;
/// - `api`: packages of 1000 `requests` at 0.05, a partial package counting as a whole one.
fn pro_plan() -> Value {
    json!({
        "key": "pro",
        "name": "Pro",
        "currency": "USD",
        "interval": "month",
        "prices": [
            {"key": "base", "name": "Platform fee", "model": {"type": "flat", "amount": "49.00"}},
            {"key": "transfer", "name": "Data transfer", "meter": "bytes", "model": {
                "type": "graduated",
                "tiers": [
                    {"up_to": "1000", "unit_price": "0.01245"},
                    {"up_to": null, "unit_price": "0.0005", "flat_fee": "2.00"},
                ],
            }},
            {"key": "api", "name": "API requests", "meter": "requests", "model": {
                "type": "package", "package_size": "1000", "package_price": "0.05",
            }},
        ],
    })
}

/// acme's events in month-3: (id, local day, hour, minute, bytes). Σ bytes = 1000, exactly the
/// first tier's bound. `m3-2` at 00:30 Berlin time is on the previous day in UTC, so the daily
/// windows of an explanation show whether days are the customer's.
const ACME_M3: [(&str, i8, i8, i8, i64); 5] = [
    ("m3-1", 10, 9, 0, 100),
    ("m3-2", 11, 0, 30, 250),
    ("m3-3", 11, 12, 0, 150),
    ("m3-4", 12, 8, 15, 300),
    ("m3-5", 12, 18, 45, 200),
];
/// Another subject's events in the same days: never billed to acme or shown for it.
const GLOBEX_M3: [(&str, i8, i8, i8, i64); 2] = [("g-1", 10, 10, 0, 999), ("g-2", 12, 9, 0, 777)];

// Month-3 priced by hand (USD, cents):
//   base     49.00                                   → 4900
//   transfer 1000 bytes ≤ 1000: 1000 × 0.01245 = 12.45 (tier 2 not entered: no 2.00 fee) → 1245
//   api      5 requests: ceil(5 / 1000) = 1 package × 0.05 = 0.05 → 5
//   subtotal 4900 + 1245 + 5 = 6150
//   tax      61.50 × 0.19 = 11.685 → half to even → 11.68 → 1168 (half up would give 1169)
//   total    6150 + 1168 = 7318
const M3_BASE: i64 = 4900;
const M3_TRANSFER: i64 = 1245;
const M3_API: i64 = 5;
const M3_SUBTOTAL: i64 = M3_BASE + M3_TRANSFER + M3_API;
const M3_TAX: i64 = 1168;
const M3_TOTAL: i64 = M3_SUBTOTAL + M3_TAX;

struct Acme {
    months: Months,
    subscription: String,
}

fn define_meters(server: &Server) {
    let r = server.put_meter(
        "requests",
        &json!({"aggregation": "count", "event_type": "proxy.request"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["slug"].as_str(), r.body["aggregation"].as_str()),
        (Some("requests"), Some("count")),
        "{}",
        r.body
    );
    let r = server.put_meter(
        "bytes",
        &json!({"aggregation": "sum", "value_path": "$.data.bytes"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["slug"].as_str(), r.body["value_path"].as_str()),
        (Some("bytes"), Some("$.data.bytes")),
        "{}",
        r.body
    );
}

/// Meters, plan `pro`, customer `acme` (Berlin, 19 % tax) subscribed since the start of month
/// `since` (`M3` but in one test), and the month-3 events; checks every answer.
fn set_up_acme(server: &Server, since: usize) -> Acme {
    let months = Months::new(BERLIN);
    define_meters(server);

    let plan = expect(post(server, "/v1/plans", &pro_plan()), 201, "create plan");
    assert_eq!(
        (
            plan["key"].as_str(),
            plan["name"].as_str(),
            plan["currency"].as_str(),
            plan["interval"].as_str()
        ),
        (Some("pro"), Some("Pro"), Some("USD"), Some("month")),
        "{plan}"
    );
    let versions = plan["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{plan}");
    assert_eq!(
        (
            versions[0]["plan"].as_str(),
            versions[0]["version"].as_u64()
        ),
        (Some("pro"), Some(1))
    );
    let prices = versions[0]["prices"].as_array().unwrap();
    let keys: Vec<&str> = prices.iter().map(|p| p["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["base", "transfer", "api"]);
    assert_eq!(dec(&prices[0]["model"]["amount"]), Decimal::new(4900, 2));
    assert_eq!(prices[1]["meter"], "bytes");
    assert_eq!(prices[1]["model"]["type"], "graduated");
    assert_eq!(
        dec(&prices[1]["model"]["tiers"][0]["up_to"]),
        Decimal::from(1000)
    );
    assert!(prices[1]["model"]["tiers"][1]["up_to"].is_null(), "{plan}");
    assert_eq!(
        dec(&prices[1]["model"]["tiers"][1]["flat_fee"]),
        Decimal::from(2)
    );
    assert_eq!(prices[2]["model"]["type"], "package");
    assert_eq!(
        dec(&prices[2]["model"]["package_size"]),
        Decimal::from(1000)
    );
    // The plan reads back as created.
    assert_eq!(
        get_ok(server, "/v1/plans/pro")["versions"],
        plan["versions"]
    );

    let customer = expect(
        post(
            server,
            "/v1/customers",
            &json!({
                "key": "acme",
                "name": ACME_NAME,
                "email": "billing@acme.test",
                "currency": "USD",
                "time_zone": BERLIN,
                "tax_rate": "0.19",
            }),
        ),
        201,
        "create customer",
    );
    assert_eq!(
        (
            customer["key"].as_str(),
            customer["name"].as_str(),
            customer["email"].as_str(),
            customer["currency"].as_str(),
            customer["time_zone"].as_str(),
            customer["billing_anchor"].as_str(),
        ),
        (
            Some("acme"),
            Some(ACME_NAME),
            Some("billing@acme.test"),
            Some("USD"),
            Some(BERLIN),
            Some("2000-01-01"),
        ),
        "{customer}"
    );
    assert_eq!(dec(&customer["tax_rate"]), Decimal::new(19, 2));

    let start = months.start(since);
    let sub = expect(
        post(
            server,
            "/v1/subscriptions",
            &json!({"customer": "acme", "plan": "pro", "start": rfc3339(start)}),
        ),
        201,
        "create subscription",
    );
    let id = sub["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sub_"), "{sub}");
    assert_eq!(
        (sub["customer"].as_str(), sub["status"].as_str()),
        (Some("acme"), Some("active")),
        "{sub}"
    );
    let phases = sub["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1, "{sub}");
    assert_eq!(
        (
            phases[0]["plan"].as_str(),
            phases[0]["version"].as_u64(),
            ms(&phases[0]["start"])
        ),
        (Some("pro"), Some(1), start)
    );
    assert!(
        sub["trial_end"].is_null() && sub["ends_at"].is_null(),
        "{sub}"
    );
    // Calendar months in Berlin: the current period is this local month.
    assert_eq!(
        (
            ms(&sub["current_period"]["start"]),
            ms(&sub["current_period"]["end"])
        ),
        (months.start(M0), months.start(NEXT)),
        "{sub}"
    );

    let mut events = Vec::new();
    for &(id, day, h, m, bytes) in &ACME_M3 {
        events.push(event(
            id,
            "acme",
            months.at(M3, day, h, m),
            json!({"bytes": bytes}),
        ));
    }
    for &(id, day, h, m, bytes) in &GLOBEX_M3 {
        events.push(event(
            id,
            "globex",
            months.at(M3, day, h, m),
            json!({"bytes": bytes}),
        ));
    }
    let r = server.ingest(&events);
    assert_counts(&r, 7, 0, 0, 0);
    Acme {
        months,
        subscription: id,
    }
}

/// The checks of acme's month-3 invoice as first finalized.
fn check_m3_invoice(inv: &Value, acme: &Acme) {
    let months = &acme.months;
    assert_eq!(
        (
            inv["status"].as_str(),
            inv["customer"].as_str(),
            inv["subscription"].as_str(),
            inv["currency"].as_str()
        ),
        (
            Some("finalized"),
            Some("acme"),
            Some(acme.subscription.as_str()),
            Some("USD")
        ),
        "{inv}"
    );
    assert!(inv["id"].as_str().unwrap().starts_with("inv_"), "{inv}");
    number_parts(&inv["number"]);
    assert_eq!(
        (ms(&inv["period"]["start"]), ms(&inv["period"]["end"])),
        (months.start(M3), months.start(M2))
    );
    assert_eq!(ms(&inv["grace_until"]), months.start(M2) + GRACE_MS);
    assert!(inv["finalized_at"].is_string(), "{inv}");
    assert!(
        inv["paid_at"].is_null() && inv["voided_at"].is_null(),
        "{inv}"
    );
    assert_eq!(dec(&inv["tax_rate"]), Decimal::new(19, 2));

    let lines = inv["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{inv}");
    let full = format!("{0}/{0}", months.seconds(M3));
    for line in lines {
        assert_eq!(line["plan"], "pro", "{line}");
        assert_eq!(line["plan_version"], 1, "{line}");
        assert_eq!(line["proration"], full.as_str(), "{line}");
        assert_eq!(
            (ms(&line["segment"]["start"]), ms(&line["segment"]["end"])),
            (months.start(M3), months.start(M2)),
            "{line}"
        );
    }
    assert_line(
        &lines[0],
        1,
        "charge",
        "base",
        None,
        Decimal::ZERO,
        M3_BASE,
        None,
    );
    assert_eq!(lines[0]["model"], "flat");
    assert_line(
        &lines[1],
        2,
        "charge",
        "transfer",
        Some("bytes"),
        Decimal::from(1000),
        M3_TRANSFER,
        None,
    );
    assert_eq!(lines[1]["model"], "graduated");
    // The bound is inclusive: 1000 units stay in tier 1, tier 2 (and its fee) is not entered.
    let tiers = lines[1]["tiers"].as_array().unwrap();
    assert_eq!(tiers.len(), 1, "{}", lines[1]);
    assert_eq!(
        (dec(&tiers[0]["units"]), dec(&tiers[0]["amount"])),
        (Decimal::from(1000), Decimal::new(1245, 2))
    );
    assert_eq!(dec(&lines[1]["amount_exact"]), Decimal::new(1245, 2));
    assert_line(
        &lines[2],
        3,
        "charge",
        "api",
        Some("requests"),
        Decimal::from(5),
        M3_API,
        None,
    );
    assert_eq!(lines[2]["model"], "package");
    assert_eq!(dec(&lines[2]["amount_exact"]), Decimal::new(5, 2));

    assert_totals(inv, M3_SUBTOTAL, M3_TAX, M3_TOTAL);
    assert_eq!(
        (
            inv["credits_applied_minor"].as_i64(),
            inv["amount_due_minor"].as_i64()
        ),
        (Some(0), Some(M3_TOTAL)),
        "{inv}"
    );
}

/// The explanation of a line, every page of events at `limit` per page: (the first page's
/// answer, the event ids in order, the number of pages).
fn explain_all(
    server: &Server,
    invoice: &str,
    line: u32,
    limit: usize,
) -> (Value, Vec<String>, usize) {
    let base = format!("/v1/invoices/{invoice}/lines/{line}/explain?limit={limit}");
    let first = get_ok(server, &base);
    let mut page = first.clone();
    let mut ids = Vec::new();
    let mut pages = 1;
    loop {
        let events = page["events"].as_array().unwrap();
        assert!(
            events.len() <= limit,
            "a page holds at most {limit}: {page}"
        );
        for e in events {
            ids.push(e["event"]["id"].as_str().unwrap().to_owned());
        }
        match page["next_after"].as_str() {
            None => break,
            Some(after) => {
                assert_eq!(events.len(), limit, "only the last page is short: {page}");
                // The same line on every page.
                assert_eq!(page["line"], first["line"]);
                page = get_ok(server, &format!("{base}&after={after}"));
                pages += 1;
                assert!(pages <= 100, "paging does not end");
            }
        }
    }
    (first, ids, pages)
}

#[test]
fn invoice_lifecycle_from_usage_to_payment() {
    let dir = TestDir::new("billing-life");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let acme = set_up_acme(&server, M3);
    let months = &acme.months;

    // ---- 2. Month-3: drafted and, its grace long over, finalized in one run.
    let r = run_invoices(&server, &json!({"period": months.period(M3)}));
    assert_eq!(r, report(1, 1, 0, 1, 0));
    let m3 = invoice_for(&server, "acme", months.start(M3));
    let m3_id = m3["id"].as_str().unwrap().to_owned();
    let m3 = get_ok(&server, &format!("/v1/invoices/{m3_id}"));
    check_m3_invoice(&m3, &acme);
    let m3_path = format!("/v1/invoices/{m3_id}");
    let m3_text = server.get_raw(&m3_path, ADMIN_KEY).text;

    // ---- 3. Running the same period again changes nothing, byte for byte.
    let r = run_invoices(&server, &json!({"period": months.period(M3)}));
    assert_eq!(r, report(1, 0, 0, 0, 0));
    assert_eq!(server.get_raw(&m3_path, ADMIN_KEY).text, m3_text);
    assert_eq!(invoices_of(&server, "acme").len(), 1);

    // ---- 5. Explain the transfer line: daily windows in Berlin time, events in pages of 2.
    let (first, ids, pages) = explain_all(&server, &m3_id, 2, 2);
    assert_eq!(first["line"], m3["lines"][1], "the line explained");
    // Local days: the 10th holds m3-1 (100); the 11th m3-2 at 00:30 and m3-3 (250 + 150); the
    // 12th m3-4 and m3-5 (300 + 200). In UTC m3-2 would fall on the 10th.
    let want_windows = [(10, 100), (11, 400), (12, 500)];
    let windows = first["windows"].as_array().unwrap();
    let got: Vec<(i64, i64, Decimal)> = windows
        .iter()
        .map(|w| (ms(&w["start"]), ms(&w["end"]), dec(&w["quantity"])))
        .collect();
    let want: Vec<(i64, i64, Decimal)> = want_windows
        .iter()
        .map(|&(day, q)| {
            (
                months.at(M3, day, 0, 0),
                months.at(M3, day + 1, 0, 0),
                Decimal::from(q),
            )
        })
        .collect();
    assert_eq!(got, want, "daily windows of {first}");
    let window_sum: Decimal = got.iter().map(|w| w.2).sum();
    assert_eq!(window_sum, dec(&m3["lines"][1]["quantity"]));
    // Every acme event of the period exactly once, no globex event; 5 at 2 a page is 3 pages.
    let sent: BTreeSet<String> = ACME_M3.iter().map(|e| e.0.to_owned()).collect();
    assert_eq!(ids.len(), ACME_M3.len(), "{ids:?}");
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), sent);
    assert_eq!(pages, 3);
    // A flat line has no usage behind it.
    let flat = get_ok(&server, &format!("/v1/invoices/{m3_id}/lines/1/explain"));
    assert_eq!(
        (&flat["windows"], &flat["events"], &flat["next_after"]),
        (&json!([]), &json!([]), &Value::Null),
        "{flat}"
    );
    let r = server.get(&format!("/v1/invoices/{m3_id}/lines/99/explain"), ADMIN_KEY);
    assert_error(&r, 404, "invoice_line_not_found");
    for bad in ["0", "1001", "x"] {
        let r = server.get(
            &format!("/v1/invoices/{m3_id}/lines/2/explain?limit={bad}"),
            ADMIN_KEY,
        );
        assert_error(&r, 400, "invalid_limit");
    }
    let r = server.get(
        &format!("/v1/invoices/{m3_id}/lines/2/explain?after=x"),
        ADMIN_KEY,
    );
    assert_error(&r, 400, "invalid_cursor");
    let r = server.get("/v1/invoices/inv_nope/lines/1/explain", ADMIN_KEY);
    assert_error(&r, 404, "invoice_not_found");

    // ---- 6. The printable page.
    let page = server.get_raw(&format!("/v1/invoices/{m3_id}/html"), ADMIN_KEY);
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    let number = m3["number"].as_str().unwrap();
    for needle in [
        number,
        ACME_NAME,
        "73.18 USD",
        "61.50 USD",
        "11.68 USD",
        "49.00 USD",
        "12.45 USD",
    ] {
        assert!(
            page.text.contains(needle),
            "`{needle}` not on the page:\n{}",
            page.text
        );
    }

    // ---- 4. A late event for month-3, then month-2.
    let late = event(
        "m3-late",
        "acme",
        months.at(M3, 20, 10, 0),
        json!({"bytes": 30}),
    );
    assert_counts(&server.ingest(&[late]), 1, 0, 0, 0);
    // Month-2: 1001 requests, of which three carry bytes: 1000 + 1000 + 235 = 2235.
    let mut events = Vec::new();
    for i in 0..1001_i64 {
        let bytes = match i {
            0 | 1 => 1000,
            2 => 235,
            _ => 0,
        };
        let t = months.at(M2, 15, 10, 0) + i * 1000;
        events.push(event(
            &format!("m2-{i}"),
            "acme",
            t,
            json!({"bytes": bytes}),
        ));
    }
    assert_counts(&server.ingest(&events), 1001, 0, 0, 0);
    // The finalized month-3 invoice is never edited, even when its month is run again.
    let r = run_invoices(&server, &json!({"period": months.period(M3)}));
    assert_eq!(r, report(1, 0, 0, 0, 0));
    let r = run_invoices(&server, &json!({"period": months.period(M2)}));
    assert_eq!(r, report(1, 1, 0, 1, 0));
    assert_eq!(
        server.get_raw(&m3_path, ADMIN_KEY).text,
        m3_text,
        "month-3 unchanged"
    );
    let m2 = invoice_for(&server, "acme", months.start(M2));
    let m2_id = m2["id"].as_str().unwrap().to_owned();
    assert_eq!(m2["status"], "finalized", "{m2}");
    // Month-2 priced by hand:
    //   base     4900
    //   transfer 2235 bytes: 1000 × 0.01245 + 1235 × 0.0005 + 2.00 = 12.45 + 0.6175 + 2.00
    //            = 15.0675 → 15.07 → 1507
    //   api      1001 requests: ceil(1001 / 1000) = 2 packages × 0.05 = 0.10 → 10
    // Adjustments of month-3, re-priced with the late event (30 bytes, 1 request):
    //   transfer 1030 bytes: 12.45 + 30 × 0.0005 + 2.00 = 14.465 → half to even → 14.46 → 1446;
    //            billed 1245, so +201 for 30 more bytes
    //   api      6 requests: still 1 package → 5; billed 5, so +0 for 1 more request
    //   base     unchanged: no line
    //   subtotal 4900 + 1507 + 10 + 201 + 0 = 6618
    //   tax      66.18 × 0.19 = 12.5742 → 12.57 → 1257; total 7875
    let lines = m2["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 5, "{m2}");
    assert_line(
        &lines[0],
        1,
        "charge",
        "base",
        None,
        Decimal::ZERO,
        4900,
        None,
    );
    assert_line(
        &lines[1],
        2,
        "charge",
        "transfer",
        Some("bytes"),
        Decimal::from(2235),
        1507,
        None,
    );
    let tiers: Vec<(Decimal, Decimal)> = lines[1]["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (dec(&t["units"]), dec(&t["amount"])))
        .collect();
    assert_eq!(
        tiers,
        [
            (Decimal::from(1000), Decimal::new(1245, 2)),
            (Decimal::from(1235), Decimal::new(26175, 4))
        ]
    );
    assert_line(
        &lines[2],
        3,
        "charge",
        "api",
        Some("requests"),
        Decimal::from(1001),
        10,
        None,
    );
    assert_line(
        &lines[3],
        4,
        "adjustment",
        "transfer",
        Some("bytes"),
        Decimal::from(30),
        201,
        Some(1245),
    );
    assert_line(
        &lines[4],
        5,
        "adjustment",
        "api",
        Some("requests"),
        Decimal::from(1),
        0,
        Some(5),
    );
    for adj in &lines[3..] {
        assert_eq!(
            (ms(&adj["period"]["start"]), ms(&adj["period"]["end"])),
            (months.start(M3), months.start(M2)),
            "an adjustment names the period it corrects: {adj}"
        );
    }
    assert_eq!(dec(&lines[3]["amount_exact"]), Decimal::new(14465, 3));
    assert_totals(&m2, 6618, 1257, 7875);

    // ---- 8. Credits: granted, drawn by month-1's invoice, given back when it is voided.
    let grant = expect(
        post(
            &server,
            "/v1/customers/acme/credit_grants",
            &json!({"amount_minor": 5000, "currency": "USD", "reason": "welcome"}),
        ),
        201,
        "grant",
    );
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    assert!(grant_id.starts_with("grant_"), "{grant}");
    assert_eq!(
        (
            grant["customer"].as_str(),
            grant["amount_minor"].as_i64(),
            grant["currency"].as_str(),
            grant["priority"].as_u64(),
            grant["reason"].as_str()
        ),
        (
            Some("acme"),
            Some(5000),
            Some("USD"),
            Some(100),
            Some("welcome")
        ),
        "{grant}"
    );
    let balance = |server: &Server| get_ok(server, "/v1/customers/acme/credit_balance");
    let b = balance(&server);
    assert_eq!(
        (b["currency"].as_str(), b["available_minor"].as_i64()),
        (Some("USD"), Some(5000)),
        "{b}"
    );
    assert_eq!(
        b["grants"],
        json!([{"grant": grant_id, "remaining_minor": 5000, "expired": false}])
    );
    // Month-1 ended at local midnight of the 1st; its grace ends an hour later.
    let m1_grace_over = now_ms() >= months.start(M0) + GRACE_MS;
    let r = run_invoices(&server, &json!({"period": months.period(M1)}));
    assert_eq!(r, report(1, 1, 0, u32::from(m1_grace_over), 0));
    let m1 = invoice_for(&server, "acme", months.start(M1));
    let m1_id = m1["id"].as_str().unwrap().to_owned();
    let m1 = if m1_grace_over {
        m1
    } else {
        assert_eq!(m1["status"], "draft", "{m1}");
        expect(
            post_empty(&server, &format!("/v1/invoices/{m1_id}/finalize")),
            200,
            "finalize",
        )
    };
    assert_eq!(m1["status"], "finalized", "{m1}");
    // Month-1 has no usage and nothing left to correct:
    //   base 4900, transfer 0, api 0 → subtotal 4900; tax 49.00 × 0.19 = 9.31 → 931; total 5831
    //   credit applied min(5000, 5831) = 5000; due 5831 − 5000 = 831
    let lines = m1["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{m1}");
    assert_line(
        &lines[0],
        1,
        "charge",
        "base",
        None,
        Decimal::ZERO,
        4900,
        None,
    );
    assert_line(
        &lines[1],
        2,
        "charge",
        "transfer",
        Some("bytes"),
        Decimal::ZERO,
        0,
        None,
    );
    assert_line(
        &lines[2],
        3,
        "charge",
        "api",
        Some("requests"),
        Decimal::ZERO,
        0,
        None,
    );
    assert_totals(&m1, 4900, 931, 5831);
    assert_eq!(
        (
            m1["credits_applied_minor"].as_i64(),
            m1["amount_due_minor"].as_i64()
        ),
        (Some(5000), Some(831)),
        "{m1}"
    );
    assert_eq!(balance(&server)["available_minor"], 0);
    let voided = expect(
        post_empty(&server, &format!("/v1/invoices/{m1_id}/void")),
        200,
        "void month-1",
    );
    assert_eq!(voided["status"], "void", "{voided}");
    assert_eq!(
        voided["number"], m1["number"],
        "a voided invoice keeps its number"
    );
    assert!(voided["voided_at"].is_string(), "{voided}");
    let b = balance(&server);
    assert_eq!(b["available_minor"], 5000, "credit given back: {b}");
    let ledger = get_ok(&server, "/v1/customers/acme/credit_ledger");
    assert_eq!(ledger["grants"][0]["id"], grant_id.as_str(), "{ledger}");
    let mut txns: BTreeMap<String, (String, i64, usize)> = BTreeMap::new();
    let mut settled = 0_i64;
    for e in ledger["entries"].as_array().unwrap() {
        let t = txns
            .entry(e["txn"].as_str().unwrap().to_owned())
            .or_insert((e["kind"].as_str().unwrap().to_owned(), 0, 0));
        assert_eq!(
            t.0,
            e["kind"].as_str().unwrap(),
            "one kind per txn: {ledger}"
        );
        t.1 += e["amount_minor"].as_i64().unwrap();
        t.2 += 1;
        if e["account"] == "invoice_settlement" {
            assert_eq!(e["invoice"], m1_id.as_str(), "{e}");
            settled += e["amount_minor"].as_i64().unwrap();
        }
    }
    for (txn, (kind, sum, n)) in &txns {
        assert_eq!(*sum, 0, "txn {txn} ({kind}) balances: {ledger}");
        assert!(*n >= 2, "txn {txn} has two sides: {ledger}");
    }
    let mut kinds: Vec<&str> = txns.values().map(|t| t.0.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["draw", "grant", "reversal"], "{ledger}");
    assert_eq!(settled, 0, "drawn 5000, reversed 5000: {ledger}");

    // ---- 7. Status changes.
    let paid = expect(
        post_empty(&server, &format!("/v1/invoices/{m3_id}/pay")),
        200,
        "pay",
    );
    assert_eq!(paid["status"], "paid", "{paid}");
    assert!(paid["paid_at"].is_string(), "{paid}");
    assert_eq!(paid["number"], m3["number"]);
    assert_eq!(paid["total_minor"], M3_TOTAL);
    let r = post_empty(&server, &format!("/v1/invoices/{m3_id}/pay"));
    assert_error(&r, 409, "conflict");
    let r = post_empty(&server, &format!("/v1/invoices/{m3_id}/void"));
    assert_error(&r, 409, "conflict");
    let r = post_empty(&server, &format!("/v1/invoices/{m3_id}/finalize"));
    assert_error(&r, 409, "conflict");
    let v = expect(
        post_empty(&server, &format!("/v1/invoices/{m2_id}/void")),
        200,
        "void month-2",
    );
    assert_eq!(v["status"], "void", "{v}");
    for action in ["finalize", "pay", "void"] {
        let r = post_empty(&server, &format!("/v1/invoices/{m2_id}/{action}"));
        assert_error(&r, 409, "conflict");
    }
    let r = post_empty(&server, "/v1/invoices/inv_nope/pay");
    assert_error(&r, 404, "invoice_not_found");
    assert_eq!(get_ok(&server, &m3_path)["status"], "paid");
    assert_eq!(
        get_ok(&server, &format!("/v1/invoices/{m2_id}"))["status"],
        "void"
    );

    // ---- 9. Numbers: this year's, consecutive from 1, in the order of finalization.
    let year = Timestamp::now().in_tz("UTC").unwrap().year();
    let all = get_ok(&server, "/v1/invoices?limit=1000")["data"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 3);
    let mut numbers: Vec<u32> = all
        .iter()
        .map(|i| {
            let (y, n) = number_parts(&i["number"]);
            assert_eq!(i32::from(year), y, "{i}");
            n
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3], "no gap");
    let seq = |id: &str| number_parts(&get_ok(&server, &format!("/v1/invoices/{id}"))["number"]).1;
    assert_eq!((seq(&m3_id), seq(&m2_id), seq(&m1_id)), (1, 2, 3));
}

/// The explanation of a finalized charge line shows today's usage: after a late event for its
/// period, Σ windows = `quantity_now` = charged + late, and exactly the late event is marked
/// `late` (it is billed by an adjustment on a later invoice, not by this line).
#[test]
fn explain_of_a_finalized_line_marks_late_events() {
    let dir = TestDir::new("billing-explain-late");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let acme = set_up_acme(&server, M3);
    let months = &acme.months;
    let r = run_invoices(&server, &json!({"period": months.period(M3)}));
    assert_eq!(r, report(1, 1, 0, 1, 0));
    let m3 = invoice_for(&server, "acme", months.start(M3));
    let id = m3["id"].as_str().unwrap();
    let late = event(
        "m3-late",
        "acme",
        months.at(M3, 20, 10, 0),
        json!({"bytes": 30}),
    );
    assert_counts(&server.ingest(&[late]), 1, 0, 0, 0);
    let (first, ids, _) = explain_all(&server, id, 2, 1000);
    assert_eq!(dec(&first["line"]["quantity"]), Decimal::from(1000));
    let sum: Decimal = first["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| dec(&w["quantity"]))
        .sum();
    assert_eq!(sum, Decimal::from(1030), "Σ windows = usage today: {first}");
    assert_eq!(dec(&first["quantity_now"]), Decimal::from(1030), "{first}");
    assert_eq!(
        ids.len(),
        ACME_M3.len() + 1,
        "the events charged and the late one: {ids:?}"
    );
    let late: Vec<&str> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["late"] == json!(true))
        .map(|e| e["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(late, ["m3-late"], "{first}");
}

#[test]
fn bad_billing_requests_get_typed_errors() {
    let dir = TestDir::new("billing-errors");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let months = Months::new(BERLIN);
    define_meters(&server);
    expect(post(&server, "/v1/plans", &pro_plan()), 201, "plan");
    let customer =
        json!({"key": "acme", "name": ACME_NAME, "currency": "USD", "time_zone": BERLIN});
    expect(post(&server, "/v1/customers", &customer), 201, "customer");
    let sub = expect(
        post(
            &server,
            "/v1/subscriptions",
            &json!({"customer": "acme", "plan": "pro", "start": rfc3339(months.start(M3))}),
        ),
        201,
        "subscription",
    );
    let sub_id = sub["id"].as_str().unwrap();

    // Customers.
    let r = post(
        &server,
        "/v1/customers",
        &json!({"key": "zed", "name": "Zed", "currency": "ABC"}),
    );
    assert_error(&r, 422, "unknown_currency");
    let r = post(&server, "/v1/customers", &customer);
    assert_error(&r, 409, "customer_exists");
    let r = post(
        &server,
        "/v1/customers",
        &json!({"key": "zed", "name": "Zed", "currency": "USD", "tax_rate": "abc"}),
    );
    assert_error(&r, 400, "invalid_decimal");
    let r = post(
        &server,
        "/v1/customers",
        &json!({"key": "zed", "name": "Zed", "currency": "USD", "time_zone": "Mars/Olympus"}),
    );
    assert_error(&r, 422, "invalid_field");
    let r = server.get("/v1/customers/zed", ADMIN_KEY);
    assert_error(&r, 404, "customer_not_found");

    // Plans.
    let flat_with_meter = json!({"key": "bad", "name": "Bad", "currency": "USD", "interval": "month",
        "prices": [{"key": "base", "name": "Base", "meter": "requests",
                    "model": {"type": "flat", "amount": "1.00"}}]});
    let r = post(&server, "/v1/plans", &flat_with_meter);
    assert_error(&r, 422, "invalid_price");
    let r = server.get("/v1/plans/bad", ADMIN_KEY);
    assert_error(&r, 404, "plan_not_found");
    let bad_amount = json!({"key": "bad", "name": "Bad", "currency": "USD", "interval": "month",
        "prices": [{"key": "base", "name": "Base", "model": {"type": "flat", "amount": "abc"}}]});
    let r = post(&server, "/v1/plans", &bad_amount);
    assert_error(&r, 400, "invalid_decimal");
    let r = post(
        &server,
        "/v1/plans",
        &json!({"key": "bad", "name": "Bad", "currency": "ABC", "interval": "month"}),
    );
    assert_error(&r, 422, "unknown_currency");

    // Subscriptions.
    let r = post(
        &server,
        "/v1/subscriptions",
        &json!({"customer": "nobody", "plan": "pro"}),
    );
    assert_error(&r, 404, "customer_not_found");
    let r = post(
        &server,
        "/v1/subscriptions",
        &json!({"customer": "acme", "plan": "pro"}),
    );
    assert_error(&r, 409, "subscription_exists");
    let past = rfc3339(months.start(M2));
    let r = post(
        &server,
        &format!("/v1/subscriptions/{sub_id}/change_plan"),
        &json!({"plan": "pro", "at": past}),
    );
    assert_error(&r, 409, "conflict");
    expect(
        post(
            &server,
            "/v1/customers",
            &json!({"key": "newco", "name": "NewCo", "currency": "USD"}),
        ),
        201,
        "customer",
    );
    let r = post(
        &server,
        "/v1/subscriptions",
        &json!({"customer": "newco", "plan": "pro", "start": rfc3339(months.start(M1) + 30_000)}),
    );
    assert_error(&r, 422, "invalid_field");
    // The refused subscriptions left nothing behind.
    let subs = get_ok(&server, "/v1/subscriptions");
    assert_eq!(subs["data"].as_array().unwrap().len(), 1, "{subs}");
    assert_eq!(
        get_ok(&server, &format!("/v1/subscriptions/{sub_id}"))["phases"],
        sub["phases"]
    );

    // Invoice runs.
    for period in ["2026-13", "2026-00", "2026-1", "26-01", "abc"] {
        let r = post(&server, "/v1/invoices/run", &json!({"period": period}));
        assert_error(&r, 400, "invalid_period");
    }
    let r = server.get("/v1/invoices/inv_nope", ADMIN_KEY);
    assert_error(&r, 404, "invoice_not_found");
    let r = server.get("/v1/invoices?status=open", ADMIN_KEY);
    assert_error(&r, 400, "invalid_status");

    // Credits.
    let r = post(
        &server,
        "/v1/customers/acme/credit_grants",
        &json!({"amount_minor": 100, "currency": "EUR"}),
    );
    assert_error(&r, 422, "invalid_field");
    let r = post(
        &server,
        "/v1/customers/acme/credit_grants",
        &json!({"amount_minor": 0, "currency": "USD"}),
    );
    assert_error(&r, 422, "invalid_field");
    let r = post(
        &server,
        "/v1/customers/nobody/credit_grants",
        &json!({"amount_minor": 100, "currency": "USD"}),
    );
    assert_error(&r, 404, "customer_not_found");

    // Keys and scopes.
    let plan2 = json!({"key": "other", "name": "Other", "currency": "USD", "interval": "month"});
    let r = call(&server, "POST", "/v1/plans", None, Some(&plan2));
    assert_error(&r, 401, "missing_api_key");
    let r = server.request("GET", "/v1/invoices", None, None, None);
    assert_error(&r, 401, "missing_api_key");
    let (_, read) = server.create_key(&["read"]);
    let r = call(&server, "POST", "/v1/plans", Some(&read), Some(&plan2));
    assert_error(&r, 403, "insufficient_scope");
    let r = call(
        &server,
        "POST",
        "/v1/invoices/run",
        Some(&read),
        Some(&json!({})),
    );
    assert_error(&r, 403, "insufficient_scope");
    // The read key reads, and the refused plan was not created.
    assert_eq!(server.get("/v1/plans", &read).status, 200);
    let r = server.get("/v1/plans/other", &read);
    assert_error(&r, 404, "plan_not_found");
}

#[test]
fn zero_and_three_digit_currencies_round_half_to_even() {
    let dir = TestDir::new("billing-currencies");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let r = server.put_meter(
        "requests",
        &json!({"aggregation": "count", "event_type": "proxy.request"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // (customer, currency, time zone, tax rate, plan prices)
    let cases = [
        (
            "tokyo",
            "JPY",
            "Asia/Tokyo",
            "0.1",
            json!([
                {"key": "base", "name": "Base", "model": {"type": "flat", "amount": "1000.5"}},
                {"key": "support", "name": "Support", "model": {"type": "flat", "amount": "0.7"}},
                {"key": "calls", "name": "Calls", "meter": "requests",
                 "model": {"type": "per_unit", "unit_price": "0.5"}},
            ]),
        ),
        (
            "kuwait",
            "KWD",
            "Asia/Kuwait",
            "0.05",
            json!([
                {"key": "base", "name": "Base", "model": {"type": "flat", "amount": "10.0005"}},
                {"key": "calls", "name": "Calls", "meter": "requests",
                 "model": {"type": "per_unit", "unit_price": "0.0125"}},
            ]),
        ),
    ];
    for (key, currency, tz, tax, prices) in &cases {
        let months = Months::new(tz);
        let plan = json!({"key": format!("plan-{key}"), "name": key, "currency": currency,
            "interval": "month", "prices": prices});
        expect(post(&server, "/v1/plans", &plan), 201, "plan");
        let c = json!({"key": key, "name": format!("Customer {key}"), "currency": currency,
            "time_zone": tz, "tax_rate": tax});
        expect(post(&server, "/v1/customers", &c), 201, "customer");
        let s = json!({"customer": key, "plan": format!("plan-{key}"),
            "start": rfc3339(months.start(M3))});
        expect(post(&server, "/v1/subscriptions", &s), 201, "subscription");
        // Nine requests on days 12..=20 of month-3, local time.
        let events: Vec<Value> = (12..=20_i8)
            .map(|day| {
                event(
                    &format!("{key}-{day}"),
                    key,
                    months.at(M3, day, 12, 0),
                    json!({}),
                )
            })
            .collect();
        assert_counts(&server.ingest(&events), 9, 0, 0, 0);
        let r = run_invoices(
            &server,
            &json!({"period": months.period(M3), "customer": key}),
        );
        assert_eq!(r, report(1, 1, 0, 1, 0));
    }

    // JPY, no minor digits (yen):
    //   base    1000.5 → half to even → 1000 (half up: 1001)
    //   support 0.7 → 1
    //   calls   9 × 0.5 = 4.5 → half to even → 4 (half up: 5)
    //   subtotal 1005; tax 1005 × 0.1 = 100.5 → 100 (half up: 101); total 1105
    let months = Months::new("Asia/Tokyo");
    let jpy = invoice_for(&server, "tokyo", months.start(M3));
    assert_eq!(jpy["currency"], "JPY");
    let lines = jpy["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{jpy}");
    assert_line(
        &lines[0],
        1,
        "charge",
        "base",
        None,
        Decimal::ZERO,
        1000,
        None,
    );
    assert_line(
        &lines[1],
        2,
        "charge",
        "support",
        None,
        Decimal::ZERO,
        1,
        None,
    );
    assert_line(
        &lines[2],
        3,
        "charge",
        "calls",
        Some("requests"),
        Decimal::from(9),
        4,
        None,
    );
    assert_totals(&jpy, 1005, 100, 1105);
    let page = server.get_raw(
        &format!("/v1/invoices/{}/html", jpy["id"].as_str().unwrap()),
        ADMIN_KEY,
    );
    assert_eq!(page.status, 200);
    assert!(page.text.contains("1105 JPY"), "{}", page.text);
    assert!(!page.text.contains("11.05 JPY"), "{}", page.text);

    // KWD, three minor digits (fils):
    //   base  10.0005 → half to even → 10.000 → 10000 (half up: 10001)
    //   calls 9 × 0.0125 = 0.1125 → half to even → 0.112 → 112 (half up: 113)
    //   subtotal 10112; tax 10.112 × 0.05 = 0.5056 → 0.506 → 506; total 10618
    let months = Months::new("Asia/Kuwait");
    let kwd = invoice_for(&server, "kuwait", months.start(M3));
    assert_eq!(kwd["currency"], "KWD");
    let lines = kwd["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{kwd}");
    assert_line(
        &lines[0],
        1,
        "charge",
        "base",
        None,
        Decimal::ZERO,
        10000,
        None,
    );
    assert_line(
        &lines[1],
        2,
        "charge",
        "calls",
        Some("requests"),
        Decimal::from(9),
        112,
        None,
    );
    assert_totals(&kwd, 10112, 506, 10618);
    let page = server.get_raw(
        &format!("/v1/invoices/{}/html", kwd["id"].as_str().unwrap()),
        ADMIN_KEY,
    );
    assert_eq!(page.status, 200);
    for needle in ["10.618 KWD", "10.000 KWD", "0.112 KWD", "0.506 KWD"] {
        assert!(
            page.text.contains(needle),
            "`{needle}` not on:\n{}",
            page.text
        );
    }

    // Two customers, two invoices, numbered 1 and 2.
    let mut numbers = [
        number_parts(&jpy["number"]).1,
        number_parts(&kwd["number"]).1,
    ];
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2]);
}

fn invoice_cli(data: &Path, args: &[&str]) -> std::process::Output {
    tollgate()
        .arg("invoice")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn invoice_commands_run_list_and_show() {
    let dir = TestDir::new("billing-cli");
    let data = dir.data("data");
    let mut server = Server::start(&data, SERVE_FLAGS);
    let acme = set_up_acme(&server, M3);
    server.stop();
    let period = acme.months.period(M3);
    let run_args = [
        "run",
        "--acceptance-window",
        "120d",
        "--grace",
        "1h",
        "--period",
        period.as_str(),
        "--json",
    ];

    let out = invoice_cli(&data, &run_args);
    assert!(out.status.success(), "{}", describe(&out));
    let first: Value = without_timings(
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(&out))),
    );
    assert_eq!(first, report(1, 1, 0, 1, 0), "{}", describe(&out));
    let out = invoice_cli(&data, &run_args);
    assert!(out.status.success(), "{}", describe(&out));
    let second: Value = without_timings(serde_json::from_slice(&out.stdout).unwrap());
    assert_eq!(second, report(1, 0, 0, 0, 0), "{}", describe(&out));

    let out = invoice_cli(&data, &["list"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("inv_")).collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    let id = rows[0]
        .split_whitespace()
        .find(|w| w.starts_with("inv_"))
        .unwrap()
        .to_owned();
    for needle in ["finalized", "acme", "73.18 USD"] {
        assert!(rows[0].contains(needle), "`{needle}` not in {stdout}");
    }

    let out = invoice_cli(&data, &["show", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_m3_invoice(&shown, &acme);
    let number = shown["number"].as_str().unwrap().to_owned();
    assert_eq!(number_parts(&shown["number"]).1, 1);

    let out = invoice_cli(&data, &["show", &id, "--html"]);
    assert!(out.status.success(), "{}", describe(&out));
    let html = String::from_utf8_lossy(&out.stdout);
    assert!(html.trim_start().starts_with("<!doctype html>"), "{html}");
    for needle in [number.as_str(), ACME_NAME, "73.18 USD"] {
        assert!(html.contains(needle), "`{needle}` not in:\n{html}");
    }

    let out = invoice_cli(&data, &["run", "--period", "2026-13"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2026-13") && stderr.contains("period"),
        "{}",
        describe(&out)
    );
    let out = invoice_cli(&data, &["show", "inv_nope"]);
    assert!(!out.status.success(), "{}", describe(&out));

    // The server reads what the command wrote, identically.
    let server = Server::start(&data, SERVE_FLAGS);
    assert_eq!(get_ok(&server, &format!("/v1/invoices/{id}")), shown);
}

/// Flags of a server whose drafts stay open for 31 days: month-1, which ended at the start of
/// this month, is still a draft (but in the last hour of a 31-day month with a DST change).
const LONG_GRACE_FLAGS: &[&str] = &[
    "--acceptance-window",
    "120d",
    "--invoice-every",
    "0s",
    "--invoice-grace",
    "31d",
];
const LONG_GRACE_MS: i64 = 31 * DAY_MS;

#[test]
fn drafts_follow_late_events_until_finalized() {
    let dir = TestDir::new("billing-drafts");
    let server = Server::start(&dir.data("data"), LONG_GRACE_FLAGS);
    // Subscribed since month-1, so month-1 is the only ended period.
    let acme = set_up_acme(&server, M1);
    let months = &acme.months;

    let r = run_invoices(&server, &json!({}));
    assert_eq!(r, report(1, 1, 0, 0, 0));
    let m1 = invoice_for(&server, "acme", months.start(M1));
    let m1_id = m1["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&m1["status"], &m1["number"], &m1["finalized_at"]),
        (&json!("draft"), &Value::Null, &Value::Null),
        "{m1}"
    );
    assert_eq!(ms(&m1["grace_until"]), months.start(M0) + LONG_GRACE_MS);
    // No usage yet (month-3's events are before the subscription):
    // base 4900; tax 49.00 × 0.19 = 9.31 → 931; total 5831.
    assert_totals(&m1, 4900, 931, 5831);

    // A draft is neither paid nor voided.
    for action in ["pay", "void"] {
        let r = post_empty(&server, &format!("/v1/invoices/{m1_id}/{action}"));
        assert_error(&r, 409, "conflict");
    }

    // Usage in month-1 updates the draft at the next run; a run with nothing new changes
    // nothing.
    let e = event(
        "m1-1",
        "acme",
        months.at(M1, 10, 12, 0),
        json!({"bytes": 1500}),
    );
    assert_counts(&server.ingest(&[e]), 1, 0, 0, 0);
    let r = run_invoices(&server, &json!({}));
    assert_eq!(r, report(1, 0, 1, 0, 0));
    let r = run_invoices(&server, &json!({}));
    assert_eq!(r, report(1, 0, 0, 0, 1));
    // transfer 1500 bytes: 12.45 + 500 × 0.0005 + 2.00 = 14.70 → 1470; api 1 package → 5
    // subtotal 4900 + 1470 + 5 = 6375; tax 63.75 × 0.19 = 12.1125 → 1211; total 7586
    let m1 = get_ok(&server, &format!("/v1/invoices/{m1_id}"));
    assert_eq!(m1["status"], "draft");
    assert_line(
        &m1["lines"][1],
        2,
        "charge",
        "transfer",
        Some("bytes"),
        Decimal::from(1500),
        1470,
        None,
    );
    assert_totals(&m1, 6375, 1211, 7586);

    // Finalizing early re-prices with the latest usage (another 100 bytes, no run since):
    // transfer 1600 bytes: 12.45 + 600 × 0.0005 + 2.00 = 14.75 → 1475; api 2 requests → 5
    // subtotal 6380; tax 63.80 × 0.19 = 12.122 → 1212; total 7592; the year's first number.
    let e = event(
        "m1-2",
        "acme",
        months.at(M1, 11, 12, 0),
        json!({"bytes": 100}),
    );
    assert_counts(&server.ingest(&[e]), 1, 0, 0, 0);
    let m1 = expect(
        post_empty(&server, &format!("/v1/invoices/{m1_id}/finalize")),
        200,
        "finalize",
    );
    assert_eq!(m1["status"], "finalized", "{m1}");
    assert!(m1["finalized_at"].is_string(), "{m1}");
    assert_eq!(dec(&m1["lines"][1]["quantity"]), Decimal::from(1600));
    assert_totals(&m1, 6380, 1212, 7592);
    assert_eq!(number_parts(&m1["number"]).1, 1, "{m1}");
    let r = post_empty(&server, &format!("/v1/invoices/{m1_id}/finalize"));
    assert_error(&r, 409, "conflict");
    let r = run_invoices(&server, &json!({}));
    assert_eq!(r, report(1, 0, 0, 0, 0));
    assert_eq!(
        get_ok(&server, &format!("/v1/invoices/{m1_id}")),
        m1,
        "finalized: fixed"
    );
}

/// `POST /v1/invoices/{id}/finalize` finalizes that invoice. It runs the invoice cycle for the
/// whole customer to do so, which also drafts and finalizes every other ended period that had
/// no invoice yet: those take the earlier numbers (and would draw credit first).
#[test]
fn finalize_touches_only_the_invoice_named() {
    let dir = TestDir::new("billing-finalize-one");
    let server = Server::start(&dir.data("data"), LONG_GRACE_FLAGS);
    let acme = set_up_acme(&server, M3);
    let months = &acme.months;
    let r = run_invoices(&server, &json!({"period": months.period(M1)}));
    assert_eq!(r, report(1, 1, 0, 0, 0));
    let m1 = invoice_for(&server, "acme", months.start(M1));
    let id = m1["id"].as_str().unwrap();
    let m1 = expect(
        post_empty(&server, &format!("/v1/invoices/{id}/finalize")),
        200,
        "finalize",
    );
    assert_eq!(m1["status"], "finalized", "{m1}");
    let all = invoices_of(&server, "acme");
    let periods: Vec<String> = all
        .iter()
        .map(|i| i["period"]["start"].to_string())
        .collect();
    assert_eq!(all.len(), 1, "only the named invoice: {periods:?}");
    assert_eq!(number_parts(&m1["number"]).1, 1, "{m1}");
}

/// A customer key with a non-ASCII letter, sent with the letter escaped in JSON (`\u00e9`, as
/// e.g. Python's json.dumps writes it by default): billed, and explained.
#[test]
fn explain_finds_events_with_an_escaped_subject() {
    let dir = TestDir::new("billing-escaped");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let months = Months::new("UTC");
    define_meters(&server);
    expect(post(&server, "/v1/plans", &pro_plan()), 201, "plan");
    let c = json!({"key": "café", "name": "Café", "currency": "USD"});
    expect(post(&server, "/v1/customers", &c), 201, "customer");
    let s = json!({"customer": "café", "plan": "pro", "start": rfc3339(months.start(M3))});
    expect(post(&server, "/v1/subscriptions", &s), 201, "subscription");
    let line = format!(
        r#"{{"specversion":"1.0","id":"esc-1","source":"/t","type":"proxy.request","subject":"caf\u00e9","time":"{}","data":{{"bytes":5}}}}"#,
        rfc3339(months.at(M3, 15, 12, 0))
    );
    let r = server.post_events(ADMIN_KEY, "application/x-ndjson", format!("{line}\n"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_counts(&r.body, 1, 0, 0, 0);
    let r = run_invoices(&server, &json!({"period": months.period(M3)}));
    assert_eq!(r, report(1, 1, 0, 1, 0));
    let inv = invoice_for(&server, "caf%C3%A9", months.start(M3));
    // The usage is billed to café ...
    assert_eq!(dec(&inv["lines"][1]["quantity"]), Decimal::from(5), "{inv}");
    // ... and the explanation shows the event behind it.
    let (first, ids, _) = explain_all(&server, inv["id"].as_str().unwrap(), 2, 10);
    assert_eq!(first["windows"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(ids, ["esc-1"], "{first}");
}
