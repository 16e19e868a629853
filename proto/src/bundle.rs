//! The compiled policy at the edges: `DesiredState` -> `PolicyBundle` on the controller, and
//! back with every field checked (`TryFrom`) on the agent. Bytes from the network never reach
//! the map writer unchecked: a field out of range, an unknown enum value or a reference to a
//! policy or rule the bundle does not hold is a [`BundleError`] naming where it is.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use prost::Message as _;
use thiserror::Error;
use wardgate_policy::desired::{
    AppRule, DesiredState, DeviceEntry, Direction, MacAddr, PeerEntry, PolicyEntry, PortEntry,
    PortPrefix, PortRange, Proto, Rule,
};
use wardgate_policy::detection::{ClassDetection, Tuning};
use wardgate_policy::profile::Sensitivity;

use crate::v1 as pb;

/// A bundle that does not convert to a desired state.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("policy bundle for `{gateway}` generation {generation}: {at}: {problem}")]
pub struct BundleError {
    pub gateway: String,
    pub generation: u32,
    /// Where in the bundle, e.g. `devices[3].mac`.
    pub at: String,
    pub problem: String,
}

/// The encoded size of the bundle `state` travels in (with `reason`), to check against
/// [`crate::MAX_BUNDLE_BYTES`] before it is stored.
pub fn bundle_len(state: &DesiredState, reason: &str) -> usize {
    to_bundle(state, reason).encoded_len()
}

/// The bundle of `state`: epoch and content hash come from the state (set by the controller
/// when it reads the generation from its store).
pub fn to_bundle(state: &DesiredState, reason: &str) -> pb::PolicyBundle {
    pb::PolicyBundle {
        gateway: state.gateway.clone(),
        generation: state.generation,
        reason: reason.to_string(),
        epoch: state.epoch.clone(),
        content_hash: state.content_hash.clone(),
        policy: Some(pb::CompiledPolicy::from(state)),
    }
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn app_pb(a: &AppRule) -> pb::AppRule {
    pb::AppRule {
        app: Some(match a {
            AppRule::Dicom {
                calling_ae,
                called_ae,
            } => pb::app_rule::App::Dicom(pb::DicomRule {
                calling_ae: calling_ae.clone(),
                called_ae: called_ae.clone(),
            }),
            AppRule::Hl7 {
                sending_application,
                sending_facility,
                receiving_application,
                message_type,
            } => pb::app_rule::App::Hl7(pb::Hl7Rule {
                sending_application: sending_application.clone(),
                sending_facility: sending_facility.clone(),
                receiving_application: receiving_application.clone(),
                message_type: message_type.clone(),
            }),
        }),
    }
}

fn cidr(n: &IpNet) -> pb::Cidr {
    pb::Cidr {
        addr: ip_bytes(n.addr()),
        prefix_len: n.prefix_len().into(),
    }
}

fn direction(d: Direction) -> i32 {
    match d {
        Direction::FromDevice => pb::RuleDirection::FromDevice,
        Direction::ToDevice => pb::RuleDirection::ToDevice,
    }
    .into()
}

impl From<&DesiredState> for pb::CompiledPolicy {
    fn from(s: &DesiredState) -> Self {
        pb::CompiledPolicy {
            devices: s
                .devices
                .iter()
                .map(|d| pb::CompiledDevice {
                    device_id: d.device_id,
                    name: d.name.clone(),
                    addrs: d.addrs.iter().map(|a| ip_bytes(*a)).collect(),
                    mac: d.mac.0.to_vec(),
                    policy_id: d.policy_id,
                    mode: crate::enums::mode_pb(d.mode).into(),
                    max_flows: d.max_flows,
                    fail_open: d.fail_open,
                    grace_s: Some(d.grace_s),
                })
                .collect(),
            policies: s
                .policies
                .iter()
                .map(|p| pb::CompiledProfile {
                    policy_id: p.policy_id,
                    profile: p.profile.clone(),
                    profile_version: p.profile_version,
                    rules: p
                        .rules
                        .iter()
                        .map(|r| pb::CompiledRule {
                            rule_id: r.rule_id,
                            name: r.name.clone(),
                            direction: direction(r.direction),
                            protocol: match r.proto {
                                Proto::Any => pb::RuleProtocol::Any,
                                Proto::Tcp => pb::RuleProtocol::Tcp,
                                Proto::Udp => pb::RuleProtocol::Udp,
                                Proto::Icmp => pb::RuleProtocol::Icmp,
                                Proto::Icmpv6 => pb::RuleProtocol::Icmpv6,
                            }
                            .into(),
                            peers: r.peers.iter().map(cidr).collect(),
                            ports: r.ports.map(|p| pb::PortRange {
                                lo: p.lo.into(),
                                hi: p.hi.into(),
                            }),
                            idle_timeout_s: r.idle_timeout_s,
                            inspect: r.inspect,
                            app: r.app.as_ref().map(app_pb),
                        })
                        .collect(),
                    sensitivity: match p.sensitivity {
                        Sensitivity::Low => pb::Sensitivity::Low,
                        Sensitivity::Medium => pb::Sensitivity::Medium,
                        Sensitivity::High => pb::Sensitivity::High,
                    }
                    .into(),
                    detection: p
                        .detection
                        .iter()
                        .map(|(d, t)| pb::DetectorTuning {
                            detector: d.to_string(),
                            tuning: Some(match t {
                                Tuning::Count(n) => pb::detector_tuning::Tuning::Count(n),
                                Tuning::Off => pb::detector_tuning::Tuning::Off(true),
                            }),
                        })
                        .collect(),
                })
                .collect(),
            groups: s
                .groups
                .iter()
                .map(|(name, nets)| pb::SiteGroup {
                    name: name.clone(),
                    cidrs: nets.iter().map(cidr).collect(),
                })
                .collect(),
            peers: s
                .peers
                .iter()
                .map(|e| pb::PeerSetEntry {
                    policy_id: e.policy_id,
                    direction: direction(e.direction),
                    cidr: Some(cidr(&e.cidr)),
                    peer_set: e.peer_set,
                })
                .collect(),
            ports: s
                .ports
                .iter()
                .map(|e| pb::PortRuleEntry {
                    peer_set: e.peer_set,
                    protocol: e.proto.map(u32::from),
                    port: e.port.map(|p| pb::PortPrefix {
                        value: p.value.into(),
                        len: p.len.into(),
                    }),
                    rule_id: e.rule_id,
                    idle_timeout_s: e.idle_timeout_s,
                    inspect: e.inspect,
                })
                .collect(),
            dns_resolvers: s
                .dns
                .resolvers
                .iter()
                .map(|r| pb::DnsResolverEntry {
                    policy_id: r.policy_id,
                    cidr: Some(cidr(&r.cidr)),
                })
                .collect(),
            dns_names: s
                .dns
                .names
                .iter()
                .map(|n| pb::DnsNameEntry {
                    policy_id: n.policy_id,
                    direction: direction(n.direction),
                    name: n.name.clone(),
                    name_id: n.name_id,
                    peer_set: n.peer_set,
                })
                .collect(),
        }
    }
}

/// Builds errors that name the bundle and the field.
struct Ctx<'a> {
    gateway: &'a str,
    generation: u32,
}

impl Ctx<'_> {
    fn err(&self, at: impl Into<String>, problem: impl Into<String>) -> BundleError {
        BundleError {
            gateway: self.gateway.to_string(),
            generation: self.generation,
            at: at.into(),
            problem: problem.into(),
        }
    }

    fn ip(&self, at: &str, b: &[u8]) -> Result<IpAddr, BundleError> {
        match b.len() {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(b).expect("length checked"),
            ))),
            16 => Ok(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(b).expect("length checked"),
            ))),
            n => Err(self.err(at, format!("an address has 4 or 16 bytes, not {n}"))),
        }
    }

    fn cidr(&self, at: &str, c: Option<&pb::Cidr>) -> Result<IpNet, BundleError> {
        let c = c.ok_or_else(|| self.err(at, "missing"))?;
        let addr = self.ip(&format!("{at}.addr"), &c.addr)?;
        let len = u8::try_from(c.prefix_len)
            .ok()
            .and_then(|l| IpNet::new(addr, l).ok())
            .ok_or_else(|| {
                self.err(
                    format!("{at}.prefix_len"),
                    format!("{} is too long for {addr}", c.prefix_len),
                )
            })?;
        Ok(len)
    }

    /// An application rule: DICOM or HL7, every value within what the datapath compares
    /// (`APP_VALUE_LEN` bytes, AE titles 16), printable ASCII.
    fn app(&self, at: &str, a: &pb::AppRule) -> Result<AppRule, BundleError> {
        let list = |field: &str, v: &[String], max: usize| -> Result<Vec<String>, BundleError> {
            for (k, x) in v.iter().enumerate() {
                if x.is_empty() || x.len() > max || !x.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                    return Err(self.err(
                        format!("{at}.{field}[{k}]"),
                        format!("`{x}` is not 1-{max} printable ASCII characters"),
                    ));
                }
            }
            Ok(v.to_vec())
        };
        let value_len = wardgate_policy::desired::APP_VALUE_LEN;
        match &a.app {
            Some(pb::app_rule::App::Dicom(d)) => Ok(AppRule::Dicom {
                calling_ae: list("dicom.calling_ae", &d.calling_ae, 16)?,
                called_ae: list("dicom.called_ae", &d.called_ae, 16)?,
            }),
            Some(pb::app_rule::App::Hl7(h)) => Ok(AppRule::Hl7 {
                sending_application: list(
                    "hl7.sending_application",
                    &h.sending_application,
                    value_len,
                )?,
                sending_facility: list("hl7.sending_facility", &h.sending_facility, value_len)?,
                receiving_application: list(
                    "hl7.receiving_application",
                    &h.receiving_application,
                    value_len,
                )?,
                message_type: list("hl7.message_type", &h.message_type, value_len)?,
            }),
            None => Err(self.err(at, "an application rule with neither dicom nor hl7")),
        }
    }

    /// A profile's detector tuning, checked as the profile's own was.
    fn detection(
        &self,
        at: &str,
        list: &[pb::DetectorTuning],
    ) -> Result<ClassDetection, BundleError> {
        let mut out = ClassDetection::default();
        for (i, t) in list.iter().enumerate() {
            let at = format!("{at}.detection[{i}]");
            let tuning = match t.tuning {
                Some(pb::detector_tuning::Tuning::Count(n)) => Tuning::Count(n),
                Some(pb::detector_tuning::Tuning::Off(true)) => Tuning::Off,
                Some(pb::detector_tuning::Tuning::Off(false)) | None => {
                    return Err(self.err(at, "neither a count nor off"));
                }
            };
            out.insert(&t.detector, tuning)
                .map_err(|why| self.err(at, why))?;
        }
        Ok(out)
    }

    fn nonzero(&self, at: &str, v: u32) -> Result<u32, BundleError> {
        if v == 0 {
            Err(self.err(at, "0 is not an id (ids start at 1)"))
        } else {
            Ok(v)
        }
    }

    fn port(&self, at: &str, v: u32) -> Result<u16, BundleError> {
        u16::try_from(v).map_err(|_| self.err(at, format!("port {v} is above 65535")))
    }

    fn direction(&self, at: &str, v: i32) -> Result<Direction, BundleError> {
        match pb::RuleDirection::try_from(v) {
            Ok(pb::RuleDirection::FromDevice) => Ok(Direction::FromDevice),
            Ok(pb::RuleDirection::ToDevice) => Ok(Direction::ToDevice),
            _ => Err(self.err(at, format!("{v} is not a rule direction"))),
        }
    }
}

impl TryFrom<pb::PolicyBundle> for DesiredState {
    type Error = BundleError;

    fn try_from(b: pb::PolicyBundle) -> Result<Self, BundleError> {
        let cx = Ctx {
            gateway: &b.gateway,
            generation: b.generation,
        };
        if b.gateway.is_empty() {
            return Err(cx.err("gateway", "empty"));
        }
        // The datapath keeps the generation in 31 bits next to the slot bit.
        if b.generation == 0 || b.generation > u32::MAX >> 1 {
            return Err(cx.err(
                "generation",
                format!("{} is outside 1..=2^31-1", b.generation),
            ));
        }
        let p = b
            .policy
            .as_ref()
            .ok_or_else(|| cx.err("policy", "missing"))?;

        let mut policies = Vec::with_capacity(p.policies.len());
        let mut rule_ids = BTreeSet::new();
        for (i, pp) in p.policies.iter().enumerate() {
            let at = format!("policies[{i}]");
            let mut rules = Vec::with_capacity(pp.rules.len());
            for (j, r) in pp.rules.iter().enumerate() {
                let at = format!("{at}.rules[{j}]");
                let proto = match pb::RuleProtocol::try_from(r.protocol) {
                    Ok(pb::RuleProtocol::Any) => Proto::Any,
                    Ok(pb::RuleProtocol::Tcp) => Proto::Tcp,
                    Ok(pb::RuleProtocol::Udp) => Proto::Udp,
                    Ok(pb::RuleProtocol::Icmp) => Proto::Icmp,
                    Ok(pb::RuleProtocol::Icmpv6) => Proto::Icmpv6,
                    _ => {
                        return Err(cx.err(
                            format!("{at}.protocol"),
                            format!("{} is not a rule protocol", r.protocol),
                        ));
                    }
                };
                let ports = match &r.ports {
                    None => None,
                    Some(pr) => {
                        let lo = cx.port(&format!("{at}.ports.lo"), pr.lo)?;
                        let hi = cx.port(&format!("{at}.ports.hi"), pr.hi)?;
                        if lo > hi {
                            return Err(
                                cx.err(format!("{at}.ports"), format!("range {lo}-{hi} is empty"))
                            );
                        }
                        Some(PortRange { lo, hi })
                    }
                };
                let rule_id = cx.nonzero(&format!("{at}.rule_id"), r.rule_id)?;
                rule_ids.insert(rule_id);
                rules.push(Rule {
                    rule_id,
                    name: r.name.clone(),
                    direction: cx.direction(&format!("{at}.direction"), r.direction)?,
                    proto,
                    peers: r
                        .peers
                        .iter()
                        .enumerate()
                        .map(|(k, c)| cx.cidr(&format!("{at}.peers[{k}]"), Some(c)))
                        .collect::<Result<_, _>>()?,
                    ports,
                    idle_timeout_s: r.idle_timeout_s,
                    inspect: r.inspect,
                    app: match &r.app {
                        None => None,
                        Some(a) => Some(cx.app(&format!("{at}.app"), a)?),
                    },
                });
            }
            policies.push(PolicyEntry {
                policy_id: cx.nonzero(&format!("{at}.policy_id"), pp.policy_id)?,
                profile: pp.profile.clone(),
                profile_version: pp.profile_version,
                rules,
                sensitivity: match pb::Sensitivity::try_from(pp.sensitivity) {
                    Ok(pb::Sensitivity::Low) => Sensitivity::Low,
                    Ok(pb::Sensitivity::Unspecified | pb::Sensitivity::Medium) => {
                        Sensitivity::Medium
                    }
                    Ok(pb::Sensitivity::High) => Sensitivity::High,
                    Err(_) => {
                        return Err(cx.err(
                            format!("{at}.sensitivity"),
                            format!("{} is not a sensitivity", pp.sensitivity),
                        ));
                    }
                },
                detection: cx.detection(&at, &pp.detection)?,
            });
        }
        let policy_ids: BTreeSet<u32> = policies.iter().map(|p| p.policy_id).collect();
        if policy_ids.len() != policies.len() {
            return Err(cx.err("policies", "two policies share an id"));
        }
        let known_policy = |at: String, id: u32| {
            if policy_ids.contains(&id) {
                Ok(id)
            } else {
                Err(cx.err(at, format!("policy {id} is not in the bundle")))
            }
        };

        let mut devices = Vec::with_capacity(p.devices.len());
        let mut addrs_seen = BTreeSet::new();
        let mut ids_seen = BTreeSet::new();
        for (i, d) in p.devices.iter().enumerate() {
            let at = format!("devices[{i}]");
            let device_id = cx.nonzero(&format!("{at}.device_id"), d.device_id)?;
            if !ids_seen.insert(device_id) {
                return Err(cx.err(
                    format!("{at}.device_id"),
                    format!("{device_id} is used twice"),
                ));
            }
            let mut addrs = Vec::with_capacity(d.addrs.len());
            for (k, a) in d.addrs.iter().enumerate() {
                let ip = cx.ip(&format!("{at}.addrs[{k}]"), a)?;
                if !addrs_seen.insert(ip) {
                    return Err(cx.err(
                        format!("{at}.addrs[{k}]"),
                        format!("{ip} belongs to another device too"),
                    ));
                }
                addrs.push(ip);
            }
            let mac = <[u8; 6]>::try_from(d.mac.as_slice()).map_err(|_| {
                cx.err(
                    format!("{at}.mac"),
                    format!("a MAC has 6 bytes, not {}", d.mac.len()),
                )
            })?;
            let mode = pb::DeviceMode::try_from(d.mode)
                .ok()
                .and_then(crate::enums::mode_of_pb)
                .ok_or_else(|| {
                    cx.err(
                        format!("{at}.mode"),
                        format!("{} is not a device mode", d.mode),
                    )
                })?;
            devices.push(DeviceEntry {
                device_id,
                name: d.name.clone(),
                addrs,
                mac: MacAddr(mac),
                policy_id: known_policy(format!("{at}.policy_id"), d.policy_id)?,
                mode,
                max_flows: d.max_flows,
                fail_open: d.fail_open,
                grace_s: d
                    .grace_s
                    .unwrap_or(wardgate_policy::profile::DEFAULT_GRACE_MAX_S),
            });
        }

        let mut peers = Vec::with_capacity(p.peers.len());
        let mut peer_sets = BTreeSet::new();
        for (i, e) in p.peers.iter().enumerate() {
            let at = format!("peers[{i}]");
            let peer_set = cx.nonzero(&format!("{at}.peer_set"), e.peer_set)?;
            peer_sets.insert(peer_set);
            peers.push(PeerEntry {
                policy_id: known_policy(format!("{at}.policy_id"), e.policy_id)?,
                direction: cx.direction(&format!("{at}.direction"), e.direction)?,
                cidr: cx.cidr(&format!("{at}.cidr"), e.cidr.as_ref())?,
                peer_set,
            });
        }

        let mut ports = Vec::with_capacity(p.ports.len());
        for (i, e) in p.ports.iter().enumerate() {
            let at = format!("ports[{i}]");
            if !peer_sets.contains(&e.peer_set) {
                return Err(cx.err(
                    format!("{at}.peer_set"),
                    format!("peer set {} has no peer entry", e.peer_set),
                ));
            }
            if !rule_ids.contains(&e.rule_id) {
                return Err(cx.err(
                    format!("{at}.rule_id"),
                    format!("rule {} is not in the bundle", e.rule_id),
                ));
            }
            let proto = match e.protocol {
                None => None,
                Some(v) => Some(u8::try_from(v).map_err(|_| {
                    cx.err(
                        format!("{at}.protocol"),
                        format!("{v} is not an IP protocol"),
                    )
                })?),
            };
            let port = match &e.port {
                None => None,
                Some(pp) => {
                    let value = cx.port(&format!("{at}.port.value"), pp.value)?;
                    let len = u8::try_from(pp.len)
                        .ok()
                        .filter(|l| *l <= 16)
                        .ok_or_else(|| {
                            cx.err(
                                format!("{at}.port.len"),
                                format!("a port prefix is 0-16 bits, not {}", pp.len),
                            )
                        })?;
                    Some(PortPrefix { value, len })
                }
            };
            if proto.is_none() && port.is_some() {
                return Err(cx.err(at, "a port without a protocol"));
            }
            ports.push(PortEntry {
                peer_set: e.peer_set,
                proto,
                port,
                rule_id: e.rule_id,
                idle_timeout_s: e.idle_timeout_s,
                inspect: e.inspect,
            });
        }

        let mut groups = std::collections::BTreeMap::new();
        for (i, g) in p.groups.iter().enumerate() {
            let at = format!("groups[{i}]");
            let nets = g
                .cidrs
                .iter()
                .enumerate()
                .map(|(k, c)| cx.cidr(&format!("{at}.cidrs[{k}]"), Some(c)))
                .collect::<Result<Vec<_>, _>>()?;
            if groups.insert(g.name.clone(), nets).is_some() {
                return Err(cx.err(at, format!("group `{}` is listed twice", g.name)));
            }
        }
        let mut dns = wardgate_policy::dns::DnsRules::default();
        for (i, r) in p.dns_resolvers.iter().enumerate() {
            let at = format!("dns_resolvers[{i}]");
            dns.resolvers.push(wardgate_policy::dns::ResolverEntry {
                policy_id: cx.nonzero(&format!("{at}.policy_id"), r.policy_id)?,
                cidr: cx.cidr(&format!("{at}.cidr"), r.cidr.as_ref())?,
            });
        }
        for (i, n) in p.dns_names.iter().enumerate() {
            let at = format!("dns_names[{i}]");
            if let Some(problem) = wardgate_policy::dns::name_problem(&n.name) {
                return Err(cx.err(format!("{at}.name"), problem));
            }
            if n.name_id != wardgate_policy::dns::dns_name_id(&n.name) {
                return Err(cx.err(
                    format!("{at}.name_id"),
                    format!("{} is not the id of `{}`", n.name_id, n.name),
                ));
            }
            dns.names.push(wardgate_policy::dns::DnsNameEntry {
                policy_id: cx.nonzero(&format!("{at}.policy_id"), n.policy_id)?,
                direction: cx.direction(&format!("{at}.direction"), n.direction)?,
                name: n.name.to_ascii_lowercase(),
                name_id: n.name_id,
                peer_set: n.peer_set,
            });
        }
        Ok(DesiredState {
            dns,
            gateway: b.gateway,
            generation: b.generation,
            epoch: b.epoch,
            content_hash: b.content_hash,
            devices,
            policies,
            peers,
            ports,
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use wardgate_policy::Mode;

    use wardgate_common::capacity;
    use wardgate_policy::{ProfileSet, compile_detailed, parse_site};

    use super::*;

    fn demo_state() -> DesiredState {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let set = ProfileSet::load_dir(&root.join("device-profiles")).unwrap();
        let file = root.join("device-profiles/sites/demo-ward.yaml");
        let site = parse_site("demo", &std::fs::read_to_string(file).unwrap()).unwrap();
        let mut s = compile_detailed("demo", &site, &set, "gw-ward-3", 42)
            .unwrap()
            .state;
        s.epoch = "0123456789abcdef".into();
        s.content_hash = "ab".repeat(32);
        s
    }

    fn roundtrip(b: &pb::PolicyBundle) -> Result<DesiredState, BundleError> {
        let bytes = b.encode_to_vec();
        DesiredState::try_from(pb::PolicyBundle::decode(bytes.as_slice()).unwrap())
    }

    #[test]
    fn a_compiled_state_survives_the_wire_unchanged() {
        let mut s = demo_state();
        assert!(!s.devices.is_empty() && !s.ports.is_empty());
        // The site's groups and each profile's sensitivity travel too (the agent's detectors).
        assert!(s.groups.contains_key("pacs"), "{:?}", s.groups.keys());
        s.policies[0].sensitivity = Sensitivity::High;
        s.policies[0]
            .detection
            .insert("scan_vertical", Tuning::Count(40))
            .unwrap();
        s.policies[0]
            .detection
            .insert("beacon", Tuning::Off)
            .unwrap();
        let b = to_bundle(&s, "INC-1");
        assert_eq!(b.reason, "INC-1");
        assert_eq!(roundtrip(&b).unwrap(), s);
        assert_eq!(bundle_len(&s, "INC-1"), b.encoded_len());
    }

    #[test]
    fn a_detector_tuning_the_agent_does_not_know_is_refused_by_place() {
        let s = demo_state();
        let mut b = to_bundle(&s, "");
        let tune = |detector: &str, tuning| pb::DetectorTuning {
            detector: detector.into(),
            tuning: Some(tuning),
        };
        let policies = &mut b.policy.as_mut().unwrap().policies;
        policies[0].detection = vec![
            tune("fanout", pb::detector_tuning::Tuning::Count(30)),
            tune("scan_sideways", pb::detector_tuning::Tuning::Count(30)),
        ];
        let e = roundtrip(&b).unwrap_err().to_string();
        assert!(
            e.contains("detection[1]") && e.contains("`scan_sideways` is not a detector"),
            "{e}"
        );
        let policies = &mut b.policy.as_mut().unwrap().policies;
        policies[0].detection = vec![tune("beacon", pb::detector_tuning::Tuning::Count(30))];
        let e = roundtrip(&b).unwrap_err().to_string();
        assert!(e.contains("no count to set"), "{e}");
    }

    #[test]
    fn a_devices_grace_travels_and_an_older_controllers_bundle_gets_the_default() {
        let mut s = demo_state();
        s.devices[0].grace_s = 0;
        s.devices[1].grace_s = 90;
        assert_eq!(roundtrip(&to_bundle(&s, "")).unwrap(), s);
        // A controller before do-not-disrupt sends no grace: the default, not 0 (cut at once).
        let mut b = to_bundle(&s, "");
        b.policy.as_mut().unwrap().devices[0].grace_s = None;
        let back = roundtrip(&b).unwrap();
        assert_eq!(
            back.devices[0].grace_s,
            wardgate_policy::profile::DEFAULT_GRACE_MAX_S
        );
    }

    #[test]
    fn dns_peers_survive_the_wire_and_a_wrong_name_id_is_refused() {
        use wardgate_policy::dns::{DnsNameEntry, ResolverEntry, dns_name_id};
        let mut s = demo_state();
        s.dns.resolvers.push(ResolverEntry {
            policy_id: s.policies[0].policy_id,
            cidr: "198.51.100.53/32".parse().unwrap(),
        });
        s.dns.names.push(DnsNameEntry {
            policy_id: s.policies[0].policy_id,
            direction: Direction::FromDevice,
            name: "*.vendor.example".into(),
            name_id: dns_name_id("*.vendor.example"),
            peer_set: 77,
        });
        let b = to_bundle(&s, "");
        assert_eq!(roundtrip(&b).unwrap(), s);
        let mut bad = b.clone();
        bad.policy.as_mut().unwrap().dns_names[0].name_id ^= 1;
        let e = roundtrip(&bad).unwrap_err().to_string();
        assert!(e.contains("dns_names[0].name_id"), "{e}");
        let mut bad = b;
        bad.policy.as_mut().unwrap().dns_names[0].name = "a b.example".into();
        let e = roundtrip(&bad).unwrap_err().to_string();
        assert!(e.contains("dns_names[0].name"), "{e}");
    }

    #[test]
    fn bad_fields_are_refused_naming_where() {
        let good = to_bundle(&demo_state(), "");
        type Edit = fn(&mut pb::PolicyBundle);
        let cases: [(Edit, &str, &str); 10] = [
            (|b| b.generation = 0, "generation", "outside"),
            (|b| b.generation = 1 << 31, "generation", "outside"),
            (|b| b.policy = None, "policy", "missing"),
            (
                |b| b.policy.as_mut().unwrap().devices[0].mac = vec![1, 2, 3],
                "devices[0].mac",
                "6 bytes",
            ),
            (
                |b| b.policy.as_mut().unwrap().devices[0].addrs[0] = vec![1; 5],
                "devices[0].addrs[0]",
                "4 or 16 bytes",
            ),
            (
                |b| b.policy.as_mut().unwrap().devices[0].mode = 99,
                "devices[0].mode",
                "not a device mode",
            ),
            (
                |b| b.policy.as_mut().unwrap().devices[0].policy_id = 999_999,
                "devices[0].policy_id",
                "not in the bundle",
            ),
            (
                |b| {
                    b.policy.as_mut().unwrap().peers[0]
                        .cidr
                        .as_mut()
                        .unwrap()
                        .prefix_len = 129
                },
                "peers[0].cidr.prefix_len",
                "too long",
            ),
            (
                |b| b.policy.as_mut().unwrap().ports[0].rule_id = 77_777_777,
                "ports[0].rule_id",
                "not in the bundle",
            ),
            (
                |b| {
                    b.policy.as_mut().unwrap().ports[0].port = Some(pb::PortPrefix {
                        value: 70_000,
                        len: 16,
                    })
                },
                "ports[0].port.value",
                "above 65535",
            ),
        ];
        for (edit, at, problem) in cases {
            let mut b = good.clone();
            edit(&mut b);
            let e = roundtrip(&b).unwrap_err();
            assert_eq!(e.at, at, "{e}");
            assert!(e.problem.contains(problem), "{e}");
            assert!(e.to_string().contains("gw-ward-3"), "{e}");
        }
    }

    #[test]
    fn truncated_bytes_never_panic() {
        let bytes = to_bundle(&demo_state(), "reason").encode_to_vec();
        let mut converted = 0;
        for n in 0..bytes.len() {
            if let Ok(b) = pb::PolicyBundle::decode(&bytes[..n]) {
                converted += usize::from(DesiredState::try_from(b).is_ok());
            }
        }
        // Only cuts at field boundaries decode at all; none of them is the whole state.
        assert!(converted < bytes.len(), "{converted}");
    }

    /// A gateway whose every policy map is full, with IPv6 everywhere (the longest keys),
    /// fits the transport limit with room to spare; the JSON the agent used to receive did not
    /// fit tonic's default 4 MiB.
    #[test]
    fn a_full_gateway_fits_the_transport_limit() {
        let v6 = |i: u32| -> IpAddr {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            o[8..12].copy_from_slice(&i.to_be_bytes());
            IpAddr::V6(Ipv6Addr::from(o))
        };
        let rules_per_policy = 64;
        let policies: Vec<PolicyEntry> = (1..=256u32)
            .map(|p| PolicyEntry {
                policy_id: p,
                profile: format!("profile-{p:03}"),
                profile_version: 12,
                rules: (0..rules_per_policy)
                    .map(|r| Rule {
                        rule_id: 1_000_000 + p * 1_000 + r,
                        name: format!("flow-{r:02} to the ward's hl7 engine"),
                        direction: Direction::FromDevice,
                        proto: Proto::Tcp,
                        peers: vec![IpNet::new(v6(p * 1_000 + r), 64).unwrap()],
                        ports: Some(PortRange { lo: 2575, hi: 2575 }),
                        idle_timeout_s: 3600,
                        inspect: r % 2 == 0,
                        app: (r % 4 == 0).then(|| AppRule::Dicom {
                            calling_ae: vec!["MODALITY1".into(), "CT_1".into()],
                            called_ae: Vec::new(),
                        }),
                    })
                    .collect(),
                sensitivity: Default::default(),
                detection: Default::default(),
            })
            .collect();
        let state = DesiredState {
            gateway: "gw-full".into(),
            generation: (1 << 31) - 1,
            epoch: "f".repeat(32),
            content_hash: "f".repeat(64),
            devices: (0..capacity::DEVICES)
                .map(|i| DeviceEntry {
                    device_id: 1_000_000 + i,
                    name: format!("device-{i:05}-ward-3a"),
                    addrs: vec![v6(i)],
                    mac: MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
                    policy_id: 1 + i % 256,
                    mode: Mode::Enforce,
                    max_flows: 8192,
                    fail_open: false,
                    grace_s: 1800,
                })
                .collect(),
            peers: (0..capacity::PEERS)
                .map(|i| PeerEntry {
                    policy_id: 1 + i % 256,
                    direction: Direction::FromDevice,
                    cidr: IpNet::new(v6(i), 64).unwrap(),
                    peer_set: 1 + i,
                })
                .collect(),
            ports: (0..capacity::PORTS)
                .map(|i| PortEntry {
                    peer_set: 1 + i / 2,
                    proto: Some(6),
                    port: Some(PortPrefix {
                        value: 40_000 + (i % 20_000) as u16,
                        len: 16,
                    }),
                    rule_id: 1_000_000 + (1 + i % 256) * 1_000 + i % rules_per_policy,
                    idle_timeout_s: 3600,
                    inspect: i % 2 == 0,
                })
                .collect(),
            policies,
            groups: Default::default(),
            dns: Default::default(),
        };
        let len = bundle_len(&state, &"r".repeat(200));
        let json = state.to_json().len();
        println!("full gateway: bundle {len} bytes, JSON {json} bytes");
        assert!(len < crate::MAX_BUNDLE_BYTES / 2, "{len}");
        assert!(json > 4 << 20, "{json}");
        assert_eq!(
            roundtrip(&to_bundle(&state, "")).unwrap(),
            state,
            "and it converts back"
        );
    }
}
