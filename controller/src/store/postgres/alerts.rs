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

/// A row while a batch is decided: stored under its number, or the batch's row at an index
/// (numbered once the batch is decided).
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowRef {
    Stored(i64),
    Batch(usize),
}

/// An alert's latest row while a batch is decided.
#[derive(Clone)]
struct Latest {
    at: RowRef,
    /// Its creation row (`at` itself while the alert was never updated).
    first: RowRef,
    count: i64,
    last_seen: i64,
    acknowledged: bool,
    by: String,
    received: i64,
}

/// A row the batch inserts.
struct NewRow<'a> {
    alert: &'a NewAlert,
    count: i64,
    last_seen: i64,
    first: RowRef,
    acknowledged: bool,
    by: String,
    received: i64,
    latest: bool,
    dropped: bool,
}

/// Stores `gateway`'s alerts inside a write transaction (the write lock makes sequence
/// numbers commit in order: a sink that has read up to N never sees a smaller one later).
/// The batch is decided in memory against one read of its alerts' latest rows and written in
/// a few statements whatever its size (three round trips per alert made a 100-alert batch 300
/// round trips under the write lock).
pub(super) fn insert(
    c: &Db,
    gateway: &str,
    alerts: &[NewAlert],
    quota: u32,
) -> Result<Vec<String>> {
    let now = now_ms();
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    let mut latest: std::collections::HashMap<String, Latest> = std::collections::HashMap::new();
    for r in c.rows(
        "SELECT id, seq, count, last_seen_ns, first_seq, acknowledged, acknowledged_by, \
         received_ms FROM alerts WHERE gateway = $1 AND id = ANY($2) AND latest",
        &[&gateway, &ids],
    )? {
        latest.insert(
            r.try_get(0)?,
            Latest {
                at: RowRef::Stored(r.try_get(1)?),
                count: r.try_get(2)?,
                last_seen: r.try_get(3)?,
                first: RowRef::Stored(r.try_get(4)?),
                acknowledged: r.try_get(5)?,
                by: r.try_get(6)?,
                received: r.try_get(7)?,
            },
        );
    }
    // Decide, in order: a retry or an older copy is already stored; an update makes the next
    // row the latest (the creation row stays, a previous update row goes; the acknowledgement
    // and first receipt stay).
    let (mut flip, mut delete) = (Vec::new(), Vec::new());
    let mut rows: Vec<NewRow> = Vec::new();
    for a in alerts {
        let (count, last_seen) = (big(a.count.max(1)), big(a.last_seen_ns));
        let this = RowRef::Batch(rows.len());
        let (first, acknowledged, by, received) = match latest.get(&a.id).cloned() {
            None => (this, false, String::new(), now),
            Some(p) if (count, last_seen) <= (p.count, p.last_seen) => continue,
            Some(p) => {
                let creation = p.at == p.first;
                match p.at {
                    RowRef::Batch(i) if creation => rows[i].latest = false,
                    RowRef::Batch(i) => rows[i].dropped = true,
                    RowRef::Stored(seq) if creation => flip.push(seq),
                    RowRef::Stored(seq) => delete.push(seq),
                }
                (p.first, p.acknowledged, p.by, p.received)
            }
        };
        latest.insert(
            a.id.clone(),
            Latest {
                at: this,
                first,
                count,
                last_seen,
                acknowledged,
                by: by.clone(),
                received,
            },
        );
        rows.push(NewRow {
            alert: a,
            count,
            last_seen,
            first,
            acknowledged,
            by,
            received,
            latest: true,
            dropped: false,
        });
    }
    if !flip.is_empty() {
        c.exec(
            "UPDATE alerts SET latest = FALSE WHERE seq = ANY($1)",
            &[&flip],
        )?;
    }
    if !delete.is_empty() {
        c.exec("DELETE FROM alerts WHERE seq = ANY($1)", &[&delete])?;
    }
    // Numbers in the order the rows were decided.
    let kept: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].dropped).collect();
    let mut seq_of = vec![0i64; rows.len()];
    if !kept.is_empty() {
        let n = i64::try_from(kept.len()).unwrap_or(i64::MAX);
        let mut numbers: Vec<i64> = c
            .rows(
                "SELECT nextval('alert_seq') FROM generate_series(1, $1::BIGINT)",
                &[&n],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        numbers.sort_unstable();
        for (&i, seq) in kept.iter().zip(numbers) {
            seq_of[i] = seq;
        }
        let number = |r: RowRef| match r {
            RowRef::Stored(seq) => seq,
            RowRef::Batch(i) => seq_of[i],
        };
        let pick = |f: &dyn Fn(usize, &NewRow) -> i64| -> Vec<i64> {
            kept.iter().map(|&i| f(i, &rows[i])).collect()
        };
        let text = |f: &dyn for<'r> Fn(&'r NewRow<'r>) -> &'r str| -> Vec<&str> {
            kept.iter().map(|&i| f(&rows[i])).collect()
        };
        let flag = |f: &dyn Fn(&NewRow) -> bool| -> Vec<bool> {
            kept.iter().map(|&i| f(&rows[i])).collect()
        };
        c.exec(
            "INSERT INTO alerts (seq, id, gateway, device, body, severity, received_ms, \
             acknowledged, acknowledged_by, count, last_seen_ns, first_seq, latest, suppressed) \
             SELECT u.seq, u.id, $1, u.device, u.body, u.severity, u.received, u.ack, u.by, \
             u.count, u.last_seen, u.first, u.latest, EXISTS (SELECT 1 FROM suppressions s \
             WHERE s.device = u.device AND s.detector = u.detector \
             AND (s.peer = '' OR s.peer = u.peer)) \
             FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[], \
             $7::BIGINT[], $8::BOOLEAN[], $9::TEXT[], $10::BIGINT[], $11::BIGINT[], \
             $12::BIGINT[], $13::BOOLEAN[], $14::TEXT[], $15::TEXT[]) \
             AS u(seq, id, device, body, severity, received, ack, by, count, last_seen, first, \
             latest, detector, peer)",
            &[
                &gateway,
                &pick(&|i, _| seq_of[i]),
                &text(&|r| &r.alert.id),
                &text(&|r| &r.alert.device),
                &text(&|r| &r.alert.body),
                &pick(&|_, r| i64::from(r.alert.severity)),
                &pick(&|_, r| r.received),
                &flag(&|r| r.acknowledged),
                &text(&|r| &r.by),
                &pick(&|_, r| r.count),
                &pick(&|_, r| r.last_seen),
                &pick(&|_, r| number(r.first)),
                &flag(&|r| r.latest),
                &text(&|r| &r.alert.detector),
                &text(&|r| &r.alert.peer),
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
