//! Invoices: pricing a subscription's billing period into lines, and correcting earlier
//! finalized periods with adjustment lines.
//!
//! Owns: the draft computation ([`draft`]) — pure: the shell loads the customer, subscription,
//! plan versions, usage quantities ([`usage_needs`] says which) and the earlier finalized
//! invoices, this module decides every line, the shell commits. Does not own: where usage
//! comes from, numbering, credits (see [`crate::ledger`]) or status changes after finalization.
//!
//! Rules:
//! - One charge line per (phase segment, price). Line amount = the price's exact decimal charge,
//!   rounded once by [`round_to_minor`]. Subtotal = sum of rounded lines; tax = the subtotal ×
//!   the customer's tax rate, rounded once; total = subtotal + tax.
//! - Late usage for a period whose invoice is finalized never edits it: the next draft
//!   re-prices that period with today's usage and adds an adjustment line per price whose
//!   amount or quantity changed, equal to (re-priced − everything already billed for it).
//!   Something billed that re-pricing no longer produces is credited back in full. A voided
//!   invoice's period is not re-billed by adjustments.
//!
//! Invariants (asserted): total = subtotal + tax; subtotal = Σ line amounts.

pub mod forecast;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::billing::{
    BillingError, Customer, CustomerKey, Period, PlanKey, PlanVersion, Segment, Subscription,
    SubscriptionId,
};
use crate::meter::MeterSlug;
use crate::money::{Currency, MoneyError, round_to_minor};
use crate::pricing::{Charge, Price, PriceKey, Proration};

/// Usage of one meter by the customer over `[from, to)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsageKey {
    /// The meter.
    pub meter: MeterSlug,
    /// The interval.
    pub span: Period,
}

/// Quantities the shell looked up, by [`UsageKey`].
pub type UsageTable = BTreeMap<UsageKey, Decimal>;

/// Plan versions by (plan, version).
pub type Catalog = BTreeMap<(PlanKey, u32), PlanVersion>;

/// Whether a line charges its own period or corrects an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A charge for this invoice's period.
    Charge,
    /// A correction of an earlier, finalized period.
    Adjustment,
}

/// One invoice line, with its provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// 1-based position on the invoice.
    pub number: u32,
    /// Charge or adjustment.
    pub kind: LineKind,
    /// The price.
    pub price_key: PriceKey,
    /// Its display name.
    pub description: String,
    /// The price model's name.
    pub model: String,
    /// The meter, for metered prices.
    pub meter: Option<MeterSlug>,
    /// The plan.
    pub plan: PlanKey,
    /// Its version.
    pub plan_version: u32,
    /// The billing period charged (for an adjustment: the period corrected).
    pub period: Period,
    /// The part of that period in which the price was active.
    pub segment: Period,
    /// Share of the period the price was active.
    pub proration: Proration,
    /// Usage in the segment (for an adjustment: the change in usage).
    pub quantity: Decimal,
    /// The full pricing breakdown (for an adjustment: of the re-priced period).
    pub charge: Charge,
    /// Already billed for this price and segment (adjustments only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previously_billed_minor: Option<i64>,
    /// The line's amount in minor units.
    pub amount_minor: i64,
}

/// An invoice's content, as priced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceDraft {
    /// Who pays.
    pub customer: CustomerKey,
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The currency.
    pub currency: Currency,
    /// The billing period.
    pub period: Period,
    /// Lines.
    pub lines: Vec<Line>,
    /// Σ line amounts.
    pub subtotal_minor: i64,
    /// The tax rate applied.
    pub tax_rate: Decimal,
    /// Tax on the subtotal.
    pub tax_minor: i64,
    /// Subtotal + tax.
    pub total_minor: i64,
    /// Corrections of earlier periods asked as credit notes instead of lines (only with
    /// [`DraftInput::credit_room`]); never stored with the invoice.
    #[serde(skip)]
    pub credit_asks: Vec<CreditAsk>,
}

/// What an earlier finalized invoice billed, for adjustments.
#[derive(Clone, Debug)]
pub struct Billed<'a> {
    /// The invoice's own period.
    pub period: Period,
    /// Whether it was voided (its period is then left alone).
    pub voided: bool,
    /// Its lines.
    pub lines: &'a [Line],
}

/// Everything [`draft`] reads.
#[derive(Clone, Debug)]
pub struct DraftInput<'a> {
    /// The customer.
    pub customer: &'a Customer,
    /// The subscription.
    pub subscription: &'a Subscription,
    /// Every plan version the subscription's phases use.
    pub catalog: &'a Catalog,
    /// The period to invoice.
    pub period: Period,
    /// Earlier periods' invoices (finalized or voided) that late events may still correct.
    pub earlier: &'a [Billed<'a>],
    /// Usage quantities for every key [`usage_needs`] returned.
    pub usage: &'a UsageTable,
    /// When given, a correction that lowers a finalized period is asked as a credit note
    /// against that period's invoice (up to what its line can still give back) instead of a
    /// negative adjustment line; what the line cannot give back stays an adjustment.
    pub credit_room: Option<&'a CreditRoom>,
}

/// What the lines of finalized invoices can still give back, for corrections asked as credit
/// notes: each charge line, by what it bills, with its invoice, its number and the amount it
/// has left (its amount less the credit notes that reserve part of it).
#[derive(Clone, Debug, Default)]
pub struct CreditRoom {
    lines: BTreeMap<BilledKey, (String, u32, i64)>,
}

impl CreditRoom {
    /// Records that `line` of `invoice` can still give back `room_minor`.
    pub fn insert(&mut self, invoice: &str, line: &Line, room_minor: i64) {
        let key = billed_key(
            line.period,
            &line.price_key,
            &line.segment,
            &line.plan,
            line.plan_version,
        );
        self.lines
            .insert(key, (invoice.to_owned(), line.number, room_minor.max(0)));
    }

    /// Takes up to `amount_minor` of the room of the line billing `key`: the invoice, the line
    /// and the amount taken (0 when the line is unknown or has nothing left).
    fn take(&mut self, key: &BilledKey, amount_minor: i64) -> Option<(String, u32, i64)> {
        let (invoice, line, room) = self.lines.get_mut(key)?;
        let taken = amount_minor.min(*room).max(0);
        *room -= taken;
        (taken > 0).then(|| (invoice.clone(), *line, taken))
    }
}

/// A correction that lowers a finalized period, to be given back by a credit note on that
/// period's invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditAsk {
    /// The invoice to credit.
    pub invoice: String,
    /// Its line.
    pub line: u32,
    /// The period corrected.
    pub period: Period,
    /// Amount before tax (minor units, positive).
    pub amount_minor: i64,
    /// The usage given back with it (positive; zero when only the price changed, or when the
    /// line could give back only part and the rest stays an adjustment).
    pub quantity: Decimal,
}

/// The usage the shell must look up to draft `period` (and re-price `earlier` periods).
pub fn usage_needs(
    subscription: &Subscription,
    catalog: &Catalog,
    period: &Period,
    earlier: &[Billed<'_>],
) -> Result<BTreeSet<UsageKey>, BillingError> {
    let mut keys = BTreeSet::new();
    let periods = std::iter::once(*period).chain(correctable_periods(earlier, period));
    for p in periods {
        for segment in subscription.segments(&p) {
            for price in &version_of(catalog, &segment)?.prices {
                if let Some(meter) = &price.meter {
                    keys.insert(UsageKey {
                        meter: meter.clone(),
                        span: segment.span,
                    });
                }
            }
        }
    }
    Ok(keys)
}

fn correctable_periods(earlier: &[Billed<'_>], current: &Period) -> BTreeSet<Period> {
    let voided: BTreeSet<Period> = earlier
        .iter()
        .filter(|b| b.voided)
        .map(|b| b.period)
        .collect();
    earlier
        .iter()
        .filter(|b| !b.voided && b.period != *current && !voided.contains(&b.period))
        .map(|b| b.period)
        .collect()
}

fn version_of<'c>(
    catalog: &'c Catalog,
    segment: &Segment<'_>,
) -> Result<&'c PlanVersion, BillingError> {
    catalog
        .get(&(segment.phase.plan.clone(), segment.phase.version))
        .ok_or_else(|| BillingError::Conflict {
            reason: format!(
                "plan {} version {} is not in the catalog",
                segment.phase.plan, segment.phase.version
            ),
        })
}

/// A charge line before numbering.
struct Priced {
    price: Price,
    plan: PlanKey,
    plan_version: u32,
    segment: Period,
    proration: Proration,
    charge: Charge,
    amount_minor: i64,
}

fn price_period(input: &DraftInput<'_>, period: &Period) -> Result<Vec<Priced>, BillingError> {
    let currency = input.customer.currency;
    let mut out = Vec::new();
    for segment in input.subscription.segments(period) {
        let version = version_of(input.catalog, &segment)?;
        let proration = Proration {
            active_seconds: segment.span.seconds(),
            period_seconds: period.seconds(),
        };
        for price in &version.prices {
            let quantity = match &price.meter {
                None => Decimal::ZERO,
                Some(meter) => {
                    let key = UsageKey {
                        meter: meter.clone(),
                        span: segment.span,
                    };
                    *input
                        .usage
                        .get(&key)
                        .ok_or_else(|| BillingError::Conflict {
                            reason: format!("usage of meter {meter} was not loaded"),
                        })?
                }
            };
            let charge = price.charge(quantity, proration)?;
            let amount_minor = round_to_minor(charge.amount, currency)?;
            out.push(Priced {
                price: price.clone(),
                plan: segment.phase.plan.clone(),
                plan_version: segment.phase.version,
                segment: segment.span,
                proration,
                charge,
                amount_minor,
            });
        }
    }
    Ok(out)
}

/// Identity of what a line bills: (period, price, segment start, plan, version).
type BilledKey = (Period, PriceKey, UnixMsKey, PlanKey, u32);
type UnixMsKey = i64;

fn billed_key(
    period: Period,
    price: &PriceKey,
    segment: &Period,
    plan: &PlanKey,
    version: u32,
) -> BilledKey {
    (
        period,
        price.clone(),
        segment.start.0,
        plan.clone(),
        version,
    )
}

/// Prices the period and corrects earlier ones. Pure.
pub fn draft(input: &DraftInput<'_>) -> Result<InvoiceDraft, BillingError> {
    let currency = input.customer.currency;
    let mut lines = Vec::new();
    let mut push = |kind, p: Priced, period: Period, quantity, previously, amount_minor| {
        lines.push(Line {
            number: 0,
            kind,
            description: p.price.name.clone(),
            model: p.price.model.name().to_owned(),
            meter: p.price.meter.clone(),
            price_key: p.price.key,
            plan: p.plan,
            plan_version: p.plan_version,
            period,
            segment: p.segment,
            proration: p.proration,
            quantity,
            charge: p.charge,
            previously_billed_minor: previously,
            amount_minor,
        });
    };
    for p in price_period(input, &input.period)? {
        let (q, a) = (p.charge.quantity, p.amount_minor);
        push(LineKind::Charge, p, input.period, q, None, a);
    }

    // What was billed so far for every (period, price, segment) of the correctable periods.
    let correctable = correctable_periods(input.earlier, &input.period);
    let mut room = input.credit_room.cloned();
    let mut credit_asks = Vec::new();
    let mut billed: BTreeMap<BilledKey, (Decimal, i64, &Line)> = BTreeMap::new();
    for invoice in input.earlier.iter().filter(|b| !b.voided) {
        for line in invoice.lines {
            if !correctable.contains(&line.period) {
                continue;
            }
            let key = billed_key(
                line.period,
                &line.price_key,
                &line.segment,
                &line.plan,
                line.plan_version,
            );
            let entry = billed.entry(key).or_insert((Decimal::ZERO, 0, line));
            entry.0 += line.quantity;
            entry.1 = entry
                .1
                .checked_add(line.amount_minor)
                .ok_or(MoneyError::Overflow)?;
        }
    }
    for period in &correctable {
        for p in price_period(input, period)? {
            let key = billed_key(*period, &p.price.key, &p.segment, &p.plan, p.plan_version);
            let (q_billed, a_billed) = billed
                .remove(&key)
                .map_or((Decimal::ZERO, 0), |(q, a, _)| (q, a));
            let dq = p.charge.quantity - q_billed;
            let da = p
                .amount_minor
                .checked_sub(a_billed)
                .ok_or(MoneyError::Overflow)?;
            if da != 0 || !dq.is_zero() {
                let key = billed_key(*period, &p.price.key, &p.segment, &p.plan, p.plan_version);
                let taken = match room.as_mut() {
                    Some(room) if da < 0 => room.take(&key, -da),
                    _ => None,
                };
                match taken {
                    Some((invoice, line, amount_minor)) => {
                        let rest = da + amount_minor;
                        let whole = rest == 0;
                        credit_asks.push(CreditAsk {
                            invoice,
                            line,
                            period: *period,
                            amount_minor,
                            quantity: if whole && dq.is_sign_negative() {
                                -dq
                            } else {
                                Decimal::ZERO
                            },
                        });
                        if !whole {
                            push(LineKind::Adjustment, p, *period, dq, Some(a_billed), rest);
                        } else if !dq.is_sign_negative() && !dq.is_zero() {
                            push(LineKind::Adjustment, p, *period, dq, Some(a_billed), 0);
                        }
                    }
                    None => push(LineKind::Adjustment, p, *period, dq, Some(a_billed), da),
                }
            }
        }
    }
    // Billed for something today's pricing no longer charges (the phase was replaced): credit
    // all of it back.
    for (q_billed, a_billed, template) in billed.into_values() {
        if a_billed == 0 && q_billed.is_zero() {
            continue;
        }
        lines.push(Line {
            number: 0,
            kind: LineKind::Adjustment,
            quantity: -q_billed,
            charge: Charge {
                quantity: Decimal::ZERO,
                free_units: Decimal::ZERO,
                billable_quantity: Decimal::ZERO,
                tiers: Vec::new(),
                minimum_true_up: Decimal::ZERO,
                maximum_reduction: Decimal::ZERO,
                amount: Decimal::ZERO,
            },
            previously_billed_minor: Some(a_billed),
            amount_minor: -a_billed,
            ..template.clone()
        });
    }
    for (i, line) in lines.iter_mut().enumerate() {
        line.number = u32::try_from(i + 1).unwrap_or(u32::MAX);
    }
    let subtotal_minor = lines
        .iter()
        .try_fold(0_i64, |acc, l| acc.checked_add(l.amount_minor))
        .ok_or(MoneyError::Overflow)?;
    let tax_rate = input.customer.tax_rate;
    let tax_exact = currency
        .to_major(subtotal_minor)
        .checked_mul(tax_rate)
        .ok_or(MoneyError::Overflow)?;
    let tax_minor = round_to_minor(tax_exact, currency)?;
    let total_minor = subtotal_minor
        .checked_add(tax_minor)
        .ok_or(MoneyError::Overflow)?;
    let out = InvoiceDraft {
        customer: input.customer.key.clone(),
        subscription: input.subscription.id.clone(),
        currency,
        period: input.period,
        lines,
        subtotal_minor,
        tax_rate,
        tax_minor,
        total_minor,
        credit_asks,
    };
    out.assert_consistent();
    Ok(out)
}

impl InvoiceDraft {
    /// Asserts the invariants of an invoice's arithmetic (in release builds too).
    pub fn assert_consistent(&self) {
        let sum: i128 = self.lines.iter().map(|l| i128::from(l.amount_minor)).sum();
        assert_eq!(
            sum,
            i128::from(self.subtotal_minor),
            "subtotal is not the sum of lines"
        );
        assert_eq!(
            i128::from(self.subtotal_minor) + i128::from(self.tax_minor),
            i128::from(self.total_minor),
            "total is not subtotal + tax"
        );
    }
}

/// Where an invoice is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Priced, still updated by late events until its grace period ends.
    Draft,
    /// Numbered and immutable; awaiting payment.
    Finalized,
    /// Paid.
    Paid,
    /// Cancelled after finalization (keeps its number).
    Void,
}

impl InvoiceStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Finalized => "finalized",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Void => "void",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(text: &str) -> Option<InvoiceStatus> {
        [
            InvoiceStatus::Draft,
            InvoiceStatus::Finalized,
            InvoiceStatus::Paid,
            InvoiceStatus::Void,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the invoice's content is fixed.
    pub fn is_final(self) -> bool {
        self != InvoiceStatus::Draft
    }

    /// The status after `change`, or why the change is not allowed.
    pub fn apply(self, change: InvoiceChange) -> Result<InvoiceStatus, BillingError> {
        use InvoiceChange as C;
        use InvoiceStatus as S;
        match (self, change) {
            (S::Draft, C::Finalize) => Ok(S::Finalized),
            (S::Finalized, C::MarkPaid) => Ok(S::Paid),
            (S::Finalized, C::Void) => Ok(S::Void),
            (from, change) => Err(BillingError::Conflict {
                reason: format!(
                    "a {} invoice cannot be {}",
                    from.as_str(),
                    change.past_tense()
                ),
            }),
        }
    }
}

/// A change of an invoice's status, with intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceChange {
    /// Number it and fix its content.
    Finalize,
    /// Record payment.
    MarkPaid,
    /// Cancel it; it keeps its number, its credits are given back.
    Void,
}

impl InvoiceChange {
    fn past_tense(self) -> &'static str {
        match self {
            InvoiceChange::Finalize => "finalized",
            InvoiceChange::MarkPaid => "marked paid",
            InvoiceChange::Void => "voided",
        }
    }
}
