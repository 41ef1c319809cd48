//! Conversions between billing bodies and domain types.

use std::str::FromStr;

use axum::http::StatusCode;
use jiff::civil::Date;
use rust_decimal::Decimal;
use tollgate_core::billing::{
    BillingError, Customer, CustomerKey, Interval, Period, Plan, PlanKey, PlanVersion,
    Subscription, ZoneName,
};
use tollgate_core::invoice::Line;
use tollgate_core::ledger::{Balance, Entry, Grant};
use tollgate_core::meter::{MeterSlug, parse_decimal};
use tollgate_core::money::Currency;
use tollgate_core::pricing::{Price, PriceKey, PriceModel, Tier};
use tollgate_core::time::UnixMs;
use tollgate_store::billing::run::RunReport;
use tollgate_store::billing::{BillingStoreError, Invoice};

pub use super::instant;
use super::time_text;
use crate::ApiError;
use crate::types::billing::*;

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> Self {
        let status = match e {
            BillingError::Conflict { .. } => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<BillingStoreError> for ApiError {
    fn from(e: BillingStoreError) -> Self {
        match e {
            BillingStoreError::NotFound { .. } => ApiError::not_found(e.code(), e.to_string()),
            BillingStoreError::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string())
            }
            BillingStoreError::Domain(e) => e.into(),
            BillingStoreError::Credit(ref c) => {
                use tollgate_core::credit_note::CreditNoteError as C;
                let status = match c {
                    C::InvoiceNotCreditable { .. } | C::NotPending { .. } | C::NothingToCredit => {
                        StatusCode::CONFLICT
                    }
                    C::InvalidRequest { .. } | C::ExceedsCreditable { .. } | C::Money(_) => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                };
                ApiError::new(status, e.code(), e.to_string())
            }
            BillingStoreError::Refund(ref r) => {
                use tollgate_core::refund::RefundError as R;
                let status = match r {
                    R::NothingToRefund | R::NotPending { .. } => StatusCode::CONFLICT,
                    R::InvalidAmount { .. } | R::MemoTooLong { .. } => StatusCode::BAD_REQUEST,
                    R::ExceedsRefundable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError::new(status, e.code(), e.to_string())
            }
            BillingStoreError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            BillingStoreError::Invalid { code, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            BillingStoreError::Store(e) => e.into(),
        }
    }
}

/// A decimal field, or 400 `invalid_decimal`.
pub fn decimal(field: &str, text: &str) -> Result<Decimal, ApiError> {
    parse_decimal(text).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_decimal",
            format!(
                "{field}: `{}` is not a decimal number",
                text.chars().take(40).collect::<String>()
            ),
        )
    })
}

fn opt_decimal(field: &str, text: Option<&str>) -> Result<Decimal, ApiError> {
    text.map_or(Ok(Decimal::ZERO), |t| decimal(field, t))
}

fn date(field: &str, text: &str) -> Result<Date, ApiError> {
    Date::from_str(text).map_err(|e| {
        ApiError::bad_request("invalid_date", format!("{field}: {e} (use YYYY-MM-DD)"))
    })
}

/// A currency, or 422 `unknown_currency`.
pub fn currency(text: &str) -> Result<Currency, ApiError> {
    Currency::parse(text).map_err(|e| BillingError::from(e).into())
}

/// A customer key from a path or body.
pub fn customer_key(text: &str) -> Result<CustomerKey, ApiError> {
    CustomerKey::parse(text)
        .map_err(|e| ApiError::bad_request("invalid_customer_key", e.to_string()))
}

/// A plan key from a path or body.
pub fn plan_key(text: &str) -> Result<PlanKey, ApiError> {
    PlanKey::parse(text).map_err(|e| ApiError::bad_request("invalid_plan_key", e.to_string()))
}

fn zone(text: &str) -> Result<ZoneName, ApiError> {
    ZoneName::parse(text).map_err(ApiError::from)
}

/// The anchor used when none is given: calendar months.
fn default_anchor() -> Date {
    jiff::civil::date(2000, 1, 1)
}

/// A new customer from its body.
pub fn customer_from_body(body: CustomerBody, now: UnixMs) -> Result<Customer, ApiError> {
    let customer = Customer {
        key: customer_key(&body.key)?,
        name: body.name,
        email: body.email,
        currency: currency(&body.currency)?,
        time_zone: zone(body.time_zone.as_deref().unwrap_or("UTC"))?,
        billing_anchor: match body.billing_anchor.as_deref() {
            Some(t) => date("billing_anchor", t)?,
            None => default_anchor(),
        },
        tax_rate: opt_decimal("tax_rate", body.tax_rate.as_deref())?,
        metadata: body.metadata,
        created_ms: now,
    };
    customer.validate()?;
    Ok(customer)
}

/// Applies a patch; `has_subscription` forbids moving period boundaries.
pub fn patch_customer(
    mut customer: Customer,
    patch: CustomerPatch,
    has_subscription: bool,
) -> Result<Customer, ApiError> {
    let moves_periods = patch.time_zone.is_some() || patch.billing_anchor.is_some();
    if moves_periods && has_subscription {
        return Err(BillingError::Conflict {
            reason: "time_zone and billing_anchor cannot change while the customer has a subscription (periods would move)".into(),
        }
        .into());
    }
    if let Some(name) = patch.name {
        customer.name = name;
    }
    if let Some(email) = patch.email {
        customer.email = Some(email);
    }
    if let Some(tz) = patch.time_zone {
        customer.time_zone = zone(&tz)?;
    }
    if let Some(anchor) = patch.billing_anchor {
        customer.billing_anchor = date("billing_anchor", &anchor)?;
    }
    if let Some(rate) = patch.tax_rate {
        customer.tax_rate = decimal("tax_rate", &rate)?;
    }
    if let Some(metadata) = patch.metadata {
        customer.metadata = metadata;
    }
    customer.validate()?;
    Ok(customer)
}

/// A customer's body.
pub fn customer_response(c: &Customer) -> CustomerResponse {
    CustomerResponse {
        key: c.key.to_string(),
        name: c.name.clone(),
        email: c.email.clone(),
        currency: c.currency.to_string(),
        time_zone: c.time_zone.name().to_owned(),
        billing_anchor: c.billing_anchor.to_string(),
        tax_rate: c.tax_rate.to_string(),
        metadata: c.metadata.clone(),
        created_at: time_text(c.created_ms),
    }
}

fn tier_from(t: &TierBody) -> Result<Tier, ApiError> {
    Ok(Tier {
        up_to: t
            .up_to
            .as_deref()
            .map(|u| decimal("up_to", u))
            .transpose()?,
        unit_price: decimal("unit_price", &t.unit_price)?,
        flat_fee: opt_decimal("flat_fee", t.flat_fee.as_deref())?,
    })
}

fn tier_body(t: &Tier) -> TierBody {
    TierBody {
        up_to: t.up_to.map(|u| u.to_string()),
        unit_price: t.unit_price.to_string(),
        flat_fee: Some(t.flat_fee.to_string()),
    }
}

/// A price from its body (validated by the plan version).
pub fn price_from_body(p: PriceBody) -> Result<Price, ApiError> {
    let model = match p.model {
        PriceModelBody::Flat { amount } => PriceModel::Flat {
            amount: decimal("amount", &amount)?,
        },
        PriceModelBody::PerUnit { unit_price } => PriceModel::PerUnit {
            unit_price: decimal("unit_price", &unit_price)?,
        },
        PriceModelBody::Graduated { tiers } => PriceModel::Graduated {
            tiers: tiers.iter().map(tier_from).collect::<Result<_, _>>()?,
        },
        PriceModelBody::Volume { tiers } => PriceModel::Volume {
            tiers: tiers.iter().map(tier_from).collect::<Result<_, _>>()?,
        },
        PriceModelBody::Package {
            package_size,
            package_price,
        } => PriceModel::Package {
            package_size: decimal("package_size", &package_size)?,
            package_price: decimal("package_price", &package_price)?,
        },
    };
    Ok(Price {
        key: PriceKey::parse(&p.key).map_err(BillingError::from)?,
        name: p.name,
        meter: p
            .meter
            .as_deref()
            .map(|m| {
                MeterSlug::parse(m).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
            })
            .transpose()?,
        model,
        free_units: opt_decimal("free_units", p.free_units.as_deref())?,
        minimum_amount: p
            .minimum_amount
            .as_deref()
            .map(|m| decimal("minimum_amount", m))
            .transpose()?,
        maximum_amount: p
            .maximum_amount
            .as_deref()
            .map(|m| decimal("maximum_amount", m))
            .transpose()?,
    })
}

fn price_body(p: &Price) -> PriceBody {
    let model = match &p.model {
        PriceModel::Flat { amount } => PriceModelBody::Flat {
            amount: amount.to_string(),
        },
        PriceModel::PerUnit { unit_price } => PriceModelBody::PerUnit {
            unit_price: unit_price.to_string(),
        },
        PriceModel::Graduated { tiers } => PriceModelBody::Graduated {
            tiers: tiers.iter().map(tier_body).collect(),
        },
        PriceModel::Volume { tiers } => PriceModelBody::Volume {
            tiers: tiers.iter().map(tier_body).collect(),
        },
        PriceModel::Package {
            package_size,
            package_price,
        } => PriceModelBody::Package {
            package_size: package_size.to_string(),
            package_price: package_price.to_string(),
        },
    };
    PriceBody {
        key: p.key.to_string(),
        name: p.name.clone(),
        meter: p.meter.as_ref().map(ToString::to_string),
        model,
        free_units: Some(p.free_units.to_string()),
        minimum_amount: p.minimum_amount.map(|d| d.to_string()),
        maximum_amount: p.maximum_amount.map(|d| d.to_string()),
    }
}

/// `month` or `year`, or 422.
pub fn interval(text: &str) -> Result<Interval, ApiError> {
    match text {
        "month" => Ok(Interval::Month),
        "year" => Ok(Interval::Year),
        _ => Err(BillingError::Invalid {
            field: "interval",
            reason: "`month` or `year`".into(),
        }
        .into()),
    }
}

fn interval_text(i: Interval) -> &'static str {
    match i {
        Interval::Month => "month",
        Interval::Year => "year",
    }
}

/// A plan version's body.
pub fn version_response(v: &PlanVersion) -> PlanVersionResponse {
    PlanVersionResponse {
        plan: v.plan.to_string(),
        version: v.version,
        prices: v.prices.iter().map(price_body).collect(),
        entitlements: v
            .entitlements
            .iter()
            .map(|e| super::entitlements::entitlement_body(&e.feature, &e.grant))
            .collect(),
        published_at: time_text(v.published_ms),
    }
}

/// A plan's body with its versions.
pub fn plan_response(p: &Plan, versions: &[PlanVersion]) -> PlanResponse {
    PlanResponse {
        key: p.key.to_string(),
        name: p.name.clone(),
        currency: p.currency.to_string(),
        interval: interval_text(p.interval).to_owned(),
        versions: versions.iter().map(version_response).collect(),
        created_at: time_text(p.created_ms),
    }
}

/// A period's body.
pub fn period_body(p: &Period) -> PeriodBody {
    PeriodBody {
        start: time_text(p.start),
        end: time_text(p.end),
    }
}

/// A subscription's body.
pub fn subscription_response(
    s: &Subscription,
    now: UnixMs,
    current: Option<Period>,
) -> SubscriptionResponse {
    let status = snake(&s.status(now));
    SubscriptionResponse {
        id: s.id.0.clone(),
        customer: s.customer.to_string(),
        status,
        phases: s
            .phases
            .iter()
            .map(|p| PhaseBody {
                plan: p.plan.to_string(),
                version: p.version,
                start: time_text(p.start),
            })
            .collect(),
        trial_end: s.trial_end.map(time_text),
        ends_at: s.ends_at.map(time_text),
        current_period: current.as_ref().map(period_body),
        created_at: time_text(s.created_ms),
    }
}

fn ratio(active: i64, period: i64) -> String {
    format!("{active}/{period}")
}

/// A line's body.
pub fn line_body(l: &Line) -> LineBody {
    LineBody {
        number: l.number,
        kind: match l.kind {
            tollgate_core::invoice::LineKind::Charge => "charge",
            tollgate_core::invoice::LineKind::Adjustment => "adjustment",
        }
        .to_owned(),
        price: l.price_key.to_string(),
        description: l.description.clone(),
        model: l.model.clone(),
        meter: l.meter.as_ref().map(ToString::to_string),
        plan: l.plan.to_string(),
        plan_version: l.plan_version,
        period: period_body(&l.period),
        segment: period_body(&l.segment),
        proration: ratio(l.proration.active_seconds, l.proration.period_seconds),
        quantity: l.quantity.to_string(),
        billable_quantity: l.charge.billable_quantity.to_string(),
        free_units: l.charge.free_units.to_string(),
        tiers: l
            .charge
            .tiers
            .iter()
            .map(|t| TierChargeBody {
                from: t.from.to_string(),
                up_to: t.up_to.map(|u| u.to_string()),
                units: t.units.to_string(),
                unit_price: t.unit_price.to_string(),
                flat_fee: t.flat_fee.to_string(),
                amount: t.amount.to_string(),
            })
            .collect(),
        minimum_true_up: l.charge.minimum_true_up.to_string(),
        maximum_reduction: l.charge.maximum_reduction.to_string(),
        amount_exact: l.charge.amount.to_string(),
        previously_billed_minor: l.previously_billed_minor,
        amount_minor: l.amount_minor,
    }
}

/// An invoice's body.
pub fn invoice_response(i: &Invoice) -> InvoiceResponse {
    let d = &i.content.draft;
    InvoiceResponse {
        id: i.id.clone(),
        number: i.number.clone(),
        status: i.status.as_str().to_owned(),
        customer: d.customer.to_string(),
        subscription: d.subscription.0.clone(),
        currency: d.currency.to_string(),
        period: period_body(&d.period),
        lines: d.lines.iter().map(line_body).collect(),
        subtotal_minor: d.subtotal_minor,
        tax_rate: d.tax_rate.to_string(),
        tax_minor: d.tax_minor,
        total_minor: d.total_minor,
        credits_applied_minor: i.content.credits_applied_minor,
        amount_due_minor: i.content.amount_due_minor,
        grace_until: time_text(i.grace_until),
        created_at: time_text(i.created_ms),
        finalized_at: i.finalized_ms.map(time_text),
        paid_at: i.paid_ms.map(time_text),
        voided_at: i.voided_ms.map(time_text),
    }
}

/// A run report's body.
pub fn run_response(r: RunReport) -> InvoiceRunResponse {
    let timings_ms = [
        ("load", r.timings.load_ms),
        ("price", r.timings.price_ms),
        ("commit", r.timings.commit_ms),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    InvoiceRunResponse {
        timings_ms,
        subscriptions: r.subscriptions,
        created: r.created,
        updated: r.updated,
        finalized: r.finalized,
        unchanged: r.unchanged,
        credit_notes: r.credit_notes,
        errors: r
            .errors
            .into_iter()
            .map(|e| InvoiceRunErrorBody {
                subscription: e.subscription,
                code: e.code,
                message: e.message,
            })
            .collect(),
    }
}

/// `YYYY-MM`, or 400 `invalid_period`.
pub fn month(text: &str) -> Result<(i16, i8), ApiError> {
    let bad = || ApiError::bad_request("invalid_period", format!("`{text}` is not YYYY-MM"));
    let (y, m) = text.split_once('-').ok_or_else(bad)?;
    let year: i16 = y.parse().map_err(|_| bad())?;
    let month: i8 = m.parse().map_err(|_| bad())?;
    if y.len() != 4 || m.len() != 2 || !(1..=12).contains(&month) {
        return Err(bad());
    }
    Ok((year, month))
}

/// A grant from its body.
pub fn grant_from_body(
    customer: CustomerKey,
    id: String,
    b: GrantBody,
    now: UnixMs,
) -> Result<Grant, ApiError> {
    Ok(Grant {
        id,
        customer,
        amount_minor: b.amount_minor,
        currency: currency(&b.currency)?,
        priority: b.priority.unwrap_or(100),
        granted_ms: now,
        expires_ms: b
            .expires_at
            .as_deref()
            .map(|t| instant("expires_at", t))
            .transpose()?,
        reason: b.reason.unwrap_or_default(),
    })
}

/// A grant's body.
pub fn grant_response(g: &Grant) -> GrantResponse {
    GrantResponse {
        id: g.id.clone(),
        customer: g.customer.to_string(),
        amount_minor: g.amount_minor,
        currency: g.currency.to_string(),
        priority: g.priority,
        granted_at: time_text(g.granted_ms),
        expires_at: g.expires_ms.map(time_text),
        reason: g.reason.clone(),
    }
}

/// A balance's body.
pub fn balance_response(customer: &CustomerKey, b: &Balance, at: UnixMs) -> BalanceResponse {
    BalanceResponse {
        customer: customer.to_string(),
        currency: b.currency.to_string(),
        at: time_text(at),
        available_minor: b.available_minor,
        grants: b
            .grants
            .iter()
            .map(|g| GrantBalanceBody {
                grant: g.grant.clone(),
                remaining_minor: g.remaining_minor,
                expired: g.expired,
            })
            .collect(),
    }
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A ledger's body.
pub fn ledger_response(grants: &[Grant], entries: &[Entry]) -> LedgerResponse {
    LedgerResponse {
        grants: grants.iter().map(grant_response).collect(),
        entries: entries
            .iter()
            .map(|e| LedgerEntryBody {
                txn: e.txn.clone(),
                kind: snake(&e.kind),
                grant: e.grant.clone(),
                account: snake(&e.account),
                amount_minor: e.amount_minor,
                at: time_text(e.at),
                invoice: e.invoice.clone(),
            })
            .collect(),
    }
}

/// An upcoming invoice's body.
pub fn upcoming_response(
    d: &tollgate_core::invoice::InvoiceDraft,
    as_of: UnixMs,
) -> UpcomingInvoiceResponse {
    UpcomingInvoiceResponse {
        customer: d.customer.to_string(),
        subscription: d.subscription.0.clone(),
        currency: d.currency.to_string(),
        period: period_body(&d.period),
        as_of: time_text(as_of),
        lines: d.lines.iter().map(line_body).collect(),
        subtotal_minor: d.subtotal_minor,
        tax_minor: d.tax_minor,
        total_minor: d.total_minor,
    }
}
