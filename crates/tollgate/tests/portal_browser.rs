//! The portal in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `cargo xtask ci`) loads every page from the server on 127.0.0.1, the rendered DOM is checked
//! against the API's numbers, and screenshots at laptop and phone sizes are saved under
//! `target/portal-screenshots/` for people to look at.
//!
//! A browser that cannot start fails the test; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "support/portal_world.rs"]
mod portal_world;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use portal_world::*;

const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--run-all-compositor-stages-before-draw",
];

/// Most time one browser run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

fn screenshots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/portal-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs chromium with `args` and a fresh profile; panics loudly when it cannot start or fails.
fn chromium(profile: &Path, args: &[String]) -> String {
    let mut child = Command::new("chromium")
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromium cannot start ({e}); `cargo xtask ci` installs Debian's chromium")
        });
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in {BROWSER_TIMEOUT:?}: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {args:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn dom(profile: &Path, url: &str) -> String {
    let html = chromium(profile, &["--dump-dom".into(), url.into()]);
    assert!(
        html.contains("</html>"),
        "a rendered document for {url}: {html}"
    );
    html
}

/// A screenshot to take: (url, file name, width, height).
type Shot = (String, &'static str, u32, u32);

/// Takes the screenshots, four browsers at a time (each in its own profile): a browser spends
/// most of its start waiting, so this costs a quarter of one after the other.
fn screenshots(dir: &Path, shots: Vec<Shot>) {
    for (n, chunk) in shots.chunks(4).enumerate() {
        std::thread::scope(|s| {
            for (i, (url, name, w, h)) in chunk.iter().enumerate() {
                let profile = dir.join(format!("shot-profile-{n}-{i}"));
                s.spawn(move || screenshot(&profile, url, name, *w, *h));
            }
        });
    }
}

fn screenshot(profile: &Path, url: &str, name: &str, width: u32, height: u32) {
    let file = screenshots_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    chromium(
        profile,
        &[
            format!("--screenshot={}", file.display()),
            format!("--window-size={width},{height}"),
            url.into(),
        ],
    );
    let bytes =
        std::fs::read(&file).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", file.display()));
    assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", file.display());
    assert!(bytes.len() > 5_000, "{} has content", file.display());
}

/// `1,234.56 USD` from cents, as the portal shows money.
fn usd(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let int = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02} USD", abs % 100)
}

/// The visible text of an HTML document (tags removed, entities of the portal decoded).
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

#[test]
fn every_page_renders_in_chromium_with_the_apis_numbers() {
    let dir = TestDir::new("portal-browser");
    let profile = dir.join("chromium-profile");
    let server = Server::start(&dir.data("data"), SERVE_FLAGS);
    let world = build(&server, 2);
    let c = &world[0];
    let base = format!("{}/portal/{}", server.base(), c.token);
    let mut shots: Vec<Shot> = Vec::new();

    // Overview.
    let up = ok(
        server.get(
            &format!("/v1/customers/{}/upcoming_invoice", c.key),
            ADMIN_KEY,
        ),
        200,
        "upcoming",
    );
    let html = dom(&profile, &base);
    let visible = text(&html);
    assert!(visible.contains(&c.name), "{visible}");
    assert!(visible.contains("Charges so far"), "{visible}");
    assert!(
        visible.contains(&usd(up["total_minor"].as_i64().unwrap())),
        "running total {} in {visible}",
        usd(up["total_minor"].as_i64().unwrap())
    );
    for l in up["lines"].as_array().unwrap() {
        assert!(
            visible.contains(&usd(l["amount_minor"].as_i64().unwrap())),
            "line {l} in {visible}"
        );
    }
    assert!(
        visible.contains("extrapolated linearly"),
        "the forecast states its method"
    );
    assert_eq!(
        attrs(&html, "data-total-minor")[0],
        up["total_minor"].to_string()
    );
    shots.push((base.clone(), "overview-laptop", 1280, 1000));
    shots.push((base.clone(), "overview-phone", 390, 1400));

    // Usage chart, grouped by host, per day over the last 20 days.
    let from = date_text(now_ms() - 20 * DAY_MS);
    let to = date_text(now_ms());
    let url = format!("{base}/usage?meter=bytes-out&from={from}&to={to}&group_by=host");
    let html = dom(&profile, &url);
    assert!(html.contains("<svg"), "a chart");
    let visible = text(&html);
    assert!(
        visible.contains("Bytes out ("),
        "a labelled value axis: {visible}"
    );
    assert!(
        visible.contains(&format!("Time ({})", c.tz)),
        "a labelled time axis"
    );
    for h in &c.hosts {
        assert!(visible.contains(h.as_str()), "legend has {h}");
    }
    assert!(
        visible.contains(" MB") || visible.contains(" GB"),
        "readable units: {visible}"
    );
    let page_total: i128 = attrs(&html, "data-exact")
        .iter()
        .map(|v| v.parse::<i128>().unwrap())
        .sum();
    let tz = jiff::tz::TimeZone::get(c.tz).unwrap();
    let midnight = |d: &str| {
        d.parse::<jiff::civil::Date>()
            .unwrap()
            .to_zoned(tz.clone())
            .unwrap()
            .timestamp()
            .as_millisecond()
    };
    let api: i128 = server
        .usage_rows(
            "bytes-out",
            &format!(
                "subject={}&from={}&to={}",
                c.key,
                q(&rfc3339(midnight(&from))),
                q(&rfc3339(midnight(&date_text(now_ms() + DAY_MS))))
            ),
        )
        .iter()
        .map(int_value)
        .sum();
    assert_eq!(page_total, api, "the table sums to the API's usage");
    shots.push((url.clone(), "usage-laptop", 1280, 1300));
    shots.push((url.clone(), "usage-phone", 390, 1600));
    let hourly = format!("{base}/usage?meter=requests&window=hour&from={to}&to={to}");
    let html = dom(&profile, &hourly);
    assert!(html.contains("<svg"));
    shots.push((hourly.clone(), "usage-hourly-laptop", 1280, 1100));

    // Invoices and the detail of the first one.
    let inv_id = &c.invoices[0];
    let inv = ok(
        server.get(&format!("/v1/invoices/{inv_id}"), ADMIN_KEY),
        200,
        "inv",
    );
    let html = dom(&profile, &format!("{base}/invoices"));
    let visible = text(&html);
    assert!(
        visible.contains(inv["number"].as_str().unwrap()),
        "{visible}"
    );
    assert!(visible.contains(&usd(inv["total_minor"].as_i64().unwrap())));
    shots.push((format!("{base}/invoices"), "invoices-laptop", 1280, 800));
    let url = format!("{base}/invoices/{inv_id}");
    let visible = text(&dom(&profile, &url));
    for l in inv["lines"].as_array().unwrap() {
        assert!(visible.contains(&usd(l["amount_minor"].as_i64().unwrap())));
    }
    assert!(visible.contains(&usd(inv["amount_due_minor"].as_i64().unwrap())));
    shots.push((url.clone(), "invoice-laptop", 1280, 1000));
    shots.push((url.clone(), "invoice-phone", 390, 1400));

    // Why am I charged: the metered line's days and events.
    let explain = ok(
        server.get(
            &format!("/v1/invoices/{inv_id}/lines/2/explain?limit=50"),
            ADMIN_KEY,
        ),
        200,
        "explain",
    );
    let url = format!("{base}/invoices/{inv_id}/lines/2");
    let html = dom(&profile, &url);
    let ids = attrs(&html, "data-event-id");
    let api_ids: Vec<String> = explain["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, api_ids);
    assert_eq!(
        attrs(&html, "data-exact")[0],
        explain["line"]["quantity"].as_str().unwrap()
    );
    shots.push((url.clone(), "line-laptop", 1280, 1400));

    // A link that does not work shows a page that says so.
    let html = dom(&profile, &format!("{}/portal/{}x", server.base(), c.token));
    assert!(text(&html).contains("This link does not open the portal"));
    shots.push((
        format!("{}/portal/{}x", server.base(), c.token),
        "expired-phone",
        390,
        700,
    ));
    screenshots(dir.path(), shots);
}
