//! The SOC's emergency quarantine in SQL (`quarantine_requests`, `quarantine_timers`,
//! migration 14): requests an engineer approves, and when each SOC quarantine ends. Who may
//! do what is decided by the service; the table refuses an approval by the requester.

use rusqlite::{Connection, OptionalExtension, params};

use super::{QuarantineRequestRow, QuarantineTimerRow};
use crate::error::{Error, Result};

const COLS: &str = "id, device, reason, requested_by, requested_ms, minutes, approver";

fn request(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineRequestRow> {
    Ok(QuarantineRequestRow {
        id: r.get(0)?,
        device: r.get(1)?,
        reason: r.get(2)?,
        requested_by: r.get(3)?,
        requested_ms: r.get(4)?,
        minutes: r.get(5)?,
        approver: r.get(6)?,
    })
}

pub(super) fn insert_request(
    c: &Connection,
    device: &str,
    reason: &str,
    by: &str,
    at_ms: i64,
    minutes: u32,
) -> Result<()> {
    c.execute(
        "INSERT INTO quarantine_requests (device, reason, requested_by, requested_ms, minutes) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![device, reason, by, at_ms, minutes],
    )?;
    Ok(())
}

/// Records `approver`'s approval of request `id`; refused unless it is pending, for
/// `device`, and not the approver's own.
pub(super) fn approve(
    c: &Connection,
    id: i64,
    device: &str,
    approver: &str,
    at_ms: i64,
) -> Result<()> {
    let n = c.execute(
        "UPDATE quarantine_requests SET approver = ?3, decided_ms = ?4 \
             WHERE id = ?1 AND device = ?2 AND approver IS NULL AND requested_by <> ?3",
        params![id, device, approver, at_ms],
    )?;
    if n != 1 {
        return Err(Error::Precondition(format!(
            "quarantine request {id} is not pending for {device}, or it is {approver}'s own"
        )));
    }
    Ok(())
}

pub(super) fn get(c: &Connection, id: i64) -> Result<Option<QuarantineRequestRow>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLS} FROM quarantine_requests WHERE id = ?1"
    ))?
    .query_row([id], request)
    .optional()?)
}

pub(super) fn pending(c: &Connection) -> Result<Vec<QuarantineRequestRow>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLS} FROM quarantine_requests WHERE approver IS NULL ORDER BY id"
    ))?
    .query_map([], request)?
    .collect::<rusqlite::Result<_>>()?)
}

pub(super) fn set_timer(
    c: &Connection,
    device: &str,
    until_ms: i64,
    restore_mode: &str,
    set_by: &str,
) -> Result<()> {
    c.execute(
        "INSERT INTO quarantine_timers (device, until_ms, restore_mode, set_by) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT(device) DO UPDATE \
         SET until_ms = ?2, restore_mode = ?3, set_by = ?4",
        params![device, until_ms, restore_mode, set_by],
    )?;
    Ok(())
}

pub(super) fn clear_timer(c: &Connection, device: &str) -> Result<()> {
    c.execute("DELETE FROM quarantine_timers WHERE device = ?1", [device])?;
    Ok(())
}

pub(super) fn due(c: &Connection, now_ms: i64) -> Result<Vec<QuarantineTimerRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT device, until_ms, restore_mode, set_by FROM quarantine_timers \
         WHERE until_ms <= ?1 ORDER BY until_ms",
    )?;
    let rows = stmt
        .query_map([now_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(device, until_ms, mode, set_by)| {
            let restore_mode = mode
                .parse()
                .map_err(|e| Error::Internal(format!("quarantine timer of {device}: {e}")))?;
            Ok(QuarantineTimerRow {
                device,
                until_ms,
                restore_mode,
                set_by,
            })
        })
        .collect()
}
