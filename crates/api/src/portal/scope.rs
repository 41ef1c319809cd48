//! The scope of a portal request: the one customer its token names.
//!
//! Owns: [`PortalCustomer`], an axum extractor that checks the `{token}` path segment (signature
//! and expiry, against the data directory's secret) and loads the customer; and the only ways a
//! portal handler reads billing data, each limited to that customer. Does not own: the token
//! format ([`super::token`]).
//!
//! Invariants: a portal handler that takes a `PortalCustomer` cannot read another customer's
//! invoices: [`PortalCustomer::invoice`] answers 403 `portal_forbidden` for them, and lists and
//! usage queries are filtered by the token's customer key.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use tollgate_core::billing::{Customer, CustomerKey};
use tollgate_core::event::Subject;
use tollgate_core::time::UnixMs;
use tollgate_store::billing::{Invoice, InvoiceFilter, LIST_LIMIT_MAX};

use super::PageError;
use super::token::{self, TokenError};
use crate::ApiError;
use crate::routes::blocking;

/// The customer a portal request may read, proven by its token.
#[derive(Debug, Clone)]
pub struct PortalCustomer {
    customer: Customer,
    expires: UnixMs,
    token: String,
}

impl PortalCustomer {
    /// The customer.
    pub fn customer(&self) -> &Customer {
        &self.customer
    }

    /// Its key.
    pub fn key(&self) -> &CustomerKey {
        &self.customer.key
    }

    /// When the link stops working.
    pub fn expires(&self) -> UnixMs {
        self.expires
    }

    /// `/portal/<token>`: the root every link of the page starts with.
    pub fn base(&self) -> String {
        format!("/portal/{}", self.token)
    }

    /// The events' subject of this customer.
    pub fn subject(&self) -> Result<Subject, ApiError> {
        Subject::parse(self.customer.key.as_str())
            .map_err(|e| ApiError::bad_request("invalid_customer_key", e.to_string()))
    }

    /// One of this customer's invoices; 403 `portal_forbidden` when it is another's.
    pub fn invoice(&self, state: &crate::AppState, id: &str) -> Result<Invoice, ApiError> {
        let inv = state.billing.invoice(id)?;
        if inv.content.draft.customer != self.customer.key {
            return Err(crate::error::portal_forbidden("invoice"));
        }
        Ok(inv)
    }

    /// This customer's invoices, newest period first.
    pub fn invoices(&self, state: &crate::AppState) -> Result<Vec<Invoice>, ApiError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = state.billing.invoices(&InvoiceFilter {
                customer: Some(self.customer.key.clone()),
                status: None,
                after: after.clone(),
                limit: LIST_LIMIT_MAX,
            })?;
            let full = page.len() == LIST_LIMIT_MAX;
            after = page.last().map(|i| i.id.clone());
            all.extend(page);
            if !full {
                break;
            }
        }
        assert!(
            all.iter()
                .all(|i| i.content.draft.customer == self.customer.key),
            "the store filtered by customer"
        );
        all.sort_by(|a, b| {
            b.content
                .draft
                .period
                .start
                .cmp(&a.content.draft.period.start)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(all)
    }
}

impl FromRequestParts<crate::State> for PortalCustomer {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::State,
    ) -> Result<Self, Self::Rejection> {
        let token = token_of(parts, state).await?;
        let st = state.clone();
        let scoped = blocking(move || {
            let secret = st.billing.portal_secret()?;
            let grant = token::verify(&secret, &token, st.engine.now())?;
            // Customers are never deleted; a signed key that is not there is not a valid link.
            let customer = st
                .billing
                .customer(&grant.customer)
                .map_err(|_| ApiError::from(TokenError::Invalid))?;
            Ok(PortalCustomer {
                customer,
                expires: grant.expires,
                token,
            })
        })
        .await?;
        Ok(scoped)
    }
}

/// The `{token}` segment of a portal or admin path (a missing one is an invalid link).
pub(crate) async fn token_of(parts: &mut Parts, state: &crate::State) -> Result<String, PageError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::from(TokenError::Invalid))?;
    Ok(params
        .iter()
        .find(|(name, _)| *name == "token")
        .map(|(_, value)| value.to_owned())
        .ok_or_else(|| ApiError::from(TokenError::Invalid))?)
}
