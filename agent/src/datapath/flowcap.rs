//! The recount of each device's live conntrack entries (its flow budget, `WG_FLOWCAP_V3`).
//!
//! The datapath counts an entry when it creates it and gives its place back when a flow
//! closes (FIN or RST). Flows that idle out or that the LRU evicts leave no trace there, so the
//! agent recounts now and then in two steps: [`count_live`] walks the pinned conntrack map
//! (up to 262,144 entries: hundreds of ms on a loaded gateway) on a thread of its own, and the
//! map writer applies the counts ([`Datapath::apply_recount`], a few slot writes), so the walk
//! never holds up the writer's loop and its heartbeat. A flow admitted between the walk and
//! the write is missed until the next recount: the count can be a few low for a while, never
//! stuck high.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use wardgate_common::{CT_CLOSING, CtKey, CtValue, FlowCapState, capacity, map_names};

use super::{Datapath, DatapathError, coarse_now_ns, map_err};

/// Slots visited per recount beyond those of devices with entries: the whole array is walked
/// in 16 recounts. Reading all 16,384 slots at once blocked the map-writer loop (and so the
/// heartbeat) for hundreds of ms on a loaded 2-core gateway.
const SWEEP_SLOTS: u32 = 1_024;

/// What the recount carries over: devices it left a non-zero count for, and where the
/// round-robin walk of the array stands.
#[derive(Debug, Default)]
pub struct RecountState {
    counted: HashSet<u32>,
    cursor: u32,
}

/// What one recount did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recount {
    /// Live conntrack entries counted.
    pub live: u64,
    /// Device slots whose count changed.
    pub changed: u64,
}

/// Whether a conntrack entry still holds its device's place at `now`.
pub fn holds_place(v: &CtValue, now_ns: u64) -> bool {
    v.flags & CT_CLOSING == 0
        && now_ns.saturating_sub(v.last_seen_ns) < u64::from(v.idle_timeout_s) * 1_000_000_000
}

/// Live conntrack entries per device at one moment (what [`count_live`] read).
#[derive(Debug, Default, Clone)]
pub struct LiveCounts {
    per_device: HashMap<u32, u32>,
    live: u64,
    now: u64,
    /// Flows on grace (do-not-disrupt) per device.
    pub grace: BTreeMap<u32, u32>,
}

impl LiveCounts {
    /// Flows on grace, all devices.
    pub fn on_grace(&self) -> u64 {
        self.grace.values().map(|n| u64::from(*n)).sum()
    }
}

/// Walks the pinned conntrack map under `pin_root` and counts each device's live entries.
/// Reads only: runs beside the map writer (and the datapath) on any thread.
pub fn count_live(pin_root: &Path) -> Result<LiveCounts, DatapathError> {
    let map = super::pinned::open(pin_root, map_names::CONNTRACK)?;
    let ct: BpfHashMap<MapData, CtKey, CtValue> =
        BpfHashMap::try_from(Map::LruHashMap(map)).map_err(map_err(map_names::CONNTRACK))?;
    count_in(&ct)
}

fn count_in<T: std::borrow::Borrow<MapData>>(
    ct: &BpfHashMap<T, CtKey, CtValue>,
) -> Result<LiveCounts, DatapathError> {
    let now = coarse_now_ns();
    let mut out = LiveCounts {
        now,
        ..LiveCounts::default()
    };
    // Bounded: the kernel restarts a walk whose current key was just deleted, so a walk can
    // see an entry twice; it never runs past twice the map's size.
    let bound = 2 * capacity::CONNTRACK as usize;
    for entry in ct.iter().take(bound) {
        // An entry removed while we walk is simply not counted.
        let Ok((k, v)) = entry else { continue };
        if let Some(g) = super::convert::grace_flow(&k, &v, now) {
            *out.grace.entry(g.device_id).or_default() += 1;
        }
        if holds_place(&v, now) {
            *out.per_device.entry(v.device_id).or_default() += 1;
            out.live += 1;
        }
    }
    Ok(out)
}

/// Every flow on grace (do-not-disrupt) in the pinned conntrack map under `pin_root`, by
/// device and peer. Reads only, as [`count_live`].
pub fn grace_flows(pin_root: &Path) -> Result<Vec<super::convert::GraceFlow>, DatapathError> {
    let map = super::pinned::open(pin_root, map_names::CONNTRACK)?;
    let ct: BpfHashMap<MapData, CtKey, CtValue> =
        BpfHashMap::try_from(Map::LruHashMap(map)).map_err(map_err(map_names::CONNTRACK))?;
    let now = coarse_now_ns();
    let mut out: Vec<_> = ct
        .iter()
        .take(2 * capacity::CONNTRACK as usize)
        .filter_map(Result::ok)
        .filter_map(|(k, v)| super::convert::grace_flow(&k, &v, now))
        .collect();
    out.sort_by_key(|g| (g.device_id, g.peer, g.port, g.device));
    out.dedup();
    Ok(out)
}

impl Datapath {
    /// Sets every device's flow count to its live conntrack entries (walk and apply in one:
    /// tests, and callers that are not the map writer's loop).
    pub fn recount_flows(&mut self) -> Result<Recount, DatapathError> {
        let counts = {
            let ct: BpfHashMap<&mut MapData, CtKey, CtValue> = self.typed(map_names::CONNTRACK)?;
            count_in(&ct)?
        };
        self.apply_recount(&counts)
    }

    /// Sets the device slots to `counts` (from [`count_live`]): only the slots of devices
    /// with entries, of devices the last recount counted, and the next stretch of the array.
    pub fn apply_recount(&mut self, counts: &LiveCounts) -> Result<Recount, DatapathError> {
        let now = counts.now;
        let per_device = &counts.per_device;
        let mut out = Recount {
            live: counts.live,
            changed: 0,
        };
        // The slots of devices with entries, of devices the last recount counted, and the next
        // stretch of the array (a slot whose device has no entry left at all).
        let mut visit: HashSet<u32> = per_device
            .keys()
            .chain(self.recount.counted.iter())
            .map(|id| id & (capacity::FLOW_CAP - 1))
            .collect();
        let start = self.recount.cursor;
        visit.extend((0..SWEEP_SLOTS).map(|i| (start + i) & (capacity::FLOW_CAP - 1)));
        self.recount.cursor = (start + SWEEP_SLOTS) & (capacity::FLOW_CAP - 1);
        let mut counted = HashSet::new();
        let mut caps: Array<&mut MapData, FlowCapState> = self.typed(map_names::FLOW_CAP)?;
        for index in visit {
            let state = caps.get(&index, 0).map_err(map_err(map_names::FLOW_CAP))?;
            if state.device_id == 0 && state.live == 0 {
                continue;
            }
            let live = per_device.get(&state.device_id).copied().unwrap_or(0);
            if live != 0 {
                counted.insert(state.device_id);
            }
            if live == state.live {
                continue;
            }
            let reported = if live < state.live / 2 {
                0
            } else {
                state.reported
            };
            let next = FlowCapState {
                live,
                reported,
                counted_ns: now,
                ..state
            };
            caps.set(index, &next, 0)
                .map_err(map_err(map_names::FLOW_CAP))?;
            out.changed += 1;
        }
        self.recount.counted = counted;
        Ok(out)
    }

    /// Every device's budget slot in use (live flows, untracked flows, refused records).
    pub fn device_budgets(&mut self) -> Result<Vec<FlowCapState>, DatapathError> {
        let caps: Array<&mut MapData, FlowCapState> = self.typed(map_names::FLOW_CAP)?;
        Ok(caps
            .iter()
            .filter_map(Result::ok)
            .filter(|s| s.device_id != 0)
            .collect())
    }

    /// Each device slot's live count, for tests and status: (device id, live).
    pub fn flow_counts(&mut self) -> Result<Vec<(u32, u32)>, DatapathError> {
        let caps: Array<&mut MapData, FlowCapState> = self.typed(map_names::FLOW_CAP)?;
        Ok(caps
            .iter()
            .filter_map(Result::ok)
            .filter(|s| s.device_id != 0 || s.live != 0)
            .map(|s| (s.device_id, s.live))
            .collect())
    }
}
