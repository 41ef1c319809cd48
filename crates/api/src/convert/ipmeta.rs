//! IP metadata: domain types to bodies, and IP metadata errors to HTTP.

use axum::http::StatusCode;
use tollgate_core::ipmeta::{Allocation, IpMetaError};
use tollgate_store::ipmeta::{AuditRecord, Enrichment, IpMetaStoreError};

use super::time_text;
use crate::ApiError;
use crate::types::ipmeta::{AllocationBody, AuditRecordBody, EnrichmentBody};

/// An allocation as a body.
pub fn allocation_body(a: &Allocation) -> AllocationBody {
    AllocationBody {
        id: a.id.to_string(),
        customer: a.customer.clone(),
        cidr: a.cidr.to_string(),
        valid_from: time_text(a.valid_from),
        valid_to: a.valid_to.map(time_text),
    }
}

/// Enrichment as a body.
pub fn enrichment_body(e: Enrichment) -> EnrichmentBody {
    EnrichmentBody {
        country: e.country,
        asn: e.asn,
        as_org: e.as_org,
    }
}

/// An audit record as a body.
pub fn audit_body(r: AuditRecord) -> AuditRecordBody {
    AuditRecordBody {
        seq: r.seq,
        at: time_text(r.at),
        actor: r.actor,
        kind: r.kind,
        object: r.object,
        action: r.action,
        before: r.before,
        after: r.after,
    }
}

impl From<IpMetaError> for ApiError {
    fn from(e: IpMetaError) -> Self {
        let status = match e {
            IpMetaError::Overlap { .. } => StatusCode::CONFLICT,
            IpMetaError::TooMany { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<IpMetaStoreError> for ApiError {
    fn from(e: IpMetaStoreError) -> Self {
        match e {
            IpMetaStoreError::Domain(e) => e.into(),
            IpMetaStoreError::NotFound(_) => {
                ApiError::not_found("allocation_not_found", e.to_string())
            }
            IpMetaStoreError::Store(e) => e.into(),
        }
    }
}
