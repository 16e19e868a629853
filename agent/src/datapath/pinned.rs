//! Read-only views of the pinned maps, for `wardgate-agent status`: nothing is loaded, attached
//! or written, so status can run beside a live agent (or after it was killed) and never touches
//! what the datapath enforces.

use std::{borrow::Borrow, collections::BTreeMap, path::Path};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use wardgate_common::{APP_DENY_KINDS, EVENT_KINDS, Reason, WatchdogState, map_names};

use super::{
    DatapathError,
    convert::{EventKind, LossReason},
    map_err,
};
use crate::paths;

/// What `status` shows, read from the pins under a pin root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub slot: u32,
    pub generation: u32,
    /// Packets per verdict reason, summed over CPUs.
    pub reasons: BTreeMap<Reason, u64>,
    /// Events not delivered, by why and kind (non-zero only).
    pub events_lost: BTreeMap<(LossReason, EventKind), u64>,
    /// Age of the agent's heartbeat in ms (`None`: never beaten).
    pub heartbeat_age_ms: Option<u64>,
    /// The fail-open watchdog as the datapath last saw it.
    pub watchdog: WatchdogState,
    /// Flows the application checks refused, by why (`convert::app_deny_name`), every why.
    pub app_refused: BTreeMap<&'static str, u64>,
}

/// Flows the application checks refused, by why, from `WG_APPDENY_V1` (every why).
pub(super) fn app_refused_counts<T: Borrow<MapData>>(
    map: &PerCpuArray<T, u64>,
) -> Result<BTreeMap<&'static str, u64>, DatapathError> {
    let mut out = BTreeMap::new();
    for why in 0..APP_DENY_KINDS {
        let values = map.get(&why, 0).map_err(map_err(map_names::APP_DENIED))?;
        out.insert(super::convert::app_deny_name(why), values.iter().sum());
    }
    Ok(out)
}

/// A pinned map by name (read-only use: nothing here writes).
pub(crate) fn open(pin_root: &Path, name: &'static str) -> Result<MapData, DatapathError> {
    let path = paths::maps_dir(pin_root).join(name);
    MapData::from_pin(&path).map_err(map_err(name))
}

/// Packets per verdict reason in `WG_STATS_V1`, summed over CPUs (the live datapath and
/// `status` both read them here).
pub(super) fn reason_counts<T: Borrow<MapData>>(
    stats: &PerCpuArray<T, u64>,
) -> Result<BTreeMap<Reason, u64>, DatapathError> {
    let mut reasons = BTreeMap::new();
    for r in Reason::ALL {
        let values = stats
            .get(&(r as u32), 0)
            .map_err(map_err(map_names::STATS))?;
        reasons.insert(r, values.iter().sum());
    }
    Ok(reasons)
}

/// Events not delivered, by why and kind, from `WG_EVLOST_V2` (non-zero only).
pub(super) fn lost_counts<T: Borrow<MapData>>(
    lost: &PerCpuArray<T, u64>,
) -> Result<BTreeMap<(LossReason, EventKind), u64>, DatapathError> {
    let mut events_lost = BTreeMap::new();
    for why in LossReason::ALL {
        for kind in 0..EVENT_KINDS {
            let values = lost
                .get(&why.index(kind), 0)
                .map_err(map_err(map_names::EVENTS_LOST))?;
            let n: u64 = values.iter().sum();
            if n > 0 {
                events_lost.insert((why, EventKind::from_raw(kind)), n);
            }
        }
    }
    Ok(events_lost)
}

/// Reads the active generation and the counters from the pins under `pin_root`.
pub fn status(pin_root: &Path) -> Result<Status, DatapathError> {
    let active: Array<MapData, u32> =
        Array::try_from(Map::Array(open(pin_root, map_names::ACTIVE)?))
            .map_err(map_err(map_names::ACTIVE))?;
    let word = active.get(&0, 0).map_err(map_err(map_names::ACTIVE))?;
    let (slot, generation) = (word & 1, word >> 1);
    let stats: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pin_root, map_names::STATS)?))
            .map_err(map_err(map_names::STATS))?;
    let reasons = reason_counts(&stats)?;
    let lost: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pin_root, map_names::EVENTS_LOST)?))
            .map_err(map_err(map_names::EVENTS_LOST))?;
    let events_lost = lost_counts(&lost)?;
    let heart: Array<MapData, u64> =
        Array::try_from(Map::Array(open(pin_root, map_names::HEARTBEAT)?))
            .map_err(map_err(map_names::HEARTBEAT))?;
    let beat = heart.get(&0, 0).map_err(map_err(map_names::HEARTBEAT))?;
    let heartbeat_age_ms =
        (beat != 0).then(|| super::coarse_now_ns().saturating_sub(beat) / 1_000_000);
    let wdog: Array<MapData, WatchdogState> =
        Array::try_from(Map::Array(open(pin_root, map_names::WATCHDOG)?))
            .map_err(map_err(map_names::WATCHDOG))?;
    let watchdog = wdog.get(&0, 0).map_err(map_err(map_names::WATCHDOG))?;
    let denied: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pin_root, map_names::APP_DENIED)?))
            .map_err(map_err(map_names::APP_DENIED))?;
    let app_refused = app_refused_counts(&denied)?;
    Ok(Status {
        slot,
        generation,
        reasons,
        events_lost,
        heartbeat_age_ms,
        watchdog,
        app_refused,
    })
}
