//! Provider rows → API bodies.

use tollgate_core::time::UnixMs;
use tollgate_store::providers::{Attempt, Call, CallStatus, ProviderObject};

use crate::types::providers::*;

fn rfc3339(t: UnixMs) -> String {
    t.to_rfc3339()
}

/// An object's body.
pub fn object_response(o: &ProviderObject) -> ProviderObjectResponse {
    let invoice = o.kind == "invoice";
    ProviderObjectResponse {
        provider: o.provider.as_str().into(),
        kind: o.kind.clone(),
        tollgate_key: o.tollgate_key.clone(),
        provider_id: o.provider_id.clone(),
        customer_provider_id: o.customer_provider_id.clone(),
        payment_state: invoice.then(|| o.payment.state.as_str().to_owned()),
        amount_due_minor: o.payment.amount_due_minor,
        amount_paid_minor: o.payment.amount_paid_minor,
        amount_refunded_minor: o.payment.amount_refunded_minor,
        amount_disputed_minor: o.payment.amount_disputed_minor,
        failed_attempts: o.payment.failed_attempts,
        charge_id: o.payment.charge_id.clone(),
        created_at: rfc3339(o.created_ms),
        updated_at: rfc3339(o.updated_ms),
    }
}

/// A call's body with its attempt log.
pub fn call_response(c: &Call, log: &[Attempt]) -> ProviderCallResponse {
    ProviderCallResponse {
        id: c.id.clone(),
        provider: c.provider.as_str().into(),
        kind: c.kind.as_str().into(),
        object_id: c.object_id.clone(),
        version: c.version,
        status: c.status.as_str().into(),
        attempts: c.attempts,
        next_attempt_at: (c.status == CallStatus::Pending).then(|| rfc3339(c.next_attempt_ms)),
        last_error: c.last_error.clone(),
        created_at: rfc3339(c.created_ms),
        done_at: c.done_ms.map(rfc3339),
        attempt_log: log
            .iter()
            .map(|a| ProviderAttemptResponse {
                at: rfc3339(a.at),
                duration_ms: a.duration_ms,
                step: a.step.clone(),
                http_status: a.http_status,
                error: a.error.clone(),
            })
            .collect(),
    }
}
