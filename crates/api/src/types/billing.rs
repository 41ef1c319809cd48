//! Bodies of the billing endpoints: customers, plans, subscriptions, invoices, credits.
//!
//! Decimals (prices, quantities, tax rates) travel as strings so no JSON reader rounds them;
//! money travels as integer minor units plus the currency code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new customer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    /// The key: equal to the `subject` of the events whose usage this customer pays for.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Billing e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// ISO 4217 currency of every invoice, e.g. `USD`, `JPY`, `KWD`.
    pub currency: String,
    /// IANA time zone where periods start (default `UTC`).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// `YYYY-MM-DD`: periods start on this day of the month (and month of the year for yearly
    /// plans), at local midnight; default `2000-01-01` (calendar months).
    #[serde(default)]
    pub billing_anchor: Option<String>,
    /// Tax as a decimal fraction of the subtotal, e.g. `"0.19"` (default `"0"`).
    #[serde(default)]
    pub tax_rate: Option<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Changes to a customer; absent fields stay. `time_zone` and `billing_anchor` may change only
/// while the customer has no subscription; `currency` never.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    /// Display name.
    pub name: Option<String>,
    /// Billing e-mail.
    pub email: Option<String>,
    /// IANA time zone.
    pub time_zone: Option<String>,
    /// `YYYY-MM-DD`.
    pub billing_anchor: Option<String>,
    /// Decimal fraction.
    pub tax_rate: Option<String>,
    /// Replaces all metadata.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A customer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerResponse {
    /// Key (event `subject`).
    pub key: String,
    /// Name.
    pub name: String,
    /// E-mail.
    pub email: Option<String>,
    /// Currency.
    pub currency: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Anchor date.
    pub billing_anchor: String,
    /// Tax rate (decimal fraction).
    pub tax_rate: String,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A page of customers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerList {
    /// Customers in key order.
    pub data: Vec<CustomerResponse>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// One tier.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierBody {
    /// Last unit of the tier, inclusive (decimal string); `null` on the last tier.
    pub up_to: Option<String>,
    /// Price of one unit (decimal string, up to 12 fractional digits).
    pub unit_price: String,
    /// Fee due once the quantity enters the tier (decimal string).
    #[serde(default)]
    pub flat_fee: Option<String>,
}

/// A price model; `type` says which.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriceModelBody {
    /// A fixed amount per period (prorated).
    Flat {
        /// Decimal string in major units.
        amount: String,
    },
    /// Every unit at one price.
    PerUnit {
        /// Decimal string.
        unit_price: String,
    },
    /// Each slice at its tier's price.
    Graduated {
        /// Ascending tiers.
        tiers: Vec<TierBody>,
    },
    /// All units at the price of the tier the quantity ends in.
    Volume {
        /// Ascending tiers.
        tiers: Vec<TierBody>,
    },
    /// Whole packages; partial packages round up.
    Package {
        /// Units per package (decimal string).
        package_size: String,
        /// Price per package (decimal string).
        package_price: String,
    },
}

/// A price of a plan version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    /// Unique within the version, `[a-z][a-z0-9_-]*`.
    pub key: String,
    /// Shown on invoices.
    pub name: String,
    /// Meter slug (absent for flat prices).
    #[serde(default)]
    pub meter: Option<String>,
    /// The model.
    pub model: PriceModelBody,
    /// Free units per period (decimal string, prorated).
    #[serde(default)]
    pub free_units: Option<String>,
    /// Minimum charge per period (decimal string, prorated; shortfall trued up).
    #[serde(default)]
    pub minimum_amount: Option<String>,
    /// Maximum charge per period (decimal string, prorated).
    #[serde(default)]
    pub maximum_amount: Option<String>,
}

/// A new plan; with `prices`, version 1 is published at once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// `[a-z][a-z0-9_-]*`.
    pub key: String,
    /// Display name.
    pub name: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// `month` or `year`.
    pub interval: String,
    /// Prices of version 1.
    #[serde(default)]
    pub prices: Option<Vec<PriceBody>>,
    /// Features version 1 grants (only with `prices`).
    #[serde(default)]
    pub entitlements: Option<Vec<super::entitlements::EntitlementBody>>,
}

/// A new plan version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanVersionBody {
    /// Its prices.
    pub prices: Vec<PriceBody>,
    /// The features it grants.
    #[serde(default)]
    pub entitlements: Vec<super::entitlements::EntitlementBody>,
}

/// A plan version (immutable).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanVersionResponse {
    /// Plan key.
    pub plan: String,
    /// Version number.
    pub version: u32,
    /// Prices.
    pub prices: Vec<PriceBody>,
    /// The features it grants.
    pub entitlements: Vec<super::entitlements::EntitlementBody>,
    /// RFC 3339.
    pub published_at: String,
}

/// A plan.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanResponse {
    /// Key.
    pub key: String,
    /// Name.
    pub name: String,
    /// Currency.
    pub currency: String,
    /// `month` or `year`.
    pub interval: String,
    /// Versions, oldest first.
    pub versions: Vec<PlanVersionResponse>,
    /// RFC 3339.
    pub created_at: String,
}

/// All plans.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanList {
    /// Plans by key.
    pub data: Vec<PlanResponse>,
}

/// A new subscription.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    /// Customer key.
    pub customer: String,
    /// Plan key.
    pub plan: String,
    /// Pin a version; default the latest.
    #[serde(default)]
    pub version: Option<u32>,
    /// RFC 3339, whole minute; default now (floored to the minute).
    #[serde(default)]
    pub start: Option<String>,
    /// RFC 3339, whole minute: nothing is billed before it.
    #[serde(default)]
    pub trial_end: Option<String>,
}

/// A plan change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlanBody {
    /// New plan (same interval and currency).
    pub plan: String,
    /// Pin a version; default the latest.
    #[serde(default)]
    pub version: Option<u32>,
    /// RFC 3339, whole minute; default now (floored to the minute).
    #[serde(default)]
    pub at: Option<String>,
}

/// A cancellation.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// End at the end of the current period instead of now.
    #[serde(default)]
    pub at_period_end: bool,
    /// RFC 3339, whole minute; default now. Ignored with `at_period_end`.
    #[serde(default)]
    pub at: Option<String>,
}

/// A phase.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PhaseBody {
    /// Plan.
    pub plan: String,
    /// Version.
    pub version: u32,
    /// RFC 3339.
    pub start: String,
}

/// A subscription.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionResponse {
    /// `sub_…`.
    pub id: String,
    /// Customer key.
    pub customer: String,
    /// `scheduled`, `trialing`, `active`, `ended`.
    pub status: String,
    /// Phases in order.
    pub phases: Vec<PhaseBody>,
    /// RFC 3339.
    pub trial_end: Option<String>,
    /// RFC 3339.
    pub ends_at: Option<String>,
    /// The period containing now, if the subscription runs now.
    pub current_period: Option<PeriodBody>,
    /// RFC 3339.
    pub created_at: String,
}

/// Subscriptions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionList {
    /// By customer, then id.
    pub data: Vec<SubscriptionResponse>,
}

/// A half-open interval.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeriodBody {
    /// RFC 3339, inclusive.
    pub start: String,
    /// RFC 3339, exclusive.
    pub end: String,
}

/// One tier's part of a line.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TierChargeBody {
    /// Units below the tier.
    pub from: String,
    /// The tier's inclusive bound.
    pub up_to: Option<String>,
    /// Units priced in the tier.
    pub units: String,
    /// Unit price.
    pub unit_price: String,
    /// Tier flat fee.
    pub flat_fee: String,
    /// Exact amount.
    pub amount: String,
}

/// An invoice line, with its provenance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LineBody {
    /// 1-based.
    pub number: u32,
    /// `charge` or `adjustment`.
    pub kind: String,
    /// Price key.
    pub price: String,
    /// Description.
    pub description: String,
    /// Price model.
    pub model: String,
    /// Meter.
    pub meter: Option<String>,
    /// Plan.
    pub plan: String,
    /// Plan version.
    pub plan_version: u32,
    /// Billing period charged (for an adjustment: the period corrected).
    pub period: PeriodBody,
    /// Part of the period the price was active.
    pub segment: PeriodBody,
    /// `active_seconds / period_seconds`.
    pub proration: String,
    /// Usage (for an adjustment: the change).
    pub quantity: String,
    /// After the free allowance.
    pub billable_quantity: String,
    /// Free allowance used.
    pub free_units: String,
    /// Tier breakdown.
    pub tiers: Vec<TierChargeBody>,
    /// Added to reach the minimum.
    pub minimum_true_up: String,
    /// Removed by the maximum.
    pub maximum_reduction: String,
    /// Exact amount before rounding.
    pub amount_exact: String,
    /// Already billed for what an adjustment corrects.
    pub previously_billed_minor: Option<i64>,
    /// Rounded amount, minor units.
    pub amount_minor: i64,
}

/// An invoice.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvoiceResponse {
    /// `inv_…`.
    pub id: String,
    /// Gapless per year, given at finalization.
    pub number: Option<String>,
    /// `draft`, `finalized`, `paid`, `void`.
    pub status: String,
    /// Customer key.
    pub customer: String,
    /// Subscription.
    pub subscription: String,
    /// Currency.
    pub currency: String,
    /// Billing period.
    pub period: PeriodBody,
    /// Lines.
    pub lines: Vec<LineBody>,
    /// Σ lines.
    pub subtotal_minor: i64,
    /// Decimal fraction.
    pub tax_rate: String,
    /// Tax.
    pub tax_minor: i64,
    /// Subtotal + tax.
    pub total_minor: i64,
    /// Prepaid credit applied at finalization.
    pub credits_applied_minor: i64,
    /// Total − credits.
    pub amount_due_minor: i64,
    /// Late events update the draft until then (RFC 3339).
    pub grace_until: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub finalized_at: Option<String>,
    /// RFC 3339.
    pub paid_at: Option<String>,
    /// RFC 3339.
    pub voided_at: Option<String>,
}

/// A page of invoices.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvoiceList {
    /// By id.
    pub data: Vec<InvoiceResponse>,
    /// Pass as `after` for the next page.
    pub next_after: Option<String>,
}

/// Parameters of an invoice run.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceRunBody {
    /// `YYYY-MM`: only periods starting in that local month.
    #[serde(default)]
    pub period: Option<String>,
    /// Only this customer.
    #[serde(default)]
    pub customer: Option<String>,
}

/// What a run did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvoiceRunResponse {
    /// Subscriptions looked at.
    pub subscriptions: u32,
    /// Drafts created.
    pub created: u32,
    /// Drafts changed by late events.
    pub updated: u32,
    /// Invoices finalized.
    pub finalized: u32,
    /// Drafts unchanged.
    pub unchanged: u32,
    /// Credit notes created for late corrections that lowered finalized periods (issued, or
    /// pending approval above `--credit-auto-issue-below`).
    pub credit_notes: u32,
    /// Subscriptions that failed: `{subscription, code, message}`.
    pub errors: Vec<InvoiceRunErrorBody>,
    /// Milliseconds per stage: `load`, `price` (usage + pricing), `commit`.
    pub timings_ms: BTreeMap<String, f64>,
}

/// A subscription the run could not invoice.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvoiceRunErrorBody {
    /// Subscription id.
    pub subscription: String,
    /// Stable code.
    pub code: String,
    /// Why.
    pub message: String,
}

/// Usage in one window of a line's segment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExplainWindow {
    /// RFC 3339.
    pub start: String,
    /// RFC 3339.
    pub end: String,
    /// Decimal string.
    pub quantity: String,
}

/// One raw event behind a line.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExplainEvent {
    /// When Tollgate made it durable (RFC 3339).
    pub committed_at: String,
    /// Arrived after the invoice was finalized: not in this line, billed by an adjustment line
    /// of a later invoice.
    pub late: bool,
    /// The CloudEvent exactly as received.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// Why a line says what it says.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExplainResponse {
    /// The line.
    pub line: LineBody,
    /// Usage today per day (customer's time zone) over the line's segment. For a draft, Σ = the
    /// line's quantity; for a finalized invoice the difference is late usage, billed by
    /// adjustment lines later.
    pub windows: Vec<ExplainWindow>,
    /// Σ windows.
    pub quantity_now: String,
    /// Raw CloudEvents behind the line, in ingest order, one page.
    pub events: Vec<ExplainEvent>,
    /// Pass as `after` for the next page of events; absent on the last page.
    pub next_after: Option<String>,
}

/// A credit grant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// Minor units (cents), above zero.
    pub amount_minor: i64,
    /// Must be the customer's currency.
    pub currency: String,
    /// Lower is drawn first (default 100).
    #[serde(default)]
    pub priority: Option<u32>,
    /// RFC 3339; default never.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Why (shown in the ledger).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A grant as stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantResponse {
    /// `grant_…`.
    pub id: String,
    /// Customer.
    pub customer: String,
    /// Granted.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// Priority.
    pub priority: u32,
    /// RFC 3339.
    pub granted_at: String,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// Reason.
    pub reason: String,
}

/// One grant's standing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantBalanceBody {
    /// Grant id.
    pub grant: String,
    /// Left to spend.
    pub remaining_minor: i64,
    /// Expired.
    pub expired: bool,
}

/// A credit balance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BalanceResponse {
    /// Customer.
    pub customer: String,
    /// Currency.
    pub currency: String,
    /// RFC 3339 instant of the balance.
    pub at: String,
    /// Spendable.
    pub available_minor: i64,
    /// Per grant, in draw-down order.
    pub grants: Vec<GrantBalanceBody>,
}

/// One ledger entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntryBody {
    /// Transaction id (its entries sum to zero).
    pub txn: String,
    /// `grant`, `draw`, `reversal`, `expiry`.
    pub kind: String,
    /// Grant.
    pub grant: String,
    /// `customer_credit`, `credit_granted`, `invoice_settlement`, `credit_expired`.
    pub account: String,
    /// Signed minor units.
    pub amount_minor: i64,
    /// RFC 3339.
    pub at: String,
    /// Invoice of a draw or reversal.
    pub invoice: Option<String>,
}

/// A customer's grants and ledger.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerResponse {
    /// Grants.
    pub grants: Vec<GrantResponse>,
    /// Entries in order.
    pub entries: Vec<LedgerEntryBody>,
}

/// The running charges of the current period: the invoice the period would get if it ended
/// now, priced with the usage so far. Not stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UpcomingInvoiceResponse {
    /// Customer key.
    pub customer: String,
    /// Subscription.
    pub subscription: String,
    /// Currency.
    pub currency: String,
    /// The current period.
    pub period: PeriodBody,
    /// Usage up to this instant (RFC 3339).
    pub as_of: String,
    /// Lines (charges so far, and adjustments the next invoice will carry).
    pub lines: Vec<LineBody>,
    /// Σ lines.
    pub subtotal_minor: i64,
    /// Tax.
    pub tax_minor: i64,
    /// Subtotal + tax.
    pub total_minor: i64,
}
