//! Connection tracking in an LRU hash (per-CPU LRU lists). Keys are normalized (smaller endpoint
//! first), so a packet in either direction finds its flow with one lookup; the value remembers
//! which endpoint opened the flow. An entry is only trusted while its policy generation is
//! current and it has not idled out; otherwise the slow path re-checks it.

use wardgate_common::{
    CT_CLOSING, CT_CLOSING_TIMEOUT_S, CT_DEFAULT_TIMEOUT_S, CtKey, CtValue, DIR_FROM_DEVICE,
    DeviceInfo, PROTO_TCP, RuleValue,
};

use crate::{
    flowcache::{self, FlowKey},
    maps::WG_CT_V1,
    parse::{Packet, TCP_FIN, TCP_RST},
};

/// Result of the conntrack lookup. Kept field-less: moving enums with payloads produced code the
/// verifier rejects (uninitialized reads).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ct {
    Miss,
    /// Valid entry, packet in the opening direction: passes as established.
    Established,
    /// Valid entry, packet in the other direction: passes as a reply.
    Reply,
    /// Entry in the opening direction that must be re-checked (new generation or idle).
    StaleForward,
    /// Reply to an entry that must be re-checked, in the direction of the opening packet.
    StaleReply,
}

/// The normalized key of the packet's flow, and whether the packet's source is endpoint `a`.
#[inline(always)]
fn key(pkt: &Packet) -> (CtKey, bool) {
    let src = (
        u128::from_be_bytes(pkt.src),
        u16::from_be_bytes(pkt.sport_be),
    );
    let dst = (
        u128::from_be_bytes(pkt.dst),
        u16::from_be_bytes(pkt.dport_be),
    );
    let src_is_a = src <= dst;
    let (a, a_port, b, b_port) = if src_is_a {
        (pkt.src, pkt.sport_be, pkt.dst, pkt.dport_be)
    } else {
        (pkt.dst, pkt.dport_be, pkt.src, pkt.sport_be)
    };
    let key = CtKey {
        a,
        b,
        a_port_be: a_port,
        b_port_be: b_port,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    (key, src_is_a)
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

/// Looks the packet up; also returns the direction of the packet that opened the flow (the
/// packet's own direction when there is no entry). A valid hit fills the flow cache slot `fkey`.
#[inline(always)]
pub fn lookup(pkt: &Packet, fkey: &FlowKey, dir: u8, generation: u32, now: u64) -> (Ct, u8) {
    let (key, src_is_a) = key(pkt);
    let Some(v) = WG_CT_V1.get_ptr_mut(&key) else {
        return (Ct::Miss, dir);
    };
    // Safety: map value pointer from a successful lookup, valid for this program run.
    let v = unsafe { &mut *v };
    let forward = (v.opener_is_a != 0) == src_is_a;
    // A packet from a device must carry the MAC the flow was opened with.
    let mac_ok = dir != DIR_FROM_DEVICE || v.dev_mac == pkt.src_mac;
    if fresh(v, generation, now) && mac_ok {
        touch(v, pkt, now);
        let answered =
            flowcache::fill(fkey, generation, now, v.idle_timeout_s, !forward, v.dev_mac);
        v.packets += u64::from(answered);
        return (
            if forward { Ct::Established } else { Ct::Reply },
            v.direction,
        );
    }
    if forward {
        (Ct::StaleForward, dir)
    } else {
        (Ct::StaleReply, v.direction)
    }
}

/// Records that the flow passed at `generation`: refreshes a stale entry or creates one.
/// `direction` is the opening packet's; for a stale reply the entry keeps its opener.
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
    let (key, src_is_a) = key(pkt);
    let opener_is_a = if ct == Ct::StaleReply {
        !src_is_a
    } else {
        src_is_a
    };
    let timeout = match rule {
        Some(r) if r.idle_timeout_s != 0 => r.idle_timeout_s,
        _ => CT_DEFAULT_TIMEOUT_S,
    };
    let mut value = CtValue {
        last_seen_ns: now,
        // `touch` below counts this packet.
        packets: 0,
        bytes: 0,
        generation,
        rule_id: rule.map_or(0, |r| r.rule_id),
        device_id: dev.device_id,
        idle_timeout_s: timeout,
        flags,
        direction,
        opener_is_a: u8::from(opener_is_a),
        dev_mac: dev.mac,
        _pad2: [0; 4],
    };
    touch(&mut value, pkt, now);
    let _ = WG_CT_V1.insert(&key, &value, 0);
}

/// Drops a stale entry whose flow the current policy no longer allows.
#[inline(always)]
pub fn forget(ct: Ct, pkt: &Packet) {
    if matches!(ct, Ct::StaleForward | Ct::StaleReply) {
        let _ = WG_CT_V1.remove(&key(pkt).0);
    }
}
