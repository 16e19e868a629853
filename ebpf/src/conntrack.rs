//! Connection tracking in an LRU hash (per-CPU LRU lists). Keys are normalized (smaller endpoint
//! first), so a packet in either direction finds its flow with one lookup; the value remembers
//! which endpoint opened the flow. An entry is one device's view of a flow: the key says which
//! endpoint is the device (the source at ingress, the destination at egress), so a flow between
//! two devices behind one gateway has one entry per device, each admitted by that device's own
//! policy, and an entry opened by a learning device never answers for an enforced one.
//!
//! An entry is only trusted while its policy generation is current, it has not idled out, the
//! packet is on the interface the entry was admitted on, and the device side of the frame
//! carries the device's MAC (source from the device, destination to it); otherwise the slow
//! path re-checks it.

use wardgate_common::{
    APP_PENDING, CT_APP_MONITOR, CT_APP_REFUSED, CT_APP_RULE, CT_CLOSING, CT_CLOSING_TIMEOUT_S,
    CT_DEFAULT_TIMEOUT_S, CtKey, CtValue, DIR_FROM_DEVICE, DeviceInfo, FLOW_DENIED, FLOW_UNTRACKED,
    FlowKey, INSPECT_PACKETS, MODE_ENFORCE, PROTO_TCP, PROTO_UDP, RuleValue,
};

use crate::{
    flowcache,
    flows::{self, Opened},
    maps::{WG_CT_V5, WG_CTSCRATCH},
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    payload,
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
    /// As `Established` / `Reply`, and the entry wants this packet's payload: the program
    /// hands it to `wg_payload` (a tail call) after its verdict.
    EstablishedInspect,
    ReplyInspect,
    /// Entry in the opening direction that must be re-checked (new generation or idle).
    StaleForward,
    /// Reply to an entry that must be re-checked, in the direction of the opening packet.
    StaleReply,
}

/// One direction of a flow as a packet (or the header quoted in an ICMP error) carries it.
pub struct Tuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport_be: [u8; 2],
    pub dport_be: [u8; 2],
    pub proto: u8,
    pub family: u8,
}

/// The normalized key of a flow as seen by the device on the `dev_is_src` side, and whether
/// the tuple's source is endpoint `a`.
#[inline(always)]
pub fn key_of(t: &Tuple, dev_is_src: bool) -> (CtKey, bool) {
    let src = (u128::from_be_bytes(t.src), u16::from_be_bytes(t.sport_be));
    let dst = (u128::from_be_bytes(t.dst), u16::from_be_bytes(t.dport_be));
    let src_is_a = src <= dst;
    let (a, a_port, b, b_port) = if src_is_a {
        (t.src, t.sport_be, t.dst, t.dport_be)
    } else {
        (t.dst, t.dport_be, t.src, t.sport_be)
    };
    let key = CtKey {
        a,
        b,
        a_port_be: a_port,
        b_port_be: b_port,
        proto: t.proto,
        family: t.family,
        dev_is_a: u8::from(dev_is_src == src_is_a),
        _pad: 0,
    };
    (key, src_is_a)
}

/// The key of the packet's flow at hook `dir`.
#[inline(always)]
fn key(pkt: &Packet, dir: u8) -> (CtKey, bool) {
    let t = Tuple {
        src: pkt.src,
        dst: pkt.dst,
        sport_be: pkt.sport_be,
        dport_be: pkt.dport_be,
        proto: pkt.proto,
        family: pkt.family,
    };
    key_of(&t, dir == DIR_FROM_DEVICE)
}

/// Whether the device side of an ICMP error matches a live entry: the quoted header `inner` is
/// a packet of a tracked flow of the device at this hook (its source at egress, its destination
/// at ingress). The entry is not touched: an error is not traffic of the flow.
#[inline(always)]
pub fn related(inner: &Tuple, pkt: &Packet, dir: u8, generation: u32, now: u64) -> bool {
    let from_device = dir == DIR_FROM_DEVICE;
    let (key, _) = key_of(inner, !from_device);
    // Safety: the value is copied out at once.
    let Some(v) = (unsafe { WG_CT_V5.get(&key) }).copied() else {
        return false;
    };
    (fresh(&v, generation, now) || on_grace(&v, now))
        && v.dev_mac == pkt.dev_mac(from_device)
        && v.ifindex == pkt.ifindex
}

/// A flow kept on grace (do-not-disrupt) that has not idled out and whose grace has not ended.
#[inline(always)]
fn on_grace(v: &CtValue, now: u64) -> bool {
    now < v.grace_until_ns && !idle(v, now)
}

#[inline(always)]
fn idle(v: &CtValue, now: u64) -> bool {
    now.saturating_sub(v.last_seen_ns) >= u64::from(v.idle_timeout_s) * 1_000_000_000
}

#[inline(always)]
fn fresh(v: &CtValue, generation: u32, now: u64) -> bool {
    v.generation == generation
        && now.saturating_sub(v.last_seen_ns) < u64::from(v.idle_timeout_s) * 1_000_000_000
}

/// Counts the packet, `forward` if it goes in the opening direction.
#[inline(always)]
fn touch(v: &mut CtValue, pkt: &Packet, now: u64, forward: bool) {
    v.last_seen_ns = now;
    let len = u64::from(pkt.ip_len);
    if forward {
        v.packets_fwd += 1;
        v.bytes_fwd += len;
        v.tcp_flags_fwd |= pkt.tcp_flags;
    } else {
        v.packets_rev += 1;
        v.bytes_rev += len;
        v.tcp_flags_rev |= pkt.tcp_flags;
    }
    closing(v, pkt);
}

/// FIN or RST shortens the entry's idle timeout and, the first time, gives the device's flow
/// budget its place back.
#[inline(always)]
fn closing(v: &mut CtValue, pkt: &Packet) {
    if pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        if v.flags & CT_CLOSING == 0 {
            crate::budget::release(v.device_id);
        }
        v.flags |= CT_CLOSING;
        if v.idle_timeout_s > CT_CLOSING_TIMEOUT_S {
            v.idle_timeout_s = CT_CLOSING_TIMEOUT_S;
        }
    }
}

/// Looks the packet up; also returns the direction of the packet that opened the flow (the
/// packet's own direction when there is no entry). A valid hit fills the flow cache slot `fkey`,
/// unless the entry still wants payload (`payload.rs`): then the packet is handed on for
/// inspection and the flow stays on this path until its budget is spent.
#[inline(always)]
pub fn lookup(pkt: &Packet, fkey: &FlowKey, dir: u8, generation: u32, now: u64) -> (Ct, u8) {
    let (key, src_is_a) = key(pkt, dir);
    let Some(v) = WG_CT_V5.get_ptr_mut(&key) else {
        return (Ct::Miss, dir);
    };
    // Safety: map value pointer from a successful lookup, valid for this program run.
    let v = unsafe { &mut *v };
    let forward = (v.opener_is_a != 0) == src_is_a;
    // The device side of the frame must carry the MAC the flow was opened with, on the
    // interface it was opened on.
    let dev_mac = pkt.dev_mac(dir == DIR_FROM_DEVICE);
    // A SYN reopening the tuple of a flow whose rule checks its application: re-checked (the
    // slow path starts its check afresh), not taken as the checked flow going on.
    let reopens =
        forward && v.flags & CT_APP_RULE != 0 && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if reopens {
        // The old connection's slot on this CPU must not answer the new one's data.
        flowcache::expire(fkey);
    }
    if fresh(v, generation, now) && v.dev_mac == dev_mac && v.ifindex == pkt.ifindex && !reopens {
        touch(v, pkt, now, forward);
        if payload::pending(v) {
            payload::request(pkt, &key, forward, dir);
            return (
                if forward {
                    Ct::EstablishedInspect
                } else {
                    Ct::ReplyInspect
                },
                v.direction,
            );
        } else {
            let (packets, bytes) = flowcache::fill(
                fkey,
                generation,
                now,
                v.idle_timeout_s,
                !forward,
                flows::recording(),
                v.dev_mac,
                pkt.ifindex,
            );
            // The slot served this packet's direction only.
            if forward {
                v.packets_fwd += u64::from(packets);
                v.bytes_fwd += bytes;
            } else {
                v.packets_rev += u64::from(packets);
                v.bytes_rev += bytes;
            }
        }
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
/// `direction` is the opening packet's; for a stale reply the entry keeps its opener. `true`:
/// the packet must be handed to `wg_payload` (a new inspected entry).
#[allow(
    clippy::too_many_arguments,
    reason = "all are plain values of the one decision"
)]
#[inline(always)]
pub fn commit(
    ct: Ct,
    pkt: &Packet,
    hook: u8,
    direction: u8,
    generation: u32,
    now: u64,
    dev: &DeviceInfo,
    rule: Option<&RuleValue>,
    flags: u32,
) -> bool {
    let (key, src_is_a) = key(pkt, hook);
    let opener_is_a = if ct == Ct::StaleReply {
        !src_is_a
    } else {
        src_is_a
    };
    let timeout = match rule {
        Some(r) if r.idle_timeout_s != 0 => r.idle_timeout_s,
        _ => CT_DEFAULT_TIMEOUT_S,
    };
    // The entry starts with this packet counted. Selected, not zero-then-add: constant zero
    // fields next to each other compile to a `memset` call BPF does not have.
    let forward = opener_is_a == src_is_a;
    let len = u64::from(pkt.ip_len);
    let (packets_fwd, bytes_fwd, packets_rev, bytes_rev) = if forward {
        (1, len, 0, 0)
    } else {
        (0, 0, 1, len)
    };
    let (flags_fwd, flags_rev) = if forward {
        (pkt.tcp_flags, 0)
    } else {
        (0, pkt.tcp_flags)
    };
    // Only a new entry is marked; a re-checked one keeps what is left of its budget.
    let inspect = if ct == Ct::Miss && payload::wanted(pkt, rule, flags) {
        INSPECT_PACKETS
    } else {
        0
    };
    // The rule's application check (`wg_payload` decides at the first payload segment), armed
    // whatever the recording switch says: enforcement does not depend on recording. A new
    // entry, or a re-checked one opened again by a SYN (a reused tuple), starts it afresh; any
    // other re-checked entry keeps how its check went (a checked association is not checked
    // again mid-stream, where its first bytes are long gone; a refused one stays refused).
    let app_rule = match rule {
        Some(r) if pkt.proto == PROTO_TCP => r.flags & APP_PENDING,
        _ => 0,
    };
    let app_rule = if app_rule == 0 {
        0
    } else if dev.mode != MODE_ENFORCE {
        app_rule | CT_APP_MONITOR | CT_APP_RULE
    } else {
        app_rule | CT_APP_RULE
    };
    let reopened = ct != Ct::Miss && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let app_fresh = (ct == Ct::Miss || reopened) && app_rule != 0;
    // Built in this CPU's scratch slot, not on the stack (see `WG_CTSCRATCH`).
    let Some(scratch) = WG_CTSCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let value = unsafe { &mut *scratch };
    // Field by field: a struct literal here is built on the stack first and copied.
    value.last_seen_ns = now;
    value.packets_fwd = packets_fwd;
    value.generation = generation;
    value.rule_id = rule.map_or(0, |r| r.rule_id);
    value.bytes_fwd = bytes_fwd;
    value.device_id = dev.device_id;
    value.idle_timeout_s = timeout;
    value.packets_rev = packets_rev;
    value.flags = flags | app_rule;
    value.ifindex = pkt.ifindex;
    value.bytes_rev = bytes_rev;
    value.direction = direction;
    value.opener_is_a = u8::from(opener_is_a);
    value.tcp_flags_fwd = flags_fwd;
    value.tcp_flags_rev = flags_rev;
    crate::copy::mac(&mut value.dev_mac, &dev.mac);
    value.inspect_fwd = inspect;
    value.inspect_rev = inspect;
    value.isn_fwd = 1;
    value.isn_rev = 1;
    value.isn_seen = 0;
    // Allowed (again): an ordinary flow, whatever grace it was on.
    value.grace_until_ns = 0;
    if ct == Ct::Miss {
        flows::opened(
            &Opened {
                now,
                key: &key,
                device_id: dev.device_id,
                generation,
                policy_id: dev.policy_id,
                flags,
                rule_id: value.rule_id,
                direction,
                opener_is_a,
                dev_mac: dev.mac,
            },
            pkt,
        );
    } else if let Some(old) = WG_CT_V5.get_ptr(&key) {
        // A re-checked flow keeps its counts: its record in the agent goes on.
        // Safety: map value pointer from a successful lookup, read at once.
        let old = unsafe { &*old };
        value.packets_fwd += old.packets_fwd;
        value.bytes_fwd += old.bytes_fwd;
        value.packets_rev += old.packets_rev;
        value.bytes_rev += old.bytes_rev;
        value.tcp_flags_fwd |= old.tcp_flags_fwd;
        value.tcp_flags_rev |= old.tcp_flags_rev;
        value.inspect_fwd = old.inspect_fwd;
        value.inspect_rev = old.inspect_rev;
        value.isn_fwd = old.isn_fwd;
        value.isn_rev = old.isn_rev;
        value.isn_seen = old.isn_seen;
        // A closed flow stays closed: its place was given back once.
        value.flags |= old.flags & CT_CLOSING;
        if reopened {
            // A new connection on the tuple: its own handshake, its own check.
            value.isn_seen = 0;
        } else {
            value.flags = (value.flags & !(APP_PENDING | CT_APP_MONITOR))
                | (old.flags & (APP_PENDING | CT_APP_MONITOR | CT_APP_REFUSED | CT_APP_RULE));
        }
    }
    closing(value, pkt);
    let _ = WG_CT_V5.insert(&key, value, 0);
    // A new inspected flow's first packet goes to `wg_payload` too: it takes the SYN's
    // sequence number, without which no payload of the flow is handed over.
    // So does the first packet of a flow with an application check (and of a reopened one),
    // and any packet of a re-checked entry whose check is pending or refused: a new
    // generation must not let one packet of a refused flow through.
    if inspect != 0 || app_fresh || value.flags & (APP_PENDING | CT_APP_REFUSED) != 0 {
        payload::request(pkt, &key, forward, hook);
        return true;
    }
    false
}

/// A first packet the policy (or quarantine) dropped: a denied contact for the agent's flow
/// records. Nothing is tracked.
#[inline(always)]
pub fn denied(pkt: &Packet, hook: u8, generation: u32, now: u64, dev: &DeviceInfo) {
    unentered(pkt, hook, generation, now, dev, FLOW_DENIED);
}

/// A flow that passed untracked (a learning or monitored device over its flow cap): recorded
/// all the same, one in `UNTRACKED_SAMPLE` (all are counted in the device's budget slot).
#[inline(always)]
pub fn untracked(pkt: &Packet, hook: u8, generation: u32, now: u64, dev: &DeviceInfo, flags: u32) {
    if crate::budget::untracked(dev.device_id) {
        unentered(pkt, hook, generation, now, dev, flags | FLOW_UNTRACKED);
    }
}

/// A flow-open record for a first packet that made no entry.
#[inline(always)]
fn unentered(pkt: &Packet, hook: u8, generation: u32, now: u64, dev: &DeviceInfo, flags: u32) {
    let (key, src_is_a) = key(pkt, hook);
    flows::opened(
        &Opened {
            now,
            key: &key,
            device_id: dev.device_id,
            generation,
            policy_id: dev.policy_id,
            flags,
            rule_id: 0,
            direction: hook,
            opener_is_a: src_is_a,
            dev_mac: dev.mac,
        },
        pkt,
    );
}

/// Do-not-disrupt: the active generation denies a re-checked flow of an enforced device.
/// `true` (the packet passes as `PassGrace`, counted on the entry) when the flow was
/// established under an older generation (TCP: both SYNs answered; UDP: an answer came back),
/// the device's profile gives a grace, the flow has not idled out, it is on the interface and
/// MAC it was admitted with, no application check is pending or refused it, and its grace
/// (set here the first time: now + the device's grace) has not ended. The entry keeps the
/// generation it was admitted under, so every later packet comes back here: the flow cache
/// never serves it and the grace ends on time. A SYN reusing the tuple is a new flow.
#[inline(always)]
pub fn grace(ct: Ct, pkt: &Packet, hook: u8, generation: u32, now: u64, dev: &DeviceInfo) -> bool {
    if dev.grace_s == 0
        || !matches!(ct, Ct::StaleForward | Ct::StaleReply)
        || (pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
    {
        return false;
    }
    let (key, src_is_a) = key(pkt, hook);
    let Some(v) = WG_CT_V5.get_ptr_mut(&key) else {
        return false;
    };
    // Safety: map value pointer from a successful lookup, valid for this program run.
    let v = unsafe { &mut *v };
    if v.generation == generation
        || idle(v, now)
        || v.device_id != dev.device_id
        || v.ifindex != pkt.ifindex
        || v.dev_mac != pkt.dev_mac(hook == DIR_FROM_DEVICE)
        || v.flags & (APP_PENDING | CT_APP_REFUSED) != 0
        || !established(v, key.proto)
    {
        return false;
    }
    if v.grace_until_ns == 0 {
        v.grace_until_ns = now + u64::from(dev.grace_s) * 1_000_000_000;
    } else if now >= v.grace_until_ns {
        return false;
    }
    touch(v, pkt, now, (v.opener_is_a != 0) == src_is_a);
    true
}

/// The flow got past its opening: TCP both SYNs and the opener's ACK, UDP an answer.
#[inline(always)]
fn established(v: &CtValue, proto: u8) -> bool {
    const BOTH: u8 = TCP_SYN | TCP_ACK;
    match proto {
        PROTO_TCP => v.tcp_flags_fwd & BOTH == BOTH && v.tcp_flags_rev & BOTH == BOTH,
        PROTO_UDP => v.packets_rev != 0,
        _ => false,
    }
}

/// Drops a stale entry whose flow the current policy no longer allows.
#[inline(always)]
pub fn forget(ct: Ct, pkt: &Packet, hook: u8) {
    if matches!(ct, Ct::StaleForward | Ct::StaleReply) {
        let _ = WG_CT_V5.remove(&key(pkt, hook).0);
    }
}
