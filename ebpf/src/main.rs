//! wardgate datapath: a TC classifier on ingress (packets from devices) and egress (packets to
//! devices) of each device-facing interface, enforcing a per-device flow allowlist.
//!
//! Order of checks, cheapest and most common first:
//! parse -> IPv6 neighbour discovery -> flow cache -> conntrack -> device -> spoofed MAC ->
//! quarantine -> learn -> policy (two LPM lookups) -> conntrack entry; then, only for packets
//! that would be dropped or reported, the management allowlist -> event.
#![no_std]
#![no_main]
#![allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "aya's #[classifier] generates the extern entry taking the raw skb pointer"
)]

mod clock;
mod conntrack;
mod events;
mod floor;
mod flowcache;
mod fragments;
mod maps;
mod parse;
mod policy;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use wardgate_common::{
    ACTION_DROP, CT_LEARNED, CT_WOULD_DENY, DIR_FROM_DEVICE, DIR_TO_DEVICE, EVENT_DENY,
    EVENT_NEW_FLOW, EVENT_SPOOF, EVENT_UNKNOWN_DEVICE, EVENT_WOULD_DENY, MODE_ENFORCE, MODE_LEARN,
    MODE_MONITOR, MODE_QUARANTINE, PROTO_ICMPV6, Reason,
};

use crate::{
    conntrack::Ct,
    events::Report,
    maps::{WG_ACTIVE_V1, WG_CONFIG_V1, WG_SLOTS_V1, WG_STATS_V1},
    parse::{Parsed, parse},
};

#[classifier]
pub fn wg_ingress(ctx: TcContext) -> i32 {
    verdict(decide(&ctx, DIR_FROM_DEVICE))
}

#[classifier]
pub fn wg_egress(ctx: TcContext) -> i32 {
    verdict(decide(&ctx, DIR_TO_DEVICE))
}

/// Baseline for benchmarks: the cheapest possible classifier.
#[classifier]
pub fn wg_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

#[inline(always)]
fn verdict(reason: Reason) -> i32 {
    if let Some(counter) = WG_STATS_V1.get_ptr_mut(reason as u32) {
        // Safety: per-CPU slot of this CPU; no other writer while we run.
        unsafe { *counter += 1 };
    }
    if reason.is_drop() {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

#[inline(always)]
fn decide(ctx: &TcContext, dir: u8) -> Reason {
    let pkt = match parse(ctx) {
        Parsed::Ip(pkt) => pkt,
        Parsed::Arp => return Reason::PassArp,
        Parsed::NonIp => {
            let drop = WG_CONFIG_V1
                .get(0)
                .is_some_and(|c| c.non_ip_action == ACTION_DROP);
            return if drop {
                Reason::DropNonIp
            } else {
                Reason::PassNonIp
            };
        }
        Parsed::Malformed => return Reason::DropMalformed,
    };
    let reason = decide_ip(&pkt, dir);
    // The first fragment of a datagram passed: its later fragments (no ports) may follow.
    if pkt.more_fragments && !pkt.fragment && !reason.is_drop() {
        fragments::remember(&pkt, clock::now());
    }
    reason
}

#[inline(always)]
fn decide_ip(pkt: &parse::Packet, dir: u8) -> Reason {
    // IPv6 control plane: neighbour/router discovery (133-137) and multicast listener
    // discovery (130-132, 143). Without them IPv6 does not work at all.
    if pkt.proto == PROTO_ICMPV6 && matches!(pkt.icmp_type, 130..=137 | 143) {
        return Reason::PassNeighbour;
    }
    let slot = WG_ACTIVE_V1.get(0).copied().unwrap_or(0) & 1;
    let generation = WG_SLOTS_V1.get(slot).map_or(0, |m| m.generation);
    let now = clock::now();

    let (ct, flow_dir) = if pkt.fragment {
        if fragments::admitted(pkt, dir, now) {
            return Reason::PassFragment;
        }
        (Ct::Miss, dir)
    } else {
        let fkey = flowcache::key(pkt, dir);
        if !flowcache::bypass(pkt) {
            match flowcache::lookup(&fkey, pkt, dir, generation, now) {
                Some(false) => return Reason::PassEstablished,
                Some(true) => return Reason::PassReply,
                None => {}
            }
        }
        conntrack::lookup(pkt, &fkey, dir, generation, now)
    };
    match ct {
        Ct::Established => return Reason::PassEstablished,
        Ct::Reply => return Reason::PassReply,
        _ => {}
    }

    let from_device = dir == DIR_FROM_DEVICE;
    let mut report = Report::new(pkt, dir, generation, now);
    let (reason, event) = evaluate(pkt, dir, slot, generation, now, ct, flow_dir, &mut report);
    // The management allowlist is never blocked (nor reported). It is checked only where a
    // packet would otherwise be dropped or reported, keeping an LPM lookup off the allowed path.
    if (reason.is_drop() || (event != 0 && event != EVENT_NEW_FLOW)) && {
        let (remote, remote_port_be) = if from_device {
            (&pkt.dst, pkt.dport_be)
        } else {
            (&pkt.src, pkt.sport_be)
        };
        policy::mgmt_allows(pkt.family, pkt.proto, remote_port_be, remote)
    } {
        return Reason::PassMgmt;
    }
    if event != 0 {
        report.send(event, reason);
    }
    reason
}

/// The slow path: device, spoofing, mode and policy. Returns the reason and the event to
/// report (0 = none); conntrack entries are created or dropped here.
#[allow(clippy::too_many_arguments, reason = "plain values of one decision")]
#[inline(always)]
fn evaluate(
    pkt: &parse::Packet,
    dir: u8,
    slot: u32,
    generation: u32,
    now: u64,
    ct: Ct,
    flow_dir: u8,
    report: &mut Report,
) -> (Reason, u32) {
    let from_device = dir == DIR_FROM_DEVICE;
    let remote = if from_device { &pkt.dst } else { &pkt.src };
    let device_addr = if from_device { &pkt.src } else { &pkt.dst };
    let Some(dev) = policy::device(slot, pkt.family, device_addr) else {
        let drop = WG_CONFIG_V1
            .get(0)
            .is_some_and(|c| c.unknown_action == ACTION_DROP);
        let reason = if drop {
            Reason::DropUnknownDevice
        } else {
            Reason::PassUnknownDevice
        };
        return (reason, EVENT_UNKNOWN_DEVICE);
    };
    report.device(&dev);

    if from_device && dev.mac != pkt.src_mac {
        let reason = if dev.mode >= MODE_ENFORCE {
            Reason::DropSpoof
        } else {
            Reason::PassSpoofReported
        };
        return (reason, EVENT_SPOOF);
    }
    if dev.mode == MODE_QUARANTINE {
        return (Reason::DropQuarantine, EVENT_DENY);
    }
    if pkt.fragment {
        // No ports to check: only devices that are not enforced let fragments through.
        return match dev.mode {
            MODE_LEARN => (Reason::PassLearn, 0),
            MODE_MONITOR => (Reason::PassMonitorWouldDeny, EVENT_WOULD_DENY),
            _ => (Reason::DropFragment, EVENT_DENY),
        };
    }

    // The policy is written for the flow's first packet: a stale reply entry is re-checked in
    // the direction of the packet that opened the flow, with that packet's destination port.
    let reply = ct == Ct::StaleReply;
    let port_be = if reply { pkt.sport_be } else { pkt.dport_be };
    let pass = if reply {
        Reason::PassReply
    } else {
        Reason::PassPolicy
    };

    if dev.mode == MODE_LEARN {
        conntrack::commit(ct, pkt, flow_dir, generation, now, &dev, None, CT_LEARNED);
        return (Reason::PassLearn, if reply { 0 } else { EVENT_NEW_FLOW });
    }
    match policy::lookup(
        slot,
        dev.policy_id,
        flow_dir,
        pkt.family,
        remote,
        pkt.proto,
        port_be,
    ) {
        Some(rule) => {
            conntrack::commit(ct, pkt, flow_dir, generation, now, &dev, Some(&rule), 0);
            report.rule(rule.rule_id);
            let event = if dev.mode == MODE_MONITOR && !reply {
                EVENT_NEW_FLOW
            } else {
                0
            };
            (pass, event)
        }
        None if dev.mode == MODE_MONITOR => {
            conntrack::commit(
                ct,
                pkt,
                flow_dir,
                generation,
                now,
                &dev,
                None,
                CT_WOULD_DENY,
            );
            (Reason::PassMonitorWouldDeny, EVENT_WOULD_DENY)
        }
        None => {
            conntrack::forget(ct, pkt);
            (Reason::DropPolicy, EVENT_DENY)
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
