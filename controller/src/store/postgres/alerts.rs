//! Alerts in PostgreSQL: stored per gateway with aggregation updates, the per-gateway quota,
//! sink cursors, suppressions, and the listings (the SQL of `sqlite.rs` and
//! `console_alerts.rs`, same rules).

use super::Db;
use tokio_postgres::Row;

use super::{Sql, big, unsigned};
use crate::{
    audit::now_ms,
    error::Result,
    store::{
        AlertPage, AlertPageQuery, AlertQuery, AlertRow, AlertState, ConsoleAlert, NewAlert,
        StoredAlert, SuppressionRow,
    },
};

/// Stores `gateway`'s alerts inside a write transaction (the write lock makes sequence
/// numbers commit in order: a sink that has read up to N never sees a smaller one later).
pub(super) fn insert(
    c: &Db,
    gateway: &str,
    alerts: &[NewAlert],
    quota: u32,
) -> Result<Vec<String>> {
    let now = now_ms();
    for a in alerts {
        let stored = c.opt(
            "SELECT seq, count, last_seen_ns, first_seq, acknowledged, acknowledged_by, \
             received_ms FROM alerts WHERE gateway = $1 AND id = $2 AND latest",
            &[&gateway, &a.id],
        )?;
        let (count, last_seen) = (big(a.count.max(1)), big(a.last_seen_ns));
        let (first_seq, acknowledged, by, received) = match stored {
            None => (None, false, String::new(), now),
            Some(r) => {
                let (seq, old_count, old_last, first): (i64, i64, i64, i64) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
                // A retry or an older copy: already stored.
                if (count, last_seen) <= (old_count, old_last) {
                    continue;
                }
                // An update: the latest row under the next number; the creation row stays,
                // a previous update row goes; the acknowledgement and first receipt stay.
                if seq == first {
                    c.exec("UPDATE alerts SET latest = FALSE WHERE seq = $1", &[&seq])?;
                } else {
                    c.exec("DELETE FROM alerts WHERE seq = $1", &[&seq])?;
                }
                (Some(first), r.try_get(4)?, r.try_get(5)?, r.try_get(6)?)
            }
        };
        let seq: i64 = c.one("SELECT nextval('alert_seq')", &[])?.try_get(0)?;
        c.exec(
            "INSERT INTO alerts (seq, id, gateway, device, body, severity, received_ms, \
             acknowledged, acknowledged_by, count, last_seen_ns, first_seq, suppressed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, EXISTS (SELECT 1 FROM \
             suppressions WHERE device = $4 AND detector = $13 AND (peer = '' OR peer = $14)))",
            &[
                &seq,
                &a.id,
                &gateway,
                &a.device,
                &a.body,
                &i64::from(a.severity),
                &received,
                &acknowledged,
                &by,
                &count,
                &last_seen,
                &first_seq.unwrap_or(seq),
                &a.detector,
                &a.peer,
            ],
        )?;
    }
    let held: i64 = c
        .one(
            "SELECT COUNT(*) FROM alerts WHERE gateway = $1 AND latest",
            &[&gateway],
        )?
        .try_get(0)?;
    if held > i64::from(quota) {
        let over = held - i64::from(quota);
        // An alert goes with its rows (creation and latest); it counts once, by the latest's
        // severity. Acknowledged first, then the lowest severity, oldest first.
        let dropped: Vec<i64> = c
            .rows(
                "DELETE FROM alerts WHERE gateway = $1 AND id IN (SELECT id FROM alerts \
                 WHERE gateway = $1 AND latest ORDER BY acknowledged DESC, severity, seq \
                 LIMIT $2) RETURNING severity, latest",
                &[&gateway, &over],
            )?
            .iter()
            .filter_map(|r| match r.try_get::<_, bool>(1) {
                Ok(true) => Some(r.try_get(0)),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<std::result::Result<_, _>>()?;
        for sev in &dropped {
            c.exec(
                "INSERT INTO alert_drops (gateway, severity, dropped) VALUES ($1, $2, 1) \
                 ON CONFLICT (gateway, severity) DO UPDATE \
                 SET dropped = alert_drops.dropped + 1",
                &[&gateway, sev],
            )?;
        }
        tracing::warn!(
            gateway,
            dropped = dropped.len(),
            quota,
            "alert quota reached: dropped the lowest-severity alerts"
        );
    }
    if !alerts.is_empty() {
        super::listen::alerts(c)?;
    }
    Ok(alerts.iter().map(|a| a.id.clone()).collect())
}

pub(super) fn since(c: &Db, q: &AlertQuery, after: i64) -> Result<Vec<StoredAlert>> {
    c.rows(
        "SELECT seq, first_seq, gateway, id, body, acknowledged, acknowledged_by FROM alerts \
         WHERE seq > $1 AND NOT suppressed AND ($2 = '' OR gateway = $2) \
         AND ($3 = '' OR device = $3) AND severity >= $4 AND ($5 OR NOT acknowledged) \
         ORDER BY seq LIMIT $6",
        &[
            &after,
            &q.gateway,
            &q.device,
            &i64::from(q.min_severity),
            &q.include_acknowledged,
            &i64::from(q.limit),
        ],
    )?
    .iter()
    .map(|r| {
        Ok(StoredAlert {
            seq: r.try_get(0)?,
            first_seq: r.try_get(1)?,
            gateway: r.try_get(2)?,
            id: r.try_get(3)?,
            body: r.try_get(4)?,
            acknowledged: r.try_get(5)?,
            acknowledged_by: r.try_get(6)?,
        })
    })
    .collect()
}

pub(super) fn pending(c: &Db, after: i64) -> Result<u64> {
    let n: i64 = c
        .one(
            "SELECT COUNT(*) FROM alerts WHERE seq > $1 AND NOT suppressed",
            &[&after],
        )?
        .try_get(0)?;
    Ok(unsigned(n))
}

pub(super) fn cursor(c: &Db, sink: &str) -> Result<i64> {
    Ok(c.opt(
        "SELECT delivered FROM sink_cursors WHERE sink = $1",
        &[&sink],
    )?
    .map(|r| r.try_get(0))
    .transpose()?
    .unwrap_or(0))
}

/// One statement: never moves a cursor back, whoever else advances it at the same time.
pub(super) fn advance(c: &Db, sink: &str, seq: i64) -> Result<()> {
    c.exec(
        "INSERT INTO sink_cursors (sink, delivered, updated_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (sink) DO UPDATE \
         SET delivered = GREATEST(sink_cursors.delivered, $2), updated_ms = $3",
        &[&sink, &seq, &now_ms()],
    )?;
    Ok(())
}

pub(super) fn drops(c: &Db, gateway: &str) -> Result<[u64; 4]> {
    let mut out = [0u64; 4];
    for r in c.rows(
        "SELECT severity, dropped FROM alert_drops WHERE gateway = $1",
        &[&gateway],
    )? {
        let (sev, n): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        if let Some(slot) = usize::try_from(sev).ok().and_then(|s| out.get_mut(s)) {
            *slot = unsigned(n);
        }
    }
    Ok(out)
}

pub(super) fn list(c: &Db, q: &AlertQuery) -> Result<Vec<AlertRow>> {
    c.rows(
        "SELECT gateway, body, acknowledged, acknowledged_by, suppressed FROM alerts \
         WHERE latest AND ($1 = '' OR gateway = $1) AND ($2 = '' OR device = $2) \
         AND severity >= $3 AND ($4 OR NOT acknowledged) AND ($6 OR NOT suppressed) \
         ORDER BY seq DESC LIMIT $5",
        &[
            &q.gateway,
            &q.device,
            &i64::from(q.min_severity),
            &q.include_acknowledged,
            &i64::from(q.limit),
            &q.include_suppressed,
        ],
    )?
    .iter()
    .map(|r| {
        Ok(AlertRow {
            gateway: r.try_get(0)?,
            body: r.try_get(1)?,
            acknowledged: r.try_get(2)?,
            acknowledged_by: r.try_get(3)?,
            suppressed: r.try_get(4)?,
        })
    })
    .collect()
}

pub(super) fn suppressions(c: &Db) -> Result<Vec<SuppressionRow>> {
    c.rows(
        "SELECT device, detector, peer, made_by, made_ms, reason FROM suppressions \
         ORDER BY device, detector, peer",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(SuppressionRow {
            device: r.try_get(0)?,
            detector: r.try_get(1)?,
            peer: r.try_get(2)?,
            made_by: r.try_get(3)?,
            made_ms: r.try_get(4)?,
            reason: r.try_get(5)?,
        })
    })
    .collect()
}

const CONSOLE_COLS: &str = "first_seq, gateway, id, device, body, severity, received_ms, \
                            acknowledged, acknowledged_by, suppressed";

const CONSOLE_FILTER: &str = "WHERE latest AND ($1 = '' OR device = $1) \
     AND ($2 = '' OR wardgate_json_text(body, 'detector') = $2) AND severity >= $3 \
     AND ($4 = '' OR ($4 = 'open' AND NOT acknowledged AND NOT suppressed) \
          OR ($4 = 'acknowledged' AND acknowledged) \
          OR ($4 = 'suppressed' AND suppressed))";

fn console_row(r: &Row) -> Result<ConsoleAlert> {
    let severity: i64 = r.try_get(5)?;
    Ok(ConsoleAlert {
        first_seq: r.try_get(0)?,
        gateway: r.try_get(1)?,
        id: r.try_get(2)?,
        device: r.try_get(3)?,
        body: r.try_get(4)?,
        severity: u8::try_from(severity).unwrap_or(u8::MAX),
        received_ms: r.try_get(6)?,
        acknowledged: r.try_get(7)?,
        acknowledged_by: r.try_get(8)?,
        suppressed: r.try_get(9)?,
    })
}

/// One page of the console's alert list, newest first by the latest version's number.
pub(super) fn page(c: &Db, q: &AlertPageQuery) -> Result<AlertPage> {
    let state = q.state.map_or("", AlertState::as_str);
    let sev = i64::from(q.min_severity);
    let total: i64 = c
        .one(
            &format!("SELECT COUNT(*) FROM alerts {CONSOLE_FILTER}"),
            &[&q.device, &q.detector, &sev, &state],
        )?
        .try_get(0)?;
    let rows = c
        .rows(
            &format!(
                "SELECT {CONSOLE_COLS} FROM alerts {CONSOLE_FILTER} \
                 ORDER BY seq DESC LIMIT $5 OFFSET $6"
            ),
            &[
                &q.device,
                &q.detector,
                &sev,
                &state,
                &i64::from(q.limit),
                &big(q.offset),
            ],
        )?
        .iter()
        .map(console_row)
        .collect::<Result<_>>()?;
    Ok(AlertPage {
        rows,
        total: unsigned(total),
    })
}

/// The alert first stored under `first_seq`, in its latest version.
pub(super) fn by_first_seq(c: &Db, first_seq: i64) -> Result<Option<ConsoleAlert>> {
    c.opt(
        &format!(
            "SELECT {CONSOLE_COLS} FROM alerts WHERE latest AND (gateway, id) = \
             (SELECT gateway, id FROM alerts WHERE seq = $1 AND first_seq = $1)"
        ),
        &[&first_seq],
    )?
    .as_ref()
    .map(console_row)
    .transpose()
}
