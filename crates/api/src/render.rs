//! Server-rendered HTML (askama templates in `crates/api/templates/`).
//!
//! Owns: turning a stored invoice into a printable page. Amounts are formatted from integer
//! minor units by the currency's digits; dates are shown in the customer's time zone. Pages
//! work without JavaScript and print on A4/Letter.

use askama::Template;
use jiff::tz::TimeZone;
use tollgate_core::invoice::LineKind;
use tollgate_core::money::Currency;
use tollgate_core::time::UnixMs;
use tollgate_store::billing::Invoice;

/// One line as shown.
pub struct LineView {
    /// 1-based.
    pub number: u32,
    /// Description (with "Adjustment for …" when it corrects a period).
    pub description: String,
    /// Plan and version.
    pub plan: String,
    /// The dates the line covers.
    pub period: String,
    /// Quantity.
    pub quantity: String,
    /// Tier breakdown, one text per tier.
    pub tiers: Vec<String>,
    /// Notes: proration, allowance, minimum, maximum.
    pub notes: Vec<String>,
    /// Formatted amount.
    pub amount: String,
}

/// The invoice page.
#[derive(Template)]
#[template(path = "invoice.html")]
pub struct InvoicePage {
    /// `Invoice TG-2026-000001` or `Draft invoice`.
    pub title: String,
    /// Status.
    pub status: String,
    /// Customer name.
    pub customer_name: String,
    /// Customer key.
    pub customer_key: String,
    /// E-mail.
    pub customer_email: String,
    /// Period text.
    pub period: String,
    /// The customer's time zone.
    pub time_zone: String,
    /// Issue date.
    pub issued: String,
    /// Currency code.
    pub currency: String,
    /// Lines.
    pub lines: Vec<LineView>,
    /// Formatted subtotal.
    pub subtotal: String,
    /// Tax rate as a percentage.
    pub tax_rate: String,
    /// Formatted tax.
    pub tax: String,
    /// Formatted total.
    pub total: String,
    /// Formatted credits (empty when none were applied).
    pub credits: String,
    /// Formatted amount due.
    pub amount_due: String,
    /// Invoice id.
    pub id: String,
}

fn day(t: UnixMs, tz: &TimeZone) -> String {
    t.to_timestamp()
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d")
        .to_string()
}

fn span(start: UnixMs, end: UnixMs, tz: &TimeZone) -> String {
    // The end is exclusive; show the last instant's day.
    format!("{} – {}", day(start, tz), day(UnixMs(end.0 - 1), tz))
}

fn money(c: Currency, minor: i64) -> String {
    format!("{} {}", c.format(minor), c.code())
}

/// Builds the page of an invoice for a customer.
pub fn invoice_page(
    inv: &Invoice,
    customer_name: &str,
    email: Option<&str>,
    tz_name: &str,
) -> InvoicePage {
    let tz = TimeZone::get(tz_name).unwrap_or(TimeZone::UTC);
    let d = &inv.content.draft;
    let c = d.currency;
    let lines = d
        .lines
        .iter()
        .map(|l| {
            let mut notes = Vec::new();
            if !l.proration.is_full() {
                let what = if l.meter.is_some() {
                    "allowance, minimum and maximum prorated"
                } else {
                    "prorated"
                };
                notes.push(format!(
                    "{what}: {} of {} seconds",
                    l.proration.active_seconds, l.proration.period_seconds
                ));
            }
            if !l.charge.free_units.is_zero() {
                notes.push(format!("{} units free", l.charge.free_units));
            }
            if !l.charge.minimum_true_up.is_zero() {
                notes.push(format!("minimum true-up {}", l.charge.minimum_true_up));
            }
            if !l.charge.maximum_reduction.is_zero() {
                notes.push(format!(
                    "capped, {} not charged",
                    l.charge.maximum_reduction
                ));
            }
            if let Some(prev) = l.previously_billed_minor {
                notes.push(format!("previously billed {}", money(c, prev)));
            }
            let description = match l.kind {
                LineKind::Charge => l.description.clone(),
                LineKind::Adjustment => format!(
                    "Adjustment: {} for {}",
                    l.description,
                    span(l.period.start, l.period.end, &tz)
                ),
            };
            LineView {
                number: l.number,
                description,
                plan: format!("{} v{}", l.plan, l.plan_version),
                period: span(l.segment.start, l.segment.end, &tz),
                quantity: if l.meter.is_some() {
                    format!(
                        "{} {}",
                        l.quantity,
                        l.meter.as_ref().map(|m| m.as_str()).unwrap_or("")
                    )
                } else {
                    String::new()
                },
                tiers: l
                    .charge
                    .tiers
                    .iter()
                    .map(|t| {
                        let bound = t.up_to.map_or_else(|| "∞".to_owned(), |u| u.to_string());
                        format!(
                            "{} units × {} ({}–{}){}",
                            t.units,
                            t.unit_price,
                            t.from,
                            bound,
                            if t.flat_fee.is_zero() {
                                String::new()
                            } else {
                                format!(" + {}", t.flat_fee)
                            }
                        )
                    })
                    .collect(),
                notes,
                amount: money(c, l.amount_minor),
            }
        })
        .collect();
    InvoicePage {
        title: inv
            .number
            .as_ref()
            .map_or_else(|| "Draft invoice".to_owned(), |n| format!("Invoice {n}")),
        status: inv.status.as_str().to_owned(),
        customer_name: customer_name.to_owned(),
        customer_key: d.customer.to_string(),
        customer_email: email.unwrap_or("").to_owned(),
        period: span(d.period.start, d.period.end, &tz),
        time_zone: tz_name.to_owned(),
        issued: inv
            .finalized_ms
            .map_or_else(|| "not yet issued".to_owned(), |t| day(t, &tz)),
        currency: c.code().to_owned(),
        lines,
        subtotal: money(c, d.subtotal_minor),
        tax_rate: format!(
            "{}",
            (d.tax_rate * rust_decimal::Decimal::ONE_HUNDRED).normalize()
        ),
        tax: money(c, d.tax_minor),
        total: money(c, d.total_minor),
        credits: if inv.content.credits_applied_minor == 0 {
            String::new()
        } else {
            money(c, inv.content.credits_applied_minor)
        },
        amount_due: money(c, inv.content.amount_due_minor),
        id: inv.id.clone(),
    }
}

/// One difference as shown on the reconciliation page.
pub struct DifferenceView {
    /// Comparison.
    pub kind: &'static str,
    /// Class (also the row's CSS class).
    pub class: &'static str,
    /// Customer key.
    pub customer: String,
    /// Invoice id, or empty.
    pub invoice: String,
    /// What was compared.
    pub field: String,
    /// Tollgate's side.
    pub left_object: String,
    /// Its value.
    pub left_value: String,
    /// The other side.
    pub right_object: String,
    /// Its value.
    pub right_value: String,
    /// Exact difference.
    pub delta: String,
    /// What a rule did.
    pub repair: String,
    /// For people.
    pub detail: String,
}

/// The reconciliation report page (for admins).
#[derive(Template)]
#[template(path = "reconciliation.html")]
pub struct ReconciliationPage {
    /// `2026-11`.
    pub period: String,
    /// Run id.
    pub id: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Where the provider side came from.
    pub provider_source: &'static str,
    /// `usage: 12` per comparison.
    pub checked: Vec<String>,
    /// Unexplained differences.
    pub unexplained: usize,
    /// Every difference.
    pub differences: Vec<DifferenceView>,
}

/// The reconciliation page of a report.
pub fn reconciliation_page(report: &tollgate_core::reconcile::Report) -> ReconciliationPage {
    ReconciliationPage {
        period: report.period.clone(),
        id: report.id.clone(),
        started_at: report.started_at.clone(),
        finished_at: report.finished_at.clone(),
        provider_source: if report.provider_fetched {
            "fetched from the provider"
        } else {
            "Tollgate's copy of the provider's webhooks"
        },
        checked: report
            .checked
            .iter()
            .map(|(k, n)| format!("{}: {n}", k.as_str()))
            .collect(),
        unexplained: report.unexplained(),
        differences: report
            .differences
            .iter()
            .map(|d| DifferenceView {
                kind: d.kind.as_str(),
                class: d.class.as_str(),
                customer: d.customer.clone(),
                invoice: d.invoice.clone().unwrap_or_default(),
                field: d.field.clone(),
                left_object: d.left.object.clone(),
                left_value: d.left.value.clone(),
                right_object: d.right.object.clone(),
                right_value: d.right.value.clone(),
                delta: d.delta.clone(),
                repair: d.repair.clone().unwrap_or_default(),
                detail: d.detail.clone(),
            })
            .collect(),
    }
}
