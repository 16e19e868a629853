//! wardgate datapath: a TC classifier on ingress (packets from devices) and egress (packets to
//! devices) of each device-facing interface, enforcing a per-device flow allowlist.
//!
//! Order of checks, cheapest and most common first:
//! established fast path (an IPv4 flow cache hit read from the headers) -> parse (VLAN tags, ARP claims) -> IPv6 link-local control plane -> ICMP errors about tracked
//! flows -> flow cache -> conntrack -> device (by address, else by MAC) -> MAC of the device
//! side -> quarantine -> learn -> policy (two LPM lookups) -> management allowlist for what
//! would be dropped or reported -> conntrack entry (within the device's flow budget) -> event.
#![no_std]
#![no_main]
#![allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "aya's #[classifier] generates the extern entry taking the raw skb pointer"
)]

mod app;
mod budget;
mod claims;
mod clock;
mod conntrack;
mod copy;
mod dns;
mod events;
mod fast;
mod floor;
mod flowcache;
mod flows;
mod fragments;
mod icmp;
mod maps;
mod parse;
mod payload;
mod policy;
mod slow;
mod watchdog;

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use wardgate_common::{
    ACTION_DROP, CT_LEARNED, CT_MGMT, CT_WOULD_DENY, DEV_FAIL_OPEN, DIR_FROM_DEVICE, DeviceInfo,
    EVENT_DENY, EVENT_FLOW_CAP, EVENT_NEW_ADDRESS, EVENT_NEW_FLOW, EVENT_SPOOF,
    EVENT_UNKNOWN_DEVICE, EVENT_WOULD_DENY, FAMILY_V4, MODE_ENFORCE, MODE_LEARN, MODE_MONITOR,
    MODE_QUARANTINE, Reason, RuleValue,
};

use crate::{
    budget::Budget,
    claims::Claim,
    conntrack::Ct,
    events::Report,
    icmp::{Control, LinkLayer},
    maps::{WG_ACTIVE_V2, WG_CONFIG_V3, WG_STATS_V1},
    parse::{Arp, Packet, Parsed, parse},
};

// The macro's inner function, inlined into the entry: as a subprogram (LLVM no longer inlined
// it once the program grew) every packet paid a BPF-to-BPF call, which in a program with tail
// calls also carries the tail-call counter across.
#[classifier]
#[inline(always)]
pub fn wg_ingress(ctx: TcContext) -> i32 {
    classify(&ctx, DIR_FROM_DEVICE)
}

#[classifier]
#[inline(always)]
pub fn wg_egress(ctx: TcContext) -> i32 {
    classify(&ctx, wardgate_common::DIR_TO_DEVICE)
}

/// Inspection of an established packet's payload (`payload.rs`): its own program, reached by a
/// tail call after the verdict, so the verifier walks it once and not once per parse path of
/// the classifiers (inline or as a subprogram it took them past the 1M-instruction limit).
#[classifier]
pub fn wg_payload(ctx: TcContext) -> i32 {
    payload::inspect(&ctx)
}

/// The slow path (`slow.rs`): a packet no flow-cache or conntrack entry decides, tail-called
/// by the classifiers.
#[classifier]
#[inline(always)]
pub fn wg_slow(ctx: TcContext) -> i32 {
    slow_path(&ctx)
}

/// What the classifier decides itself, or `Slow`: `wg_slow` decides.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Verdict,
    /// After the verdict, `wg_payload` reads the payload.
    Inspect,
    Slow,
}

#[inline(always)]
fn classify(ctx: &TcContext, dir: u8) -> i32 {
    let active = active();
    // Most packets of a steady flow end here (`fast.rs`).
    if let Some(reason) = fast::established(ctx, dir, active.1) {
        return verdict(reason);
    }
    let mut next = Next::Verdict;
    let reason = decide(ctx, dir, active, &mut next);
    if next == Next::Slow {
        slow::hand_over(ctx);
        // Only if the tail call failed: `reason` is `DropNoProgram`.
    }
    let v = verdict(reason);
    if next == Next::Inspect {
        payload::hand_over(ctx, v, reason)
    } else {
        v
    }
}

#[inline(always)]
fn slow_path(ctx: &TcContext) -> i32 {
    let Some(r) = slow::taken() else {
        return verdict(Reason::DropNoProgram);
    };
    let pkt = &r.pkt;
    let flow = Flow {
        pkt,
        dir: r.dir,
        flow_dir: r.flow_dir,
        slot: r.slot,
        generation: r.generation,
        now: r.now,
        ct: r.ct(),
        inspect: core::cell::Cell::new(false),
    };
    let mut report = Report::new(pkt, r.dir, r.generation, r.now);
    let (reason, event) = evaluate(&flow, &mut report);
    if event != 0 {
        report.send(event, reason);
    }
    // The first fragment of a datagram passed: its later fragments (no ports) may follow.
    if pkt.more_fragments && !pkt.fragment && !reason.is_drop() {
        fragments::remember(pkt, r.now);
    }
    let v = verdict(reason);
    if flow.inspect.get() {
        payload::hand_over(ctx, v, reason)
    } else {
        v
    }
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
fn active() -> (u32, u32) {
    let word = WG_ACTIVE_V2.get(0).copied().unwrap_or(0);
    (word & 1, word >> 1)
}

#[inline(always)]
fn decide(ctx: &TcContext, dir: u8, active: (u32, u32), next: &mut Next) -> Reason {
    let mut slot = MaybeUninit::<Packet>::uninit();
    let pkt = match parse(ctx, &mut slot) {
        // Safety: `parse` wrote the packet before returning `Ip`.
        Parsed::Ip => unsafe { slot.assume_init_ref() },
        Parsed::Arp(arp, frame_mac) => return arp_claim(&arp, frame_mac, dir, &mut slot),
        // ARP for another protocol or address size: nothing a device needs, and nothing to check
        // its claim against, so it does not leave the device (toward it, it is the gateway's).
        Parsed::OtherArp => {
            return if dir == DIR_FROM_DEVICE {
                Reason::DropMalformed
            } else {
                Reason::PassArp
            };
        }
        Parsed::NonIp => {
            let drop = WG_CONFIG_V3
                .get(0)
                .is_some_and(|c| c.non_ip_action == ACTION_DROP);
            return if drop {
                Reason::DropNonIp
            } else {
                Reason::PassNonIp
            };
        }
        Parsed::Vlan => return Reason::DropVlan,
        Parsed::Malformed => return Reason::DropMalformed,
    };
    let reason = decide_ip(ctx, pkt, dir, active, next);
    // The first fragment of a datagram passed: its later fragments (no ports) may follow.
    if pkt.more_fragments && !pkt.fragment && !reason.is_drop() {
        fragments::remember(pkt, clock::now());
    }
    reason
}

/// ARP from a device: its sender claim must be its own listed address (or a probe). ARP to
/// devices comes from the gateway itself and passes.
#[inline(always)]
fn arp_claim(arp: &Arp, frame_mac: [u8; 6], dir: u8, slot: &mut MaybeUninit<Packet>) -> Reason {
    if dir != DIR_FROM_DEVICE {
        return Reason::PassArp;
    }
    let (policy_slot, generation) = active();
    let claim = claims::arp(policy_slot, arp.sender_ip, arp.sender_mac, frame_mac);
    if matches!(claim, Claim::Fine) {
        return Reason::PassArp;
    }
    // The event names the claimed address as source and the asked-for one as destination; its
    // ports carry the ARP operation (1 request, 2 reply). Written into the parser's slot (ARP
    // left it unused): a second packet on the stack would not fit the verifier's 512 bytes.
    let pkt = parse::zeroed(slot);
    pkt.family = FAMILY_V4;
    pkt.src = claims::v4_addr(arp.sender_ip);
    pkt.dst = claims::v4_addr(arp.target_ip);
    pkt.sport_be = arp.operation_be;
    pkt.dport_be = arp.operation_be;
    pkt.src_mac = frame_mac;
    pkt.dst_mac = arp.sender_mac;
    let pkt = &*pkt;
    let mut report = Report::new(pkt, dir, generation, clock::now());
    let (reason, event) = claim_verdict(&claim, &mut report);
    report.send(event, reason);
    reason
}

#[inline(always)]
fn claim_verdict(claim: &Claim, report: &mut Report) -> (Reason, u32) {
    match claim {
        Claim::Fine => (Reason::PassArp, 0),
        Claim::Spoof { dev, drop } => {
            report.device(dev);
            let reason = if *drop {
                Reason::DropSpoof
            } else {
                Reason::PassSpoofReported
            };
            (reason, EVENT_SPOOF)
        }
        Claim::NewAddress(dev) => {
            report.device(dev);
            (Reason::PassNewAddress, EVENT_NEW_ADDRESS)
        }
        Claim::Malformed => (Reason::DropMalformed, 0),
    }
}

/// What a packet's decision is made of.
pub(crate) struct Flow<'a> {
    pkt: &'a Packet,
    /// The hook: `DIR_FROM_DEVICE` at ingress, `DIR_TO_DEVICE` at egress.
    dir: u8,
    /// Direction of the packet that opened the flow (the packet's own without an entry).
    flow_dir: u8,
    slot: u32,
    generation: u32,
    now: u64,
    ct: Ct,
    /// Set when the packet made a new inspected entry: it goes to `wg_payload` too.
    inspect: core::cell::Cell<bool>,
}

impl Flow<'_> {
    fn is_from_device(&self) -> bool {
        self.dir == DIR_FROM_DEVICE
    }

    /// A reply whose entry must be re-checked: judged in the direction that opened the flow.
    fn reply(&self) -> bool {
        self.ct == Ct::StaleReply
    }

    /// The port the policy is written for: the destination port of the flow's first packet.
    fn port_be(&self) -> [u8; 2] {
        if self.reply() {
            self.pkt.sport_be
        } else {
            self.pkt.dport_be
        }
    }

    fn remote(&self) -> &[u8; 16] {
        if self.is_from_device() {
            &self.pkt.dst
        } else {
            &self.pkt.src
        }
    }

    fn device_addr(&self) -> &[u8; 16] {
        if self.is_from_device() {
            &self.pkt.src
        } else {
            &self.pkt.dst
        }
    }
}

#[inline(always)]
fn decide_ip(
    ctx: &TcContext,
    pkt: &Packet,
    dir: u8,
    (slot, generation): (u32, u32),
    next: &mut Next,
) -> Reason {
    let now = clock::now();
    let from_device = dir == DIR_FROM_DEVICE;

    // A resolver's answer to a device with `dns:` rules: held for the agent (`dns.rs`).
    if !from_device
        && pkt.sport_be[1] == 53
        && let Some(reason) = dns::hold(ctx, pkt, slot, now)
    {
        return reason;
    }

    // ICMP only (TCP and UDP have type 0, as has an echo reply): one compare on the fast path.
    if pkt.icmp_type != 0 {
        // IPv6's link-local control plane, only when it is what it claims to be; anything else
        // with those types is judged like any packet.
        match icmp::control(pkt, from_device) {
            Control::Listener => return Reason::PassNeighbour,
            Control::Neighbour => {
                if !from_device {
                    return Reason::PassNeighbour;
                }
                let claim = neighbour_claim(ctx, pkt, slot);
                if matches!(claim, Claim::Fine) {
                    return Reason::PassNeighbour;
                }
                let mut report = Report::new(pkt, dir, generation, now);
                let (reason, event) = claim_verdict(&claim, &mut report);
                report.send(event, reason);
                return reason;
            }
            Control::None => {}
        }
        // An ICMP error about a tracked flow of this device (path MTU, unreachable).
        if icmp::is_error(pkt)
            && icmp::quoted(ctx, pkt)
                .is_some_and(|inner| conntrack::related(&inner, pkt, dir, generation, now))
        {
            return Reason::PassRelated;
        }
    }
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
        Ct::EstablishedInspect => {
            *next = Next::Inspect;
            return Reason::PassEstablished;
        }
        Ct::ReplyInspect => {
            *next = Next::Inspect;
            return Reason::PassReply;
        }
        _ => {}
    }

    if slow::request(pkt, dir, flow_dir, slot, generation, now, ct) {
        *next = Next::Slow;
    }
    Reason::DropNoProgram
}

/// A neighbour or router discovery message (or redirect) from a device: its source address and,
/// for an advertisement, its target must not belong to another device, and every link-layer
/// address option must be the sender's own MAC.
#[inline(always)]
fn neighbour_claim(ctx: &TcContext, pkt: &Packet, slot: u32) -> Claim {
    let source = claims::check(slot, pkt.family, &pkt.src, pkt.src_mac, pkt.src_mac, false);
    if !matches!(source, Claim::Fine) {
        return source;
    }
    match icmp::link_layer(ctx, pkt) {
        LinkLayer::Own => {}
        LinkLayer::Other => {
            return claims::foreign_link_layer(slot, pkt.family, &pkt.src, pkt.src_mac);
        }
        LinkLayer::Malformed => return Claim::Malformed,
    }
    match icmp::advert_target(ctx, pkt) {
        Some(target) => claims::advert(slot, &target, pkt.src_mac, pkt.src_mac),
        None => Claim::Fine,
    }
}

/// Addresses that identify a device: everything but what the gateway never forwards (0.0.0.0
/// of DHCP, a martian for Linux; IPv6 unspecified, link-local and multicast sources, which
/// ip6_forward refuses). IPv4 link-local (169.254/16) is forwarded by Linux, so it counts: an
/// enforced device cannot send one-way traffic from it.
#[inline(always)]
fn routable(family: u8, a: &[u8; 16]) -> bool {
    if family == FAMILY_V4 {
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]) != 0
    } else {
        !icmp::v6_unspecified(a) && !icmp::v6_link_local(a) && a[0] != 0xff
    }
}

/// The management allowlist (local agent config, not generation-switched) opens flows from a
/// management host to a device on the listed protocol and port: always the destination port of
/// the flow's first packet, never a source port an inbound packet chooses. It is one-way: a
/// device (a quarantined one too) reaches a management host only where its profile says so.
#[inline(always)]
fn management(f: &Flow) -> bool {
    f.flow_dir != DIR_FROM_DEVICE && management_either_way(f)
}

/// The allowlist for a host that is no device (no profile to ask): both directions, as the
/// operator's local config lists them (`fail_mode: hold` lets DHCP through this way).
#[inline(always)]
fn management_either_way(f: &Flow) -> bool {
    !f.pkt.fragment && policy::mgmt_allows(f.pkt.family, f.pkt.proto, f.port_be(), f.remote())
}

/// Tracks the flow for `dev` if its budget allows: `None`, or the verdict over the cap.
#[inline(always)]
fn track(
    f: &Flow,
    dev: &DeviceInfo,
    rule: Option<&RuleValue>,
    flags: u32,
) -> Option<(Reason, u32)> {
    // Only a new entry takes a place (a re-checked one has its own). Management flows count
    // too: an allowlisted host cannot hold a device's whole budget.
    if f.ct == Ct::Miss
        && let Budget::Over(first) = budget::admit(dev)
    {
        let event = if first { EVENT_FLOW_CAP } else { 0 };
        if dev.mode >= MODE_ENFORCE {
            return Some((Reason::DropFlowCap, event));
        }
        // Passed but not tracked: never silently; sampled into the flow records, all counted.
        if !f.reply() {
            conntrack::untracked(f.pkt, f.dir, f.generation, f.now, dev, flags);
        }
        return Some((Reason::PassUntracked, event));
    }
    let handed = conntrack::commit(
        f.ct,
        f.pkt,
        f.dir,
        f.flow_dir,
        f.generation,
        f.now,
        dev,
        rule,
        flags,
    );
    if handed {
        f.inspect.set(true);
    }
    None
}

/// The slow path: device, spoofing, mode, policy, management. Returns the reason and the event
/// to report (0 = none); conntrack entries are created or dropped here.
#[inline(always)]
fn evaluate(f: &Flow, report: &mut Report) -> (Reason, u32) {
    let pkt = f.pkt;
    let dev_mac = pkt.dev_mac(f.is_from_device());
    let dev = match policy::device(f.slot, pkt.family, f.device_addr()) {
        Some(dev) if dev.mac == dev_mac => dev,
        Some(owner) => return borrowed(f, owner, dev_mac, report),
        None => match unlisted(f, dev_mac, report) {
            Identity::Device(dev) => dev,
            Identity::Verdict(verdict) => return verdict,
        },
    };
    report.device(dev);

    if dev.mode == MODE_QUARANTINE {
        if management(f) {
            return track(f, dev, None, CT_MGMT).unwrap_or((Reason::PassMgmt, 0));
        }
        // Quarantine ends any grace: the entry goes, so nothing resumes it later.
        conntrack::forget(f.ct, pkt, f.dir);
        if !f.reply() {
            conntrack::denied(pkt, f.dir, f.generation, f.now, dev);
        }
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

    let reply = f.reply();
    if dev.mode == MODE_LEARN {
        if let Some(over) = track(f, dev, None, CT_LEARNED) {
            return over;
        }
        return (Reason::PassLearn, if reply { 0 } else { EVENT_NEW_FLOW });
    }
    match policy::lookup(
        f.slot,
        dev,
        f.flow_dir,
        pkt.family,
        f.remote(),
        pkt.proto,
        f.port_be(),
        f.now,
    ) {
        Some(rule) => {
            report.rule(rule.rule_id);
            if let Some(over) = track(f, dev, Some(&rule), 0) {
                return over;
            }
            let pass = if reply {
                Reason::PassReply
            } else {
                Reason::PassPolicy
            };
            let event = if dev.mode == MODE_MONITOR && !reply {
                EVENT_NEW_FLOW
            } else {
                0
            };
            (pass, event)
        }
        None if management(f) => track(f, dev, None, CT_MGMT).unwrap_or((Reason::PassMgmt, 0)),
        // Failing open (the agent's heartbeat is stale and the profile says so): monitored,
        // passed but never tracked, so enforcement resumes on the flow's next packet once the
        // heartbeat is back. Asked only here, so allowed flows never pay for the watchdog.
        None if dev.mode == MODE_ENFORCE
            && dev.flags & DEV_FAIL_OPEN != 0
            && watchdog::degraded(f) =>
        {
            (Reason::PassMonitorWouldDeny, EVENT_WOULD_DENY)
        }
        None if dev.mode == MODE_MONITOR => track(f, dev, None, CT_WOULD_DENY)
            .unwrap_or((Reason::PassMonitorWouldDeny, EVENT_WOULD_DENY)),
        // Do-not-disrupt: an established flow of an older generation keeps going for the
        // device's grace; new flows follow the active generation at once.
        None if conntrack::grace(f.ct, pkt, f.dir, f.generation, f.now, dev) => {
            (Reason::PassGrace, 0)
        }
        None => {
            conntrack::forget(f.ct, pkt, f.dir);
            if !reply {
                conntrack::denied(pkt, f.dir, f.generation, f.now, dev);
            }
            (Reason::DropPolicy, EVENT_DENY)
        }
    }
}

/// A listed address on a frame whose device-side MAC is not its owner's. From the device: a
/// forged source. To the device: its traffic sent to another MAC (a poisoned neighbour cache);
/// traffic to a device goes only to its own MAC. The frame is judged as the device its MAC
/// belongs to, whatever address it carries: dropped when that device or the address's owner is
/// enforced (or quarantined), reported as spoofing by the MAC's device (the owner's name only
/// when the MAC is nobody's), so a borrowed learn-mode address is no way out for an enforced
/// device and the alert blames the borrower, not the victim.
#[inline(always)]
fn borrowed(f: &Flow, owner: &DeviceInfo, dev_mac: [u8; 6], report: &mut Report) -> (Reason, u32) {
    let mut enforced = owner.mode >= MODE_ENFORCE;
    match policy::device_by_mac(f.slot, dev_mac) {
        Some(s) => {
            enforced |= s.mode >= MODE_ENFORCE;
            report.device(s);
        }
        None => report.device(owner),
    }
    let reason = if enforced {
        Reason::DropSpoof
    } else {
        Reason::PassSpoofReported
    };
    (reason, EVENT_SPOOF)
}

/// Who an address missing from the device table is.
enum Identity {
    /// A device, judged as usual (its mode, its policy).
    Device(&'static DeviceInfo),
    /// Already decided.
    Verdict((Reason, u32)),
}

/// The device-side address is not in the device table. A known MAC there is that device at an
/// address not listed for it: spoofing when it is enforced, a new address to report when it is
/// learning or monitored. An IPv6 link-local source from a known MAC is that device, judged by
/// its mode and policy: link-local traffic never leaves the link, so it can only be meant for
/// the gateway itself, whose services an enforced or quarantined device reaches only where its
/// policy says so. Otherwise the gateway default for unknown devices applies.
#[inline(always)]
fn unlisted(f: &Flow, dev_mac: [u8; 6], report: &mut Report) -> Identity {
    let pkt = f.pkt;
    let addr = f.device_addr();
    if routable(pkt.family, addr)
        && let Some(dev) = policy::device_by_mac(f.slot, dev_mac)
    {
        report.device(dev);
        if dev.mode >= MODE_ENFORCE {
            return Identity::Verdict((Reason::DropSpoof, EVENT_SPOOF));
        }
        if let Some(over) = track(f, dev, None, CT_LEARNED) {
            return Identity::Verdict(over);
        }
        return Identity::Verdict((
            Reason::PassNewAddress,
            if f.reply() { 0 } else { EVENT_NEW_ADDRESS },
        ));
    }
    if f.is_from_device()
        && pkt.family != FAMILY_V4
        && icmp::v6_link_local(addr)
        && let Some(dev) = policy::device_by_mac(f.slot, dev_mac)
    {
        return Identity::Device(dev);
    }
    Identity::Verdict(unknown(f, dev_mac))
}

/// No device: the management allowlist, else the gateway default for unknown devices.
#[inline(always)]
fn unknown(f: &Flow, dev_mac: [u8; 6]) -> (Reason, u32) {
    if management_either_way(f) {
        let unknown = DeviceInfo {
            device_id: 0,
            policy_id: 0,
            mode: MODE_ENFORCE,
            flags: 0,
            mac: dev_mac,
            _pad: [0; 2],
            max_flows: 0,
            grace_s: 0,
        };
        return track(f, &unknown, None, CT_MGMT).unwrap_or((Reason::PassMgmt, 0));
    }
    let drop = WG_CONFIG_V3
        .get(0)
        .is_some_and(|c| c.unknown_action == ACTION_DROP);
    let reason = if drop {
        Reason::DropUnknownDevice
    } else {
        Reason::PassUnknownDevice
    };
    (reason, EVENT_UNKNOWN_DEVICE)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
