//! Bodies of `/v1/reconciliation/runs`. A run's report is `tollgate_core::reconcile::Report`,
//! serialized as it is stored; its schema is [`ReconciliationReport`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A reconciliation to run now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileBody {
    /// The month, `YYYY-MM`: invoices whose billing period starts in it (customer's zone).
    pub period: String,
    /// Refund what was collected beyond what an invoice asked (origin `rule`); default: the
    /// server's `--reconcile-refund-overpayments`.
    #[serde(default)]
    pub refund_overpayments: Option<bool>,
}

/// One side of a comparison.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReconciliationSide {
    /// What was read.
    pub object: String,
    /// Its value (decimal quantity, minor units or status).
    pub value: String,
}

/// A difference.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReconciliationDifference {
    /// `usage`, `pricing`, `provider`, `ledger`.
    pub kind: String,
    /// `late_event_after_finalization`, `missing_provider_record`, `amount_drift`,
    /// `status_drift`, `unexplained`.
    pub class: String,
    /// Customer key.
    pub customer: String,
    /// Invoice id.
    pub invoice: Option<String>,
    /// What was compared.
    pub field: String,
    /// Tollgate's side.
    pub left: ReconciliationSide,
    /// The other side.
    pub right: ReconciliationSide,
    /// `right − left`, exact (empty for statuses).
    pub delta: String,
    /// For people.
    pub detail: String,
    /// What a rule did about it.
    pub repair: Option<String>,
}

/// A reconciliation run's report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReconciliationReport {
    /// `recon_…`.
    pub id: String,
    /// `YYYY-MM`.
    pub period: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Values checked per comparison (`usage`, `pricing`, `provider`, `ledger`).
    pub checked: std::collections::BTreeMap<String, u64>,
    /// Every difference.
    pub differences: Vec<ReconciliationDifference>,
    /// Whether the provider's own records were fetched.
    pub provider_fetched: bool,
}

/// A stored run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReconciliationRunSummary {
    /// `recon_…`.
    pub id: String,
    /// `YYYY-MM`.
    pub period: String,
    /// RFC 3339.
    pub started_at: String,
    /// Differences found.
    pub differences: u64,
    /// Of which unexplained.
    pub unexplained: u64,
}

/// Stored runs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReconciliationRunList {
    /// Runs.
    pub data: Vec<ReconciliationRunSummary>,
}
