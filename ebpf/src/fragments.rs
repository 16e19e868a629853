//! Fragmented datagrams. A non-first fragment carries no ports, so what its first fragment was
//! allowed to do is remembered, keyed by addresses, protocol and fragment id, for Linux's own
//! reassembly time (30 s): later fragments of an allowed datagram pass, any other fragment gets
//! the slow path (dropped for enforced devices). Never admitted, as in RFC 1858: a fragment
//! that would overlap the first's transport header (ports, TCP flags), one from another MAC than
//! the first, and one that arrives before its first fragment.

use wardgate_common::{DIR_FROM_DEVICE, FragKey, FragValue, PROTO_TCP};

use crate::{maps::WG_FRAG_V1, parse::Packet};

const FRAG_TTL_NS: u64 = 30_000_000_000;

#[inline(always)]
fn key(pkt: &Packet) -> FragKey {
    FragKey {
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.frag_id,
        proto: pkt.proto,
        family: pkt.family,
        _pad: 0,
    }
}

/// The first fragment of a datagram passed: admit the rest of it.
#[inline(always)]
pub fn remember(pkt: &Packet, now: u64) {
    let value = FragValue {
        seen_ns: now,
        src_mac: pkt.src_mac,
        _pad: 0,
    };
    let _ = WG_FRAG_V1.insert(&key(pkt), &value, 0);
}

/// A non-first fragment of a datagram whose first fragment passed at this hook.
#[inline(always)]
pub fn admitted(pkt: &Packet, dir: u8, now: u64) -> bool {
    let transport_header = if pkt.proto == PROTO_TCP { 20 } else { 8 };
    if pkt.frag_offset < transport_header {
        return false;
    }
    // Safety: the value is copied out at once.
    let Some(first) = (unsafe { WG_FRAG_V1.get(&key(pkt)) }).copied() else {
        return false;
    };
    now.saturating_sub(first.seen_ns) < FRAG_TTL_NS
        && (dir != DIR_FROM_DEVICE || first.src_mac == pkt.src_mac)
}
