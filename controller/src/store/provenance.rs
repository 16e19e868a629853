//! Where each device field came from (`device_fields`, migration 15): written by an import's
//! `Change::RecordImport`, read by the device page and the next import's diff.

use rusqlite::{Connection, params};

use super::{FieldRow, ImportSource, ImportedFields};
use crate::error::Result;

pub(super) fn record(
    c: &Connection,
    source: &ImportSource,
    fields: &[ImportedFields],
    now_ms: i64,
) -> Result<()> {
    let mut put = c.prepare_cached(
        "INSERT INTO device_fields (device, field, value, source, file, sha256, set_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(device, field) DO UPDATE SET \
         value = ?3, source = ?4, file = ?5, sha256 = ?6, set_ms = ?7",
    )?;
    for d in fields {
        for (field, value) in &d.fields {
            put.execute(params![
                d.device,
                field,
                value,
                source.format,
                source.file,
                source.sha256,
                now_ms
            ])?;
        }
    }
    Ok(())
}

pub(super) fn fields(c: &Connection, device: Option<&str>) -> Result<Vec<FieldRow>> {
    let mut q = c.prepare_cached(
        "SELECT device, field, value, source, file, sha256, set_ms FROM device_fields \
         WHERE ?1 IS NULL OR device = ?1 ORDER BY device, field",
    )?;
    let rows = q.query_map([device], |r| {
        Ok(FieldRow {
            device: r.get(0)?,
            field: r.get(1)?,
            value: r.get(2)?,
            source: r.get(3)?,
            file: r.get(4)?,
            sha256: r.get(5)?,
            set_ms: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
