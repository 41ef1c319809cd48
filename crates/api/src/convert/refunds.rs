//! Refund bodies to and from `tollgate_core::refund` and the stored refund.

use serde::Serialize;
use tollgate_core::refund::RefundReason;
use tollgate_store::billing::refunds::Refund;

use super::time_text;
use crate::ApiError;
use crate::types::refunds::RefundResponse;

/// The reason named in a body, or 400 `invalid_reason`. `credit_note` is set by credit notes
/// only.
pub fn reason(text: &str) -> Result<RefundReason, ApiError> {
    serde_json::from_value::<RefundReason>(serde_json::Value::String(text.to_owned()))
        .ok()
        .filter(|r| *r != RefundReason::CreditNote)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_reason",
                "reason is duplicate, fraudulent, requested_by_customer, overpayment or other",
            )
        })
}

fn name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A stored refund as the API shows it.
pub fn refund_response(r: &Refund) -> RefundResponse {
    RefundResponse {
        id: r.id.clone(),
        invoice: r.invoice.clone(),
        customer: r.customer.to_string(),
        status: r.status.as_str().into(),
        method: r.method.as_str().into(),
        amount_minor: r.amount_minor,
        currency: r.currency.clone(),
        origin: r.origin.as_str().into(),
        origin_ref: r.origin_ref.clone(),
        reason: name(&r.reason),
        memo: r.memo.clone(),
        provider: r.provider.map(|p| p.as_str().to_owned()),
        provider_refund_id: r.provider_refund_id.clone(),
        failure: r.failure.clone(),
        created_by: r.created_by.clone(),
        created_at: time_text(r.created_ms),
        updated_at: time_text(r.updated_ms),
        done_at: r.done_ms.map(time_text),
    }
}
