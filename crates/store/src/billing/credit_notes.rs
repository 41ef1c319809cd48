//! Credit notes in the database: creating one against a finalized invoice, approving or
//! rejecting a pending one, and listing them.
//!
//! Owns: the `credit_notes` rows, their gapless numbers per year (`CN-2026-000001`, given when
//! a note is issued, so rejected notes leave no gap), and the transaction that keeps an issued
//! note together with what it moves: the part that lowers what an unpaid invoice still owes is
//! recorded on the note; the rest (all of it on a paid invoice) becomes a ledger credit grant
//! for the customer, never expiring, drawn by later invoices.
//!
//! Does not own: how much may be credited, tax, policy and settlement rules
//! (`tollgate_core::credit_note`), or refunds (`super::refunds`; a note on a paid invoice that
//! asks for its money back creates its refund in the transaction that issues it).
//!
//! Invariants: the caps are checked inside the write transaction that inserts the note, against
//! every issued and pending note of the invoice, so two concurrent requests cannot together
//! exceed the invoice; an issued or rejected note never changes (a trigger refuses it).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::billing::CustomerKey;
use tollgate_core::credit_note::{
    self, CreditChange, CreditDraft, CreditPolicy, CreditReason, CreditRequest, CreditStatus,
    Credited, Origin, Settlement,
};
use tollgate_core::invoice::{CreditRoom, InvoiceStatus, Line, LineKind};
use tollgate_core::ledger::{self, Grant};
use tollgate_core::refund::{RefundOrigin, RefundReason};
use tollgate_core::time::UnixMs;

use super::refunds::{NewRefund, create_refund_in, refundable_in};
use super::{
    BillingStore, BillingStoreError, Invoice, LIST_LIMIT_MAX, append_entries, from_json,
    invoice_in, not_found, to_json,
};
use crate::keys::random_hex;

/// A stored credit note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    /// `cn_…`.
    pub id: String,
    /// `CN-2026-000001`, given when issued.
    pub number: Option<String>,
    /// The invoice credited.
    pub invoice: String,
    /// Its number.
    pub invoice_number: Option<String>,
    /// Whose.
    pub customer: CustomerKey,
    /// The invoice's currency code.
    pub currency: String,
    /// Status.
    pub status: CreditStatus,
    /// Who asked.
    pub origin: Origin,
    /// Why.
    pub reason: CreditReason,
    /// Free text.
    pub memo: String,
    /// Lines and totals.
    pub content: CreditDraft,
    /// Where the money went, once issued.
    pub settlement: Option<Settlement>,
    /// The ledger grant that holds the balance part, if any.
    pub grant: Option<String>,
    /// The note asked for its money back as a refund.
    #[serde(default)]
    pub refund_requested: bool,
    /// The refund that pays the refund part back, if any.
    #[serde(default)]
    pub refund: Option<String>,
    /// Who created it (an API key id, or `invoice_run`).
    pub created_by: String,
    /// Created.
    pub created_ms: UnixMs,
    /// Issued.
    pub issued_ms: Option<UnixMs>,
    /// Rejected.
    pub rejected_ms: Option<UnixMs>,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
}

/// What to create.
#[derive(Clone, Debug)]
pub struct NewCreditNote {
    /// The invoice.
    pub invoice: String,
    /// What to credit.
    pub request: CreditRequest,
    /// Why.
    pub reason: CreditReason,
    /// Free text.
    pub memo: String,
    /// Who asks.
    pub origin: Origin,
    /// Who (API key id or `invoice_run`).
    pub actor: String,
    /// Wait for a second person's approval even when the policy would issue it.
    pub require_approval: bool,
    /// Give what the note returns on a paid invoice back as a refund of the payment (as far as
    /// what was collected allows), instead of credit balance.
    pub refund: bool,
    /// Usage given back per invoice line (late corrections: the decrease the note stands for).
    pub quantities: BTreeMap<u32, Decimal>,
}

/// Filters of a credit-note listing.
#[derive(Clone, Debug, Default)]
pub struct CreditNoteFilter {
    /// Only this customer's.
    pub customer: Option<CustomerKey>,
    /// Only this invoice's.
    pub invoice: Option<String>,
    /// Only with this status.
    pub status: Option<CreditStatus>,
    /// Ids after this one (paging).
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl BillingStore {
    /// Creates a credit note: issued at once when an operator asks or the policy allows,
    /// pending approval otherwise.
    pub fn create_credit_note(
        &self,
        new: &NewCreditNote,
        policy: CreditPolicy,
        now: UnixMs,
    ) -> Result<CreditNote, BillingStoreError> {
        self.write(|tx| create_credit_note_in(tx, new, policy, now))
    }

    /// Approves (issues) or rejects a pending note.
    pub fn decide_credit_note(
        &self,
        id: &str,
        change: CreditChange,
        actor: &str,
        now: UnixMs,
    ) -> Result<CreditNote, BillingStoreError> {
        self.write(|tx| {
            let mut note = note_in(tx, id)?;
            let next = note.status.apply(change)?;
            let invoice = invoice_in(tx, &note.invoice)?;
            match next {
                CreditStatus::Issued => {
                    // The invoice may have changed since (paid, voided): issue against it as it is
                    // now, with the caps of every other note.
                    if !matches!(
                        invoice.status,
                        InvoiceStatus::Finalized | InvoiceStatus::Paid
                    ) {
                        return Err(credit_note::CreditNoteError::InvoiceNotCreditable {
                            status: invoice.status.as_str(),
                        }
                        .into());
                    }
                    let others: Vec<CreditNote> = notes_of_invoice(tx, &note.invoice)?
                        .into_iter()
                        .filter(|n| n.id != note.id)
                        .collect();
                    note.decided_by = Some(actor.to_owned());
                    issue_in(tx, &mut note, &invoice, &others, now)?;
                }
                _ => {
                    note.status = next;
                    note.rejected_ms = Some(now);
                    note.decided_by = Some(actor.to_owned());
                    update_in(tx, &note)?;
                }
            }
            Ok(note)
        })
    }

    /// One note.
    pub fn credit_note(&self, id: &str) -> Result<CreditNote, BillingStoreError> {
        self.read(|c| note_in(c, id))
    }

    /// Notes matching `filter`, by id.
    pub fn credit_notes(
        &self,
        filter: &CreditNoteFilter,
    ) -> Result<Vec<CreditNote>, BillingStoreError> {
        self.read(|c| {
            let docs: Vec<String> = c
                .prepare_cached(
                    "SELECT doc FROM credit_notes
                     WHERE (?1 IS NULL OR customer = ?1) AND (?2 IS NULL OR invoice = ?2)
                       AND (?3 IS NULL OR status = ?3) AND id > ?4
                     ORDER BY id LIMIT ?5",
                )?
                .query_map(
                    params![
                        filter.customer.as_ref().map(CustomerKey::as_str),
                        filter.invoice,
                        filter.status.map(CreditStatus::as_str),
                        filter.after.as_deref().unwrap_or(""),
                        i64::try_from(filter.limit.min(LIST_LIMIT_MAX)).unwrap_or(0)
                    ],
                    |r| r.get(0),
                )?
                .collect::<Result<_, _>>()?;
            docs.iter().map(|d| from_json("credit note", d)).collect()
        })
    }

    /// What an invoice still owes after its issued notes: its amount due less what notes took
    /// off it.
    pub fn amount_due_left(&self, invoice: &Invoice) -> Result<i64, BillingStoreError> {
        self.read(|c| amount_due_left_in(c, invoice))
    }
}

/// [`BillingStore::create_credit_note`] inside the caller's transaction (the invoice run
/// creates late-correction notes in its own).
pub(crate) fn create_credit_note_in(
    tx: &Transaction<'_>,
    new: &NewCreditNote,
    policy: CreditPolicy,
    now: UnixMs,
) -> Result<CreditNote, BillingStoreError> {
    let memo = credit_note::memo(&new.memo)?;
    let invoice = invoice_in(tx, &new.invoice)?;
    let notes = notes_of_invoice(tx, &invoice.id)?;
    let earlier = Credited::of(notes.iter().map(|n| (&n.content, n.status)))
        .map_err(credit_note::CreditNoteError::from)?;
    let mut content = credit_note::draft(
        &invoice.content.draft,
        invoice.status,
        &earlier,
        &new.request,
    )?;
    for line in &mut content.lines {
        if let Some(q) = line.invoice_line.and_then(|n| new.quantities.get(&n))
            && q.is_sign_positive()
            && !q.is_zero()
        {
            line.quantity = Some(*q);
        }
    }
    let status = credit_note::initial_status(
        new.origin,
        content.total_minor,
        policy,
        new.require_approval,
    );
    let mut note = CreditNote {
        id: format!("cn_{}", random_hex(8)),
        number: None,
        invoice: invoice.id.clone(),
        invoice_number: invoice.number.clone(),
        customer: invoice.content.draft.customer.clone(),
        currency: invoice.content.draft.currency.to_string(),
        status: CreditStatus::PendingApproval,
        origin: new.origin,
        reason: new.reason,
        memo,
        content,
        settlement: None,
        grant: None,
        refund_requested: new.refund,
        refund: None,
        created_by: new.actor.clone(),
        created_ms: now,
        issued_ms: None,
        rejected_ms: None,
        decided_by: None,
    };
    tx.execute(
        "INSERT INTO credit_notes (id, invoice, customer, number, status, origin, doc, created_ms)
         VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, ?7)",
        params![
            note.id,
            note.invoice,
            note.customer.as_str(),
            note.status.as_str(),
            origin_name(note.origin),
            to_json(&note)?,
            now.0
        ],
    )?;
    if status == CreditStatus::Issued {
        issue_in(tx, &mut note, &invoice, &notes, now)?;
    }
    Ok(note)
}

/// Every credit note, by invoice (for the invoice run).
pub(crate) fn notes_by_invoice(
    c: &Connection,
) -> Result<BTreeMap<String, Vec<CreditNote>>, BillingStoreError> {
    let docs: Vec<String> = c
        .prepare_cached("SELECT doc FROM credit_notes ORDER BY invoice, created_ms, id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out: BTreeMap<String, Vec<CreditNote>> = BTreeMap::new();
    for d in &docs {
        let note: CreditNote = from_json("credit note", d)?;
        out.entry(note.invoice.clone()).or_default().push(note);
    }
    Ok(out)
}

/// What late-correction notes gave back of `invoice`'s lines, as negative lines the invoice
/// run counts as billed (like adjustments), so a correction given back by a note is not
/// billed again. Every such note counts, whatever its status: a pending one will be decided,
/// a rejected one was (the operator chose not to give it back).
pub(crate) fn corrections_as_lines(invoice: &Invoice, notes: &[CreditNote]) -> Vec<Line> {
    let mut out = Vec::new();
    for note in notes.iter().filter(|n| n.origin == Origin::LateCorrection) {
        for cl in &note.content.lines {
            let Some(template) = cl
                .invoice_line
                .and_then(|k| invoice.content.draft.lines.iter().find(|l| l.number == k))
            else {
                continue;
            };
            out.push(Line {
                kind: LineKind::Adjustment,
                quantity: -cl.quantity.unwrap_or(Decimal::ZERO),
                previously_billed_minor: None,
                amount_minor: -cl.amount_minor,
                ..template.clone()
            });
        }
    }
    out
}

/// Records in `room` what each charge line of a finalized or paid `invoice` can still give
/// back: its amount less what reserving notes took of it, and never more than the invoice's
/// subtotal has left.
pub(crate) fn credit_room_of(
    room: &mut CreditRoom,
    invoice: &Invoice,
    notes: &[CreditNote],
) -> Result<(), BillingStoreError> {
    if !matches!(
        invoice.status,
        InvoiceStatus::Finalized | InvoiceStatus::Paid
    ) {
        return Ok(());
    }
    let credited = Credited::of(notes.iter().map(|n| (&n.content, n.status)))
        .map_err(credit_note::CreditNoteError::from)?;
    let invoice_left = invoice.content.draft.subtotal_minor - credited.subtotal_minor;
    for line in invoice
        .content
        .draft
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Charge && l.amount_minor > 0)
    {
        let taken = credited.lines.get(&line.number).map_or(0, |(_, a)| *a);
        room.insert(
            &invoice.id,
            line,
            (line.amount_minor - taken).min(invoice_left),
        );
    }
    Ok(())
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Manual => "manual",
        Origin::LateCorrection => "late_correction",
    }
}

/// Issues `note` in `tx`: re-checks the caps against `others`, numbers it, settles it.
fn issue_in(
    tx: &Transaction<'_>,
    note: &mut CreditNote,
    invoice: &Invoice,
    others: &[CreditNote],
    now: UnixMs,
) -> Result<(), BillingStoreError> {
    let reserved = Credited::of(
        others
            .iter()
            .filter(|n| n.id != note.id)
            .map(|n| (&n.content, n.status)),
    )
    .map_err(credit_note::CreditNoteError::from)?;
    let left = invoice.content.draft.total_minor - reserved.total_minor();
    if note.content.total_minor > left {
        return Err(credit_note::CreditNoteError::ExceedsCreditable {
            reason: format!("{} asked, {left} left", note.content.total_minor),
        }
        .into());
    }
    let due_left = amount_due_left_in(tx, invoice)?;
    let mut settlement = credit_note::settle(invoice.status, due_left, note.content.total_minor);
    note.number = Some(next_number(tx, now)?);
    if note.refund_requested {
        settlement = settlement.refund_up_to(refundable_in(tx, invoice)?);
        if settlement.refund_minor > 0 {
            let refund = create_refund_in(
                tx,
                &NewRefund {
                    invoice: invoice.id.clone(),
                    amount_minor: Some(settlement.refund_minor),
                    reason: RefundReason::CreditNote,
                    memo: format!(
                        "credit note {}",
                        note.number.as_deref().unwrap_or(note.id.as_str())
                    ),
                    origin: RefundOrigin::CreditNote,
                    origin_ref: Some(note.id.clone()),
                    actor: "credit_note".into(),
                },
                now,
            )?;
            note.refund = Some(refund.id);
        }
    }
    note.status = CreditStatus::Issued;
    note.issued_ms = Some(now);
    note.settlement = Some(settlement);
    if settlement.balance_minor > 0 {
        let grant = Grant {
            id: format!("grant_{}", random_hex(8)),
            customer: note.customer.clone(),
            amount_minor: settlement.balance_minor,
            currency: invoice.content.draft.currency,
            priority: 0,
            granted_ms: now,
            expires_ms: None,
            reason: format!(
                "credit note {}",
                note.number.as_deref().unwrap_or(note.id.as_str())
            ),
        };
        let entries = ledger::grant_entries(&grant, &format!("txn_{}", random_hex(8)))?;
        tx.execute(
            "INSERT INTO credit_grants (id, customer, doc) VALUES (?1, ?2, ?3)",
            params![grant.id, grant.customer.as_str(), to_json(&grant)?],
        )?;
        append_entries(tx, &grant.customer, &entries)?;
        note.grant = Some(grant.id);
    }
    update_in(tx, note)
}

fn update_in(tx: &Connection, note: &CreditNote) -> Result<(), BillingStoreError> {
    let n = tx.execute(
        "UPDATE credit_notes SET number = ?2, status = ?3, doc = ?4, decided_ms = ?5, decided_by = ?6
         WHERE id = ?1",
        params![
            note.id,
            note.number,
            note.status.as_str(),
            to_json(note)?,
            note.issued_ms.or(note.rejected_ms).map(|t| t.0),
            note.decided_by
        ],
    )?;
    assert_eq!(n, 1, "the credit note row exists in this transaction");
    Ok(())
}

fn next_number(tx: &Connection, now: UnixMs) -> Result<String, BillingStoreError> {
    let year = i64::from(now.to_timestamp().to_zoned(jiff::tz::TimeZone::UTC).year());
    let last: i64 = tx
        .prepare_cached("SELECT last FROM credit_note_numbers WHERE year = ?1")?
        .query_row(params![year], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let seq = last + 1;
    tx.prepare_cached(
        "INSERT INTO credit_note_numbers (year, last) VALUES (?1, ?2)
         ON CONFLICT (year) DO UPDATE SET last = excluded.last",
    )?
    .execute(params![year, seq])?;
    Ok(format!("CN-{year}-{seq:06}"))
}

fn note_in(c: &Connection, id: &str) -> Result<CreditNote, BillingStoreError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM credit_notes WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    from_json(
        "credit note",
        &doc.ok_or_else(|| not_found("credit note", id))?,
    )
}

fn notes_of_invoice(c: &Connection, invoice: &str) -> Result<Vec<CreditNote>, BillingStoreError> {
    let docs: Vec<String> = c
        .prepare_cached("SELECT doc FROM credit_notes WHERE invoice = ?1 ORDER BY created_ms, id")?
        .query_map(params![invoice], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    docs.iter().map(|d| from_json("credit note", d)).collect()
}

pub(super) fn amount_due_left_in(
    c: &Connection,
    invoice: &Invoice,
) -> Result<i64, BillingStoreError> {
    let taken: i64 = notes_of_invoice(c, &invoice.id)?
        .iter()
        .filter(|n| n.status == CreditStatus::Issued)
        .filter_map(|n| n.settlement.map(|s| s.amount_due_minor))
        .sum();
    Ok((invoice.content.amount_due_minor - taken).max(0))
}
