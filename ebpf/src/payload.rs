//! First payload bytes of inspected flows, for the agent's DICOM and HL7 identity parsers.
//!
//! A flow is inspected when the rule that admitted it carries an app constraint
//! (`RULE_INSPECT`), or, where no rule decides (learn, monitor would-deny, a new address),
//! when its server port is one of the gateway's configured medical ports. Its conntrack entry
//! is then created with a budget of `INSPECT_PACKETS` payload-carrying packets each way.
//!
//! Only the conntrack path pays for this: a valid hit on an entry with budget left does not fill
//! the flow cache and, after its verdict, tail-calls `wg_payload`, which copies the segment, so the
//! established fast path (a cache hit) has no check at all; once the budget is spent (or `INSPECT_MAX_PACKETS` passed) the next hit fills
//! the cache as for any flow. The new entry's first packet (the SYN) is handed over too, and the
//! SYN-ACK: each gives its direction's initial sequence number, and payload is handed over only
//! after both (a handshake) and within `INSPECT_SEQ_WINDOW` after its direction's SYN, so a
//! one-way flow never claims an application identity. Records go to their own small ring
//! through the device's token bucket (`budget.rs`) and then a per-CPU one (`PAYLOAD_RATE_PER_S`,
//! `PAYLOAD_BURST`), so neither one device nor a flood of inspected flows can flood the agent;
//! a refused record costs the flow nothing (its budget is spent only by a record sent). What a
//! bucket, the full ring or the handshake check refuses is counted per CPU in `WG_PAYLOST_V2`.

use aya_ebpf::{
    EbpfContext as _, bindings::TC_ACT_OK, helpers::bpf_skb_load_bytes, macros::map,
    maps::PerCpuArray, programs::TcContext,
};
use wardgate_common::{
    CT_LEARNED, CT_WOULD_DENY, CtKey, CtValue, INSPECT_MAX_PACKETS, INSPECT_PORTS,
    INSPECT_SEQ_WINDOW, ISN_FWD_SEEN, ISN_REV_SEEN, PAYLOAD_BURST, PAYLOAD_DATA, PAYLOAD_LOST_RATE,
    PAYLOAD_LOST_RING, PAYLOAD_LOST_UNVERIFIED, PAYLOAD_RATE_PER_S, PROTO_TCP, PayloadRecord,
    RULE_INSPECT, Reason, RuleValue,
};

use crate::{
    budget,
    maps::{WG_CONFIG_V3, WG_CT_V5, WG_PAYLOAD_V1, WG_PAYLOST_V2, WG_PAYPROG_V1, WG_PAYRATE_V1},
    parse::{Packet, TCP_SYN},
};

/// Whether a new entry is inspected: its rule says so, or no rule decided and the flow's
/// server port (the opening packet's destination port) is a configured medical port.
#[inline(always)]
pub fn wanted(pkt: &Packet, rule: Option<&RuleValue>, flags: u32) -> bool {
    if pkt.proto != PROTO_TCP {
        return false;
    }
    let Some(cfg) = WG_CONFIG_V3.get(0) else {
        return false;
    };
    if cfg.recording_off != 0 {
        return false;
    }
    match rule {
        Some(r) => r.flags & RULE_INSPECT != 0,
        None if flags & (CT_LEARNED | CT_WOULD_DENY) != 0 => {
            port_listed(&cfg.inspect_ports_be, pkt.dport_be)
        }
        None => false,
    }
}

/// Whether `port` is one of the configured ports, without a branch per port: BPF has no
/// conditional set, so each compare of a loop or an `||` chain is a branch, and the verifier
/// walks every combination on every path that creates an entry.
#[inline(always)]
fn port_listed(ports: &[[u8; 2]; INSPECT_PORTS], port: [u8; 2]) -> bool {
    let p = u32::from(u16::from_ne_bytes(port));
    let mut hit = 0u32;
    let mut i = 0;
    while i < INSPECT_PORTS {
        // 1 when equal: (x - 1) >> 31 is 1 only for x == 0 (x < 2^16).
        let x = u32::from(u16::from_ne_bytes(ports[i])) ^ p;
        hit |= x.wrapping_sub(1) >> 31;
        i += 1;
    }
    // Unused slots are 0, and 0 is no server port.
    hit & u32::from(p != 0) != 0
}

/// Whether the entry still wants payload, or has an application check pending or refused
/// (`app.rs`): it stays off the flow cache and its packets go to `wg_payload`.
#[inline(always)]
pub fn pending(v: &CtValue) -> bool {
    v.inspect_fwd | v.inspect_rev != 0 || crate::app::pending(v)
}

/// What the classifier hands `wg_payload` about the packet (per CPU: the tail call runs on the
/// same CPU, in the same packet's run).
#[repr(C)]
pub struct Request {
    key: CtKey,
    verdict: i32,
    l3_off: u32,
    l4_off: u32,
    family: u8,
    forward: u8,
    /// The hook (`DIR_*`).
    dir: u8,
    _pad: u8,
    /// The reason the classifier counted the packet under.
    reason: u32,
    _pad1: u32,
}

#[map(name = "WG_PAYREQ")]
static WG_PAYREQ: PerCpuArray<Request> = PerCpuArray::with_max_entries(1, 0);

/// On the conntrack path: an entry with budget left. Remembers what `wg_payload` needs.
#[inline(always)]
pub fn request(pkt: &Packet, key: &CtKey, forward: bool, dir: u8) {
    let Some(r) = WG_PAYREQ.get_ptr_mut(0) else {
        return;
    };
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let r = unsafe { &mut *r };
    r.key = *key;
    r.l3_off = u32::from(pkt.l3_off);
    r.l4_off = u32::from(pkt.l4_off);
    r.family = pkt.family;
    r.forward = u8::from(forward);
    r.dir = dir;
}

/// After the verdict: tail-calls `wg_payload` with it; the verdict itself if that fails (no
/// program in the array: the packet is simply not inspected).
#[inline(always)]
pub fn hand_over(ctx: &TcContext, verdict: i32, reason: Reason) -> i32 {
    if let Some(r) = WG_PAYREQ.get_ptr_mut(0) {
        // Safety: this CPU's slot.
        unsafe {
            (*r).verdict = verdict;
            (*r).reason = reason as u32;
        }
        // Safety: a tail call does not return when it succeeds.
        unsafe { WG_PAYPROG_V1.tail_call(ctx, 0) };
    }
    verdict
}

/// `wg_payload`: a segment carrying payload in a direction with budget left is copied to the
/// agent and spends one. Returns the classifier's verdict.
#[inline(always)]
pub fn inspect(ctx: &TcContext) -> i32 {
    let Some(r) = WG_PAYREQ.get_ptr(0) else {
        return TC_ACT_OK;
    };
    // Safety: this CPU's slot, written by the classifier that tail-called us.
    let r = unsafe { &*r };
    let verdict = r.verdict;
    let Some(v) = WG_CT_V5.get_ptr_mut(&r.key) else {
        return verdict;
    };
    // Safety: map value pointer from a successful lookup, valid for this run.
    let v = unsafe { &mut *v };
    // The application check first (`app.rs`): it decides whatever the recording switch and
    // the record budgets say.
    if crate::app::pending(v) {
        let Some(tcp) = load::<20>(ctx, r.l4_off) else {
            return verdict;
        };
        let seg = crate::app::Seg {
            key: &r.key,
            l3: r.l3_off,
            l4: r.l4_off,
            family: r.family,
            forward: r.forward != 0,
            dir: r.dir,
            reason: r.reason,
        };
        let payload = segment(ctx, r, &tcp);
        if let Some(decided) = crate::app::check(ctx, &seg, v, &tcp, payload) {
            return decided;
        }
    }
    inspect_entry(ctx, r, v);
    verdict
}

#[inline(always)]
fn inspect_entry(ctx: &TcContext, r: &Request, v: &mut CtValue) {
    let now = v.last_seen_ns;
    let forward = r.forward != 0;
    if v.packets_fwd + v.packets_rev > INSPECT_MAX_PACKETS
        || WG_CONFIG_V3.get(0).is_some_and(|c| c.recording_off != 0)
    {
        v.inspect_fwd = 0;
        v.inspect_rev = 0;
        return;
    }
    let left = if forward {
        v.inspect_fwd
    } else {
        v.inspect_rev
    };
    // Entries with a budget are TCP (`wanted`), and fragments never reach conntrack.
    if left == 0 {
        return;
    }
    let Some(tcp) = load::<20>(ctx, r.l4_off) else {
        return;
    };
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    // The handshake: each way's SYN gives that direction's initial sequence number.
    if tcp[13] & TCP_SYN != 0 {
        if forward {
            v.isn_fwd = seq;
            v.isn_seen |= ISN_FWD_SEEN;
        } else {
            v.isn_rev = seq;
            v.isn_seen |= ISN_REV_SEEN;
        }
        return;
    }
    let Some((off, seg_len)) = segment(ctx, r, &tcp) else {
        return;
    };
    // Application identity is trusted only after a handshake: both SYNs seen, and the segment
    // within the window after its direction's. A one-way flow (no answer), or bytes that are
    // not the flow's first, are never handed over, and spend nothing.
    let isn = if forward { v.isn_fwd } else { v.isn_rev };
    if v.isn_seen != ISN_FWD_SEEN | ISN_REV_SEEN
        || seq.wrapping_sub(isn.wrapping_add(1)) > INSPECT_SEQ_WINDOW
    {
        lost(PAYLOAD_LOST_UNVERIFIED);
        return;
    }
    // The device's budget first (one device cannot spend the CPU's), then the CPU's. A spent
    // bucket or a full ring costs the flow nothing: its next segment may still be inspected.
    if !budget::payload(v.device_id, now) || !take_token(now) {
        lost(PAYLOAD_LOST_RATE);
        return;
    }
    if !send(ctx, &r.key, off, seg_len, tcp, forward, now) {
        return;
    }
    if forward {
        v.inspect_fwd -= 1;
    } else {
        v.inspect_rev -= 1;
    }
}

/// Reads `N` bytes at `off` of the frame with the helper (no packet-pointer bounds check).
#[inline(always)]
pub(crate) fn load<const N: usize>(ctx: &TcContext, off: u32) -> Option<[u8; N]> {
    // Not zeroed first: zeroing compiles to a `memset` call BPF does not have, and the helper
    // may write uninitialized memory (it zeroes it on failure).
    let mut buf = core::mem::MaybeUninit::<[u8; N]>::uninit();
    // Safety: the helper writes N bytes into `buf`, or fails.
    let r = unsafe { bpf_skb_load_bytes(ctx.as_ptr(), off, buf.as_mut_ptr().cast(), N as u32) };
    // Safety: written in full when the helper succeeded.
    (r == 0).then(|| unsafe { buf.assume_init() })
}

/// The TCP payload of the packet: (offset in the frame, length, sequence number), or `None`
/// when it carries none. The length comes from the IP header (not the frame, which Ethernet
/// may pad). Headers are read with the helper and the IP version picked by arithmetic, not
/// with packet pointers and branches: the offsets differ on every parse path (tags, IPv6
/// extension headers), and branching on them or using them in pointer arithmetic made the
/// verifier walk this code once per path (past its 1M-instruction limit).
#[inline(always)]
fn segment(ctx: &TcContext, r: &Request, tcp: &[u8; 20]) -> Option<(u32, u32)> {
    let (l3, l4, family) = (r.l3_off, r.l4_off, u32::from(r.family));
    let doff = u32::from(tcp[12] >> 4) * 4;
    // IPv4: total length at +2; IPv6: payload length at +4, plus its 40-byte header.
    let len = load::<2>(ctx, l3 + family - 2)?;
    let ip_end = u32::from(u16::from_be_bytes(len)) + ((family >> 1) & 1) * 40;
    let headers = l4.wrapping_sub(l3) + doff;
    if doff < 20 || ip_end <= headers {
        return None;
    }
    Some((l4 + doff, ip_end - headers))
}

/// One record per CPU per `1e9 / PAYLOAD_RATE_PER_S` ns, at most `PAYLOAD_BURST` at once.
#[inline(always)]
fn take_token(now: u64) -> bool {
    const COST: u64 = 1_000_000_000 / PAYLOAD_RATE_PER_S;
    let Some(b) = WG_PAYRATE_V1.get_ptr_mut(0) else {
        return false;
    };
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let b = unsafe { &mut *b };
    let tokens = (b.tokens + now.saturating_sub(b.last_ns)).min(PAYLOAD_BURST * COST);
    b.last_ns = now;
    if tokens < COST {
        b.tokens = tokens;
        return false;
    }
    b.tokens = tokens - COST;
    true
}

#[inline(always)]
fn lost(why: u32) {
    if let Some(n) = WG_PAYLOST_V2.get_ptr_mut(why) {
        // Safety: this CPU's slot; nothing else runs on this CPU while we do.
        unsafe { *n += 1 };
    }
}

/// Copies the segment to the agent; `true` once the record is submitted.
#[inline(always)]
fn send(
    ctx: &TcContext,
    key: &CtKey,
    off: u32,
    seg_len: u32,
    tcp: [u8; 20],
    forward: bool,
    now: u64,
) -> bool {
    let seq_be = [tcp[4], tcp[5], tcp[6], tcp[7]];
    let avail = ctx.len().saturating_sub(off);
    let want = if seg_len < avail { seg_len } else { avail };
    if want == 0 {
        return false;
    }
    let Some(mut entry) = WG_PAYLOAD_V1.reserve::<PayloadRecord>(0) else {
        lost(PAYLOAD_LOST_RING);
        return false;
    };
    // 1..=PAYLOAD_DATA by arithmetic the verifier follows (a mask, then + 1): the helper's
    // length must be provably within the record's buffer.
    let n = ((want.min(PAYLOAD_DATA as u32) - 1) & (PAYLOAD_DATA as u32 - 1)) + 1;
    let r = entry.as_mut_ptr();
    // Safety: `r` points to the reserved record, valid until submitted or discarded; the
    // helper writes at most `n` <= PAYLOAD_DATA bytes into its buffer.
    let ok = unsafe {
        let data = core::ptr::addr_of_mut!((*r).data).cast::<core::ffi::c_void>();
        bpf_skb_load_bytes(ctx.as_ptr(), off, data, n)
    } == 0;
    if !ok {
        entry.discard(0);
        return false;
    }
    // Safety: as above; every field but the data's tail past `n` is written (the agent reads
    // `len` bytes only).
    unsafe {
        (*r).ts_ns = now;
        // Five aligned words (`CtKey` is 8-aligned): a struct assignment compiles to `memmove`.
        let src = core::ptr::from_ref(key).cast::<u64>();
        let dst = core::ptr::addr_of_mut!((*r).key).cast::<u64>();
        for i in 0..5 {
            *dst.add(i) = *src.add(i);
        }
        (*r).seq_be = seq_be;
        (*r).seg_len = if seg_len > 0xffff {
            0xffff
        } else {
            seg_len as u16
        };
        (*r).len = n as u16;
        (*r).forward = u8::from(forward);
        (*r)._pad = 0;
        (*r)._pad1 = 0;
        (*r)._pad2 = 0;
    }
    entry.submit(0);
    true
}
