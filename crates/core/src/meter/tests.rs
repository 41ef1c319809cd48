//! Tests for meters: slugs, the JSON path subset, definition validation with its error codes,
//! and how one event is read: event types, every filter operator, group-by values, skips and
//! exact numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::event::Event;
use crate::limits::JSON_PATH_BYTES_MAX;
use crate::time::UnixMs;

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn slug() -> MeterSlug {
    MeterSlug::parse("m").unwrap()
}

fn spec(value: Value) -> MeterSpec {
    serde_json::from_value(value).unwrap()
}

fn meter(value: Value) -> Meter {
    Meter::new(slug(), spec(value)).unwrap()
}

fn meter_err(value: Value) -> MeterError {
    Meter::new(slug(), spec(value)).expect_err("definition should be refused")
}

fn event_of(event_type: &str, data: &str) -> Event {
    let raw = format!(
        r#"{{"specversion":"1.0","id":"1","source":"s","type":"{event_type}","subject":"cust",
            "region":"eu","data":{data}}}"#
    );
    Event::parse(&raw, UnixMs(0)).unwrap()
}

fn data(data: &str) -> Event {
    event_of("api.call", data)
}

fn number(n: &str) -> Observation<'static> {
    Observation::Counted {
        group: vec![],
        reading: Reading::Number(dec(n)),
    }
}

fn one() -> Observation<'static> {
    Observation::Counted {
        group: vec![],
        reading: Reading::One,
    }
}

fn count_with_filter(path: &str, condition: Value) -> Meter {
    meter(json!({"aggregation": "count", "filters": {path: condition}}))
}

fn matches(m: &Meter, e: &Event) -> bool {
    match m.observe(e) {
        Observation::NotMatched => false,
        Observation::Counted { .. } => true,
        Observation::Skipped => panic!("count never skips"),
    }
}

// ---- slugs ----

#[test]
fn slug_validation_table() {
    let longest = format!("a{}", "b".repeat(METER_SLUG_BYTES_MAX - 1));
    for good in [
        "a",
        "api-calls",
        "bytes_out_2",
        "z9",
        "a-",
        longest.as_str(),
    ] {
        assert_eq!(MeterSlug::parse(good).unwrap().as_str(), good);
    }
    let too_long = format!("a{}", "b".repeat(METER_SLUG_BYTES_MAX));
    for bad in [
        "",
        "A",
        "Api",
        "1abc",
        "-a",
        "_a",
        "a b",
        "a.b",
        "a/b",
        "é",
        "aé",
        too_long.as_str(),
    ] {
        let err = MeterSlug::parse(bad).expect_err(bad);
        assert_eq!(err.code(), "invalid_meter_slug", "{bad:?}");
        assert!(matches!(err, MeterError::InvalidSlug { .. }));
    }
}

#[test]
fn slug_serde_validates() {
    let ok: MeterSlug = serde_json::from_str("\"api-calls\"").unwrap();
    assert_eq!(ok.to_string(), "api-calls");
    assert_eq!(serde_json::to_string(&ok).unwrap(), "\"api-calls\"");
    assert!(serde_json::from_str::<MeterSlug>("\"Api\"").is_err());
}

// ---- JSON paths ----

#[test]
fn json_path_accept_table() {
    for good in [
        "$.data",
        "$.data.bytes_out",
        "$.data['dest-host']",
        "$.data[\"dest host\"]",
        "$.data['a.b']",
        "$.data.items[0].id",
        "$.data[10]",
        "$.data.a-b_c9",
        "$.subject",
        "$.region",
        "$['data']['v']",
        "$.data.ünïcode",
    ] {
        let path = JsonPath::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(path.as_str(), good);
    }
}

#[test]
fn json_path_reject_table() {
    let too_long = format!("$.data.{}", "a".repeat(JSON_PATH_BYTES_MAX));
    for bad in [
        "",
        "$",
        "data.x",
        "$data",
        "$.",
        "$..x",
        "$.data.",
        "$.data.*",
        "$.data[*]",
        "$.data[",
        "$.data[]",
        "$.data['']",
        "$.data[-1]",
        "$.data[x]",
        "$.data['a]",
        "$.data['a\"b']",
        "$.data['a\\'b']",
        "$.data[0:2]",
        "$.data a",
        "$.data.a b",
        "$[0]",
        "$[0].data",
        too_long.as_str(),
    ] {
        let err = JsonPath::parse(bad).expect_err(bad);
        assert_eq!(err.code(), "invalid_json_path", "{bad:?}");
        let MeterError::InvalidJsonPath { path, reason } = err else {
            unreachable!()
        };
        assert!(!reason.is_empty());
        assert!(path.chars().count() <= 80);
    }
}

#[test]
fn json_path_resolves_into_the_event() {
    let e = data(r#"{"items":[{"id":"a"},{"id":"b"}],"dest-host":"h","n":{"m":3},"list":[1]}"#);
    let json_at = |p: &str| match JsonPath::parse(p).unwrap().resolve(&e) {
        Some(AttributeRef::Str(s)) => Some(Value::String(format!("str:{s}"))),
        Some(other) => Some(other.to_value()),
        None => None,
    };
    assert_eq!(json_at("$.data.items[1].id"), Some(json!("b")));
    assert_eq!(json_at("$.data['dest-host']"), Some(json!("h")));
    assert_eq!(json_at("$['data'][\"n\"].m"), Some(json!(3)));
    assert_eq!(json_at("$.data.list[0]"), Some(json!(1)));
    assert_eq!(json_at("$.subject"), Some(json!("str:cust")));
    assert_eq!(json_at("$.type"), Some(json!("str:api.call")));
    assert_eq!(json_at("$.region"), Some(json!("eu")));
    // Absent or of the wrong shape: nothing.
    assert_eq!(json_at("$.data.items[2]"), None);
    assert_eq!(json_at("$.data.items.id"), None);
    assert_eq!(json_at("$.data.n[0]"), None);
    assert_eq!(json_at("$.data.list[0].x"), None);
    assert_eq!(json_at("$.data.missing"), None);
    assert_eq!(json_at("$.subject.x"), None);
    assert_eq!(json_at("$.nosuchext"), None);
    assert_eq!(json_at("$.datacontenttype"), None);
}

// ---- definitions ----

#[test]
fn value_path_required_for_every_aggregation_that_reads_a_value() {
    for agg in ["sum", "unique_count", "max", "min", "latest"] {
        let err = meter_err(json!({"aggregation": agg}));
        assert_eq!(err, MeterError::ValuePathRequired { aggregation: agg });
        assert_eq!(err.code(), "value_path_required");
    }
}

#[test]
fn value_path_forbidden_for_count() {
    let err = meter_err(json!({"aggregation": "count", "value_path": "$.data.v"}));
    assert_eq!(err.code(), "invalid_meter");
    assert!(err.to_string().contains("value_path"), "{err}");
    assert!(Meter::new(slug(), spec(json!({"aggregation": "count"}))).is_ok());
}

#[test]
fn invalid_value_path_is_invalid_json_path() {
    let err = meter_err(json!({"aggregation": "sum", "value_path": "data.v"}));
    assert_eq!(err.code(), "invalid_json_path");
}

#[test]
fn definition_limits_and_their_codes() {
    let group_by = |n: usize| -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("d{i}"), format!("$.data.d{i}")))
            .collect()
    };
    let ok = json!({"aggregation": "count", "group_by": group_by(GROUP_BY_KEYS_MAX)});
    assert_eq!(meter(ok).dimension_count(), GROUP_BY_KEYS_MAX);
    let err =
        meter_err(json!({"aggregation": "count", "group_by": group_by(GROUP_BY_KEYS_MAX + 1)}));
    assert_eq!(
        err,
        MeterError::TooManyGroupBy {
            max: GROUP_BY_KEYS_MAX
        }
    );
    assert_eq!(err.code(), "group_by_keys_max");

    let filters = |n: usize| -> serde_json::Map<String, Value> {
        (0..n)
            .map(|i| (format!("$.data.f{i}"), json!({"exists": true})))
            .collect()
    };
    assert!(
        Meter::new(
            slug(),
            spec(json!({"aggregation": "count", "filters": filters(METER_FILTERS_MAX)}))
        )
        .is_ok()
    );
    let err = meter_err(json!({"aggregation": "count", "filters": filters(METER_FILTERS_MAX + 1)}));
    assert_eq!(
        err,
        MeterError::TooManyFilters {
            max: METER_FILTERS_MAX
        }
    );
    assert_eq!(err.code(), "meter_filters_max");

    let values = |n: usize| -> Vec<Value> { (0..n).map(|i| json!(i)).collect() };
    for op in ["in", "nin"] {
        let ok = json!({"aggregation": "count", "filters": {"$.data.x": {op: values(FILTER_VALUES_MAX)}}});
        assert!(Meter::new(slug(), spec(ok)).is_ok());
        let bad = json!({"aggregation": "count", "filters": {"$.data.x": {op: values(FILTER_VALUES_MAX + 1)}}});
        assert_eq!(meter_err(bad).code(), "invalid_meter", "{op}");
    }

    let types = |n: usize| -> Vec<String> { (0..n).map(|i| format!("t{i}")).collect() };
    assert!(
        Meter::new(
            slug(),
            spec(json!({"aggregation": "count", "event_type": types(METER_EVENT_TYPES_MAX)}))
        )
        .is_ok()
    );
    let too_many = json!({"aggregation": "count", "event_type": types(METER_EVENT_TYPES_MAX + 1)});
    assert_eq!(meter_err(too_many).code(), "invalid_meter");
}

#[test]
fn other_invalid_definitions() {
    let cases = [
        json!({"aggregation": "count", "event_type": []}),
        json!({"aggregation": "count", "event_type": ""}),
        json!({"aggregation": "count", "event_type": ["a", ""]}),
        json!({"aggregation": "count", "filters": {"$.data.x": {}}}),
        json!({"aggregation": "count", "group_by": {"": "$.data.x"}}),
        json!({"aggregation": "count", "group_by": {"x".repeat(METER_SLUG_BYTES_MAX + 1): "$.data.x"}}),
    ];
    for case in cases {
        let err = meter_err(case.clone());
        assert_eq!(err.code(), "invalid_meter", "{case}: {err}");
    }
    let bad_paths = [
        json!({"aggregation": "count", "group_by": {"x": "$.data.*"}}),
        json!({"aggregation": "count", "filters": {"data.x": {"exists": true}}}),
    ];
    for case in bad_paths {
        assert_eq!(
            meter_err(case.clone()).code(),
            "invalid_json_path",
            "{case}"
        );
    }
}

#[test]
fn spec_refuses_unknown_fields_and_operators() {
    let unknown_field = json!({"aggregation": "count", "valuepath": "$.data.v"});
    assert!(serde_json::from_value::<MeterSpec>(unknown_field).is_err());
    let unknown_op = json!({"aggregation": "count", "filters": {"$.data.v": {"like": "x"}}});
    assert!(serde_json::from_value::<MeterSpec>(unknown_op).is_err());
    let unknown_agg = json!({"aggregation": "median", "value_path": "$.data.v"});
    assert!(serde_json::from_value::<MeterSpec>(unknown_agg).is_err());
}

#[test]
fn error_codes_are_distinct() {
    let errors = [
        MeterError::InvalidSlug {
            slug: String::new(),
        },
        MeterError::InvalidJsonPath {
            path: String::new(),
            reason: String::new(),
        },
        MeterError::ValuePathRequired { aggregation: "sum" },
        MeterError::TooManyGroupBy { max: 1 },
        MeterError::TooManyFilters { max: 1 },
        MeterError::Invalid {
            message: String::new(),
        },
    ];
    let mut codes: Vec<&str> = errors.iter().map(MeterError::code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

#[test]
fn aggregation_names_and_needs() {
    let all = [
        (Aggregation::Sum, "sum", true, true),
        (Aggregation::Count, "count", false, false),
        (Aggregation::UniqueCount, "unique_count", true, false),
        (Aggregation::Max, "max", true, true),
        (Aggregation::Min, "min", true, true),
        (Aggregation::Latest, "latest", true, true),
    ];
    for (agg, name, value, number) in all {
        assert_eq!(agg.as_str(), name);
        assert_eq!(agg.needs_value(), value, "{name}");
        assert_eq!(agg.needs_number(), number, "{name}");
        assert_eq!(serde_json::to_value(agg).unwrap(), json!(name));
        assert_eq!(
            serde_json::from_value::<Aggregation>(json!(name)).unwrap(),
            agg
        );
    }
}

#[test]
fn spec_round_trips_through_json() {
    let original = json!({
        "description": "bytes out of the proxy",
        "event_type": ["proxy.request", "proxy.retry"],
        "aggregation": "sum",
        "value_path": "$.data.bytes_out",
        "group_by": {"region": "$.region", "host": "$.data.host"},
        "filters": {
            "$.data.status": {"gte": 200, "lt": "300", "nin": [204]},
            "$.data.cached": {"exists": false}
        }
    });
    let parsed = spec(original);
    let text = serde_json::to_string(&parsed).unwrap();
    let again: MeterSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(again, parsed);
    let status = &parsed.filters["$.data.status"];
    assert_eq!(status.gte, Some(dec("200")));
    assert_eq!(status.lt, Some(dec("300")));
    assert_eq!(
        parsed.event_type,
        EventTypes::Many(vec!["proxy.request".into(), "proxy.retry".into()])
    );
    // An omitted event_type is `All` and stays omitted.
    let all = spec(json!({"aggregation": "count"}));
    assert_eq!(all.event_type, EventTypes::All);
    assert_eq!(
        serde_json::to_value(&all).unwrap(),
        json!({"aggregation": "count"})
    );
}

#[test]
fn numeric_bounds_accept_json_numbers_exactly_and_numeric_strings() {
    let cases = [
        (json!({"gt": 10}), "10"),
        (json!({"gt": "10"}), "10"),
        (json!({"gt": 0.1}), "0.1"),
        (json!({"gt": 1e3}), "1000"),
        (json!({"gt": "2.5E-1"}), "0.25"),
        (json!({"gt": -7}), "-7"),
    ];
    for (condition, want) in cases {
        let c: Condition = serde_json::from_value(condition.clone()).unwrap();
        assert_eq!(c.gt, Some(dec(want)), "{condition}");
    }
    // Big integers beyond f64's exact range are read exactly from the JSON text.
    let c: Condition = serde_json::from_str(r#"{"lte": 9007199254740993}"#).unwrap();
    assert_eq!(c.lte, Some(dec("9007199254740993")));
    let c: Condition = serde_json::from_str(r#"{"gte": null}"#).unwrap();
    assert_eq!(c.gte, None);
    for bad in [
        json!({"gt": "ten"}),
        json!({"gt": true}),
        json!({"gt": [1]}),
    ] {
        assert!(
            serde_json::from_value::<Condition>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

// ---- observe: event types ----

#[test]
fn event_type_one_many_all() {
    let one_type = meter(json!({"aggregation": "count", "event_type": "api.call"}));
    let many = meter(json!({"aggregation": "count", "event_type": ["api.call", "api.retry"]}));
    let all = meter(json!({"aggregation": "count"}));
    let table = [
        ("api.call", true, true),
        ("api.retry", false, true),
        ("api.calls", false, false),
        ("API.CALL", false, false),
        ("other", false, false),
    ];
    for (t, in_one, in_many) in table {
        let e = event_of(t, "{}");
        assert_eq!(matches(&one_type, &e), in_one, "one: {t}");
        assert_eq!(matches(&many, &e), in_many, "many: {t}");
        assert!(matches(&all, &e), "all: {t}");
    }
}

// ---- observe: filters ----

#[test]
fn filter_eq_compares_numbers_by_value_and_other_json_by_equality() {
    let m = count_with_filter("$.data.status", json!({"eq": 200}));
    let table = [
        ("200", true),
        ("200.0", true),
        ("2e2", true),
        ("200.000", true),
        ("201", false),
        ("\"200\"", false),
        ("null", false),
        ("[200]", false),
    ];
    for (status, want) in table {
        let e = data(&format!(r#"{{"status":{status}}}"#));
        assert_eq!(matches(&m, &e), want, "status {status}");
    }
    assert!(!matches(&m, &data("{}")), "missing value is not equal");

    let m = count_with_filter("$.data.status", json!({"eq": "ok"}));
    assert!(matches(&m, &data(r#"{"status":"ok"}"#)));
    assert!(!matches(&m, &data(r#"{"status":"OK"}"#)));

    let m = count_with_filter("$.data.flags", json!({"eq": {"a": true, "b": [1, "x"]}}));
    assert!(matches(&m, &data(r#"{"flags":{"b":[1,"x"],"a":true}}"#)));
    assert!(!matches(&m, &data(r#"{"flags":{"b":[1,"y"],"a":true}}"#)));

    // String attributes compare as strings.
    let m = count_with_filter("$.subject", json!({"eq": "cust"}));
    assert!(matches(&m, &data("{}")));
    let m = count_with_filter("$.subject", json!({"eq": 5}));
    assert!(!matches(&m, &data("{}")));
}

#[test]
fn filter_ne() {
    let m = count_with_filter("$.data.status", json!({"ne": 200}));
    assert!(!matches(&m, &data(r#"{"status":200}"#)));
    assert!(!matches(&m, &data(r#"{"status":200.00}"#)));
    assert!(matches(&m, &data(r#"{"status":404}"#)));
    assert!(matches(&m, &data(r#"{"status":"200"}"#)));
    assert!(matches(&m, &data("{}")), "a missing value is not equal");
}

#[test]
fn filter_in_and_nin() {
    let m = count_with_filter("$.data.status", json!({"in": [200, 201, "ok"]}));
    assert!(matches(&m, &data(r#"{"status":201.0}"#)));
    assert!(matches(&m, &data(r#"{"status":"ok"}"#)));
    assert!(!matches(&m, &data(r#"{"status":404}"#)));
    assert!(!matches(&m, &data("{}")), "a missing value is in no list");

    let m = count_with_filter("$.data.status", json!({"in": []}));
    assert!(
        !matches(&m, &data(r#"{"status":1}"#)),
        "the empty list holds nothing"
    );

    let m = count_with_filter("$.data.status", json!({"nin": [500, 503]}));
    assert!(matches(&m, &data(r#"{"status":200}"#)));
    assert!(!matches(&m, &data(r#"{"status":500}"#)));
    assert!(!matches(&m, &data(r#"{"status":5.03e2}"#)));
    assert!(
        matches(&m, &data("{}")),
        "a missing value qualifies for nin"
    );
}

#[test]
fn filter_numeric_bounds_table() {
    // (operator, value, want) against bound 10.
    let table = [
        ("gt", "9", false),
        ("gt", "10", false),
        ("gt", "10.0001", true),
        ("gte", "9.999", false),
        ("gte", "10", true),
        ("gte", "10.0", true),
        ("lt", "9.999", true),
        ("lt", "10", false),
        ("lt", "11", false),
        ("lte", "10", true),
        ("lte", "10.00", true),
        ("lte", "10.01", false),
        ("gt", "\"10.5\"", true),
        ("gt", "\" 11 \"", true),
        ("lt", "\"abc\"", false),
        ("lt", "true", false),
        ("lt", "null", false),
        ("lt", "{}", false),
        ("gt", "1e2", true),
        ("lt", "-1E1", true),
    ];
    for (op, value, want) in table {
        let m = count_with_filter("$.data.v", json!({op: 10}));
        assert_eq!(
            matches(&m, &data(&format!(r#"{{"v":{value}}}"#))),
            want,
            "{value} {op} 10"
        );
        assert!(!matches(&m, &data("{}")), "missing value fails {op}");
    }
}

#[test]
fn filter_bounds_combine_into_a_range() {
    let m = count_with_filter("$.data.v", json!({"gte": 200, "lt": 300}));
    for (v, want) in [
        (199, false),
        (200, true),
        (250, true),
        (299, true),
        (300, false),
    ] {
        assert_eq!(matches(&m, &data(&format!(r#"{{"v":{v}}}"#))), want, "{v}");
    }
}

#[test]
fn filter_exists() {
    let present = count_with_filter("$.data.v", json!({"exists": true}));
    let absent = count_with_filter("$.data.v", json!({"exists": false}));
    for (d, has) in [
        (r#"{"v":0}"#, true),
        (r#"{"v":null}"#, true),
        (r#"{"v":false}"#, true),
        ("{}", false),
        ("5", false),
    ] {
        assert_eq!(matches(&present, &data(d)), has, "{d}");
        assert_eq!(matches(&absent, &data(d)), !has, "{d}");
    }
}

#[test]
fn all_filters_must_hold() {
    let m = meter(json!({
        "aggregation": "count",
        "filters": {"$.data.status": {"eq": 200}, "$.region": {"in": ["eu", "us"]}}
    }));
    assert!(matches(&m, &data(r#"{"status":200}"#)));
    assert!(!matches(&m, &data(r#"{"status":500}"#)));
    let m = meter(json!({
        "aggregation": "count",
        "filters": {"$.data.status": {"eq": 200}, "$.region": {"eq": "us"}}
    }));
    assert!(!matches(&m, &data(r#"{"status":200}"#)));
}

#[test]
fn filters_do_not_apply_to_other_types() {
    let m = meter(json!({
        "aggregation": "count",
        "event_type": "api.call",
        "filters": {"$.data.status": {"eq": 200}}
    }));
    assert_eq!(
        m.observe(&event_of("other", r#"{"status":200}"#)),
        Observation::NotMatched
    );
    assert_eq!(m.observe(&event_of("api.call", r#"{"status":200}"#)), one());
}

// ---- observe: values and groups ----

#[test]
fn group_by_values_in_dimension_order_with_none_for_missing() {
    let m = meter(json!({
        "aggregation": "count",
        "group_by": {
            "zone": "$.region",
            "host": "$.data.host",
            "code": "$.data.code",
            "flag": "$.data.flag",
            "obj": "$.data.obj",
            "nul": "$.data.nul",
            "absent": "$.data.absent"
        }
    }));
    let names: Vec<&str> = m.dimension_names().collect();
    assert_eq!(
        names,
        ["absent", "code", "flag", "host", "nul", "obj", "zone"]
    );
    let e =
        data(r#"{"host":"a.com","code":1.50,"flag":false,"obj":{"b":[1, 2],"a":"x"},"nul":null}"#);
    let Observation::Counted { group, reading } = m.observe(&e) else {
        panic!("should count")
    };
    assert_eq!(reading, Reading::One);
    let group: Vec<Option<&str>> = group.iter().map(|g| g.as_deref()).collect();
    assert_eq!(
        group,
        [
            None,
            Some("1.50"),
            Some("false"),
            Some("a.com"),
            None,
            Some(r#"{"a":"x","b":[1,2]}"#),
            Some("eu")
        ]
    );
}

#[test]
fn sum_reads_exact_decimals() {
    let m = meter(json!({"aggregation": "sum", "value_path": "$.data.v"}));
    let table = [
        ("42", "42"),
        ("-3.25", "-3.25"),
        ("0.1", "0.1"),
        ("9007199254740993", "9007199254740993"),
        ("12345678901234567890123456", "12345678901234567890123456"),
        ("\"42.5\"", "42.5"),
        ("\" 7 \"", "7"),
        ("1e3", "1000"),
        ("1E3", "1000"),
        ("1e+3", "1000"),
        ("2.5e-3", "0.0025"),
        ("\"1.5E2\"", "150"),
        ("-0", "0"),
    ];
    for (value, want) in table {
        let e = data(&format!(r#"{{"v":{value}}}"#));
        assert_eq!(m.observe(&e), number(want), "{value}");
    }
}

#[test]
fn non_numeric_or_missing_values_are_skipped() {
    for agg in ["sum", "max", "min", "latest"] {
        let m = meter(json!({"aggregation": agg, "value_path": "$.data.v"}));
        for value in [
            "\"abc\"", "\"\"", "true", "null", "{}", "[1]", "\"1,5\"", "1e400", "1e-400",
        ] {
            let e = data(&format!(r#"{{"v":{value}}}"#));
            assert_eq!(m.observe(&e), Observation::Skipped, "{agg} of {value}");
        }
        assert_eq!(
            m.observe(&data("{}")),
            Observation::Skipped,
            "{agg} of missing"
        );
        assert_eq!(
            m.observe(&data("7")),
            Observation::Skipped,
            "{agg} with data not an object"
        );
        assert_eq!(m.observe(&data(r#"{"v":7}"#)), number("7"), "{agg}");
    }
}

#[test]
fn unfiltered_events_of_other_types_are_not_matched_rather_than_skipped() {
    let m =
        meter(json!({"aggregation": "sum", "value_path": "$.data.v", "event_type": "api.call"}));
    assert_eq!(m.observe(&event_of("other", "{}")), Observation::NotMatched);
    assert_eq!(m.observe(&event_of("api.call", "{}")), Observation::Skipped);
}

#[test]
fn unique_count_reads_any_value_as_a_key() {
    let m = meter(json!({"aggregation": "unique_count", "value_path": "$.data.user"}));
    let table = [
        (r#""u1""#, "u1"),
        ("17", "17"),
        ("17.0", "17.0"),
        ("true", "true"),
        (r#"{"b":1,"a":2}"#, r#"{"a":2,"b":1}"#),
        (r#"[1,"x"]"#, r#"[1,"x"]"#),
    ];
    for (value, key) in table {
        let e = data(&format!(r#"{{"user":{value}}}"#));
        let want = Observation::Counted {
            group: vec![],
            reading: Reading::Key(key.into()),
        };
        assert_eq!(m.observe(&e), want, "{value}");
    }
    assert_eq!(m.observe(&data(r#"{"user":null}"#)), Observation::Skipped);
    assert_eq!(m.observe(&data("{}")), Observation::Skipped);
    // A string attribute is a key too.
    let m = meter(json!({"aggregation": "unique_count", "value_path": "$.subject"}));
    let want = Observation::Counted {
        group: vec![],
        reading: Reading::Key("cust".into()),
    };
    assert_eq!(m.observe(&data("{}")), want);
}

#[test]
fn count_reads_no_value() {
    let m = meter(json!({"aggregation": "count", "group_by": {"r": "$.region"}}));
    let want = Observation::Counted {
        group: vec![Some("eu".into())],
        reading: Reading::One,
    };
    assert_eq!(m.observe(&data("null")), want);
    assert_eq!(m.aggregation(), Aggregation::Count);
}

#[test]
fn parse_decimal_and_key_of_helpers() {
    assert_eq!(parse_decimal("1.50"), Some(dec("1.5")));
    assert_eq!(parse_decimal("  -2e2 "), Some(dec("-200")));
    assert_eq!(parse_decimal("abc"), None);
    assert_eq!(parse_decimal("e5"), None);
    assert_eq!(parse_decimal(""), None);
    assert_eq!(number_of(AttributeRef::Str("12")), Some(dec("12")));
    assert_eq!(number_of(AttributeRef::Json(&json!(false))), None);
    assert_eq!(key_of(AttributeRef::Json(&Value::Null)), None);
    assert_eq!(key_of(AttributeRef::Str("")).as_deref(), Some(""));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any integer or decimal written in JSON is read exactly, whatever its size (up to 28
    /// significant digits), as a number or in a string.
    #[test]
    fn numbers_are_read_exactly(mantissa in any::<i64>(), scale in 0u32..10, quoted in any::<bool>()) {
        let want = Decimal::new(mantissa, scale);
        let text = want.to_string();
        let value = if quoted { format!("\"{text}\"") } else { text.clone() };
        let m = meter(json!({"aggregation": "max", "value_path": "$.data.v"}));
        let e = data(&format!(r#"{{"v":{value}}}"#));
        prop_assert_eq!(m.observe(&e), number(&text));
    }

    /// A gte/lt range filter holds exactly when the value lies in the range.
    #[test]
    fn range_filter_agrees_with_decimal_comparison(lo in -1000i64..1000, hi in -1000i64..1000, v in -1200i64..1200, scale in 0u32..3) {
        let m = count_with_filter("$.data.v", json!({"gte": lo, "lt": hi}));
        let value = Decimal::new(v, scale);
        let e = data(&format!(r#"{{"v":{value}}}"#));
        let want = value >= Decimal::from(lo) && value < Decimal::from(hi);
        prop_assert_eq!(matches(&m, &e), want);
    }

    /// Paths built from valid segments always parse and report their text.
    #[test]
    fn built_paths_parse(segments in prop::collection::vec(
        prop_oneof!["[a-z_][a-z0-9_-]{0,8}".prop_map(|n| format!(".{n}")),
                    "[a-z ]{1,8}".prop_map(|n| format!("['{n}']")),
                    (0usize..100).prop_map(|i| format!("[{i}]"))],
        0..6,
    )) {
        let text = format!("$.data{}", segments.concat());
        match JsonPath::parse(&text) {
            Ok(path) => prop_assert_eq!(path.as_str(), text.as_str()),
            Err(e) => prop_assert!(false, "{} refused: {}", text, e),
        }
    }
}
