#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::json;

use super::*;

const NOW: UnixMs = UnixMs(1_780_000_000_000);
const TOL: i64 = SIGNATURE_TOLERANCE_MS_DEFAULT;

#[test]
fn event_type_names_are_stable_and_round_trip() {
    let names: Vec<&str> = EventType::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "alert.triggered",
            "alert.recovered",
            "entitlement.exceeded",
            "invoice.finalized",
            "invoice.paid",
            "invoice.voided"
        ]
    );
    for t in EventType::SUBSCRIBABLE {
        assert_eq!(EventType::parse(t.as_str()), Ok(t));
    }
    assert_eq!(EventType::parse("webhook.test"), Ok(EventType::WebhookTest));
    assert_eq!(
        EventType::parse("invoice.created").unwrap_err().code(),
        "unknown_event_type"
    );
}

#[test]
fn endpoint_event_types_are_checked_and_folded() {
    assert_eq!(
        parse_event_types(&["invoice.paid", "alert.triggered", "invoice.paid"]),
        Ok(vec![EventType::AlertTriggered, EventType::InvoicePaid])
    );
    assert_eq!(
        parse_event_types::<&str>(&[]).unwrap_err(),
        WebhookError::NoEventTypes
    );
    assert_eq!(
        parse_event_types(&["webhook.test"]).unwrap_err().code(),
        "unknown_event_type"
    );
    let many = vec!["invoice.paid"; WEBHOOK_ENDPOINT_EVENT_TYPES_MAX + 1];
    assert_eq!(
        parse_event_types(&many).unwrap_err().code(),
        "webhook_endpoint_event_types_max"
    );
}

#[test]
fn urls_must_be_http_or_https_with_a_host() {
    for ok in [
        "http://127.0.0.1:8080/hook",
        "https://hooks.example.com/tollgate?x=1",
        "https://user:pw@example.com",
        "http://[::1]:9000/",
    ] {
        assert_eq!(validate_url(ok), Ok(()), "{ok}");
    }
    for bad in [
        "ftp://example.com",
        "example.com/hook",
        "http://",
        "https:///path",
        "http://exa mple.com",
        "http://:80/",
    ] {
        assert_eq!(
            validate_url(bad).unwrap_err().code(),
            "invalid_url",
            "{bad}"
        );
    }
    let long = format!("https://example.com/{}", "a".repeat(WEBHOOK_URL_BYTES_MAX));
    assert_eq!(
        validate_url(&long).unwrap_err().code(),
        "webhook_url_bytes_max"
    );
}

#[test]
fn message_envelope_is_serialized_once_with_its_fields() {
    let id = MessageId::from_random([0xab; 12]);
    assert_eq!(id.as_str(), "msg_abababababababababababab");
    assert_eq!(MessageId::parse(id.as_str()), Some(id.clone()));
    assert_eq!(MessageId::parse("msg_ABABABABABABABABABABABAB"), None);
    let m = Message::new(
        id,
        EventType::InvoicePaid,
        UnixMs(1_780_000_000_123),
        &json!({"id": "inv_1", "total_minor": 4900}),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(m.body()).unwrap();
    assert_eq!(
        v,
        json!({"id": "msg_abababababababababababab", "type": "invoice.paid",
               "created_at": "2026-05-28T20:26:40.123Z",
               "data": {"id": "inv_1", "total_minor": 4900}})
    );
    assert_eq!(
        Message::new(m.id().clone(), EventType::InvoicePaid, NOW, &json!([1])).unwrap_err(),
        WebhookError::DataNotObject
    );
    let big = json!({"x": "y".repeat(WEBHOOK_PAYLOAD_BYTES_MAX)});
    assert_eq!(
        Message::new(m.id().clone(), EventType::InvoicePaid, NOW, &big).unwrap_err(),
        WebhookError::PayloadTooLarge
    );
}

#[test]
fn a_known_signature_vector() {
    // Checked against HMAC-SHA256 computed from its definition, not from the `hmac` crate.
    assert_eq!(
        sign("whsec_test", 1_700_000_000, br#"{"a":1}"#),
        hmac_reference("whsec_test", b"1700000000.{\"a\":1}")
    );
    assert_eq!(
        signature_header(&["k1", "k2"], 5, b"x"),
        format!("t=5,v1={},v1={}", sign("k1", 5, b"x"), sign("k2", 5, b"x"))
    );
}

/// HMAC-SHA256 by its definition (RFC 2104), to check `sign` against.
fn hmac_reference(key: &str, msg: &[u8]) -> String {
    use sha2::Digest;
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key.as_bytes());
    let inner: Vec<u8> = k
        .iter()
        .map(|b| b ^ 0x36)
        .chain(msg.iter().copied())
        .collect();
    let inner_hash = sha2::Sha256::digest(&inner);
    let outer: Vec<u8> = k
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(inner_hash.iter().copied())
        .collect();
    hex::encode(sha2::Sha256::digest(&outer))
}

#[test]
fn the_worked_example_of_the_docs_verifies() {
    // docs/webhooks.md, "Signatures" (computed there with Python's hmac module).
    let body = br#"{"id":"msg_000000000000000000000000","type":"webhook.test","created_at":"2025-12-01T00:00:12Z","data":{}}"#;
    assert_eq!(
        sign("whsec_test", 1_764_547_212, body),
        "fcfe72c188fe39d457bede872425cf7f6ee8145d5a0d64bc41be7ffeb613e1b9"
    );
}

#[test]
fn verify_refuses_malformed_headers_and_replays() {
    let body = b"{}";
    let t = NOW.0 / 1000;
    let good = signature_header(&["s"], t, body);
    assert_eq!(verify("s", &good, body, NOW, TOL), Ok(()));
    for bad in [
        "",
        "v1=00",
        "t=abc,v1=00",
        "t=1",
        "t=1,t=2,v1=00",
        "garbage",
    ] {
        assert_eq!(
            verify("s", bad, body, NOW, TOL).unwrap_err().code(),
            "signature_malformed",
            "{bad}"
        );
    }
    let old = signature_header(&["s"], t - 301, body);
    assert_eq!(
        verify("s", &old, body, NOW, TOL),
        Err(SignatureError::TooOld {
            age_s: 301,
            tolerance_s: 300
        })
    );
    let edge = signature_header(&["s"], t - 300, body);
    assert_eq!(verify("s", &edge, body, NOW, TOL), Ok(()));
    let ahead = signature_header(&["s"], t + 301, body);
    assert_eq!(
        verify("s", &ahead, body, NOW, TOL).unwrap_err().code(),
        "signature_in_future"
    );
    assert_eq!(
        verify("other", &good, body, NOW, TOL),
        Err(SignatureError::Mismatch)
    );
    // Rotation: either secret verifies a header signed with both; unknown keys are ignored.
    let both = format!("{},v0=zz", signature_header(&["old", "new"], t, body));
    assert_eq!(verify("old", &both, body, NOW, TOL), Ok(()));
    assert_eq!(verify("new", &both, body, NOW, TOL), Ok(()));
    // A non-hex value cannot match but does not hide a valid one.
    let mixed = format!("t={t},v1=not-hex,v1={}", sign("s", t, body));
    assert_eq!(verify("s", &mixed, body, NOW, TOL), Ok(()));
}

#[test]
fn backoff_doubles_to_the_cap_with_equal_jitter() {
    let b = Backoff {
        base_ms: 1_000,
        cap_ms: 10_000,
    };
    let ceilings: Vec<i64> = (1..=6).map(|n| b.ceiling_ms(n)).collect();
    assert_eq!(ceilings, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
    assert_eq!(b.delay_ms(1, 0), 500);
    assert_eq!(b.delay_ms(1, 500), 1_000);
    assert_eq!(b.delay_ms(1, 501), 500);
    assert_eq!(b.ceiling_ms(200), 10_000, "no overflow far out");
}

#[test]
fn policy_retries_gives_up_and_disables() {
    let p = RetryPolicy {
        backoff: Backoff {
            base_ms: 100,
            cap_ms: 1_000,
        },
        attempts_max: 3,
        disable_after_failures: 5,
    };
    assert_eq!(p.next(Some(204), 3, NOW, 7), Next::Delivered);
    assert_eq!(
        p.next(Some(500), 1, NOW, 0),
        Next::RetryAt(UnixMs(NOW.0 + 50))
    );
    assert_eq!(
        p.next(None, 2, NOW, 100),
        Next::RetryAt(UnixMs(NOW.0 + 200))
    );
    assert_eq!(p.next(Some(302), 3, NOW, 0), Next::GiveUp);
    assert!(!p.disables(4));
    assert!(p.disables(5));
}

proptest! {
    #[test]
    fn a_signature_made_by_sign_verifies(
        secret in "[a-zA-Z0-9_]{1,64}",
        body in proptest::collection::vec(any::<u8>(), 0..512),
        skew_s in -300i64..=300,
    ) {
        let t = NOW.0 / 1000 + skew_s;
        let header = signature_header(&[&secret], t, &body);
        prop_assert_eq!(verify(&secret, &header, &body, NOW, TOL), Ok(()));
    }

    #[test]
    fn any_change_to_the_body_fails(
        secret in "[a-zA-Z0-9_]{1,64}",
        body in proptest::collection::vec(any::<u8>(), 1..512),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let t = NOW.0 / 1000;
        let header = signature_header(&[&secret], t, &body);
        let mut tampered = body.clone();
        let i = index.index(tampered.len());
        tampered[i] ^= flip;
        prop_assert_eq!(verify(&secret, &header, &tampered, NOW, TOL), Err(SignatureError::Mismatch));
        let mut longer = body.clone();
        longer.push(b' ');
        prop_assert_eq!(verify(&secret, &header, &longer, NOW, TOL), Err(SignatureError::Mismatch));
    }

    #[test]
    fn any_change_to_the_timestamp_fails(
        secret in "[a-zA-Z0-9_]{1,64}",
        body in proptest::collection::vec(any::<u8>(), 0..256),
        delta in (-300i64..=300).prop_filter("a change", |d| *d != 0),
    ) {
        let t = NOW.0 / 1000;
        let sig = sign(&secret, t, &body);
        let moved = format!("t={},v1={sig}", t + delta);
        prop_assert_eq!(verify(&secret, &moved, &body, NOW, TOL), Err(SignatureError::Mismatch));
    }

    #[test]
    fn old_timestamps_fail(
        secret in "[a-zA-Z0-9_]{1,64}",
        body in proptest::collection::vec(any::<u8>(), 0..256),
        age_s in 301i64..10_000_000,
    ) {
        let header = signature_header(&[&secret], NOW.0 / 1000 - age_s, &body);
        prop_assert_eq!(
            verify(&secret, &header, &body, NOW, TOL),
            Err(SignatureError::TooOld { age_s, tolerance_s: 300 })
        );
    }

    #[test]
    fn backoff_delays_stay_in_their_band(
        base in 1i64..100_000,
        extra in 0i64..10_000_000,
        n in 1u32..100,
        random in any::<u64>(),
    ) {
        let b = Backoff { base_ms: base, cap_ms: base + extra };
        let d = b.ceiling_ms(n);
        let delay = b.delay_ms(n, random);
        prop_assert!(d <= b.cap_ms && d >= base);
        prop_assert!(delay >= d / 2 && delay <= d);
        prop_assert!(b.ceiling_ms(n + 1) >= d);
    }
}
