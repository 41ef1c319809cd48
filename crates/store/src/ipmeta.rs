//! IP metadata storage: allocations, attribution sources, the audit log of their changes, and
//! the in-memory indexes the request path reads ([`IpMeta`]).
//!
//! Owns: the `ip_allocations`, `ip_attribution_sources` and `audit_log` tables (migration 5),
//! the current [`AllocationTable`] and [`AttributionSources`] as shared snapshots swapped
//! after every change, and the MaxMind enrichment database ([`GeoDb`]), reloadable without a
//! restart. Does not own: the rules of allocations (`tollgate_core::ipmeta`), HTTP.
//!
//! Invariants: a change is checked against the stored rows and written with its audit record
//! in one transaction; the in-memory snapshot is rebuilt from the rows after the commit, so it
//! always equals what is stored. Readers take an `Arc` of the snapshot and never block writers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tollgate_core::accesslog::LogFormat;
use tollgate_core::ipmeta::attribution::{AttributionSource, AttributionSources};
use tollgate_core::ipmeta::{Allocation, AllocationId, AllocationTable, Cidr, IpMetaError};
use tollgate_core::time::UnixMs;

use crate::StoreError;

/// An IP metadata operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum IpMetaStoreError {
    /// Refused by the domain rules.
    #[error(transparent)]
    Domain(#[from] IpMetaError),
    /// No allocation with that id.
    #[error("no allocation `{0}`")]
    NotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for IpMetaStoreError {
    fn from(e: rusqlite::Error) -> Self {
        IpMetaStoreError::Store(StoreError::Sqlite(e))
    }
}

/// One audited change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Order of the change.
    pub seq: i64,
    /// When.
    pub at: UnixMs,
    /// Who: the API key id, or `cli`.
    pub actor: String,
    /// What kind of thing changed, e.g. `ip_allocation`, `attribution_source`, `inspect_rules`.
    pub kind: String,
    /// Which one.
    pub object: String,
    /// The action, e.g. `create`, `close`, `put`, `delete`, `publish`.
    pub action: String,
    /// The state before (JSON), if any.
    pub before: Option<serde_json::Value>,
    /// The state after (JSON), if any.
    pub after: Option<serde_json::Value>,
}

/// The default attribution of the access-log sources: their `client_ip` field.
pub fn builtin_sources() -> Vec<AttributionSource> {
    [LogFormat::Nginx, LogFormat::Squid]
        .into_iter()
        .map(|f| AttributionSource {
            source: f.source().to_owned(),
            address_field: f.address_field().to_owned(),
        })
        .collect()
}

/// The database side.
pub struct IpMetaStore {
    conn: Mutex<Connection>,
}

/// A row as stored; [`parse_rows`] checks it.
struct AllocationRow {
    id: String,
    customer: String,
    cidr: String,
    valid_from_ms: i64,
    valid_to_ms: Option<i64>,
}

fn row_to_allocation(row: &rusqlite::Row<'_>) -> rusqlite::Result<AllocationRow> {
    Ok(AllocationRow {
        id: row.get(0)?,
        customer: row.get(1)?,
        cidr: row.get(2)?,
        valid_from_ms: row.get(3)?,
        valid_to_ms: row.get(4)?,
    })
}

const ALLOCATION_COLUMNS: &str = "id, customer, cidr, valid_from_ms, valid_to_ms";

fn parse_rows(rows: Vec<AllocationRow>) -> Result<Vec<Allocation>, IpMetaStoreError> {
    rows.into_iter()
        .map(|r| {
            let cidr = Cidr::parse(&r.cidr).map_err(|_| {
                IpMetaStoreError::Store(StoreError::Corrupt(format!(
                    "allocation {} has an invalid range `{}`",
                    r.id, r.cidr
                )))
            })?;
            Ok(Allocation {
                id: AllocationId::new(r.id),
                customer: r.customer,
                cidr,
                valid_from: UnixMs(r.valid_from_ms),
                valid_to: r.valid_to_ms.map(UnixMs),
            })
        })
        .collect()
}

/// What changed, for the audit log (also written by [`crate::inspect`]).
pub(crate) struct Change<'a> {
    pub(crate) kind: &'a str,
    pub(crate) object: &'a str,
    pub(crate) action: &'a str,
    pub(crate) before: Option<String>,
    pub(crate) after: Option<String>,
}

impl Change<'_> {
    /// Appends this audit record, by `actor` at `at`, inside the change's own transaction and
    /// commits it: a change never commits without its record.
    pub(crate) fn commit(
        self,
        tx: rusqlite::Transaction<'_>,
        at: UnixMs,
        actor: &str,
    ) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT INTO audit_log (at_ms, actor, kind, object, action, before, after)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                at.0,
                actor,
                self.kind,
                self.object,
                self.action,
                self.before,
                self.after
            ],
        )?;
        tx.commit()
    }
}

fn json<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

impl IpMetaStore {
    /// Opens the tables of a data directory (works beside a running server).
    pub fn open(dir: &Path) -> Result<IpMetaStore, StoreError> {
        crate::prepare_dir(dir)?;
        Ok(IpMetaStore {
            conn: Mutex::new(crate::open_db(dir)?),
        })
    }

    /// Creates an allocation after checking it against every stored one of the same prefix.
    pub fn create_allocation(
        &self,
        customer: &str,
        cidr: Cidr,
        valid_from: UnixMs,
        valid_to: Option<UnixMs>,
        actor: &str,
        now: UnixMs,
    ) -> Result<Allocation, IpMetaStoreError> {
        let allocation = Allocation {
            id: AllocationId::new(format!("alc_{}", crate::keys::random_hex(8))),
            customer: customer.to_owned(),
            cidr,
            valid_from,
            valid_to,
        };
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let same_prefix = same_prefix(&tx, &cidr)?;
        let count: i64 = tx.query_row("SELECT count(*) FROM ip_allocations", [], |r| r.get(0))?;
        let table = AllocationTable::build(same_prefix)?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= tollgate_core::limits::IP_ALLOCATIONS_MAX
        {
            return Err(IpMetaError::TooMany {
                max: tollgate_core::limits::IP_ALLOCATIONS_MAX,
            }
            .into());
        }
        table.check(&allocation)?;
        tx.execute(
            "INSERT INTO ip_allocations (id, customer, cidr, valid_from_ms, valid_to_ms, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                allocation.id.as_str(),
                allocation.customer,
                allocation.cidr.to_string(),
                allocation.valid_from.0,
                allocation.valid_to.map(|t| t.0),
                now.0
            ],
        )?;
        Change {
            kind: "ip_allocation",
            object: allocation.id.as_str(),
            action: "create",
            before: None,
            after: json(&allocation),
        }
        .commit(tx, now, actor)?;
        Ok(allocation)
    }

    /// Inserts many allocations in one transaction (bulk loads, the benchmark). Checked like
    /// [`Self::create_allocation`] against each other and the stored ones.
    pub fn create_allocations(
        &self,
        items: &[(String, Cidr, UnixMs, Option<UnixMs>)],
        actor: &str,
        now: UnixMs,
    ) -> Result<usize, IpMetaStoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut table = AllocationTable::build(load_all(&tx)?)?;
        for (customer, cidr, from, to) in items {
            let a = Allocation {
                id: AllocationId::new(format!("alc_{}", crate::keys::random_hex(8))),
                customer: customer.clone(),
                cidr: *cidr,
                valid_from: *from,
                valid_to: *to,
            };
            table.insert(a.clone())?;
            tx.execute(
                "INSERT INTO ip_allocations (id, customer, cidr, valid_from_ms, valid_to_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![a.id.as_str(), a.customer, a.cidr.to_string(), a.valid_from.0, a.valid_to.map(|t| t.0), now.0],
            )?;
        }
        Change {
            kind: "ip_allocation",
            object: "*",
            action: "bulk_create",
            before: None,
            after: Some(items.len().to_string()),
        }
        .commit(tx, now, actor)?;
        Ok(items.len())
    }

    /// Ends an allocation at `valid_to` (the range is kept for the history of attribution).
    pub fn close_allocation(
        &self,
        id: &str,
        valid_to: UnixMs,
        actor: &str,
        now: UnixMs,
    ) -> Result<Allocation, IpMetaStoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let found = tx
            .query_row(
                &format!("SELECT {ALLOCATION_COLUMNS} FROM ip_allocations WHERE id = ?1"),
                params![id],
                row_to_allocation,
            )
            .optional()?;
        let before = parse_rows(found.into_iter().collect())?
            .pop()
            .ok_or_else(|| IpMetaStoreError::NotFound(id.to_owned()))?;
        let after = Allocation {
            valid_to: Some(valid_to),
            ..before.clone()
        };
        let others: Vec<Allocation> = same_prefix(&tx, &before.cidr)?
            .into_iter()
            .filter(|a| a.id != before.id)
            .collect();
        AllocationTable::build(others)?.check(&after)?;
        tx.execute(
            "UPDATE ip_allocations SET valid_to_ms = ?2 WHERE id = ?1",
            params![id, valid_to.0],
        )?;
        Change {
            kind: "ip_allocation",
            object: id,
            action: "close",
            before: json(&before),
            after: json(&after),
        }
        .commit(tx, now, actor)?;
        Ok(after)
    }

    /// Allocations, optionally of one customer, ordered by range then start.
    pub fn list_allocations(
        &self,
        customer: Option<&str>,
    ) -> Result<Vec<Allocation>, IpMetaStoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ALLOCATION_COLUMNS} FROM ip_allocations
             WHERE ?1 IS NULL OR customer = ?1 ORDER BY cidr, valid_from_ms"
        ))?;
        let rows = stmt
            .query_map(params![customer], row_to_allocation)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        parse_rows(rows)
    }

    /// Every allocation as a lookup table.
    pub fn load_table(&self) -> Result<AllocationTable, IpMetaStoreError> {
        let conn = self.conn.lock();
        let rows = load_all_conn(&conn)?;
        Ok(AllocationTable::build(rows)?)
    }

    /// Sets the address field of a source.
    pub fn put_source(
        &self,
        source: &AttributionSource,
        actor: &str,
        now: UnixMs,
    ) -> Result<(), IpMetaStoreError> {
        source.validate()?;
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let before: Option<String> = tx
            .query_row(
                "SELECT address_field FROM ip_attribution_sources WHERE source = ?1",
                params![source.source],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO ip_attribution_sources (source, address_field, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (source) DO UPDATE SET address_field = ?2, updated_ms = ?3",
            params![source.source, source.address_field, now.0],
        )?;
        Change {
            kind: "attribution_source",
            object: &source.source,
            action: "put",
            before: before.map(|f| {
                serde_json::json!({"source": source.source, "address_field": f}).to_string()
            }),
            after: json(source),
        }
        .commit(tx, now, actor)?;
        Ok(())
    }

    /// Removes a source's stored entry; returns whether one existed.
    pub fn delete_source(
        &self,
        source: &str,
        actor: &str,
        now: UnixMs,
    ) -> Result<bool, IpMetaStoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let before: Option<String> = tx
            .query_row(
                "SELECT address_field FROM ip_attribution_sources WHERE source = ?1",
                params![source],
                |r| r.get(0),
            )
            .optional()?;
        let Some(field) = before else {
            return Ok(false);
        };
        tx.execute(
            "DELETE FROM ip_attribution_sources WHERE source = ?1",
            params![source],
        )?;
        Change {
            kind: "attribution_source",
            object: source,
            action: "delete",
            before: Some(serde_json::json!({"source": source, "address_field": field}).to_string()),
            after: None,
        }
        .commit(tx, now, actor)?;
        Ok(true)
    }

    /// The attribution sources in force: the built-in access-log sources, overridden or
    /// extended by the stored entries.
    pub fn load_sources(&self) -> Result<AttributionSources, IpMetaStoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT source, address_field FROM ip_attribution_sources ORDER BY source")?;
        let stored = stmt
            .query_map([], |r| {
                Ok(AttributionSource {
                    source: r.get(0)?,
                    address_field: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(AttributionSources::build(
            builtin_sources().into_iter().chain(stored),
        )?)
    }

    /// Appends an audit record in its own transaction (for changes stored elsewhere).
    pub fn record_audit(&self, record: &AuditRecord) -> Result<(), IpMetaStoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        Change {
            kind: &record.kind,
            object: &record.object,
            action: &record.action,
            before: record.before.as_ref().map(|v| v.to_string()),
            after: record.after.as_ref().map(|v| v.to_string()),
        }
        .commit(tx, record.at, &record.actor)?;
        Ok(())
    }

    /// Audit records of one kind (all kinds when `None`), oldest first, after `after_seq`.
    pub fn audit_log(
        &self,
        kind: Option<&str>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, IpMetaStoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, at_ms, actor, kind, object, action, before, after FROM audit_log
             WHERE (?1 IS NULL OR kind = ?1) AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let parse = |t: Option<String>| t.and_then(|t| serde_json::from_str(&t).ok());
        let rows = stmt
            .query_map(
                params![kind, after_seq, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(AuditRecord {
                        seq: r.get(0)?,
                        at: UnixMs(r.get(1)?),
                        actor: r.get(2)?,
                        kind: r.get(3)?,
                        object: r.get(4)?,
                        action: r.get(5)?,
                        before: parse(r.get(6)?),
                        after: parse(r.get(7)?),
                    })
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

fn same_prefix(conn: &Connection, cidr: &Cidr) -> Result<Vec<Allocation>, IpMetaStoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ALLOCATION_COLUMNS} FROM ip_allocations WHERE cidr = ?1"
    ))?;
    let rows = stmt
        .query_map(params![cidr.to_string()], row_to_allocation)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    parse_rows(rows)
}

fn load_all(conn: &Connection) -> Result<Vec<Allocation>, IpMetaStoreError> {
    load_all_conn(conn)
}

fn load_all_conn(conn: &Connection) -> Result<Vec<Allocation>, IpMetaStoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ALLOCATION_COLUMNS} FROM ip_allocations ORDER BY rowid"
    ))?;
    let rows = stmt
        .query_map([], row_to_allocation)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    parse_rows(rows)
}

/// Country and network of an address, from the enrichment database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Enrichment {
    /// ISO 3166-1 alpha-2 country code.
    pub country: Option<String>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// Autonomous system organisation.
    pub as_org: Option<String>,
}

#[derive(Deserialize)]
struct MmdbCountry<'a> {
    iso_code: Option<&'a str>,
}

/// The fields read from a MaxMind record: GeoIP2/GeoLite2 Country or City (`country.iso_code`)
/// and ASN (`autonomous_system_number`, `autonomous_system_organization`) layouts; one file may
/// carry both.
#[derive(Deserialize)]
struct MmdbRecord<'a> {
    #[serde(borrow)]
    country: Option<MmdbCountry<'a>>,
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<&'a str>,
}

/// A MaxMind-format database, read with the `maxminddb` crate; reloadable in place.
pub struct GeoDb {
    paths: Vec<PathBuf>,
    readers: RwLock<Arc<Vec<maxminddb::Reader<Vec<u8>>>>>,
}

impl GeoDb {
    /// Opens every path (none: enrichment is empty). Fails when a file cannot be read.
    pub fn open(paths: Vec<PathBuf>) -> Result<GeoDb, String> {
        let readers = Self::read(&paths)?;
        Ok(GeoDb {
            paths,
            readers: RwLock::new(Arc::new(readers)),
        })
    }

    fn read(paths: &[PathBuf]) -> Result<Vec<maxminddb::Reader<Vec<u8>>>, String> {
        paths
            .iter()
            .map(|p| {
                maxminddb::Reader::open_readfile(p)
                    .map_err(|e| format!("enrichment database {}: {e}", p.display()))
            })
            .collect()
    }

    /// Re-reads the files. On failure the databases in use stay.
    pub fn reload(&self) -> Result<usize, String> {
        let readers = Self::read(&self.paths)?;
        let n = readers.len();
        *self.readers.write() = Arc::new(readers);
        Ok(n)
    }

    /// The configured files.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// What the databases say about `addr`; the first database with a field wins.
    pub fn lookup(&self, addr: IpAddr) -> Enrichment {
        let readers = self.readers.read().clone();
        let mut out = Enrichment::default();
        for reader in readers.iter() {
            let Ok(Some(rec)) = lookup_record(reader, addr) else {
                continue;
            };
            if out.country.is_none() {
                out.country = rec.country.and_then(|c| c.iso_code).map(str::to_owned);
            }
            if out.asn.is_none() {
                out.asn = rec.autonomous_system_number;
            }
            if out.as_org.is_none() {
                out.as_org = rec.autonomous_system_organization.map(str::to_owned);
            }
        }
        out
    }
}

fn lookup_record(
    reader: &maxminddb::Reader<Vec<u8>>,
    addr: IpAddr,
) -> Result<Option<MmdbRecord<'_>>, maxminddb::MaxMindDbError> {
    reader.lookup::<MmdbRecord<'_>>(addr)
}

/// What the request path reads: the stored rows as shared snapshots, plus enrichment.
pub struct IpMeta {
    /// The tables.
    pub store: IpMetaStore,
    table: RwLock<Arc<AllocationTable>>,
    sources: RwLock<Arc<AttributionSources>>,
    /// MaxMind enrichment.
    pub geo: GeoDb,
}

impl IpMeta {
    /// Opens the store and loads the snapshots.
    pub fn open(dir: &Path, geo: GeoDb) -> Result<IpMeta, IpMetaStoreError> {
        let store = IpMetaStore::open(dir)?;
        let table = store.load_table()?;
        let sources = store.load_sources()?;
        Ok(IpMeta {
            store,
            table: RwLock::new(Arc::new(table)),
            sources: RwLock::new(Arc::new(sources)),
            geo,
        })
    }

    /// The allocation table now.
    pub fn table(&self) -> Arc<AllocationTable> {
        self.table.read().clone()
    }

    /// The attribution sources now.
    pub fn sources(&self) -> Arc<AttributionSources> {
        self.sources.read().clone()
    }

    /// Rebuilds the snapshots from the stored rows (after a change).
    pub fn refresh(&self) -> Result<(), IpMetaStoreError> {
        let table = self.store.load_table()?;
        let sources = self.store.load_sources()?;
        *self.table.write() = Arc::new(table);
        *self.sources.write() = Arc::new(sources);
        Ok(())
    }
}
