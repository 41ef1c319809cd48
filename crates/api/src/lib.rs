//! tollgate-api: Tollgate's HTTP API.
//!
//! Owns: routes under `/v1`, request and response types (converted to and from domain types in
//! [`convert`] only), authentication by API key and scope, the one mapping from errors to HTTP
//! status and stable `code` ([`error`]), and the OpenAPI document ([`openapi`]). Does not own:
//! domain rules (`tollgate-core`) or storage (`tollgate-store`).
//!
//! Every handler that does blocking work (parsing a large body, waiting for the writer, SQLite)
//! runs it off the async workers.

pub mod auth;
pub mod convert;
pub mod error;
pub mod export;
pub mod openapi;
pub mod portal;
pub mod render;
pub(crate) mod routes;
pub mod types;

/// Query building shared with the CLI, so both read usage parameters the same way.
pub mod routes_support {
    pub use crate::routes::alerts::run_evaluation;
    pub use crate::routes::invoices::{describe as describe_run, run_cycle};
    pub use crate::routes::reconciliation::{parse_month, run_reconciliation};
    pub use crate::routes::usage::{UsageParams, build_query};
}

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use tollgate_store::{BillingStore, Engine, KeyStore, WebhookStore};

pub use self::error::ApiError;

/// Everything a handler needs.
pub struct AppState {
    /// The engine of the data directory.
    pub engine: Engine,
    /// API keys.
    pub keys: KeyStore,
    /// Customers, plans, subscriptions, invoices, credits.
    pub billing: BillingStore,
    /// How long after a period ends late events still update its draft invoice (ms).
    pub invoice_grace_ms: i64,
    /// Entitlement checks from memory.
    pub checker: tollgate_store::billing::entitlements::Checker,
    /// Webhook endpoints, the outbox, deliveries and their log.
    pub webhooks: WebhookStore,
    /// IP allocations, attribution sources, enrichment.
    pub ip: tollgate_store::ipmeta::IpMeta,
    /// When automatic credit notes are issued without approval.
    pub credit_policy: tollgate_core::credit_note::CreditPolicy,
    /// Payment providers: the outbox of outgoing calls and the provider objects.
    pub providers: tollgate_store::ProviderStore,
    /// The signing secret of Stripe's webhook endpoint (`whsec_…`); `None`: Stripe webhooks
    /// are refused with `provider_not_configured`.
    pub stripe_webhook_secret: Option<String>,
    /// How the drop-in ingest endpoints (Orb, Stripe, OpenMeter) name Tollgate event types.
    pub dropin: convert::dropin::Mapping,
    /// Inspection rule-set versions and the current compiled one.
    pub inspect: tollgate_store::inspect::Inspection,
    /// Reads the payment provider's own records for reconciliation (`None`: reconciliation
    /// compares with Tollgate's copy of what the provider's webhooks said).
    pub provider_records: Option<Arc<dyn ProviderRecords>>,
    /// Whether reconciliation refunds overpayments by default.
    pub reconcile_refund_overpayments: bool,
    /// Orb, when configured (`serve --orb-api-key`); `None`: the Orb routes answer 404
    /// `provider_not_configured`.
    pub orb: Option<OrbLink>,
    /// Forwarding to Stripe Billing meter events, when on (`serve --stripe-secret-key` and a
    /// `[stripe_meters]` mapping); `None`: its routes answer 404 `provider_not_configured`.
    pub stripe_meters: Option<tollgate_store::StripeMeterStore>,
}

/// A payment provider's own records of Tollgate's invoices, read for reconciliation (the
/// binary's Stripe client implements it).
pub trait ProviderRecords: Send + Sync {
    /// The provider's record of each `(invoice id, provider id)`: `None` for an invoice never
    /// pushed or unknown to the provider. Fails when the provider cannot be read.
    fn fetch(
        &self,
        scope: Vec<(String, Option<String>)>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<tollgate_store::billing::reconcile::ProviderViews, String>,
                > + Send
                + '_,
        >,
    >;
}

/// What the HTTP surface needs of a configured Orb integration: its tables (status, invoices,
/// resume) and a way to ask the invoice puller of the server for a pull and wait for it.
pub struct OrbLink {
    /// The Orb tables.
    pub store: tollgate_store::OrbStore,
    /// Send a reply channel; the puller pulls and answers on it.
    pub pull: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<types::orb::OrbPullReport>>,
}

/// Shared state handle.
pub type State = Arc<AppState>;

/// The whole HTTP surface.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/v1/events", post(routes::events::ingest))
        // Drop-in ingest for existing Orb, Stripe and OpenMeter clients (their own paths).
        .route("/v1/ingest", post(routes::dropin::orb_ingest))
        .route(
            "/v1/billing/meter_events",
            post(routes::dropin::stripe_meter_event),
        )
        .route("/api/v1/events", post(routes::dropin::openmeter_ingest))
        .route("/v1/meters", get(routes::meters::list))
        .route(
            "/v1/meters/{slug}",
            get(routes::meters::get)
                .put(routes::meters::put)
                .delete(routes::meters::delete),
        )
        .route("/v1/meters/{slug}/usage", get(routes::usage::query))
        .route(
            "/v1/api_keys",
            get(routes::keys::list).post(routes::keys::create),
        )
        .route("/v1/api_keys/{id}", delete(routes::keys::revoke))
        .route(
            "/v1/customers",
            get(routes::customers::list).post(routes::customers::create),
        )
        .route(
            "/v1/customers/{key}",
            get(routes::customers::get).patch(routes::customers::patch),
        )
        .route(
            "/v1/customers/{key}/credit_grants",
            post(routes::customers::grant),
        )
        .route(
            "/v1/customers/{key}/credit_balance",
            get(routes::customers::balance),
        )
        .route(
            "/v1/customers/{key}/credit_ledger",
            get(routes::customers::ledger),
        )
        .route(
            "/v1/customers/{key}/upcoming_invoice",
            get(routes::customers::upcoming),
        )
        .route(
            "/v1/plans",
            get(routes::plans::list).post(routes::plans::create),
        )
        .route("/v1/plans/{key}", get(routes::plans::get))
        .route("/v1/plans/{key}/versions", post(routes::plans::publish))
        .route(
            "/v1/subscriptions",
            get(routes::subscriptions::list).post(routes::subscriptions::create),
        )
        .route("/v1/subscriptions/{id}", get(routes::subscriptions::get))
        .route(
            "/v1/subscriptions/{id}/change_plan",
            post(routes::subscriptions::change_plan),
        )
        .route(
            "/v1/subscriptions/{id}/cancel",
            post(routes::subscriptions::cancel),
        )
        .route("/v1/invoices", get(routes::invoices::list))
        .route("/v1/invoices/run", post(routes::invoices::run_now))
        .route("/v1/invoices/{id}", get(routes::invoices::get))
        .route("/v1/invoices/{id}/html", get(routes::invoices::html))
        .route(
            "/v1/invoices/{id}/finalize",
            post(routes::invoices::finalize),
        )
        .route("/v1/invoices/{id}/pay", post(routes::invoices::pay))
        .route("/v1/invoices/{id}/void", post(routes::invoices::void))
        .route(
            "/v1/invoices/{id}/credit_notes",
            post(routes::credit_notes::create),
        )
        .route("/v1/credit_notes", get(routes::credit_notes::list))
        .route("/v1/credit_notes/{id}", get(routes::credit_notes::get))
        .route(
            "/v1/credit_notes/{id}/approve",
            post(routes::credit_notes::approve),
        )
        .route(
            "/v1/credit_notes/{id}/reject",
            post(routes::credit_notes::reject),
        )
        .route("/v1/invoices/{id}/refunds", post(routes::refunds::create))
        .route("/v1/refunds", get(routes::refunds::list))
        .route("/v1/refunds/{id}", get(routes::refunds::get))
        .route("/v1/refunds/{id}/cancel", post(routes::refunds::cancel))
        .route("/v1/refunds/{id}/succeed", post(routes::refunds::succeed))
        .route("/v1/refunds/{id}/fail", post(routes::refunds::fail))
        .route(
            "/v1/reconciliation/runs",
            post(routes::reconciliation::create).get(routes::reconciliation::list),
        )
        .route(
            "/v1/reconciliation/runs/{id}",
            get(routes::reconciliation::get),
        )
        .route(
            "/v1/invoices/{id}/lines/{line}/explain",
            get(routes::invoices::explain),
        )
        .route("/v1/entitlements/check", post(routes::entitlements::check))
        .route(
            "/v1/entitlements/check_batch",
            post(routes::entitlements::check_batch),
        )
        .route(
            "/v1/customers/{key}/entitlements",
            get(routes::entitlements::list),
        )
        .route(
            "/v1/customers/{key}/entitlements/{feature}",
            put(routes::entitlements::put_override).delete(routes::entitlements::delete_override),
        )
        .route(
            "/v1/customers/{key}/sessions",
            get(routes::entitlements::sessions),
        )
        .route(
            "/v1/alerts",
            get(routes::alerts::list).post(routes::alerts::create),
        )
        .route("/v1/alerts/evaluate", post(routes::alerts::evaluate_now))
        .route(
            "/v1/alerts/{id}",
            get(routes::alerts::get)
                .patch(routes::alerts::patch)
                .delete(routes::alerts::delete),
        )
        .route("/v1/alert_events", get(routes::alerts::events))
        // Customer portal and finance exports.
        .route(
            "/v1/customers/{key}/portal_sessions",
            post(routes::portal_sessions::create),
        )
        .route(
            "/v1/admin_sessions",
            post(routes::portal_sessions::create_admin),
        )
        .route("/v1/exports/{kind}", get(routes::exports::download))
        .merge(portal::router())
        // Webhooks: endpoint registry, outbox messages, deliveries, replay.
        .route(
            "/v1/webhook_endpoints",
            get(routes::webhooks::list).post(routes::webhooks::create),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(routes::webhooks::get)
                .patch(routes::webhooks::patch)
                .delete(routes::webhooks::delete),
        )
        .route(
            "/v1/webhook_endpoints/{id}/rotate_secret",
            post(routes::webhooks::rotate_secret),
        )
        .route(
            "/v1/webhook_endpoints/{id}/test",
            post(routes::webhooks::test),
        )
        .route("/v1/webhook_messages", get(routes::webhooks::messages))
        .route("/v1/webhook_messages/{id}", get(routes::webhooks::message))
        .route(
            "/v1/webhook_messages/{id}/replay",
            post(routes::webhooks::replay),
        )
        // IP metadata and the audit log.
        .route(
            "/v1/ip/allocations",
            get(routes::ipmeta::list_allocations).post(routes::ipmeta::create_allocation),
        )
        .route(
            "/v1/ip/allocations/{id}",
            delete(routes::ipmeta::close_allocation),
        )
        .route(
            "/v1/ip/attribution_sources",
            get(routes::ipmeta::list_sources)
                .post(routes::ipmeta::put_source)
                .delete(routes::ipmeta::delete_source),
        )
        .route(
            "/v1/ip/enrichment/reload",
            post(routes::ipmeta::reload_enrichment),
        )
        .route("/v1/ip/{addr}", get(routes::ipmeta::lookup))
        .route(
            "/v1/providers/stripe/webhook",
            post(routes::providers::stripe_webhook),
        )
        .route(
            "/v1/providers/stripe/objects",
            get(routes::providers::objects),
        )
        .route("/v1/providers/stripe/calls", get(routes::providers::calls))
        .route(
            "/v1/providers/stripe/calls/{id}/retry",
            post(routes::providers::retry_call),
        )
        .route("/v1/providers/orb/status", get(routes::orb::status))
        .route("/v1/providers/orb/resume", post(routes::orb::resume))
        .route("/v1/providers/orb/invoices", get(routes::orb::invoices))
        .route("/v1/providers/orb/pull", post(routes::orb::pull))
        .route(
            "/v1/providers/stripe/meter_events/status",
            get(routes::stripe_meters::status),
        )
        .route(
            "/v1/providers/stripe/meter_events/resume",
            post(routes::stripe_meters::resume),
        )
        .route("/v1/audit", get(routes::ipmeta::audit))
        // Traffic inspection.
        .route(
            "/v1/inspect/rule_sets",
            get(routes::inspect::list).post(routes::inspect::publish),
        )
        .route(
            "/v1/inspect/rule_sets/current",
            get(routes::inspect::current),
        )
        .route("/v1/inspect/rule_sets/{version}", get(routes::inspect::get))
        .route("/v1/inspect/decide", post(routes::inspect::decide))
        .route("/v1/openapi.json", get(routes::ops::openapi))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .fallback(routes::ops::not_found)
        // Bodies are limited where they are read, with a typed error.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
