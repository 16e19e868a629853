//! Application rules: the flows of a rule with an application check (`APP_DICOM` / `APP_HL7`
//! and the fields to check, copied from the rule into the new conntrack entry) are decided at
//! their first payload segment in the opening direction, in `wg_payload`:
//!
//! - DICOM: the segment must start an A-ASSOCIATE-RQ (PDU type 0x01) holding both AE titles
//!   (called at PDU bytes 10..26, calling at 26..42, 16 bytes each, space padded; NUL read as
//!   space); each checked title must be one of the rule's (`WG_APPVAL_V1`).
//! - HL7: the segment must start an MLLP block (0x0B) with `MSH` and a field separator; the
//!   first `APP_HL7_SCAN` bytes are scanned for the separators, and each checked field (MSH-3,
//!   MSH-4, MSH-5, the first two components of MSH-9) must end within them and be one of the
//!   rule's values.
//!
//! Values are compared exactly (`AppKey`: slot, field, rule id, length, up to `APP_VALUE_LEN`
//! bytes), one hash lookup per checked field: no hashing of attacker-chosen bytes, so no
//! collisions. Only the segment at the opening direction's initial sequence number + 1 is
//! checked (the flow's first bytes; a later one arriving first is dropped until they come),
//! and only after the handshake; payload on an entry that saw no handshake (picked up
//! mid-stream) cannot be checked and is refused.
//!
//! Refused: counted (`WG_APPDENY_V1` by why, `Reason::DropAppRefused`), reported
//! (`AppEvent`, with the fields read), the entry marked `CT_APP_REFUSED` (closing: its budget
//! place back, 10 s idle timeout), and the offending segment itself turned into a RST|ACK
//! toward the opener (addresses, ports and MACs swapped, the payload cut, checksums computed)
//! and redirected out the way it came: so the server never sees the request and the client's
//! association fails at once. A clone of it, cut and turned into a RST, goes on to the server,
//! which would otherwise wait for the request (a server taking one association at a time, as
//! dcmtk's storescp does, until its own timeout). Every later non-RST packet of the opener gets the same answer;
//! the other side's packets are dropped; RSTs pass. A monitored device's flow is only counted
//! and reported. Allowed: the check bits are cleared and the flow goes on as any inspected
//! flow (onto the flow cache once its payload budget is spent).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_SHOT},
    helpers::{
        bpf_clone_redirect, bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes,
        bpf_skb_store_bytes,
    },
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use wardgate_common::{
    APP_CHECK_CALLED, APP_CHECK_CALLING, APP_CHECK_MSH3, APP_CHECK_MSH4, APP_CHECK_MSH5,
    APP_CHECK_MSH9, APP_DENY_CALLED_AE, APP_DENY_CALLING_AE, APP_DENY_DICOM_MALFORMED,
    APP_DENY_HL7_MALFORMED, APP_DENY_KINDS, APP_DENY_MSH3, APP_DENY_MSH4, APP_DENY_MSH5,
    APP_DENY_MSH9, APP_DENY_UNVERIFIED, APP_DICOM, APP_FIELD_CALLED_AE, APP_FIELD_CALLING_AE,
    APP_FIELD_MSH3, APP_FIELD_MSH4, APP_FIELD_MSH5, APP_FIELD_MSH9, APP_HL7, APP_HL7_SCAN,
    APP_PENDING, APP_VALUE_LEN, AppEvent, AppKey, CT_APP_MONITOR, CT_APP_REFUSED, CT_CLOSING,
    CT_CLOSING_TIMEOUT_S, CtKey, CtValue, DIR_FROM_DEVICE, EVENT_APP_REFUSED, FAMILY_V4,
    ISN_FWD_SEEN, ISN_REV_SEEN, Reason,
};

use crate::{
    maps::{WG_ACTIVE_V2, WG_APPDENY_V1, WG_APPVAL_V1, WG_EVENTS_V1, WG_STATS_V1},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// Not refused.
const ALLOWED: u32 = u32::MAX;
const BPF_F_RECOMPUTE_CSUM: u64 = 1;
const BPF_F_INGRESS: u64 = 1;

/// The segment `wg_payload` was handed.
pub struct Seg<'a> {
    pub key: &'a CtKey,
    pub l3: u32,
    pub l4: u32,
    pub family: u8,
    pub forward: bool,
    /// The hook: `DIR_FROM_DEVICE` at ingress.
    pub dir: u8,
    /// The reason the classifier counted the packet under.
    pub reason: u32,
}

/// Where the check reads and builds: per CPU (the stack has 512 bytes).
#[repr(C)]
pub struct Scratch {
    buf: [u8; APP_HL7_SCAN],
    /// DICOM: calling, called. HL7: MSH-3, MSH-4, MSH-5, MSH-9.
    keys: [AppKey; 4],
    /// HL7 scan state, in memory (volatile): kept in registers, each branch on it would be
    /// a state of its own for the verifier on every one of the loop's iterations.
    field: u32,
    pos: u32,
    comp: u32,
    /// Fields (bit = field number) that ended within the scanned bytes.
    ended: u32,
}

#[map(name = "WG_APPSCRATCH")]
static WG_APPSCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Whether the entry has an application check pending or was refused: it stays off the flow
/// cache and its packets go to `wg_payload`.
#[inline(always)]
pub fn pending(v: &CtValue) -> bool {
    v.flags & (APP_PENDING | CT_APP_REFUSED) != 0
}

/// The check for this packet: `None` lets it go on as the classifier decided (and to the
/// payload records); `Some(verdict)` decides it.
#[inline(always)]
pub fn check(
    ctx: &TcContext,
    s: &Seg,
    v: &mut CtValue,
    tcp: &[u8; 20],
    payload: Option<(u32, u32)>,
) -> Option<i32> {
    let flags = v.flags;
    let tcp_flags = tcp[13];
    let seg_len = payload.map_or(0, |(_, n)| n);
    if flags & CT_APP_REFUSED != 0 {
        if tcp_flags & TCP_RST != 0 {
            return None;
        }
        recount(s.reason);
        if s.forward {
            return Some(reset(ctx, s, tcp, seg_len));
        }
        return Some(TC_ACT_SHOT);
    }
    if flags & APP_PENDING == 0 {
        return None;
    }
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    if tcp_flags & TCP_SYN != 0 {
        // Data on a SYN (TCP Fast Open) would reach the server before any check: dropped (the
        // client falls back to a plain SYN).
        if s.forward && seg_len != 0 {
            recount(s.reason);
            return Some(TC_ACT_SHOT);
        }
        if s.forward {
            v.isn_fwd = seq;
            v.isn_seen |= ISN_FWD_SEEN;
        } else {
            v.isn_rev = seq;
            v.isn_seen |= ISN_REV_SEEN;
        }
        return None;
    }
    if !s.forward {
        return None;
    }
    let (off, len) = payload?;
    let sc = WG_APPSCRATCH.get_ptr_mut(0)?;
    // Safety: this CPU's slot; nothing else runs on this CPU while we do.
    let sc = unsafe { &mut *sc };
    let slot = WG_ACTIVE_V2.get(0).copied().unwrap_or(0) & 1;
    let why = if v.isn_seen != ISN_FWD_SEEN | ISN_REV_SEEN {
        clear_keys(sc);
        APP_DENY_UNVERIFIED
    } else if seq != v.isn_fwd.wrapping_add(1) {
        // Not the flow's first bytes: they are checked when they come (the opener sends them
        // again); nothing after them passes before.
        recount(s.reason);
        return Some(TC_ACT_SHOT);
    } else if flags & APP_DICOM != 0 {
        dicom(ctx, sc, off, len, slot as u8, v.rule_id, flags)
    } else {
        hl7(ctx, sc, off, len, slot as u8, v.rule_id, flags)
    };
    if why == ALLOWED {
        v.flags = flags & !(APP_PENDING | CT_APP_MONITOR);
        return None;
    }
    if let Some(n) = WG_APPDENY_V1.get_ptr_mut(why) {
        // Safety: this CPU's slot.
        unsafe { *n += 1 };
    }
    let monitor = flags & CT_APP_MONITOR != 0;
    report(ctx, s, v, sc, why, flags, monitor);
    if monitor {
        v.flags = flags & !(APP_PENDING | CT_APP_MONITOR);
        return None;
    }
    if flags & CT_CLOSING == 0 {
        crate::budget::release(v.device_id);
    }
    v.flags = (flags & !APP_PENDING) | CT_APP_REFUSED | CT_CLOSING;
    if v.idle_timeout_s > CT_CLOSING_TIMEOUT_S {
        v.idle_timeout_s = CT_CLOSING_TIMEOUT_S;
    }
    // Nothing more to hand the agent: the event carries what was read.
    v.inspect_fwd = 0;
    v.inspect_rev = 0;
    recount(s.reason);
    Some(reset(ctx, s, tcp, len))
}

/// The packet was counted under `reason` by the classifier; it is `DropAppRefused` after all.
#[inline(always)]
fn recount(reason: u32) {
    if let Some(n) = WG_STATS_V1.get_ptr_mut(reason) {
        // Safety: this CPU's slot.
        unsafe { *n = (*n).wrapping_sub(1) };
    }
    if let Some(n) = WG_STATS_V1.get_ptr_mut(Reason::DropAppRefused as u32) {
        // Safety: this CPU's slot.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
fn wr<T>(p: *mut T, v: T) {
    // Safety: callers pass pointers into this CPU's scratch slot.
    unsafe { p.write_volatile(v) };
}

#[inline(always)]
fn rd<T: Copy>(p: *const T) -> T {
    // Safety: as for `wr`.
    unsafe { p.read_volatile() }
}

/// Every key's value and length zeroed (word by word: zero stores LLVM would merge into a
/// `memset` call).
#[inline(always)]
fn clear_keys(sc: &mut Scratch) {
    let mut k = 0;
    while k < 4 {
        let key = &mut sc.keys[k];
        let w = key.value.as_mut_ptr().cast::<u64>();
        let mut i = 0;
        while i < APP_VALUE_LEN / 8 {
            // Safety: inside the key's value; AppKey::value is 8-aligned (offset 8).
            wr(unsafe { w.add(i) }, 0u64);
            i += 1;
        }
        wr(&raw mut key.len, 0u8);
        k += 1;
    }
}

#[inline(always)]
fn key_init(key: &mut AppKey, slot: u8, field: u8, rule_id: u32) {
    wr(&raw mut key.slot, slot);
    wr(&raw mut key.field, field);
    wr(&raw mut key.len, 0u8);
    wr(&raw mut key._pad, 0u8);
    wr(&raw mut key.rule_id, rule_id);
}

#[inline(always)]
fn allowed(key: &AppKey) -> bool {
    // Safety: the value is not read, only whether the entry exists.
    unsafe { WG_APPVAL_V1.get(key) }.is_some()
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dicom(
    ctx: &TcContext,
    sc: &mut Scratch,
    off: u32,
    len: u32,
    slot: u8,
    rule_id: u32,
    flags: u32,
) -> u32 {
    clear_keys(sc);
    key_init(&mut sc.keys[0], slot, APP_FIELD_CALLING_AE, rule_id);
    key_init(&mut sc.keys[1], slot, APP_FIELD_CALLED_AE, rule_id);
    // Both AE titles must be in this segment: PDU type, reserved, length (6), protocol
    // version, reserved (4), called AE (16), calling AE (16).
    if len < 42 {
        return APP_DENY_DICOM_MALFORMED;
    }
    // Safety: the helper writes 42 bytes into the scratch buffer, or fails.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            off,
            sc.buf.as_mut_ptr().cast::<core::ffi::c_void>(),
            42,
        )
    };
    if r != 0 {
        return APP_DENY_DICOM_MALFORMED;
    }
    let mut i = 0;
    while i < 16 {
        let called = space(rd(&raw const sc.buf[10 + i]));
        let calling = space(rd(&raw const sc.buf[26 + i]));
        wr(&raw mut sc.keys[0].value[i], calling);
        wr(&raw mut sc.keys[1].value[i], called);
        i += 1;
    }
    wr(&raw mut sc.keys[0].len, 16u8);
    wr(&raw mut sc.keys[1].len, 16u8);
    if rd(&raw const sc.buf[0]) != 0x01 {
        return APP_DENY_DICOM_MALFORMED;
    }
    if flags & APP_CHECK_CALLING != 0 && !allowed(&sc.keys[0]) {
        return APP_DENY_CALLING_AE;
    }
    if flags & APP_CHECK_CALLED != 0 && !allowed(&sc.keys[1]) {
        return APP_DENY_CALLED_AE;
    }
    ALLOWED
}

/// AE titles are space padded; a NUL pads as a space does.
#[inline(always)]
fn space(b: u8) -> u8 {
    if b == 0 { b' ' } else { b }
}

/// The key slot (0..4) of an MSH field number, 4 for fields not kept.
#[inline(always)]
fn hl7_slot(field: u32) -> u32 {
    match field {
        3 => 0,
        4 => 1,
        5 => 2,
        9 => 3,
        _ => 4,
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn hl7(
    ctx: &TcContext,
    sc: &mut Scratch,
    off: u32,
    len: u32,
    slot: u8,
    rule_id: u32,
    flags: u32,
) -> u32 {
    const SCAN: u32 = APP_HL7_SCAN as u32;
    clear_keys(sc);
    key_init(&mut sc.keys[0], slot, APP_FIELD_MSH3, rule_id);
    key_init(&mut sc.keys[1], slot, APP_FIELD_MSH4, rule_id);
    key_init(&mut sc.keys[2], slot, APP_FIELD_MSH5, rule_id);
    key_init(&mut sc.keys[3], slot, APP_FIELD_MSH9, rule_id);
    let avail = ctx.len().saturating_sub(off);
    let want = if len < avail { len } else { avail };
    // `0x0B MSH|^` at least.
    if want < 6 {
        return APP_DENY_HL7_MALFORMED;
    }
    // 1..=SCAN by arithmetic the verifier follows.
    let n = ((want.min(SCAN) - 1) & (SCAN - 1)) + 1;
    // Safety: the helper writes `n` <= SCAN bytes into the scratch buffer, or fails.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            off,
            sc.buf.as_mut_ptr().cast::<core::ffi::c_void>(),
            n,
        )
    };
    if r != 0 {
        return APP_DENY_HL7_MALFORMED;
    }
    let b = &raw const sc.buf;
    // Safety (these reads): inside the buffer.
    let head = unsafe {
        [
            rd((*b).as_ptr()),
            rd((*b).as_ptr().add(1)),
            rd((*b).as_ptr().add(2)),
            rd((*b).as_ptr().add(3)),
        ]
    };
    if head != [0x0b, b'M', b'S', b'H'] {
        return APP_DENY_HL7_MALFORMED;
    }
    let sep = rd(&raw const sc.buf[4]);
    let comp_sep = rd(&raw const sc.buf[5]);
    // Byte 5 starts MSH-2 (the encoding characters).
    wr(&raw mut sc.field, 2u32);
    wr(&raw mut sc.pos, 0u32);
    wr(&raw mut sc.comp, 0u32);
    wr(&raw mut sc.ended, 0u32);
    let mut i = 5u32;
    while i < SCAN {
        if i >= n {
            break;
        }
        let c = rd(&raw const sc.buf[(i & (SCAN - 1)) as usize]);
        let field = rd(&raw const sc.field);
        if c == b'\r' || c == b'\n' {
            wr(
                &raw mut sc.ended,
                rd(&raw const sc.ended) | 1 << (field & 15),
            );
            break;
        }
        if c == sep {
            wr(
                &raw mut sc.ended,
                rd(&raw const sc.ended) | 1 << (field & 15),
            );
            if field >= 9 {
                break;
            }
            wr(&raw mut sc.field, field + 1);
            wr(&raw mut sc.pos, 0u32);
            wr(&raw mut sc.comp, 0u32);
        } else {
            let k = hl7_slot(field);
            if k < 4 {
                // MSH-9: its first two components only (`ADT^A01` of `ADT^A01^ADT_A01`).
                let mut keep = true;
                if k == 3 && c == comp_sep {
                    let comp = rd(&raw const sc.comp) + 1;
                    wr(&raw mut sc.comp, comp);
                    keep = comp < 2;
                } else if k == 3 && rd(&raw const sc.comp) >= 2 {
                    keep = false;
                }
                if keep {
                    let p = rd(&raw const sc.pos);
                    let key = &mut sc.keys[(k & 3) as usize];
                    if p < APP_VALUE_LEN as u32 {
                        wr(
                            &raw mut key.value[(p & (APP_VALUE_LEN as u32 - 1)) as usize],
                            c,
                        );
                    }
                    // Longer than a key holds: `len` past APP_VALUE_LEN, never a match.
                    let p = if p > APP_VALUE_LEN as u32 {
                        APP_VALUE_LEN as u32
                    } else {
                        p
                    };
                    wr(&raw mut key.len, (p + 1) as u8);
                    wr(&raw mut sc.pos, p + 1);
                }
            }
        }
        i += 1;
    }
    let ended = rd(&raw const sc.ended);
    let fields = [
        (APP_CHECK_MSH3, 3u32, APP_DENY_MSH3),
        (APP_CHECK_MSH4, 4, APP_DENY_MSH4),
        (APP_CHECK_MSH5, 5, APP_DENY_MSH5),
        (APP_CHECK_MSH9, 9, APP_DENY_MSH9),
    ];
    let mut k = 0;
    while k < 4 {
        let (bit, field, why) = fields[k];
        if flags & bit != 0 {
            if ended & (1 << field) == 0 {
                return APP_DENY_HL7_MALFORMED;
            }
            if !allowed(&sc.keys[k]) {
                return why;
            }
        }
        k += 1;
    }
    ALLOWED
}

/// The refusal's event (rate-limited like every event of the device), with the fields read.
#[inline(always)]
fn report(
    ctx: &TcContext,
    s: &Seg,
    v: &CtValue,
    sc: &Scratch,
    why: u32,
    flags: u32,
    monitor: bool,
) {
    let now = v.last_seen_ns;
    if !crate::events::admit(v.device_id, EVENT_APP_REFUSED, now) {
        return;
    }
    let Some(mut entry) = WG_EVENTS_V1.reserve::<AppEvent>(0) else {
        crate::events::lost_ring(EVENT_APP_REFUSED);
        return;
    };
    let mac = crate::payload::load::<6>(ctx, 6).unwrap_or([0; 6]);
    let k = s.key;
    // The segment goes in the opening direction: its source is the opener.
    let opener_a = v.opener_is_a != 0;
    let r = entry.as_mut_ptr();
    // Safety: `r` points to the reserved record, valid until submitted; every field written.
    unsafe {
        let e = &raw mut (*r).event;
        (*e).ts_ns = now;
        (*e).kind = EVENT_APP_REFUSED;
        (*e).reason = if monitor {
            Reason::PassMonitorWouldDeny as u32
        } else {
            Reason::DropAppRefused as u32
        };
        (*e).device_id = v.device_id;
        (*e).policy_id = 0;
        (*e).rule_id = v.rule_id;
        (*e).generation = v.generation;
        (*e).family = k.family;
        (*e).proto = k.proto;
        (*e).direction = s.dir;
        (*e)._pad = 0;
        if opener_a {
            (*e).sport_be = k.a_port_be;
            (*e).dport_be = k.b_port_be;
            crate::copy::addr(&mut (*e).src, &k.a);
            crate::copy::addr(&mut (*e).dst, &k.b);
        } else {
            (*e).sport_be = k.b_port_be;
            (*e).dport_be = k.a_port_be;
            crate::copy::addr(&mut (*e).src, &k.b);
            crate::copy::addr(&mut (*e).dst, &k.a);
        }
        crate::copy::mac(&mut (*e).src_mac, &mac);
        (*e)._pad2 = [0; 2];
        (*r).why = why;
        (*r).app = flags & (APP_DICOM | APP_HL7);
        (*r)._pad = 0;
        let mut f = 0;
        while f < 4 {
            (*r).len[f] = rd(&raw const sc.keys[f].len);
            let src = sc.keys[f].value.as_ptr().cast::<u64>();
            let dst = (&raw mut (*r).fields[f]).cast::<u64>();
            let mut w = 0;
            while w < APP_VALUE_LEN / 8 {
                dst.add(w).write_unaligned(rd(src.add(w)));
                w += 1;
            }
            f += 1;
        }
    }
    entry.submit(0);
}

/// Answers the refused segment with two resets. The server's: a clone of the segment, its
/// payload cut, RST (seq = the segment's, which the server expects next; ACK as the segment's),
/// sent on its way (at ingress back into the interface's ingress, to be routed; at egress out
/// of the interface): a server that serves one association at a time is not left waiting for
/// a request that never comes. The client's: the segment itself, turned around (MACs,
/// addresses and ports swapped), RST|ACK with seq = the segment's ACK and ack = its end, sent
/// back where it came from: at ingress (from the device) out of the device's interface; at
/// egress (to the device) into the interface's ingress, as if the device had answered, so the
/// gateway routes it to the sender. Dropped when the packet cannot be rewritten.
#[inline(always)]
fn reset(ctx: &TcContext, s: &Seg, tcp: &[u8; 20], seg_len: u32) -> i32 {
    const SHOT: i32 = TC_ACT_SHOT;
    let flags = tcp[13];
    let seg_seq = [tcp[4], tcp[5], tcp[6], tcp[7]];
    let seg_ack = [tcp[8], tcp[9], tcp[10], tcp[11]];
    let acked = flags & TCP_ACK != 0;
    // Safety: skb helpers on this program's packet.
    if unsafe { bpf_skb_change_tail(ctx.as_ptr().cast(), s.l4 + 20, 0) } != 0 {
        return SHOT;
    }
    // Safety: the context is this program's skb.
    let ifindex = unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).ifindex };
    let from_device = s.dir == DIR_FROM_DEVICE;
    // The server's reset, as a clone (a failed clone leaves the server to its own timeout).
    let (server_flags, server_ack) = if acked {
        (TCP_RST | TCP_ACK, seg_ack)
    } else {
        (TCP_RST, [0; 4])
    };
    let ports = [tcp[0], tcp[1], tcp[2], tcp[3]];
    if rewrite(ctx, s, false, ports, seg_seq, server_ack, server_flags) {
        let to = if from_device { BPF_F_INGRESS } else { 0 };
        // Safety: a plain helper call; the packet is ours again once it returns.
        let _ = unsafe { bpf_clone_redirect(ctx.as_ptr().cast(), ifindex, to) };
    }
    // RFC 9293 3.10.7: the client's reset takes its sequence number from the segment's ACK
    // field, and acknowledges everything the segment carried.
    let seq = if acked { seg_ack } else { [0; 4] };
    let carried = seg_len + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
    let ack = u32::from_be_bytes(seg_seq)
        .wrapping_add(carried)
        .to_be_bytes();
    let swapped = [tcp[2], tcp[3], tcp[0], tcp[1]];
    if !rewrite(ctx, s, true, swapped, seq, ack, TCP_RST | TCP_ACK) {
        return SHOT;
    }
    let Some(eth) = crate::payload::load::<12>(ctx, 0) else {
        return SHOT;
    };
    let macs: [u8; 12] = [
        eth[6], eth[7], eth[8], eth[9], eth[10], eth[11], eth[0], eth[1], eth[2], eth[3], eth[4],
        eth[5],
    ];
    if store(ctx, 0, &macs) != 0 {
        return SHOT;
    }
    let to = if from_device { 0 } else { BPF_F_INGRESS };
    // Safety: a plain helper call.
    unsafe { bpf_redirect(ifindex, to) as i32 }
}

/// Writes the (already cut) packet's IP header, its addresses swapped when `swap`, and a
/// 20-byte TCP header with `ports`, `seq`, `ack` and `flags`, checksums computed afresh.
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    s: &Seg,
    swap: bool,
    ports: [u8; 4],
    seq: [u8; 4],
    ack: [u8; 4],
    flags: u8,
) -> bool {
    let (l3, l4) = (s.l3, s.l4);
    // As words: a byte array with six zeros in a row compiles to a `memset` call.
    let mut out: [u32; 5] = [
        u32::from_ne_bytes(ports),
        u32::from_ne_bytes(seq),
        u32::from_ne_bytes(ack),
        // Data offset 5 (no options), the flags, window 0.
        u32::from_ne_bytes([0x50, flags, 0, 0]),
        // Checksum (below) and urgent pointer.
        0,
    ];
    let mut sum: u32;
    if s.family == FAMILY_V4 {
        let Some(mut ip) = crate::payload::load::<20>(ctx, l3) else {
            return false;
        };
        let ihl = u32::from(ip[0] & 0x0f) * 4;
        if ihl != l4.wrapping_sub(l3) || ihl != 20 {
            return false;
        }
        let total = (20u16 + 20).to_be_bytes();
        ip[2] = total[0];
        ip[3] = total[1];
        ip[8] = 64;
        ip[10] = 0;
        ip[11] = 0;
        if swap {
            let mut i = 0;
            while i < 4 {
                ip.swap(12 + i, 16 + i);
                i += 1;
            }
        }
        let c = fold(add16(&ip, 0)).to_be_bytes();
        ip[10] = c[0];
        ip[11] = c[1];
        // Pseudo header: addresses, protocol, TCP length (20).
        sum = add16(&ip[12..20], 0) + 6 + 20;
        if store(ctx, l3, &ip) != 0 {
            return false;
        }
    } else {
        if l4 < l3 + 40 {
            return false;
        }
        let Some(mut ip) = crate::payload::load::<40>(ctx, l3) else {
            return false;
        };
        // Extension headers stay: the payload length counts them.
        let p = ((l4 - l3 - 40 + 20) as u16).to_be_bytes();
        ip[4] = p[0];
        ip[5] = p[1];
        ip[7] = 64;
        if swap {
            let mut i = 0;
            while i < 16 {
                ip.swap(8 + i, 24 + i);
                i += 1;
            }
        }
        sum = add16(&ip[8..40], 0) + 6 + 20;
        if store(ctx, l3, &ip) != 0 {
            return false;
        }
    }
    let mut i = 0;
    while i < 5 {
        let x = out[i].to_ne_bytes();
        sum += u32::from(u16::from_be_bytes([x[0], x[1]]))
            + u32::from(u16::from_be_bytes([x[2], x[3]]));
        i += 1;
    }
    let c = fold(sum).to_be_bytes();
    out[4] = u32::from_ne_bytes([c[0], c[1], 0, 0]);
    store_words(ctx, l4, &out) == 0
}

#[inline(always)]
fn store<const N: usize>(ctx: &TcContext, off: u32, bytes: &[u8; N]) -> i64 {
    // Safety: the helper reads N bytes from `bytes`.
    unsafe {
        bpf_skb_store_bytes(
            ctx.as_ptr().cast(),
            off,
            bytes.as_ptr().cast(),
            N as u32,
            BPF_F_RECOMPUTE_CSUM,
        )
    }
}

#[inline(always)]
fn store_words(ctx: &TcContext, off: u32, words: &[u32; 5]) -> i64 {
    // Safety: the helper reads 20 bytes from `words`.
    unsafe {
        bpf_skb_store_bytes(
            ctx.as_ptr().cast(),
            off,
            words.as_ptr().cast(),
            20,
            BPF_F_RECOMPUTE_CSUM,
        )
    }
}

/// One's complement sum of big-endian 16-bit words, onto `acc` (even lengths only).
#[inline(always)]
fn add16(b: &[u8], acc: u32) -> u32 {
    let mut s = acc;
    let mut i = 0;
    while i + 1 < b.len() {
        s += u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    s
}

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

const _: () = assert!(APP_DENY_KINDS == 9);
