//! Storage errors. Each has a stable `code`; the API maps them to 503 or 500.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Something went wrong below the domain.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The data directory is held by another process.
    #[error("data dir {path} is in use by another tollgate process (stop it, or use its HTTP API)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The data directory cannot be written.
    #[error("data dir {path} is not writable (read-only file system or no permission)")]
    ReadOnly {
        /// The directory.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// A database operation failed (disk full, I/O error, ...).
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Stored data does not decode: the file is damaged.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The writer thread has stopped (shutdown or a previous fatal error).
    #[error("the writer has stopped")]
    WriterStopped,
    /// A copy of an error shared by every batch of a failed group commit.
    #[error("storage: {message}")]
    Shared {
        /// The original error's code.
        code: &'static str,
        /// The original error's message.
        message: String,
    },
    /// The database was written by a newer version of Tollgate.
    #[error("database schema version {found} is newer than this binary supports ({supported})")]
    SchemaTooNew {
        /// Found.
        found: i64,
        /// Supported.
        supported: i64,
    },
}

impl StoreError {
    pub(crate) fn open(path: &Path, source: rusqlite::Error) -> Self {
        StoreError::Open {
            path: path.to_owned(),
            source,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Locked { .. } => "data_dir_locked",
            StoreError::ReadOnly { .. } => "data_dir_read_only",
            StoreError::Io { .. } | StoreError::Open { .. } | StoreError::Sqlite(_) => {
                match self.sqlite_code() {
                    _ if self.is_disk_full() => "disk_full",
                    Some(rusqlite::ErrorCode::ReadOnly) => "data_dir_read_only",
                    Some(
                        rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt,
                    ) => "storage_corrupt",
                    _ => "storage_unavailable",
                }
            }
            StoreError::Corrupt(_) => "storage_corrupt",
            StoreError::WriterStopped => "writer_stopped",
            StoreError::SchemaTooNew { .. } => "schema_too_new",
            StoreError::Shared { code, .. } => code,
        }
    }

    fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            | StoreError::Open {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => Some(e.code),
            _ => None,
        }
    }

    /// Whether the cause is a full disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            | StoreError::Open {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => e.code == rusqlite::ErrorCode::DiskFull,
            StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}
