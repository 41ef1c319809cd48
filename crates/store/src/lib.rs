//! tollgate-store: where Tollgate keeps things, and the one writer that changes them.
//!
//! Owns: the data directory (one SQLite database in WAL mode, and a lock file so that one
//! process writes at a time); raw events, stored as compressed frames (a group commit writes one
//! per megabyte of raw events); API keys; meter definitions; the [`engine::Engine`], whose single writer thread
//! decides dedup verdicts, commits and fsyncs a group of batches, and only then updates the
//! in-memory rollups and answers; the webhook outbox ([`webhooks`]) and the provider outbox ([`providers`]), which share
//! their worker signal, writing connection and attempt bookkeeping (`outbox`). Does not own: HTTP, the CLI, or domain rules (`tollgate-core`).
//!
//! Invariants: an ingest answer is sent only after its frame is committed with
//! `synchronous=FULL` (fsync); rollups and the dedup index are rebuilt at open from the stored
//! frames, so they always equal a recomputation from raw events.

pub mod billing;
mod checkpoint;
pub mod engine;
mod error;
mod frames;
pub mod inspect;
pub mod ipmeta;
pub mod keys;
mod meters;
pub mod metrics;
pub mod orb;
mod outbox;
pub mod providers;
mod schema;
pub mod stripe_meters;
pub mod usage;
pub mod webhooks;

pub use self::billing::{BillingStore, BillingStoreError};
pub use self::engine::{BatchOutcome, Engine, EngineConfig, ItemError, PreparedBatch};
pub use self::error::StoreError;
pub use self::keys::{ApiKey, KeyStore, NewKey, Scope};
pub use self::metrics::Metrics;
pub use self::orb::OrbStore;
pub use self::providers::ProviderStore;
pub use self::stripe_meters::StripeMeterStore;
pub use self::webhooks::{WebhookStore, WebhookStoreError};

use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "tollgate.db";
/// File name of the writer lock inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Page size of a new database. Event frames are blobs of a megabyte or more, written to the
/// WAL and then copied into the database page by page: at 16 KiB a frame is a quarter of the
/// pages, WAL frame headers and write calls it is at SQLite's default 4 KiB (import +9%, HTTP
/// ingest +13%, measured), while a small billing row still costs one modest page. A database
/// keeps the page size it was created with.
const PAGE_BYTES: u32 = 16_384;

/// Opens (creating if needed) the SQLite database of a data directory, with the pragmas every
/// connection uses.
pub(crate) fn open_db(dir: &Path) -> Result<rusqlite::Connection, StoreError> {
    let path = dir.join(DB_FILE);
    let conn = rusqlite::Connection::open(&path).map_err(|e| StoreError::open(&path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| StoreError::open(&path, e))?;
    // Before the journal mode: only a database without pages yet takes a page size.
    conn.execute_batch(&format!(
        "PRAGMA page_size={PAGE_BYTES}; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
         PRAGMA foreign_keys=ON;"
    ))
    .map_err(|e| StoreError::open(&path, e))?;
    schema::migrate(&conn).map_err(|e| StoreError::open(&path, e))?;
    // Fail at open, not at the first ingest, when the database cannot be written.
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(|e| StoreError::open(&path, e))?;
    Ok(conn)
}

/// Creates the data directory if needed and checks that it can be written, by writing and
/// syncing a probe file (permission bits alone say nothing for root or read-only mounts).
pub(crate) fn prepare_dir(dir: &Path) -> Result<PathBuf, StoreError> {
    let io = |source: std::io::Error| {
        use std::io::ErrorKind;
        match source.kind() {
            ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => StoreError::ReadOnly {
                path: dir.to_owned(),
            },
            _ => StoreError::Io {
                path: dir.to_owned(),
                source,
            },
        }
    };
    fs::create_dir_all(dir).map_err(io)?;
    let probe = dir.join(".write-probe");
    let written = File::create(&probe).and_then(|f| f.sync_all());
    let _ = fs::remove_file(&probe);
    written.map_err(io)?;
    Ok(dir.to_owned())
}

/// Takes the exclusive writer lock of a data directory, held until the file is dropped.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: dir.to_owned(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
    }
}
