//! Tests for event parsing and validation: one fitting input per error code, the defaults and
//! the extension rules, and properties that the borrowed parse reads `data` and extensions as
//! serde_json's own `Value` does and that both forms fingerprint alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::limits::ACCEPTANCE_WINDOW_MS_DEFAULT;

const RECEIVED: UnixMs = UnixMs(1_780_000_000_000);

/// A valid event as a JSON object, to be changed by each test.
fn base() -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "specversion": "1.0",
        "id": "evt-1",
        "source": "//proxy/eu-1",
        "type": "proxy.request",
        "subject": "customer-42",
        "time": "2026-05-01T12:34:56.789Z",
        "data": {"bytes_out": 1200, "host": "example.com"}
    }) else {
        unreachable!()
    };
    map
}

fn parse_map(map: &serde_json::Map<String, Value>) -> Result<Event, EventError> {
    let text = serde_json::to_string(map).unwrap();
    let event = Event::parse(&text, RECEIVED)?;
    // `data` and the extensions are exactly what serde_json's own Value reads, and the
    // borrowed form fingerprints as the owned one.
    assert_eq!(event.data, map.get("data").cloned().unwrap_or(Value::Null));
    for (k, v) in &event.extensions {
        assert_eq!(Some(v), map.get(k), "extension {k}");
    }
    let borrowed = EventRef::parse(&text, RECEIVED)?;
    assert_eq!(
        crate::dedup::fingerprint(&borrowed),
        crate::dedup::fingerprint(&event),
        "fingerprints differ on {text}"
    );
    Ok(event)
}

fn code_of(result: Result<Event, EventError>) -> &'static str {
    result.expect_err("expected a rejection").code()
}

fn without(name: &str) -> serde_json::Map<String, Value> {
    let mut map = base();
    assert!(map.remove(name).is_some(), "base event has `{name}`");
    map
}

fn with(name: &str, value: Value) -> serde_json::Map<String, Value> {
    let mut map = base();
    map.insert(name.to_owned(), value);
    map
}

#[test]
fn valid_event_parses_with_every_field() {
    let mut map = base();
    map.insert("datacontenttype".into(), json!("application/json"));
    let event = parse_map(&map).unwrap();
    assert_eq!(event.id.as_str(), "evt-1");
    assert_eq!(event.source.as_str(), "//proxy/eu-1");
    assert_eq!(event.event_type.as_str(), "proxy.request");
    assert_eq!(event.subject.as_str(), "customer-42");
    assert_eq!(event.time, UnixMs(1_777_638_896_789));
    assert_eq!(event.time.to_rfc3339(), "2026-05-01T12:34:56.789Z");
    assert_eq!(event.time_text.as_deref(), Some("2026-05-01T12:34:56.789Z"));
    assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(
        event.data,
        json!({"bytes_out": 1200, "host": "example.com"})
    );
    assert!(event.extensions.is_empty());
    assert_eq!(event.id.to_string(), "evt-1");
}

#[test]
fn valid_event_with_leading_whitespace_and_offset_time_parses() {
    let raw = r#"
        {"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c",
         "time":"2026-05-01T14:00:00+02:00"}"#;
    let event = Event::parse(raw, RECEIVED).unwrap();
    // +02:00 is two hours ahead of UTC: the instant is 12:00Z.
    assert_eq!(event.time.to_rfc3339(), "2026-05-01T12:00:00Z");
    assert_eq!(event.data, Value::Null, "absent data is JSON null");
    assert_eq!(event.datacontenttype, None);
}

#[test]
fn missing_time_defaults_to_received() {
    let event = parse_map(&without("time")).unwrap();
    assert_eq!(event.time, RECEIVED);
    assert_eq!(event.time_text, None);
    assert!(event.attribute("time").is_none(), "no time text to report");
}

#[test]
fn given_time_is_not_replaced_by_received() {
    let event = parse_map(&base()).unwrap();
    assert_ne!(event.time, RECEIVED);
}

#[test]
fn malformed_event_for_non_json_non_object_and_trailing_garbage() {
    let cases = [
        "",
        "   ",
        "not json",
        "[1, 2]",
        "\"a string\"",
        "42",
        "null",
        "{",
        "{\"id\": }",
        "{\"specversion\":\"1.0\"} trailing",
        "{\"specversion\":\"1.0\"}{}",
    ];
    for raw in cases {
        let err = Event::parse(raw, RECEIVED).expect_err(raw);
        assert_eq!(err.code(), "malformed_event", "{raw:?} gave {err:?}");
        assert!(matches!(err, EventError::Malformed { .. }));
    }
    for value in [json!([1]), json!("x"), json!(1), Value::Null, json!(true)] {
        let err = Event::parse(&value.to_string(), RECEIVED).expect_err("not an object");
        assert_eq!(err.code(), "malformed_event", "{value} gave {err:?}");
    }
}

/// Nesting is limited exactly where serde_json's own parse of the whole event stops (its
/// recursion limit), in `data`, in extensions and in core attributes, and a deeper value is a
/// malformed event.
#[test]
fn nesting_stops_where_serde_json_stops() {
    for depth in [1usize, 2, 3, 60, 125, 126, 127, 128, 200, 5_000] {
        let array = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let object = format!("{}1{}", r#"{"k":"#.repeat(depth), "}".repeat(depth));
        for (attribute, value) in [
            ("data", &array),
            ("data", &object),
            ("ext", &array),
            ("id", &array),
        ] {
            let raw = format!(
                r#"{{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c","{attribute}":{value}}}"#
            )
            .replacen(r#""id":"a","#, "", usize::from(attribute == "id"));
            let oracle = serde_json::from_str::<Value>(&raw);
            match (Event::parse(&raw, RECEIVED), oracle) {
                (Ok(event), Ok(_)) => {
                    if attribute == "data" {
                        assert_eq!(event.data, serde_json::from_str::<Value>(value).unwrap());
                    }
                }
                (Err(e), Ok(_)) => {
                    // Only a type error may stop a value serde_json reads (`id` as an array).
                    assert_eq!(
                        (attribute, e.code()),
                        ("id", "invalid_attribute"),
                        "{depth}"
                    );
                }
                (Err(e), Err(_)) => assert_eq!(e.code(), "malformed_event", "{attribute} {depth}"),
                (Ok(_), Err(o)) => panic!("{attribute} at depth {depth} parsed; serde_json: {o}"),
            }
        }
    }
}

#[test]
fn syntax_error_inside_an_attribute_value_is_malformed_not_invalid() {
    // A broken value where a string attribute is expected is still broken JSON.
    let cases = [
        r#"{"specversion":"1.0","id": }"#,
        r#"{"type": tru}"#,
        r#"{"subject":"unterminated}"#,
        r#"{"time": [1, }"#,
        r#"{"id":"a" "source":"b"}"#,
    ];
    for raw in cases {
        let err = Event::parse(raw, RECEIVED).expect_err(raw);
        assert_eq!(err.code(), "malformed_event", "{raw:?} gave {err:?}");
    }
}

#[test]
fn invalid_attribute_for_non_string_required_attributes() {
    for name in [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
    ] {
        for (value, kind) in [
            (json!(7), "a number"),
            (json!(-1.5e3), "a number"),
            (json!(null), "null"),
            (json!(true), "a boolean"),
            (json!({"a": 1}), "an object"),
            (json!(["x"]), "an array"),
        ] {
            let err = parse_map(&with(name, value.clone())).expect_err(name);
            assert_eq!(
                err.code(),
                "invalid_attribute",
                "{name}={value} gave {err:?}"
            );
            let EventError::InvalidAttribute { message } = err else {
                unreachable!()
            };
            assert!(message.contains(name), "message names `{name}`: {message}");
            assert!(
                message.contains(&format!("must be a string, not {kind} ")),
                "message names the kind: {message}"
            );
        }
    }
}

#[test]
fn id_as_number_is_invalid_attribute() {
    let raw = r#"{"specversion":"1.0","id":123,"source":"s","type":"t","subject":"c"}"#;
    assert_eq!(code_of(Event::parse(raw, RECEIVED)), "invalid_attribute");
}

#[test]
fn bad_extension_names_are_invalid_attribute() {
    let long = "a".repeat(21);
    for name in [
        "Upper",
        "with-dash",
        "under_score",
        "dot.ted",
        "spa ce",
        "é",
        long.as_str(),
        "",
    ] {
        let err = parse_map(&with(name, json!("v"))).expect_err(name);
        assert_eq!(err.code(), "invalid_attribute", "{name:?} gave {err:?}");
    }
}

#[test]
fn good_extension_names_are_accepted() {
    let longest = "a".repeat(20);
    for name in [
        "traceparent",
        "x1",
        "0",
        "dataschema",
        "data_base64",
        longest.as_str(),
    ] {
        let event = parse_map(&with(name, json!("v"))).unwrap();
        assert_eq!(event.extensions, vec![(name.to_owned(), json!("v"))]);
    }
}

#[test]
fn duplicate_attributes_are_invalid_attribute() {
    let head = r#""specversion":"1.0","source":"s","type":"t","subject":"c""#;
    let cases = [
        format!(r#"{{{head},"id":"a","id":"b"}}"#),
        format!(r#"{{{head},"id":"a","subject":"d"}}"#),
        format!(r#"{{{head},"id":"a","data":1,"data":2}}"#),
        format!(r#"{{{head},"id":"a","ext":1,"ext":1}}"#),
        format!(
            r#"{{{head},"id":"a","time":"2026-01-01T00:00:00Z","time":"2026-01-01T00:00:00Z"}}"#
        ),
    ];
    for raw in &cases {
        let err = Event::parse(raw, RECEIVED).expect_err(raw);
        assert_eq!(err.code(), "invalid_attribute", "{raw} gave {err:?}");
        let EventError::InvalidAttribute { message } = err else {
            unreachable!()
        };
        assert!(message.contains("duplicate"), "{message}");
    }
}

#[test]
fn missing_attribute_for_each_required_attribute() {
    for name in ["specversion", "id", "source", "type", "subject"] {
        let err = parse_map(&without(name)).expect_err(name);
        assert_eq!(err, EventError::MissingAttribute { name });
        assert_eq!(err.code(), "missing_attribute");
    }
}

#[test]
fn optional_attributes_may_be_missing() {
    for name in ["time", "data"] {
        assert!(parse_map(&without(name)).is_ok(), "{name} is optional");
    }
}

#[test]
fn empty_attribute_for_each_required_string() {
    for name in ["id", "source", "type", "subject"] {
        let err = parse_map(&with(name, json!(""))).expect_err(name);
        assert_eq!(err, EventError::EmptyAttribute { name });
        assert_eq!(err.code(), "empty_attribute");
    }
}

#[test]
fn attribute_too_long_at_limit_plus_one_and_fine_at_limit() {
    let limits = [
        ("id", EVENT_ID_BYTES_MAX),
        ("source", EVENT_SOURCE_BYTES_MAX),
        ("type", EVENT_TYPE_BYTES_MAX),
        ("subject", EVENT_SUBJECT_BYTES_MAX),
    ];
    for (name, max) in limits {
        assert!(
            parse_map(&with(name, json!("x".repeat(max)))).is_ok(),
            "{name} at its limit"
        );
        let err = parse_map(&with(name, json!("x".repeat(max + 1)))).expect_err(name);
        assert_eq!(err, EventError::AttributeTooLong { name, max });
        assert_eq!(err.code(), "attribute_too_long");
    }
}

#[test]
fn attribute_limits_count_bytes_not_chars() {
    // 129 two-byte characters: 258 bytes, more than the 256-byte limit.
    let id = "é".repeat(129);
    let err = parse_map(&with("id", json!(id))).expect_err("bytes, not chars");
    assert_eq!(err.code(), "attribute_too_long");
}

#[test]
fn unsupported_specversion() {
    for found in ["0.3", "1", "1.0.0", "2.0", " 1.0"] {
        let err = parse_map(&with("specversion", json!(found))).expect_err(found);
        assert_eq!(
            err,
            EventError::UnsupportedSpecversion {
                found: found.to_owned()
            }
        );
        assert_eq!(err.code(), "unsupported_specversion");
    }
}

#[test]
fn invalid_time() {
    for found in [
        "yesterday",
        "",
        "2026-05-01",
        "2026-05-01T12:00:00",
        "2026-13-01T00:00:00Z",
        "1714567890",
    ] {
        let err = parse_map(&with("time", json!(found))).expect_err(found);
        assert_eq!(
            err,
            EventError::InvalidTime {
                found: found.to_owned()
            }
        );
        assert_eq!(err.code(), "invalid_time");
    }
}

#[test]
fn invalid_time_quotes_at_most_64_chars() {
    let long = "z".repeat(500);
    let err = parse_map(&with("time", json!(long))).expect_err("bad time");
    let EventError::InvalidTime { found } = err else {
        panic!("wrong error")
    };
    assert_eq!(found.len(), 64);
}

#[test]
fn event_too_large_above_limit() {
    let big = "x".repeat(EVENT_BYTES_MAX);
    let raw = serde_json::to_string(&with("data", json!(big))).unwrap();
    assert!(raw.len() > EVENT_BYTES_MAX);
    let err = Event::parse(&raw, RECEIVED).expect_err("too large");
    assert_eq!(err, EventError::TooLarge { bytes: raw.len() });
    assert_eq!(err.code(), "event_too_large");
}

#[test]
fn event_at_size_limit_is_accepted() {
    let small = serde_json::to_string(&with("data", json!(""))).unwrap();
    let pad = EVENT_BYTES_MAX - small.len();
    let raw = serde_json::to_string(&with("data", json!("x".repeat(pad)))).unwrap();
    assert_eq!(raw.len(), EVENT_BYTES_MAX);
    assert!(Event::parse(&raw, RECEIVED).is_ok());
}

#[test]
fn check_window_bounds() {
    let now = UnixMs(1_780_000_000_000);
    let window = ACCEPTANCE_WINDOW_MS_DEFAULT;
    let oldest = UnixMs(now.0 - window);
    let latest = UnixMs(now.0 + EVENT_FUTURE_MS_MAX);
    assert_eq!(check_window(now, now, window), Ok(()));
    assert_eq!(check_window(oldest, now, window), Ok(()));
    assert_eq!(check_window(latest, now, window), Ok(()));

    let too_old = UnixMs(oldest.0 - 1);
    let err = check_window(too_old, now, window).expect_err("too old");
    assert_eq!(
        err,
        EventError::TooOld {
            time: too_old,
            window_ms: window
        }
    );
    assert_eq!(err.code(), "too_old");
    assert!(err.to_string().contains("35 days"), "{err}");

    let in_future = UnixMs(latest.0 + 1);
    let err = check_window(in_future, now, window).expect_err("in future");
    assert_eq!(err, EventError::InFuture { time: in_future });
    assert_eq!(err.code(), "in_future");
}

#[test]
fn check_window_does_not_overflow_at_extremes() {
    // now - window and now + EVENT_FUTURE_MS_MAX saturate instead of wrapping around.
    assert_eq!(
        check_window(UnixMs(i64::MIN), UnixMs(i64::MIN + 10), 100),
        Ok(())
    );
    assert_eq!(
        check_window(UnixMs(i64::MAX), UnixMs(i64::MAX - 10), 0),
        Ok(())
    );
    assert_eq!(
        check_window(UnixMs(i64::MIN), UnixMs(0), 0).map_err(|e| e.code()),
        Err("too_old")
    );
}

#[test]
fn extensions_are_sorted_and_reachable() {
    let raw = r#"{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c",
        "zeta":1,"region":"eu","alpha":{"k":[1,2]},"data_base64":"AA==","dataschema":"urn:x"}"#;
    let event = Event::parse(raw, RECEIVED).unwrap();
    let names: Vec<&str> = event.extensions.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["alpha", "data_base64", "dataschema", "region", "zeta"]
    );
    for (name, want) in [
        ("zeta", json!(1)),
        ("region", json!("eu")),
        ("alpha", json!({"k": [1, 2]})),
        ("data_base64", json!("AA==")),
        ("dataschema", json!("urn:x")),
    ] {
        match event.attribute(name) {
            Some(AttributeRef::Json(v)) => assert_eq!(v, &want, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(event.attribute("beta").is_none());
    assert!(event.attribute("zzz").is_none());
}

#[test]
fn attribute_reaches_core_attributes() {
    let mut map = base();
    map.insert("datacontenttype".into(), json!("application/json"));
    let event = parse_map(&map).unwrap();
    let text = |name: &str| match event.attribute(name) {
        Some(AttributeRef::Str(s)) => s.to_owned(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(text("id"), "evt-1");
    assert_eq!(text("source"), "//proxy/eu-1");
    assert_eq!(text("type"), "proxy.request");
    assert_eq!(text("subject"), "customer-42");
    assert_eq!(text("specversion"), "1.0");
    assert_eq!(text("time"), "2026-05-01T12:34:56.789Z");
    assert_eq!(text("datacontenttype"), "application/json");
    match event.attribute("data") {
        Some(AttributeRef::Json(v)) => assert_eq!(v["bytes_out"], json!(1200)),
        other => panic!("data: {other:?}"),
    }
    assert!(
        parse_map(&base())
            .unwrap()
            .attribute("datacontenttype")
            .is_none()
    );
}

#[test]
fn numbers_in_data_are_kept_as_written() {
    let raw = r#"{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c",
        "data":{"big":123456789012345678901234567,"dec":1.50}}"#;
    let event = Event::parse(raw, RECEIVED).unwrap();
    assert_eq!(event.data["big"].to_string(), "123456789012345678901234567");
    assert_eq!(event.data["dec"].to_string(), "1.50");
}

#[test]
fn subject_parse_checks_emptiness_and_length() {
    assert_eq!(Subject::parse("c-1").unwrap().as_str(), "c-1");
    assert_eq!(Subject::parse("").unwrap_err().code(), "empty_attribute");
    let long = "s".repeat(EVENT_SUBJECT_BYTES_MAX + 1);
    assert_eq!(
        Subject::parse(&long).unwrap_err().code(),
        "attribute_too_long"
    );
    assert!(Subject::parse(&long[1..]).is_ok());
}

#[test]
fn every_error_code_is_distinct_snake_case() {
    let errors = [
        EventError::Malformed {
            message: String::new(),
        },
        EventError::InvalidAttribute {
            message: String::new(),
        },
        EventError::MissingAttribute { name: "id" },
        EventError::EmptyAttribute { name: "id" },
        EventError::AttributeTooLong { name: "id", max: 1 },
        EventError::UnsupportedSpecversion {
            found: String::new(),
        },
        EventError::InvalidTime {
            found: String::new(),
        },
        EventError::TooLarge { bytes: 0 },
        EventError::TooOld {
            time: UnixMs(0),
            window_ms: 0,
        },
        EventError::InFuture { time: UnixMs(0) },
    ];
    let mut codes: Vec<&str> = errors.iter().map(EventError::code).collect();
    assert!(
        codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

fn ext_name() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,20}".prop_filter("not a core attribute", |n| {
        !matches!(
            n.as_str(),
            "specversion"
                | "id"
                | "source"
                | "type"
                | "subject"
                | "time"
                | "datacontenttype"
                | "data"
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any well-formed event parses to exactly what was sent, whichever entry point reads it
    /// and in whatever order the extensions came.
    #[test]
    fn well_formed_events_round_trip(
        id in "[ -~]{1,40}",
        source in "[a-z/:.]{1,40}",
        event_type in "[a-z.]{1,30}",
        subject in "\\PC{1,20}",
        time_ms in 0i64..4_000_000_000_000,
        with_time in any::<bool>(),
        exts in prop::collection::btree_map(ext_name(), any::<i32>(), 0..6),
        value in any::<i64>(),
    ) {
        let mut map = serde_json::Map::new();
        // Extensions first and in reverse order, so that the parser has to sort them.
        for (k, v) in exts.iter().rev() {
            map.insert(k.clone(), json!(v));
        }
        map.insert("specversion".into(), json!("1.0"));
        map.insert("id".into(), json!(id));
        map.insert("source".into(), json!(source));
        map.insert("type".into(), json!(event_type));
        map.insert("subject".into(), json!(subject));
        map.insert("data".into(), json!({"v": value}));
        let time_text = UnixMs(time_ms).to_rfc3339();
        if with_time {
            map.insert("time".into(), json!(time_text));
        }
        let event = parse_map(&map).unwrap();
        prop_assert_eq!(event.id.as_str(), id.as_str());
        prop_assert_eq!(event.source.as_str(), source.as_str());
        prop_assert_eq!(event.event_type.as_str(), event_type.as_str());
        prop_assert_eq!(event.subject.as_str(), subject.as_str());
        prop_assert_eq!(event.time, if with_time { UnixMs(time_ms) } else { RECEIVED });
        prop_assert_eq!(&event.data, &json!({"v": value}));
        let want: Vec<(String, Value)> = exts.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        prop_assert_eq!(&event.extensions, &want);
        for (k, v) in &exts {
            let found = matches!(event.attribute(k), Some(AttributeRef::Json(x)) if *x == json!(v));
            prop_assert!(found, "extension {} not reachable", k);
        }
    }

    /// Parsing never panics, whatever the text.
    #[test]
    fn arbitrary_text_never_panics(raw in "\\PC{0,200}") {
        // Without a specversion no text is an event.
        prop_assume!(!raw.contains("specversion"));
        prop_assert!(Event::parse(&raw, RECEIVED).is_err());
        let prefixed = format!("{{{raw}");
        prop_assert!(Event::parse(&prefixed, RECEIVED).is_err());
    }

    /// The borrowed parse reads any `data` as serde_json's Value does (numbers as written,
    /// strings unescaped, repeated keys keep the last), and its fingerprint is the one of the
    /// owned event built from that Value.
    #[test]
    fn borrowed_data_matches_serde_json(data in json_text(3)) {
        let raw = format!(
            r#"{{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c","data":{data},"ext1":{data}}}"#
        );
        let oracle: Value = serde_json::from_str(&data).unwrap();
        let borrowed = EventRef::parse(&raw, RECEIVED).unwrap();
        prop_assert_eq!(&borrowed.data.to_value(), &oracle);
        let mut owned = borrowed.to_event();
        prop_assert_eq!(&owned.data, &oracle);
        prop_assert_eq!(
            crate::dedup::fingerprint(&borrowed),
            crate::dedup::fingerprint(&owned)
        );
        // The owned fingerprint of the oracle Value itself, not of a converted one.
        owned.data = oracle.clone();
        owned.extensions = vec![("ext1".into(), oracle)];
        prop_assert_eq!(
            crate::dedup::fingerprint(&borrowed),
            crate::dedup::fingerprint(&owned)
        );
    }
}

/// JSON text of any shape, with the spellings a sender may use: numbers with signs, fractions
/// and exponents, escaped and unescaped strings, repeated keys, whitespace.
fn json_text(depth: u32) -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (any::<i32>(), 0u32..1000).prop_map(|(a, b)| format!("{a}.{b:03}")),
        (any::<i16>(), "[eE]", "[-+]?", 0u32..30).prop_map(|(a, e, s, x)| format!("{a}{e}{s}{x}")),
        Just("-0".to_owned()),
        Just("0.10".to_owned()),
        Just("12345678901234567890123".to_owned()),
    ];
    let string = prop_oneof![
        "[a-z_ ]{0,8}".prop_map(|s| format!("\"{s}\"")),
        "[a-z]{0,4}".prop_map(|s| format!("\"{s}\\n\\u00e9\\\"\"")),
        // Brackets, separators and escaped backslashes inside strings, where a scan that
        // only tracks structure could lose its place.
        "[a-z{}\\[\\],: ]{0,8}".prop_map(|s| format!("\"{s}\\\\\\\"]}}\"")),
    ];
    let leaf = prop_oneof![
        number,
        string,
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("null".to_owned()),
    ];
    // Keys collide often (so repeats are tested), sometimes spelled with an escape.
    let key = prop_oneof![
        4 => "[a-c]{1,2}",
        1 => Just("\\u0061".to_owned()),
        1 => Just("b\\\"".to_owned()),
    ];
    let space = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just(" \r\n ")];
    leaf.prop_recursive(depth, 24, 5, move |inner| {
        let key = key.clone();
        let space = space.clone();
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[ {} ]", items.join(" , "))),
            prop::collection::vec((key, inner, space), 0..6).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// NDJSON spans are the non-blank lines `str::split` gives, numbered from 0, without their
    /// `\r`, whatever mix of newlines, carriage returns, blanks and text the body holds.
    #[test]
    fn ndjson_spans_are_the_non_blank_lines(body in "[ab \r\n{}é]{0,60}") {
        let want: Vec<(usize, std::ops::Range<usize>)> = {
            let mut start = 0usize;
            let mut spans = Vec::new();
            for (line, text) in body.split('\n').enumerate() {
                let trimmed = text.trim_end_matches('\r');
                if !trimmed.trim().is_empty() {
                    spans.push((line, start..start + trimmed.len()));
                }
                start += text.len() + 1;
            }
            spans
        };
        prop_assert_eq!(batch::ndjson_spans(&body), want);
    }
}

/// One line of the benchmark data, the shape nearly every ingested event has.
const COMMON_EVENT: &str = r#"{"specversion":"1.0","id":"evt-00000001","source":"//proxy/eu-1","type":"proxy.request","subject":"cus_000123","time":"2026-11-05T00:00:01.250Z","datacontenttype":"application/json","data":{"bytes_in":1834,"bytes_out":52311,"session_id":"s-19","dest_host":"example.com","status":200,"client_ip":"203.0.113.7","ratio":-0.25,"cached":false,"note":null}}"#;

/// The fast path reads the common shapes, and reads them as the general parse does.
#[test]
fn scan_reads_the_common_shapes_as_the_general_parse() {
    let shapes = [
        COMMON_EVENT.to_owned(),
        // Whitespace wherever JSON allows it, an extension, `data_base64`, scalar `data`.
        " \t{ \"specversion\" : \"1.0\" ,\n\"id\":\"a\", \"source\":\"s\",\"type\":\"t\",\r\n\"subject\":\"é\",\"region\" : \"eu\", \"n\": 0 } \n".to_owned(),
        r#"{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c","data":"text","data_base64":"AA=="}"#.to_owned(),
        r#"{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c","data":{}}"#.to_owned(),
        r#"{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c","data":-0.5}"#.to_owned(),
        // Repeated data keys keep the last, members come out sorted.
        r#"{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c","data":{"b":1,"a":2,"b":3}}"#.to_owned(),
        r#"{}"#.to_owned(),
    ];
    for raw in &shapes {
        let fast = scan::scan(raw).unwrap_or_else(|| panic!("declined {raw}"));
        assert_eq!(fast, parse_wire_general(raw).unwrap(), "{raw}");
    }
    let data = EventRef::parse(&shapes[5], RECEIVED)
        .unwrap()
        .data
        .to_value();
    assert_eq!(data, json!({"a": 2, "b": 3}));
}

/// Whatever the fast path does not read, or reads differently from its text, it leaves to
/// the general parse, which gives the errors.
#[test]
fn scan_declines_what_it_does_not_read() {
    let head = r#"{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c""#;
    let declined = [
        format!(r#"{head},"data":{{"k":"a\"b"}}}}"#),
        format!(r#"{head},"data":{{"k":"tab	here"}}}}"#),
        format!(r#"{head},"data":{{"k":1e5}}}}"#),
        format!(r#"{head},"data":{{"k":1E+5}}}}"#),
        format!(r#"{head},"data":{{"k":01}}}}"#),
        format!(r#"{head},"data":{{"k":1.}}}}"#),
        format!(r#"{head},"data":{{"k":-}}}}"#),
        format!(r#"{head},"data":{{"k":.5}}}}"#),
        format!(r#"{head},"data":{{"k":tru}}}}"#),
        format!(r#"{head},"data":{{"k":{{"deep":1}}}}}}"#),
        format!(r#"{head},"data":{{"k":[1]}}}}"#),
        format!(r#"{head},"data":[1]}}"#),
        format!(r#"{head},"data":{{"k":1,}}}}"#),
        format!(r#"{head},"data":{{"k" 1}}}}"#),
        format!(r#"{head},"data":1,"data":2}}"#),
        format!(r#"{head},"id":"b"}}"#),
        format!(r#"{head},"Region":"eu"}}"#),
        format!(r#"{head},"region":"eu","region":"us"}}"#),
        format!(r#"{head},"region":{{"a":1}}}}"#),
        format!(r#"{head},"id2":1}} x"#),
        format!(r#"{head},}}"#),
        head.to_owned(),
        r#"{"specversion":1.0}"#.to_owned(),
        r#"{"spec\u0076ersion":"1.0"}"#.to_owned(),
        r#"["specversion"]"#.to_owned(),
        String::new(),
    ];
    for raw in &declined {
        assert!(scan::scan(raw).is_none(), "read {raw}");
    }
    // Still the general parse's answers: an escaped string is an event, a syntax error is not.
    assert!(EventRef::parse(&declined[0], RECEIVED).is_ok());
    let err = EventRef::parse(&declined[12], RECEIVED).unwrap_err();
    assert_eq!(err.code(), "malformed_event");
}

/// A text edited at random: bytes that matter to JSON inserted, removed or replaced.
fn edited(text: &str, edits: &[(usize, usize, char)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for &(kind, at, c) in edits {
        if chars.is_empty() {
            break;
        }
        let at = at % chars.len();
        match kind % 3 {
            0 => chars.insert(at, c),
            1 => {
                chars.remove(at);
            }
            _ => chars[at] = c,
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Wherever the fast path reads an event, the general parse reads the same attributes from
    /// it; and an event the general parse refuses, the fast path never reads.
    #[test]
    fn scan_agrees_with_the_general_parse(
        edits in prop::collection::vec(
            (0usize..3, any::<usize>(), prop::sample::select(vec![
                '{', '}', '[', ']', ':', ',', '"', '\\', ' ', '\n', '0', '1', '9', '-', '.',
                'e', 'E', '+', 't', 'f', 'n', 'a', '\u{1}', 'é',
            ])),
            0..4,
        ),
        data in json_text(2),
        number in "[-+0-9.eE]{1,5}",
        string in "[a-z\\\"\u{0}-\u{1f}]{0,4}",
    ) {
        let head = r#"{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"c""#;
        for base in [
            COMMON_EVENT.to_owned(),
            format!(r#"{head},"data":{data}}}"#),
            format!(r#"{head},"data":{{"n":{number},"s":"{string}"}},"ext":{number}}}"#),
        ] {
            let raw = edited(&base, &edits);
            let general = parse_wire_general(&raw);
            if let Some(fast) = scan::scan(&raw) {
                prop_assert_eq!(Ok(fast), general, "{}", raw);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Keys sort as `str` sorts them, however their first eight bytes compare.
    #[test]
    fn member_keys_sort_as_str_sorts(a in "[ab\u{0}é]{0,10}", b in "[ab\u{0}é]{0,10}") {
        prop_assert_eq!(borrowed::key_order(&a, &b), a.cmp(&b));
    }

    /// The word-at-a-time search stops exactly where a byte-by-byte one would.
    #[test]
    fn a_word_stops_a_string_where_a_byte_would(word in any::<[u8; 8]>(), at in 0usize..8, pick in 0usize..6) {
        let mut word = word;
        // Often plant one of the bytes that matter, next to their neighbours.
        if let Some(b) = [b'"', b'\\', 0x1f, 0x20, 0x21, 0x5d].get(pick) {
            word[at] = *b;
        }
        let bytewise = word.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        prop_assert_eq!(scan::first_stop(u64::from_le_bytes(word)), bytewise);
    }
}
