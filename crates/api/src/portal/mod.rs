//! The customer portal: server-rendered pages where one customer sees their own usage and
//! charges, and finds out why they were charged.
//!
//! Owns: the pages under `/portal/{token}/…` (overview, usage charts, invoices, invoice detail,
//! the per-line drill-down) and their CSV twins (`?format=csv` on every page gives exactly the
//! rows the page shows); the signed link ([`token`]); the scope of every read
//! ([`scope::PortalCustomer`]); SVG charts ([`chart`]) and readable numbers ([`units`]).
//! Does not own: pricing (the running charges and the forecast come from
//! `tollgate_store::billing::run`, the explanation of a line from the same code as
//! `GET /v1/invoices/{id}/lines/{n}/explain`), or how errors map to statuses (`crate::error`).
//!
//! Invariants: a handler never names a customer: it gets a [`scope::PortalCustomer`] from the
//! token, and every read goes through it, so one customer's link can never read another's
//! data. Pages work without JavaScript and without cookies; the link is the whole credential.

pub mod admin;
pub mod chart;
pub(crate) mod pages;
pub mod scope;
pub mod token;
pub mod units;

use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ApiError;

/// The portal's routes (merged into the main router).
pub fn router() -> Router<crate::State> {
    Router::new()
        .route("/portal/{token}", get(pages::overview))
        .route("/portal/{token}/usage", get(pages::usage))
        .route("/portal/{token}/invoices", get(pages::invoices))
        .route("/portal/{token}/invoices/{id}", get(pages::invoice))
        .route(
            "/portal/{token}/invoices/{id}/lines/{line}",
            get(pages::line),
        )
        .route("/admin/{token}/reconciliation", get(admin::runs))
        .route("/admin/{token}/reconciliation/{id}", get(admin::run))
}

/// An error shown as a page: the status and code of the [`ApiError`], in words a customer
/// understands.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

#[derive(Template)]
#[template(path = "portal/error.html")]
struct ErrorPage<'a> {
    status: u16,
    heading: &'a str,
    advice: &'a str,
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        let (heading, advice) = match e.status {
            StatusCode::UNAUTHORIZED => (
                "This link does not open the portal",
                "Portal links expire. Ask your account contact for a new link.",
            ),
            StatusCode::FORBIDDEN => (
                "Not yours to see",
                "This page belongs to another account. Use the links inside your portal.",
            ),
            StatusCode::NOT_FOUND => (
                "Not found",
                "There is nothing at this address. Use the links inside your portal.",
            ),
            s if s.is_client_error() => (
                "This request cannot be answered",
                "Check the values in the form and try again.",
            ),
            _ => ("Something went wrong", "Please try again in a moment."),
        };
        let page = ErrorPage {
            status: e.status.as_u16(),
            heading,
            advice,
            code: e.code,
            message: &e.message,
        };
        let body = page
            .render()
            .unwrap_or_else(|_| format!("{} {}", e.status.as_u16(), e.code));
        let mut response = (
            e.status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response();
        response.headers_mut().insert(
            header::REFERRER_POLICY,
            axum::http::HeaderValue::from_static("no-referrer"),
        );
        response
    }
}
