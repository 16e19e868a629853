//! The established fast path: the flow cache answered straight from the headers, before the
//! full parse (the idea of Open vSwitch's miniflow extract in front of its exact-match cache).
//!
//! The full parse writes the whole `Packet` (zeroed, then some fifteen fields) and the checks
//! before the cache read them back; for the packets that make up a steady flow that work is
//! thrown away on a hit. Here the commonest case, an untagged IPv4 TCP or UDP packet without
//! options, is read in registers and looked up at once; everything else, and every miss,
//! takes the full path unchanged, which answers the same packet the same way (the same key,
//! the same slot checks in `flowcache::hit`). So this path can only skip work, never change a
//! verdict: what the full path does before its cache lookup is excluded here by test,
//! packet by packet:
//! - VLAN tags (in the frame or in the skb's metadata): their configured action;
//! - fragments (MF set or an offset): the fragment tracker;
//! - IPv4 options (IHL above 5) and anything not TCP or UDP (ICMP errors, the link-local
//!   control plane);
//! - TCP SYN, FIN or RST (`flowcache::bypass`: handshakes and closes see conntrack);
//! - at egress, a source port whose low byte is 53 (`dns::hold`'s own first test);
//! - headers not in the linear area (the full path pulls them).

use aya_ebpf::{EbpfContext as _, bindings::__sk_buff, programs::TcContext};
use wardgate_common::{FAMILY_V4, FlowKey, PROTO_TCP, PROTO_UDP, Reason};

use crate::{
    clock, flowcache,
    parse::{TCP_FIN, TCP_RST, TCP_SYN},
};

/// Ethernet, an IPv4 header without options and a whole TCP header: the parser refuses a
/// shorter TCP header as malformed, so a truncated segment must reach it. (A UDP packet
/// shorter than this takes the full path too.)
const SPAN: usize = 14 + 20 + 20;
/// The IPv4 EtherType as a 16-bit word read in host order (little-endian BPF).
const ETH_P_IP_WORD: u16 = 0x0800u16.to_be();

/// `Some(verdict)` for a flow cache hit; `None`: the full path decides.
#[inline(always)]
pub fn established(ctx: &TcContext, hook: u8, generation: u32) -> Option<Reason> {
    let start = ctx.data();
    if start + SPAN > ctx.data_end() {
        return None;
    }
    // Safety: the context of a TC program is the kernel's `__sk_buff`, valid for the run.
    let skb = unsafe { &*(ctx.as_ptr() as *const __sk_buff) };
    // 16-bit words: the frame is 2-aligned (the parser reads it the same way).
    let w = start as *const u16;
    // Safety (every `word`): inside the `SPAN` bytes checked above.
    let word = |i: usize| unsafe { *w.add(i) };
    // EtherType (word 6), then version/IHL (byte 14) and the fragment word (bytes 20-21).
    if word(6) != ETH_P_IP_WORD || skb.vlan_present != 0 {
        return None;
    }
    let b = start as *const u8;
    // Safety (every `byte`): inside the `SPAN` bytes checked above.
    let byte = |i: usize| unsafe { *b.add(i) };
    if byte(14) != 0x45 || u16::from_be(word(10)) & 0x3fff != 0 {
        return None;
    }
    let proto = byte(23);
    if proto == PROTO_TCP {
        if byte(34 + 13) & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
            return None;
        }
    } else if proto != PROTO_UDP {
        return None;
    }
    let to_device = hook != wardgate_common::DIR_FROM_DEVICE;
    // Source port's low byte (byte 35).
    if to_device && byte(35) == 53 {
        return None;
    }
    let pair = |i: usize| u64::from(word(i)) | u64::from(word(i + 1)) << 16;
    // The key `flowcache::key` makes of the parsed packet: an IPv4 address is the first four
    // bytes of its 16, the rest zero.
    let key = FlowKey {
        src_hi: pair(13),
        src_lo: 0,
        dst_hi: pair(15),
        dst_lo: 0,
        meta: pair(17)
            | u64::from(proto) << 32
            | u64::from(FAMILY_V4) << 40
            | u64::from(hook) << 48,
    };
    // The device side's MAC: the destination (words 0-2) to the device, the source (3-5)
    // from it.
    let m = if to_device { 0 } else { 3 };
    let dev_mac = pair(m) | u64::from(word(m + 2)) << 32;
    let ip_len = skb.len.wrapping_sub(14);
    let reply = flowcache::hit(&key, dev_mac, skb.ifindex, ip_len, generation, clock::now())?;
    Some(if reply {
        Reason::PassReply
    } else {
        Reason::PassEstablished
    })
}
