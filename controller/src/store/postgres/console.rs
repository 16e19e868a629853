//! The console's reads and sessions in PostgreSQL: the inventory page (filtered, counted and
//! paged in the query), console sessions (stored by the SHA-256 of their id), the flows the
//! policy matrix checks. Same rules as the SQLite store's `console.rs`.

use super::Db;
use tokio_postgres::Row;

use super::{Sql, big, learning::direction, site, unsigned};
use crate::{
    error::Result,
    store::{InventoryPage, InventoryQuery, InventoryRow, ObservedFlow, SessionRow, StoreError},
};

/// `text` as an ILIKE pattern matching it anywhere, its wildcards literal (SQLite's LIKE is
/// case-insensitive for ASCII; ILIKE is the same here).
fn like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

const FILTER: &str = "WHERE ($1 = '' OR d.name ILIKE $1 OR d.mac ILIKE $1 \
     OR d.addresses ILIKE $1 OR d.asset_id ILIKE $1 OR d.location ILIKE $1) \
     AND ($2 = '' OR d.profile = $2) AND ($3 = '' OR d.gateway = $3) \
     AND ($4 = '' OR d.mode = $4) AND ($5 = '' OR COALESCE(b.state, 'none') = $5)";

pub(super) fn inventory(c: &Db, q: &InventoryQuery) -> Result<InventoryPage> {
    let search = match q.search.trim() {
        "" => String::new(),
        s => like(s),
    };
    let mode = q.mode.map(|m| m.to_string()).unwrap_or_default();
    let cols = site::DEVICE_COLS
        .split(", ")
        .map(|c| format!("d.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let from = "FROM devices d LEFT JOIN baselines b ON b.device = d.name";
    let total: i64 = c
        .one(
            &format!("SELECT COUNT(*) {from} {FILTER}"),
            &[&search, &q.profile, &q.gateway, &mode, &q.baseline],
        )?
        .try_get(0)?;
    let rows = c
        .rows(
            &format!(
                "SELECT {cols}, b.state, \
                 (SELECT MAX(f.last_seen_ns) FROM flow_days f WHERE f.device = d.name) \
                 {from} {FILTER} ORDER BY d.name LIMIT $6 OFFSET $7"
            ),
            &[
                &search,
                &q.profile,
                &q.gateway,
                &mode,
                &q.baseline,
                &i64::from(q.limit),
                &big(q.offset),
            ],
        )?
        .iter()
        .map(|r| {
            Ok(InventoryRow {
                device: site::device_at(r, 0)?,
                baseline: r.try_get(9)?,
                last_seen_ns: r
                    .try_get::<_, Option<i64>>(10)?
                    .and_then(|v| u64::try_from(v).ok()),
            })
        })
        .collect::<Result<_>>()?;
    let names = |sql: &str| -> Result<Vec<String>> {
        c.rows(sql, &[])?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    };
    Ok(InventoryPage {
        rows,
        total: unsigned(total),
        profiles: names("SELECT DISTINCT name FROM profiles ORDER BY name")?,
        gateways: names("SELECT name FROM gateways ORDER BY name")?,
    })
}

const SESSION_COLS: &str = "id_hash, user_name, role, source, subject, acr, csrf, created_ms, \
                            last_seen_ms, revoked_ms";

fn session_row(r: &Row) -> Result<SessionRow> {
    let user: String = r.try_get(1)?;
    let role: String = r.try_get(2)?;
    Ok(SessionRow {
        id_hash: r.try_get(0)?,
        role: role
            .parse()
            .map_err(|e| StoreError::corrupt("console_sessions", &user, format!("role: {e}")))?,
        user,
        source: r.try_get(3)?,
        subject: r.try_get(4)?,
        acr: r.try_get(5)?,
        csrf: r.try_get(6)?,
        created_ms: r.try_get(7)?,
        last_seen_ms: r.try_get(8)?,
        revoked_ms: r.try_get(9)?,
    })
}

pub(super) fn insert_session(c: &Db, s: &SessionRow) -> Result<()> {
    c.exec(
        &format!(
            "INSERT INTO console_sessions ({SESSION_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ),
        &[
            &s.id_hash,
            &s.user,
            &s.role.to_string(),
            &s.source,
            &s.subject,
            &s.acr,
            &s.csrf,
            &s.created_ms,
            &s.last_seen_ms,
            &s.revoked_ms,
        ],
    )?;
    Ok(())
}

pub(super) fn session(c: &Db, id_hash: &str) -> Result<Option<SessionRow>> {
    c.opt(
        &format!("SELECT {SESSION_COLS} FROM console_sessions WHERE id_hash = $1"),
        &[&id_hash],
    )?
    .as_ref()
    .map(session_row)
    .transpose()
}

pub(super) fn touch_session(c: &Db, id_hash: &str, now_ms: i64) -> Result<()> {
    c.exec(
        "UPDATE console_sessions SET last_seen_ms = GREATEST(last_seen_ms, $2) \
         WHERE id_hash = $1",
        &[&id_hash, &now_ms],
    )?;
    Ok(())
}

pub(super) fn revoke_session(c: &Db, id_hash: &str, now_ms: i64) -> Result<bool> {
    let n = c.exec(
        "UPDATE console_sessions SET revoked_ms = $2 WHERE id_hash = $1 AND revoked_ms IS NULL",
        &[&id_hash, &now_ms],
    )?;
    Ok(n == 1)
}

pub(super) fn sessions_of(c: &Db, user: &str) -> Result<Vec<SessionRow>> {
    c.rows(
        &format!(
            "SELECT {SESSION_COLS} FROM console_sessions WHERE user_name = $1 \
             ORDER BY created_ms DESC"
        ),
        &[&user],
    )?
    .iter()
    .map(session_row)
    .collect()
}

pub(super) fn prune_sessions(c: &Db, before_ms: i64) -> Result<usize> {
    let n = c.exec(
        "DELETE FROM console_sessions WHERE created_ms < $1",
        &[&before_ms],
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) fn observed_flows(c: &Db, from_day: u32) -> Result<Vec<ObservedFlow>> {
    c.rows(
        "SELECT d.profile, f.device, f.direction, f.peer, f.proto, f.port, \
         SUM(f.flows)::BIGINT FROM flow_days f JOIN devices d ON d.name = f.device \
         WHERE f.day >= $1 GROUP BY d.profile, f.device, f.direction, f.peer, f.proto, f.port \
         ORDER BY f.device, f.direction, f.peer, f.proto, f.port",
        &[&i64::from(from_day)],
    )?
    .iter()
    .map(|r| {
        let device: String = r.try_get(1)?;
        let peer: String = r.try_get(3)?;
        let bad = |what: &str| StoreError::corrupt("flow_days", &device, what);
        Ok(ObservedFlow {
            profile: r.try_get(0)?,
            direction: direction(r.try_get(2)?),
            peer: peer.parse().map_err(|_| bad("peer"))?,
            proto: u8::try_from(r.try_get::<_, i64>(4)?).map_err(|_| bad("proto"))?,
            port: u16::try_from(r.try_get::<_, i64>(5)?).map_err(|_| bad("port"))?,
            flows: unsigned(r.try_get(6)?),
            device,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_search_matches_its_wildcards_literally() {
        assert_eq!(super::like("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
