//! The admin pages: reconciliation reports in a browser, opened by a signed, expiring link
//! (`POST /v1/admin_sessions`) instead of an API key a browser cannot send.
//!
//! Owns: [`PortalAdmin`] (the extractor that checks an admin token) and the pages under
//! `/admin/{token}/…`: the list of reconciliation runs and one report (with its CSV). Does not
//! own: the report (`tollgate_core::reconcile`), its page (`crate::render`), the token format
//! ([`super::token`]).
//!
//! Invariants: an admin token is signed for the admin purpose, so a customer's portal link
//! never opens these pages and an admin link never opens a customer's portal.

use askama::Template;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tollgate_store::billing::reconcile::RECONCILIATION_LIST_MAX;

use super::PageError;
use super::token;
use crate::ApiError;
use crate::convert::time_text;
use crate::routes::{blocking, query_params};

/// An admin page request, proven by its token.
#[derive(Debug, Clone)]
pub struct PortalAdmin {
    token: String,
}

impl FromRequestParts<crate::State> for PortalAdmin {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::State,
    ) -> Result<Self, Self::Rejection> {
        let token = super::scope::token_of(parts, state).await?;
        let st = state.clone();
        let checked = token.clone();
        blocking(move || {
            let secret = st.billing.portal_secret()?;
            token::verify_admin(&secret, &checked, st.engine.now())?;
            Ok(())
        })
        .await?;
        Ok(PortalAdmin { token })
    }
}

/// One run in the list.
pub(crate) struct RunRow {
    pub id: String,
    pub period: String,
    pub started: String,
    pub differences: u64,
    pub unexplained: u64,
}

#[derive(Template)]
#[template(path = "admin_runs.html")]
pub(crate) struct RunsPage {
    pub base: String,
    pub runs: Vec<RunRow>,
}

fn html(page: &impl Template) -> Result<Response, PageError> {
    let text = page.render().map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "render_failed",
            format!("the page did not render: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], text).into_response())
}

/// `GET /admin/{token}/reconciliation[?period=YYYY-MM]`: the stored runs, newest first.
pub(crate) async fn runs(
    State(state): State<crate::State>,
    admin: PortalAdmin,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let params = query_params(pairs, &["period"])?;
    let period = params.get("period").cloned();
    if let Some(p) = &period {
        crate::convert::billing::month(p)?;
    }
    let st = state.clone();
    let runs = blocking(move || {
        Ok(st
            .billing
            .reconciliation_runs(period.as_deref(), RECONCILIATION_LIST_MAX)?)
    })
    .await?;
    html(&RunsPage {
        base: format!("/admin/{}", admin.token),
        runs: runs
            .into_iter()
            .map(|r| RunRow {
                id: r.id,
                period: r.period,
                started: time_text(r.started_ms),
                differences: r.differences,
                unexplained: r.unexplained,
            })
            .collect(),
    })
}

/// `GET /admin/{token}/reconciliation/{id}[?format=csv]`: one report.
pub(crate) async fn run(
    State(state): State<crate::State>,
    _admin: PortalAdmin,
    Path((_token, id)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let params = query_params(pairs, &["format"])?;
    let csv = match params.get("format").map(String::as_str) {
        None | Some("html") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::bad_request("invalid_format", "format is html or csv").into());
        }
    };
    let st = state.clone();
    let report = blocking(move || Ok(st.billing.reconciliation_report(&id)?)).await?;
    if csv {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"reconciliation-{}.csv\"",
                        report.period
                    ),
                ),
            ],
            report.to_csv(),
        )
            .into_response());
    }
    html(&crate::render::reconciliation_page(&report))
}
