//! Fail-open watchdog. The agent's map-writer loop writes a heartbeat (`WG_HEART_V1`); when it
//! is older than the configured limit the agent is stuck or gone, and enforced devices whose
//! profile fails open (an infusion pump mid-shift) are treated as monitored: their flows pass
//! and would-deny is counted and reported. Fail-closed devices stay enforced and quarantined
//! ones stay cut. Only a policy deny of such a device asks, so allowed flows pay nothing.
//!
//! The datapath records the transitions (counted, reported once each way). Two CPUs seeing a
//! transition at the same moment can both count and report it; nothing else is affected.

use wardgate_common::{EVENT_WATCHDOG, Reason};

use crate::{
    Flow,
    events::Report,
    maps::{WG_CONFIG_V3, WG_HEART_V1, WG_WDOG_V1},
};

/// Whether the heartbeat is stale now; reports a change of state (gateway-wide: no device).
#[inline(always)]
pub fn degraded(f: &Flow) -> bool {
    let now = f.now;
    let limit_ms = WG_CONFIG_V3.get(0).map_or(0, |c| c.heartbeat_limit_ms);
    let beat = WG_HEART_V1.get(0).copied().unwrap_or(0);
    // Off, or no agent has ever beaten (an agent without a watchdog): never degraded.
    if limit_ms == 0 || beat == 0 {
        return false;
    }
    let stale = now.saturating_sub(beat) > u64::from(limit_ms) * 1_000_000;
    let Some(state) = WG_WDOG_V1.get_ptr_mut(0) else {
        return stale;
    };
    // Safety: array slot pointer, valid for this run; concurrent writers only race on the
    // transition counters.
    let state = unsafe { &mut *state };
    if stale != (state.stale != 0) {
        state.stale = u32::from(stale);
        let reason = if stale {
            state.went_stale += 1;
            Reason::PassMonitorWouldDeny
        } else {
            state.recovered += 1;
            Reason::PassPolicy
        };
        Report::new(f.pkt, f.dir, f.generation, now).send(EVENT_WATCHDOG, reason);
    }
    stale
}
