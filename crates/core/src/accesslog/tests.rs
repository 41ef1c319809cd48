//! Tests of `accesslog`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const COMBINED: &str = r#"192.0.2.7 - - [30/Nov/2026:15:50:55 +0100] "GET /a/b?c=1 HTTP/1.1" 200 612 "-" "curl/8.5.0""#;
const EXTENDED: &str = r#"192.0.2.7 - alice [30/Nov/2026:15:50:55 +0000] "POST /up HTTP/1.1" 201 17 "http://r/" "ua \"quoted\"" 254 1234 0.003 "127.0.0.1:8081" "api.example.com""#;
const SQUID: &str = "1764517855.123    456 192.0.2.8 TCP_MISS/200 1234 GET http://Example.COM:8080/x?y - HIER_DIRECT/127.0.0.1 text/html";

#[test]
fn nginx_combined() {
    let r = parse_line(LogFormat::Nginx, COMBINED).unwrap();
    assert_eq!(r.time.to_rfc3339(), "2026-11-30T14:50:55Z");
    assert_eq!(r.data["client_ip"], "192.0.2.7");
    assert_eq!(r.data["method"], "GET");
    assert_eq!(r.data["path"], "/a/b?c=1");
    assert_eq!(r.data["status"], 200);
    assert_eq!(r.data["body_bytes"], 612);
    assert_eq!(r.data["bytes_out"], 612);
    assert_eq!(r.data["user_agent"], "curl/8.5.0");
    assert!(r.data.get("referer").is_none());
}

#[test]
fn nginx_extended() {
    let r = parse_line(LogFormat::Nginx, EXTENDED).unwrap();
    assert_eq!(r.data["bytes_out"], 254);
    assert_eq!(r.data["body_bytes"], 17);
    assert_eq!(r.data["bytes_in"], 1234);
    assert_eq!(r.data["request_time"].to_string(), "0.003");
    assert_eq!(r.data["upstream"], "127.0.0.1:8081");
    assert_eq!(r.data["dest_host"], "api.example.com");
    assert_eq!(r.data["user_agent"], "ua \"quoted\"");
    let event = r.to_event(LogFormat::Nginx, "al-1");
    let parsed =
        crate::event::Event::parse(&event.replacen('{', "{\"subject\":\"s\",", 1), UnixMs(0))
            .unwrap();
    assert_eq!(parsed.source.as_str(), "tollgate/accesslog/nginx");
    assert!(event.contains("\"request_time\":0.003"));
}

#[test]
fn squid_native() {
    let r = parse_line(LogFormat::Squid, SQUID).unwrap();
    assert_eq!(r.time.0, 1_764_517_855_123);
    assert_eq!(r.data["client_ip"], "192.0.2.8");
    assert_eq!(r.data["status"], 200);
    assert_eq!(r.data["result_code"], "TCP_MISS");
    assert_eq!(r.data["bytes_out"], 1234);
    assert_eq!(r.data["elapsed_ms"], 456);
    assert_eq!(r.data["dest_host"], "example.com");
    assert_eq!(r.data["upstream"], "127.0.0.1");
    let connect = "1764517855.5 3 ::1 TCP_TUNNEL/200 99 CONNECT [2001:db8::1]:443 - HIER_DIRECT/2001:db8::1 -";
    let r = parse_line(LogFormat::Squid, connect).unwrap();
    assert_eq!(r.data["dest_host"], "2001:db8::1");
    assert_eq!(r.time.0, 1_764_517_855_500);
}

#[test]
fn bad_lines_are_typed() {
    for (format, line) in [
        (LogFormat::Nginx, "garbage"),
        (
            LogFormat::Nginx,
            r#"1.2.3.4 - - [nope] "GET / HTTP/1.1" 200 1 "-" "-""#,
        ),
        (
            LogFormat::Nginx,
            r#"1.2.3.4 - - [30/Nov/2026:15:50:55 +0000] "GET / HTTP/1.1" 2x0 1 "-" "-""#,
        ),
        (
            LogFormat::Nginx,
            r#"1.2.3.4 - - [30/Nov/2026:15:50:55 +0000] "GET / HTTP/1.1 200 1 "-" "-"#,
        ),
        (
            LogFormat::Squid,
            "1764517855.123 1 1.2.3.4 TCP_MISS 1 GET http://x/ - HIER_NONE/- -",
        ),
        (
            LogFormat::Squid,
            "soon 1 1.2.3.4 TCP_MISS/200 1 GET http://x/ - HIER_NONE/- -",
        ),
        (
            LogFormat::Squid,
            "1764517855.123 1 notanip TCP_MISS/200 1 GET http://x/ - HIER_NONE/- -",
        ),
    ] {
        let e = parse_line(format, line).unwrap_err();
        assert_eq!(e.code(), "unparsable_line", "{line}");
    }
    let long = "x".repeat(ACCESS_LOG_LINE_BYTES_MAX_TEST + 1);
    assert_eq!(
        parse_line(LogFormat::Squid, &long).unwrap_err().code(),
        "line_bytes_max"
    );
}

const ACCESS_LOG_LINE_BYTES_MAX_TEST: usize = crate::limits::ACCESS_LOG_LINE_BYTES_MAX;

#[test]
fn ids_depend_on_file_offset_and_content() {
    let key = file_key(b"first line\n");
    let a = event_id(key, 0, b"same");
    assert_eq!(a, event_id(key, 0, b"same"));
    assert_ne!(a, event_id(key, 5, b"same"));
    assert_ne!(a, event_id(key, 0, b"other"));
    assert_ne!(a, event_id(file_key(b"another first line\n"), 0, b"same"));
    assert_eq!(a.len(), 3 + 32);
}
