//! The established-flow cache: a per-CPU, direct-mapped exact-match cache in front of the
//! conntrack LRU (the idea of Open vSwitch's exact-match cache). A kernel hash-map lookup costs
//! about as much as the whole rest of an established packet (measured: ~40 ns of ~48 ns over
//! the trivial program); an array slot indexed by a hash computed here costs a few ns.
//!
//! Conntrack stays the authority. A slot is filled only from a valid conntrack hit and only
//! answers while everything conntrack would check still holds: same tuple and hook, same
//! interface, same policy generation, not idle past the entry's timeout, and the device's MAC on
//! the device side of the frame (source from the device, destination to it).
//! Anything else is a miss and takes the conntrack path, so a wrong or stale slot can cost time
//! but never change a verdict. TCP packets with SYN, FIN or RST always take the conntrack path
//! (handshakes open entries, FIN/RST shorten them). Every `SYNC_NS` a hit falls through to
//! conntrack once, which refreshes the entry's idle time and adds the packets and bytes the slot
//! answered to the entry's counters; so an entry that only this cache has seen never looks idle
//! to the other direction's CPU, and flow records count every packet (a second late at most).
//!
//! Per CPU, so slots need no locks; both directions of a flow may be cached on different CPUs.
//! Not pinned: a reloaded program starts with an empty cache and refills it from conntrack.
//! The agent reads the slots of a flow it finishes (idle, gone or at its stop) and adds what
//! they hold unsynced to the flow's record, so the last second of a burst is not lost.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use wardgate_common::{
    DIR_FROM_DEVICE, FLOW_CACHE_SLOTS, FlowKey, FlowSlot, PENDING_PACKETS_SHIFT, PROTO_TCP,
};

use crate::parse::{Packet, TCP_FIN, TCP_RST, TCP_SYN};

/// How long a slot may answer before one packet refreshes the conntrack entry.
const SYNC_NS: u64 = 1_000_000_000;

/// The generation and interface a slot answers for, as one word.
#[inline(always)]
fn scope(generation: u32, ifindex: u32) -> u64 {
    u64::from(generation) | u64::from(ifindex) << 32
}

/// A MAC as one word (the parser's bytes already sit in registers: this is shifts, not loads).
#[inline(always)]
fn mac_word(m: [u8; 6]) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

/// Slots and key in `wardgate_common` (`FlowSlot`, `FlowKey`): the agent reads a finishing
/// flow's slots too.
#[map(name = "WG_FLOWCACHE_V1")]
static WG_FLOWCACHE_V1: PerCpuArray<FlowSlot> = PerCpuArray::with_max_entries(FLOW_CACHE_SLOTS, 0);

#[inline(always)]
pub fn key(pkt: &Packet, hook: u8) -> FlowKey {
    FlowKey::new(
        &pkt.src,
        &pkt.dst,
        pkt.sport_be,
        pkt.dport_be,
        pkt.proto,
        pkt.family,
        hook,
    )
}

/// Packets that must always see conntrack: TCP handshakes and closes.
#[inline(always)]
pub fn bypass(pkt: &Packet) -> bool {
    pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0
}

/// A hit answers `Some(is_reply)`; a miss (or a slot due for a conntrack refresh) is `None`.
#[inline(always)]
pub fn lookup(key: &FlowKey, pkt: &Packet, hook: u8, generation: u32, now: u64) -> Option<bool> {
    hit(
        key,
        mac_word(pkt.dev_mac(hook == DIR_FROM_DEVICE)),
        pkt.ifindex,
        pkt.ip_len,
        generation,
        now,
    )
}

/// `lookup` of a packet given by its parts (`fast.rs` reads them from the headers): the key,
/// the device side's MAC as a word, the interface and the IP-layer bytes.
#[inline(always)]
pub fn hit(
    key: &FlowKey,
    dev_mac: u64,
    ifindex: u32,
    ip_len: u32,
    generation: u32,
    now: u64,
) -> Option<bool> {
    let slot = WG_FLOWCACHE_V1.get_ptr_mut(key.index())?;
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let slot = unsafe { &mut *slot };
    if now >= slot.deadline_ns
        || slot.key != *key
        || slot.scope != scope(generation, ifindex)
        || slot.dev_mac != dev_mac
    {
        return None;
    }
    // Recording off: the mask is 0 and nothing is folded into conntrack (the switch reaches a
    // slot at its next sync, within `SYNC_NS`).
    slot.pending += (1 << PENDING_PACKETS_SHIFT | u64::from(ip_len)) & slot.count_mask;
    Some(slot.reply != 0)
}

/// Fills (or refreshes) the packet's slot after a valid conntrack hit. Returns the packets and
/// bytes the slot answered for this same flow since its last sync, for the entry's counters.
#[allow(
    clippy::too_many_arguments,
    reason = "all are plain values of the one slot"
)]
#[inline(always)]
pub fn fill(
    key: &FlowKey,
    generation: u32,
    now: u64,
    idle_timeout_s: u32,
    reply: bool,
    record: bool,
    dev_mac: [u8; 6],
    ifindex: u32,
) -> (u32, u64) {
    let Some(slot) = WG_FLOWCACHE_V1.get_ptr_mut(key.index()) else {
        return (0, 0);
    };
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let slot = unsafe { &mut *slot };
    // A zeroed slot has nothing pending, whatever its key.
    let (packets, bytes) = if slot.key == *key {
        slot.pending_counts()
    } else {
        (0, 0)
    };
    let idle_ns = u64::from(idle_timeout_s) * 1_000_000_000;
    slot.key = *key;
    slot.deadline_ns = now + if idle_ns < SYNC_NS { idle_ns } else { SYNC_NS };
    slot.scope = scope(generation, ifindex);
    slot.dev_mac = mac_word(dev_mac);
    slot.pending = 0;
    slot.count_mask = if record { u64::MAX } else { 0 };
    slot.reply = u32::from(reply);
    slot._pad = 0;
    (packets as u32, bytes)
}

/// Makes this CPU's slot of `key` answer no more (a SYN reopened its tuple for a flow whose
/// rule checks its application: its data must see conntrack). What it answered stays pending
/// for the next fill of the same key.
#[inline(always)]
pub fn expire(key: &FlowKey) {
    let Some(slot) = WG_FLOWCACHE_V1.get_ptr_mut(key.index()) else {
        return;
    };
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let slot = unsafe { &mut *slot };
    if slot.key == *key {
        slot.deadline_ns = 0;
    }
}
