//! Inspection rule sets: the stored versions, their audit records, and the compiled
//! [`Inspector`] of the current version that the request path reads ([`Inspection`]).
//!
//! Owns: the `inspect_rule_versions` table (migration 5) and the `inspect_rules` records of
//! `audit_log`. Does not own: the rules and their precedence (`tollgate_core::inspect`),
//! enrichment and attribution (`ipmeta`), recording decisions as events (the API does that
//! through the engine), HTTP.
//!
//! Invariants: versions are numbered 1, 2, 3, ... in publish order and a stored version is never
//! updated or deleted (the current version is simply the highest); a version is validated by
//! compiling it before it is stored, and written with its audit record in one transaction; the
//! in-memory current [`Inspector`] is swapped only after the commit, under the same lock that
//! serializes publishes, so it always equals the highest stored version. Readers take an `Arc`
//! and never touch SQLite.

use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tollgate_core::inspect::{InspectError, Inspector, RuleSet, diff};
use tollgate_core::time::UnixMs;
use xxhash_rust::xxh3::xxh3_128;

use crate::StoreError;
use crate::ipmeta::Change;

/// The audit `kind` of rule-set changes.
pub const AUDIT_KIND: &str = "inspect_rules";

/// A rule-set operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectStoreError {
    /// The rule set is invalid.
    #[error(transparent)]
    Invalid(#[from] InspectError),
    /// The publisher expected another current version (optimistic concurrency).
    #[error("the current version is {current:?}, not the expected {expected}")]
    VersionConflict {
        /// What the publisher based its set on (0 = no version yet).
        expected: u64,
        /// What is current.
        current: Option<u64>,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for InspectStoreError {
    fn from(e: rusqlite::Error) -> Self {
        InspectStoreError::Store(StoreError::Sqlite(e))
    }
}

/// A published version without its rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// Version number (1, 2, ...).
    pub version: u64,
    /// When it was published.
    pub created: UnixMs,
    /// Who published it: the API key id, or `cli`.
    pub created_by: String,
    /// Number of rules.
    pub rules: usize,
    /// Number of categories.
    pub categories: usize,
    /// XXH3-128 of the stored document, hex.
    pub digest: String,
}

/// A published version with its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSetVersion {
    /// Summary.
    pub info: VersionInfo,
    /// The rules.
    pub set: RuleSet,
}

/// The version decisions use now.
#[derive(Debug)]
pub struct CurrentRules {
    /// Its summary.
    pub info: VersionInfo,
    /// Compiled.
    pub inspector: Inspector,
}

/// The stored versions and the current compiled one.
pub struct Inspection {
    conn: Mutex<Connection>,
    current: RwLock<Option<Arc<CurrentRules>>>,
}

fn digest(doc: &str) -> String {
    format!("{:032x}", xxh3_128(doc.as_bytes()))
}

fn info_of(
    version: u64,
    created: UnixMs,
    created_by: String,
    set: &RuleSet,
    doc: &str,
) -> VersionInfo {
    VersionInfo {
        version,
        created,
        created_by,
        rules: set.rules.len(),
        categories: set.categories.len(),
        digest: digest(doc),
    }
}

fn version_u64(v: i64) -> Result<u64, InspectStoreError> {
    u64::try_from(v).map_err(|_| {
        InspectStoreError::Store(StoreError::Corrupt(format!(
            "inspection rule set version {v} is negative"
        )))
    })
}

fn parse_doc(version: i64, doc: &str) -> Result<RuleSet, InspectStoreError> {
    serde_json::from_str(doc).map_err(|e| {
        InspectStoreError::Store(StoreError::Corrupt(format!(
            "inspection rule set version {version} is unreadable: {e}"
        )))
    })
}

impl Inspection {
    /// Opens the table and compiles the highest stored version (none: every request is
    /// allowed).
    pub fn open(dir: &Path) -> Result<Inspection, InspectStoreError> {
        crate::prepare_dir(dir)?;
        let conn = crate::open_db(dir)?;
        let latest = conn
            .query_row(
                "SELECT version, doc, created_ms, created_by FROM inspect_rule_versions
                 ORDER BY version DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        let current = match latest {
            None => None,
            Some((version, doc, created_ms, created_by)) => {
                let set = parse_doc(version, &doc)?;
                let info = info_of(
                    version_u64(version)?,
                    UnixMs(created_ms),
                    created_by,
                    &set,
                    &doc,
                );
                let inspector = Inspector::compile(set).map_err(|e| {
                    InspectStoreError::Store(StoreError::Corrupt(format!(
                        "inspection rule set version {version} no longer compiles: {e}"
                    )))
                })?;
                Some(Arc::new(CurrentRules { info, inspector }))
            }
        };
        Ok(Inspection {
            conn: Mutex::new(conn),
            current: RwLock::new(current),
        })
    }

    /// The current version, if one was published. Never touches SQLite.
    pub fn current(&self) -> Option<Arc<CurrentRules>> {
        self.current.read().clone()
    }

    /// Validates `set` and publishes it as the next version, audited as `actor`. With
    /// `expected`, refuses unless that is the current version (0 = none yet).
    pub fn publish(
        &self,
        set: RuleSet,
        expected: Option<u64>,
        actor: &str,
        now: UnixMs,
    ) -> Result<VersionInfo, InspectStoreError> {
        let doc = serde_json::to_string(&set).map_err(|e| {
            InspectStoreError::Store(StoreError::Corrupt(format!(
                "rule set not serializable: {e}"
            )))
        })?;
        let inspector = Inspector::compile(set)?;
        // Holding the connection serializes publishes, so `previous` is the highest stored
        // version until the swap below.
        let mut conn = self.conn.lock();
        let previous = self.current();
        let current_version = previous.as_ref().map(|c| c.info.version);
        if let Some(expected) = expected
            && current_version.unwrap_or(0) != expected
        {
            return Err(InspectStoreError::VersionConflict {
                expected,
                current: current_version,
            });
        }
        let version = current_version.unwrap_or(0) + 1;
        let info = info_of(version, now, actor.to_owned(), inspector.rule_set(), &doc);
        let empty = RuleSet::default();
        let changes = diff(
            previous.as_ref().map_or(&empty, |p| p.inspector.rule_set()),
            inspector.rule_set(),
        );
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO inspect_rule_versions (version, doc, created_ms, created_by)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                i64::try_from(version).unwrap_or(i64::MAX),
                doc,
                now.0,
                actor
            ],
        )?;
        let after = serde_json::json!({
            "version": info.version,
            "rules": info.rules,
            "categories": info.categories,
            "digest": info.digest,
            "changes": changes,
        });
        Change {
            kind: AUDIT_KIND,
            object: &version.to_string(),
            action: "publish",
            before: previous.as_ref().map(|p| {
                serde_json::json!({
                    "version": p.info.version,
                    "rules": p.info.rules,
                    "categories": p.info.categories,
                    "digest": p.info.digest,
                })
                .to_string()
            }),
            after: Some(after.to_string()),
        }
        .commit(tx, now, actor)?;
        *self.current.write() = Some(Arc::new(CurrentRules {
            info: info.clone(),
            inspector,
        }));
        drop(conn);
        Ok(info)
    }

    /// The versions, newest first, at most `limit`, below `before` (a version number) if given.
    pub fn list(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<VersionInfo>, InspectStoreError> {
        let conn = self.conn.lock();
        // SQLite's JSON functions count without building the rule set in Rust.
        let mut stmt = conn.prepare(
            "SELECT version, created_ms, created_by, json_array_length(doc, '$.rules'),
                    (SELECT count(*) FROM json_each(doc, '$.categories')), doc
             FROM inspect_rule_versions WHERE ?1 IS NULL OR version < ?1
             ORDER BY version DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(
                params![
                    before.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(v, created_ms, created_by, rules, categories, doc)| {
                Ok(VersionInfo {
                    version: version_u64(v)?,
                    created: UnixMs(created_ms),
                    created_by,
                    rules: usize::try_from(rules).unwrap_or(0),
                    categories: usize::try_from(categories).unwrap_or(0),
                    digest: digest(&doc),
                })
            })
            .collect()
    }

    /// One version with its rules.
    pub fn get(&self, version: u64) -> Result<Option<RuleSetVersion>, InspectStoreError> {
        let Ok(v) = i64::try_from(version) else {
            return Ok(None);
        };
        let row = self
            .conn
            .lock()
            .query_row(
                "SELECT doc, created_ms, created_by FROM inspect_rule_versions WHERE version = ?1",
                params![v],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((doc, created_ms, created_by)) = row else {
            return Ok(None);
        };
        let set = parse_doc(v, &doc)?;
        Ok(Some(RuleSetVersion {
            info: info_of(version, UnixMs(created_ms), created_by, &set, &doc),
            set,
        }))
    }
}

/// A fresh id for a recorded decision without a caller request id (`insp_` + 128 random bits).
pub fn new_event_id() -> String {
    format!("insp_{}", crate::keys::random_hex(16))
}
