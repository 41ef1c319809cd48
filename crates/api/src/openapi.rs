//! The OpenAPI document, generated from the handlers and types. `cargo xtask openapi` writes it
//! to `docs/openapi.json`; a test fails when the committed copy drifts.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "Usage metering and billing: exact ingest, meters, usage, customers, plans, subscriptions, invoices, credit notes, refunds, reconciliation, credits, entitlements, sessions, alerts, signed webhooks, IP metadata."),
    paths(
        routes::events::ingest,
        routes::dropin::orb_ingest,
        routes::dropin::stripe_meter_event,
        routes::dropin::openmeter_ingest,
        routes::meters::list,
        routes::meters::get,
        routes::meters::put,
        routes::meters::delete,
        routes::usage::query,
        routes::keys::create,
        routes::keys::list,
        routes::keys::revoke,
        routes::customers::create,
        routes::customers::list,
        routes::customers::get,
        routes::customers::patch,
        routes::customers::grant,
        routes::customers::balance,
        routes::customers::ledger,
        routes::customers::upcoming,
        routes::plans::create,
        routes::plans::list,
        routes::plans::get,
        routes::plans::publish,
        routes::subscriptions::create,
        routes::subscriptions::list,
        routes::subscriptions::get,
        routes::subscriptions::change_plan,
        routes::subscriptions::cancel,
        routes::invoices::list,
        routes::invoices::get,
        routes::invoices::html,
        routes::invoices::finalize,
        routes::invoices::pay,
        routes::invoices::void,
        routes::credit_notes::create,
        routes::credit_notes::list,
        routes::credit_notes::get,
        routes::credit_notes::approve,
        routes::credit_notes::reject,
        routes::refunds::create,
        routes::refunds::list,
        routes::refunds::get,
        routes::refunds::cancel,
        routes::refunds::succeed,
        routes::refunds::fail,
        routes::reconciliation::create,
        routes::reconciliation::list,
        routes::reconciliation::get,
        routes::portal_sessions::create_admin,
        routes::invoices::run_now,
        routes::invoices::explain,
        routes::entitlements::check,
        routes::entitlements::check_batch,
        routes::entitlements::list,
        routes::entitlements::put_override,
        routes::entitlements::delete_override,
        routes::entitlements::sessions,
        routes::alerts::create,
        routes::alerts::list,
        routes::alerts::get,
        routes::alerts::patch,
        routes::alerts::delete,
        routes::alerts::events,
        routes::alerts::evaluate_now,
        routes::portal_sessions::create,
        routes::exports::download,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::get,
        routes::webhooks::patch,
        routes::webhooks::delete,
        routes::webhooks::rotate_secret,
        routes::webhooks::test,
        routes::webhooks::messages,
        routes::webhooks::message,
        routes::webhooks::replay,
        routes::ipmeta::create_allocation,
        routes::ipmeta::list_allocations,
        routes::ipmeta::close_allocation,
        routes::ipmeta::lookup,
        routes::ipmeta::list_sources,
        routes::ipmeta::put_source,
        routes::ipmeta::delete_source,
        routes::ipmeta::reload_enrichment,
        routes::ipmeta::audit,
        routes::providers::stripe_webhook,
        routes::providers::objects,
        routes::providers::calls,
        routes::providers::retry_call,
        routes::orb::status,
        routes::orb::resume,
        routes::orb::invoices,
        routes::orb::pull,
        routes::stripe_meters::status,
        routes::stripe_meters::resume,
        routes::inspect::publish,
        routes::inspect::list,
        routes::inspect::current,
        routes::inspect::get,
        routes::inspect::decide,
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
