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

use aya_ebpf::{macros::map, maps::PerCpuArray};
use wardgate_common::{DIR_FROM_DEVICE, PROTO_TCP};

use crate::parse::{Packet, TCP_FIN, TCP_RST, TCP_SYN};

/// Slots per CPU (a power of two): 16,384 x 88 bytes = 1.4 MiB per CPU.
const SLOTS: u32 = 16_384;

/// How long a slot may answer before one packet refreshes the conntrack entry.
const SYNC_NS: u64 = 1_000_000_000;

/// The packet's own tuple (not normalized: a slot serves one direction at one hook), as five
/// aligned words, so comparing and hashing it takes five word operations each. Named fields,
/// not an array: an array compare compiles to a byte-wise `bcmp` call in BPF.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    src_hi: u64,
    src_lo: u64,
    dst_hi: u64,
    dst_lo: u64,
    /// ports (as on the wire) | proto << 32 | family << 40 | hook direction << 48.
    meta: u64,
}

/// A slot, laid out so a hit reads whole aligned words: one compare each for the deadline, the
/// scope (generation and interface) and the device's MAC, and one branch-free add for the
/// counts (measured: the per-field form, with the MAC read byte by byte, an idle and a sync
/// check and a branch on the recording switch, cost about 40 more BPF instructions a packet).
#[repr(C)]
pub struct FlowSlot {
    key: FlowKey,
    /// The slot answers while `now` is below this: the fill time plus the sync interval or the
    /// entry's idle timeout, whichever is shorter (a hit never moves it, so a slot that answers
    /// every packet still falls through to conntrack once per `SYNC_NS`). 0 in a zeroed slot,
    /// which so never matches.
    deadline_ns: u64,
    /// The policy generation | the interface the flow was admitted on << 32 (`scope`).
    scope: u64,
    /// The MAC of the device side of the frame, as a 48-bit word (`mac_word`).
    dev_mac: u64,
    /// What the slot answered since the last sync: packets << `PACKETS_SHIFT` | IP-layer bytes;
    /// added to the conntrack entry at the next one.
    pending: u64,
    /// All ones when flow recording was on at the fill (count what the slot answers), else 0.
    count_mask: u64,
    /// 1 if the packet is a reply (`PassReply`), 0 in the opening direction.
    reply: u32,
    _pad: u32,
}

/// `pending`: bytes in the low 36 bits (64 GiB between syncs), packets above (2^28).
const PACKETS_SHIFT: u32 = 36;
const BYTES_MASK: u64 = (1 << PACKETS_SHIFT) - 1;

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

#[map(name = "WG_FLOWCACHE_V1")]
static WG_FLOWCACHE_V1: PerCpuArray<FlowSlot> = PerCpuArray::with_max_entries(SLOTS, 0);

#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

#[inline(always)]
pub fn key(pkt: &Packet, hook: u8) -> FlowKey {
    let (src_hi, src_lo) = halves(&pkt.src);
    let (dst_hi, dst_lo) = halves(&pkt.dst);
    let ports = u32::from_ne_bytes([
        pkt.sport_be[0],
        pkt.sport_be[1],
        pkt.dport_be[0],
        pkt.dport_be[1],
    ]);
    FlowKey {
        src_hi,
        src_lo,
        dst_hi,
        dst_lo,
        meta: u64::from(ports)
            | u64::from(pkt.proto) << 32
            | u64::from(pkt.family) << 40
            | u64::from(hook) << 48,
    }
}

/// Multiply-xorshift over the key's words: cheap, and spreads tuples that differ in one port.
#[inline(always)]
fn index(k: &FlowKey) -> u32 {
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (k.src_hi ^ 0xcbf2_9ce4_8422_2325).wrapping_mul(M);
    h = (h ^ k.src_lo).wrapping_mul(M);
    h = (h ^ k.dst_hi).wrapping_mul(M);
    h = (h ^ k.dst_lo).wrapping_mul(M);
    h = (h ^ k.meta).wrapping_mul(M);
    (h >> 32) as u32 & (SLOTS - 1)
}

/// Packets that must always see conntrack: TCP handshakes and closes.
#[inline(always)]
pub fn bypass(pkt: &Packet) -> bool {
    pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0
}

/// A hit answers `Some(is_reply)`; a miss (or a slot due for a conntrack refresh) is `None`.
#[inline(always)]
pub fn lookup(key: &FlowKey, pkt: &Packet, hook: u8, generation: u32, now: u64) -> Option<bool> {
    let slot = WG_FLOWCACHE_V1.get_ptr_mut(index(key))?;
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let slot = unsafe { &mut *slot };
    if now >= slot.deadline_ns
        || slot.key != *key
        || slot.scope != scope(generation, pkt.ifindex)
        || slot.dev_mac != mac_word(pkt.dev_mac(hook == DIR_FROM_DEVICE))
    {
        return None;
    }
    // Recording off: the mask is 0 and nothing is folded into conntrack (the switch reaches a
    // slot at its next sync, within `SYNC_NS`).
    slot.pending += (1 << PACKETS_SHIFT | u64::from(pkt.ip_len)) & slot.count_mask;
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
    let Some(slot) = WG_FLOWCACHE_V1.get_ptr_mut(index(key)) else {
        return (0, 0);
    };
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let slot = unsafe { &mut *slot };
    // A zeroed slot has nothing pending, whatever its key.
    let pending = if slot.key == *key { slot.pending } else { 0 };
    let idle_ns = u64::from(idle_timeout_s) * 1_000_000_000;
    slot.key = *key;
    slot.deadline_ns = now + if idle_ns < SYNC_NS { idle_ns } else { SYNC_NS };
    slot.scope = scope(generation, ifindex);
    slot.dev_mac = mac_word(dev_mac);
    slot.pending = 0;
    slot.count_mask = if record { u64::MAX } else { 0 };
    slot.reply = u32::from(reply);
    slot._pad = 0;
    ((pending >> PACKETS_SHIFT) as u32, pending & BYTES_MASK)
}

/// Makes this CPU's slot of `key` answer no more (a SYN reopened its tuple for a flow whose
/// rule checks its application: its data must see conntrack). What it answered stays pending
/// for the next fill of the same key.
#[inline(always)]
pub fn expire(key: &FlowKey) {
    let Some(slot) = WG_FLOWCACHE_V1.get_ptr_mut(index(key)) else {
        return;
    };
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let slot = unsafe { &mut *slot };
    if slot.key == *key {
        slot.deadline_ns = 0;
    }
}
