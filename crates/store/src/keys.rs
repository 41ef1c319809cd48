//! API keys: random secrets, stored only as SHA-256 hashes, each with scopes.
//!
//! A key is shown once when created (`tg_` + 40 hex digits) and never again. Verification
//! hashes the presented secret and looks the hash up; revoked keys fail.
//!
//! Verified keys are remembered by hash for [`KEY_CACHE_TTL`], so a request path that checks
//! a key per request (entitlement checks at tens of thousands per second) does not take the
//! connection's lock and query SQLite each time. A revocation through this store forgets the
//! key at once; a revocation by another process on the same data directory (the CLI while a
//! server runs) takes effect within [`KEY_CACHE_TTL`]. Unknown secrets are never remembered,
//! so guessing cannot grow the cache.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_core::time::UnixMs;

use crate::StoreError;

/// Shortest secret accepted from `TOLLGATE_ADMIN_KEY`.
pub const KEY_SECRET_BYTES_MIN: usize = 16;
/// Longest key name.
pub const KEY_NAME_BYTES_MAX: usize = 128;
/// How long a verified key is trusted without asking the database again: the longest a
/// revocation made by another process takes to reach a running server.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most verified keys remembered at once (the cache starts over when full).
pub const KEY_CACHE_ENTRIES_MAX: usize = 10_000;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Send events.
    Ingest,
    /// Read meters and usage.
    Read,
    /// Everything, including keys and meter definitions.
    Admin,
}

impl Scope {
    /// Parses `ingest|read|admin`.
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored key, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Public id, e.g. `key_1a2b3c4d5e6f`.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Scopes; `admin` implies the others.
    pub scopes: Vec<Scope>,
    /// Creation time.
    pub created: UnixMs,
    /// Revocation time, if revoked.
    pub revoked: Option<UnixMs>,
}

impl ApiKey {
    /// Whether the key grants `scope` (admin grants all).
    pub fn allows(&self, scope: Scope) -> bool {
        self.revoked.is_none()
            && self
                .scopes
                .iter()
                .any(|s| *s == scope || *s == Scope::Admin)
    }
}

/// A key just created: the only time its secret is known.
#[derive(Clone, Debug)]
pub struct NewKey {
    /// The stored key.
    pub key: ApiKey,
    /// The secret to hand to the client.
    pub secret: String,
}

/// Access to the key table. Safe to use while a server runs on the same data dir.
pub struct KeyStore {
    conn: Mutex<Connection>,
    /// Verified keys by secret hash, with when they were read.
    verified: RwLock<HashMap<[u8; 32], (ApiKey, Instant)>>,
}

fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hash_secret(secret: &str) -> String {
    hex::encode(secret_digest(secret))
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn encode_scopes(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_scopes(text: &str) -> Vec<Scope> {
    text.split(',').filter_map(Scope::parse).collect()
}

impl KeyStore {
    /// Opens the key table of a data directory (creating the directory and database if needed).
    pub fn open(dir: &Path) -> Result<KeyStore, StoreError> {
        crate::prepare_dir(dir)?;
        Ok(KeyStore {
            conn: Mutex::new(crate::open_db(dir)?),
            verified: RwLock::new(HashMap::new()),
        })
    }

    /// Creates a key with a random secret, or with `secret` when given.
    pub fn create(
        &self,
        name: &str,
        scopes: &[Scope],
        secret: Option<&str>,
        now: UnixMs,
    ) -> Result<NewKey, StoreError> {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let secret = secret.map_or_else(|| format!("tg_{}", random_hex(20)), str::to_owned);
        let key = ApiKey {
            id: format!("key_{}", random_hex(6)),
            name: name.to_owned(),
            scopes,
            created: now,
            revoked: None,
        };
        self.conn.lock().execute(
            "INSERT INTO api_keys (id, hash, name, scopes, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                key.id,
                hash_secret(&secret),
                key.name,
                encode_scopes(&key.scopes),
                now.0
            ],
        )?;
        Ok(NewKey { key, secret })
    }

    /// Creates the first admin key exactly once in the life of a data directory. Returns the
    /// key when this call created it (the caller prints a random secret once).
    pub fn bootstrap_admin(
        &self,
        secret: Option<&str>,
        now: UnixMs,
    ) -> Result<Option<NewKey>, StoreError> {
        let done: Option<String> = self
            .conn
            .lock()
            .query_row(
                "SELECT value FROM settings WHERE key = 'admin_bootstrapped'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_some() {
            return Ok(None);
        }
        let created = self.create("bootstrap admin", &[Scope::Admin], secret, now)?;
        self.conn.lock().execute(
            "INSERT INTO settings (key, value) VALUES ('admin_bootstrapped', ?1)",
            params![created.key.id],
        )?;
        Ok(Some(created))
    }

    /// The key for a presented secret, if it exists and is not revoked.
    pub fn verify(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        let digest = secret_digest(secret);
        if let Some((key, read_at)) = self.verified.read().get(&digest)
            && read_at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(Some(key.clone()));
        }
        let read_at = Instant::now();
        let key = self
            .conn
            .lock()
            .query_row(
                "SELECT id, name, scopes, created_ms, revoked_ms FROM api_keys WHERE hash = ?1",
                params![hex::encode(digest)],
                row_to_key,
            )
            .optional()?
            .filter(|k| k.revoked.is_none());
        let mut verified = self.verified.write();
        match &key {
            Some(k) => {
                if verified.len() >= KEY_CACHE_ENTRIES_MAX {
                    verified.clear();
                }
                verified.insert(digest, (k.clone(), read_at));
            }
            None => {
                verified.remove(&digest);
            }
        }
        Ok(key)
    }

    /// Every key, newest first.
    pub fn list(&self) -> Result<Vec<ApiKey>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT id, name, scopes, created_ms, revoked_ms FROM api_keys ORDER BY created_ms DESC, id",
        )?;
        let keys = stmt
            .query_map([], row_to_key)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    /// Revokes a key. Returns false when no such key exists.
    pub fn revoke(&self, id: &str, now: UnixMs) -> Result<bool, StoreError> {
        let n = self.conn.lock().execute(
            "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE id = ?1",
            params![id, now.0],
        )?;
        self.verified.write().retain(|_, (key, _)| key.id != id);
        Ok(n > 0)
    }
}

fn row_to_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    let scopes: String = row.get(2)?;
    Ok(ApiKey {
        id: row.get(0)?,
        name: row.get(1)?,
        scopes: decode_scopes(&scopes),
        created: UnixMs(row.get(3)?),
        revoked: row.get::<_, Option<i64>>(4)?.map(UnixMs),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-keys-{name}-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn cached_keys_follow_revocation_here_at_once_and_elsewhere_within_the_ttl() {
        let dir = temp_dir("cache");
        let server = KeyStore::open(&dir).unwrap();
        let cli = KeyStore::open(&dir).unwrap();
        let now = UnixMs(1_000);
        let a = server.create("a", &[Scope::Read], None, now).unwrap();
        let b = cli.create("b", &[Scope::Ingest], None, now).unwrap();
        assert_eq!(server.verify(&a.secret).unwrap(), Some(a.key.clone()));
        assert_eq!(server.verify(&b.secret).unwrap(), Some(b.key.clone()));
        // Unknown secrets are refused and not remembered.
        assert_eq!(server.verify("tg_nope").unwrap(), None);
        assert_eq!(server.verified.read().len(), 2);

        // Revoked through the same store: refused on the next request.
        assert!(server.revoke(&a.key.id, now).unwrap());
        assert_eq!(server.verify(&a.secret).unwrap(), None);

        // Revoked by another process: refused once the cached entry lapses.
        assert!(cli.revoke(&b.key.id, now).unwrap());
        assert_eq!(cli.verify(&b.secret).unwrap(), None);
        std::thread::sleep(KEY_CACHE_TTL + Duration::from_millis(50));
        assert_eq!(server.verify(&b.secret).unwrap(), None);
        assert!(server.verified.read().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
