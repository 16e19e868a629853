//! The console's reads and its sessions, in SQL (SQLite): the inventory page filtered, counted
//! and limited in the query, and the `console_sessions` table.

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    InventoryPage, InventoryQuery, InventoryRow, ObservedFlow, SessionRow, StoreError,
    sqlite::{DEVICE_COLS, device_from_raw, raw_device},
};
use crate::error::Result;

/// `%text%` for LIKE, with `\` escaping the wildcards a search may hold.
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

/// The WHERE clause over `devices d LEFT JOIN baselines b` for the filters that are set,
/// parameters ?1 to ?5 (search, profile, gateway, mode, baseline). An unset filter is the
/// trivially true `?N = ''` rather than `(?N = '' OR d.col = ?N)`: with the `OR`, SQLite cannot
/// use the gateway, profile or mode index and scans every device (the console bench's
/// search on one gateway of 20,000 devices).
fn filter(q: &InventoryQuery, search: bool, mode: bool) -> String {
    let on = |set: bool, n: u8, clause: &str| {
        if set {
            clause.to_string()
        } else {
            format!("?{n} = ''")
        }
    };
    format!(
        "WHERE {} AND {} AND {} AND {} AND {}",
        on(
            search,
            1,
            "(d.name LIKE ?1 ESCAPE '\\' OR d.mac LIKE ?1 ESCAPE '\\' \
             OR d.addresses LIKE ?1 ESCAPE '\\' OR d.asset_id LIKE ?1 ESCAPE '\\' \
             OR d.location LIKE ?1 ESCAPE '\\')"
        ),
        on(!q.profile.is_empty(), 2, "d.profile = ?2"),
        on(!q.gateway.is_empty(), 3, "d.gateway = ?3"),
        on(mode, 4, "d.mode = ?4"),
        on(!q.baseline.is_empty(), 5, "COALESCE(b.state, 'none') = ?5"),
    )
}

pub(super) fn inventory(c: &Connection, q: &InventoryQuery) -> Result<InventoryPage> {
    let search = if q.search.trim().is_empty() {
        String::new()
    } else {
        like(q.search.trim())
    };
    let mode = q.mode.map(|m| m.to_string()).unwrap_or_default();
    let cols = DEVICE_COLS
        .split(", ")
        .map(|c| format!("d.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let from = "FROM devices d LEFT JOIN baselines b ON b.device = d.name";
    let where_ = filter(q, !search.is_empty(), !mode.is_empty());
    let total: i64 = c
        .prepare_cached(&format!("SELECT COUNT(*) {from} {where_}"))?
        .query_row(
            params![search, q.profile, q.gateway, mode, q.baseline],
            |r| r.get(0),
        )?;
    // Last seen is read for the page's rows only (the flow rows are indexed by device, day).
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {cols}, b.state, \
         (SELECT MAX(f.last_seen_ns) FROM flow_days f WHERE f.device = d.name) \
         {from} {where_} ORDER BY d.name LIMIT ?6 OFFSET ?7"
    ))?;
    let raw = stmt
        .query_map(
            params![
                search,
                q.profile,
                q.gateway,
                mode,
                q.baseline,
                i64::from(q.limit),
                i64::try_from(q.offset).unwrap_or(i64::MAX),
            ],
            |r| {
                Ok((
                    raw_device(r)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let rows = raw
        .into_iter()
        .map(|(d, baseline, last)| {
            Ok(InventoryRow {
                device: device_from_raw(d)?,
                baseline,
                last_seen_ns: last.and_then(|v| u64::try_from(v).ok()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let names = |sql: &str| -> Result<Vec<String>> {
        Ok(c.prepare_cached(sql)?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    };
    Ok(InventoryPage {
        rows,
        total: u64::try_from(total).unwrap_or(0),
        profiles: names("SELECT DISTINCT name FROM profiles ORDER BY name")?,
        gateways: names("SELECT name FROM gateways ORDER BY name")?,
    })
}

const SESSION_COLS: &str = "id_hash, user, role, source, subject, acr, csrf, created_ms, \
                            last_seen_ms, revoked_ms";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(SessionRow, String)> {
    Ok((
        SessionRow {
            id_hash: r.get(0)?,
            user: r.get(1)?,
            role: crate::auth::Role::Viewer,
            source: r.get(3)?,
            subject: r.get(4)?,
            acr: r.get(5)?,
            csrf: r.get(6)?,
            created_ms: r.get(7)?,
            last_seen_ms: r.get(8)?,
            revoked_ms: r.get(9)?,
        },
        r.get(2)?,
    ))
}

/// The role column parsed at the store's edge: an unknown role is a corrupt row, never a
/// viewer.
fn with_role((mut row, role): (SessionRow, String)) -> Result<SessionRow> {
    row.role = role
        .parse()
        .map_err(|e| StoreError::corrupt("console_sessions", &row.user, format!("role: {e}")))?;
    Ok(row)
}

pub(super) fn insert_session(c: &Connection, s: &SessionRow) -> Result<()> {
    c.execute(
        &format!("INSERT INTO console_sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            s.id_hash,
            s.user,
            s.role.to_string(),
            s.source,
            s.subject,
            s.acr,
            s.csrf,
            s.created_ms,
            s.last_seen_ms,
            s.revoked_ms
        ],
    )?;
    Ok(())
}

pub(super) fn session(c: &Connection, id_hash: &str) -> Result<Option<SessionRow>> {
    c.prepare_cached(&format!(
        "SELECT {SESSION_COLS} FROM console_sessions WHERE id_hash = ?1"
    ))?
    .query_row([id_hash], session_row)
    .optional()?
    .map(with_role)
    .transpose()
}

pub(super) fn touch_session(c: &Connection, id_hash: &str, now_ms: i64) -> Result<()> {
    c.prepare_cached(
        "UPDATE console_sessions SET last_seen_ms = MAX(last_seen_ms, ?2) WHERE id_hash = ?1",
    )?
    .execute(params![id_hash, now_ms])?;
    Ok(())
}

pub(super) fn revoke_session(c: &Connection, id_hash: &str, now_ms: i64) -> Result<bool> {
    let n = c
        .prepare_cached(
            "UPDATE console_sessions SET revoked_ms = ?2 WHERE id_hash = ?1 AND revoked_ms IS NULL",
        )?
        .execute(params![id_hash, now_ms])?;
    Ok(n == 1)
}

pub(super) fn sessions_of(c: &Connection, user: &str) -> Result<Vec<SessionRow>> {
    c.prepare_cached(&format!(
        "SELECT {SESSION_COLS} FROM console_sessions WHERE user = ?1 ORDER BY created_ms DESC"
    ))?
    .query_map([user], session_row)?
    .collect::<rusqlite::Result<Vec<_>>>()?
    .into_iter()
    .map(with_role)
    .collect()
}

/// Flows from `from_day` on, summed per device and peer key, with the device's profile (a
/// device's profile is one value, so the bare column is well defined).
pub(super) fn observed_flows(c: &Connection, from_day: u32) -> Result<Vec<ObservedFlow>> {
    let mut st = c.prepare_cached(
        "SELECT d.profile, f.device, f.direction, f.peer, f.proto, f.port, SUM(f.flows) \
         FROM flow_days f JOIN devices d ON d.name = f.device WHERE f.day >= ?1 \
         GROUP BY f.device, f.direction, f.peer, f.proto, f.port",
    )?;
    let raw = st
        .query_map([from_day], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u8>(4)?,
                r.get::<_, u16>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raw.into_iter()
        .map(|(profile, device, direction, peer, proto, port, flows)| {
            Ok(ObservedFlow {
                peer: peer
                    .parse()
                    .map_err(|_| StoreError::corrupt("flow_days", &device, "peer"))?,
                profile,
                device,
                direction: if direction == 0 {
                    wardgate_analysis::FlowDirection::Opened
                } else {
                    wardgate_analysis::FlowDirection::Received
                },
                proto,
                port,
                flows: u64::try_from(flows).unwrap_or(0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn a_search_matches_its_wildcards_literally() {
        assert_eq!(like("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
