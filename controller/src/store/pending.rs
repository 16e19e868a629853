//! Changes awaiting a second engineer's approval (`pending_changes`, migration 11), in SQL.
//! Who may approve is decided by the console; the table only refuses what can never be
//! right (an approval by the proposer, a second approval).

use rusqlite::{Connection, OptionalExtension, params};

use super::{Closure, PendingChangeRow};
use crate::error::{Error, Result};

const COLS: &str = "id, device, profile, yaml, reason, proposer, proposed_ms, approver, decided_ms, \
                    closed, closed_by, close_reason";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PendingChangeRow> {
    Ok(PendingChangeRow {
        id: r.get(0)?,
        device: r.get(1)?,
        profile: r.get(2)?,
        yaml: r.get(3)?,
        reason: r.get(4)?,
        proposer: r.get(5)?,
        proposed_ms: r.get(6)?,
        approver: r.get(7)?,
        decided_ms: r.get(8)?,
        closed: r
            .get::<_, Option<String>>(9)?
            .as_deref()
            .and_then(Closure::parse),
        closed_by: r.get(10)?,
        close_reason: r.get(11)?,
    })
}

/// Stores `p` as pending (its id, approver and decision are the table's).
pub(super) fn insert(c: &Connection, p: &PendingChangeRow) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO pending_changes (device, profile, yaml, reason, proposer, proposed_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        p.device,
        p.profile,
        p.yaml,
        p.reason,
        p.proposer,
        p.proposed_ms
    ])?;
    Ok(())
}

/// Records `approver`'s approval of change `id`, proposed by `proposer`; refused if it is not
/// pending, not `proposer`'s, or `approver` is `proposer` (the table's CHECK).
pub(super) fn approve(
    c: &Connection,
    id: i64,
    proposer: &str,
    approver: &str,
    at_ms: i64,
) -> Result<()> {
    let n = c
        .prepare_cached(
            "UPDATE pending_changes SET approver = ?3, decided_ms = ?4 \
             WHERE id = ?1 AND proposer = ?2 AND approver IS NULL AND closed IS NULL",
        )?
        .execute(params![id, proposer, approver, at_ms])?;
    if n != 1 {
        return Err(Error::Precondition(format!(
            "change {id} is not pending from {proposer}"
        )));
    }
    Ok(())
}

/// Closes pending change `id` of `proposer` unapplied: withdrawn by the proposer, rejected by
/// anyone else (refused the other way round, or if it is not pending).
pub(super) fn close(
    c: &Connection,
    id: i64,
    proposer: &str,
    by: &str,
    closure: Closure,
    why: &str,
    at_ms: i64,
) -> Result<()> {
    let who = match closure {
        Closure::Withdrawn => "?5 = ?2",
        Closure::Rejected => "?5 <> ?2",
    };
    let n = c
        .prepare_cached(&format!(
            "UPDATE pending_changes SET closed = ?3, closed_by = ?5, close_reason = ?6, \
             decided_ms = ?4 WHERE id = ?1 AND proposer = ?2 AND approver IS NULL \
             AND closed IS NULL AND {who}"
        ))?
        .execute(params![id, proposer, closure.as_str(), at_ms, by, why])?;
    if n != 1 {
        return Err(Error::Precondition(match closure {
            Closure::Withdrawn => format!("change {id} is not pending from {by}"),
            Closure::Rejected => {
                format!("change {id} is not pending, or is {by}'s own (withdraw it instead)")
            }
        }));
    }
    Ok(())
}

pub(super) fn get(c: &Connection, id: i64) -> Result<Option<PendingChangeRow>> {
    Ok(
        c.prepare_cached(&format!("SELECT {COLS} FROM pending_changes WHERE id = ?1"))?
            .query_row([id], row)
            .optional()?,
    )
}

/// `device`'s latest `limit` changes, pending or decided, newest first.
pub(super) fn of_device(c: &Connection, device: &str, limit: u32) -> Result<Vec<PendingChangeRow>> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {COLS} FROM pending_changes WHERE device = ?1 ORDER BY id DESC LIMIT ?2"
        ))?
        .query_map(params![device, limit], row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The latest `limit` changes of every device, newest first; only the pending ones if
/// `pending_only`.
pub(super) fn latest(
    c: &Connection,
    pending_only: bool,
    limit: u32,
) -> Result<Vec<PendingChangeRow>> {
    // Pending as `PendingChangeRow::is_pending`: neither approved nor withdrawn or rejected.
    let filter = if pending_only {
        "WHERE approver IS NULL AND closed IS NULL"
    } else {
        ""
    };
    let rows = c
        .prepare_cached(&format!(
            "SELECT {COLS} FROM pending_changes {filter} ORDER BY id DESC LIMIT ?1"
        ))?
        .query_map([limit], row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
