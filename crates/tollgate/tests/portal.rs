//! Black-box tests of the customer portal: signed links, the access matrix (customer A's link
//! never shows B's data on any page or download, and B's objects answer 403), expired and
//! tampered links (401 pages), and the numbers of every page equal to the API's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "support/portal_world.rs"]
mod portal_world;

use common::*;
use portal_world::*;
use serde_json::json;

/// GET without any API key (the portal's only credential is its link).
fn get(server: &Server, path: &str) -> RawReply {
    let resp = reqwest::blocking::get(format!("{}{path}", server.base())).unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let referrer = resp
        .headers()
        .get("referrer-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(referrer, "no-referrer", "{path}: the link must not leak");
    RawReply {
        status,
        content_type,
        text: resp.text().unwrap(),
    }
}

/// Every page and download a customer's link opens: (path, body).
fn all_pages(server: &Server, c: &Cust) -> Vec<(String, String)> {
    let base = format!("/portal/{}", c.token);
    let mut paths = vec![
        base.clone(),
        format!("{base}?format=csv"),
        format!("{base}/invoices"),
        format!("{base}/invoices?format=csv"),
    ];
    for meter in ["bytes-out", "requests"] {
        for q in [
            "",
            "&group_by=host",
            "&window=hour&group_by=host",
            "&group_by=host&format=csv",
        ] {
            paths.push(format!("{base}/usage?meter={meter}{q}"));
        }
    }
    // A range over last month and this one.
    paths.push(format!(
        "{base}/usage?meter=bytes-out&from={}&to={}&group_by=host",
        date_text(now_ms() - 45 * DAY_MS),
        date_text(now_ms())
    ));
    for inv in &c.invoices {
        paths.push(format!("{base}/invoices/{inv}"));
        paths.push(format!("{base}/invoices/{inv}?format=csv"));
        for line in 1..=3 {
            paths.push(format!("{base}/invoices/{inv}/lines/{line}"));
            paths.push(format!("{base}/invoices/{inv}/lines/{line}?format=csv"));
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let r = get(server, &p);
            assert_eq!(r.status, 200, "{p}: {}", r.text);
            if p.contains("format=csv") {
                assert!(r.content_type.starts_with("text/csv"), "{p}");
            } else {
                assert!(r.content_type.starts_with("text/html"), "{p}");
            }
            (p, r.text)
        })
        .collect()
}

#[test]
fn one_customers_link_never_shows_anothers_data() {
    let dir = TestDir::new("portal-matrix");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let world = build(&server, 6);
    let pages: Vec<Vec<(String, String)>> = world.iter().map(|c| all_pages(&server, c)).collect();
    let mut pairs = 0;
    for (a, a_pages) in world.iter().zip(&pages) {
        // A's own data is there.
        let html: String = a_pages.iter().map(|p| p.1.as_str()).collect();
        assert!(html.contains(&a.name), "{} sees its name", a.key);
        for inv in &a.invoices {
            assert!(
                html.contains(inv.as_str()),
                "{} sees its invoice {inv}",
                a.key
            );
        }
        for h in &a.hosts {
            assert!(html.contains(h.as_str()), "{} sees its host {h}", a.key);
        }
        for b in world.iter().filter(|b| b.key != a.key) {
            pairs += 1;
            for (path, body) in a_pages {
                for secret in [&b.key, &b.name, &b.token]
                    .into_iter()
                    .chain(b.hosts.iter())
                    .chain(b.invoices.iter())
                {
                    assert!(
                        !body.contains(secret.as_str()),
                        "{}'s page {path} shows {}'s `{secret}`",
                        a.key,
                        b.key
                    );
                }
            }
            // B's objects through A's link: 403, as a page, never data.
            let base = format!("/portal/{}", a.token);
            for inv in &b.invoices {
                for p in [
                    format!("{base}/invoices/{inv}"),
                    format!("{base}/invoices/{inv}?format=csv"),
                    format!("{base}/invoices/{inv}/lines/1"),
                    format!("{base}/invoices/{inv}/lines/2?format=csv"),
                ] {
                    let r = get(&server, &p);
                    assert_eq!(r.status, 403, "{p}: {}", r.text);
                    assert!(r.content_type.starts_with("text/html"), "{p}");
                    assert!(r.text.contains("portal_forbidden"), "{}", r.text);
                    assert!(!r.text.contains(&b.name) && !r.text.contains(&b.key));
                }
            }
        }
    }
    assert_eq!(pairs, 30);
}

#[test]
fn expired_tampered_and_foreign_links_get_401_pages() {
    let dir = TestDir::new("portal-tokens");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let world = build(&server, 2);
    let (a, b) = (&world[0], &world[1]);
    let short = portal_token(&server, &a.key, 1);
    assert_eq!(get(&server, &format!("/portal/{short}")).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut bad: Vec<(String, &str)> = vec![(short.clone(), "portal_token_expired")];
    // Every part of a valid token altered.
    let parts: Vec<&str> = a.token.split('.').collect();
    for i in 0..parts.len() {
        let mut p: Vec<String> = parts.iter().map(|s| (*s).to_owned()).collect();
        let last = p[i].pop().unwrap();
        p[i].push(if last == '0' { '1' } else { '0' });
        bad.push((p.join("."), "portal_token_invalid"));
    }
    // B's key inside A's signed token.
    let swapped = a
        .token
        .replacen(parts[1], b.token.split('.').nth(1).unwrap(), 1);
    bad.push((swapped, "portal_token_invalid"));
    bad.push(("nonsense".into(), "portal_token_invalid"));
    bad.push((format!("{}x", a.token), "portal_token_invalid"));
    for (token, code) in &bad {
        for page in [
            String::new(),
            "?format=csv".into(),
            "/usage".into(),
            "/invoices".into(),
            format!("/invoices/{}", a.invoices[0]),
            format!("/invoices/{}/lines/1?format=csv", a.invoices[0]),
        ] {
            let path = format!("/portal/{token}{page}");
            let r = get(&server, &path);
            assert_eq!(r.status, 401, "{path}: {}", r.text);
            assert!(r.text.contains(code), "{path}: {}", r.text);
            assert!(
                !r.text.contains(&a.name) && !r.text.contains(&a.key),
                "{path}"
            );
        }
    }
    // A link from another data directory's secret does not open this one.
    let dir2 = TestDir::new("portal-tokens-2");
    let other = Server::start(&dir2.data("data"), SERVE_FLAGS);
    let foreign = build(&other, 1);
    let r = get(&server, &format!("/portal/{}", foreign[0].token));
    assert_eq!(r.status, 401, "{}", r.text);

    // Creating links: admin only, known customers, bounded life.
    let r = server.request(
        "POST",
        &format!("/v1/customers/{}/portal_sessions", a.key),
        None,
        None,
        None,
    );
    assert_error(&r, 401, "missing_api_key");
    let (_, read_key) = server.create_key(&["read"]);
    let r = server.request(
        "POST",
        &format!("/v1/customers/{}/portal_sessions", a.key),
        Some(&read_key),
        None,
        None,
    );
    assert_error(&r, 403, "insufficient_scope");
    let r = call(
        &server,
        "POST",
        "/v1/customers/nobody/portal_sessions",
        None,
    );
    assert_error(&r, 404, "customer_not_found");
    let r = call(
        &server,
        "POST",
        &format!("/v1/customers/{}/portal_sessions", a.key),
        Some(&json!({"expires_in_seconds": 90 * 86400 + 1})),
    );
    assert_error(&r, 422, "portal_session_seconds_max");
    let r = call(
        &server,
        "POST",
        &format!("/v1/customers/{}/portal_sessions", a.key),
        Some(&json!({"base_url": "https://billing.example.com/"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.body["url"]
            .as_str()
            .unwrap()
            .starts_with("https://billing.example.com/portal/v1."),
        "{}",
        r.body
    );
}

#[test]
fn page_numbers_equal_the_api() {
    let dir = TestDir::new("portal-numbers");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let world = build(&server, 3);
    for c in &world {
        let base = format!("/portal/{}", c.token);
        // Overview: running charges = the upcoming invoice.
        let up = ok(
            server.get(
                &format!("/v1/customers/{}/upcoming_invoice", c.key),
                ADMIN_KEY,
            ),
            200,
            "upcoming",
        );
        let html = get(&server, &base).text;
        let totals = attrs(&html, "data-total-minor");
        assert_eq!(totals[0], up["total_minor"].to_string(), "running total");
        let forecast: i64 = totals[1].parse().unwrap();
        assert!(
            forecast >= up["total_minor"].as_i64().unwrap(),
            "forecast ≥ so far"
        );
        let line_amounts = attrs(&html, "data-amount-minor");
        let api_lines: Vec<String> = up["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["amount_minor"].to_string())
            .collect();
        // The credit card first, then one per line.
        assert_eq!(line_amounts[1..], api_lines[..], "{html}");
        let balance = ok(
            server.get(
                &format!("/v1/customers/{}/credit_balance", c.key),
                ADMIN_KEY,
            ),
            200,
            "balance",
        );
        assert_eq!(line_amounts[0], balance["available_minor"].to_string());
        // Usage this period per meter = the usage API over the period so far.
        let exact = attrs(&html, "data-exact");
        let period_from = up["period"]["start"].as_str().unwrap();
        let to = rfc3339(floor_minute(now_ms()) + MINUTE_MS);
        for (i, meter) in ["bytes-out", "requests"].iter().enumerate() {
            let rows = server.usage_rows(
                meter,
                &format!("subject={}&from={}&to={}", c.key, q(period_from), q(&to)),
            );
            let api: i128 = rows.iter().map(int_value).sum();
            assert_eq!(exact[i], api.to_string(), "{meter} of {}", c.key);
        }
        // Usage page, by host per day = the usage API with the same query.
        let from_day = date_text(now_ms() - 20 * DAY_MS);
        let to_day = date_text(now_ms());
        let html = get(
            &server,
            &format!("{base}/usage?meter=bytes-out&from={from_day}&to={to_day}&group_by=host"),
        )
        .text;
        let tz = jiff::tz::TimeZone::get(c.tz).unwrap();
        let local_midnight = |d: &str| {
            d.parse::<jiff::civil::Date>()
                .unwrap()
                .to_zoned(tz.clone())
                .unwrap()
                .timestamp()
                .as_millisecond()
        };
        let api_rows = server.usage_rows(
            "bytes-out",
            &format!(
                "subject={}&from={}&to={}&window_size=day&time_zone={}&group_by=host",
                c.key,
                q(&rfc3339(local_midnight(&from_day))),
                q(&rfc3339(local_midnight(&date_text(now_ms() + DAY_MS)))),
                c.tz
            ),
        );
        let page_values = attrs(&html, "data-exact");
        let api_values: Vec<String> = api_rows
            .iter()
            .map(|r| r["value"].as_str().unwrap().to_owned())
            .collect();
        let mut a = page_values.clone();
        let mut b = api_values.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "usage rows of {}", c.key);
        assert!(html.contains("<svg"), "a chart");
        assert!(html.contains("Bytes out ("), "a value axis with a unit");
        assert!(
            html.contains(&format!("Time ({})", c.tz)),
            "a time axis in the customer's zone"
        );
        // Invoices: totals and amounts due = the API's.
        let html = get(&server, &format!("{base}/invoices")).text;
        for inv in &c.invoices {
            let api = ok(
                server.get(&format!("/v1/invoices/{inv}"), ADMIN_KEY),
                200,
                "inv",
            );
            assert!(
                html.contains(&format!(
                    "data-id=\"{inv}\" data-total-minor=\"{}\" data-due-minor=\"{}\"",
                    api["total_minor"], api["amount_due_minor"]
                )),
                "{inv} in {html}"
            );
            // The drill-down of the metered line: daily windows = the explain API.
            let explain = ok(
                server.get(
                    &format!("/v1/invoices/{inv}/lines/2/explain?limit=50"),
                    ADMIN_KEY,
                ),
                200,
                "explain",
            );
            let html = get(&server, &format!("{base}/invoices/{inv}/lines/2")).text;
            let windows: Vec<String> = explain["windows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["quantity"].as_str().unwrap().to_owned())
                .collect();
            let shown = attrs(&html, "data-exact");
            // The quantity card first, then one per day.
            assert_eq!(shown[0], explain["line"]["quantity"].as_str().unwrap());
            assert_eq!(shown[1..], windows[..]);
            let ids: Vec<String> = explain["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event"]["id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(attrs(&html, "data-event-id"), ids);
            // The CSV holds exactly the same rows.
            let csv = get(
                &server,
                &format!("{base}/invoices/{inv}/lines/2?format=csv"),
            )
            .text;
            let window_rows = csv.lines().filter(|l| l.starts_with("window,")).count();
            let event_rows = csv.lines().filter(|l| l.starts_with("event,")).count();
            assert_eq!((window_rows, event_rows), (windows.len(), ids.len()));
        }
    }
}

#[test]
fn bad_parameters_get_typed_error_pages() {
    let dir = TestDir::new("portal-params");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let world = build(&server, 1);
    let base = format!("/portal/{}", world[0].token);
    for (q, status, code) in [
        ("/usage?meter=nope", 404, "meter_not_found"),
        (
            "/usage?meter=bytes-out&group_by=zone",
            400,
            "unknown_group_by",
        ),
        ("/usage?from=2026-13-01", 400, "invalid_date"),
        (
            "/usage?from=2026-02-01&to=2026-01-01",
            400,
            "empty_time_range",
        ),
        (
            "/usage?window=hour&from=2020-01-01&to=2026-01-01",
            422,
            "portal_chart_windows_max",
        ),
        ("/usage?window=week", 400, "invalid_window_size"),
        ("?format=xml", 400, "invalid_format"),
        ("?color=red", 400, "unknown_parameter"),
        ("/invoices/inv_missing", 404, "invoice_not_found"),
    ] {
        let r = get(&server, &format!("{base}{q}"));
        assert_eq!(r.status, status, "{q}: {}", r.text);
        assert!(r.text.contains(code), "{q}: {}", r.text);
        assert!(r.content_type.starts_with("text/html"));
    }
}
