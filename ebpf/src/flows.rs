//! Flow-open records for the agent's flow table: one per new conntrack entry (every mode) and
//! one per denied first packet (a denied contact, which scan detection needs). They go to their
//! own ring buffer, never through the events' per-device budget: a learning device's flows are
//! recorded within their device's share of the ring (`budget.rs`: `RECORD_RATE_PER_S`,
//! `RECORD_BURST`; refusals counted for the device), so no device fills it for the others. A
//! record the full ring cannot take is counted (per CPU) in `WG_FLOWLOST_V1`.
//! Counters are not sent: the agent reads them from the conntrack entry the record names.

use wardgate_common::{CtKey, DIR_FROM_DEVICE, FlowOpen};

use crate::{
    maps::{WG_CONFIG_V3, WG_FLOWLOST_V1, WG_FLOWS_V1},
    parse::Packet,
};

/// Whether flow recording is on (agent config `recording.enabled`, default on): flow-open
/// records, payload records, and flow cache counts folded into conntrack.
#[inline(always)]
pub fn recording() -> bool {
    WG_CONFIG_V3.get(0).is_none_or(|c| c.recording_off == 0)
}

/// What the record says beyond the packet and the key. `repr(C)` in this order so no two
/// fields that may both be zero (an unknown host's ids) sit side by side: a zeroed run of 16
/// bytes compiles to a `memset` call BPF does not have.
#[repr(C)]
pub struct Opened<'a> {
    pub now: u64,
    pub key: &'a CtKey,
    pub device_id: u32,
    pub generation: u32,
    pub policy_id: u32,
    pub flags: u32,
    pub rule_id: u32,
    pub direction: u8,
    pub opener_is_a: bool,
    pub dev_mac: [u8; 6],
}

#[inline(always)]
pub fn opened(o: &Opened, pkt: &Packet) {
    if !recording() {
        return;
    }
    // The device's share of the ring (an unknown host's: its source's), so one device cannot
    // fill it; what it refuses is counted for the device.
    let src_hash = if o.device_id == 0 {
        crate::budget::source_hash(if o.direction == DIR_FROM_DEVICE {
            &pkt.src
        } else {
            &pkt.dst
        })
    } else {
        0
    };
    if !crate::budget::record(o.device_id, src_hash, o.now) {
        return;
    }
    let Some(mut entry) = WG_FLOWS_V1.reserve::<FlowOpen>(0) else {
        if let Some(n) = WG_FLOWLOST_V1.get_ptr_mut(0) {
            // Safety: this CPU's slot; nothing else runs on this CPU while we do.
            unsafe { *n += 1 };
        }
        return;
    };
    // Written field by field into the ring's memory: building the record on the stack first
    // would cost 88 bytes of a stack the verifier caps at 512.
    let r = entry.as_mut_ptr();
    // Safety: `r` points to the reserved record, valid until submitted; every field is written.
    unsafe {
        (*r).ts_ns = o.now;
        // Five aligned words (`CtKey` is 8-aligned): a struct assignment here compiles to a
        // `memmove` call.
        let src = core::ptr::from_ref(o.key).cast::<u64>();
        let dst = core::ptr::addr_of_mut!((*r).key).cast::<u64>();
        for i in 0..5 {
            *dst.add(i) = *src.add(i);
        }
        (*r).device_id = o.device_id;
        (*r).policy_id = o.policy_id;
        (*r).rule_id = o.rule_id;
        (*r).generation = o.generation;
        (*r).flags = o.flags;
        (*r).ifindex = pkt.ifindex;
        (*r).direction = o.direction;
        (*r).opener_is_a = u8::from(o.opener_is_a);
        (*r).tcp_flags = pkt.tcp_flags;
        (*r).icmp_type = pkt.icmp_type;
        (*r).ip_len = pkt.ip_len;
        (*r).dev_mac = o.dev_mac;
        (*r)._pad = 0;
    }
    entry.submit(0);
}
