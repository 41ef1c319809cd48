//! Portal tokens: a signed, expiring capability for one customer (or, for admin pages, for the
//! API key that asked; the purpose is signed, so neither opens the other).
//!
//! Owns: the token format and its check. A token is
//! `v1.<customer key as hex>.<expiry, unix seconds>.<nonce, 16 hex>.<HMAC-SHA256, 64 hex>`,
//! the MAC taken with the data directory's portal secret over
//! `tollgate-portal-v1\n<customer>\n<expiry>\n<nonce>`. Does not own: the secret (the billing
//! store keeps it), what a token may read (the [`super::scope`] extractor).
//!
//! Invariants: the MAC is compared in constant time (`Mac::verify_slice`); a token is valid
//! strictly before its expiry; any change of any byte makes it invalid.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tollgate_core::billing::CustomerKey;
use tollgate_core::time::UnixMs;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not in the token format, or signed with another secret, or altered.
    #[error("the portal link is not valid")]
    Invalid,
    /// Past its expiry.
    #[error("the portal link has expired")]
    Expired,
}

impl TokenError {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Invalid => "portal_token_invalid",
            TokenError::Expired => "portal_token_expired",
        }
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The one customer it may read.
    pub customer: CustomerKey,
    /// When it stops working.
    pub expires: UnixMs,
}

/// What a token opens; part of what is signed, so a token for one never opens the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// One customer's portal.
    Portal,
    /// The admin pages (reconciliation reports); the subject is the API key that asked.
    Admin,
}

fn mac(secret: &[u8], purpose: Purpose, subject: &str, expires_s: i64, nonce: &str) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    let domain = match purpose {
        Purpose::Portal => "portal",
        Purpose::Admin => "admin",
    };
    m.update(format!("tollgate-{domain}-{VERSION}\n{subject}\n{expires_s}\n{nonce}").as_bytes());
    m
}

/// Signs a token for `customer` valid until `expires` (whole seconds; rounded down).
pub fn sign(secret: &[u8], customer: &CustomerKey, expires: UnixMs, nonce: &str) -> String {
    sign_for(secret, Purpose::Portal, customer.as_str(), expires, nonce)
}

/// Signs an admin token for the API key `key_id` valid until `expires`: it opens the admin
/// pages, never a customer's portal.
pub fn sign_admin(secret: &[u8], key_id: &str, expires: UnixMs, nonce: &str) -> String {
    sign_for(secret, Purpose::Admin, key_id, expires, nonce)
}

fn sign_for(
    secret: &[u8],
    purpose: Purpose,
    subject: &str,
    expires: UnixMs,
    nonce: &str,
) -> String {
    let expires_s = expires.0.div_euclid(1000);
    let tag = mac(secret, purpose, subject, expires_s, nonce)
        .finalize()
        .into_bytes();
    format!(
        "{VERSION}.{}.{expires_s}.{nonce}.{}",
        hex::encode(subject),
        hex::encode(tag)
    )
}

/// Checks a customer's token at `now`.
pub fn verify(secret: &[u8], token: &str, now: UnixMs) -> Result<Grant, TokenError> {
    let (customer, expires) = verify_for(secret, Purpose::Portal, token, now)?;
    let customer = CustomerKey::parse(&customer).map_err(|_| TokenError::Invalid)?;
    Ok(Grant { customer, expires })
}

/// Checks an admin token at `now`: the API key id that asked for it, and its expiry.
pub fn verify_admin(
    secret: &[u8],
    token: &str,
    now: UnixMs,
) -> Result<(String, UnixMs), TokenError> {
    verify_for(secret, Purpose::Admin, token, now)
}

fn verify_for(
    secret: &[u8],
    purpose: Purpose,
    token: &str,
    now: UnixMs,
) -> Result<(String, UnixMs), TokenError> {
    let mut parts = token.split('.');
    let (Some(VERSION), Some(customer_hex), Some(expires_text), Some(nonce), Some(tag_hex), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TokenError::Invalid);
    };
    let customer = hex::decode(customer_hex)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(TokenError::Invalid)?;
    // Only the canonical spelling of the number is signed ("+5" or "05" are not it).
    let expires_s: i64 = expires_text.parse().map_err(|_| TokenError::Invalid)?;
    if expires_s.to_string() != expires_text
        || nonce.len() != 16
        || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(TokenError::Invalid);
    }
    let tag = hex::decode(tag_hex).map_err(|_| TokenError::Invalid)?;
    mac(secret, purpose, &customer, expires_s, nonce)
        .verify_slice(&tag)
        .map_err(|_| TokenError::Invalid)?;
    let expires = UnixMs(expires_s.saturating_mul(1000));
    if now >= expires {
        return Err(TokenError::Expired);
    }
    Ok((customer, expires))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NONCE: &str = "00112233aabbccdd";

    fn key(s: &str) -> CustomerKey {
        CustomerKey::parse(s).unwrap()
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let t = sign(SECRET, &key("cus_1"), UnixMs(2_000_000), NONCE);
        let g = verify(SECRET, &t, UnixMs(1_999_999)).unwrap();
        assert_eq!(g.customer, key("cus_1"));
        assert_eq!(g.expires, UnixMs(2_000_000));
        assert_eq!(
            verify(SECRET, &t, UnixMs(2_000_000)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn keys_with_any_characters_round_trip() {
        for k in ["a.b.c", "ümlaut/ key", "x"] {
            let t = sign(SECRET, &key(k), UnixMs(10_000), NONCE);
            assert_eq!(verify(SECRET, &t, UnixMs(0)).unwrap().customer, key(k));
        }
    }

    #[test]
    fn every_altered_character_is_refused() {
        let t = sign(SECRET, &key("cus_1"), UnixMs(9_000_000), NONCE);
        for i in 0..t.len() {
            let mut bytes = t.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(bytes).unwrap();
            if altered == t {
                continue;
            }
            assert!(
                verify(SECRET, &altered, UnixMs(0)).is_err(),
                "byte {i} altered: {altered}"
            );
        }
    }

    #[test]
    fn another_customer_or_secret_or_expiry_does_not_verify() {
        let t = sign(SECRET, &key("cus_1"), UnixMs(9_000_000), NONCE);
        assert_eq!(
            verify(b"another secret", &t, UnixMs(0)),
            Err(TokenError::Invalid)
        );
        // Swap the customer part for another customer's: the MAC no longer matches.
        let other = t.replacen(&hex::encode("cus_1"), &hex::encode("cus_2"), 1);
        assert_eq!(verify(SECRET, &other, UnixMs(0)), Err(TokenError::Invalid));
        // Extend the expiry.
        let later = t.replacen(".9000.", ".9999999.", 1);
        assert_ne!(later, t);
        assert_eq!(verify(SECRET, &later, UnixMs(0)), Err(TokenError::Invalid));
    }

    #[test]
    fn malformed_tokens_are_invalid() {
        for t in [
            "",
            "v1",
            "v1....",
            "v2.00.1.00112233aabbccdd.00",
            "v1.zz.1.x.y",
        ] {
            assert_eq!(
                verify(SECRET, t, UnixMs(0)),
                Err(TokenError::Invalid),
                "{t}"
            );
        }
    }
}
