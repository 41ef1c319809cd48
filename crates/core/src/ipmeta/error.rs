//! Why an address, a range or an allocation was refused. Each variant has a stable `code()`.

use thiserror::Error;

/// An IP metadata error.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum IpMetaError {
    /// Not an IPv4 or IPv6 address.
    #[error("`{found}` is not an IP address")]
    InvalidIp {
        /// What was given (truncated).
        found: String,
    },
    /// Not `address/length`, a length beyond the family's width, or host bits set.
    #[error("`{found}` is not a CIDR range: {reason}")]
    InvalidCidr {
        /// What was given (truncated).
        found: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `valid_to` is not after `valid_from`.
    #[error("valid_to must be after valid_from")]
    InvalidValidity,
    /// The customer key is empty or too long.
    #[error("customer must be 1..={max} bytes")]
    InvalidCustomer {
        /// The limit.
        max: usize,
    },
    /// Another allocation of the same prefix is valid at an overlapping time.
    #[error("{cidr} is already allocated to `{customer}` ({existing}) for an overlapping time")]
    Overlap {
        /// The range.
        cidr: String,
        /// The allocation already there.
        existing: String,
        /// Its customer.
        customer: String,
    },
    /// More allocations than `IP_ALLOCATIONS_MAX`.
    #[error("more than {max} allocations")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// An attribution source entry is invalid.
    #[error("invalid attribution source: {reason}")]
    InvalidSource {
        /// What is wrong.
        reason: String,
    },
}

impl IpMetaError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            IpMetaError::InvalidIp { .. } => "invalid_ip",
            IpMetaError::InvalidCidr { .. } => "invalid_cidr",
            IpMetaError::InvalidValidity => "invalid_validity",
            IpMetaError::InvalidCustomer { .. } => "invalid_customer",
            IpMetaError::Overlap { .. } => "allocation_overlap",
            IpMetaError::TooMany { .. } => "ip_allocations_max",
            IpMetaError::InvalidSource { .. } => "invalid_attribution_source",
        }
    }
}

/// The first 64 characters of user text, for messages.
pub(crate) fn quote(text: &str) -> String {
    text.chars().take(64).collect()
}
