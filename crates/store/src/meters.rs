//! Meter definitions in the database: the spec as JSON, keyed by slug.

use rusqlite::{Connection, params};
use tollgate_core::meter::{Meter, MeterSlug, MeterSpec};
use tollgate_core::time::UnixMs;

use crate::StoreError;

pub(crate) fn load_all(conn: &Connection) -> Result<Vec<Meter>, StoreError> {
    let mut stmt = conn.prepare("SELECT slug, spec FROM meters ORDER BY slug")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(slug, spec)| {
            let slug = MeterSlug::parse(&slug).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let spec: MeterSpec = serde_json::from_str(&spec)
                .map_err(|e| StoreError::Corrupt(format!("meter {slug}: {e}")))?;
            Meter::new(slug, spec).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect()
}

pub(crate) fn upsert(conn: &Connection, meter: &Meter, now: UnixMs) -> Result<(), StoreError> {
    let spec = serde_json::to_string(&meter.spec)
        .map_err(|e| StoreError::Corrupt(format!("meter spec does not serialize: {e}")))?;
    conn.execute(
        "INSERT INTO meters (slug, spec, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (slug) DO UPDATE SET spec = excluded.spec, updated_ms = excluded.updated_ms",
        params![meter.slug.as_str(), spec, now.0],
    )?;
    Ok(())
}

pub(crate) fn delete(conn: &Connection, slug: &MeterSlug) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM meters WHERE slug = ?1", params![slug.as_str()])? > 0)
}
