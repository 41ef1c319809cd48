//! The committed OpenAPI document equals the one generated from the code.

#[test]
fn committed_openapi_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = tollgate_api::openapi::document_json();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date with the code: run `cargo xtask openapi` and commit it"
    );
}

#[test]
fn every_route_is_documented() {
    let doc = tollgate_api::openapi::document();
    let paths: Vec<&String> = doc.paths.paths.keys().collect();
    for want in [
        "/v1/events",
        "/v1/ingest",
        "/v1/billing/meter_events",
        "/api/v1/events",
        "/v1/meters",
        "/v1/meters/{slug}",
        "/v1/meters/{slug}/usage",
        "/v1/api_keys",
        "/v1/api_keys/{id}",
        "/v1/webhook_endpoints",
        "/v1/webhook_endpoints/{id}",
        "/v1/webhook_messages/{id}",
        "/v1/webhook_messages/{id}/replay",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.iter().any(|p| *p == want),
            "{want} missing from the OpenAPI document"
        );
    }
}
