//! Per-device budgets (`WG_FLOWCAP_V3`, one `FlowCapState` per device id): the live flows a
//! device holds, and what it may put on the rings shared by every device (flow-open records,
//! payload records), so no one device can fill the conntrack table or a ring and blind the
//! gateway. Unknown hosts (device id 0) get a record budget per source (`WG_SRCBUDGET_V1`).
//! Races between CPUs can only let one flow or record more or less through, never corrupt
//! memory; the agent's recount corrects the live count.

use wardgate_common::{
    CT_DEFAULT_MAX_FLOWS, DeviceInfo, FlowCapState, PAYLOAD_DEVICE_BURST,
    PAYLOAD_DEVICE_RATE_PER_S, RECORD_BURST, RECORD_RATE_PER_S, capacity,
};

use crate::maps::{WG_FLOWCAP_V3, WG_SRCBUDGET_V1};

const NS_PER_S: u64 = 1_000_000_000;

/// The device's slot, taken over (and started afresh) if it held another id.
#[inline(always)]
fn slot(device_id: u32) -> Option<&'static mut FlowCapState> {
    let state = WG_FLOWCAP_V3.get_ptr_mut(device_id & (capacity::FLOW_CAP - 1))?;
    // Safety: array slot pointer, valid for this run (see the module comment on races).
    let state = unsafe { &mut *state };
    if state.device_id != device_id {
        // Volatile, field by field: plain zero stores of neighbouring fields are merged into a
        // `memset` call, a byte loop in BPF.
        // Safety: fields of a valid map value.
        unsafe {
            core::ptr::write_volatile(&mut state.live, 0);
            core::ptr::write_volatile(&mut state.reported, 0);
            core::ptr::write_volatile(&mut state.untracked, 0);
            core::ptr::write_volatile(&mut state.counted_ns, 0);
            core::ptr::write_volatile(&mut state.rec_tokens, 0);
            core::ptr::write_volatile(&mut state.rec_last_ns, 0);
            core::ptr::write_volatile(&mut state.pay_tokens, 0);
            core::ptr::write_volatile(&mut state.pay_last_ns, 0);
            core::ptr::write_volatile(&mut state.rec_lost, 0);
            core::ptr::write_volatile(&mut state.pay_lost, 0);
        }
        state.device_id = device_id;
    }
    Some(state)
}

/// A token bucket of `rate` per second and `burst` at once; tokens scaled by 1e9. A bucket
/// never used (`last_ns` 0) starts full.
#[inline(always)]
pub fn take(tokens: &mut u64, last_ns: &mut u64, now: u64, rate: u64, burst: u64) -> bool {
    let cap = burst * NS_PER_S;
    let have = if *last_ns == 0 {
        cap
    } else {
        let elapsed = now.saturating_sub(*last_ns).min(cap);
        (*tokens + elapsed * rate).min(cap)
    };
    *last_ns = now;
    if have < NS_PER_S {
        *tokens = have;
        return false;
    }
    *tokens = have - NS_PER_S;
    true
}

/// [`take`], counting a refusal in `lost`.
#[inline(always)]
fn take_counted(
    tokens: &mut u64,
    last_ns: &mut u64,
    lost: &mut u32,
    now: u64,
    rate: u64,
    burst: u64,
) -> bool {
    let ok = take(tokens, last_ns, now, rate, burst);
    if !ok {
        *lost = lost.wrapping_add(1);
    }
    ok
}

/// Whether a new flow fits the device's budget.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Track it.
    Admit,
    /// Over the cap; `true` the first time since the device was last below half (report it).
    Over(bool),
}

/// A new conntrack entry takes one of the device's `max_flows` places.
#[inline(always)]
pub fn admit(dev: &DeviceInfo) -> Budget {
    let max = if dev.max_flows == 0 {
        CT_DEFAULT_MAX_FLOWS
    } else {
        dev.max_flows
    };
    let Some(state) = slot(dev.device_id) else {
        return Budget::Admit;
    };
    if state.live >= max {
        let first = state.reported == 0;
        state.reported = 1;
        return Budget::Over(first);
    }
    state.live += 1;
    if state.live < max / 2 {
        state.reported = 0;
    }
    Budget::Admit
}

/// A flow of `device_id` closed: its place is free again.
#[inline(always)]
pub fn release(device_id: u32) {
    let Some(state) = WG_FLOWCAP_V3.get_ptr_mut(device_id & (capacity::FLOW_CAP - 1)) else {
        return;
    };
    // Safety: as in `slot`.
    let state = unsafe { &mut *state };
    if state.device_id == device_id && state.live > 0 {
        state.live -= 1;
    }
}

/// A flow over the cap passed untracked: counted; `true` when it is one to record (the first
/// of every `UNTRACKED_SAMPLE`).
#[inline(always)]
pub fn untracked(device_id: u32) -> bool {
    let Some(state) = slot(device_id) else {
        return false;
    };
    let n = state.untracked;
    state.untracked = n.wrapping_add(1);
    n % wardgate_common::UNTRACKED_SAMPLE == 0
}

/// Whether the device (or, for an unknown host, its source `src_hash`) may send one more
/// flow-open record; a refusal is counted for the device.
#[inline(always)]
pub fn record(device_id: u32, src_hash: u32, now: u64) -> bool {
    if device_id == 0 {
        let Some(b) = WG_SRCBUDGET_V1.get_ptr_mut(src_hash & (capacity::UNKNOWN_SOURCES - 1))
        else {
            return true;
        };
        // Safety: array slot pointer, valid for this run.
        let b = unsafe { &mut *b };
        return take(
            &mut b.tokens,
            &mut b.last_ns,
            now,
            RECORD_RATE_PER_S,
            RECORD_BURST,
        );
    }
    let Some(state) = slot(device_id) else {
        return true;
    };
    take_counted(
        &mut state.rec_tokens,
        &mut state.rec_last_ns,
        &mut state.rec_lost,
        now,
        RECORD_RATE_PER_S,
        RECORD_BURST,
    )
}

/// Whether the device may send one more payload record; a refusal is counted for the device.
#[inline(always)]
pub fn payload(device_id: u32, now: u64) -> bool {
    let Some(state) = slot(device_id) else {
        return true;
    };
    take_counted(
        &mut state.pay_tokens,
        &mut state.pay_last_ns,
        &mut state.pay_lost,
        now,
        PAYLOAD_DEVICE_RATE_PER_S,
        PAYLOAD_DEVICE_BURST,
    )
}

/// A cheap hash of an address (the unknown host's budget slot, its events' rate key).
#[inline(always)]
pub fn source_hash(a: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let x = w(0) ^ w(4) ^ w(8) ^ w(12);
    x.wrapping_mul(0x9e37_79b1) >> 16
}
