//! The SOC's emergency quarantine in PostgreSQL: requests an engineer approves, and when each
//! SOC quarantine ends. The table refuses an approval by the requester.

use super::Db;
use tokio_postgres::Row;

use super::Sql;
use crate::{
    error::{Error, Result},
    store::{QuarantineRequestRow, QuarantineTimerRow, StoreError},
};

const COLS: &str = "id, device, reason, requested_by, requested_ms, minutes, approver";

fn request(r: &Row) -> Result<QuarantineRequestRow> {
    let device: String = r.try_get(1)?;
    let minutes: i64 = r.try_get(5)?;
    Ok(QuarantineRequestRow {
        id: r.try_get(0)?,
        reason: r.try_get(2)?,
        requested_by: r.try_get(3)?,
        requested_ms: r.try_get(4)?,
        minutes: u32::try_from(minutes).map_err(|_| {
            StoreError::corrupt("quarantine_requests", &device, format!("minutes {minutes}"))
        })?,
        approver: r.try_get(6)?,
        device,
    })
}

pub(super) fn insert_request(
    c: &Db,
    device: &str,
    reason: &str,
    by: &str,
    at_ms: i64,
    minutes: u32,
) -> Result<()> {
    c.exec(
        "INSERT INTO quarantine_requests (device, reason, requested_by, requested_ms, minutes) \
         VALUES ($1, $2, $3, $4, $5)",
        &[&device, &reason, &by, &at_ms, &i64::from(minutes)],
    )?;
    Ok(())
}

pub(super) fn approve(c: &Db, id: i64, device: &str, approver: &str, at_ms: i64) -> Result<()> {
    let n = c.exec(
        "UPDATE quarantine_requests SET approver = $3, decided_ms = $4 \
         WHERE id = $1 AND device = $2 AND approver IS NULL AND requested_by <> $3",
        &[&id, &device, &approver, &at_ms],
    )?;
    if n != 1 {
        return Err(Error::Precondition(format!(
            "quarantine request {id} is not pending for {device}, or it is {approver}'s own"
        )));
    }
    Ok(())
}

pub(super) fn get(c: &Db, id: i64) -> Result<Option<QuarantineRequestRow>> {
    c.opt(
        &format!("SELECT {COLS} FROM quarantine_requests WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(request)
    .transpose()
}

pub(super) fn pending(c: &Db) -> Result<Vec<QuarantineRequestRow>> {
    c.rows(
        &format!("SELECT {COLS} FROM quarantine_requests WHERE approver IS NULL ORDER BY id"),
        &[],
    )?
    .iter()
    .map(request)
    .collect()
}

pub(super) fn set_timer(
    c: &Db,
    device: &str,
    until_ms: i64,
    restore_mode: &str,
    set_by: &str,
) -> Result<()> {
    c.exec(
        "INSERT INTO quarantine_timers (device, until_ms, restore_mode, set_by) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (device) DO UPDATE \
         SET until_ms = $2, restore_mode = $3, set_by = $4",
        &[&device, &until_ms, &restore_mode, &set_by],
    )?;
    Ok(())
}

pub(super) fn due(c: &Db, now_ms: i64) -> Result<Vec<QuarantineTimerRow>> {
    c.rows(
        "SELECT device, until_ms, restore_mode, set_by FROM quarantine_timers \
         WHERE until_ms <= $1 ORDER BY until_ms",
        &[&now_ms],
    )?
    .iter()
    .map(|r| {
        let device: String = r.try_get(0)?;
        let mode: String = r.try_get(2)?;
        let restore_mode = mode
            .parse()
            .map_err(|e| Error::Internal(format!("quarantine timer of {device}: {e}")))?;
        Ok(QuarantineTimerRow {
            until_ms: r.try_get(1)?,
            restore_mode,
            set_by: r.try_get(3)?,
            device,
        })
    })
    .collect()
}
