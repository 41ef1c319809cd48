//! Server secrets kept in the `settings` table.
//!
//! Owns: the portal signing secret — 32 random bytes made once per data directory, the first
//! time it is asked for, and the same bytes for ever after (tokens signed before a restart stay
//! valid until they expire). Does not own: what is signed or how (`tollgate-api`'s portal).
//!
//! Invariants: two concurrent first calls agree on one secret (`INSERT OR IGNORE` then read
//! back, in one write transaction); later calls only read.

use rusqlite::{OptionalExtension, params};

use super::{BillingStore, BillingStoreError};
use crate::StoreError;
use crate::keys::random_hex;

/// Bytes of the portal signing secret.
pub const PORTAL_SECRET_BYTES: usize = 32;

const PORTAL_SECRET_KEY: &str = "portal_secret";

impl BillingStore {
    /// The data directory's portal signing secret, created on first use.
    pub fn portal_secret(&self) -> Result<[u8; PORTAL_SECRET_BYTES], BillingStoreError> {
        // Read first: every portal request asks, and a write transaction would take the
        // database's write lock (and an fsync) that the ingest writer needs.
        let existing: Option<String> = self.read(|c| {
            Ok(c.query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![PORTAL_SECRET_KEY],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        let text: String = match existing {
            Some(t) => t,
            None => self.write(|tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
                    params![PORTAL_SECRET_KEY, random_hex(PORTAL_SECRET_BYTES)],
                )?;
                Ok(tx.query_row(
                    "SELECT value FROM settings WHERE key = ?1",
                    params![PORTAL_SECRET_KEY],
                    |r| r.get(0),
                )?)
            })?,
        };
        let bytes = hex::decode(&text)
            .ok()
            .and_then(|b| <[u8; PORTAL_SECRET_BYTES]>::try_from(b).ok())
            .ok_or_else(|| {
                StoreError::Corrupt("the stored portal secret is not 32 hex bytes".into())
            })?;
        Ok(bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-secret-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        let first = {
            let store = BillingStore::open(&dir).unwrap();
            let a = store.portal_secret().unwrap();
            assert_eq!(a, store.portal_secret().unwrap());
            a
        };
        let store = BillingStore::open(&dir).unwrap();
        assert_eq!(store.portal_secret().unwrap(), first, "kept across opens");
        assert_ne!(first, [0u8; PORTAL_SECRET_BYTES]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
