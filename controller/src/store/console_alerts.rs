//! The console's alert reads (SQLite): one page of alerts filtered, counted and limited in the
//! query, and one alert by the sequence number it was first stored under (stable while its
//! aggregated count grows, so a link to it keeps working).

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// Which alerts the console lists: filters (empty = any), run in the query, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertPageQuery {
    pub device: String,
    /// The detector (`scan_vertical`, ...), read from the stored finding.
    pub detector: String,
    /// Lowest severity rank (0 = info/low .. 3 = critical).
    pub min_severity: u8,
    /// `None`: every alert.
    pub state: Option<AlertState>,
    pub offset: u64,
    pub limit: u32,
}

/// What the SOC did with an alert, as the console filters it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// Neither acknowledged nor held back by a suppression.
    Open,
    Acknowledged,
    /// Held back by a suppression when it was stored.
    Suppressed,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Suppressed => "suppressed",
        }
    }
}

impl std::str::FromStr for AlertState {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "open" => Ok(AlertState::Open),
            "acknowledged" => Ok(AlertState::Acknowledged),
            "suppressed" => Ok(AlertState::Suppressed),
            other => Err(crate::error::Error::Invalid(format!(
                "`{}` is not an alert state (open, acknowledged, suppressed)",
                other.escape_debug()
            ))),
        }
    }
}

/// An alert's latest version, as the console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleAlert {
    /// The sequence number it was first stored under: its console id.
    pub first_seq: i64,
    pub gateway: String,
    pub id: String,
    pub device: String,
    /// The analysis crate's `Finding` as JSON.
    pub body: String,
    pub severity: u8,
    pub received_ms: i64,
    pub acknowledged: bool,
    pub acknowledged_by: String,
    pub suppressed: bool,
}

/// One page of alerts and how many match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertPage {
    pub rows: Vec<ConsoleAlert>,
    pub total: u64,
}

const COLS: &str = "first_seq, gateway, id, device, body, severity, received_ms, acknowledged, \
                    acknowledged_by, suppressed";

/// The filters over the latest rows, parameters ?1 to ?4 (the state: '' any, `open`,
/// `acknowledged`, `suppressed`).
const FILTER: &str = "WHERE latest = 1 AND (?1 = '' OR device = ?1) \
     AND (?2 = '' OR json_extract(body, '$.detector') = ?2) AND severity >= ?3 \
     AND (?4 = '' OR (?4 = 'open' AND acknowledged = 0 AND suppressed = 0) \
          OR (?4 = 'acknowledged' AND acknowledged = 1) \
          OR (?4 = 'suppressed' AND suppressed = 1))";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConsoleAlert> {
    Ok(ConsoleAlert {
        first_seq: r.get(0)?,
        gateway: r.get(1)?,
        id: r.get(2)?,
        device: r.get(3)?,
        body: r.get(4)?,
        severity: r.get(5)?,
        received_ms: r.get(6)?,
        acknowledged: r.get::<_, i64>(7)? != 0,
        acknowledged_by: r.get(8)?,
        suppressed: r.get::<_, i64>(9)? != 0,
    })
}

pub(super) fn page(c: &Connection, q: &AlertPageQuery) -> Result<AlertPage> {
    let state = q.state.map_or("", AlertState::as_str);
    let total: i64 = c
        .prepare_cached(&format!("SELECT COUNT(*) FROM alerts {FILTER}"))?
        .query_row(params![q.device, q.detector, q.min_severity, state], |r| {
            r.get(0)
        })?;
    // Newest first by the latest version's number: an alert whose count grew comes up again.
    let rows = c
        .prepare_cached(&format!(
            "SELECT {COLS} FROM alerts {FILTER} ORDER BY seq DESC LIMIT ?5 OFFSET ?6"
        ))?
        .query_map(
            params![
                q.device,
                q.detector,
                q.min_severity,
                state,
                i64::from(q.limit),
                i64::try_from(q.offset).unwrap_or(i64::MAX)
            ],
            row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(AlertPage {
        rows,
        total: u64::try_from(total).unwrap_or(0),
    })
}

/// The latest version of the alert first stored under `first_seq` (found through its
/// creation row's (gateway, id), both indexed).
pub(super) fn by_first_seq(c: &Connection, first_seq: i64) -> Result<Option<ConsoleAlert>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLS} FROM alerts WHERE latest = 1 AND (gateway, id) = \
             (SELECT gateway, id FROM alerts WHERE seq = ?1 AND first_seq = ?1)"
    ))?
    .query_row([first_seq], row)
    .optional()?)
}
