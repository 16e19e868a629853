//! Connection tracking in an LRU hash. An entry is keyed in the orientation of the packet that
//! opened the flow; a reply finds it with the reversed key. An entry is only trusted while its
//! policy generation is current and it has not idled out; otherwise the slow path re-checks it.

use wardgate_common::{
    CT_CLOSING, CT_CLOSING_TIMEOUT_S, CT_DEFAULT_TIMEOUT_S, CtKey, CtValue, DIR_FROM_DEVICE,
    DeviceInfo, PROTO_TCP, RuleValue,
};

use crate::{
    maps::WG_CT_V1,
    parse::{Packet, TCP_FIN, TCP_RST},
};

/// Result of the conntrack lookup. Kept field-less (keys are rebuilt from the packet when
/// needed): moving enums with payloads produced code the verifier rejects (uninitialized reads).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ct {
    Miss,
    /// Valid forward entry: passes as established.
    Established,
    /// Valid entry in the other orientation: passes as a reply.
    Reply,
    /// Forward entry that must be re-checked (new generation or idle).
    StaleForward,
    /// Reply to an entry that must be re-checked, in the direction of the opening packet.
    StaleReply,
}

#[inline(always)]
fn forward_key(pkt: &Packet) -> CtKey {
    CtKey {
        src: pkt.src,
        dst: pkt.dst,
        sport_be: pkt.sport_be,
        dport_be: pkt.dport_be,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn reverse_key(pkt: &Packet) -> CtKey {
    CtKey {
        src: pkt.dst,
        dst: pkt.src,
        sport_be: pkt.dport_be,
        dport_be: pkt.sport_be,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn fresh(v: &CtValue, generation: u32, now: u64) -> bool {
    v.generation == generation
        && now.saturating_sub(v.last_seen_ns) < u64::from(v.idle_timeout_s) * 1_000_000_000
}

#[inline(always)]
fn touch(v: &mut CtValue, pkt: &Packet, now: u64) {
    v.last_seen_ns = now;
    v.packets += 1;
    if pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        v.flags |= CT_CLOSING;
        if v.idle_timeout_s > CT_CLOSING_TIMEOUT_S {
            v.idle_timeout_s = CT_CLOSING_TIMEOUT_S;
        }
    }
}

/// Looks the packet up; for `StaleReply` also returns the opening packet's direction.
#[inline(always)]
pub fn lookup(pkt: &Packet, dir: u8, generation: u32, now: u64) -> (Ct, u8) {
    // A packet from a device must carry the MAC the flow was opened with.
    let from_device = dir == DIR_FROM_DEVICE;
    let key = forward_key(pkt);
    if let Some(v) = WG_CT_V1.get_ptr_mut(&key) {
        // Safety: map value pointer from a successful lookup, valid for this program run.
        let v = unsafe { &mut *v };
        if fresh(v, generation, now) && (!from_device || v.dev_mac == pkt.src_mac) {
            touch(v, pkt, now);
            return (Ct::Established, dir);
        }
        return (Ct::StaleForward, dir);
    }
    let key = reverse_key(pkt);
    if let Some(v) = WG_CT_V1.get_ptr_mut(&key) {
        // Safety: as above.
        let v = unsafe { &mut *v };
        if fresh(v, generation, now) && (!from_device || v.dev_mac == pkt.src_mac) {
            touch(v, pkt, now);
            return (Ct::Reply, dir);
        }
        return (Ct::StaleReply, v.direction);
    }
    (Ct::Miss, dir)
}

/// Records that the flow passed at `generation`: refreshes a stale entry or creates one.
#[allow(
    clippy::too_many_arguments,
    reason = "all are plain values of the one decision"
)]
#[inline(always)]
pub fn commit(
    ct: Ct,
    pkt: &Packet,
    direction: u8,
    generation: u32,
    now: u64,
    dev: &DeviceInfo,
    rule: Option<&RuleValue>,
    flags: u32,
) {
    // `direction` is the opening packet's: for a stale reply, the entry keeps its orientation.
    let key = if ct == Ct::StaleReply {
        reverse_key(pkt)
    } else {
        forward_key(pkt)
    };
    let timeout = match rule {
        Some(r) if r.idle_timeout_s != 0 => r.idle_timeout_s,
        _ => CT_DEFAULT_TIMEOUT_S,
    };
    let mut value = CtValue {
        last_seen_ns: now,
        packets: 1,
        bytes: 0,
        generation,
        rule_id: rule.map_or(0, |r| r.rule_id),
        device_id: dev.device_id,
        idle_timeout_s: timeout,
        flags,
        direction,
        _pad: 0,
        dev_mac: dev.mac,
        _pad2: [0; 4],
    };
    touch(&mut value, pkt, now);
    let _ = WG_CT_V1.insert(&key, &value, 0);
}

/// Drops a stale entry whose flow the current policy no longer allows.
#[inline(always)]
pub fn forget(ct: Ct, pkt: &Packet) {
    match ct {
        Ct::StaleForward => {
            let _ = WG_CT_V1.remove(&forward_key(pkt));
        }
        Ct::StaleReply => {
            let _ = WG_CT_V1.remove(&reverse_key(pkt));
        }
        _ => {}
    }
}
