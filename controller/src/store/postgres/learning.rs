//! Learning in PostgreSQL: flow aggregates per device, direction, peer, protocol, port and UTC
//! day (`flow_days`), capped in rows per device and day (`flow_overflow` counts the rest),
//! their retention, and each device's baseline lifecycle. Same rules as the SQLite store's
//! `learning.rs`; the folding and the lifecycle are the analysis crate's.

use std::collections::BTreeMap;

use super::Db;
use tokio_postgres::Row;
use wardgate_analysis::{
    FlowDirection, FlowRecord,
    aggregate::{AggregateKey, FlowAggregate, aggregate, day_of},
    baseline::lifecycle::{Action, Lifecycle, LifecycleError, State},
};

use super::{Sql, big, unsigned};
use crate::{
    error::{Error, Result},
    store::{FlowLimits, FlowsStored, StoreError, oldest_day},
};

fn direction_code(d: FlowDirection) -> i64 {
    match d {
        FlowDirection::Opened => 0,
        FlowDirection::Received => 1,
    }
}

pub(super) fn direction(code: i64) -> FlowDirection {
    if code == 0 {
        FlowDirection::Opened
    } else {
        FlowDirection::Received
    }
}

const COLS: &str = "device, direction, peer, proto, port, day, flows, packets_out, packets_in, \
                    bytes_out, bytes_in, first_seen_ns, last_seen_ns, detail, peer_name, named_flows";

fn small<T: TryFrom<i64>>(device: &str, what: &str, v: i64) -> Result<T> {
    T::try_from(v)
        .map_err(|_| StoreError::corrupt("flow_days", device, format!("{what} {v}")).into())
}

fn row(r: &Row) -> Result<FlowAggregate> {
    let device: String = r.try_get(0)?;
    let peer: String = r.try_get(2)?;
    let detail: String = r.try_get(13)?;
    Ok(FlowAggregate {
        key: AggregateKey {
            direction: direction(r.try_get(1)?),
            peer: peer
                .parse()
                .map_err(|_| StoreError::corrupt("flow_days", &device, format!("peer `{peer}`")))?,
            proto: small(&device, "proto", r.try_get(3)?)?,
            port: small(&device, "port", r.try_get(4)?)?,
            day: small(&device, "day", r.try_get(5)?)?,
            device: device.clone(),
        },
        flows: unsigned(r.try_get(6)?),
        packets_out: unsigned(r.try_get(7)?),
        packets_in: unsigned(r.try_get(8)?),
        bytes_out: unsigned(r.try_get(9)?),
        bytes_in: unsigned(r.try_get(10)?),
        first_seen_ns: unsigned(r.try_get(11)?),
        last_seen_ns: unsigned(r.try_get(12)?),
        detail: serde_json::from_str(&detail).map_err(|e| {
            StoreError::corrupt("flow_days", &device, format!("detail of peer {peer}: {e}"))
        })?,
        peer_name: r.try_get(14)?,
        named_flows: unsigned(r.try_get(15)?),
    })
}

/// Stores `records` of `gateway`'s devices inside a write transaction (the write lock keeps
/// two controllers from merging into one row at once): see `Store::insert_flows`.
pub(super) fn insert_flows(
    c: &Db,
    gateway: &str,
    records: &[FlowRecord],
    now_ns: u64,
    limits: FlowLimits,
) -> Result<FlowsStored> {
    let oldest = oldest_day(now_ns, limits.retention_days);
    let mut rows_of: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut over: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut out = FlowsStored::default();
    let mut known: BTreeMap<&str, bool> = BTreeMap::new();
    for r in records {
        let name = r.device.name.as_str();
        if known.contains_key(name) {
            continue;
        }
        let holder: Option<String> = c
            .opt("SELECT gateway FROM devices WHERE name = $1", &[&name])?
            .map(|x| x.try_get(0))
            .transpose()?;
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
    // The generation the gateway applied when its records are stored (the device page names
    // what admitted the flow at the time).
    let applied: u32 = match c.opt(
        "SELECT applied_generation FROM gateways WHERE name = $1",
        &[&gateway],
    )? {
        Some(r) => super::u32_of("gateways", gateway, r.try_get(0)?)?,
        None => 0,
    };
    for mut a in aggregate(kept) {
        if let Some(d) = a.detail.decided_by.as_mut() {
            d.generation = applied;
        }
        let k = &a.key;
        let peer = k.peer.to_string();
        let (dir, proto, port, day) = (
            direction_code(k.direction),
            i64::from(k.proto),
            i64::from(k.port),
            i64::from(k.day),
        );
        let prev = c.opt(
            &format!(
                "SELECT {COLS} FROM flow_days WHERE device = $1 AND direction = $2 \
                 AND peer = $3 AND proto = $4 AND port = $5 AND day = $6"
            ),
            &[&k.device, &dir, &peer, &proto, &port, &day],
        )?;
        if let Some(p) = prev {
            let mut p = row(&p)?;
            p.merge(&a);
            a = p;
        } else {
            let day_key = (k.device.clone(), k.day);
            let rows = match rows_of.get_mut(&day_key) {
                Some(n) => n,
                None => {
                    let n: i64 = c
                        .one(
                            "SELECT COUNT(*) FROM flow_days WHERE device = $1 AND day = $2",
                            &[&k.device, &day],
                        )?
                        .try_get(0)?;
                    rows_of.entry(day_key.clone()).or_insert(unsigned(n))
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
        c.exec(
            &format!(
                "INSERT INTO flow_days ({COLS}, gateway) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
                 ON CONFLICT (device, direction, peer, proto, port, day) DO UPDATE SET \
                 flows = $7, packets_out = $8, packets_in = $9, bytes_out = $10, bytes_in = $11, \
                 first_seen_ns = $12, last_seen_ns = $13, detail = $14, peer_name = $15, \
                 named_flows = $16, gateway = $17"
            ),
            &[
                &k.device,
                &dir,
                &peer,
                &proto,
                &port,
                &day,
                &big(a.flows),
                &big(a.packets_out),
                &big(a.packets_in),
                &big(a.bytes_out),
                &big(a.bytes_in),
                &big(a.first_seen_ns),
                &big(a.last_seen_ns),
                &serde_json::to_string(&a.detail).expect("detail serializes"),
                &a.peer_name,
                &big(a.named_flows),
                &gateway,
            ],
        )?;
    }
    for ((device, day), flows) in &over {
        c.exec(
            "INSERT INTO flow_overflow (device, day, flows) VALUES ($1, $2, $3) \
             ON CONFLICT (device, day) DO UPDATE SET flows = flow_overflow.flows + excluded.flows",
            &[device, &i64::from(*day), &big(*flows)],
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
        c.exec(
            "INSERT INTO baselines (device, state, start_ns, window_days, frozen_ns, changed_ms) \
             VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT (device) DO NOTHING",
            &[
                &device,
                &lc.state.as_str(),
                &big(lc.start_ns),
                &i64::from(lc.window_days),
                &crate::audit::now_ms(),
            ],
        )?;
    }
    out.pruned = prune(c, oldest)?;
    Ok(out)
}

/// Deletes rows (and overflow counts) of days before `oldest`; returns the rows deleted.
pub(super) fn prune(c: &Db, oldest: u32) -> Result<usize> {
    let oldest = i64::from(oldest);
    c.exec("DELETE FROM flow_overflow WHERE day < $1", &[&oldest])?;
    let n = c.exec("DELETE FROM flow_days WHERE day < $1", &[&oldest])?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) fn overflow(c: &Db, device: &str) -> Result<Vec<(u32, u64)>> {
    c.rows(
        "SELECT day, flows FROM flow_overflow WHERE device = $1 ORDER BY day",
        &[&device],
    )?
    .iter()
    .map(|r| {
        Ok((
            small(device, "day", r.try_get(0)?)?,
            unsigned(r.try_get(1)?),
        ))
    })
    .collect()
}

pub(super) fn aggregates(
    c: &Db,
    device: &str,
    from_ns: u64,
    to_ns: u64,
) -> Result<Vec<FlowAggregate>> {
    c.rows(
        &format!(
            "SELECT {COLS} FROM flow_days WHERE device = $1 AND day BETWEEN $2 AND $3 \
             AND last_seen_ns >= $4 AND first_seen_ns <= $5 \
             ORDER BY direction, peer, proto, port, day"
        ),
        &[
            &device,
            &i64::from(day_of(from_ns)),
            &i64::from(day_of(to_ns)),
            &big(from_ns),
            &big(to_ns),
        ],
    )?
    .iter()
    .map(row)
    .collect()
}

pub(super) fn lifecycle(c: &Db, device: &str) -> Result<Option<(Lifecycle, i64)>> {
    let Some(r) = c.opt(
        "SELECT state, start_ns, window_days, frozen_ns, changed_ms FROM baselines \
         WHERE device = $1",
        &[&device],
    )?
    else {
        return Ok(None);
    };
    let state: String = r.try_get(0)?;
    let state = State::parse(&state).ok_or_else(|| {
        Error::Internal(format!(
            "baselines row of `{device}` has an unknown state `{state}`"
        ))
    })?;
    let window_days: i64 = r.try_get(2)?;
    Ok(Some((
        Lifecycle {
            state,
            start_ns: unsigned(r.try_get(1)?),
            window_days: u32::try_from(window_days).map_err(|_| {
                StoreError::corrupt("baselines", device, format!("window_days {window_days}"))
            })?,
            frozen_ns: r.try_get::<_, Option<i64>>(3)?.map(unsigned),
        },
        r.try_get(4)?,
    )))
}

/// Moves `device`'s baseline by `action` at `now_ns` (relearn clears its flows): see the
/// SQLite store's `learning::set_baseline`.
pub(super) fn set_baseline(
    c: &Db,
    device: &str,
    action: Action,
    now_ns: u64,
) -> Result<(Option<Lifecycle>, Lifecycle, usize)> {
    let before = lifecycle(c, device)?.map(|(l, _)| l);
    let current = match (&before, action) {
        (Some(l), _) => *l,
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
        c.exec("DELETE FROM flow_overflow WHERE device = $1", &[&device])?;
        c.exec("DELETE FROM flow_days WHERE device = $1", &[&device])?
    } else {
        0
    };
    c.exec(
        "INSERT INTO baselines (device, state, start_ns, window_days, frozen_ns, changed_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device) DO UPDATE SET state = $2, \
         start_ns = $3, window_days = $4, frozen_ns = $5, changed_ms = $6",
        &[
            &device,
            &after.state.as_str(),
            &big(after.start_ns),
            &i64::from(after.window_days),
            &after.frozen_ns.map(big),
            &crate::audit::now_ms(),
        ],
    )?;
    Ok((
        before,
        after,
        usize::try_from(cleared).unwrap_or(usize::MAX),
    ))
}
