//! ICMP the datapath must understand: errors about tracked flows (so path-MTU discovery works
//! for large transfers), and IPv6's link-local control plane (neighbour and router discovery,
//! multicast listener discovery), which passes only when it is what it claims to be.

use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use wardgate_common::{FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::{
    conntrack::Tuple,
    parse::{Packet, ptr_at},
};
use aya_ebpf::programs::TcContext;

/// Largest transport offset at which an ICMP error's quote is read (keeps offsets bounded for
/// the verifier; real errors sit far below it).
const MAX_L4_OFF: usize = 256;

/// IPv4 destination unreachable (3, incl. fragmentation needed), time exceeded (11), parameter
/// problem (12); ICMPv6 destination unreachable (1), packet too big (2), time exceeded (3),
/// parameter problem (4).
#[inline(always)]
pub fn is_error(pkt: &Packet) -> bool {
    (pkt.family == FAMILY_V4 && pkt.proto == PROTO_ICMP && matches!(pkt.icmp_type, 3 | 11 | 12))
        || (pkt.family == FAMILY_V6 && pkt.proto == PROTO_ICMPV6 && matches!(pkt.icmp_type, 1..=4))
}

/// The header an ICMP error quotes, when it is whole and consistent with the error itself:
/// an error goes back to the sender of the quoted packet, so the quote's source must be the
/// error's destination. Quoted IPv6 extension headers are not followed (no match, so the error
/// is judged like any packet).
#[inline(always)]
pub fn quoted(ctx: &TcContext, pkt: &Packet) -> Option<Tuple> {
    let l4 = usize::from(pkt.l4_off);
    if l4 > MAX_L4_OFF {
        return None;
    }
    let inner_off = l4 + 8;
    let mut t = Tuple {
        src: pkt.dst,
        dst: pkt.src,
        sport_be: [0; 2],
        dport_be: [0; 2],
        proto: 0,
        family: pkt.family,
    };
    let ports_off = if pkt.family == FAMILY_V4 {
        let ip = ptr_at::<Ipv4Hdr>(ctx, inner_off)?;
        // Safety: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        let ihl = usize::from(ip.vihl & 0x0f) * 4;
        let frags = u16::from_be_bytes(ip.frags);
        if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || frags & 0x1fff != 0 {
            return None;
        }
        t.proto = ip.proto;
        t.src = crate::claims::v4_addr(ip.src_addr);
        t.dst = crate::claims::v4_addr(ip.dst_addr);
        inner_off + ihl
    } else {
        let ip = ptr_at::<Ipv6Hdr>(ctx, inner_off)?;
        // Safety: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        if ip.vcf[0] >> 4 != 6 {
            return None;
        }
        t.proto = ip.next_hdr;
        t.src = ip.src_addr;
        t.dst = ip.dst_addr;
        inner_off + Ipv6Hdr::LEN
    };
    // As words: an array compare compiles to a `bcmp` call in BPF.
    if u128::from_ne_bytes(t.src) != u128::from_ne_bytes(pkt.dst) {
        return None;
    }
    if t.proto == PROTO_TCP || t.proto == PROTO_UDP {
        // RFC 792 quotes at least the first 8 bytes of the datagram: the ports are there.
        let ports = ptr_at::<[u8; 4]>(ctx, ports_off)?;
        // Safety: bounds checked by ptr_at.
        let ports = unsafe { *ports };
        t.sport_be = [ports[0], ports[1]];
        t.dport_be = [ports[2], ports[3]];
    }
    Some(t)
}

/// fe80::/10
#[inline(always)]
pub fn v6_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// ::
#[inline(always)]
pub fn v6_unspecified(a: &[u8; 16]) -> bool {
    u128::from_ne_bytes(*a) == 0
}

/// Both addresses in one /64 (on-link for a SLAAC or static prefix).
#[inline(always)]
pub fn same_64(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let a = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let b = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    a == b
}

/// ff02::/16, link-local scope multicast.
#[inline(always)]
pub fn v6_link_multicast(a: &[u8; 16]) -> bool {
    a[0] == 0xff && a[1] & 0x0f == 0x02
}

/// What kind of IPv6 control-plane message the packet is, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Not neighbour discovery or MLD: judged like any packet.
    None,
    /// Neighbour/router discovery (133-137) with hop limit 255 (RFC 4861: never forwarded),
    /// and from a device only to a link-local or link-scope multicast destination or an
    /// on-link one (same /64 as the source: unicast NUD to a static global next hop).
    Neighbour,
    /// Multicast listener discovery (130-132, 143): hop limit 1 from a link-local or the
    /// unspecified source (RFC 2710, 3810).
    Listener,
}

#[inline(always)]
pub fn control(pkt: &Packet, from_device: bool) -> Control {
    if pkt.family != FAMILY_V6 || pkt.proto != PROTO_ICMPV6 {
        return Control::None;
    }
    match pkt.icmp_type {
        133..=137 => {
            let scoped = !from_device
                || v6_link_local(&pkt.dst)
                || v6_link_multicast(&pkt.dst)
                || same_64(&pkt.src, &pkt.dst);
            if pkt.hop_limit == 255 && scoped {
                Control::Neighbour
            } else {
                Control::None
            }
        }
        130..=132 | 143 => {
            if pkt.hop_limit == 1 && (v6_link_local(&pkt.src) || v6_unspecified(&pkt.src)) {
                Control::Listener
            } else {
                Control::None
            }
        }
        _ => Control::None,
    }
}

/// A neighbour advertisement's target address (the address it claims for its sender).
#[inline(always)]
pub fn advert_target(ctx: &TcContext, pkt: &Packet) -> Option<[u8; 16]> {
    let l4 = usize::from(pkt.l4_off);
    if pkt.icmp_type != 136 || l4 > MAX_L4_OFF {
        return None;
    }
    let target = ptr_at::<[u8; 16]>(ctx, l4 + 8)?;
    // Safety: bounds checked by ptr_at.
    Some(unsafe { *target })
}

/// Options read in one neighbour discovery message; a message with more is refused. Real ones
/// carry one or two (a router advertisement a handful: devices send none).
const MAX_ND_OPTIONS: usize = 8;

/// Largest frame offset an option is read at (bounds offsets for the verifier).
const MAX_ND_END: usize = 1024;

/// What a neighbour discovery message's link-layer address options say.
pub enum LinkLayer {
    /// Every source/target link-layer option (if any) names the frame's source MAC.
    Own,
    /// An option names another MAC: the message claims an address for someone else.
    Other,
    /// Options that do not parse (length 0, overrunning the message, a link-layer option that
    /// is not one Ethernet address, too many): the message is dropped, never passed unchecked.
    Malformed,
}

/// Every option of an NS, NA, RS, RA or redirect, checked: a stack may take the first
/// link-layer option (Linux) or the last, so all of them must name the sender.
#[inline(always)]
pub fn link_layer(ctx: &TcContext, pkt: &Packet) -> LinkLayer {
    let l4 = usize::from(pkt.l4_off);
    let l3 = usize::from(pkt.l3_off);
    let first = match pkt.icmp_type {
        133 => 8,
        134 => 16,
        135 | 136 => 24,
        137 => 40,
        _ => return LinkLayer::Own,
    };
    if l4 > MAX_L4_OFF || l3 > 32 {
        return LinkLayer::Malformed;
    }
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
        return LinkLayer::Malformed;
    };
    // Safety: bounds checked by ptr_at.
    let end = l3 + Ipv6Hdr::LEN + usize::from(u16::from_be_bytes(unsafe { (*ip).payload_len }));
    if end > MAX_ND_END || l4 + first > end {
        return LinkLayer::Malformed;
    }
    // Options past the linear area (a large advertisement) are pulled in to be read.
    if ctx.data() + end > ctx.data_end() {
        let _ = ctx.pull_data(end as u32);
    }
    let mut off = l4 + first;
    for _ in 0..MAX_ND_OPTIONS {
        if off >= end {
            return LinkLayer::Own;
        }
        if off > MAX_ND_END {
            return LinkLayer::Malformed;
        }
        let Some(o) = ptr_at::<[u8; 8]>(ctx, off) else {
            return LinkLayer::Malformed;
        };
        // Safety: bounds checked by ptr_at.
        let o = unsafe { *o };
        if o[1] == 0 {
            return LinkLayer::Malformed;
        }
        // Type 1 (source) and 2 (target link-layer address): on Ethernet one 8-byte unit.
        if o[0] == 1 || o[0] == 2 {
            if o[1] != 1 {
                return LinkLayer::Malformed;
            }
            let s = pkt.src_mac;
            if o[2] != s[0]
                || o[3] != s[1]
                || o[4] != s[2]
                || o[5] != s[3]
                || o[6] != s[4]
                || o[7] != s[5]
            {
                return LinkLayer::Other;
            }
        }
        off += usize::from(o[1]) * 8;
        if off > end {
            return LinkLayer::Malformed;
        }
    }
    if off >= end {
        LinkLayer::Own
    } else {
        LinkLayer::Malformed
    }
}
