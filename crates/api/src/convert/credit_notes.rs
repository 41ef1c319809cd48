//! Credit-note bodies to and from `tollgate_core::credit_note` and the stored note.

use tollgate_core::credit_note::{CreditReason, CreditRequest, LineCredit, LineRequest};
use tollgate_store::billing::credit_notes::CreditNote;

use super::billing::decimal;
use super::time_text;
use crate::ApiError;
use crate::types::credit_notes::{
    CreditNoteBody, CreditNoteLine, CreditNoteResponse, CreditSettlementBody,
};

/// The reason named in a body, or 400 `invalid_reason`.
pub fn reason(text: &str) -> Result<CreditReason, ApiError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        ApiError::bad_request(
            "invalid_reason",
            "reason is duplicate, fraudulent, order_change, product_unsatisfactory, \
             late_correction, goodwill or other",
        )
    })
}

/// The request a body asks for, or 400 `invalid_credit_request`.
pub fn request(body: &CreditNoteBody) -> Result<CreditRequest, ApiError> {
    let bad = |m: &str| ApiError::bad_request("invalid_credit_request", m.to_owned());
    match (body.full, &body.lines, body.amount_minor) {
        (true, None, None) => Ok(CreditRequest::Full),
        (false, Some(lines), None) => {
            let lines = lines
                .iter()
                .map(|l| {
                    let credit = match (&l.quantity, l.amount_minor) {
                        (None, None) => LineCredit::Remaining,
                        (Some(q), None) => LineCredit::Quantity(decimal("quantity", q)?),
                        (None, Some(a)) => LineCredit::AmountMinor(a),
                        (Some(_), Some(_)) => {
                            return Err(bad("a line gives quantity or amount_minor, not both"));
                        }
                    };
                    Ok(LineRequest {
                        line: l.line,
                        credit,
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            Ok(CreditRequest::Lines(lines))
        }
        (false, None, Some(a)) => Ok(CreditRequest::AmountMinor(a)),
        _ => Err(bad(
            "give exactly one of `full: true`, `lines` or `amount_minor`",
        )),
    }
}

fn name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A stored note as the API shows it.
pub fn credit_note_response(n: &CreditNote) -> CreditNoteResponse {
    CreditNoteResponse {
        id: n.id.clone(),
        number: n.number.clone(),
        status: n.status.as_str().to_owned(),
        invoice: n.invoice.clone(),
        invoice_number: n.invoice_number.clone(),
        customer: n.customer.to_string(),
        currency: n.currency.clone(),
        origin: name(&n.origin),
        reason: name(&n.reason),
        memo: n.memo.clone(),
        lines: n
            .content
            .lines
            .iter()
            .map(|l| CreditNoteLine {
                invoice_line: l.invoice_line,
                description: l.description.clone(),
                quantity: l.quantity.map(|q| q.normalize().to_string()),
                amount_minor: l.amount_minor,
            })
            .collect(),
        subtotal_minor: n.content.subtotal_minor,
        tax_minor: n.content.tax_minor,
        total_minor: n.content.total_minor,
        settlement: n.settlement.map(|s| CreditSettlementBody {
            amount_due_minor: s.amount_due_minor,
            balance_minor: s.balance_minor,
            refund_minor: s.refund_minor,
        }),
        credit_grant: n.grant.clone(),
        refund_requested: n.refund_requested,
        refund: n.refund.clone(),
        created_by: n.created_by.clone(),
        created_at: time_text(n.created_ms),
        issued_at: n.issued_ms.map(time_text),
        rejected_at: n.rejected_ms.map(time_text),
        decided_by: n.decided_by.clone(),
    }
}
