//! Where each device field came from, in PostgreSQL (`device_fields`): written by an
//! import's `Change::RecordImport`, read by the device page and the next import's diff.

use super::Db;

use super::Sql;
use crate::{
    error::Result,
    store::{FieldRow, ImportSource, ImportedFields},
};

pub(super) fn record(
    c: &Db,
    source: &ImportSource,
    fields: &[ImportedFields],
    now_ms: i64,
) -> Result<()> {
    let put = super::wait(c.prepare(
        "INSERT INTO device_fields (device, field, value, source, file, sha256, set_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (device, field) DO UPDATE SET \
         value = $3, source = $4, file = $5, sha256 = $6, set_ms = $7",
    ))?;
    for d in fields {
        for (field, value) in &d.fields {
            super::wait(c.execute(
                &put,
                &[
                    &d.device,
                    field,
                    value,
                    &source.format,
                    &source.file,
                    &source.sha256,
                    &now_ms,
                ],
            ))?;
        }
    }
    Ok(())
}

pub(super) fn fields(c: &Db, device: Option<&str>) -> Result<Vec<FieldRow>> {
    c.rows(
        "SELECT device, field, value, source, file, sha256, set_ms FROM device_fields \
         WHERE $1::TEXT IS NULL OR device = $1 ORDER BY device, field",
        &[&device],
    )?
    .iter()
    .map(|r| {
        Ok(FieldRow {
            device: r.try_get(0)?,
            field: r.try_get(1)?,
            value: r.try_get(2)?,
            source: r.try_get(3)?,
            file: r.try_get(4)?,
            sha256: r.try_get(5)?,
            set_ms: r.try_get(6)?,
        })
    })
    .collect()
}
