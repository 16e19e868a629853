//! Connection tracking in an LRU hash. An entry is keyed in the orientation of the packet that
//! opened the flow; a reply finds it with the reversed key. An entry is only trusted while its
//! policy generation is current and it has not idled out; otherwise the slow path re-checks it.

use wardgate_common::{
    CT_CLOSING, CT_CLOSING_TIMEOUT_S, CT_DEFAULT_TIMEOUT_S, CtKey, CtValue, DIR_FROM_DEVICE,
    DeviceInfo, PROTO_TCP, Reason, RuleValue,
};

use crate::{
    maps::WG_CT_V1,
    parse::{Packet, TCP_FIN, TCP_RST},
};

pub enum Ct {
    /// Valid entry: the packet passes with this reason.
    Hit(Reason),
    Miss,
    /// Forward entry that must be re-checked (new generation or idle).
    StaleForward { key: CtKey },
    /// Reply to an entry that must be re-checked; `direction` is the opening packet's.
    StaleReply { key: CtKey, direction: u8 },
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

#[inline(always)]
pub fn lookup(pkt: &Packet, dir: u8, generation: u32, now: u64) -> Ct {
    // A packet from a device must carry the MAC the flow was opened with.
    let from_device = dir == DIR_FROM_DEVICE;
    let key = forward_key(pkt);
    if let Some(v) = WG_CT_V1.get_ptr_mut(&key) {
        // Safety: map value pointer from a successful lookup, valid for this program run.
        let v = unsafe { &mut *v };
        if fresh(v, generation, now) && (!from_device || v.dev_mac == pkt.src_mac) {
            touch(v, pkt, now);
            return Ct::Hit(Reason::PassEstablished);
        }
        return Ct::StaleForward { key };
    }
    let key = reverse_key(pkt);
    if let Some(v) = WG_CT_V1.get_ptr_mut(&key) {
        // Safety: as above.
        let v = unsafe { &mut *v };
        if fresh(v, generation, now) && (!from_device || v.dev_mac == pkt.src_mac) {
            touch(v, pkt, now);
            return Ct::Hit(Reason::PassReply);
        }
        return Ct::StaleReply { key, direction: v.direction };
    }
    Ct::Miss
}

/// Records that the flow passed at `generation`: refreshes a stale entry or creates one.
#[allow(clippy::too_many_arguments, reason = "all are plain values of the one decision")]
#[inline(always)]
pub fn commit(
    ct: &Ct,
    pkt: &Packet,
    dir: u8,
    generation: u32,
    now: u64,
    dev: &DeviceInfo,
    rule: Option<&RuleValue>,
    flags: u32,
) {
    let (key, direction) = match ct {
        Ct::StaleReply { key, direction } => (*key, *direction),
        Ct::StaleForward { key } => (*key, dir),
        _ => (forward_key(pkt), dir),
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
pub fn forget(ct: &Ct) {
    match ct {
        Ct::StaleForward { key } | Ct::StaleReply { key, .. } => {
            let _ = WG_CT_V1.remove(key);
        }
        _ => {}
    }
}
