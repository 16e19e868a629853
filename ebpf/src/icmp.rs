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

/// A neighbour advertisement's target address and the MAC it claims: its target link-layer
/// address option when that is the first option, else the frame's source.
#[inline(always)]
pub fn advert(ctx: &TcContext, pkt: &Packet) -> Option<([u8; 16], [u8; 6])> {
    let l4 = usize::from(pkt.l4_off);
    if pkt.icmp_type != 136 || l4 > MAX_L4_OFF {
        return None;
    }
    let target = ptr_at::<[u8; 16]>(ctx, l4 + 8)?;
    // Safety: bounds checked by ptr_at.
    let target = unsafe { *target };
    let mut mac = pkt.src_mac;
    if let Some(o) = ptr_at::<[u8; 8]>(ctx, l4 + 24) {
        // Safety: bounds checked by ptr_at.
        let o = unsafe { *o };
        // Type 2 (target link-layer address), length 1 (8 bytes).
        if o[0] == 2 && o[1] == 1 {
            mac = [o[2], o[3], o[4], o[5], o[6], o[7]];
        }
    }
    Some((target, mac))
}
