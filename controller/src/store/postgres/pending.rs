//! Changes awaiting a second engineer's approval, in PostgreSQL (`pending_changes`). The
//! table refuses what can never be right (an approval by the proposer); the console decides
//! who may approve.

use super::Db;
use tokio_postgres::Row;

use super::Sql;
use crate::{
    error::{Error, Result},
    store::{Closure, PendingChangeRow},
};

const COLS: &str = "id, device, profile, yaml, reason, proposer, proposed_ms, approver, \
                    decided_ms, closed, closed_by, close_reason";

fn row(r: &Row) -> Result<PendingChangeRow> {
    Ok(PendingChangeRow {
        id: r.try_get(0)?,
        device: r.try_get(1)?,
        profile: r.try_get(2)?,
        yaml: r.try_get(3)?,
        reason: r.try_get(4)?,
        proposer: r.try_get(5)?,
        proposed_ms: r.try_get(6)?,
        approver: r.try_get(7)?,
        decided_ms: r.try_get(8)?,
        closed: r
            .try_get::<_, Option<String>>(9)?
            .as_deref()
            .and_then(Closure::parse),
        closed_by: r.try_get(10)?,
        close_reason: r.try_get(11)?,
    })
}

pub(super) fn insert(c: &Db, p: &PendingChangeRow) -> Result<()> {
    c.exec(
        "INSERT INTO pending_changes (device, profile, yaml, reason, proposer, proposed_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &p.device,
            &p.profile,
            &p.yaml,
            &p.reason,
            &p.proposer,
            &p.proposed_ms,
        ],
    )?;
    Ok(())
}

pub(super) fn approve(c: &Db, id: i64, proposer: &str, approver: &str, at_ms: i64) -> Result<()> {
    let n = c.exec(
        "UPDATE pending_changes SET approver = $3, decided_ms = $4 \
         WHERE id = $1 AND proposer = $2 AND approver IS NULL AND closed IS NULL",
        &[&id, &proposer, &approver, &at_ms],
    )?;
    if n != 1 {
        return Err(Error::Precondition(format!(
            "change {id} is not pending from {proposer}"
        )));
    }
    Ok(())
}

pub(super) fn close(
    c: &Db,
    id: i64,
    proposer: &str,
    by: &str,
    closure: Closure,
    why: &str,
    at_ms: i64,
) -> Result<()> {
    let who = match closure {
        Closure::Withdrawn => "$5 = $2",
        Closure::Rejected => "$5 <> $2",
    };
    let n = c.exec(
        &format!(
            "UPDATE pending_changes SET closed = $3, closed_by = $5, close_reason = $6, \
             decided_ms = $4 WHERE id = $1 AND proposer = $2 AND approver IS NULL \
             AND closed IS NULL AND {who}"
        ),
        &[&id, &proposer, &closure.as_str(), &at_ms, &by, &why],
    )?;
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

pub(super) fn get(c: &Db, id: i64) -> Result<Option<PendingChangeRow>> {
    c.opt(
        &format!("SELECT {COLS} FROM pending_changes WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(row)
    .transpose()
}

pub(super) fn of_device(c: &Db, device: &str, limit: u32) -> Result<Vec<PendingChangeRow>> {
    c.rows(
        &format!("SELECT {COLS} FROM pending_changes WHERE device = $1 ORDER BY id DESC LIMIT $2"),
        &[&device, &i64::from(limit)],
    )?
    .iter()
    .map(row)
    .collect()
}

pub(super) fn latest(c: &Db, pending_only: bool, limit: u32) -> Result<Vec<PendingChangeRow>> {
    // Pending as `PendingChangeRow::is_pending`: neither approved nor withdrawn or rejected.
    let filter = if pending_only {
        "WHERE approver IS NULL AND closed IS NULL"
    } else {
        ""
    };
    c.rows(
        &format!("SELECT {COLS} FROM pending_changes {filter} ORDER BY id DESC LIMIT $1"),
        &[&i64::from(limit)],
    )?
    .iter()
    .map(row)
    .collect()
}
