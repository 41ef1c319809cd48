//! Inspection: rule bodies to and from domain rules, versions to bodies, and inspection
//! errors to HTTP.

use axum::http::StatusCode;
use tollgate_core::inspect::{Action, HostMatch, InspectError, Rule, RuleSet};
use tollgate_store::inspect::{InspectStoreError, RuleSetVersion, VersionInfo};

use super::time_text;
use crate::ApiError;
use crate::types::inspect::{
    ActionBody, HostMatchBody, PublishRuleSetRequest, RuleBody, RuleSetBody, RuleSetInfoBody,
};

/// An action as a body.
pub fn action_body(a: Action) -> ActionBody {
    match a {
        Action::Allow => ActionBody::Allow,
        Action::Flag => ActionBody::Flag,
        Action::Block => ActionBody::Block,
    }
}

fn action(a: ActionBody) -> Action {
    match a {
        ActionBody::Allow => Action::Allow,
        ActionBody::Flag => Action::Flag,
        ActionBody::Block => Action::Block,
    }
}

fn rule(r: RuleBody) -> Rule {
    Rule {
        id: r.id,
        host: r.host.map(|h| match h {
            HostMatchBody::Exact(h) => HostMatch::Exact(h),
            HostMatchBody::Suffix(h) => HostMatch::Suffix(h),
            HostMatchBody::Category(c) => HostMatch::Category(c),
        }),
        path_prefix: r.path_prefix,
        country: r.country,
        asn: r.asn,
        action: action(r.action),
        category: r.category,
    }
}

fn rule_body(r: &Rule) -> RuleBody {
    RuleBody {
        id: r.id.clone(),
        host: r.host.as_ref().map(|h| match h {
            HostMatch::Exact(h) => HostMatchBody::Exact(h.clone()),
            HostMatch::Suffix(h) => HostMatchBody::Suffix(h.clone()),
            HostMatch::Category(c) => HostMatchBody::Category(c.clone()),
        }),
        path_prefix: r.path_prefix.clone(),
        country: r.country.clone(),
        asn: r.asn,
        action: action_body(r.action),
        category: r.category.clone(),
    }
}

/// A publish request as a domain rule set (validated when compiled).
pub fn rule_set(req: PublishRuleSetRequest) -> RuleSet {
    RuleSet {
        rules: req.rules.into_iter().map(rule).collect(),
        categories: req.categories,
    }
}

/// A version summary as a body.
pub fn info_body(i: &VersionInfo) -> RuleSetInfoBody {
    RuleSetInfoBody {
        version: i.version,
        created_at: time_text(i.created),
        created_by: i.created_by.clone(),
        rules: i.rules,
        categories: i.categories,
        digest: i.digest.clone(),
    }
}

/// A version with its rules as a body.
pub fn rule_set_body(info: &VersionInfo, set: &RuleSet) -> RuleSetBody {
    RuleSetBody {
        version: info.version,
        created_at: time_text(info.created),
        created_by: info.created_by.clone(),
        digest: info.digest.clone(),
        rules: set.rules.iter().map(rule_body).collect(),
        categories: set.categories.clone(),
    }
}

/// A stored version as a body.
pub fn version_body(v: &RuleSetVersion) -> RuleSetBody {
    rule_set_body(&v.info, &v.set)
}

impl From<InspectError> for ApiError {
    fn from(e: InspectError) -> Self {
        let status = match e {
            InspectError::TooManyRules { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<InspectStoreError> for ApiError {
    fn from(e: InspectStoreError) -> Self {
        match e {
            InspectStoreError::Invalid(e) => e.into(),
            InspectStoreError::VersionConflict { expected, current } => ApiError::new(
                StatusCode::CONFLICT,
                "rule_set_version_conflict",
                format!(
                    "the current version is {}, not {expected}",
                    current.unwrap_or(0)
                ),
            )
            .with_details(
                serde_json::json!({"expected": expected, "current": current.unwrap_or(0)}),
            ),
            InspectStoreError::Store(e) => e.into(),
        }
    }
}
