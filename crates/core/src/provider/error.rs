//! Errors of the provider module.

use thiserror::Error;

/// Why a provider event or request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProviderError {
    /// A webhook event lacks a field its type needs, or is not JSON.
    #[error("the provider event has no valid `{field}`")]
    EventInvalid {
        /// The missing or invalid field.
        field: &'static str,
    },
}

impl ProviderError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::EventInvalid { .. } => "provider_event_invalid",
        }
    }
}
