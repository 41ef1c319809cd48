//! The database schema and its migrations, applied in order at open (`PRAGMA user_version`).

use rusqlite::Connection;

/// Migrations; index + 1 is the schema version it brings the database to.
const MIGRATIONS: &[&str] = &[
    // 1: keys, meters, raw event frames, settings.
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
     CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
     ) STRICT;
     CREATE TABLE meters (
        slug TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE event_frames (
        frame_seq INTEGER PRIMARY KEY,
        first_event_seq INTEGER NOT NULL,
        event_count INTEGER NOT NULL,
        min_time_ms INTEGER NOT NULL,
        max_time_ms INTEGER NOT NULL,
        committed_ms INTEGER NOT NULL,
        keys BLOB NOT NULL,
        events BLOB NOT NULL
     ) STRICT;",
];

/// The schema version this binary writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {current} is newer than {SCHEMA_VERSION}"
            )),
        ));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}
