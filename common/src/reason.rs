//! Verdict reasons. Every packet the datapath sees is counted under exactly one reason, and every
//! drop has one; the per-CPU `WG_STATS_V1` array is indexed by these values.

/// Why the datapath passed or dropped a packet. Values are stable: they are stored in events and
/// counters, so new reasons are appended and none is renumbered.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Forward packet of a tracked, still-valid flow.
    PassEstablished = 0,
    /// Reply packet of a tracked flow.
    PassReply = 1,
    /// New flow allowed by a policy rule.
    PassPolicy = 2,
    /// Device in learn mode: passed and reported as a new flow.
    PassLearn = 3,
    /// Device in monitor mode: the policy would deny it; passed and reported.
    PassMonitorWouldDeny = 4,
    /// ARP is never blocked.
    PassArp = 5,
    /// Management allowlist (gateway SSH, controller) is never blocked.
    PassMgmt = 6,
    /// Non-IP EtherType passed by configuration.
    PassNonIp = 7,
    /// Address not in the device table, gateway default is pass.
    PassUnknownDevice = 8,
    /// IPv6 neighbour/router discovery and multicast listener discovery (IPv6 control plane).
    PassNeighbour = 9,
    /// Spoofed source MAC for a device in learn or monitor mode: passed and reported.
    PassSpoofReported = 10,
    /// Later fragment of a datagram whose first fragment passed.
    PassFragment = 11,
    /// ICMP error (unreachable, time exceeded, parameter problem, packet too big) about a
    /// tracked flow: its inner header matched the flow's entry.
    PassRelated = 12,
    /// A known device (by MAC) at an address not listed for it, in learn or monitor mode:
    /// passed and reported as a new address.
    PassNewAddress = 13,
    /// A device over its cap of tracked flows, in learn or monitor mode: passed untracked.
    PassUntracked = 14,
    /// A flow established under an older generation that the active one denies, kept going
    /// for its device's grace (`DeviceInfo::grace_s`; do-not-disrupt).
    PassGrace = 15,
    /// Policy denies the flow (device in enforce mode).
    DropPolicy = 16,
    /// Device is quarantined.
    DropQuarantine = 17,
    /// Source address belongs to a device but the source MAC is not the device's.
    DropSpoof = 18,
    /// Address not in the device table, gateway default is drop.
    DropUnknownDevice = 19,
    /// Non-IP EtherType dropped by configuration.
    DropNonIp = 20,
    /// Truncated or malformed header.
    DropMalformed = 21,
    /// Non-first fragment from/to an enforced device whose first fragment did not pass here
    /// (or that would overlap the transport header): no ports to check.
    DropFragment = 22,
    /// 802.1Q / 802.1ad tagged frame and the gateway drops tagged frames (or more than two
    /// tags).
    DropVlan = 23,
    /// New flow of an enforced device that reached its cap of tracked flows.
    DropFlowCap = 24,
    /// A packet for the slow path and no slow-path program to judge it (the agent has not
    /// loaded one): nothing new is allowed without it.
    DropNoProgram = 25,
    /// A flow's application check (DICOM AE titles, HL7 MSH fields) refused it, or a later
    /// packet of a refused flow.
    DropAppRefused = 26,
    /// A DNS answer from one of the device's resolvers, held (taken off the wire) for the agent,
    /// which learns its addresses and sends it on (marked `DNS_REINJECT_MARK`).
    HoldDnsAnswer = 27,
    /// A DNS answer from one of the device's resolvers the gateway could not hold for learning
    /// (larger than `DNS_FRAME_MAX`, or the ring was full): passed, its names not learned.
    /// The one pass above 16: the values below were all taken (`is_drop`).
    PassDnsUnlearned = 28,
}

impl Reason {
    /// Size of the counters array; every discriminant is below it.
    pub const COUNT: u32 = 32;

    pub const ALL: [Reason; 29] = [
        Reason::PassEstablished,
        Reason::PassReply,
        Reason::PassPolicy,
        Reason::PassLearn,
        Reason::PassMonitorWouldDeny,
        Reason::PassArp,
        Reason::PassMgmt,
        Reason::PassNonIp,
        Reason::PassUnknownDevice,
        Reason::PassNeighbour,
        Reason::PassSpoofReported,
        Reason::PassFragment,
        Reason::PassRelated,
        Reason::PassNewAddress,
        Reason::PassUntracked,
        Reason::PassGrace,
        Reason::DropPolicy,
        Reason::DropQuarantine,
        Reason::DropSpoof,
        Reason::DropUnknownDevice,
        Reason::DropNonIp,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::DropVlan,
        Reason::DropFlowCap,
        Reason::DropNoProgram,
        Reason::DropAppRefused,
        Reason::HoldDnsAnswer,
        Reason::PassDnsUnlearned,
    ];

    /// Passes are below 16 and drops from 16 on, but for `PassDnsUnlearned` (28), added when
    /// the values below 16 had run out. `HoldDnsAnswer` is a drop: the answer leaves the wire.
    pub const fn is_drop(self) -> bool {
        let v = self as u32;
        v >= 16 && v != Reason::PassDnsUnlearned as u32
    }

    pub fn from_u32(v: u32) -> Option<Reason> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u32 == v {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassEstablished => "pass_established",
            Reason::PassReply => "pass_reply",
            Reason::PassPolicy => "pass_policy",
            Reason::PassLearn => "pass_learn",
            Reason::PassMonitorWouldDeny => "pass_monitor_would_deny",
            Reason::PassArp => "pass_arp",
            Reason::PassMgmt => "pass_mgmt",
            Reason::PassNonIp => "pass_non_ip",
            Reason::PassUnknownDevice => "pass_unknown_device",
            Reason::PassNeighbour => "pass_neighbour",
            Reason::PassSpoofReported => "pass_spoof_reported",
            Reason::PassFragment => "pass_fragment",
            Reason::PassRelated => "pass_related",
            Reason::PassNewAddress => "pass_new_address",
            Reason::PassUntracked => "pass_untracked",
            Reason::PassGrace => "pass_grace",
            Reason::DropPolicy => "drop_policy",
            Reason::DropQuarantine => "drop_quarantine",
            Reason::DropSpoof => "drop_spoof",
            Reason::DropUnknownDevice => "drop_unknown_device",
            Reason::DropNonIp => "drop_non_ip",
            Reason::DropMalformed => "drop_malformed",
            Reason::DropFragment => "drop_fragment",
            Reason::DropVlan => "drop_vlan",
            Reason::DropFlowCap => "drop_flow_cap",
            Reason::DropNoProgram => "drop_no_program",
            Reason::DropAppRefused => "drop_app_refused",
            Reason::HoldDnsAnswer => "hold_dns_answer",
            Reason::PassDnsUnlearned => "pass_dns_unlearned",
        }
    }
}
