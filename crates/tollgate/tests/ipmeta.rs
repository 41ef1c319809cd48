//! IP metadata against the real server: allocations over time, longest-prefix lookups,
//! attribution of events without subject (including the `unattributed` bucket), the audit log,
//! typed errors, and enrichment from a MaxMind-format database built by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn post(server: &Server, path: &str, key: &str, body: &Value) -> Reply {
    server.request(
        "POST",
        path,
        Some(key),
        Some("application/json"),
        Some(reqwest::blocking::Body::from(body.to_string())),
    )
}

fn allocate(server: &Server, customer: &str, cidr: &str, from: i64, to: Option<i64>) -> Reply {
    let mut body = json!({"customer": customer, "cidr": cidr, "valid_from": rfc3339(from)});
    if let Some(to) = to {
        body["valid_to"] = json!(rfc3339(to));
    }
    post(server, "/v1/ip/allocations", ADMIN_KEY, &body)
}

#[test]
fn allocations_lookups_attribution_and_audit() {
    let dir = TestDir::new("ipmeta");
    let server = Server::start(&dir.data("data"), &[]);
    let now = floor_minute(now_ms());
    let t0 = now - 2 * HOUR_MS;
    let t1 = now - 30 * MINUTE_MS;

    let wide = allocate(&server, "cus_a", "10.0.0.0/8", t0, None);
    assert_eq!(wide.status, 201, "{}", wide.body);
    assert!(wide.body["id"].as_str().unwrap().starts_with("alc_"));
    let narrow = allocate(&server, "cus_b", "10.1.0.0/16", t0, Some(t1));
    assert_eq!(narrow.status, 201, "{}", narrow.body);
    assert_error(
        &allocate(&server, "cus_c", "10.1.0.0/16", t0 + HOUR_MS, None),
        409,
        "allocation_overlap",
    );
    assert_eq!(
        allocate(&server, "cus_c", "10.1.0.0/16", t1, None).status,
        201
    );
    assert_eq!(
        allocate(&server, "cus_v6", "2001:db8::/32", t0, None).status,
        201
    );
    assert_error(
        &allocate(&server, "cus_x", "10.0.0.1/8", t0, None),
        400,
        "invalid_cidr",
    );
    assert_error(
        &allocate(&server, "cus_x", "10.9.0.0/16", t0, Some(t0)),
        400,
        "invalid_validity",
    );
    assert_error(
        &server.get("/v1/ip/not-an-ip", ADMIN_KEY),
        400,
        "invalid_ip",
    );

    // Longest prefix valid at the instant.
    let owner = |addr: &str, at: i64| {
        let r = server.get(&format!("/v1/ip/{addr}?at={}", q(&rfc3339(at))), ADMIN_KEY);
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    let b = owner("10.1.2.3", t0 + MINUTE_MS);
    assert_eq!(
        (b["subject"].as_str(), b["owner"]["cidr"].as_str()),
        (Some("cus_b"), Some("10.1.0.0/16"))
    );
    assert_eq!(owner("10.1.2.3", t1)["subject"], "cus_c");
    assert_eq!(owner("10.200.0.1", t1)["subject"], "cus_a");
    assert_eq!(owner("10.1.2.3", t0 - MINUTE_MS)["owner"], Value::Null);
    assert_eq!(owner("192.0.2.1", now)["subject"], "unattributed");
    assert_eq!(owner("2001:db8:1::5", now)["subject"], "cus_v6");
    assert_eq!(owner("::ffff:10.1.0.1", now)["address"], "10.1.0.1");

    // Attribution of events without subject, for a configured source.
    let configured = post(
        &server,
        "/v1/ip/attribution_sources",
        ADMIN_KEY,
        &json!({"source": "/edge", "address_field": "client_ip"}),
    );
    assert_eq!(configured.status, 200, "{}", configured.body);
    assert!(
        configured.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["source"] == "/edge")
    );
    assert_eq!(
        server
            .put_meter("requests", &json!({"aggregation": "count"}))
            .status,
        201
    );
    let edge = |id: &str, at: i64, ip: &str| {
        json!({"specversion": "1.0", "id": id, "source": "/edge", "type": "proxy.request",
               "time": rfc3339_ms(at), "data": {"client_ip": ip}})
    };
    let mut explicit = edge("e5", now - MINUTE_MS, "10.1.0.5");
    explicit["subject"] = json!("cus_explicit");
    let mut unconfigured = edge("e6", now - MINUTE_MS, "10.1.0.5");
    unconfigured["source"] = json!("/elsewhere");
    let batch = vec![
        edge("e1", now - HOUR_MS, "10.1.0.5"),
        edge("e2", now - 10 * MINUTE_MS, "10.1.0.5"),
        edge("e3", now - 10 * MINUTE_MS, "192.0.2.44"),
        edge("e4", now - 10 * MINUTE_MS, "2001:db8::99"),
        explicit,
        unconfigured,
    ];
    let first = server.ingest(&batch);
    assert_counts(&first, 5, 0, 0, 1);
    assert_eq!(
        error_codes(&first),
        vec![(5, "missing_attribute".to_owned())]
    );
    // Attribution is a function of the event and the allocations: a re-send is a duplicate.
    assert_counts(&server.ingest(&batch), 0, 5, 0, 1);
    let from = q(&rfc3339(now - 3 * HOUR_MS));
    let to = q(&rfc3339(now + MINUTE_MS));
    let rows = server.usage_rows("requests", &format!("from={from}&to={to}"));
    let counts = by_subject(&rows);
    let expected: std::collections::BTreeMap<String, i128> = [
        ("cus_b", 1),
        ("cus_c", 1),
        ("unattributed", 1),
        ("cus_v6", 1),
        ("cus_explicit", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, expected);

    // Closing an allocation keeps its history; the audit log says who, when, what.
    let id = wide.body["id"].as_str().unwrap();
    let closed = server.request(
        "DELETE",
        &format!("/v1/ip/allocations/{id}?at={}", q(&rfc3339(now))),
        Some(ADMIN_KEY),
        None,
        None,
    );
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.body["valid_to"], rfc3339(now));
    assert_eq!(owner("10.200.0.1", now - MINUTE_MS)["subject"], "cus_a");
    assert_eq!(owner("10.200.0.1", now)["subject"], "unattributed");
    let list = server.get("/v1/ip/allocations?customer=cus_a", ADMIN_KEY);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    let audit = server.get("/v1/audit?kind=ip_allocation", ADMIN_KEY);
    let records = audit.body["data"].as_array().unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| r["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["create", "create", "create", "create", "close"]
    );
    let close = &records[4];
    assert!(close["actor"].as_str().unwrap().starts_with("key_"));
    assert_eq!(close["before"]["valid_to"], Value::Null);
    assert_eq!(close["after"]["valid_to"], json!(now));
    let sources = server.get("/v1/audit?kind=attribution_source", ADMIN_KEY);
    assert_eq!(
        sources.body["data"][0]["after"]["address_field"],
        "client_ip"
    );

    // Scopes: reading needs `read`, changing needs `admin`.
    let (_, read_key) = server.create_key(&["read"]);
    assert_eq!(server.get("/v1/ip/10.1.0.1", &read_key).status, 200);
    assert_error(
        &post(
            &server,
            "/v1/ip/allocations",
            &read_key,
            &json!({"customer": "x", "cidr": "10.2.0.0/16"}),
        ),
        403,
        "insufficient_scope",
    );
}

/// A MaxMind DB with one network, written with `mmdb-writer` (readable by every MaxMind reader).
fn write_mmdb(path: &std::path::Path, country: &str, asn: u32) {
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
                country: Country { iso_code: country },
                autonomous_system_number: asn,
                autonomous_system_organization: "Example Networks",
            },
        )
        .unwrap();
    std::fs::write(path, writer.to_bytes().unwrap()).unwrap();
}

#[test]
fn enrichment_from_a_maxmind_database_reloads_without_restart() {
    let dir = TestDir::new("ipmeta-geo");
    let db = dir.join("geo.mmdb");
    write_mmdb(&db, "DE", 64500);
    let server = Server::start(
        &dir.data("data"),
        &["--enrichment-db", db.to_str().unwrap()],
    );
    let geo =
        |addr: &str| server.get(&format!("/v1/ip/{addr}"), ADMIN_KEY).body["enrichment"].clone();
    assert_eq!(
        geo("192.0.2.10"),
        json!({"country": "DE", "asn": 64500, "as_org": "Example Networks"})
    );
    assert_eq!(
        geo("198.51.100.1"),
        json!({"country": null, "asn": null, "as_org": null})
    );
    write_mmdb(&db, "FR", 64501);
    // Still the loaded copy until a reload.
    assert_eq!(geo("192.0.2.10")["country"], "DE");
    let reload = server.request(
        "POST",
        "/v1/ip/enrichment/reload",
        Some(ADMIN_KEY),
        None,
        None,
    );
    assert_eq!((reload.status, &reload.body["databases"]), (200, &json!(1)));
    assert_eq!(geo("192.0.2.10")["asn"], 64501);
    assert_eq!(geo("192.0.2.10")["country"], "FR");
    // A broken file is refused and the database in use stays.
    std::fs::write(&db, b"not a database").unwrap();
    assert_error(
        &server.request(
            "POST",
            "/v1/ip/enrichment/reload",
            Some(ADMIN_KEY),
            None,
            None,
        ),
        422,
        "enrichment_unreadable",
    );
    assert_eq!(geo("192.0.2.10")["country"], "FR");
}
