//! Prepaid credits as a double-entry ledger.
//!
//! Owns: credit grants, the ledger entries that move credit between accounts, the order in
//! which invoices draw grants down ([`draw`]), expiry ([`expire`]) and balances ([`balance`]).
//! Does not own: storage (the shell appends the entries these functions return, in the same
//! transaction as the change that caused them) or invoice amounts.
//!
//! Accounts: `customer_credit` (what the customer may still spend, per grant), `credit_granted`
//! (where grants come from), `invoice_settlement` (credit spent on invoices) and
//! `credit_expired`. Every transaction's entries sum to zero; a grant's `customer_credit`
//! balance never goes negative.
//!
//! Draw-down order: lowest `priority` first, then earliest expiry (grants that never expire
//! last), then oldest grant, then id — so credit that would be lost first is used first within
//! a priority. A grant is usable at `t` when `granted_ms ≤ t < expires_ms`.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::billing::{BillingError, CustomerKey};
use crate::money::{Currency, MoneyError};
use crate::time::UnixMs;

/// Most credit grants one customer may hold.
pub const CUSTOMER_GRANTS_MAX: usize = 10_000;

/// A ledger account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    /// Credit the customer can still spend.
    CustomerCredit,
    /// The source of granted credit.
    CreditGranted,
    /// Credit spent on invoices.
    InvoiceSettlement,
    /// Credit that expired unspent.
    CreditExpired,
}

/// Why a transaction happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnKind {
    /// A grant was made.
    Grant,
    /// An invoice drew credit.
    Draw,
    /// A voided invoice gave its credit back.
    Reversal,
    /// A grant expired.
    Expiry,
}

/// A prepaid credit grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `grant_…`.
    pub id: String,
    /// Whose.
    pub customer: CustomerKey,
    /// Granted amount.
    pub amount_minor: i64,
    /// Its currency.
    pub currency: Currency,
    /// Lower is drawn first.
    pub priority: u32,
    /// Usable from.
    pub granted_ms: UnixMs,
    /// Usable until (exclusive).
    pub expires_ms: Option<UnixMs>,
    /// Why it was granted.
    pub reason: String,
}

impl Grant {
    fn usable_at(&self, t: UnixMs) -> bool {
        self.granted_ms <= t && self.expires_ms.is_none_or(|e| t < e)
    }
}

/// One ledger entry: an amount on one account for one grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Entries of one transaction share this id.
    pub txn: String,
    /// Why.
    pub kind: TxnKind,
    /// The grant moved.
    pub grant: String,
    /// The account.
    pub account: Account,
    /// Signed amount (positive increases the account).
    pub amount_minor: i64,
    /// When.
    pub at: UnixMs,
    /// The invoice, for draws and reversals.
    pub invoice: Option<String>,
}

#[allow(clippy::too_many_arguments)] // One transaction's two sides; a struct would only rename them.
fn pair(
    txn: &str,
    kind: TxnKind,
    grant: &str,
    from: Account,
    to: Account,
    amount_minor: i64,
    at: UnixMs,
    invoice: Option<&str>,
) -> [Entry; 2] {
    let e = |account, amount_minor| Entry {
        txn: txn.to_owned(),
        kind,
        grant: grant.to_owned(),
        account,
        amount_minor,
        at,
        invoice: invoice.map(str::to_owned),
    };
    [e(from, -amount_minor), e(to, amount_minor)]
}

/// The entries that record a new grant.
pub fn grant_entries(grant: &Grant, txn: &str) -> Result<Vec<Entry>, BillingError> {
    if grant.amount_minor <= 0 {
        return Err(BillingError::Invalid {
            field: "amount_minor",
            reason: "a grant is above zero".into(),
        });
    }
    if grant.expires_ms.is_some_and(|e| e <= grant.granted_ms) {
        return Err(BillingError::Invalid {
            field: "expires_at",
            reason: "a grant expires after it is granted".into(),
        });
    }
    Ok(pair(
        txn,
        TxnKind::Grant,
        &grant.id,
        Account::CreditGranted,
        Account::CustomerCredit,
        grant.amount_minor,
        grant.granted_ms,
        None,
    )
    .to_vec())
}

/// Remaining `customer_credit` per grant id, from the entries.
fn remaining(entries: &[Entry]) -> BTreeMap<&str, i64> {
    let mut out: BTreeMap<&str, i64> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.account == Account::CustomerCredit)
    {
        *out.entry(e.grant.as_str()).or_default() += e.amount_minor;
    }
    out
}

/// Grants in draw-down order.
fn ordered(grants: &[Grant]) -> Vec<&Grant> {
    let mut v: Vec<&Grant> = grants.iter().collect();
    v.sort_by(|a, b| {
        (
            a.priority,
            a.expires_ms.is_none(),
            a.expires_ms,
            a.granted_ms,
            &a.id,
        )
            .cmp(&(
                b.priority,
                b.expires_ms.is_none(),
                b.expires_ms,
                b.granted_ms,
                &b.id,
            ))
    });
    v
}

/// The entries that pay up to `amount_minor` of an invoice from usable grants at `at`, in
/// draw-down order. The sum drawn is `min(amount, usable balance)`; nothing is drawn for a
/// zero or negative amount.
pub fn draw(
    grants: &[Grant],
    entries: &[Entry],
    currency: Currency,
    amount_minor: i64,
    at: UnixMs,
    txn: &str,
    invoice: &str,
) -> Vec<Entry> {
    let left = remaining(entries);
    let mut due = amount_minor.max(0);
    let mut out = Vec::new();
    for g in ordered(grants) {
        if due == 0 {
            break;
        }
        if g.currency != currency || !g.usable_at(at) {
            continue;
        }
        let available = left.get(g.id.as_str()).copied().unwrap_or(0);
        let take = available.min(due);
        if take > 0 {
            out.extend(pair(
                txn,
                TxnKind::Draw,
                &g.id,
                Account::CustomerCredit,
                Account::InvoiceSettlement,
                take,
                at,
                Some(invoice),
            ));
            due -= take;
        }
    }
    out
}

/// The entries that give back what `invoice` drew (it was voided). Credit of a grant that has
/// expired since is given back and expired again by the next [`expire`].
pub fn reverse(entries: &[Entry], invoice: &str, at: UnixMs, txn: &str) -> Vec<Entry> {
    let mut drawn: BTreeMap<&str, i64> = BTreeMap::new();
    for e in entries.iter().filter(|e| {
        e.invoice.as_deref() == Some(invoice) && e.account == Account::InvoiceSettlement
    }) {
        *drawn.entry(e.grant.as_str()).or_default() += e.amount_minor;
    }
    drawn
        .into_iter()
        .filter(|(_, a)| *a > 0)
        .flat_map(|(grant, amount)| {
            pair(
                txn,
                TxnKind::Reversal,
                grant,
                Account::InvoiceSettlement,
                Account::CustomerCredit,
                amount,
                at,
                Some(invoice),
            )
        })
        .collect()
}

/// The entries that expire what is left of grants past their expiry at `at`. They are dated
/// `at` (when they are written), so entries stay in time order even after a late reversal;
/// [`balance`] counts an expired grant as zero from its expiry on either way.
pub fn expire(grants: &[Grant], entries: &[Entry], at: UnixMs, txn: &str) -> Vec<Entry> {
    let left = remaining(entries);
    let mut out = Vec::new();
    for g in grants {
        let Some(expires) = g.expires_ms else {
            continue;
        };
        let amount = left.get(g.id.as_str()).copied().unwrap_or(0);
        if expires <= at && amount > 0 {
            out.extend(pair(
                txn,
                TxnKind::Expiry,
                &g.id,
                Account::CustomerCredit,
                Account::CreditExpired,
                amount,
                at,
                None,
            ));
        }
    }
    out
}

/// One grant's standing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantBalance {
    /// The grant.
    pub grant: String,
    /// What is left to spend at the instant asked (0 once expired).
    pub remaining_minor: i64,
    /// Whether it has expired.
    pub expired: bool,
}

/// A customer's credit at an instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The currency.
    pub currency: Currency,
    /// Spendable now: Σ remaining of usable grants.
    pub available_minor: i64,
    /// Per grant, in draw-down order.
    pub grants: Vec<GrantBalance>,
}

/// The balance in `currency` at `at`, from entries up to `at`. Expired grants count zero even
/// before their expiry entry is written.
pub fn balance(
    grants: &[Grant],
    entries: &[Entry],
    currency: Currency,
    at: UnixMs,
) -> Result<Balance, BillingError> {
    let upto: Vec<Entry> = entries.iter().filter(|e| e.at <= at).cloned().collect();
    let left = remaining(&upto);
    let mut available_minor = 0_i64;
    let mut out = Vec::new();
    for g in ordered(grants) {
        if g.currency != currency || g.granted_ms > at {
            continue;
        }
        let expired = g.expires_ms.is_some_and(|e| e <= at);
        let raw = left.get(g.id.as_str()).copied().unwrap_or(0);
        assert!(raw >= 0, "grant {} has a negative balance {raw}", g.id);
        let remaining_minor = if expired { 0 } else { raw };
        available_minor = available_minor
            .checked_add(remaining_minor)
            .ok_or(MoneyError::Overflow)?;
        out.push(GrantBalance {
            grant: g.id.clone(),
            remaining_minor,
            expired,
        });
    }
    Ok(Balance {
        currency,
        available_minor,
        grants: out,
    })
}

/// Asserts that every transaction's entries sum to zero.
pub fn assert_balanced(entries: &[Entry]) {
    let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
    for e in entries {
        *sums.entry(e.txn.as_str()).or_default() += i128::from(e.amount_minor);
    }
    for (txn, sum) in sums {
        assert_eq!(sum, 0, "ledger transaction {txn} does not balance");
    }
}
