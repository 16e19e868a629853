//! The one place where Rust types become map keys/values (and back): address families, prefix
//! lengths and network byte order are decided here and nowhere else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use wardgate_analysis::detect::finding::datapath::Kind;
use wardgate_common::{
    self as c, AppEvent, AppKey, CtKey, CtValue, DeviceInfo, DeviceKey, Event, FlowKey, FlowOpen,
    FlowSlot, HostPortKey, MacKey, MgmtKey, PayloadRecord, PeerKey, PeerValue, PortKey, Reason,
    RuleValue,
};
use wardgate_policy::{
    desired::{AppRule, DeviceEntry, PeerEntry, PortEntry},
    dns::{DnsNameEntry, ResolverEntry},
};

use crate::config::MgmtRule;

pub fn ip_raw(addr: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (c::FAMILY_V4, out)
        }
        IpAddr::V6(a) => (c::FAMILY_V6, a.octets()),
    }
}

pub fn ip_from_raw(family: u8, raw: [u8; 16]) -> IpAddr {
    if family == c::FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(raw))
    }
}

fn net_raw(net: IpNet) -> (u8, [u8; 16], u32) {
    let (family, addr) = ip_raw(net.trunc().addr());
    (family, addr, u32::from(net.prefix_len()))
}

pub fn device_key(slot: u32, addr: IpAddr) -> DeviceKey {
    let (family, addr) = ip_raw(addr);
    DeviceKey {
        slot: slot as u8,
        family,
        _pad: [0; 2],
        addr,
    }
}

pub fn device_info(d: &DeviceEntry) -> DeviceInfo {
    DeviceInfo {
        device_id: d.device_id,
        policy_id: d.policy_id,
        mode: d.mode.as_datapath(),
        flags: if d.fail_open { c::DEV_FAIL_OPEN } else { 0 },
        mac: d.mac.0,
        _pad: [0; 2],
        max_flows: d.max_flows,
        grace_s: d.grace_s,
    }
}

pub fn mac_key(slot: u32, d: &DeviceEntry) -> MacKey {
    MacKey {
        slot: slot as u8,
        _pad: 0,
        mac: d.mac.0,
    }
}

pub fn peer_key(slot: u32, e: &PeerEntry) -> Key<PeerKey> {
    let (family, addr, len) = net_raw(e.cidr);
    let data = PeerKey {
        slot: slot as u8,
        direction: e.direction.as_datapath(),
        family,
        _pad: 0,
        policy_id: e.policy_id,
        addr,
    };
    Key::new(c::PEER_FIXED_BITS + len, data)
}

/// A policy's resolver prefix (`WG_DNSRES_V1`).
pub fn dns_resolver_key(slot: u32, e: &ResolverEntry) -> Key<c::DnsResolverKey> {
    let (family, addr, len) = net_raw(e.cidr);
    let data = c::DnsResolverKey {
        slot: slot as u8,
        family,
        _pad: 0,
        policy_id: e.policy_id,
        addr,
    };
    Key::new(c::DNS_RES_FIXED_BITS + len, data)
}

/// A policy's `dns:` name (`WG_DNSNAME_V1`); its value is the name's peer set.
pub fn dns_name_key(slot: u32, e: &DnsNameEntry) -> c::DnsNameKey {
    c::DnsNameKey {
        slot: slot as u8,
        direction: e.direction.as_datapath(),
        _pad: 0,
        policy_id: e.policy_id,
        name_id: e.name_id,
    }
}

/// A learned address of a device (`WG_DNSADDR_V1`).
pub fn dns_addr_key(device_id: u32, addr: IpAddr) -> c::DnsAddrKey {
    let (family, addr) = ip_raw(addr);
    c::DnsAddrKey {
        device_id,
        family,
        _pad: 0,
        _pad1: 0,
        addr,
    }
}

/// A held answer's header and frame (the frame's first `len` bytes), or `None` if the record
/// is short or its length is out of range.
pub fn dns_answer(bytes: &[u8]) -> Option<(c::DnsAnswerRecord, &[u8])> {
    if bytes.len() < size_of::<c::DnsAnswerRecord>() {
        return None;
    }
    // Safety: long enough, read unaligned; every bit pattern is a valid record.
    let r: c::DnsAnswerRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let len = r.len as usize;
    if len == 0 || len > c::DNS_FRAME_MAX {
        return None;
    }
    let off = std::mem::offset_of!(c::DnsAnswerRecord, frame);
    Some((r, &bytes[off..off + len]))
}

/// Host peers (/32, /128) live in the peer hash, CIDRs in the peer LPM.
pub fn is_host(e: &PeerEntry) -> bool {
    e.cidr.prefix_len() == e.cidr.max_prefix_len()
}

pub fn port_key(slot: u32, e: &PortEntry) -> Key<PortKey> {
    let (proto, port_be, len) = match (e.proto, e.port) {
        (None, _) => (0, [0; 2], c::PORT_FIXED_BITS),
        (Some(p), None) => (p, [0; 2], c::PORT_PROTO_BITS),
        (Some(p), Some(pp)) => (
            p,
            pp.value.to_be_bytes(),
            c::PORT_PROTO_BITS + u32::from(pp.len),
        ),
    };
    let data = PortKey {
        slot: slot as u8,
        _pad: 0,
        _pad1: 0,
        peer_set: e.peer_set,
        proto,
        port_be,
        _pad2: 0,
    };
    Key::new(len, data)
}

/// Single-port entries live in the exact-port hash, everything else in the port LPM.
pub fn is_exact(e: &PortEntry) -> bool {
    e.proto.is_some() && e.port.is_some_and(|p| p.len == 16)
}

pub fn exact_port_key(slot: u32, e: &PortEntry) -> PortKey {
    port_key(slot, e).data()
}

/// Each host peer joined with every single port of its peer set: the rule the peer hash and
/// then the exact-port hash give that pair, as one entry. At most `cap` pairs, in the order of
/// `hosts` then of each set's ports; the pairs left out are still answered by the two stages
/// (a miss falls through), so any subset is correct and the cap only costs time.
pub fn host_port_pairs(
    hosts: &[(PeerKey, PeerValue)],
    exact: &[(PortKey, RuleValue)],
    cap: usize,
) -> Vec<(HostPortKey, RuleValue)> {
    let mut by_set: std::collections::BTreeMap<u32, Vec<&(PortKey, RuleValue)>> =
        Default::default();
    for e in exact {
        by_set.entry(e.0.peer_set).or_default().push(e);
    }
    let mut out = Vec::new();
    for (host, value) in hosts {
        for (port, rule) in by_set.get(&value.peer_set).into_iter().flatten() {
            if out.len() == cap {
                return out;
            }
            let key = HostPortKey {
                slot: host.slot,
                direction: host.direction,
                family: host.family,
                proto: port.proto,
                policy_id: host.policy_id,
                addr: host.addr,
                port_be: port.port_be,
                _pad: 0,
            };
            out.push((key, *rule));
        }
    }
    out
}

/// The port entry's rule value; `app` is the rule's application check (`app_flags`).
pub fn rule_value(e: &PortEntry, app: u32) -> RuleValue {
    RuleValue {
        rule_id: e.rule_id,
        action: c::RULE_ALLOW,
        idle_timeout_s: e.idle_timeout_s,
        flags: if e.inspect { c::RULE_INSPECT } else { 0 } | app,
    }
}

/// The datapath bits of a rule's application check (`APP_DICOM` / `APP_HL7` and one
/// `APP_CHECK_*` per field with a list), 0 when it checks nothing.
pub fn app_flags(app: Option<&AppRule>) -> u32 {
    let bit = |l: &[String], b: u32| if l.is_empty() { 0 } else { b };
    let flags = match app {
        None => 0,
        Some(AppRule::Dicom {
            calling_ae,
            called_ae,
        }) => {
            c::APP_DICOM
                | bit(calling_ae, c::APP_CHECK_CALLING)
                | bit(called_ae, c::APP_CHECK_CALLED)
        }
        Some(AppRule::Hl7 {
            sending_application,
            sending_facility,
            receiving_application,
            message_type,
        }) => {
            c::APP_HL7
                | bit(sending_application, c::APP_CHECK_MSH3)
                | bit(sending_facility, c::APP_CHECK_MSH4)
                | bit(receiving_application, c::APP_CHECK_MSH5)
                | bit(message_type, c::APP_CHECK_MSH9)
        }
    };
    // Kind bits alone check nothing: no flags at all then.
    if flags & !(c::APP_DICOM | c::APP_HL7) == 0 {
        0
    } else {
        flags
    }
}

/// One allowed value as the datapath compares it: an AE title as the PDU carries it (16
/// bytes, space padded), an HL7 value as its bytes. `None` for a value the datapath could never
/// match (longer than it holds; validation refuses those).
pub fn app_key(slot: u32, rule_id: u32, field: u8, value: &str) -> Option<AppKey> {
    let bytes = value.as_bytes();
    let mut key = AppKey {
        slot: slot as u8,
        field,
        len: 0,
        _pad: 0,
        rule_id,
        value: [0; c::APP_VALUE_LEN],
    };
    let ae = field == c::APP_FIELD_CALLING_AE || field == c::APP_FIELD_CALLED_AE;
    if ae {
        if bytes.len() > 16 {
            return None;
        }
        key.value[..16].fill(b' ');
        key.value[..bytes.len()].copy_from_slice(bytes);
        key.len = 16;
    } else {
        if bytes.len() > c::APP_VALUE_LEN || bytes.is_empty() {
            return None;
        }
        key.value[..bytes.len()].copy_from_slice(bytes);
        key.len = bytes.len() as u8;
    }
    Some(key)
}

/// Every allowed value of a rule's application check (`WG_APPVAL_V1` keys).
pub fn app_keys(slot: u32, rule_id: u32, app: &AppRule) -> Vec<AppKey> {
    let lists: Vec<(u8, &Vec<String>)> = match app {
        AppRule::Dicom {
            calling_ae,
            called_ae,
        } => vec![
            (c::APP_FIELD_CALLING_AE, calling_ae),
            (c::APP_FIELD_CALLED_AE, called_ae),
        ],
        AppRule::Hl7 {
            sending_application,
            sending_facility,
            receiving_application,
            message_type,
        } => vec![
            (c::APP_FIELD_MSH3, sending_application),
            (c::APP_FIELD_MSH4, sending_facility),
            (c::APP_FIELD_MSH5, receiving_application),
            (c::APP_FIELD_MSH9, message_type),
        ],
    };
    lists
        .into_iter()
        .flat_map(|(field, l)| {
            l.iter()
                .filter_map(move |v| app_key(slot, rule_id, field, v))
        })
        .collect()
}

/// The gateway's inspected server ports in the config slot's layout (network order, unused
/// slots zero); ports past `INSPECT_PORTS` are left out (the config refuses them).
pub fn inspect_ports(ports: &[u16]) -> [[u8; 2]; c::INSPECT_PORTS] {
    let mut out = [[0; 2]; c::INSPECT_PORTS];
    for (slot, p) in out.iter_mut().zip(ports) {
        *slot = p.to_be_bytes();
    }
    out
}

pub fn mgmt_key(m: &MgmtRule) -> Key<MgmtKey> {
    let (family, addr, len) = net_raw(m.cidr);
    let proto = m.proto.number().unwrap_or(0);
    Key::new(
        c::MGMT_FIXED_BITS + len,
        MgmtKey {
            family,
            proto,
            port_be: m.port.to_be_bytes(),
            addr,
        },
    )
}

/// A datapath event in Rust types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathEvent {
    pub kind: EventKind,
    pub reason: Option<Reason>,
    pub device_id: u32,
    pub policy_id: u32,
    pub rule_id: u32,
    pub generation: u32,
    pub proto: u8,
    pub from_device: bool,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub src_mac: [u8; 6],
    /// An application check's refusal: why and the fields it read.
    pub app: Option<AppRefusal>,
}

/// What an application check read when it refused a flow (`AppEvent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRefusal {
    /// `calling_ae`, `msh3`, ... (`app_deny_name`).
    pub why: &'static str,
    /// `dicom` or `hl7`.
    pub app: &'static str,
    /// DICOM: calling AE, called AE (padding trimmed). HL7: MSH-3, MSH-4, MSH-5, MSH-9 (its
    /// first two components). Non-printable bytes are escaped.
    pub fields: Vec<String>,
}

/// The name of a `WG_APPDENY_V1` index (`APP_DENY_*`): the metric label and the alert's.
pub fn app_deny_name(why: u32) -> &'static str {
    match why {
        c::APP_DENY_CALLING_AE => "calling_ae",
        c::APP_DENY_CALLED_AE => "called_ae",
        c::APP_DENY_DICOM_MALFORMED => "dicom_malformed",
        c::APP_DENY_MSH3 => "msh3",
        c::APP_DENY_MSH4 => "msh4",
        c::APP_DENY_MSH5 => "msh5",
        c::APP_DENY_MSH9 => "msh9",
        c::APP_DENY_HL7_MALFORMED => "hl7_malformed",
        c::APP_DENY_UNVERIFIED => "unverified",
        _ => "other",
    }
}

fn app_refusal(bytes: &[u8]) -> Option<AppRefusal> {
    if bytes.len() < size_of::<AppEvent>() {
        return None;
    }
    // Safety: length checked; AppEvent is repr(C) plain data, read unaligned.
    let a: AppEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let dicom = a.app & c::APP_DICOM != 0;
    let n = if dicom { 2 } else { 4 };
    let fields = (0..n)
        .map(|i| {
            let len = usize::from(a.len[i]).min(c::APP_VALUE_LEN);
            let text = String::from_utf8_lossy(&a.fields[i][..len])
                .escape_default()
                .to_string();
            if dicom { text.trim().to_string() } else { text }
        })
        .collect();
    Some(AppRefusal {
        why: app_deny_name(a.why),
        app: if dicom { "dicom" } else { "hl7" },
        fields,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    NewFlow,
    Deny,
    WouldDeny,
    Spoof,
    UnknownDevice,
    NewAddress,
    FlowCap,
    /// The agent's heartbeat went stale (reason `PassMonitorWouldDeny`) or came back.
    Watchdog,
    /// An application check refused a flow (or would have, for a monitored device).
    AppRefused,
    Other(u32),
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match (self, self.alert_kind()) {
            (_, Some(k)) => k.as_str(),
            (EventKind::NewFlow, None) => "new_flow",
            (_, None) => "other",
        }
    }

    /// The alert kind of events of this kind (new flows and unknown kinds raise no alert).
    pub fn alert_kind(self) -> Option<Kind> {
        Some(match self {
            EventKind::Deny => Kind::Deny,
            EventKind::WouldDeny => Kind::WouldDeny,
            EventKind::Spoof => Kind::Spoof,
            EventKind::UnknownDevice => Kind::UnknownDevice,
            EventKind::NewAddress => Kind::NewAddress,
            EventKind::FlowCap => Kind::FlowCap,
            EventKind::Watchdog => Kind::Watchdog,
            EventKind::AppRefused => Kind::AppRefused,
            EventKind::NewFlow | EventKind::Other(_) => return None,
        })
    }

    pub fn from_raw(kind: u32) -> EventKind {
        match kind {
            c::EVENT_NEW_FLOW => EventKind::NewFlow,
            c::EVENT_DENY => EventKind::Deny,
            c::EVENT_WOULD_DENY => EventKind::WouldDeny,
            c::EVENT_SPOOF => EventKind::Spoof,
            c::EVENT_UNKNOWN_DEVICE => EventKind::UnknownDevice,
            c::EVENT_NEW_ADDRESS => EventKind::NewAddress,
            c::EVENT_FLOW_CAP => EventKind::FlowCap,
            c::EVENT_WATCHDOG => EventKind::Watchdog,
            c::EVENT_APP_REFUSED => EventKind::AppRefused,
            other => EventKind::Other(other),
        }
    }
}

/// Why events were not delivered (`WG_EVLOST_V2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LossReason {
    RateLimited,
    RingFull,
}

impl LossReason {
    pub const ALL: [LossReason; 2] = [LossReason::RateLimited, LossReason::RingFull];

    pub fn name(self) -> &'static str {
        match self {
            LossReason::RateLimited => "rate_limited",
            LossReason::RingFull => "ring_buffer_full",
        }
    }

    /// The index of (reason, kind) in `WG_EVLOST_V2`.
    pub fn index(self, kind: u32) -> u32 {
        let reason = match self {
            LossReason::RateLimited => c::LOST_RATE_LIMITED,
            LossReason::RingFull => c::LOST_RING_FULL,
        };
        reason * c::EVENT_KINDS + kind
    }
}

/// Decodes a ring-buffer record; `None` if it is not an `Event` (short or foreign record).
pub fn event(bytes: &[u8]) -> Option<DatapathEvent> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // Safety: length checked; Event is repr(C) plain data, read unaligned.
    let ev: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = EventKind::from_raw(ev.kind);
    Some(DatapathEvent {
        kind,
        reason: Reason::from_u32(ev.reason),
        device_id: ev.device_id,
        policy_id: ev.policy_id,
        rule_id: ev.rule_id,
        generation: ev.generation,
        proto: ev.proto,
        from_device: ev.direction == c::DIR_FROM_DEVICE,
        src: ip_from_raw(ev.family, ev.src),
        sport: u16::from_be_bytes(ev.sport_be),
        dst: ip_from_raw(ev.family, ev.dst),
        dport: u16::from_be_bytes(ev.dport_be),
        src_mac: ev.src_mac,
        app: if kind == EventKind::AppRefused {
            app_refusal(bytes)
        } else {
            None
        },
    })
}

/// A flow-open record from `WG_FLOWS_V1`, decoded. `key` stays raw: it is how the agent looks
/// the flow's conntrack entry up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowOpened {
    pub key: CtKey,
    /// The datapath's clock (CLOCK_MONOTONIC_COARSE ns).
    pub ts_ns: u64,
    pub device_id: u32,
    pub policy_id: u32,
    pub rule_id: u32,
    pub generation: u32,
    /// The first packet was dropped: a denied contact, no entry exists.
    pub denied: bool,
    /// The flow passed untracked (its device over its flow cap): no entry exists; a sample.
    pub untracked: bool,
    /// The device sent the first packet.
    pub from_device: bool,
    pub device: IpAddr,
    pub device_port: u16,
    pub peer: IpAddr,
    pub peer_port: u16,
    pub proto: u8,
    pub icmp_type: u8,
    pub tcp_flags: u8,
    pub ip_len: u32,
    pub dev_mac: [u8; 6],
}

/// Decodes a flow-open record; `None` if it is not one (short or foreign record).
pub fn flow_open(bytes: &[u8]) -> Option<FlowOpened> {
    if bytes.len() < size_of::<FlowOpen>() {
        return None;
    }
    // Safety: length checked; FlowOpen is repr(C) plain data, read unaligned.
    let r: FlowOpen = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let k = &r.key;
    let a = (ip_from_raw(k.family, k.a), u16::from_be_bytes(k.a_port_be));
    let b = (ip_from_raw(k.family, k.b), u16::from_be_bytes(k.b_port_be));
    let (device, peer) = if k.dev_is_a != 0 { (a, b) } else { (b, a) };
    Some(FlowOpened {
        key: r.key,
        ts_ns: r.ts_ns,
        device_id: r.device_id,
        policy_id: r.policy_id,
        rule_id: r.rule_id,
        generation: r.generation,
        denied: r.flags & c::FLOW_DENIED != 0,
        untracked: r.flags & c::FLOW_UNTRACKED != 0,
        from_device: r.direction == c::DIR_FROM_DEVICE,
        device: device.0,
        device_port: device.1,
        peer: peer.0,
        peer_port: peer.1,
        proto: k.proto,
        icmp_type: r.icmp_type,
        tcp_flags: r.tcp_flags,
        ip_len: r.ip_len,
        dev_mac: r.dev_mac,
    })
}

/// A flow kept on grace (do-not-disrupt): established under an earlier generation, denied by
/// the active one, passing until it idles out or its grace ends (read from its conntrack entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraceFlow {
    pub device_id: u32,
    pub device: IpAddr,
    pub peer: IpAddr,
    /// The server port: the destination port of the flow's first packet.
    pub port: u16,
    pub proto: u8,
    /// The generation the flow was last allowed under.
    pub generation: u32,
    /// Seconds until its grace ends (it may idle out sooner).
    pub ends_in_s: u64,
}

/// The flow of a conntrack entry if it is on grace at `now_ns` (coarse-clock ns).
pub fn grace_flow(k: &CtKey, v: &CtValue, now_ns: u64) -> Option<GraceFlow> {
    let idle = now_ns.saturating_sub(v.last_seen_ns) >= u64::from(v.idle_timeout_s) * 1_000_000_000;
    if v.grace_until_ns <= now_ns || idle {
        return None;
    }
    let a = (ip_from_raw(k.family, k.a), u16::from_be_bytes(k.a_port_be));
    let b = (ip_from_raw(k.family, k.b), u16::from_be_bytes(k.b_port_be));
    let (device, peer) = if k.dev_is_a != 0 { (a, b) } else { (b, a) };
    Some(GraceFlow {
        device_id: v.device_id,
        device: device.0,
        peer: peer.0,
        port: if v.direction == c::DIR_FROM_DEVICE {
            peer.1
        } else {
            device.1
        },
        proto: k.proto,
        generation: v.generation,
        ends_in_s: (v.grace_until_ns - now_ns).div_ceil(1_000_000_000),
    })
}

/// A payload record from `WG_PAYLOAD_V1`: the first bytes of one TCP segment of an inspected
/// flow, borrowed from the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadSegment<'a> {
    pub key: CtKey,
    /// The segment goes in the flow's opening direction.
    pub forward: bool,
    pub seq: u32,
    /// Payload bytes the segment carried; `data` may hold fewer (the datapath copies at most
    /// `PAYLOAD_DATA`).
    pub seg_len: u16,
    pub data: &'a [u8],
}

/// Decodes a payload record; `None` if it is not one (short, or a length past its buffer).
pub fn payload(bytes: &[u8]) -> Option<PayloadSegment<'_>> {
    if bytes.len() < size_of::<PayloadRecord>() {
        return None;
    }
    // Safety: length checked; the header fields are plain data, read unaligned.
    let r: PayloadRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let len = usize::from(r.len);
    if len == 0 || len > c::PAYLOAD_DATA {
        return None;
    }
    let data_off = std::mem::offset_of!(PayloadRecord, data);
    Some(PayloadSegment {
        key: r.key,
        forward: r.forward != 0,
        seq: u32::from_be_bytes(r.seq_be),
        seg_len: r.seg_len,
        data: &bytes[data_off..data_off + len],
    })
}

/// A conntrack entry's counters, by direction of the flow (opening / back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// The datapath's clock.
    pub last_seen_ns: u64,
    pub packets_fwd: u64,
    pub bytes_fwd: u64,
    pub packets_rev: u64,
    pub bytes_rev: u64,
    pub tcp_flags_fwd: u8,
    pub tcp_flags_rev: u8,
    pub idle_timeout_s: u32,
}

/// What the flow cache answered of a flow and did not fold into its conntrack entry yet, by
/// direction of the flow (opening / back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unsynced {
    pub packets_fwd: u64,
    pub bytes_fwd: u64,
    pub packets_rev: u64,
    pub bytes_rev: u64,
}

/// The flow cache keys whose slots fold into a conntrack entry: the device's packets at the
/// hook from it and the peer's at the hook to it (the datapath keys the entry with the device
/// as source at `DIR_FROM_DEVICE`, as destination at `DIR_TO_DEVICE`).
pub fn cache_keys(k: &CtKey) -> [FlowKey; 2] {
    let (dev, dev_port, peer, peer_port) = if k.dev_is_a != 0 {
        (&k.a, k.a_port_be, &k.b, k.b_port_be)
    } else {
        (&k.b, k.b_port_be, &k.a, k.a_port_be)
    };
    [
        FlowKey::new(
            dev,
            peer,
            dev_port,
            peer_port,
            k.proto,
            k.family,
            c::DIR_FROM_DEVICE,
        ),
        FlowKey::new(
            peer,
            dev,
            peer_port,
            dev_port,
            k.proto,
            k.family,
            c::DIR_TO_DEVICE,
        ),
    ]
}

/// Adds what one CPU's `slot` of `key` holds unsynced, if it still holds that key.
pub fn add_unsynced(u: &mut Unsynced, key: &FlowKey, slot: &FlowSlot) {
    if slot.key != *key {
        return;
    }
    let (packets, bytes) = slot.pending_counts();
    if slot.reply != 0 {
        u.packets_rev += packets;
        u.bytes_rev += bytes;
    } else {
        u.packets_fwd += packets;
        u.bytes_fwd += bytes;
    }
}

pub fn flow_counters(v: &CtValue) -> FlowCounters {
    FlowCounters {
        last_seen_ns: v.last_seen_ns,
        packets_fwd: v.packets_fwd,
        bytes_fwd: v.bytes_fwd,
        packets_rev: v.packets_rev,
        bytes_rev: v.bytes_rev,
        tcp_flags_fwd: v.tcp_flags_fwd,
        tcp_flags_rev: v.tcp_flags_rev,
        idle_timeout_s: v.idle_timeout_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardgate_policy::desired::{Direction, PortPrefix};

    /// A finishing flow's cache slots: the device's packets at the hook from it, the peer's at
    /// the hook to it, whichever end of the normalized key the device is; a slot counts only
    /// while it holds that key, its packets the way it served.
    #[test]
    fn a_flows_cache_slots_are_its_two_hooks_and_count_only_its_own_key() {
        let dev = ip_raw("198.51.100.53".parse().unwrap()).1;
        let peer = ip_raw("192.0.2.10".parse().unwrap()).1;
        // The peer's address is smaller: it is endpoint a, the device b.
        let k = CtKey {
            a: peer,
            b: dev,
            a_port_be: 9u16.to_be_bytes(),
            b_port_be: 40000u16.to_be_bytes(),
            proto: c::PROTO_UDP,
            family: c::FAMILY_V4,
            dev_is_a: 0,
            _pad: 0,
        };
        let [from_dev, to_dev] = cache_keys(&k);
        let udp = |s, d, sp: u16, dp: u16, hook| {
            FlowKey::new(
                s,
                d,
                sp.to_be_bytes(),
                dp.to_be_bytes(),
                c::PROTO_UDP,
                c::FAMILY_V4,
                hook,
            )
        };
        assert_eq!(from_dev, udp(&dev, &peer, 40000, 9, c::DIR_FROM_DEVICE));
        assert_eq!(to_dev, udp(&peer, &dev, 9, 40000, c::DIR_TO_DEVICE));
        assert_ne!(from_dev.index(), to_dev.index());
        let slot = |key, packets: u64, bytes: u64, reply| FlowSlot {
            key,
            pending: packets << c::PENDING_PACKETS_SHIFT | bytes,
            reply,
            ..FlowSlot::default()
        };
        let mut u = Unsynced::default();
        add_unsynced(&mut u, &from_dev, &slot(from_dev, 29_000, 2_900_000, 0));
        add_unsynced(&mut u, &to_dev, &slot(to_dev, 2, 200, 1));
        // Another flow in the slot now: not this one's.
        add_unsynced(&mut u, &from_dev, &slot(to_dev, 5, 500, 0));
        assert_eq!(
            u,
            Unsynced {
                packets_fwd: 29_000,
                bytes_fwd: 2_900_000,
                packets_rev: 2,
                bytes_rev: 200,
            }
        );
    }

    #[test]
    fn host_port_pairs_join_hosts_with_their_sets_single_ports_up_to_the_cap() {
        let host = |last: u8, set: u32| {
            (
                PeerKey {
                    slot: 1,
                    direction: c::DIR_FROM_DEVICE,
                    family: c::FAMILY_V4,
                    _pad: 0,
                    policy_id: 7,
                    addr: ip_raw(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))).1,
                },
                PeerValue {
                    peer_set: set,
                    flags: 0,
                },
            )
        };
        let port = |set: u32, port: u16, rule_id: u32| {
            (
                PortKey {
                    slot: 1,
                    _pad: 0,
                    _pad1: 0,
                    peer_set: set,
                    proto: c::PROTO_TCP,
                    port_be: port.to_be_bytes(),
                    _pad2: 0,
                },
                RuleValue {
                    rule_id,
                    action: c::RULE_ALLOW,
                    idle_timeout_s: 60,
                    flags: 0,
                },
            )
        };
        let hosts = [host(1, 1), host(2, 2), host(3, 9)];
        let exact = [port(1, 104, 10), port(1, 11112, 11), port(2, 2575, 20)];
        let pairs = host_port_pairs(&hosts, &exact, 100);
        let got: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.addr[3], u16::from_be_bytes(k.port_be), v.rule_id))
            .collect();
        // Host .3's set has no single ports: nothing to join.
        assert_eq!(got, [(1, 104, 10), (1, 11112, 11), (2, 2575, 20)]);
        let (k, _) = pairs[0];
        assert_eq!(
            (k.slot, k.direction, k.family, k.proto, k.policy_id),
            (1, c::DIR_FROM_DEVICE, c::FAMILY_V4, c::PROTO_TCP, 7)
        );
        assert_eq!(host_port_pairs(&hosts, &exact, 2).len(), 2);
    }

    #[test]
    fn keys_carry_prefixes_in_network_order() {
        let e = PortEntry {
            peer_set: 3,
            proto: Some(6),
            port: Some(PortPrefix {
                value: 1024,
                len: 6,
            }),
            rule_id: 9,
            idle_timeout_s: 0,
            inspect: true,
        };
        assert_eq!(rule_value(&e, 0).flags, c::RULE_INSPECT);
        let k = port_key(1, &e);
        assert_eq!(k.prefix_len(), 72 + 6);
        assert_eq!(k.data().port_be, [0x04, 0x00]);
        let p = PeerEntry {
            policy_id: 2,
            direction: Direction::ToDevice,
            cidr: "198.51.100.77/24".parse().unwrap(),
            peer_set: 3,
        };
        let k = peer_key(0, &p);
        assert_eq!(k.prefix_len(), 64 + 24);
        assert_eq!(&k.data().addr[..4], &[198, 51, 100, 0]);
        assert_eq!(k.data().direction, c::DIR_TO_DEVICE);
    }

    #[test]
    fn events_round_trip_and_short_records_are_rejected() {
        let mut raw = Event {
            kind: c::EVENT_DENY,
            reason: Reason::DropPolicy as u32,
            ..Default::default()
        };
        raw.family = c::FAMILY_V4;
        raw.src[..4].copy_from_slice(&[192, 0, 2, 10]);
        raw.dport_be = 104u16.to_be_bytes();
        // Safety: Event is plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw as *const Event).cast::<u8>(), size_of::<Event>())
        };
        let ev = event(bytes).unwrap();
        assert_eq!(ev.kind, EventKind::Deny);
        assert_eq!(ev.reason, Some(Reason::DropPolicy));
        assert_eq!(ev.src, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(ev.dport, 104);
        assert!(event(&bytes[..10]).is_none());
    }

    #[test]
    fn flow_records_name_the_device_end_of_the_key() {
        let mut raw = FlowOpen {
            flags: c::FLOW_DENIED,
            direction: c::DIR_FROM_DEVICE,
            ..Default::default()
        };
        raw.key.family = c::FAMILY_V4;
        raw.key.a[..4].copy_from_slice(&[192, 0, 2, 10]);
        raw.key.a_port_be = 40000u16.to_be_bytes();
        raw.key.b[..4].copy_from_slice(&[198, 51, 100, 10]);
        raw.key.b_port_be = 104u16.to_be_bytes();
        raw.key.proto = 6;
        // The device is endpoint b: the peer is a.
        raw.key.dev_is_a = 0;
        // Safety: FlowOpen is plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const FlowOpen).cast::<u8>(),
                size_of::<FlowOpen>(),
            )
        };
        let f = flow_open(bytes).unwrap();
        assert!(f.denied && f.from_device);
        assert_eq!(f.device, "198.51.100.10".parse::<IpAddr>().unwrap());
        assert_eq!((f.device_port, f.peer_port), (104, 40000));
        assert_eq!(f.peer, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert!(flow_open(&bytes[..40]).is_none());
    }

    #[test]
    fn a_flow_on_grace_names_its_device_peer_and_server_port() {
        let (_, pump) = ip_raw("192.0.2.10".parse().unwrap());
        let (_, pacs) = ip_raw("198.51.100.10".parse().unwrap());
        let key = CtKey {
            a: pump,
            b: pacs,
            a_port_be: 40000u16.to_be_bytes(),
            b_port_be: 11112u16.to_be_bytes(),
            proto: c::PROTO_TCP,
            family: c::FAMILY_V4,
            dev_is_a: 1,
            _pad: 0,
        };
        let now = 1_000_000_000_000;
        let v = CtValue {
            last_seen_ns: now - 1_000_000_000,
            idle_timeout_s: 600,
            device_id: 7,
            generation: 3,
            direction: c::DIR_FROM_DEVICE,
            grace_until_ns: now + 90_500_000_000,
            ..CtValue::default()
        };
        let g = grace_flow(&key, &v, now).expect("on grace");
        assert_eq!(
            (
                g.device_id,
                g.device,
                g.peer,
                g.port,
                g.generation,
                g.ends_in_s
            ),
            (
                7,
                "192.0.2.10".parse().unwrap(),
                "198.51.100.10".parse().unwrap(),
                11112,
                3,
                91
            )
        );
        // Not on grace: never marked, grace over, idled out.
        for v in [
            CtValue {
                grace_until_ns: 0,
                ..v
            },
            CtValue {
                grace_until_ns: now,
                ..v
            },
            CtValue {
                last_seen_ns: now - 600_000_000_000,
                ..v
            },
        ] {
            assert_eq!(grace_flow(&key, &v, now), None);
        }
    }

    #[test]
    fn payload_records_give_their_bytes_and_bad_lengths_are_rejected() {
        let mut raw = PayloadRecord {
            ts_ns: 1,
            key: CtKey::default(),
            seq_be: 0x0102_0304u32.to_be_bytes(),
            seg_len: 900,
            len: 5,
            forward: 1,
            _pad: 0,
            _pad1: 0,
            _pad2: 0,
            data: [0; c::PAYLOAD_DATA],
        };
        raw.data[..5].copy_from_slice(b"MSH|^");
        let bytes = |r: &PayloadRecord| {
            // Safety: PayloadRecord is plain data.
            unsafe {
                std::slice::from_raw_parts(
                    (r as *const PayloadRecord).cast::<u8>(),
                    size_of::<PayloadRecord>(),
                )
            }
            .to_vec()
        };
        let b = bytes(&raw);
        let p = payload(&b).unwrap();
        assert_eq!((p.seq, p.seg_len, p.forward), (0x0102_0304, 900, true));
        assert_eq!(p.data, b"MSH|^");
        assert!(payload(&b[..100]).is_none());
        raw.len = c::PAYLOAD_DATA as u16 + 1;
        assert!(payload(&bytes(&raw)).is_none());
        raw.len = 0;
        assert!(payload(&bytes(&raw)).is_none());
    }
}
