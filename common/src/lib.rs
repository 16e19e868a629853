//! Types shared by the wardgate eBPF datapath and user space.
//!
//! Every BPF map key, value and event lives here, once. All types are `#[repr(C)]`, `Copy`, with
//! explicit padding and a compile-time size check, so the kernel and user-space views can never
//! drift apart. Fields in network byte order end in `_be`; addresses are raw network-order bytes.
//! The only code that converts between these layouts and Rust types is `agent::datapath::convert`.
#![no_std]

pub mod reason;

pub use reason::Reason;

/// Where maps and links are pinned. The agent adopts whatever it finds here and never flushes it.
pub const PIN_ROOT: &str = "/sys/fs/bpf/wardgate";

/// Map names as the kernel sees them (at most 15 bytes; `_V1` changes when a layout changes).
pub mod map_names {
    pub const ACTIVE: &str = "WG_ACTIVE_V2";
    pub const CONFIG: &str = "WG_CONFIG_V3";
    pub const DEVICES: &str = "WG_DEV_V2";
    pub const MACS: &str = "WG_MAC_V1";
    pub const PEERS: &str = "WG_PEER_V1";
    pub const PEERS_HOST: &str = "WG_PEERH_V1";
    pub const PORTS: &str = "WG_PORT_V1";
    pub const PORTS_EXACT: &str = "WG_PORTX_V1";
    /// Host peers and their single ports joined (`HostPortKey` -> `RuleValue`): the common new
    /// flow decided in one lookup.
    pub const HOST_PORTS: &str = "WG_HOSTPORT_V1";
    pub const MGMT: &str = "WG_MGMT_V1";
    pub const CONNTRACK: &str = "WG_CT_V5";
    pub const STATS: &str = "WG_STATS_V1";
    pub const RATE: &str = "WG_RATE_V2";
    pub const EVENTS_LOST: &str = "WG_EVLOST_V2";
    pub const FLOW_CAP: &str = "WG_FLOWCAP_V3";
    /// Flow-open record budgets of unknown hosts, per source (`RateState`).
    pub const SOURCE_BUDGET: &str = "WG_SRCBUDGET_V1";
    pub const HEARTBEAT: &str = "WG_HEART_V1";
    pub const WATCHDOG: &str = "WG_WDOG_V1";
    pub const EVENTS: &str = "WG_EVENTS_V1";
    pub const FRAGMENTS: &str = "WG_FRAG_V1";
    /// Flow-open records (`FlowOpen`), one per new conntrack entry or denied first packet.
    pub const FLOWS: &str = "WG_FLOWS_V1";
    /// Flow-open records not delivered because the ring was full, per CPU.
    pub const FLOWS_LOST: &str = "WG_FLOWLOST_V1";
    /// The per-CPU established-flow cache (`FlowSlot`s indexed by `FlowKey::index`); not
    /// pinned. The agent reads a finishing flow's slots for what they hold unsynced.
    pub const FLOW_CACHE: &str = "WG_FLOWCACHE_V1";
    /// First payload bytes of inspected flows (`PayloadRecord`).
    pub const PAYLOAD: &str = "WG_PAYLOAD_V1";
    /// Payload records not delivered, per CPU: `[PAYLOAD_LOST_RATE]` over a rate bound (the
    /// CPU's or the device's), `[PAYLOAD_LOST_RING]` the ring was full,
    /// `[PAYLOAD_LOST_UNVERIFIED]` no handshake seen, or outside the window after the SYN.
    pub const PAYLOAD_LOST: &str = "WG_PAYLOST_V2";
    /// Per-CPU token bucket of payload records (`RateState`).
    pub const PAYLOAD_RATE: &str = "WG_PAYRATE_V1";
    /// The tail-call slot of `wg_payload` (a prog array of one).
    pub const PAYLOAD_PROG: &str = "WG_PAYPROG_V1";
    /// The tail-call slot of `wg_slow` (a prog array of one).
    pub const SLOW_PROG: &str = "WG_SLOWPROG_V1";
    /// Allowed values of application rules (`AppKey` -> 1), slotted like the policy maps.
    pub const APP_VALUES: &str = "WG_APPVAL_V1";
    /// Application checks that refused a flow, per CPU, indexed by `APP_DENY_*`.
    pub const APP_DENIED: &str = "WG_APPDENY_V1";
    /// Resolvers whose answers teach `dns:` peers (`DnsResolverKey` LPM -> 1), slotted.
    pub const DNS_RESOLVERS: &str = "WG_DNSRES_V1";
    /// `dns:` names of each policy (`DnsNameKey` -> `PeerValue`), slotted.
    pub const DNS_NAMES: &str = "WG_DNSNAME_V1";
    /// Addresses a device's resolvers answered for a `dns:` name (`DnsAddrKey` ->
    /// `DnsAddrValue`); written by the agent's DNS learner only, not slotted.
    pub const DNS_ADDRS: &str = "WG_DNSADDR_V1";
    /// DNS answers held for the agent (`DnsAnswerRecord`).
    pub const DNS_ANSWERS: &str = "WG_DNSANS_V1";
}

/// Program (function) names in the eBPF object.
pub mod program_names {
    pub const INGRESS: &str = "wg_ingress";
    pub const EGRESS: &str = "wg_egress";
    /// A trivial pass program, the baseline for benchmarks.
    pub const PASS: &str = "wg_pass";
    /// Inspection of an established packet's payload, tail-called by the classifiers through
    /// `WG_PAYPROG_V1` (never attached).
    pub const PAYLOAD: &str = "wg_payload";
    /// The slow path (device, policy, budgets) of packets no entry decides, tail-called by
    /// the classifiers through `WG_SLOWPROG_V1` (never attached).
    pub const SLOW: &str = "wg_slow";
    /// Benchmark floor: parse and insert the frame's conntrack entry, nothing else.
    pub const FLOOR_CT_INSERT: &str = "wg_floor_ct_insert";
}

/// Capacities per policy slot. Slotted maps hold two generations, so they are twice as large.
pub mod capacity {
    pub const DEVICES: u32 = 16_384;
    pub const PEERS: u32 = 131_072;
    pub const PEER_HOSTS: u32 = 131_072;
    pub const PORTS: u32 = 262_144;
    /// Joined (host peer, single port) entries per slot; past it the two-stage lookup answers.
    pub const HOST_PORTS: u32 = 131_072;
    pub const MGMT: u32 = 256;
    pub const CONNTRACK: u32 = 262_144;
    /// Event token buckets: one per device and event kind.
    pub const RATE: u32 = 65_536;
    /// Device budgets (`FlowCapState`), indexed by device id modulo this (a power of two).
    pub const FLOW_CAP: u32 = 16_384;
    /// Record budgets of unknown hosts, indexed by a hash of the source (a power of two).
    pub const UNKNOWN_SOURCES: u32 = 1_024;
    /// Allowed application values (AE titles, MSH fields) per policy slot.
    pub const APP_VALUES: u32 = 16_384;
    /// Fragmented datagrams in flight whose first fragment passed.
    pub const FRAGMENTS: u32 = 8_192;
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub const EVENTS_BYTES: u32 = 1 << 20;
    /// Flow record ring size in bytes: about 45,000 records (88 bytes each with the ring's
    /// header), two seconds of 20,000 new flows/s should the agent fall behind.
    pub const FLOWS_BYTES: u32 = 1 << 22;
    /// Payload record ring size in bytes: about 450 records (`PayloadRecord` with the ring's
    /// header), more than a second of the rate bound of every CPU.
    pub const PAYLOAD_BYTES: u32 = 1 << 18;
    /// Number of policy slots (A/B).
    pub const SLOTS: u32 = 2;
    /// Resolver prefixes per policy slot.
    pub const DNS_RESOLVERS: u32 = 4_096;
    /// `dns:` names (policy, direction, name) per policy slot.
    pub const DNS_NAMES: u32 = 16_384;
    /// Learned addresses, all devices together (each device is bounded by the agent's config).
    pub const DNS_ADDRS: u32 = 65_536;
    /// Held DNS answer ring: about 250 records of `DnsAnswerRecord` (with the ring's header).
    pub const DNS_ANSWERS_BYTES: u32 = 1 << 19;
}

/// Bytes of a held DNS answer frame at most (Ethernet header included): larger answers are
/// passed unlearned (`Reason::PassDnsUnlearned`).
pub const DNS_FRAME_MAX: usize = 2048;

/// `skb->mark` of a DNS answer the agent re-injects after learning from it: the classifier
/// does not hold it again (a mark only a process with CAP_NET_ADMIN can set, `SO_MARK`).
pub const DNS_REINJECT_MARK: u32 = 0x5747_444e;

/// A resolver prefix of a policy (`WG_DNSRES_V1`, LPM: the first `DNS_RES_FIXED_BITS` exact).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsResolverKey {
    pub slot: u8,
    pub family: u8,
    pub _pad: u16,
    pub policy_id: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<DnsResolverKey>() == 24);
pub const DNS_RES_FIXED_BITS: u32 = 64;

/// A `dns:` name of a policy in one direction (`WG_DNSNAME_V1` -> `PeerValue`). `name_id` is
/// a hash of the name (`wardgate_policy::dns_name_id`), so learned addresses keep their name
/// across generations; the compiler refuses two names of one policy with the same id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsNameKey {
    pub slot: u8,
    pub direction: u8,
    pub _pad: u16,
    pub policy_id: u32,
    pub name_id: u32,
}
const _: () = assert!(core::mem::size_of::<DnsNameKey>() == 12);

/// An address a device's resolver answered (`WG_DNSADDR_V1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsAddrKey {
    pub device_id: u32,
    pub family: u8,
    pub _pad: u8,
    pub _pad1: u16,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<DnsAddrKey>() == 24);

/// Which name taught the address, until when (coarse-clock ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsAddrValue {
    pub expires_ns: u64,
    pub name_id: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<DnsAddrValue>() == 16);

/// A DNS answer from one of a device's resolvers, held by the egress classifier
/// (`WG_DNSANS_V1`): the agent learns from it and sends `frame` out of `ifindex` unchanged.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsAnswerRecord {
    pub ts_ns: u64,
    pub ifindex: u32,
    pub device_id: u32,
    pub policy_id: u32,
    /// Bytes of `frame` (1..=`DNS_FRAME_MAX`).
    pub len: u32,
    pub frame: [u8; DNS_FRAME_MAX],
}
const _: () = assert!(core::mem::size_of::<DnsAnswerRecord>() == 24 + DNS_FRAME_MAX);

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const DIR_FROM_DEVICE: u8 = 0;
pub const DIR_TO_DEVICE: u8 = 1;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Device modes (`DeviceInfo::mode`).
pub const MODE_LEARN: u32 = 0;
pub const MODE_MONITOR: u32 = 1;
pub const MODE_ENFORCE: u32 = 2;
pub const MODE_QUARANTINE: u32 = 3;

/// Gateway actions for traffic outside the policy (`GatewayConfig`).
pub const ACTION_PASS: u32 = 0;
pub const ACTION_DROP: u32 = 1;

/// Rule actions (`RuleValue::action`).
pub const RULE_ALLOW: u32 = 1;

/// `RuleValue::flags`: the rule carries an application constraint (DICOM or HL7): the flows it
/// admits are inspected (their first payload bytes go to the agent, `PayloadRecord`).
pub const RULE_INSPECT: u32 = 1 << 0;

/// `RuleValue::flags` (and, copied into a new entry, `CtValue::flags`): the rule's flows are
/// checked at their first payload segment in the opening direction (`wg_payload`): a DICOM
/// A-ASSOCIATE-RQ, or an HL7 message over MLLP. Which fields are checked against the rule's
/// allowed values (`WG_APPVAL_V1`, `AppKey`): every field whose bit is set.
pub const APP_DICOM: u32 = 1 << 8;
pub const APP_HL7: u32 = 1 << 9;
/// DICOM calling AE title (PDU bytes 26..42).
pub const APP_CHECK_CALLING: u32 = 1 << 10;
/// DICOM called AE title (PDU bytes 10..26).
pub const APP_CHECK_CALLED: u32 = 1 << 11;
/// HL7 MSH-3 (sending application).
pub const APP_CHECK_MSH3: u32 = 1 << 12;
/// HL7 MSH-4 (sending facility).
pub const APP_CHECK_MSH4: u32 = 1 << 13;
/// HL7 MSH-5 (receiving application).
pub const APP_CHECK_MSH5: u32 = 1 << 14;
/// HL7 MSH-9 (message type: its first two components).
pub const APP_CHECK_MSH9: u32 = 1 << 15;
/// Every bit a rule's application check sets in a conntrack entry (while it is pending).
pub const APP_PENDING: u32 = APP_DICOM
    | APP_HL7
    | APP_CHECK_CALLING
    | APP_CHECK_CALLED
    | APP_CHECK_MSH3
    | APP_CHECK_MSH4
    | APP_CHECK_MSH5
    | APP_CHECK_MSH9;
/// `CtValue::flags`: the application check is only reported (the device is monitored).
pub const CT_APP_MONITOR: u32 = 1 << 18;
/// `CtValue::flags`: the application check refused the flow: later packets are dropped (the
/// opener's answered with a reset), RSTs pass.
pub const CT_APP_REFUSED: u32 = 1 << 19;

/// `CtValue::flags`: the entry was admitted by a rule with an application check (kept once
/// the check is done): a SYN reopening its tuple is checked afresh.
pub const CT_APP_RULE: u32 = 1 << 20;

/// `AppKey::field`.
pub const APP_FIELD_CALLING_AE: u8 = 1;
pub const APP_FIELD_CALLED_AE: u8 = 2;
pub const APP_FIELD_MSH3: u8 = 3;
pub const APP_FIELD_MSH4: u8 = 4;
pub const APP_FIELD_MSH5: u8 = 5;
pub const APP_FIELD_MSH9: u8 = 9;
/// Bytes of a value an `AppKey` holds; longer values never match.
pub const APP_VALUE_LEN: usize = 32;
/// Bytes of the first HL7 segment the datapath scans for the MSH fields.
pub const APP_HL7_SCAN: usize = 256;

/// An allowed value of an application rule field (`WG_APPVAL_V1`, value 1). DICOM AE titles
/// are the 16 bytes of the PDU (space padded, `len` 16); HL7 fields their bytes (`len` of them)
/// up to `APP_VALUE_LEN`. Unused bytes zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    pub slot: u8,
    pub field: u8,
    pub len: u8,
    pub _pad: u8,
    pub rule_id: u32,
    pub value: [u8; APP_VALUE_LEN],
}
const _: () = assert!(core::mem::size_of::<AppKey>() == 40);

/// `WG_APPDENY_V1` indices: why an application check refused a flow.
pub const APP_DENY_CALLING_AE: u32 = 0;
pub const APP_DENY_CALLED_AE: u32 = 1;
/// Not an A-ASSOCIATE-RQ, or its first segment too short to hold both AE titles.
pub const APP_DENY_DICOM_MALFORMED: u32 = 2;
pub const APP_DENY_MSH3: u32 = 3;
pub const APP_DENY_MSH4: u32 = 4;
pub const APP_DENY_MSH5: u32 = 5;
pub const APP_DENY_MSH9: u32 = 6;
/// Not MLLP-framed `MSH`, or the fields checked do not end within the scanned bytes.
pub const APP_DENY_HL7_MALFORMED: u32 = 7;
/// Payload before a handshake was seen (a flow picked up mid-stream): cannot be checked.
pub const APP_DENY_UNVERIFIED: u32 = 8;
pub const APP_DENY_KINDS: u32 = 9;

/// Conntrack flags (`CtValue::flags`).
pub const CT_CLOSING: u32 = 1 << 0;
/// Created in monitor mode for a flow the policy denies: passes, reported once.
pub const CT_WOULD_DENY: u32 = 1 << 1;
/// Created in learn mode without a policy check.
pub const CT_LEARNED: u32 = 1 << 2;
/// Grace a profile gives when it says nothing (`conntrack.grace_max` default): 30 minutes.
pub const DEFAULT_GRACE_S: u32 = 1_800;
/// Idle timeout once FIN or RST was seen.
pub const CT_CLOSING_TIMEOUT_S: u32 = 10;
/// Idle timeout used when a rule gives none.
pub const CT_DEFAULT_TIMEOUT_S: u32 = 300;
/// Flows a device may have tracked when its profile sets no cap (`DeviceInfo::max_flows` 0).
pub const CT_DEFAULT_MAX_FLOWS: u32 = 8_192;
/// Admitted by the management allowlist, not by a profile rule.
pub const CT_MGMT: u32 = 1 << 3;

/// Payload-carrying packets an inspected flow copies to the agent in each direction
/// (`CtValue::inspect_fwd` / `inspect_rev` at creation).
pub const INSPECT_PACKETS: u8 = 2;
/// Packets (both ways) after which a flow stops being inspected whatever is left of its
/// budget: a direction that never carries payload does not keep the flow off the flow cache.
pub const INSPECT_MAX_PACKETS: u64 = 16;
/// Bytes of a segment's payload copied into a `PayloadRecord` at most.
pub const PAYLOAD_DATA: usize = 512;
/// Payload records per second per CPU (token bucket refill) and the bucket's size: a flood of
/// inspected flows cannot flood the agent.
pub const PAYLOAD_RATE_PER_S: u64 = 1_000;
pub const PAYLOAD_BURST: u64 = 128;
/// `WG_PAYLOST_V2` indices.
pub const PAYLOAD_LOST_RATE: u32 = 0;
pub const PAYLOAD_LOST_RING: u32 = 1;
pub const PAYLOAD_LOST_UNVERIFIED: u32 = 2;
pub const PAYLOAD_LOST_KINDS: u32 = 3;
/// Server ports in `GatewayConfig::inspect_ports_be`.
pub const INSPECT_PORTS: usize = 8;

/// Event kinds (`Event::kind`).
pub const EVENT_NEW_FLOW: u32 = 1;
pub const EVENT_DENY: u32 = 2;
pub const EVENT_WOULD_DENY: u32 = 3;
pub const EVENT_SPOOF: u32 = 4;
pub const EVENT_UNKNOWN_DEVICE: u32 = 5;
/// A known device (by MAC) used an address that is not listed for it (learn/monitor).
pub const EVENT_NEW_ADDRESS: u32 = 6;
/// A device reached its cap of tracked flows (reported once until its budget recovers).
pub const EVENT_FLOW_CAP: u32 = 7;
/// The agent's heartbeat went stale (reason `PassMonitorWouldDeny` = fail-open devices now
/// monitored) or came back (reason `PassPolicy`): reported once each way.
pub const EVENT_WATCHDOG: u32 = 8;
/// An application check refused a flow (reason `DropAppRefused`) or, for a monitored device,
/// would have (`PassMonitorWouldDeny`): an `AppEvent` (an `Event` and the fields read).
pub const EVENT_APP_REFUSED: u32 = 9;
/// Event kinds are below this (sizes the per-kind loss counters).
pub const EVENT_KINDS: u32 = 10;

/// Why an event was not delivered (`WG_EVLOST_V1` is indexed `reason * EVENT_KINDS + kind`).
pub const LOST_RATE_LIMITED: u32 = 0;
pub const LOST_RING_FULL: u32 = 1;
pub const LOST_REASONS: u32 = 2;

/// Device table key: one entry per device address per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DeviceKey {
    pub slot: u8,
    pub family: u8,
    pub _pad: [u8; 2],
    /// IPv4 in the first 4 bytes (network order), rest zero; IPv6 all 16.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<DeviceKey>() == 20);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    pub device_id: u32,
    pub policy_id: u32,
    pub mode: u32,
    pub flags: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Cap on tracked flows (`CT_DEFAULT_MAX_FLOWS` when 0).
    pub max_flows: u32,
    /// Do-not-disrupt: seconds a flow established under an older generation keeps passing
    /// (`Reason::PassGrace`) once the active generation denies it, ending earlier when it idles
    /// out or the device is quarantined; 0 cuts it at once. Was padding: an older agent writes
    /// 0 (no grace).
    pub grace_s: u32,
}
const _: () = assert!(core::mem::size_of::<DeviceInfo>() == 32);

/// `DeviceInfo::flags`: the device's profile fails open (monitored while the agent is down).
pub const DEV_FAIL_OPEN: u32 = 1;

/// The watchdog as the datapath last saw it (`WG_WDOG_V1`, one entry, written by the datapath
/// only). The agent's heartbeat itself is `WG_HEART_V1`: one `u64`, the CLOCK_MONOTONIC_COARSE
/// ns of its last beat (the datapath's clock), written by the agent only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WatchdogState {
    /// 1 while the heartbeat is stale.
    pub stale: u32,
    /// Transitions: to stale, and back.
    pub went_stale: u32,
    pub recovered: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<WatchdogState>() == 16);

/// Device table by MAC (`WG_MAC_V1`): who a frame is from when its address is not listed, and
/// who may claim an address in ARP and neighbour discovery. One entry per device per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MacKey {
    pub slot: u8,
    pub _pad: u8,
    pub mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<MacKey>() == 8);

/// Peer stage key. Single hosts (/32, /128) go to a hash map keyed by the whole struct
/// (`WG_PEERH_V1`); CIDRs to an LPM trie over (slot, direction, family, policy) exactly, then
/// the peer address as a prefix (`WG_PEER_V1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PeerKey {
    pub slot: u8,
    pub direction: u8,
    pub family: u8,
    pub _pad: u8,
    pub policy_id: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<PeerKey>() == 24);
/// Bits of `PeerKey` matched exactly before the address prefix starts.
pub const PEER_FIXED_BITS: u32 = 64;

/// A host peer and one exact port of its peer set, joined (`WG_HOSTPORT_V1`): what the peer
/// hash and then the exact-port hash answer for that pair, in one lookup. The common new flow
/// (a listed host, a single port) then touches one map instead of two; a miss falls through
/// to the two stages, so the join may hold any subset of the pairs (it is capped).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostPortKey {
    pub slot: u8,
    pub direction: u8,
    pub family: u8,
    pub proto: u8,
    pub policy_id: u32,
    pub addr: [u8; 16],
    pub port_be: [u8; 2],
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<HostPortKey>() == 28);

/// Result of the peer lookup: the set of (protocol, port) entries that apply to this peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PeerValue {
    pub peer_set: u32,
    /// `PEER_HAS_PREFIX_PORTS` if the set has entries other than single ports (any protocol,
    /// any port, port ranges); only then is the port LPM consulted after the exact-port hash.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<PeerValue>() == 8);
pub const PEER_HAS_PREFIX_PORTS: u32 = 1;

/// Port stage key. Single ports (the common case) go to a hash map keyed by the whole struct
/// (`WG_PORTX_V1`); everything else to an LPM trie over (slot, peer set) exactly, then protocol,
/// then port as a prefix (Cilium-style): prefix 64 = any protocol, 72 = one protocol any port,
/// 72 + n = one protocol, port prefix /n (`WG_PORT_V1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortKey {
    pub slot: u8,
    // Two scalar pads, not `[u8; 3]`: zeroing a 3-byte array compiles to a `memset` call in BPF.
    pub _pad: u8,
    pub _pad1: u16,
    pub peer_set: u32,
    pub proto: u8,
    pub port_be: [u8; 2],
    pub _pad2: u8,
}
const _: () = assert!(core::mem::size_of::<PortKey>() == 12);
pub const PORT_FIXED_BITS: u32 = 64;
pub const PORT_PROTO_BITS: u32 = 72;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RuleValue {
    pub rule_id: u32,
    pub action: u32,
    pub idle_timeout_s: u32,
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<RuleValue>() == 16);

/// Management allowlist: LPM over (protocol, port) exactly, then the remote address as a prefix.
/// Never generation-switched: written from the agent's local config, so a bad policy cannot
/// lock the gateway out.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MgmtKey {
    pub family: u8,
    pub proto: u8,
    pub port_be: [u8; 2],
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<MgmtKey>() == 20);
pub const MGMT_FIXED_BITS: u32 = 32;

/// The active policy: `generation << 1 | slot` in one `u32` (`WG_ACTIVE_V2`), so a packet learns
/// both with one array read and the switch stays one 4-byte write.
pub const fn active_word(generation: u32, slot: u32) -> u32 {
    generation << 1 | (slot & 1)
}

/// Gateway-wide settings from the agent config.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GatewayConfig {
    /// `ACTION_*` for IP traffic whose device address is not in the device table.
    pub unknown_action: u32,
    /// `ACTION_*` for EtherTypes other than IPv4, IPv6 and ARP (ARP always passes).
    pub non_ip_action: u32,
    /// Events per second allowed per device (token bucket refill), 0 = no events.
    pub event_rate: u32,
    /// Token bucket size per device.
    pub event_burst: u32,
    /// `ACTION_PASS`: enforce the IP packet inside 802.1Q / 802.1ad tags (up to two);
    /// `ACTION_DROP`: drop tagged frames.
    pub vlan_action: u32,
    /// Fail-open watchdog: when the agent's heartbeat (`WG_HEART_V1`) is older than this,
    /// enforced devices whose profile fails open are treated as monitored. 0 = off.
    pub heartbeat_limit_ms: u32,
    /// 1 turns flow recording off: no flow-open or payload records, no counts folded from the
    /// flow cache. 0 (the default) records.
    pub recording_off: u32,
    pub _pad: u32,
    /// Server ports (network order; `[0, 0]` = unused) whose new TCP flows are inspected for
    /// devices that no rule decides for (learn, monitor would-deny, a new address).
    pub inspect_ports_be: [[u8; 2]; INSPECT_PORTS],
}
const _: () = assert!(core::mem::size_of::<GatewayConfig>() == 48);

/// Connection-tracking key, normalized: endpoint `a` is the smaller (address, port) of the two,
/// so both directions of a flow find the same entry with one lookup. An entry is one device's
/// view of a flow: `dev_is_a` says which endpoint is the device (the source at ingress, the
/// destination at egress), so a flow between two devices behind one gateway has two entries,
/// each admitted by its own device's policy.
/// 8-aligned (40 bytes either way): the datapath copies it into flow records as five words,
/// where a byte-aligned copy compiles to a `memcpy` call BPF does not have.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CtKey {
    pub a: [u8; 16],
    pub b: [u8; 16],
    pub a_port_be: [u8; 2],
    pub b_port_be: [u8; 2],
    pub proto: u8,
    pub family: u8,
    /// 1 if endpoint `a` is the device this entry belongs to.
    pub dev_is_a: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<CtKey>() == 40);

/// Counters interleave with the other fields: four zeroed words in a row compile to a `memset`
/// call when an entry is made, which BPF does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtValue {
    pub last_seen_ns: u64,
    /// Packets and IP-layer bytes in the opening direction (`fwd`) and back (`rev`). Packets the
    /// per-CPU flow cache answered are folded in once a second.
    pub packets_fwd: u64,
    /// Policy generation the flow was last checked against; a new generation re-checks it.
    pub generation: u32,
    pub rule_id: u32,
    pub bytes_fwd: u64,
    pub device_id: u32,
    pub idle_timeout_s: u32,
    pub packets_rev: u64,
    pub flags: u32,
    /// The interface the entry was admitted on; it answers only there.
    pub ifindex: u32,
    pub bytes_rev: u64,
    /// `DIR_*` of the packet that created the entry.
    pub direction: u8,
    /// 1 if the packet that opened the flow was sent by endpoint `a` of the key.
    pub opener_is_a: u8,
    /// TCP flags seen (ORed) each way on the conntrack path (SYN, FIN and RST always take it):
    /// how the handshake went.
    pub tcp_flags_fwd: u8,
    pub tcp_flags_rev: u8,
    /// The device's MAC when the entry was made: checked on the fast path against spoofing
    /// (source MAC from the device, destination MAC to it).
    pub dev_mac: [u8; 6],
    /// Payload-carrying packets still to copy to the agent in the opening direction and back
    /// (`PayloadRecord`); while either is non-zero the flow stays off the flow cache. Was
    /// padding: an entry of an older datapath reads as "nothing wanted", so the name stays.
    pub inspect_fwd: u8,
    pub inspect_rev: u8,
    /// The initial sequence number each way (`ISN_FWD_SEEN` / `ISN_REV_SEEN` in `isn_seen`
    /// once its SYN was seen, for inspected flows only): payload is handed to the agent only
    /// after the handshake, and only at a sequence number inside the window after the SYN.
    pub isn_fwd: u32,
    pub isn_rev: u32,
    pub isn_seen: u32,
    /// Do-not-disrupt: when the flow's grace ends (coarse-clock ns), 0 when it is not on grace.
    /// Set when a generation that denies the established flow first re-checks it; while set the
    /// entry keeps the generation it was admitted under, so every packet is re-checked by the
    /// slow path (never by the flow cache) and the grace ends at idle, at this moment, or when
    /// the device is quarantined. A generation that allows the flow again clears it.
    pub grace_until_ns: u64,
}
const _: () = assert!(core::mem::size_of::<CtValue>() == 96);

/// `CtValue::isn_seen`: the opening direction's SYN, and the answer's SYN-ACK.
pub const ISN_FWD_SEEN: u32 = 1;
pub const ISN_REV_SEEN: u32 = 2;

/// Payload further than this past the SYN's sequence number is not the first bytes of the
/// flow: not handed over.
pub const INSPECT_SEQ_WINDOW: u32 = 65_535;

/// `FlowOpen::flags` (beside the `CT_*` flags of the entry made): the first packet was
/// dropped (enforce or quarantine), no entry exists. A denied contact.
pub const FLOW_DENIED: u32 = 1 << 16;

/// `FlowOpen::flags`: the flow passed untracked (a learning or monitored device over its flow
/// cap): no entry exists; a sample (`UNTRACKED_SAMPLE`) of such flows is recorded.
pub const FLOW_UNTRACKED: u32 = 1 << 17;

/// One untracked flow in this many is recorded (the first of each run included); all are
/// counted in `FlowCapState::untracked`.
pub const UNTRACKED_SAMPLE: u32 = 16;

/// Flow-open records one device may send per second, and at once: a tenth of the ring, so one
/// device cannot fill it (a scan is still seen, sampled; what is refused is counted).
pub const RECORD_RATE_PER_S: u64 = 2_000;
pub const RECORD_BURST: u64 = 4_096;

/// Payload records one device may send per second, and at once.
pub const PAYLOAD_DEVICE_RATE_PER_S: u64 = 200;
pub const PAYLOAD_DEVICE_BURST: u64 = 32;

/// A flow-open record (`WG_FLOWS_V1`): one per new conntrack entry, in every mode, and one per
/// denied first packet. The agent keys its live flow table by `key`, exactly as conntrack does,
/// and reads the counters from the entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowOpen {
    /// The datapath's clock (CLOCK_MONOTONIC_COARSE ns).
    pub ts_ns: u64,
    pub key: CtKey,
    pub device_id: u32,
    pub policy_id: u32,
    pub rule_id: u32,
    pub generation: u32,
    /// `CT_*` flags of the entry, or `FLOW_DENIED`.
    pub flags: u32,
    /// The interface the first packet was on.
    pub ifindex: u32,
    /// `DIR_*` of the opening packet.
    pub direction: u8,
    pub opener_is_a: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// IP-layer bytes of the first packet.
    pub ip_len: u32,
    pub dev_mac: [u8; 6],
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<FlowOpen>() == 88);

/// The first payload bytes of a segment of an inspected flow (`WG_PAYLOAD_V1`): at most
/// `INSPECT_PACKETS` per direction per flow, within a per-CPU rate bound. The agent joins them
/// in sequence order per direction (`analysis::flow::FirstBytes`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadRecord {
    /// The datapath's clock (CLOCK_MONOTONIC_COARSE ns).
    pub ts_ns: u64,
    /// The conntrack key of the flow (as in its `FlowOpen`).
    pub key: CtKey,
    /// The segment's TCP sequence number as on the wire.
    pub seq_be: [u8; 4],
    /// Payload bytes the segment carries (may be more than were copied).
    pub seg_len: u16,
    /// Bytes copied into `data` (1..=`PAYLOAD_DATA`).
    pub len: u16,
    /// 1 if the segment goes in the flow's opening direction.
    pub forward: u8,
    pub _pad: u8,
    pub _pad1: u16,
    pub _pad2: u32,
    pub data: [u8; PAYLOAD_DATA],
}
const _: () = assert!(core::mem::size_of::<PayloadRecord>() == 64 + PAYLOAD_DATA);

/// A fragmented datagram: addresses, protocol and fragment id (IPv4's 16 bits, IPv6's 32).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<FragKey>() == 40);

/// When the datagram's first fragment passed, and from which MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragValue {
    pub seen_ns: u64,
    pub src_mac: [u8; 6],
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<FragValue>() == 16);

/// Event token bucket key: a separate budget per device and event kind, so a flood of denies
/// cannot use up the budget of a spoofing report.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RateKey {
    pub device_id: u32,
    pub kind: u32,
}
const _: () = assert!(core::mem::size_of::<RateKey>() == 8);

/// Budgets of one device (indexed by device id). Its flow budget: the live conntrack entries
/// it holds, at most its profile's `max_flows`. The datapath counts an entry when it creates it
/// and gives its place back when a flow closes (FIN or RST); the agent's recount
/// (`Datapath::recount_flows`) sets `live` to the entries that are really there, so idled-out
/// and evicted entries give theirs back too. The cap bounds what a device holds, not how fast
/// it works. Beside it, token buckets for what the device may put on the shared rings (flow-open
/// records, payload records), so one device cannot fill a ring and blind the gateway, and what
/// those budgets refused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCapState {
    /// Live entries of the device (opened, not closed, idled out or evicted).
    pub live: u32,
    /// 1 once the cap was reported; cleared when the device is back below half its cap.
    pub reported: u32,
    /// The device this slot belongs to (slots are indexed by device id modulo capacity; a
    /// slot taken over by another id starts afresh).
    pub device_id: u32,
    /// Flows over the cap that passed untracked (learn, monitor): counted, and every
    /// `UNTRACKED_SAMPLE`th recorded.
    pub untracked: u32,
    /// When the agent last recounted the slot (coarse-clock ns; 0 never).
    pub counted_ns: u64,
    /// Flow-open record bucket (`RECORD_RATE_PER_S`, `RECORD_BURST`), tokens scaled by 1e9.
    pub rec_tokens: u64,
    pub rec_last_ns: u64,
    /// Payload record bucket (`PAYLOAD_DEVICE_RATE_PER_S`, `PAYLOAD_DEVICE_BURST`).
    pub pay_tokens: u64,
    pub pay_last_ns: u64,
    /// Flow-open records the device's bucket refused.
    pub rec_lost: u32,
    /// Payload records the device's bucket refused.
    pub pay_lost: u32,
}
const _: () = assert!(core::mem::size_of::<FlowCapState>() == 64);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateState {
    pub tokens: u64,
    pub last_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RateState>() == 16);

/// Ring-buffer event. `device_id` 0 means the address is not a known device.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    pub ts_ns: u64,
    pub kind: u32,
    pub reason: u32,
    pub device_id: u32,
    pub policy_id: u32,
    pub rule_id: u32,
    pub generation: u32,
    pub family: u8,
    pub proto: u8,
    pub direction: u8,
    pub _pad: u8,
    pub sport_be: [u8; 2],
    pub dport_be: [u8; 2],
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_mac: [u8; 6],
    pub _pad2: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Event>() == 80);

/// An `EVENT_APP_REFUSED` event: the event, why (`APP_DENY_*`) and the fields the check read
/// (DICOM: calling, called AE title; HL7: MSH-3, MSH-4, MSH-5, MSH-9), each `len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppEvent {
    pub event: Event,
    pub why: u32,
    /// `APP_DICOM` or `APP_HL7`.
    pub app: u32,
    pub len: [u8; 4],
    pub _pad: u32,
    pub fields: [[u8; APP_VALUE_LEN]; 4],
}
const _: () = assert!(core::mem::size_of::<AppEvent>() == 80 + 16 + 4 * APP_VALUE_LEN);

/// Slots per CPU of the flow cache (a power of two): 16,384 x 88 bytes = 1.4 MiB per CPU.
pub const FLOW_CACHE_SLOTS: u32 = 16_384;

/// `FlowSlot::pending`: bytes in the low 36 bits (64 GiB between syncs), packets above (2^28).
pub const PENDING_PACKETS_SHIFT: u32 = 36;
pub const PENDING_BYTES_MASK: u64 = (1 << PENDING_PACKETS_SHIFT) - 1;

/// A packet's own tuple at one hook, the flow cache's key (not normalized: a slot serves one
/// direction at one hook), as five aligned words, so comparing and hashing it takes five word
/// operations each. Named fields, not an array: an array compare compiles to a byte-wise
/// `bcmp` call in BPF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowKey {
    pub src_hi: u64,
    pub src_lo: u64,
    pub dst_hi: u64,
    pub dst_lo: u64,
    /// ports (as on the wire) | proto << 32 | family << 40 | hook direction << 48.
    pub meta: u64,
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

impl FlowKey {
    /// The key of a packet from `src` to `dst` (addresses and ports as in `CtKey`) at hook
    /// `hook` (`DIR_*`): the datapath's and the agent's one way to make it.
    #[inline(always)]
    pub fn new(
        src: &[u8; 16],
        dst: &[u8; 16],
        sport_be: [u8; 2],
        dport_be: [u8; 2],
        proto: u8,
        family: u8,
        hook: u8,
    ) -> FlowKey {
        let (src_hi, src_lo) = halves(src);
        let (dst_hi, dst_lo) = halves(dst);
        let ports = u32::from_ne_bytes([sport_be[0], sport_be[1], dport_be[0], dport_be[1]]);
        FlowKey {
            src_hi,
            src_lo,
            dst_hi,
            dst_lo,
            meta: u64::from(ports)
                | u64::from(proto) << 32
                | u64::from(family) << 40
                | u64::from(hook) << 48,
        }
    }

    /// The key's slot: a multiply-xorshift over its words (cheap, and spreads tuples that
    /// differ in one port).
    #[inline(always)]
    pub fn index(&self) -> u32 {
        const M: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = (self.src_hi ^ 0xcbf2_9ce4_8422_2325).wrapping_mul(M);
        h = (h ^ self.src_lo).wrapping_mul(M);
        h = (h ^ self.dst_hi).wrapping_mul(M);
        h = (h ^ self.dst_lo).wrapping_mul(M);
        h = (h ^ self.meta).wrapping_mul(M);
        (h >> 32) as u32 & (FLOW_CACHE_SLOTS - 1)
    }
}

/// A flow cache slot, laid out so a hit reads whole aligned words: one compare each for the
/// deadline, the scope (generation and interface) and the device's MAC, and one branch-free
/// add for the counts (measured: the per-field form, with the MAC read byte by byte, an idle
/// and a sync check and a branch on the recording switch, cost about 40 more BPF instructions
/// a packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowSlot {
    pub key: FlowKey,
    /// The slot answers while `now` is below this: the fill time plus the sync interval or the
    /// entry's idle timeout, whichever is shorter (a hit never moves it, so a slot that answers
    /// every packet still falls through to conntrack once per sync interval). 0 in a zeroed
    /// slot, which so never matches.
    pub deadline_ns: u64,
    /// The policy generation | the interface the flow was admitted on << 32.
    pub scope: u64,
    /// The MAC of the device side of the frame, as a 48-bit word.
    pub dev_mac: u64,
    /// What the slot answered since the last sync: packets << `PENDING_PACKETS_SHIFT` |
    /// IP-layer bytes; added to the conntrack entry at the next one.
    pub pending: u64,
    /// All ones when flow recording was on at the fill (count what the slot answers), else 0.
    pub count_mask: u64,
    /// 1 if the packet is a reply (`PassReply`), 0 in the opening direction.
    pub reply: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowSlot>() == 88);

impl FlowSlot {
    /// The packets and bytes of `pending`.
    #[inline(always)]
    pub fn pending_counts(&self) -> (u64, u64) {
        (
            self.pending >> PENDING_PACKETS_SHIFT,
            self.pending & PENDING_BYTES_MASK,
        )
    }
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::AppKey {}
    unsafe impl aya::Pod for super::AppEvent {}
    // Safety: every type below is repr(C), Copy, has explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::DeviceKey {}
    unsafe impl aya::Pod for super::DeviceInfo {}
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::WatchdogState {}
    unsafe impl aya::Pod for super::RateKey {}
    unsafe impl aya::Pod for super::FlowCapState {}
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::PeerValue {}
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::HostPortKey {}
    unsafe impl aya::Pod for super::RuleValue {}
    unsafe impl aya::Pod for super::MgmtKey {}
    unsafe impl aya::Pod for super::GatewayConfig {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtValue {}
    unsafe impl aya::Pod for super::RateState {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::FlowOpen {}
    unsafe impl aya::Pod for super::PayloadRecord {}
    unsafe impl aya::Pod for super::DnsResolverKey {}
    unsafe impl aya::Pod for super::DnsNameKey {}
    unsafe impl aya::Pod for super::DnsAddrKey {}
    unsafe impl aya::Pod for super::DnsAddrValue {}
    unsafe impl aya::Pod for super::FlowSlot {}
}
