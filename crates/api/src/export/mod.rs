//! Finance exports: invoices, invoice lines, credit ledger entries, credit notes and usage per
//! customer per day, for a range of dates, as CSV or Parquet with one documented, stable schema
//! (`docs/exports.md`).
//!
//! Owns: which records an export holds, its columns ([`Kind::columns`]: name, type, meaning —
//! the schema is data, and the docs are checked against it), and the two encodings
//! ([`format`]). Does not own: any number in it — amounts are the stored invoices' and ledger
//! entries' integer minor units, usage is the engine's rollups, exactly.
//!
//! Rules: the range is `[from, to)` of calendar dates, and each record is judged in its
//! customer's time zone (an invoice by the local date its period starts, a ledger entry by the
//! local date it happened, usage by local days), so "November" means each customer's November.
//! Rows are sorted (customer, then time, then id) so an export is reproducible. Amounts are
//! integer minor units with a `currency` column; quantities are exact decimal text.
//!
//! Invariants: the range is at most [`EXPORT_RANGE_DAYS_MAX`] days; CSV and Parquet of one
//! export hold the same rows and values.

pub mod format;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use tollgate_core::billing::{Customer, Period};
use tollgate_core::invoice::LineKind;
use tollgate_core::limits::EXPORT_RANGE_DAYS_MAX;
use tollgate_core::time::UnixMs;
use tollgate_core::usage::{UsageQuery, WindowSize};
use tollgate_store::billing::credit_notes::CreditNoteFilter;
use tollgate_store::billing::{Invoice, InvoiceFilter, LIST_LIMIT_MAX};
use tollgate_store::{BillingStore, Engine};

use crate::ApiError;

/// What is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One row per invoice.
    Invoices,
    /// One row per invoice line.
    InvoiceLines,
    /// One row per credit ledger entry.
    Credits,
    /// One row per customer, meter and local day with usage.
    UsageDaily,
    /// One row per credit note.
    CreditNotes,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: [Kind; 5] = [
        Kind::Invoices,
        Kind::InvoiceLines,
        Kind::Credits,
        Kind::UsageDaily,
        Kind::CreditNotes,
    ];

    /// The name in URLs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Invoices => "invoices",
            Kind::InvoiceLines => "invoice_lines",
            Kind::Credits => "credits",
            Kind::UsageDaily => "usage_daily",
            Kind::CreditNotes => "credit_notes",
        }
    }

    /// The kind of a name.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == text)
    }

    /// The columns, in order. Stable: columns are only ever added at the end.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Kind::Invoices => INVOICE_COLUMNS,
            Kind::InvoiceLines => LINE_COLUMNS,
            Kind::Credits => CREDIT_COLUMNS,
            Kind::UsageDaily => USAGE_COLUMNS,
            Kind::CreditNotes => CREDIT_NOTE_COLUMNS,
        }
    }
}

/// A column's type, the same in both encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text. CSV: as is. Parquet: `BYTE_ARRAY (STRING)`.
    Text,
    /// 64-bit integer. CSV: decimal digits. Parquet: `INT64`.
    Int64,
    /// An instant, milliseconds, UTC. CSV: RFC 3339 (`2026-11-01T00:00:00Z`). Parquet:
    /// `INT64 (TIMESTAMP(MILLIS, UTC))`.
    Timestamp,
    /// A calendar date. CSV: `YYYY-MM-DD`. Parquet: `INT32 (DATE)`.
    Date,
}

impl ColumnType {
    /// The name used in `docs/exports.md`.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Int64 => "int64",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Date => "date",
        }
    }
}

/// One column of an export.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// snake_case name.
    pub name: &'static str,
    /// Type.
    pub ty: ColumnType,
    /// Whether it may be empty (CSV: empty field; Parquet: null).
    pub nullable: bool,
    /// What it means.
    pub meaning: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, meaning: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable: false,
        meaning,
    }
}

const fn opt(name: &'static str, ty: ColumnType, meaning: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable: true,
        meaning,
    }
}

use ColumnType::{Date as D, Int64 as I, Text as T, Timestamp as Ts};

const INVOICE_COLUMNS: &[Column] = &[
    col("invoice_id", T, "Invoice id (`inv_…`)"),
    opt(
        "number",
        T,
        "`TG-YYYY-NNNNNN`, given at finalization; empty for drafts",
    ),
    col("customer", T, "Customer key"),
    col("subscription", T, "Subscription id"),
    col("status", T, "`draft`, `finalized`, `paid` or `void`"),
    col("currency", T, "ISO 4217 code of every amount in the row"),
    col("period_start", Ts, "Billing period start (inclusive)"),
    col("period_end", Ts, "Billing period end (exclusive)"),
    col(
        "period_start_local",
        D,
        "The period's first day in the customer's time zone (the date the range selects on)",
    ),
    col("time_zone", T, "The customer's IANA time zone"),
    opt("finalized_at", Ts, "When it was finalized"),
    opt("paid_at", Ts, "When it was marked paid"),
    opt("voided_at", Ts, "When it was voided"),
    col("subtotal_minor", I, "Σ line amounts, minor units"),
    col("tax_minor", I, "Tax, minor units"),
    col("total_minor", I, "subtotal + tax, minor units"),
    col(
        "credits_applied_minor",
        I,
        "Prepaid credit drawn at finalization, minor units",
    ),
    col("amount_due_minor", I, "total − credits, minor units"),
];

const LINE_COLUMNS: &[Column] = &[
    col("invoice_id", T, "Invoice id"),
    opt("invoice_number", T, "Invoice number; empty for drafts"),
    col("customer", T, "Customer key"),
    col("status", T, "The invoice's status"),
    col("currency", T, "ISO 4217 code of `amount_minor`"),
    col("line", I, "1-based line number"),
    col(
        "kind",
        T,
        "`charge` (this period) or `adjustment` (corrects an earlier finalized period)",
    ),
    col("price", T, "Price key"),
    col("description", T, "Line text"),
    col(
        "model",
        T,
        "Price model: flat, per_unit, graduated, volume, package",
    ),
    opt("meter", T, "Meter slug; empty for flat fees"),
    col("plan", T, "Plan key"),
    col("plan_version", I, "Plan version"),
    col(
        "period_start",
        Ts,
        "Period charged (for an adjustment: the period corrected), start",
    ),
    col("period_end", Ts, "Period end (exclusive)"),
    col(
        "segment_start",
        Ts,
        "Part of the period the price was active, start",
    ),
    col("segment_end", Ts, "Segment end (exclusive)"),
    col(
        "quantity",
        T,
        "Usage priced, exact decimal (for an adjustment: the change)",
    ),
    col("amount_minor", I, "Line amount, minor units"),
];

const CREDIT_COLUMNS: &[Column] = &[
    col("customer", T, "Customer key"),
    col("transaction", T, "Transaction id; its entries sum to zero"),
    col("kind", T, "Why: grant, draw, reversal, expiry"),
    col("grant_id", T, "The credit grant moved"),
    col(
        "account",
        T,
        "customer_credit, credit_granted, invoice_settlement or credit_expired",
    ),
    col(
        "amount_minor",
        I,
        "Signed amount, minor units (positive increases the account)",
    ),
    col("currency", T, "ISO 4217 code"),
    col("at", Ts, "When"),
    col(
        "date_local",
        D,
        "The day in the customer's time zone (the date the range selects on)",
    ),
    opt("invoice_id", T, "The invoice, for draws and reversals"),
];

const CREDIT_NOTE_COLUMNS: &[Column] = &[
    col("credit_note_id", T, "Credit note id (`cn_…`)"),
    opt(
        "number",
        T,
        "`CN-YYYY-NNNNNN`, given when issued; empty while pending or when rejected",
    ),
    col("invoice_id", T, "The invoice credited"),
    opt("invoice_number", T, "Its number"),
    col("customer", T, "Customer key"),
    col("status", T, "pending_approval, issued or rejected"),
    col("origin", T, "manual or late_correction"),
    col("reason", T, "Why the note was issued"),
    col("currency", T, "ISO 4217 code of the amounts"),
    col("subtotal_minor", I, "Credited before tax, minor units"),
    col("tax_minor", I, "Tax given back, minor units"),
    col("total_minor", I, "subtotal + tax, minor units"),
    opt(
        "to_amount_due_minor",
        I,
        "Of the total, taken off what the invoice still owed; empty unless issued",
    ),
    opt(
        "to_balance_minor",
        I,
        "Of the total, added to the customer's credit balance; empty unless issued",
    ),
    col("created_at", Ts, "Created"),
    opt("issued_at", Ts, "Issued"),
    col(
        "date_local",
        D,
        "The day it was issued (else created) in the customer's time zone (the date the range selects on)",
    ),
];

const USAGE_COLUMNS: &[Column] = &[
    col("customer", T, "Customer key (the events' subject)"),
    col("meter", T, "Meter slug"),
    col("date", D, "The day in the customer's time zone"),
    col("time_zone", T, "The customer's IANA time zone"),
    col("window_start", Ts, "Local midnight starting the day"),
    col(
        "window_end",
        Ts,
        "Next local midnight (days with a DST change are 23 or 25 hours)",
    ),
    col(
        "quantity",
        T,
        "The meter's aggregate for the day, exact decimal",
    ),
];

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Empty / null.
    Null,
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
    /// Instant.
    Ts(UnixMs),
    /// Date.
    Date(Date),
}

/// An export's rows.
#[derive(Debug, Clone)]
pub struct Table {
    /// What it is.
    pub kind: Kind,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
}

/// A range of dates, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First date.
    pub from: Date,
    /// First date after.
    pub to: Date,
}

impl Range {
    /// Parses `YYYY-MM-DD` bounds: 400 `invalid_date`; 400 `empty_time_range` when `to` is not
    /// after `from`; 422 `export_range_days_max` when wider than the limit.
    pub fn parse(from: &str, to: &str) -> Result<Range, ApiError> {
        let day = |name: &str, t: &str| {
            t.parse::<Date>().map_err(|_| {
                ApiError::bad_request("invalid_date", format!("{name} is a date, YYYY-MM-DD"))
            })
        };
        let (from, to) = (day("from", from)?, day("to", to)?);
        if to <= from {
            return Err(ApiError::bad_request(
                "empty_time_range",
                "to must be after from",
            ));
        }
        let days = i64::from(
            to.since(from)
                .map_err(|e| ApiError::bad_request("invalid_date", e.to_string()))?
                .get_days(),
        );
        if days > EXPORT_RANGE_DAYS_MAX {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "export_range_days_max",
                format!("an export covers at most {EXPORT_RANGE_DAYS_MAX} days"),
            ));
        }
        Ok(Range { from, to })
    }

    fn contains(&self, d: Date) -> bool {
        self.from <= d && d < self.to
    }

    /// `[local midnight of from, local midnight of to)` in `tz`.
    fn period_in(&self, tz: &TimeZone) -> Result<Period, ApiError> {
        let at = |d: Date| {
            d.to_zoned(tz.clone())
                .map(|z| UnixMs::from_timestamp(z.timestamp()))
                .map_err(|e| ApiError::bad_request("invalid_date", e.to_string()))
        };
        Ok(Period::new(at(self.from)?, at(self.to)?))
    }
}

fn local_date(t: UnixMs, tz: &TimeZone) -> Date {
    t.to_timestamp().to_zoned(tz.clone()).date()
}

/// Every item of a listing read [`LIST_LIMIT_MAX`] at a time: `page(after)` reads the page
/// after the cursor (`None`: the first), and `cursor` gives an item's cursor. A short page is
/// the last.
fn all_pages<T, E>(
    mut page: impl FnMut(Option<String>) -> Result<Vec<T>, E>,
    cursor: impl Fn(&T) -> String,
) -> Result<Vec<T>, ApiError>
where
    ApiError: From<E>,
{
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let items = page(after)?;
        let full = items.len() == LIST_LIMIT_MAX;
        after = items.last().map(&cursor);
        out.extend(items);
        if !full {
            return Ok(out);
        }
    }
}

fn all_customers(billing: &BillingStore) -> Result<Vec<Customer>, ApiError> {
    all_pages(
        |after| billing.customers(after.as_deref(), LIST_LIMIT_MAX),
        |c| c.key.to_string(),
    )
}

fn invoices_in(
    billing: &BillingStore,
    c: &Customer,
    range: &Range,
) -> Result<Vec<Invoice>, ApiError> {
    let tz = c.time_zone.tz();
    let mut out = all_pages(
        |after| {
            billing.invoices(&InvoiceFilter {
                customer: Some(c.key.clone()),
                status: None,
                after,
                limit: LIST_LIMIT_MAX,
            })
        },
        |i| i.id.clone(),
    )?;
    out.retain(|i| range.contains(local_date(i.content.draft.period.start, tz)));
    out.sort_by(|a, b| {
        (a.content.draft.period.start, &a.id).cmp(&(b.content.draft.period.start, &b.id))
    });
    Ok(out)
}

fn opt_ts(t: Option<UnixMs>) -> Value {
    t.map_or(Value::Null, Value::Ts)
}

fn opt_text(t: Option<String>) -> Value {
    t.map_or(Value::Null, Value::Text)
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Builds an export from the stores.
pub fn build(
    engine: &Engine,
    billing: &BillingStore,
    kind: Kind,
    range: &Range,
) -> Result<Table, ApiError> {
    let mut rows = Vec::new();
    for c in all_customers(billing)? {
        let tz = c.time_zone.tz();
        match kind {
            Kind::Invoices => {
                for inv in invoices_in(billing, &c, range)? {
                    let d = &inv.content.draft;
                    rows.push(vec![
                        Value::Text(inv.id.clone()),
                        opt_text(inv.number.clone()),
                        Value::Text(d.customer.to_string()),
                        Value::Text(d.subscription.0.clone()),
                        Value::Text(inv.status.as_str().into()),
                        Value::Text(d.currency.code().into()),
                        Value::Ts(d.period.start),
                        Value::Ts(d.period.end),
                        Value::Date(local_date(d.period.start, tz)),
                        Value::Text(c.time_zone.name().into()),
                        opt_ts(inv.finalized_ms),
                        opt_ts(inv.paid_ms),
                        opt_ts(inv.voided_ms),
                        Value::Int(d.subtotal_minor),
                        Value::Int(d.tax_minor),
                        Value::Int(d.total_minor),
                        Value::Int(inv.content.credits_applied_minor),
                        Value::Int(inv.content.amount_due_minor),
                    ]);
                }
            }
            Kind::InvoiceLines => {
                for inv in invoices_in(billing, &c, range)? {
                    let d = &inv.content.draft;
                    for l in &d.lines {
                        rows.push(vec![
                            Value::Text(inv.id.clone()),
                            opt_text(inv.number.clone()),
                            Value::Text(d.customer.to_string()),
                            Value::Text(inv.status.as_str().into()),
                            Value::Text(d.currency.code().into()),
                            Value::Int(i64::from(l.number)),
                            Value::Text(
                                match l.kind {
                                    LineKind::Charge => "charge",
                                    LineKind::Adjustment => "adjustment",
                                }
                                .into(),
                            ),
                            Value::Text(l.price_key.to_string()),
                            Value::Text(l.description.clone()),
                            Value::Text(l.model.clone()),
                            opt_text(l.meter.as_ref().map(|m| m.to_string())),
                            Value::Text(l.plan.to_string()),
                            Value::Int(i64::from(l.plan_version)),
                            Value::Ts(l.period.start),
                            Value::Ts(l.period.end),
                            Value::Ts(l.segment.start),
                            Value::Ts(l.segment.end),
                            Value::Text(l.quantity.to_string()),
                            Value::Int(l.amount_minor),
                        ]);
                    }
                }
            }
            Kind::Credits => {
                let (_, entries) = billing.credits(&c.key)?;
                let mut mine: Vec<_> = entries
                    .into_iter()
                    .filter(|e| range.contains(local_date(e.at, tz)))
                    .collect();
                mine.sort_by(|a, b| (a.at, &a.txn).cmp(&(b.at, &b.txn)));
                for e in mine {
                    rows.push(vec![
                        Value::Text(c.key.to_string()),
                        Value::Text(e.txn.clone()),
                        Value::Text(snake(&e.kind)),
                        Value::Text(e.grant.clone()),
                        Value::Text(snake(&e.account)),
                        Value::Int(e.amount_minor),
                        Value::Text(c.currency.code().into()),
                        Value::Ts(e.at),
                        Value::Date(local_date(e.at, tz)),
                        opt_text(e.invoice.clone()),
                    ]);
                }
            }
            Kind::CreditNotes => {
                let notes = all_pages(
                    |after| {
                        billing.credit_notes(&CreditNoteFilter {
                            customer: Some(c.key.clone()),
                            after,
                            limit: LIST_LIMIT_MAX,
                            ..CreditNoteFilter::default()
                        })
                    },
                    |n| n.id.clone(),
                )?;
                let mut mine: Vec<_> = notes
                    .into_iter()
                    .map(|n| (n.issued_ms.unwrap_or(n.created_ms), n))
                    .filter(|(at, _)| range.contains(local_date(*at, tz)))
                    .collect();
                mine.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
                for (at, n) in mine {
                    rows.push(vec![
                        Value::Text(n.id.clone()),
                        opt_text(n.number.clone()),
                        Value::Text(n.invoice.clone()),
                        opt_text(n.invoice_number.clone()),
                        Value::Text(n.customer.to_string()),
                        Value::Text(n.status.as_str().into()),
                        Value::Text(snake(&n.origin)),
                        Value::Text(snake(&n.reason)),
                        Value::Text(n.currency.clone()),
                        Value::Int(n.content.subtotal_minor),
                        Value::Int(n.content.tax_minor),
                        Value::Int(n.content.total_minor),
                        n.settlement
                            .map_or(Value::Null, |s| Value::Int(s.amount_due_minor)),
                        n.settlement
                            .map_or(Value::Null, |s| Value::Int(s.balance_minor)),
                        Value::Ts(n.created_ms),
                        opt_ts(n.issued_ms),
                        Value::Date(local_date(at, tz)),
                    ]);
                }
            }
            Kind::UsageDaily => {
                let span = range.period_in(tz)?;
                let subject = tollgate_core::event::Subject::parse(c.key.as_str())
                    .map_err(|e| ApiError::bad_request("invalid_customer_key", e.to_string()))?;
                let mut meters = engine.meters();
                meters.sort_by(|a, b| a.meter.slug.as_str().cmp(b.meter.slug.as_str()));
                for m in meters {
                    let usage = engine.usage(
                        &m.meter.slug,
                        &UsageQuery {
                            subject: Some(subject.clone()),
                            from: span.start,
                            to: span.end,
                            window: Some(WindowSize::Day),
                            time_zone: tz.clone(),
                            group_by: Vec::new(),
                        },
                    )?;
                    for r in usage {
                        rows.push(vec![
                            Value::Text(c.key.to_string()),
                            Value::Text(m.meter.slug.to_string()),
                            Value::Date(local_date(r.window_start, tz)),
                            Value::Text(c.time_zone.name().into()),
                            Value::Ts(r.window_start),
                            Value::Ts(r.window_end),
                            Value::Text(r.value.to_string()),
                        ]);
                    }
                }
            }
        }
    }
    for r in &rows {
        assert_eq!(r.len(), kind.columns().len(), "one value per column");
    }
    Ok(Table { kind, rows })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn all_pages_reads_until_a_short_page() {
        let items: Vec<String> = (0..LIST_LIMIT_MAX * 2 + 3)
            .map(|i| format!("{i:08}"))
            .collect();
        let mut reads = 0;
        let all = all_pages(
            |after: Option<String>| {
                reads += 1;
                Ok::<_, ApiError>(
                    items
                        .iter()
                        .filter(|i| after.as_ref().is_none_or(|a| *i > a))
                        .take(LIST_LIMIT_MAX)
                        .cloned()
                        .collect(),
                )
            },
            String::clone,
        )
        .unwrap_or_default();
        assert_eq!((all, reads), (items, 3));
    }

    #[test]
    fn kinds_round_trip_their_names() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn ranges_are_checked() {
        assert!(Range::parse("2026-11-01", "2026-12-01").is_ok());
        assert_eq!(
            Range::parse("2026-11-01", "2026-11-01").unwrap_err().code,
            "empty_time_range"
        );
        assert_eq!(
            Range::parse("2026-11-1x", "2026-12-01").unwrap_err().code,
            "invalid_date"
        );
        assert_eq!(
            Range::parse("2020-01-01", "2026-01-01").unwrap_err().code,
            "export_range_days_max"
        );
    }

    #[test]
    fn the_documented_schema_matches_the_code() {
        let doc = include_str!("../../../../docs/exports.md");
        for k in Kind::ALL {
            assert!(
                doc.contains(&format!("`{}`", k.name())),
                "{} documented",
                k.name()
            );
            for c in k.columns() {
                let line = format!(
                    "| `{}` | {}{} |",
                    c.name,
                    c.ty.name(),
                    if c.nullable { ", nullable" } else { "" }
                );
                assert!(doc.contains(&line), "docs/exports.md lacks `{line}`");
            }
        }
    }
}
