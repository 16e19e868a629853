//! Lowering: logical rules -> the entries of the two LPM lookups the datapath does.
//!
//! Lookup 1 maps (policy, direction, peer address) to a *peer set* by longest prefix; lookup 2
//! maps (peer set, protocol, port) to a rule, with the port as a prefix. Because LPM returns only
//! the most specific peer prefix, each peer set carries the rules of every prefix that contains
//! it (CIDRs are nested or disjoint, so that is exactly the rules that apply to its addresses).
//! Lookup cost then depends on the key width, never on the number of rules or devices.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use thiserror::Error;
use wardgate_common::capacity;

use crate::desired::{
    DesiredState, DeviceEntry, Direction, PeerEntry, PolicyEntry, PortEntry, PortPrefix, Proto,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CapacityError {
    #[error(
        "gateway `{gateway}` needs {needed} {map} entries but the datapath holds {capacity}; \
         refusing to compile rather than overflow the map (split the gateway or merge rules)"
    )]
    Overflow {
        gateway: String,
        map: &'static str,
        needed: usize,
        capacity: u32,
    },
}

/// Splits an inclusive port range into the fewest prefixes that cover exactly that range.
pub fn range_to_prefixes(lo: u16, hi: u16) -> Vec<PortPrefix> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // Largest aligned block starting at `lo` that does not pass `hi`.
        let mut bits = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while lo + (1 << bits) - 1 > hi {
            bits -= 1;
        }
        out.push(PortPrefix {
            value: lo as u16,
            len: (16 - bits) as u8,
        });
        lo += 1 << bits;
    }
    out
}

/// Ranges up to this many ports are lowered to one exact port each rather than to prefixes: the
/// datapath answers an exact port with one hash lookup, and only peer sets that still have
/// prefixes pay for the port LPM walk. Typical service ranges (a vendor's 8000-8010) stay
/// exact; wide ones (ephemeral 1024-65535) stay a handful of prefixes.
pub const EXACT_PORTS_MAX: u32 = 64;

/// The port keys of a range: exact ports when it is small, else the minimal prefixes.
fn port_keys(lo: u16, hi: u16) -> Vec<PortPrefix> {
    if lo <= hi && u32::from(hi - lo) < EXACT_PORTS_MAX {
        (lo..=hi)
            .map(|value| PortPrefix { value, len: 16 })
            .collect()
    } else {
        range_to_prefixes(lo, hi)
    }
}

/// Port-level entries of one rule, before a peer set is assigned: (proto, port prefix).
pub(crate) fn rule_port_keys(
    proto: Proto,
    ports: Option<crate::desired::PortRange>,
) -> Vec<(Option<u8>, Option<PortPrefix>)> {
    match (proto, ports) {
        (Proto::Any, None) => vec![(None, None)],
        // "any protocol, port N" means the port-carrying protocols.
        (Proto::Any, Some(r)) => [Proto::Tcp, Proto::Udp]
            .into_iter()
            .flat_map(|p| rule_port_keys(p, Some(r)))
            .collect(),
        (p, None) => vec![(p.number(), None)],
        (p, Some(_)) if !p.has_ports() => vec![(p.number(), None)],
        (p, Some(r)) => port_keys(r.lo, r.hi)
            .into_iter()
            .map(|pp| (p.number(), Some(pp)))
            .collect(),
    }
}

/// A rule's contribution to a peer prefix: (rule id, idle timeout, protocol, ports, inspect).
type RuleRef = (u32, u32, Proto, Option<crate::desired::PortRange>, bool);

/// Builds the map-level entries for `policies` and checks every map's capacity.
pub fn lower(
    gateway: &str,
    generation: u32,
    mut devices: Vec<DeviceEntry>,
    mut policies: Vec<PolicyEntry>,
) -> Result<DesiredState, CapacityError> {
    devices.sort();
    policies.sort_by_key(|p| p.policy_id);

    // (policy, direction, cidr) -> [(proto, port prefix) -> (rule_id, timeout, inspect)], first
    // rule wins.
    type PortSet = BTreeMap<(Option<u8>, Option<PortPrefix>), (u32, u32, bool)>;
    let mut by_cidr: BTreeMap<(u32, Direction), BTreeMap<IpNet, Vec<RuleRef>>> = BTreeMap::new();
    for p in &policies {
        for r in &p.rules {
            for cidr in &r.peers {
                by_cidr
                    .entry((p.policy_id, r.direction))
                    .or_default()
                    .entry(cidr.trunc())
                    .or_default()
                    .push((r.rule_id, r.idle_timeout_s, r.proto, r.ports, r.inspect));
            }
        }
    }

    let mut set_ids: BTreeMap<PortSet, u32> = BTreeMap::new();
    let mut peers = Vec::new();
    for ((policy_id, direction), cidrs) in &by_cidr {
        for cidr in cidrs.keys() {
            let mut set = PortSet::new();
            // Rules of every prefix containing this one, most specific first.
            let mut containing: Vec<&IpNet> = cidrs.keys().filter(|c| c.contains(cidr)).collect();
            containing.sort_by_key(|c| std::cmp::Reverse(c.prefix_len()));
            let mut rules: Vec<_> = containing.iter().flat_map(|c| cidrs[*c].iter()).collect();
            rules.sort_by_key(|r| r.0);
            for (rule_id, timeout, proto, ports, inspect) in rules {
                for key in rule_port_keys(*proto, *ports) {
                    set.entry(key).or_insert((*rule_id, *timeout, *inspect));
                }
            }
            let next = set_ids.len() as u32 + 1;
            let peer_set = *set_ids.entry(set).or_insert(next);
            peers.push(PeerEntry {
                policy_id: *policy_id,
                direction: *direction,
                cidr: *cidr,
                peer_set,
            });
        }
    }

    let mut ports = Vec::new();
    for (set, peer_set) in &set_ids {
        for ((proto, port), (rule_id, idle_timeout_s, inspect)) in set {
            ports.push(PortEntry {
                peer_set: *peer_set,
                proto: *proto,
                port: *port,
                rule_id: *rule_id,
                idle_timeout_s: *idle_timeout_s,
                inspect: *inspect,
            });
        }
    }
    ports.sort();

    let addr_count: usize = devices.iter().map(|d| d.addrs.len()).sum();
    let unique_addrs: BTreeSet<_> = devices.iter().flat_map(|d| d.addrs.iter()).collect();
    debug_assert_eq!(
        addr_count,
        unique_addrs.len(),
        "validation rejects duplicate addresses"
    );
    check(gateway, "device address", addr_count, capacity::DEVICES)?;
    check(gateway, "peer prefix", peers.len(), capacity::PEERS)?;
    check(gateway, "port rule", ports.len(), capacity::PORTS)?;

    Ok(DesiredState {
        gateway: gateway.to_string(),
        generation,
        epoch: String::new(),
        content_hash: String::new(),
        devices,
        policies,
        peers,
        ports,
        groups: Default::default(),
        dns: Default::default(),
    })
}

fn check(
    gateway: &str,
    map: &'static str,
    needed: usize,
    capacity: u32,
) -> Result<(), CapacityError> {
    if needed > capacity as usize {
        return Err(CapacityError::Overflow {
            gateway: gateway.to_string(),
            map,
            needed,
            capacity,
        });
    }
    Ok(())
}

/// What the datapath decides for a new flow, computed from the lowered entries the way the
/// kernel does (two longest-prefix lookups). Used by tests and by simulation.
pub fn lookup(
    state: &DesiredState,
    policy_id: u32,
    direction: Direction,
    peer: std::net::IpAddr,
    proto: u8,
    port: u16,
) -> Option<u32> {
    let peer_set = state
        .peers
        .iter()
        .filter(|e| e.policy_id == policy_id && e.direction == direction && e.cidr.contains(&peer))
        .max_by_key(|e| e.cidr.prefix_len())?
        .peer_set;
    lookup_port(state, peer_set, proto, port)
}

/// The rule of `peer_set` for (proto, port): the datapath's port stage, most specific first.
pub fn lookup_port(state: &DesiredState, peer_set: u32, proto: u8, port: u16) -> Option<u32> {
    state
        .ports
        .iter()
        .filter(|e| e.peer_set == peer_set)
        .filter(|e| e.proto.is_none_or(|p| p == proto))
        .filter(|e| {
            e.port.is_none_or(|pp| {
                let mask = if pp.len == 0 {
                    0
                } else {
                    u16::MAX << (16 - u32::from(pp.len))
                };
                port & mask == pp.value & mask
            })
        })
        .max_by_key(|e| match (e.proto, e.port) {
            (None, _) => 0,
            (Some(_), None) => 1,
            (Some(_), Some(pp)) => 2 + u32::from(pp.len),
        })
        .map(|e| e.rule_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{PortRange, Rule};

    fn cover(prefixes: &[PortPrefix]) -> Vec<u16> {
        let mut v: Vec<u16> = prefixes
            .iter()
            .flat_map(|p| {
                let size = 1u32 << (16 - u32::from(p.len));
                (u32::from(p.value)..u32::from(p.value) + size).map(|x| x as u16)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn range_prefixes_are_exact_and_minimal() {
        assert_eq!(
            range_to_prefixes(104, 104),
            vec![PortPrefix {
                value: 104,
                len: 16
            }]
        );
        assert_eq!(
            range_to_prefixes(0, 65535),
            vec![PortPrefix { value: 0, len: 0 }]
        );
        assert_eq!(
            range_to_prefixes(1024, 2047),
            vec![PortPrefix {
                value: 1024,
                len: 6
            }]
        );
        // 1..=65535 is the classic worst case: 16 prefixes.
        assert_eq!(range_to_prefixes(1, 65535).len(), 16);
        for (lo, hi) in [
            (11112, 11120),
            (1, 3),
            (2575, 2575),
            (49152, 65535),
            (5, 1000),
        ] {
            let p = range_to_prefixes(lo, hi);
            assert_eq!(cover(&p), (lo..=hi).collect::<Vec<_>>(), "{lo}-{hi}");
            assert!(p.len() <= 30, "{lo}-{hi} gave {} prefixes", p.len());
        }
        assert!(range_to_prefixes(10, 9).is_empty());
    }

    #[test]
    fn small_ranges_become_exact_ports_and_wide_ones_prefixes() {
        let exact = port_keys(8000, 8010);
        assert_eq!(exact.len(), 11);
        assert!(exact.iter().all(|p| p.len == 16));
        assert_eq!(cover(&exact), (8000..=8010).collect::<Vec<_>>());
        let last_exact = port_keys(1000, 1000 + EXACT_PORTS_MAX as u16 - 1);
        assert_eq!(last_exact.len(), EXACT_PORTS_MAX as usize);
        assert_eq!(
            port_keys(1024, 65535),
            range_to_prefixes(1024, 65535),
            "wide ranges keep the minimal prefixes"
        );
        assert!(port_keys(10, 9).is_empty());
    }

    #[test]
    fn nested_peers_inherit_rules_of_wider_prefixes() {
        let rules = vec![
            Rule {
                rule_id: 1,
                name: "dns".into(),
                direction: Direction::FromDevice,
                proto: Proto::Udp,
                peers: vec!["198.51.100.0/24".parse().unwrap()],
                ports: Some(PortRange::single(53)),
                idle_timeout_s: 30,
                inspect: false,
                app: None,
            },
            Rule {
                rule_id: 2,
                name: "pacs".into(),
                direction: Direction::FromDevice,
                proto: Proto::Tcp,
                peers: vec!["198.51.100.10/32".parse().unwrap()],
                ports: Some(PortRange { lo: 104, hi: 104 }),
                idle_timeout_s: 600,
                inspect: true,
                app: None,
            },
        ];
        let policies = vec![PolicyEntry {
            policy_id: 7,
            profile: "ct".into(),
            profile_version: 0,
            rules,
            sensitivity: Default::default(),
            detection: Default::default(),
        }];
        let s = lower("gw", 1, vec![], policies).unwrap();
        let host = "198.51.100.10".parse().unwrap();
        let other = "198.51.100.11".parse().unwrap();
        assert_eq!(lookup(&s, 7, Direction::FromDevice, host, 17, 53), Some(1));
        assert_eq!(lookup(&s, 7, Direction::FromDevice, host, 6, 104), Some(2));
        assert_eq!(lookup(&s, 7, Direction::FromDevice, other, 6, 104), None);
        assert_eq!(lookup(&s, 7, Direction::ToDevice, host, 6, 104), None);
        assert_eq!(lookup(&s, 8, Direction::FromDevice, host, 6, 104), None);
        // The DICOM rule's port entries carry its inspection mark, the DNS rule's do not.
        assert!(s.ports.iter().any(|e| e.rule_id == 2));
        for e in &s.ports {
            assert_eq!(e.inspect, e.rule_id == 2, "{e:?}");
        }
    }

    #[test]
    fn capacity_overflow_is_refused() {
        let rules = (0..(capacity::PORTS / 16 + 10))
            .map(|i| Rule {
                rule_id: i,
                name: format!("r{i}"),
                direction: Direction::FromDevice,
                proto: Proto::Tcp,
                peers: vec!["203.0.113.0/24".parse().unwrap()],
                ports: Some(PortRange { lo: 1, hi: 65535 }),
                idle_timeout_s: 1,
                inspect: false,
                app: None,
            })
            .collect::<Vec<_>>();
        // Same prefixes for every rule collapse (first rule wins), so this fits...
        let ok = lower(
            "gw",
            1,
            vec![],
            vec![PolicyEntry {
                policy_id: 1,
                profile: "p".into(),
                profile_version: 0,
                rules: rules.clone(),
                sensitivity: Default::default(),
                detection: Default::default(),
            }],
        );
        assert!(ok.is_ok());
        // ...but distinct peers per rule do not.
        let many: Vec<PolicyEntry> = (0..(capacity::PORTS / 16 + 10))
            .map(|i| PolicyEntry {
                policy_id: i,
                profile: format!("p{i}"),
                profile_version: 0,
                // A distinct rule id per policy keeps the port sets from being shared.
                rules: vec![Rule {
                    rule_id: i,
                    ..rules[0].clone()
                }],
                sensitivity: Default::default(),
                detection: Default::default(),
            })
            .collect();
        let err = lower("gw", 1, vec![], many).unwrap_err();
        assert!(err.to_string().contains("port rule"), "{err}");
    }
}
