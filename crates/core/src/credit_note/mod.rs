//! Credit notes: what a finalized invoice gives back, and how much it still can.
//!
//! Owns: the request shapes (the whole rest of an invoice, chosen lines by quantity or amount,
//! or an amount not tied to a line), [`draft`] (turning a request into credit lines and totals
//! against what earlier notes already took), the approval policy ([`initial_status`]), the
//! status machine ([`CreditStatus::apply`]) and where a note's money goes ([`settle`]).
//!
//! Does not own: numbering, storage, the ledger entries or refunds a note leads to (the shell
//! writes those in the same transaction as the note), or noticing late corrections (the invoice
//! run finds them and asks for a note with [`Origin::LateCorrection`]).
//!
//! Rules:
//! - Only finalized or paid invoices are credited; a draft is still re-priced, a void one
//!   charges nothing.
//! - Amounts before tax are credited per line or as an amount not tied to a line; the tax of a
//!   note is computed on the running credited subtotal (`round(credited × rate)` after minus
//!   before), so notes that together credit the whole subtotal credit exactly the invoice's tax.
//! - Caps, checked against every earlier note that is issued or pending approval (pending notes
//!   reserve what they ask; a rejected note releases it): a line never gives back more than
//!   its amount, nor more quantity than it billed; all notes together never exceed the
//!   invoice's subtotal, hence never its total.
//! - Crediting by quantity uses the line's average unit price (`amount × quantity ÷ billed
//!   quantity`, rounded once); the last of a line's quantity takes exactly what is left of its
//!   amount, so a line credited in parts sums to the line.
//! - [`CreditRequest::Full`] takes what is left of every line, trimmed from the last line back
//!   when amount credits or negative adjustment lines leave less subtotal than that.
//!
//! Invariants (asserted): a note's total = subtotal + tax; subtotal = Σ line amounts; every
//! amount of a note is positive.

mod error;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use self::error::CreditNoteError;
use crate::invoice::{InvoiceDraft, InvoiceStatus};
use crate::limits::{CREDIT_MEMO_BYTES_MAX, CREDIT_REQUEST_LINES_MAX};
use crate::money::{MoneyError, round_to_minor};

/// Why a note was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditReason {
    /// The customer was charged twice for the same thing.
    Duplicate,
    /// The charge was fraudulent.
    Fraudulent,
    /// The order or plan changed after invoicing.
    OrderChange,
    /// The service fell short.
    ProductUnsatisfactory,
    /// Usage of the period was corrected after the invoice was finalized.
    LateCorrection,
    /// A gesture of goodwill.
    Goodwill,
    /// Another reason (say which in the memo).
    Other,
}

/// Who asked for the note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// An operator, through the API.
    Manual,
    /// The invoice run, after a late correction lowered a finalized period.
    LateCorrection,
}

/// Where a note is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditStatus {
    /// Created by policy above the automatic limit; waits for an operator.
    PendingApproval,
    /// Numbered and final: it counts against the invoice.
    Issued,
    /// Turned down; it reserves nothing.
    Rejected,
}

impl CreditStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CreditStatus::PendingApproval => "pending_approval",
            CreditStatus::Issued => "issued",
            CreditStatus::Rejected => "rejected",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(text: &str) -> Option<CreditStatus> {
        [
            CreditStatus::PendingApproval,
            CreditStatus::Issued,
            CreditStatus::Rejected,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the note counts against the invoice's creditable amount.
    pub fn reserves(self) -> bool {
        self != CreditStatus::Rejected
    }

    /// The status after `change`, or why it is not allowed.
    pub fn apply(self, change: CreditChange) -> Result<CreditStatus, CreditNoteError> {
        match (self, change) {
            (CreditStatus::PendingApproval, CreditChange::Approve) => Ok(CreditStatus::Issued),
            (CreditStatus::PendingApproval, CreditChange::Reject) => Ok(CreditStatus::Rejected),
            (status, change) => Err(CreditNoteError::NotPending {
                status: status.as_str(),
                change: match change {
                    CreditChange::Approve => "approved",
                    CreditChange::Reject => "rejected",
                },
            }),
        }
    }
}

/// A decision on a pending note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditChange {
    /// Issue it.
    Approve,
    /// Turn it down.
    Reject,
}

/// How much of one line to credit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineCredit {
    /// All that is left of the line.
    Remaining,
    /// This much of the billed quantity, at the line's average unit price.
    Quantity(Decimal),
    /// This amount before tax, in minor units.
    AmountMinor(i64),
}

/// One line of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRequest {
    /// The invoice line's 1-based number.
    pub line: u32,
    /// How much of it.
    pub credit: LineCredit,
}

/// What to credit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditRequest {
    /// Everything the invoice has left to credit.
    Full,
    /// Chosen lines (each at most once).
    Lines(Vec<LineRequest>),
    /// An amount before tax, not tied to a line.
    AmountMinor(i64),
}

/// One line of a note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditLine {
    /// The invoice line credited; `None` for an amount not tied to a line.
    pub invoice_line: Option<u32>,
    /// What is credited.
    pub description: String,
    /// Quantity given back, when credited by quantity or in full.
    pub quantity: Option<Decimal>,
    /// Amount before tax, positive, in minor units.
    pub amount_minor: i64,
}

/// A note's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditDraft {
    /// Lines.
    pub lines: Vec<CreditLine>,
    /// Σ line amounts.
    pub subtotal_minor: i64,
    /// Tax given back.
    pub tax_minor: i64,
    /// Subtotal + tax.
    pub total_minor: i64,
}

impl CreditDraft {
    /// Panics unless the totals add up and every amount is positive: a note that breaks this
    /// is a bug, never something to store.
    pub fn assert_consistent(&self) {
        let sum: i128 = self.lines.iter().map(|l| i128::from(l.amount_minor)).sum();
        assert_eq!(
            sum,
            i128::from(self.subtotal_minor),
            "subtotal is not Σ lines"
        );
        assert_eq!(
            i128::from(self.subtotal_minor) + i128::from(self.tax_minor),
            i128::from(self.total_minor),
            "total is not subtotal + tax"
        );
        assert!(
            self.lines.iter().all(|l| l.amount_minor > 0) && self.tax_minor >= 0,
            "credit amounts are positive"
        );
    }
}

/// What earlier notes (issued or pending) have taken from an invoice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credited {
    /// Per invoice line: quantity and amount credited.
    pub lines: BTreeMap<u32, (Decimal, i64)>,
    /// Σ subtotals.
    pub subtotal_minor: i64,
    /// Σ tax.
    pub tax_minor: i64,
}

impl Credited {
    /// Sums the notes that reserve credit.
    pub fn of<'a>(
        notes: impl IntoIterator<Item = (&'a CreditDraft, CreditStatus)>,
    ) -> Result<Credited, MoneyError> {
        let mut out = Credited::default();
        for (note, status) in notes {
            if !status.reserves() {
                continue;
            }
            out.add(note)?;
        }
        Ok(out)
    }

    fn add(&mut self, note: &CreditDraft) -> Result<(), MoneyError> {
        for l in &note.lines {
            if let Some(n) = l.invoice_line {
                let e = self.lines.entry(n).or_insert((Decimal::ZERO, 0));
                e.0 =
                    e.0.checked_add(l.quantity.unwrap_or(Decimal::ZERO))
                        .ok_or(MoneyError::Overflow)?;
                e.1 =
                    e.1.checked_add(l.amount_minor)
                        .ok_or(MoneyError::Overflow)?;
            }
        }
        self.subtotal_minor = self
            .subtotal_minor
            .checked_add(note.subtotal_minor)
            .ok_or(MoneyError::Overflow)?;
        self.tax_minor = self
            .tax_minor
            .checked_add(note.tax_minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(())
    }

    /// Σ totals.
    pub fn total_minor(&self) -> i64 {
        self.subtotal_minor.saturating_add(self.tax_minor)
    }
}

/// Prices a request against an invoice and what earlier notes took.
pub fn draft(
    invoice: &InvoiceDraft,
    status: InvoiceStatus,
    earlier: &Credited,
    request: &CreditRequest,
) -> Result<CreditDraft, CreditNoteError> {
    if !matches!(status, InvoiceStatus::Finalized | InvoiceStatus::Paid) {
        return Err(CreditNoteError::InvoiceNotCreditable {
            status: status.as_str(),
        });
    }
    let subtotal_left = invoice
        .subtotal_minor
        .checked_sub(earlier.subtotal_minor)
        .ok_or(MoneyError::Overflow)?;
    let mut lines = match request {
        CreditRequest::Full => {
            let mut lines = Vec::new();
            for l in &invoice.lines {
                if let Some(c) = line_credit(invoice, earlier, l.number, &LineCredit::Remaining)? {
                    lines.push(c);
                }
            }
            trim_to(&mut lines, subtotal_left.max(0));
            lines
        }
        CreditRequest::Lines(asked) => {
            if asked.is_empty() || asked.len() > CREDIT_REQUEST_LINES_MAX {
                return Err(CreditNoteError::InvalidRequest {
                    reason: format!("name 1 to {CREDIT_REQUEST_LINES_MAX} lines"),
                });
            }
            let mut seen = std::collections::BTreeSet::new();
            let mut lines = Vec::with_capacity(asked.len());
            for a in asked {
                if !seen.insert(a.line) {
                    return Err(CreditNoteError::InvalidRequest {
                        reason: format!("line {} is named twice", a.line),
                    });
                }
                match line_credit(invoice, earlier, a.line, &a.credit)? {
                    Some(c) => lines.push(c),
                    None => {
                        return Err(CreditNoteError::ExceedsCreditable {
                            reason: format!("line {} has nothing left to credit", a.line),
                        });
                    }
                }
            }
            lines
        }
        CreditRequest::AmountMinor(amount) => {
            if *amount <= 0 {
                return Err(CreditNoteError::InvalidRequest {
                    reason: "the amount is positive".into(),
                });
            }
            vec![CreditLine {
                invoice_line: None,
                description: "Credit".into(),
                quantity: None,
                amount_minor: *amount,
            }]
        }
    };
    lines.retain(|l| l.amount_minor > 0);
    if lines.is_empty() {
        return Err(CreditNoteError::NothingToCredit);
    }
    let subtotal_minor = lines
        .iter()
        .try_fold(0_i64, |acc, l| acc.checked_add(l.amount_minor))
        .ok_or(MoneyError::Overflow)?;
    if subtotal_minor > subtotal_left {
        return Err(CreditNoteError::ExceedsCreditable {
            reason: format!(
                "{subtotal_minor} asked, {} left of the invoice's subtotal {}",
                subtotal_left.max(0),
                invoice.subtotal_minor
            ),
        });
    }
    let after = earlier
        .subtotal_minor
        .checked_add(subtotal_minor)
        .ok_or(MoneyError::Overflow)?;
    let tax_after = tax_on(invoice, after)?.min(invoice.tax_minor);
    let tax_minor = tax_after.saturating_sub(earlier.tax_minor).max(0);
    let total_minor = subtotal_minor
        .checked_add(tax_minor)
        .ok_or(MoneyError::Overflow)?;
    let out = CreditDraft {
        lines,
        subtotal_minor,
        tax_minor,
        total_minor,
    };
    out.assert_consistent();
    assert!(
        i128::from(earlier.total_minor()) + i128::from(out.total_minor)
            <= i128::from(invoice.total_minor),
        "credit notes exceed the invoice's total"
    );
    Ok(out)
}

/// The tax on a credited subtotal, computed the way the invoice computed its own.
fn tax_on(invoice: &InvoiceDraft, subtotal_minor: i64) -> Result<i64, MoneyError> {
    let exact = invoice
        .currency
        .to_major(subtotal_minor)
        .checked_mul(invoice.tax_rate)
        .ok_or(MoneyError::Overflow)?;
    round_to_minor(exact, invoice.currency)
}

/// One line's credit, or `None` when the line has nothing left.
fn line_credit(
    invoice: &InvoiceDraft,
    earlier: &Credited,
    number: u32,
    how: &LineCredit,
) -> Result<Option<CreditLine>, CreditNoteError> {
    let line = invoice
        .lines
        .iter()
        .find(|l| l.number == number)
        .ok_or_else(|| CreditNoteError::InvalidRequest {
            reason: format!("the invoice has no line {number}"),
        })?;
    let (qty_done, amount_done) = earlier
        .lines
        .get(&number)
        .copied()
        .unwrap_or((Decimal::ZERO, 0));
    let amount_left = line.amount_minor.saturating_sub(amount_done).max(0);
    let qty_left = (line.quantity - qty_done).max(Decimal::ZERO);
    if amount_left == 0 {
        return Ok(None);
    }
    let (quantity, amount_minor) = match how {
        LineCredit::Remaining => (
            (line.quantity > Decimal::ZERO).then_some(qty_left),
            amount_left,
        ),
        LineCredit::AmountMinor(a) => {
            if *a <= 0 {
                return Err(CreditNoteError::InvalidRequest {
                    reason: format!("line {number}: the amount is positive"),
                });
            }
            if *a > amount_left {
                return Err(CreditNoteError::ExceedsCreditable {
                    reason: format!("line {number}: {a} asked, {amount_left} left"),
                });
            }
            (None, *a)
        }
        LineCredit::Quantity(q) => {
            if *q <= Decimal::ZERO || line.quantity <= Decimal::ZERO {
                return Err(CreditNoteError::InvalidRequest {
                    reason: format!(
                        "line {number}: credit a positive quantity of a line that billed one"
                    ),
                });
            }
            if *q > qty_left {
                return Err(CreditNoteError::ExceedsCreditable {
                    reason: format!("line {number}: quantity {q} asked, {qty_left} left"),
                });
            }
            let amount = if *q == qty_left {
                amount_left
            } else {
                let exact = invoice
                    .currency
                    .to_major(line.amount_minor)
                    .checked_mul(*q)
                    .and_then(|v| v.checked_div(line.quantity))
                    .ok_or(MoneyError::Overflow)?;
                round_to_minor(exact, invoice.currency)?.min(amount_left)
            };
            (Some(*q), amount)
        }
    };
    Ok(Some(CreditLine {
        invoice_line: Some(number),
        description: line.description.clone(),
        quantity,
        amount_minor,
    }))
}

/// Cuts lines from the end back so their sum is at most `cap`.
fn trim_to(lines: &mut Vec<CreditLine>, cap: i64) {
    let mut excess = lines
        .iter()
        .map(|l| i128::from(l.amount_minor))
        .sum::<i128>()
        - i128::from(cap);
    while excess > 0 {
        let Some(last) = lines.last_mut() else { break };
        let cut = excess.min(i128::from(last.amount_minor));
        last.amount_minor -= i64::try_from(cut).unwrap_or(last.amount_minor);
        // A trimmed line no longer gives back its whole quantity.
        last.quantity = None;
        excess -= cut;
        if last.amount_minor == 0 {
            lines.pop();
        }
    }
}

/// When an automatic note is issued without an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditPolicy {
    /// Automatic notes with a total below this are issued at once; others wait for approval.
    pub auto_issue_below_minor: i64,
}

impl Default for CreditPolicy {
    fn default() -> Self {
        CreditPolicy {
            auto_issue_below_minor: 10_000,
        }
    }
}

/// A new note's status: one whose creator asked for a second person's approval waits for it;
/// otherwise an operator's notes are issued, and automatic ones by the policy.
pub fn initial_status(
    origin: Origin,
    total_minor: i64,
    policy: CreditPolicy,
    approval_requested: bool,
) -> CreditStatus {
    match origin {
        _ if approval_requested => CreditStatus::PendingApproval,
        Origin::Manual => CreditStatus::Issued,
        Origin::LateCorrection if total_minor < policy.auto_issue_below_minor => {
            CreditStatus::Issued
        }
        Origin::LateCorrection => CreditStatus::PendingApproval,
    }
}

/// Where an issued note's money goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// Taken off what the customer still owes on the invoice.
    pub amount_due_minor: i64,
    /// Added to the customer's credit balance (usable on later invoices).
    pub balance_minor: i64,
    /// Paid back as a refund (a note on a paid invoice that asked for its money back).
    #[serde(default)]
    pub refund_minor: i64,
}

impl Settlement {
    /// Moves up to `refundable_minor` of the balance part to a refund (the note asked for its
    /// money back; what cannot be refunded stays credit balance).
    pub fn refund_up_to(self, refundable_minor: i64) -> Settlement {
        let refund = self.balance_minor.clamp(0, refundable_minor.max(0));
        Settlement {
            amount_due_minor: self.amount_due_minor,
            balance_minor: self.balance_minor - refund,
            refund_minor: self.refund_minor + refund,
        }
    }
}

/// Splits an issued note: an unpaid invoice owes less first (down to zero); the rest, and all
/// of a note on a paid invoice, goes to the customer's credit balance.
pub fn settle(status: InvoiceStatus, amount_due_left_minor: i64, total_minor: i64) -> Settlement {
    assert!(total_minor >= 0, "a note's total is positive");
    let to_due = match status {
        InvoiceStatus::Finalized => amount_due_left_minor.clamp(0, total_minor),
        _ => 0,
    };
    Settlement {
        amount_due_minor: to_due,
        balance_minor: total_minor - to_due,
        refund_minor: 0,
    }
}

/// The memo, checked.
pub fn memo(text: &str) -> Result<String, CreditNoteError> {
    if text.len() > CREDIT_MEMO_BYTES_MAX {
        return Err(CreditNoteError::InvalidRequest {
            reason: format!("the memo is at most {CREDIT_MEMO_BYTES_MAX} bytes"),
        });
    }
    Ok(text.to_owned())
}
