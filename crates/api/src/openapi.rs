//! The OpenAPI document, generated from the handlers and types. `cargo xtask openapi` writes it
//! to `docs/openapi.json`; a test fails when the committed copy drifts.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "Usage metering and billing: exact ingest, meters, usage."),
    paths(
        routes::events::ingest,
        routes::meters::list,
        routes::meters::get,
        routes::meters::put,
        routes::meters::delete,
        routes::usage::query,
        routes::keys::create,
        routes::keys::list,
        routes::keys::revoke,
        routes::ops::healthz,
        routes::ops::readyz,
        routes::ops::metrics,
        routes::ops::openapi,
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // The version is the product's API version, not the crate's build, so the committed
    // document does not change with every release bump.
    doc.info.version = "1".into();
    doc
}

/// The document as pretty JSON with a trailing newline (the committed form).
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}
