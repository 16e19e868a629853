//! Every map of the datapath, in one place. Layouts and names come from `wardgate_common`;
//! all maps are pinned by name under the agent's pin path so a restarted agent adopts them.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use wardgate_common::{
    APP_DENY_KINDS, AppKey, CtKey, CtValue, DeviceInfo, DeviceKey, DnsAddrKey, DnsAddrValue,
    DnsNameKey, DnsResolverKey, EVENT_KINDS, FlowCapState, FragKey, FragValue, GatewayConfig,
    HostPortKey, LOST_REASONS, MacKey, MgmtKey, PAYLOAD_LOST_KINDS, PeerKey, PeerValue, PortKey,
    RateKey, RateState, Reason, RuleValue, WatchdogState, capacity,
};

/// Which policy slot (0 or 1) packets use now. Flipped by the agent after a slot is complete.
/// `generation << 1 | slot` (`wardgate_common::active_word`): one read tells a packet both.
#[map(name = "WG_ACTIVE_V2")]
pub static WG_ACTIVE_V2: Array<u32> = Array::pinned(1, 0);

#[map(name = "WG_CONFIG_V3")]
pub static WG_CONFIG_V3: Array<GatewayConfig> = Array::pinned(1, 0);

#[map(name = "WG_DEV_V2")]
pub static WG_DEV_V2: HashMap<DeviceKey, DeviceInfo> =
    HashMap::pinned(capacity::DEVICES * capacity::SLOTS, 0);

/// Devices by MAC (slotted like the device table).
#[map(name = "WG_MAC_V1")]
pub static WG_MAC_V1: HashMap<MacKey, DeviceInfo> =
    HashMap::pinned(capacity::DEVICES * capacity::SLOTS, 0);

// LPM tries: aya adds BPF_F_NO_PREALLOC itself, so memory grows with entries, not capacity.
#[map(name = "WG_PEER_V1")]
pub static WG_PEER_V1: LpmTrie<PeerKey, PeerValue> =
    LpmTrie::pinned(capacity::PEERS * capacity::SLOTS, 0);

#[map(name = "WG_PORT_V1")]
pub static WG_PORT_V1: LpmTrie<PortKey, RuleValue> =
    LpmTrie::pinned(capacity::PORTS * capacity::SLOTS, 0);

/// Single-host peers: one hash lookup, whatever the number of peers. No preallocation.
#[map(name = "WG_PEERH_V1")]
pub static WG_PEERH_V1: HashMap<PeerKey, PeerValue> =
    HashMap::pinned(capacity::PEER_HOSTS * capacity::SLOTS, NO_PREALLOC);

/// Exact (single) ports: one hash lookup, whatever the number of rules. No preallocation.
#[map(name = "WG_PORTX_V1")]
pub static WG_PORTX_V1: HashMap<PortKey, RuleValue> =
    HashMap::pinned(capacity::PORTS * capacity::SLOTS, NO_PREALLOC);

/// Host peers joined with their single ports (`HostPortKey`): the common new flow in one
/// lookup; a miss falls through to the peer and port stages. No preallocation.
#[map(name = "WG_HOSTPORT_V1")]
pub static WG_HOSTPORT_V1: HashMap<HostPortKey, RuleValue> =
    HashMap::pinned(capacity::HOST_PORTS * capacity::SLOTS, NO_PREALLOC);

const NO_PREALLOC: u32 = 1;

#[map(name = "WG_MGMT_V1")]
pub static WG_MGMT_V1: LpmTrie<MgmtKey, u32> = LpmTrie::pinned(capacity::MGMT, 0);

/// BPF_F_NO_COMMON_LRU: per-CPU LRU lists, so inserting a new flow takes no shared lock.
const NO_COMMON_LRU: u32 = 2;

#[map(name = "WG_CT_V5")]
pub static WG_CT_V5: LruHashMap<CtKey, CtValue> =
    LruHashMap::pinned(capacity::CONNTRACK, NO_COMMON_LRU);

/// Fragmented datagrams whose first fragment passed (`fragments.rs`).
#[map(name = "WG_FRAG_V1")]
pub static WG_FRAG_V1: LruHashMap<FragKey, FragValue> = LruHashMap::pinned(capacity::FRAGMENTS, 0);

/// The agent's heartbeat: coarse-clock ns of its last beat (written by the agent only).
#[map(name = "WG_HEART_V1")]
pub static WG_HEART_V1: Array<u64> = Array::pinned(1, 0);

/// What the watchdog last saw (written by the datapath only; `watchdog.rs`).
#[map(name = "WG_WDOG_V1")]
pub static WG_WDOG_V1: Array<WatchdogState> = Array::pinned(1, 0);

#[map(name = "WG_STATS_V1")]
pub static WG_STATS_V1: PerCpuArray<u64> = PerCpuArray::pinned(Reason::COUNT, 0);

#[map(name = "WG_RATE_V2")]
pub static WG_RATE_V2: LruHashMap<RateKey, RateState> = LruHashMap::pinned(capacity::RATE, 0);

/// Events not delivered, per loss reason and kind (`LOST_*` * `EVENT_KINDS` + kind).
#[map(name = "WG_EVLOST_V2")]
pub static WG_EVLOST_V2: PerCpuArray<u64> = PerCpuArray::pinned(LOST_REASONS * EVENT_KINDS, 0);

/// New-flow budgets per device (conntrack fairness), indexed by device id modulo capacity: an
/// array lookup costs next to nothing on the new-flow path, where a hash lookup costs ~40 ns.
#[map(name = "WG_FLOWCAP_V3")]
pub static WG_FLOWCAP_V3: Array<FlowCapState> = Array::pinned(capacity::FLOW_CAP, 0);

#[map(name = "WG_EVENTS_V1")]
pub static WG_EVENTS_V1: RingBuf = RingBuf::pinned(capacity::EVENTS_BYTES, 0);

/// Flow-open records (`flows.rs`): not rate-limited, not sharing the events' budget.
#[map(name = "WG_FLOWS_V1")]
pub static WG_FLOWS_V1: RingBuf = RingBuf::pinned(capacity::FLOWS_BYTES, 0);

/// Flow-open records lost to a full ring, per CPU.
#[map(name = "WG_FLOWLOST_V1")]
pub static WG_FLOWLOST_V1: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// First payload bytes of inspected flows (`payload.rs`).
#[map(name = "WG_PAYLOAD_V1")]
pub static WG_PAYLOAD_V1: RingBuf = RingBuf::pinned(capacity::PAYLOAD_BYTES, 0);

/// Payload records not delivered, per CPU: over the rate bound, ring full.
#[map(name = "WG_PAYLOST_V2")]
pub static WG_PAYLOST_V2: PerCpuArray<u64> = PerCpuArray::pinned(PAYLOAD_LOST_KINDS, 0);

/// `wg_payload`, the tail-call target of inspected packets (set by the agent at load; pinned
/// so it outlives the agent: a prog array empties when user space lets go of it).
#[map(name = "WG_PAYPROG_V1")]
pub static WG_PAYPROG_V1: ProgramArray = ProgramArray::pinned(1, 0);

/// `wg_slow`, the tail-call target of packets no entry decides (`slow.rs`); pinned as
/// `WG_PAYPROG_V1` is, so the slow path outlives a stopped agent.
#[map(name = "WG_SLOWPROG_V1")]
pub static WG_SLOWPROG_V1: ProgramArray = ProgramArray::pinned(1, 0);

/// The per-CPU token bucket of payload records.
#[map(name = "WG_PAYRATE_V1")]
pub static WG_PAYRATE_V1: PerCpuArray<RateState> = PerCpuArray::pinned(1, 0);

/// Scratch space for the conntrack entry being written (per CPU, not pinned): built here rather
/// than on the stack, whose 512 bytes the slow path otherwise exceeds.
#[map(name = "WG_CTSCRATCH")]
pub static WG_CTSCRATCH: PerCpuArray<CtValue> = PerCpuArray::with_max_entries(1, 0);

/// Flow-open record budgets of unknown hosts (device id 0), one per source (by a hash of the
/// device-side address), so one unknown host cannot spend every other's.
#[map(name = "WG_SRCBUDGET_V1")]
pub static WG_SRCBUDGET_V1: Array<RateState> = Array::pinned(capacity::UNKNOWN_SOURCES, 0);

/// Allowed values of application rules (`AppKey` -> 1), slotted; written by the agent.
#[map(name = "WG_APPVAL_V1")]
pub static WG_APPVAL_V1: HashMap<AppKey, u32> =
    HashMap::pinned(capacity::APP_VALUES * capacity::SLOTS, NO_PREALLOC);

/// Application checks that refused a flow, per CPU, by why (`APP_DENY_*`).
#[map(name = "WG_APPDENY_V1")]
pub static WG_APPDENY_V1: PerCpuArray<u64> = PerCpuArray::pinned(APP_DENY_KINDS, 0);

/// Resolvers whose answers teach a policy's `dns:` peers (`dns.rs`), slotted; written by the
/// agent's map writer.
#[map(name = "WG_DNSRES_V1")]
pub static WG_DNSRES_V1: LpmTrie<DnsResolverKey, u32> =
    LpmTrie::pinned(capacity::DNS_RESOLVERS * capacity::SLOTS, 0);

/// `dns:` names of each policy -> their peer set, slotted; written by the agent's map writer.
#[map(name = "WG_DNSNAME_V1")]
pub static WG_DNSNAME_V1: HashMap<DnsNameKey, PeerValue> =
    HashMap::pinned(capacity::DNS_NAMES * capacity::SLOTS, NO_PREALLOC);

/// Addresses a device's resolvers answered for a `dns:` name, until the answer's TTL (bounded
/// by the agent's floor and ceiling); written by the agent's DNS learner only.
#[map(name = "WG_DNSADDR_V1")]
pub static WG_DNSADDR_V1: HashMap<DnsAddrKey, DnsAddrValue> =
    HashMap::pinned(capacity::DNS_ADDRS, 0);

/// DNS answers held for the agent (`DnsAnswerRecord`).
#[map(name = "WG_DNSANS_V1")]
pub static WG_DNSANS_V1: RingBuf = RingBuf::pinned(capacity::DNS_ANSWERS_BYTES, 0);
