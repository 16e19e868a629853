//! SQL for learning: flow aggregates per device, direction, peer, protocol, port and UTC day
//! (`flow_days`, with the DNS name the device resolved the peer from; merged with the analysis crate's `FlowAggregate::merge`), capped in rows per
//! device and day (what does not fit is counted in `flow_overflow`), their retention, and
//! each device's baseline lifecycle (`baselines`). Called by `SqliteStore` inside its
//! transactions; the folding and the lifecycle rules are the analysis crate's.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use wardgate_analysis::{
    FlowDirection, FlowRecord,
    aggregate::{AggregateKey, FlowAggregate, aggregate, day_of},
    baseline::lifecycle::{Action, Lifecycle, LifecycleError, State},
};

use super::{FlowLimits, FlowsStored};
use crate::error::{Error, Result};

fn direction_code(d: FlowDirection) -> i64 {
    match d {
        FlowDirection::Opened => 0,
        FlowDirection::Received => 1,
    }
}

/// SQLite integers are signed: counters past i64::MAX stay at it.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The first day kept at `now_ns` with `retention_days` (at least today).
pub fn oldest_day(now_ns: u64, retention_days: u32) -> u32 {
    day_of(now_ns).saturating_sub(retention_days.max(1) - 1)
}

const COLS: &str = "device, direction, peer, proto, port, day, flows, packets_out, packets_in, \
                    bytes_out, bytes_in, first_seen_ns, last_seen_ns, detail, peer_name, named_flows";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FlowAggregate> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            Box::<dyn std::error::Error + Send + Sync>::from(what),
        )
    };
    let peer: String = r.get(2)?;
    let detail: String = r.get(13)?;
    Ok(FlowAggregate {
        key: AggregateKey {
            device: r.get(0)?,
            direction: if r.get::<_, i64>(1)? == 0 {
                FlowDirection::Opened
            } else {
                FlowDirection::Received
            },
            peer: peer
                .parse()
                .map_err(|_| bad(2, format!("flow_days.peer `{peer}` is not an address")))?,
            proto: r.get(3)?,
            port: r.get(4)?,
            day: r.get(5)?,
        },
        flows: uint(r.get(6)?),
        packets_out: uint(r.get(7)?),
        packets_in: uint(r.get(8)?),
        bytes_out: uint(r.get(9)?),
        bytes_in: uint(r.get(10)?),
        first_seen_ns: uint(r.get(11)?),
        last_seen_ns: uint(r.get(12)?),
        detail: serde_json::from_str(&detail)
            .map_err(|e| bad(13, format!("flow_days.detail of peer {peer}: {e}")))?,
        peer_name: r.get(14)?,
        named_flows: uint(r.get(15)?),
    })
}

/// Stores `records` of `gateway`'s devices: every device must be the gateway's (another
/// gateway's device refuses the batch); records of unknown devices or older than the retention
/// are counted, not stored; a record that would make a new row for a device and day already
/// holding `limits.rows_per_device_day` rows is counted in `flow_overflow`, not stored (a row
/// that exists still takes records). Rows past the retention are pruned.
pub fn insert_flows(
    tx: &Transaction<'_>,
    gateway: &str,
    records: &[FlowRecord],
    now_ns: u64,
    limits: FlowLimits,
) -> Result<FlowsStored> {
    let oldest = oldest_day(now_ns, limits.retention_days);
    // Rows per (device, day), counted once per batch and kept up to date as rows are added.
    let mut rows_of: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut over: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut out = FlowsStored::default();
    let mut known: BTreeMap<&str, bool> = BTreeMap::new();
    for r in records {
        let name = r.device.name.as_str();
        if known.contains_key(name) {
            continue;
        }
        let holder: Option<String> = tx
            .query_row("SELECT gateway FROM devices WHERE name = ?1", [name], |x| {
                x.get(0)
            })
            .optional()?;
        match holder {
            Some(g) if g != gateway => {
                return Err(Error::Denied(format!(
                    "device `{name}` is on gateway `{g}`, not `{gateway}`"
                )));
            }
            h => known.insert(name, h.is_some()),
        };
    }
    let mut kept = Vec::with_capacity(records.len());
    for r in records {
        if !known[r.device.name.as_str()] {
            out.unknown_device += 1;
        } else if day_of(r.first_seen_ns) < oldest {
            out.expired += 1;
        } else {
            kept.push(r);
        }
    }
    out.stored = kept.len() as u32;
    let mut starts: BTreeMap<&str, u64> = BTreeMap::new();
    for r in kept.iter().copied() {
        let s = starts.entry(r.device.name.as_str()).or_insert(u64::MAX);
        *s = (*s).min(r.first_seen_ns);
    }
    // The generation the gateway applied when its records are stored: with the rule id a
    // record carries, what admitted the flow at the time (the device page names it).
    let applied: u32 = tx
        .query_row(
            "SELECT applied_generation FROM gateways WHERE name = ?1",
            [gateway],
            |x| x.get(0),
        )
        .optional()?
        .unwrap_or(0);
    for mut a in aggregate(kept) {
        if let Some(d) = a.detail.decided_by.as_mut() {
            d.generation = applied;
        }
        let k = &a.key;
        let peer = k.peer.to_string();
        let prev = tx
            .query_row(
                &format!(
                    "SELECT {COLS} FROM flow_days WHERE device = ?1 AND direction = ?2 \
                     AND peer = ?3 AND proto = ?4 AND port = ?5 AND day = ?6"
                ),
                params![
                    k.device,
                    direction_code(k.direction),
                    peer,
                    k.proto,
                    k.port,
                    k.day
                ],
                row,
            )
            .optional()?;
        if let Some(mut p) = prev {
            p.merge(&a);
            a = p;
        } else {
            let day_key = (k.device.clone(), k.day);
            let rows = match rows_of.get_mut(&day_key) {
                Some(n) => n,
                None => {
                    let n: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM flow_days WHERE device = ?1 AND day = ?2",
                        params![k.device, k.day],
                        |r| r.get(0),
                    )?;
                    rows_of.entry(day_key.clone()).or_insert(uint(n))
                }
            };
            if *rows >= u64::from(limits.rows_per_device_day) {
                let n = u32::try_from(a.flows).unwrap_or(u32::MAX);
                out.stored = out.stored.saturating_sub(n);
                out.over_cap = out.over_cap.saturating_add(n);
                *over.entry(day_key).or_default() += a.flows;
                continue;
            }
            *rows += 1;
        }
        let k = &a.key;
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO flow_days ({COLS}, gateway) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ),
            params![
                k.device,
                direction_code(k.direction),
                peer,
                k.proto,
                k.port,
                k.day,
                int(a.flows),
                int(a.packets_out),
                int(a.packets_in),
                int(a.bytes_out),
                int(a.bytes_in),
                int(a.first_seen_ns),
                int(a.last_seen_ns),
                serde_json::to_string(&a.detail).expect("detail serializes"),
                a.peer_name,
                int(a.named_flows),
                gateway,
            ],
        )?;
    }
    for ((device, day), flows) in &over {
        tx.execute(
            "INSERT INTO flow_overflow (device, day, flows) VALUES (?1, ?2, ?3) \
             ON CONFLICT(device, day) DO UPDATE SET flows = flows + excluded.flows",
            params![device, day, int(*flows)],
        )?;
    }
    if !over.is_empty() {
        tracing::warn!(
            gateway,
            over_cap = out.over_cap,
            cap = limits.rows_per_device_day,
            devices = ?over.keys().map(|(d, _)| d.as_str()).collect::<std::collections::BTreeSet<_>>(),
            "flow records past the rows-per-device-day cap: counted, not stored"
        );
    }
    // A device's baseline starts learning with its first stored flow.
    for (device, start) in starts {
        let lc = Lifecycle::start(start);
        tx.execute(
            "INSERT OR IGNORE INTO baselines (device, state, start_ns, window_days, frozen_ns, changed_ms) \
             VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
            params![device, lc.state.as_str(), int(lc.start_ns), lc.window_days, crate::audit::now_ms()],
        )?;
    }
    out.pruned = prune(tx, oldest)?;
    Ok(out)
}

/// Deletes rows (and overflow counts) of days before `oldest`; returns the rows deleted.
pub fn prune(c: &Connection, oldest: u32) -> Result<usize> {
    c.execute("DELETE FROM flow_overflow WHERE day < ?1", [oldest])?;
    Ok(c.execute("DELETE FROM flow_days WHERE day < ?1", [oldest])?)
}

/// `device`'s days past the row cap and the records not stored, oldest first.
pub fn overflow(c: &Connection, device: &str) -> Result<Vec<(u32, u64)>> {
    let mut q =
        c.prepare_cached("SELECT day, flows FROM flow_overflow WHERE device = ?1 ORDER BY day")?;
    let rows = q
        .query_map([device], |r| Ok((r.get::<_, u32>(0)?, uint(r.get(1)?))))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// `device`'s rows with flows in [from_ns, to_ns], in key order.
pub fn aggregates(
    c: &Connection,
    device: &str,
    from_ns: u64,
    to_ns: u64,
) -> Result<Vec<FlowAggregate>> {
    let mut q = c.prepare_cached(&format!(
        "SELECT {COLS} FROM flow_days WHERE device = ?1 AND day BETWEEN ?2 AND ?3 \
         AND last_seen_ns >= ?4 AND first_seen_ns <= ?5 \
         ORDER BY direction, peer, proto, port, day"
    ))?;
    let rows = q
        .query_map(
            params![
                device,
                day_of(from_ns),
                day_of(to_ns),
                int(from_ns),
                int(to_ns)
            ],
            row,
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// `device`'s baseline lifecycle and when it last changed (Unix ms), if it has one.
pub fn lifecycle(c: &Connection, device: &str) -> Result<Option<(Lifecycle, i64)>> {
    let got: Option<(String, i64, u32, Option<i64>, i64)> = c
        .query_row(
            "SELECT state, start_ns, window_days, frozen_ns, changed_ms FROM baselines WHERE device = ?1",
            [device],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((state, start, window_days, frozen, changed)) = got else {
        return Ok(None);
    };
    let state = State::parse(&state).ok_or_else(|| {
        Error::Internal(format!(
            "baselines row of `{device}` has an unknown state `{state}`"
        ))
    })?;
    Ok(Some((
        Lifecycle {
            state,
            start_ns: uint(start),
            window_days,
            frozen_ns: frozen.map(uint),
        },
        changed,
    )))
}

/// Moves `device`'s baseline by `action` at `now_ns`; relearn also clears the device's
/// recorded flows (the old behaviour is what relearning discards). Returns the lifecycle
/// before (None: the device had recorded nothing) and after, and the flow rows cleared.
pub fn set_baseline(
    tx: &Connection,
    device: &str,
    action: Action,
    now_ns: u64,
) -> Result<(Option<Lifecycle>, Lifecycle, usize)> {
    let before = lifecycle(tx, device)?.map(|(l, _)| l);
    let current = match (&before, action) {
        (Some(l), _) => *l,
        // Relearning a device with no baseline starts one; the others need one.
        (None, Action::Relearn { .. }) => Lifecycle::start(now_ns),
        (None, _) => {
            return Err(Error::Precondition(format!(
                "device `{device}` has no baseline yet: no flows recorded"
            )));
        }
    };
    let after = current.apply(action, now_ns).map_err(|e| match e {
        LifecycleError::UnknownAction(_) | LifecycleError::BadWindow(_) => {
            Error::Invalid(e.to_string())
        }
        LifecycleError::AlreadyFrozen(_) | LifecycleError::NotFrozen(_) => {
            Error::Precondition(e.to_string())
        }
    })?;
    let cleared = if matches!(action, Action::Relearn { .. }) {
        tx.execute("DELETE FROM flow_overflow WHERE device = ?1", [device])?;
        tx.execute("DELETE FROM flow_days WHERE device = ?1", [device])?
    } else {
        0
    };
    tx.execute(
        "INSERT INTO baselines (device, state, start_ns, window_days, frozen_ns, changed_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(device) DO UPDATE SET state = ?2, \
         start_ns = ?3, window_days = ?4, frozen_ns = ?5, changed_ms = ?6",
        params![
            device,
            after.state.as_str(),
            int(after.start_ns),
            after.window_days,
            after.frozen_ns.map(int),
            crate::audit::now_ms()
        ],
    )?;
    Ok((before, after, cleared))
}
