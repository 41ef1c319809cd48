//! Traffic inspection against the real server: versioned rule sets (publish, list, get,
//! current, optimistic concurrency), their audit records with the publishing key, decisions
//! that follow the documented precedence with country and ASN from a MaxMind-format database
//! built by the test, flags and blocks recorded as events and metered, typed errors, and the
//! current version surviving a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn post(server: &Server, path: &str, key: &str, body: &Value) -> Reply {
    post_text(server, path, key, &body.to_string())
}

fn post_text(server: &Server, path: &str, key: &str, body: &str) -> Reply {
    server.request(
        "POST",
        path,
        Some(key),
        Some("application/json"),
        Some(reqwest::blocking::Body::from(body.to_owned())),
    )
}

fn publish(server: &Server, key: &str, set: &Value) -> Reply {
    post(server, "/v1/inspect/rule_sets", key, set)
}

fn decide(server: &Server, body: &Value) -> Value {
    let r = post(server, "/v1/inspect/decide", ADMIN_KEY, body);
    assert_eq!(r.status, 200, "decide {body}: {}", r.body);
    r.body
}

/// A MaxMind DB: 192.0.2.0/24 is in DE, AS 64500 (written with `mmdb-writer`).
fn write_mmdb(path: &std::path::Path) {
    #[derive(serde::Serialize)]
    struct Country<'a> {
        iso_code: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Record<'a> {
        country: Country<'a>,
        autonomous_system_number: u32,
        autonomous_system_organization: &'a str,
    }
    let mut writer = mmdb_writer::Writer::new("Tollgate-Test");
    writer
        .insert(
            "192.0.2.0/24".parse::<ipnet::IpNet>().unwrap(),
            &Record {
                country: Country { iso_code: "DE" },
                autonomous_system_number: 64500,
                autonomous_system_organization: "Example Networks",
            },
        )
        .unwrap();
    std::fs::write(path, writer.to_bytes().unwrap()).unwrap();
}

/// The rule set the precedence checks run against (one rule per precedence step).
fn precedence_rules() -> Value {
    json!({
        "categories": {"gambling": ["casino.example"], "malware": ["evil.example"]},
        "rules": [
            {"id": "cat-gambling", "host": {"category": "gambling"}, "action": "flag"},
            {"id": "cat-malware", "host": {"category": "malware"}, "action": "block"},
            {"id": "sfx-example", "host": {"suffix": "example.com"}, "action": "flag", "category": "generic"},
            {"id": "sfx-bad", "host": {"suffix": "bad.example.com"}, "action": "block", "category": "malware"},
            {"id": "exact-api", "host": {"exact": "api.example.com"}, "action": "allow"},
            {"id": "path-admin", "host": {"suffix": "example.com"}, "path_prefix": "/admin", "action": "block", "category": "admin"},
            {"id": "tracker", "host": {"exact": "tracker.test"}, "action": "flag", "category": "tracking"},
            {"id": "tracker-de", "host": {"exact": "tracker.test"}, "country": "DE", "action": "block", "category": "tracking"},
            {"id": "cdn", "host": {"suffix": "cdn.test"}, "action": "allow"},
            {"id": "cdn-as64500", "host": {"suffix": "cdn.test"}, "asn": 64500, "action": "block", "category": "asn"},
            {"id": "tie-flag", "host": {"exact": "tie.test"}, "action": "flag"},
            {"id": "tie-block", "host": {"exact": "tie.test"}, "action": "block"},
            {"id": "anywhere-de", "country": "DE", "action": "flag", "category": "geo"}
        ]
    })
}

#[test]
fn versions_are_published_audited_listed_and_survive_a_restart() {
    let dir = TestDir::new("inspect-versions");
    let data = dir.data("data");
    let mut server = Server::start(&data, &[]);
    assert_error(
        &server.get("/v1/inspect/rule_sets/current", ADMIN_KEY),
        404,
        "rule_set_not_found",
    );
    // No version yet: everything is allowed and nothing recorded.
    let d = decide(
        &server,
        &json!({"customer": "cus_a", "client_ip": "198.51.100.1", "dest_host": "x.example.com"}),
    );
    assert_eq!(
        (
            &d["action"],
            &d["rule"],
            &d["rule_set_version"],
            &d["event"]
        ),
        (&json!("allow"), &Value::Null, &Value::Null, &Value::Null)
    );

    let (other_id, other_key) = server.create_key(&["admin"]);
    let v1 = json!({"rules": [
        {"id": "r1", "host": {"suffix": "example.com"}, "action": "flag"},
        {"id": "r2", "host": {"exact": "gone.test"}, "action": "block"}
    ]});
    let r = publish(&server, ADMIN_KEY, &v1);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["version"].as_u64(), r.body["rules"].as_u64()),
        (Some(1), Some(2))
    );
    let admin_id = r.body["created_by"].as_str().unwrap().to_owned();
    assert!(admin_id.starts_with("key_"), "{}", r.body);

    let v2 = json!({
        "base_version": 1,
        "categories": {"news": ["news.test"]},
        "rules": [
            {"id": "r1", "host": {"suffix": "example.com"}, "action": "block"},
            {"id": "r3", "host": {"category": "news"}, "action": "flag"}
        ]
    });
    let r = publish(&server, &other_key, &v2);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["version"].as_u64(), r.body["created_by"].as_str()),
        (Some(2), Some(other_id.as_str()))
    );
    // A publish based on a stale version is refused; nothing changes.
    let stale = publish(&server, ADMIN_KEY, &json!({"base_version": 1, "rules": []}));
    assert_error(&stale, 409, "rule_set_version_conflict");
    assert_eq!(stale.body["error"]["details"]["current"], 2);

    // Invalid sets are refused with stable codes and never stored.
    for (set, status, code) in [
        (
            json!({"rules": [{"id": "a", "action": "flag"}, {"id": "a", "action": "block"}]}),
            400,
            "duplicate_rule",
        ),
        (
            json!({"rules": [{"id": "a", "host": {"category": "nope"}, "action": "flag"}]}),
            400,
            "unknown_category",
        ),
        (
            json!({"rules": [{"id": "", "action": "flag"}]}),
            400,
            "invalid_rule",
        ),
        (
            json!({"rules": [{"id": "a", "action": "deny"}]}),
            400,
            "invalid_body",
        ),
        (
            json!({"rules": [{"id": "a", "action": "flag", "colour": "red"}]}),
            400,
            "invalid_body",
        ),
    ] {
        assert_error(&publish(&server, ADMIN_KEY, &set), status, code);
    }
    assert_error(
        &post_text(&server, "/v1/inspect/rule_sets", ADMIN_KEY, "{\"rules\": ["),
        400,
        "malformed_json",
    );
    let (_, reader) = server.create_key(&["read"]);
    assert_error(&publish(&server, &reader, &v1), 403, "insufficient_scope");

    // The list, one version, the current one.
    let list = server.get("/v1/inspect/rule_sets", &reader);
    assert_eq!(list.status, 200, "{}", list.body);
    let versions: Vec<_> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["created_by"].as_str().unwrap().to_owned(),
                v["rules"].as_u64().unwrap(),
                v["categories"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![(2, other_id.clone(), 2, 1), (1, admin_id.clone(), 2, 0)]
    );
    let page = server.get("/v1/inspect/rule_sets?before=2&limit=1", &reader);
    assert_eq!(page.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["data"][0]["version"], 1);
    let got1 = server.get("/v1/inspect/rule_sets/1", &reader);
    assert_eq!(got1.status, 200, "{}", got1.body);
    assert_eq!(got1.body["rules"], v1["rules"]);
    assert_eq!(got1.body["categories"], json!({}));
    let current = server.get("/v1/inspect/rule_sets/current", &reader);
    assert_eq!(current.body["version"], 2);
    assert_eq!(current.body["rules"], v2["rules"]);
    assert_eq!(current.body["digest"], list.body["data"][0]["digest"]);
    assert_error(
        &server.get("/v1/inspect/rule_sets/9", &reader),
        404,
        "rule_set_not_found",
    );
    assert_error(
        &server.get("/v1/inspect/rule_sets/latest", &reader),
        400,
        "invalid_version",
    );
    assert_error(
        &server.get("/v1/inspect/rule_sets?before=x", &reader),
        400,
        "invalid_before",
    );

    // Audit: who, what before and after.
    let audit = server.get("/v1/audit?kind=inspect_rules", ADMIN_KEY);
    assert_eq!(audit.status, 200, "{}", audit.body);
    let records = audit.body["data"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{}", audit.body);
    assert_eq!(
        (
            &records[0]["actor"],
            &records[0]["action"],
            &records[0]["object"]
        ),
        (&json!(admin_id), &json!("publish"), &json!("1"))
    );
    assert_eq!(records[0]["before"], Value::Null);
    assert_eq!(records[0]["after"]["changes"]["added"], json!(["r1", "r2"]));
    assert_eq!(records[1]["actor"], json!(other_id));
    assert_eq!(records[1]["before"]["version"], 1);
    assert_eq!(records[1]["after"]["version"], 2);
    assert_eq!(
        records[1]["after"]["changes"],
        json!({"added": ["r3"], "removed": ["r2"], "changed": ["r1"],
               "categories_changed": ["news"], "truncated": false})
    );
    assert_eq!(records[1]["after"]["digest"], current.body["digest"]);

    let decide_v = |server: &Server| {
        decide(
            server,
            &json!({"customer": "cus_a", "client_ip": "198.51.100.1", "dest_host": "www.example.com"}),
        )
    };
    let d = decide_v(&server);
    assert_eq!(
        (&d["action"], &d["rule"], &d["rule_set_version"]),
        (&json!("block"), &json!("r1"), &json!(2))
    );

    // A restart compiles the highest stored version again.
    server.stop();
    let server = Server::start(&data, &[]);
    let d = decide_v(&server);
    assert_eq!(
        (&d["action"], &d["rule"], &d["rule_set_version"]),
        (&json!("block"), &json!("r1"), &json!(2))
    );
    assert_eq!(
        server.get("/v1/inspect/rule_sets/current", ADMIN_KEY).body["version"],
        2
    );
    let r = publish(&server, ADMIN_KEY, &json!({"base_version": 2, "rules": []}));
    assert_eq!(r.body["version"], 3, "{}", r.body);
    assert_eq!(decide_v(&server)["action"], "allow");
}

#[test]
fn decisions_follow_the_precedence_with_enrichment() {
    let dir = TestDir::new("inspect-precedence");
    let db = dir.join("geo.mmdb");
    write_mmdb(&db);
    let server = Server::start(
        &dir.data("data"),
        &["--enrichment-db", db.to_str().unwrap()],
    );
    let r = publish(&server, ADMIN_KEY, &precedence_rules());
    assert_eq!(r.status, 201, "{}", r.body);
    const DE: &str = "192.0.2.10";
    const ELSEWHERE: &str = "198.51.100.1";
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: &[Case<'_>] = &[
        // (client, host, path, action, rule, category)
        (
            ELSEWHERE,
            "www.casino.example",
            "/",
            "flag",
            Some("cat-gambling"),
            Some("gambling"),
        ),
        (
            ELSEWHERE,
            "casino.example",
            "/",
            "flag",
            Some("cat-gambling"),
            Some("gambling"),
        ),
        (
            ELSEWHERE,
            "x.evil.example",
            "/",
            "block",
            Some("cat-malware"),
            Some("malware"),
        ),
        // exact beats suffix
        (
            ELSEWHERE,
            "api.example.com",
            "/",
            "allow",
            Some("exact-api"),
            None,
        ),
        (
            ELSEWHERE,
            "API.Example.COM.",
            "/",
            "allow",
            Some("exact-api"),
            None,
        ),
        // a longer suffix beats a shorter one
        (
            ELSEWHERE,
            "x.bad.example.com",
            "/",
            "block",
            Some("sfx-bad"),
            Some("malware"),
        ),
        (
            ELSEWHERE,
            "www.example.com",
            "/",
            "flag",
            Some("sfx-example"),
            Some("generic"),
        ),
        // same host rank: the longer path prefix wins
        (
            ELSEWHERE,
            "www.example.com",
            "/admin/users",
            "block",
            Some("path-admin"),
            Some("admin"),
        ),
        // same host and path: more of country/ASN wins (country from enrichment)
        (
            DE,
            "tracker.test",
            "/",
            "block",
            Some("tracker-de"),
            Some("tracking"),
        ),
        (
            ELSEWHERE,
            "tracker.test",
            "/",
            "flag",
            Some("tracker"),
            Some("tracking"),
        ),
        (
            DE,
            "a.cdn.test",
            "/",
            "block",
            Some("cdn-as64500"),
            Some("asn"),
        ),
        (ELSEWHERE, "a.cdn.test", "/", "allow", Some("cdn"), None),
        // a tie goes to the stricter action
        (ELSEWHERE, "tie.test", "/", "block", Some("tie-block"), None),
        // any host condition beats none; with none, the host-less rule decides
        (
            DE,
            "www.example.com",
            "/",
            "flag",
            Some("sfx-example"),
            Some("generic"),
        ),
        (
            DE,
            "other.org",
            "/",
            "flag",
            Some("anywhere-de"),
            Some("geo"),
        ),
        (ELSEWHERE, "other.org", "/", "allow", None, None),
    ];
    for (client, host, path, action, rule, category) in cases {
        let d = decide(
            &server,
            &json!({"customer": "cus_p", "client_ip": client, "dest_host": host, "path": path}),
        );
        assert_eq!(
            (
                d["action"].as_str(),
                d["rule"].as_str(),
                d["category"].as_str()
            ),
            (Some(*action), *rule, *category),
            "{client} {host}{path}: {d}"
        );
        assert_eq!(d["rule_set_version"], 1);
        assert_eq!(d["event"].is_null(), *action == "allow", "{d}");
    }
    let d = decide(
        &server,
        &json!({"customer": "cus_p", "client_ip": DE, "dest_host": "tracker.test"}),
    );
    assert_eq!((&d["country"], &d["asn"]), (&json!("DE"), &json!(64500)));
    let d = decide(
        &server,
        &json!({"customer": "cus_p", "client_ip": "::ffff:192.0.2.10", "dest_host": "tracker.test"}),
    );
    assert_eq!(
        d["rule"], "tracker-de",
        "an IPv4-mapped address is enriched as IPv4: {d}"
    );
}

#[test]
fn flags_and_blocks_are_recorded_and_metered() {
    let dir = TestDir::new("inspect-meter");
    let server = Server::start(&dir.data("data"), &[]);
    let r = publish(
        &server,
        ADMIN_KEY,
        &json!({
            "categories": {"gambling": ["casino.example"]},
            "rules": [
                {"id": "cat-gambling", "host": {"category": "gambling"}, "action": "flag"},
                {"id": "sfx-example", "host": {"suffix": "example.com"}, "action": "flag", "category": "generic"},
                {"id": "blk-bad", "host": {"suffix": "bad.test"}, "action": "block", "category": "malware"},
                {"id": "blk-admin", "host": {"suffix": "example.com"}, "path_prefix": "/admin", "action": "block"}
            ]
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(
        &server,
        "/v1/ip/allocations",
        ADMIN_KEY,
        &json!({"customer": "cus_owner", "cidr": "203.0.113.0/24",
                "valid_from": rfc3339(floor_minute(now_ms()) - DAY_MS)}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for (slug, def) in [
        (
            "blocked-by-rule",
            json!({"event_type": "inspect.blocked", "aggregation": "count",
                   "group_by": {"rule": "$.data.rule"}}),
        ),
        (
            "flagged-bytes",
            json!({"event_type": "inspect.flagged", "aggregation": "sum",
                   "value_path": "$.data.bytes", "group_by": {"category": "$.data.category"}}),
        ),
    ] {
        let r = server.put_meter(slug, &def);
        assert_eq!(r.status, 201, "{slug}: {}", r.body);
    }
    let d = |customer: Option<&str>,
             ip: &str,
             host: &str,
             path: &str,
             bytes: u64,
             request_id: Option<&str>| {
        let mut body = json!({"client_ip": ip, "dest_host": host, "path": path, "bytes": bytes});
        if let Some(c) = customer {
            body["customer"] = json!(c);
        }
        if let Some(id) = request_id {
            body["request_id"] = json!(id);
        }
        decide(&server, &body)
    };
    let elsewhere = "198.51.100.7";
    // cus_a: flagged 100 + 50 bytes gambling, 7 generic; blocked twice by blk-bad, once blk-admin.
    let first = d(
        Some("cus_a"),
        elsewhere,
        "casino.example",
        "/",
        100,
        Some("req-1"),
    );
    assert_eq!(
        first["event"],
        json!({"id": "req-1", "type": "inspect.flagged", "verdict": "accepted"})
    );
    d(
        Some("cus_a"),
        elsewhere,
        "www.casino.example",
        "/",
        50,
        None,
    );
    d(Some("cus_a"), elsewhere, "www.example.com", "/", 7, None);
    let blocked = d(Some("cus_a"), elsewhere, "x.bad.test", "/", 1, None);
    assert_eq!(blocked["event"]["type"], "inspect.blocked");
    assert!(
        blocked["event"]["id"]
            .as_str()
            .unwrap()
            .starts_with("insp_"),
        "{blocked}"
    );
    d(Some("cus_a"), elsewhere, "bad.test", "/", 1, None);
    d(
        Some("cus_a"),
        elsewhere,
        "www.example.com",
        "/admin",
        1,
        None,
    );
    // The same request id again counts once: with the same content it is a duplicate, with
    // another time a conflict.
    let time = rfc3339(floor_minute(now_ms()) - MINUTE_MS);
    let retry = |time: &str| {
        decide(
            &server,
            &json!({"customer": "cus_a", "client_ip": elsewhere, "dest_host": "casino.example",
                    "bytes": 1000, "request_id": "req-2", "time": time}),
        )
    };
    assert_eq!(retry(&time)["event"]["verdict"], "accepted");
    assert_eq!(retry(&time)["event"]["verdict"], "duplicate");
    assert_eq!(
        retry(&rfc3339(floor_minute(now_ms()) - 2 * MINUTE_MS))["event"]["verdict"],
        "conflict"
    );
    // No customer: attributed from the client address's allocation, else `unattributed`.
    let owned = d(None, "203.0.113.9", "casino.example", "/", 5, None);
    assert_eq!(owned["customer"], "cus_owner");
    d(None, "203.0.113.9", "bad.test", "/", 1, None);
    let nobody = d(None, elsewhere, "bad.test", "/", 1, None);
    assert_eq!(nobody["customer"], "unattributed");
    // Allowed requests are not recorded.
    let allowed = d(Some("cus_a"), elsewhere, "other.org", "/", 999, None);
    assert_eq!(
        (&allowed["action"], &allowed["event"]),
        (&json!("allow"), &Value::Null)
    );

    let from = q(&rfc3339(floor_minute(now_ms()) - DAY_MS));
    let to = q(&rfc3339(floor_minute(now_ms()) + 10 * MINUTE_MS));
    let table = |meter: &str, dim: &str| {
        let rows = server.usage_rows(meter, &format!("from={from}&to={to}&group_by={dim}"));
        let mut out = std::collections::BTreeMap::new();
        for row in &rows {
            let key = (
                row["subject"].as_str().unwrap().to_owned(),
                row["group"][dim].as_str().unwrap_or("-").to_owned(),
            );
            assert!(out.insert(key, int_value(row)).is_none(), "{row}");
        }
        out
    };
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    // A decision is answered once its event is durable, and counted in usage a moment later
    // (when the apply thread has folded it in): wait for that moment, within a bound.
    let settled = |meter: &str, dim: &str, want: &[((String, String), i128)]| {
        let want: std::collections::BTreeMap<_, _> = want.iter().cloned().collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let got = table(meter, dim);
            if got == want || std::time::Instant::now() > deadline {
                assert_eq!(got, want, "{meter} by {dim}");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    settled(
        "blocked-by-rule",
        "rule",
        &[
            (s("cus_a", "blk-admin"), 1),
            (s("cus_a", "blk-bad"), 2),
            (s("cus_owner", "blk-bad"), 1),
            (s("unattributed", "blk-bad"), 1),
        ],
    );
    settled(
        "flagged-bytes",
        "category",
        &[
            (s("cus_a", "gambling"), 100 + 50 + 1000),
            (s("cus_a", "generic"), 7),
            (s("cus_owner", "gambling"), 5),
        ],
    );
}

#[test]
fn decide_errors_are_typed() {
    let dir = TestDir::new("inspect-errors");
    let server = Server::start(&dir.data("data"), &[]);
    let r = publish(
        &server,
        ADMIN_KEY,
        &json!({"rules": [{"id": "all", "action": "flag"}]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let ok = json!({"customer": "cus_a", "client_ip": "198.51.100.1", "dest_host": "a.test"});
    assert_eq!(decide(&server, &ok)["action"], "flag");
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let long = "a".repeat(300);
    let cases: Vec<(Value, u16, &str)> = vec![
        (with("client_ip", json!("10.0.0.300")), 400, "invalid_ip"),
        (with("dest_host", json!("")), 400, "invalid_host"),
        (with("dest_host", json!("a b.test")), 400, "invalid_host"),
        (with("dest_host", json!(long)), 400, "invalid_host"),
        (with("path", json!("/".repeat(9000))), 400, "invalid_path"),
        (with("customer", json!("")), 400, "invalid_customer"),
        (with("customer", json!(long)), 400, "invalid_customer"),
        (with("request_id", json!(long)), 400, "invalid_request_id"),
        (with("time", json!("yesterday")), 400, "invalid_time"),
        (with("time", json!("2001-01-01T00:00:00Z")), 400, "too_old"),
        (with("bytes", json!(-1)), 400, "invalid_body"),
        (with("colour", json!("red")), 400, "invalid_body"),
        (without("client_ip"), 400, "invalid_body"),
        (without("dest_host"), 400, "invalid_body"),
    ];
    for (body, status, code) in &cases {
        let r = post(&server, "/v1/inspect/decide", ADMIN_KEY, body);
        assert_error(&r, *status, code);
    }
    assert_error(
        &post_text(&server, "/v1/inspect/decide", ADMIN_KEY, "{"),
        400,
        "malformed_json",
    );
    assert_error(
        &post_text(
            &server,
            "/v1/inspect/decide",
            ADMIN_KEY,
            &format!("{{\"dest_host\": \"{}\"}}", "a".repeat(20_000)),
        ),
        413,
        "body_too_large",
    );
    let (_, reader) = server.create_key(&["read"]);
    assert_error(
        &post(&server, "/v1/inspect/decide", &reader, &ok),
        403,
        "insufficient_scope",
    );
    let (_, ingest) = server.create_key(&["ingest"]);
    let r = post(&server, "/v1/inspect/decide", &ingest, &ok);
    assert_eq!(r.status, 200, "an ingest key decides: {}", r.body);
    assert_error(
        &server.request(
            "POST",
            "/v1/inspect/decide",
            None,
            Some("application/json"),
            Some(reqwest::blocking::Body::from(ok.to_string())),
        ),
        401,
        "missing_api_key",
    );
}
