//! Packet parsing: one bounds-checked accessor, headers from `network-types`, and a `Packet`
//! summary that the rest of the datapath works on. A header that does not fit is `Malformed`.

use core::mem::MaybeUninit;

use aya_ebpf::{EbpfContext as _, bindings::__sk_buff, programs::TcContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};
use wardgate_common::{
    ACTION_DROP, FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use crate::maps::WG_CONFIG_V3;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// VLAN tags read in the frame (802.1ad outer + 802.1Q inner); a third is refused.
const MAX_TAGS: usize = 2;

/// Bytes of headers we may read (Ethernet, two tags, IPv6 with extension headers, an ICMP
/// error's header and the inner IPv6 and transport headers it quotes); pulled into the linear
/// area once if the skb is non-linear.
const HEADROOM: u32 = 14 + 8 + 40 + 4 * 8 + 8 + 40 + 8;

/// The parsed packet. Addresses first and the struct 8-aligned, so the flow cache and
/// conntrack read them as aligned 64-bit words (unaligned, LLVM splits each into byte loads).
#[repr(C, align(8))]
pub struct Packet {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Offset of the transport header in the frame.
    pub l4_off: u16,
    /// Byte offset of a non-first fragment in its datagram.
    pub frag_offset: u16,
    /// IPv4 identification or IPv6 fragment identification (0 when not fragmented).
    pub frag_id: u32,
    /// The interface the packet is on (the hooked one).
    pub ifindex: u32,
    pub sport_be: [u8; 2],
    pub dport_be: [u8; 2],
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub family: u8,
    pub proto: u8,
    /// TCP flags byte (FIN = 0x01, SYN = 0x02, RST = 0x04), 0 for other protocols.
    pub tcp_flags: u8,
    /// Non-first fragment: no transport header, ports unknown.
    pub fragment: bool,
    /// More fragments follow (with `fragment` false: the first fragment of a datagram).
    pub more_fragments: bool,
    /// ICMP/ICMPv6 type (0 for other protocols).
    pub icmp_type: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// Offset of the IP header in the frame (Ethernet and at most two tags: fits a byte).
    pub l3_off: u8,
    /// IP-layer bytes (the frame from the IP header on): what flow counters add up.
    pub ip_len: u32,
}

impl Packet {
    /// The MAC of the device side at hook `dir`: the source from the device, the destination
    /// to it.
    #[inline(always)]
    pub fn dev_mac(&self, from_device: bool) -> [u8; 6] {
        if from_device {
            self.src_mac
        } else {
            self.dst_mac
        }
    }
}

/// An Ethernet/IPv4 ARP packet's claim: "`sender_ip` is at `sender_mac`".
pub struct Arp {
    pub operation_be: [u8; 2],
    pub sender_mac: [u8; 6],
    pub sender_ip: [u8; 4],
    pub target_ip: [u8; 4],
}

pub enum Parsed {
    /// An IP packet: the out-parameter of [`parse`] now holds it.
    Ip,
    /// Ethernet/IPv4 ARP, with the frame's source MAC.
    Arp(Arp, [u8; 6]),
    /// ARP for another protocol or other address sizes: no IPv4 claim to check.
    OtherArp,
    /// Another EtherType, host byte order.
    NonIp,
    /// Tagged frame and tagged frames are dropped by configuration, or more than two tags.
    Vlan,
    Malformed,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The packet slot, every byte zero.
#[inline(always)]
pub fn zeroed(out: &mut MaybeUninit<Packet>) -> &mut Packet {
    const WORDS: usize = core::mem::size_of::<Packet>() / 8;
    const { assert!(core::mem::size_of::<Packet>().is_multiple_of(8)) };
    let p = out.as_mut_ptr().cast::<u64>();
    let mut i = 0;
    while i < WORDS {
        // Safety: inside the slot, 8-aligned (`Packet` is `align(8)`).
        unsafe { p.add(i).write_volatile(0) };
        i += 1;
    }
    // Safety: all zeroes is a valid `Packet` (integers, byte arrays and `false`s).
    unsafe { out.assume_init_mut() }
}

#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// `M` 16-bit words from word `from` of a header of `N` words that `ptr_at` bounds-checked,
/// each as its bytes in wire order. Read as words: byte reads compile to a load, a shift and an
/// or per byte. Headers sit 2-aligned in the frame (the Ethernet header's 16-bit EtherType is
/// read the same way; VLAN tags, IPv4 options and IPv6 headers keep the alignment).
#[inline(always)]
fn words<const N: usize, const M: usize, T>(hdr: *const T, from: usize) -> [[u8; 2]; M] {
    const { assert!(core::mem::size_of::<T>() == 2 * N) };
    // Safety: `hdr` was bounds-checked for `size_of::<T>()` = 2N bytes, 2-aligned (above).
    let w = unsafe { &*hdr.cast::<[u16; N]>() };
    let mut out = [[0u8; 2]; M];
    let mut i = 0;
    while i < M {
        out[i] = w[from + i].to_ne_bytes();
        i += 1;
    }
    out
}

#[inline(always)]
fn skb(ctx: &TcContext) -> &__sk_buff {
    // Safety: the context of a TC program is the kernel's `__sk_buff`, valid for the run.
    unsafe { &*(ctx.as_ptr() as *const __sk_buff) }
}

#[inline(always)]
fn drops_tagged() -> bool {
    WG_CONFIG_V3
        .get(0)
        .is_some_and(|c| c.vlan_action == ACTION_DROP)
}

#[inline(always)]
pub fn parse(ctx: &TcContext, out: &mut MaybeUninit<Packet>) -> Parsed {
    // Headers normally sit in the linear area; when they do not (GRO'd or paged skbs), pull them.
    let linear = (ctx.data_end() - ctx.data()) as u32;
    let len = ctx.len();
    if linear < len && linear < HEADROOM {
        let want = if len < HEADROOM { len } else { HEADROOM };
        let _ = ctx.pull_data(want);
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Parsed::Malformed;
    };
    // Safety: ptr_at checked that the header lies inside the packet.
    let eth = unsafe { &*eth };
    let mut ether_type = u16::from_be(eth.ether_type);
    let src_mac = eth.src_addr;
    let dst_mac = eth.dst_addr;
    let skb = skb(ctx);
    // A tag the driver took out of the frame (VLAN offload) is only in the skb's metadata.
    let mut tagged = skb.vlan_present != 0;
    // Tags in the frame, counting one already taken into the metadata.
    let in_frame = if tagged { MAX_TAGS - 1 } else { MAX_TAGS };
    let mut l3_off = EthHdr::LEN;
    let mut i = 0;
    // Untagged IPv4, the common case, skips the loop with one compare.
    while ether_type != ETH_P_IP && i < MAX_TAGS + 1 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        if i >= in_frame {
            return Parsed::Vlan;
        }
        let Some(tag) = ptr_at::<[u8; 4]>(ctx, l3_off) else {
            return Parsed::Malformed;
        };
        // Safety: bounds checked by ptr_at.
        let tag = unsafe { *tag };
        ether_type = u16::from_be_bytes([tag[2], tag[3]]);
        l3_off += 4;
        tagged = true;
        i += 1;
    }
    if tagged && drops_tagged() {
        return Parsed::Vlan;
    }
    // Written in place: returning the packet inside the enum copied ~100 bytes per packet.
    // Zeroed word by word (volatile stores: LLVM merges plain zero stores of a struct in
    // memory into a `memset` call, a byte loop in BPF), then the known fields set. The packet
    // is in memory, not in registers: the slow path's hand-over copies it (`slow.rs`).
    let pkt = zeroed(out);
    pkt.l3_off = l3_off as u8;
    // Cannot wrap: the Ethernet header and tags up to `l3_off` were read inside the linear
    // area, which `len` includes.
    pkt.ip_len = len.wrapping_sub(l3_off as u32);
    pkt.ifindex = skb.ifindex;
    pkt.src_mac = src_mac;
    pkt.dst_mac = dst_mac;
    let l4_off = match ether_type {
        ETH_P_IP => {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3_off) else {
                return Parsed::Malformed;
            };
            // Safety: bounds checked by ptr_at.
            let ip = unsafe { &*ip };
            let ihl = usize::from(ip.vihl & 0x0f) * 4;
            if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
                return Parsed::Malformed;
            }
            pkt.family = FAMILY_V4;
            pkt.proto = ip.proto;
            pkt.hop_limit = ip.ttl;
            // Addresses as 16-bit words (bytes 12..20), two loads each instead of four byte
            // loads and their shifts.
            let [s0, s1, d0, d1] = words::<10, 4, _>(core::ptr::from_ref(ip), 6);
            [pkt.src[0], pkt.src[1]] = s0;
            [pkt.src[2], pkt.src[3]] = s1;
            [pkt.dst[0], pkt.dst[1]] = d0;
            [pkt.dst[2], pkt.dst[3]] = d1;
            let frags = u16::from_be_bytes(ip.frags);
            pkt.more_fragments = frags & 0x2000 != 0;
            pkt.frag_offset = (frags & 0x1fff) << 3;
            if pkt.more_fragments || pkt.frag_offset != 0 {
                pkt.frag_id = u32::from(u16::from_be_bytes(ip.id));
            }
            if pkt.frag_offset != 0 {
                pkt.fragment = true;
                return Parsed::Ip;
            }
            l3_off + ihl
        }
        ETH_P_IPV6 => {
            let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3_off) else {
                return Parsed::Malformed;
            };
            // Safety: bounds checked by ptr_at.
            let ip = unsafe { &*ip };
            if ip.vcf[0] >> 4 != 6 {
                return Parsed::Malformed;
            }
            pkt.family = FAMILY_V6;
            pkt.hop_limit = ip.hop_limit;
            // As 16-bit words (bytes 8..40): a 16-byte array copy from the packet compiles to a
            // `memmove` call.
            let addrs = words::<20, 16, _>(core::ptr::from_ref(ip), 4);
            let mut w = 0;
            while w < 8 {
                [pkt.src[2 * w], pkt.src[2 * w + 1]] = addrs[w];
                [pkt.dst[2 * w], pkt.dst[2 * w + 1]] = addrs[8 + w];
                w += 1;
            }
            let mut next = ip.next_hdr;
            let mut off = l3_off + Ipv6Hdr::LEN;
            // Skip up to four extension headers (hop-by-hop, routing, fragment, destination).
            let mut i = 0;
            while i < 4 {
                i += 1;
                match next {
                    0 | 43 | 60 => {
                        let Some(ext) = ptr_at::<[u8; 2]>(ctx, off) else {
                            return Parsed::Malformed;
                        };
                        // Safety: bounds checked by ptr_at.
                        let ext = unsafe { *ext };
                        next = ext[0];
                        off += (usize::from(ext[1]) + 1) * 8;
                    }
                    44 => {
                        let Some(frag) = ptr_at::<[u8; 8]>(ctx, off) else {
                            return Parsed::Malformed;
                        };
                        // Safety: bounds checked by ptr_at.
                        let frag = unsafe { *frag };
                        next = frag[0];
                        off += 8;
                        let offset_flags = u16::from_be_bytes([frag[2], frag[3]]);
                        pkt.more_fragments = offset_flags & 1 != 0;
                        pkt.frag_offset = offset_flags & !7;
                        pkt.frag_id = u32::from_be_bytes([frag[4], frag[5], frag[6], frag[7]]);
                        if pkt.frag_offset != 0 {
                            pkt.proto = next;
                            pkt.fragment = true;
                            return Parsed::Ip;
                        }
                    }
                    _ => break,
                }
            }
            pkt.proto = next;
            off
        }
        ETH_P_ARP => return arp(ctx, l3_off, src_mac),
        _ => return Parsed::NonIp,
    };
    pkt.l4_off = l4_off as u16;
    match pkt.proto {
        PROTO_TCP => {
            // Read as bytes with one bounds check: a second check for the flags byte gets merged
            // by LLVM in a way the verifier cannot follow.
            let Some(tcp) = ptr_at::<[u8; TcpHdr::LEN]>(ctx, l4_off) else {
                return Parsed::Malformed;
            };
            let [sport, dport] = words::<10, 2, _>(tcp, 0);
            pkt.sport_be = sport;
            pkt.dport_be = dport;
            // Safety: bounds checked by ptr_at.
            pkt.tcp_flags = unsafe { (*tcp)[13] };
        }
        PROTO_UDP => {
            let Some(udp) = ptr_at::<UdpHdr>(ctx, l4_off) else {
                return Parsed::Malformed;
            };
            let [sport, dport] = words::<4, 2, _>(udp, 0);
            pkt.sport_be = sport;
            pkt.dport_be = dport;
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let Some(icmp) = ptr_at::<[u8; 2]>(ctx, l4_off) else {
                return Parsed::Malformed;
            };
            // Safety: bounds checked by ptr_at.
            pkt.icmp_type = unsafe { (*icmp)[0] };
        }
        _ => {}
    }
    Parsed::Ip
}

/// ARP with IPv4 and 6-byte hardware addresses, whatever its hardware type: Linux takes both
/// Ethernet (1) and IEEE 802 (6) on an Ethernet device, so every type is checked as a claim.
#[inline(always)]
fn arp(ctx: &TcContext, off: usize, src_mac: [u8; 6]) -> Parsed {
    let Some(a) = ptr_at::<[u8; 28]>(ctx, off) else {
        return Parsed::Malformed;
    };
    // Safety: bounds checked by ptr_at.
    let a = unsafe { &*a };
    // Byte by byte: a slice compare compiles to a `bcmp` call in BPF.
    if a[2] != 0x08 || a[3] != 0 || a[4] != 6 || a[5] != 4 {
        return Parsed::OtherArp;
    }
    Parsed::Arp(
        Arp {
            operation_be: [a[6], a[7]],
            sender_mac: [a[8], a[9], a[10], a[11], a[12], a[13]],
            sender_ip: [a[14], a[15], a[16], a[17]],
            target_ip: [a[24], a[25], a[26], a[27]],
        },
        src_mac,
    )
}
