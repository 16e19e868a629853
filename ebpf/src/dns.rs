//! `dns:` peers (issue 21 point 1). A UDP answer from port 53 of one of the device's resolvers
//! (its policy's `WG_DNSRES_V1` prefixes), on its way to an enforced or monitored device, is
//! held: copied whole into `WG_DNSANS_V1` and dropped here (`HoldDnsAnswer`). The agent reads
//! the addresses it names for the policy's names, writes them into `WG_DNSADDR_V1` and sends
//! the frame out of the same interface unchanged, marked `DNS_REINJECT_MARK`; that copy is
//! judged as usual (a reply of the device's query). So the address is allowed before the
//! device can know it. The policy stage asks `WG_DNSADDR_V1` when the address itself matched
//! no rule (`policy::lookup`).
//!
//! Answers from anywhere else are judged as usual and teach nothing. An answer the gateway
//! cannot hold (larger than `DNS_FRAME_MAX`, the ring full, or the agent's heartbeat stale, so
//! nobody would send it on) passes unlearned (`PassDnsUnlearned`): the device's DNS keeps
//! working, its names just are not learned from it. TCP answers are not held.

use aya_ebpf::{
    EbpfContext as _, bindings::__sk_buff, helpers::bpf_skb_load_bytes, programs::TcContext,
};
use wardgate_common::{
    DNS_FRAME_MAX, DNS_REINJECT_MARK, DNS_RES_FIXED_BITS, DnsAnswerRecord, DnsResolverKey,
    FAMILY_V4, MODE_LEARN, MODE_QUARANTINE, PROTO_UDP, Reason,
};

use crate::{
    maps::{WG_CONFIG_V3, WG_DNSANS_V1, WG_DNSRES_V1, WG_HEART_V1},
    parse::Packet,
    policy,
};

/// The answer's verdict if it is one to hold (or one that could not be held), else `None`:
/// judged as usual.
#[inline(always)]
pub fn hold(ctx: &TcContext, pkt: &Packet, slot: u32, now: u64) -> Option<Reason> {
    if pkt.proto != PROTO_UDP || pkt.sport_be != [0, 53] || pkt.fragment {
        return None;
    }
    // Safety: the skb pointer is valid for the program run; `mark` is a plain field.
    if unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).mark } == DNS_REINJECT_MARK {
        return None;
    }
    let dev = policy::device(slot, pkt.family, &pkt.dst)?;
    if dev.mac != pkt.dst_mac || dev.mode == MODE_LEARN || dev.mode == MODE_QUARANTINE {
        return None;
    }
    let bits = if pkt.family == FAMILY_V4 { 32 } else { 128 };
    let key = aya_ebpf::maps::lpm_trie::Key::new(
        DNS_RES_FIXED_BITS + bits,
        DnsResolverKey {
            slot: slot as u8,
            family: pkt.family,
            _pad: 0,
            policy_id: dev.policy_id,
            addr: pkt.src,
        },
    );
    WG_DNSRES_V1.get(&key)?;
    if agent_gone(now) {
        return Some(Reason::PassDnsUnlearned);
    }
    let len = ctx.len();
    if len == 0 || len as usize > DNS_FRAME_MAX {
        return Some(Reason::PassDnsUnlearned);
    }
    let Some(mut entry) = WG_DNSANS_V1.reserve::<DnsAnswerRecord>(0) else {
        return Some(Reason::PassDnsUnlearned);
    };
    // 1..=DNS_FRAME_MAX by arithmetic the verifier follows (a mask, then + 1).
    let n = ((len - 1) & (DNS_FRAME_MAX as u32 - 1)) + 1;
    let r = entry.as_mut_ptr();
    // Safety: `r` points to the reserved record until it is submitted or discarded; the helper
    // writes at most `n` <= DNS_FRAME_MAX bytes into its buffer.
    let ok = unsafe {
        let data = core::ptr::addr_of_mut!((*r).frame).cast::<core::ffi::c_void>();
        bpf_skb_load_bytes(ctx.as_ptr(), 0, data, n)
    } == 0;
    if !ok {
        entry.discard(0);
        return Some(Reason::PassDnsUnlearned);
    }
    // Safety: as above.
    unsafe {
        (*r).ts_ns = now;
        (*r).ifindex = pkt.ifindex;
        (*r).device_id = dev.device_id;
        (*r).policy_id = dev.policy_id;
        (*r).len = n;
    }
    entry.submit(0);
    Some(Reason::HoldDnsAnswer)
}

/// The agent's heartbeat is stale (the watchdog's limit): a held answer would never be sent on.
#[inline(always)]
fn agent_gone(now: u64) -> bool {
    let limit_ms = WG_CONFIG_V3.get(0).map_or(0, |c| c.heartbeat_limit_ms);
    let beat = WG_HEART_V1.get(0).copied().unwrap_or(0);
    limit_ms != 0 && beat != 0 && now.saturating_sub(beat) > u64::from(limit_ms) * 1_000_000
}
