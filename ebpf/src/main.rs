//! wardgate datapath: a TC classifier on ingress (packets from devices) and egress (packets to
//! devices) of each device-facing interface, enforcing a per-device flow allowlist.
//!
//! Order of checks, cheapest and most common first:
//! parse -> IPv6 neighbour discovery -> conntrack fast path -> management allowlist -> device ->
//! spoofed MAC -> quarantine -> learn -> policy (two LPM lookups) -> conntrack entry + event.
#![no_std]
#![no_main]

mod conntrack;
mod events;
mod maps;
mod parse;
mod policy;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_ktime_get_ns,
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
    if pkt.proto == PROTO_ICMPV6 && (133..=137).contains(&pkt.icmp_type) {
        return Reason::PassNeighbour;
    }
    let slot = WG_ACTIVE_V1.get(0).copied().unwrap_or(0) & 1;
    let generation = WG_SLOTS_V1.get(slot).map_or(0, |m| m.generation);
    // Safety: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };

    let (ct, flow_dir) = if pkt.fragment {
        (Ct::Miss, dir)
    } else {
        conntrack::lookup(&pkt, dir, generation, now)
    };
    match ct {
        Ct::Established => return Reason::PassEstablished,
        Ct::Reply => return Reason::PassReply,
        _ => {}
    }

    let from_device = dir == DIR_FROM_DEVICE;
    let (remote, remote_port_be) = if from_device {
        (&pkt.dst, pkt.dport_be)
    } else {
        (&pkt.src, pkt.sport_be)
    };
    if policy::mgmt_allows(pkt.family, pkt.proto, remote_port_be, remote) {
        return Reason::PassMgmt;
    }

    let device_addr = if from_device { &pkt.src } else { &pkt.dst };
    let mut report = Report::new(&pkt, dir, generation, now);
    let Some(dev) = policy::device(slot, pkt.family, device_addr) else {
        let drop = WG_CONFIG_V1
            .get(0)
            .is_some_and(|c| c.unknown_action == ACTION_DROP);
        let reason = if drop {
            Reason::DropUnknownDevice
        } else {
            Reason::PassUnknownDevice
        };
        report.send(EVENT_UNKNOWN_DEVICE, reason);
        return reason;
    };
    report.device(&dev);

    if from_device && dev.mac != pkt.src_mac {
        let reason = if dev.mode >= MODE_ENFORCE {
            Reason::DropSpoof
        } else {
            Reason::PassSpoofReported
        };
        report.send(EVENT_SPOOF, reason);
        return reason;
    }
    if dev.mode == MODE_QUARANTINE {
        report.send(EVENT_DENY, Reason::DropQuarantine);
        return Reason::DropQuarantine;
    }
    if pkt.fragment {
        // No ports to check: only devices that are not enforced let fragments through.
        return match dev.mode {
            MODE_LEARN => Reason::PassLearn,
            MODE_MONITOR => {
                report.send(EVENT_WOULD_DENY, Reason::DropFragment);
                Reason::PassMonitorWouldDeny
            }
            _ => {
                report.send(EVENT_DENY, Reason::DropFragment);
                Reason::DropFragment
            }
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
        conntrack::commit(ct, &pkt, flow_dir, generation, now, &dev, None, CT_LEARNED);
        if !reply {
            report.send(EVENT_NEW_FLOW, Reason::PassLearn);
        }
        return Reason::PassLearn;
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
            conntrack::commit(ct, &pkt, flow_dir, generation, now, &dev, Some(&rule), 0);
            report.rule(rule.rule_id);
            if dev.mode == MODE_MONITOR && !reply {
                report.send(EVENT_NEW_FLOW, pass);
            }
            pass
        }
        None if dev.mode == MODE_MONITOR => {
            conntrack::commit(
                ct,
                &pkt,
                flow_dir,
                generation,
                now,
                &dev,
                None,
                CT_WOULD_DENY,
            );
            report.send(EVENT_WOULD_DENY, Reason::PassMonitorWouldDeny);
            Reason::PassMonitorWouldDeny
        }
        None => {
            conntrack::forget(ct, &pkt);
            report.send(EVENT_DENY, Reason::DropPolicy);
            Reason::DropPolicy
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
