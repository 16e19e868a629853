//! `dns:` peers: names whose addresses the gateway learns from the answers a device's resolvers
//! give it (issue 21). The compiler keeps, per policy, the resolvers (a site group) and the
//! names with the peer set of the rules that name them; the agent learns (device, address) ->
//! name id from the answers and the datapath looks the name's peer set up after the address
//! itself matched no peer. Pure: names, ids and the lowering live here.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::desired::{DesiredState, Direction, PortEntry, PortRange, Proto};

/// What the datapath needs of a site's `dns:` peers. Absent in older bundles: none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRules {
    /// The resolvers each policy with `dns:` peers learns from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<ResolverEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<DnsNameEntry>,
}

impl DnsRules {
    pub fn is_empty(&self) -> bool {
        self.resolvers.is_empty() && self.names.is_empty()
    }

    /// The names (patterns) of a policy, with their ids.
    pub fn names_of(&self, policy_id: u32) -> impl Iterator<Item = &DnsNameEntry> {
        self.names.iter().filter(move |n| n.policy_id == policy_id)
    }
}

/// Map level: (policy, resolver prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResolverEntry {
    pub policy_id: u32,
    pub cidr: IpNet,
}

/// Map level: (policy, direction, name id) -> peer set. `name` is the profile's text, lower
/// case: an exact name or `*.suffix`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsNameEntry {
    pub policy_id: u32,
    pub direction: Direction,
    pub name: String,
    pub name_id: u32,
    pub peer_set: u32,
}

/// The id of a name in the datapath: FNV-1a of its lower-case text, never 0. A hash rather
/// than a position, so an address learned under one generation keeps its name in the next.
pub fn dns_name_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.trim_end_matches('.').bytes() {
        h ^= u32::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// Whether `name` (as in an answer) is covered by `pattern` (an exact name, or `*.suffix`:
/// any name under the suffix, not the suffix itself). Case-insensitive; a trailing dot is
/// ignored on both.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    let name = name.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len() + 1
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => name.eq_ignore_ascii_case(pattern),
    }
}

/// The rule a flow to an address the device resolved from `name` gets by the policy's `dns:`
/// peers (what the datapath asks after the address lookup found nothing): the first name of
/// the policy and direction covering `name` whose peer set allows (proto, port).
pub fn lookup_name(
    state: &DesiredState,
    policy_id: u32,
    direction: Direction,
    name: &str,
    proto: u8,
    port: u16,
) -> Option<u32> {
    state
        .dns
        .names_of(policy_id)
        .filter(|n| n.direction == direction && name_matches(&n.name, name))
        .find_map(|n| crate::lower::lookup_port(state, n.peer_set, proto, port))
}

/// Why a `dns:` name cannot be enforced, or `None`: labels of letters, digits, `-` and `_`
/// (1-63 bytes, 253 in all), optionally after a leading `*.`.
pub fn name_problem(name: &str) -> Option<String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    if bare.is_empty() || bare.len() > 253 {
        return Some(format!("`dns:{name}` is not a DNS name"));
    }
    for label in bare.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Some(format!(
                "`dns:{name}` is not a DNS name (label `{label}`); use NAME or *.SUFFIX"
            ));
        }
    }
    None
}

/// A compiled rule's `dns:` peer, before lowering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRule {
    pub policy_id: u32,
    pub rule_id: u32,
    pub direction: Direction,
    pub name: String,
    pub proto: Proto,
    pub ports: Option<PortRange>,
    pub idle_timeout_s: u32,
    pub inspect: bool,
}

/// Two names of one policy with the same id (a hash collision): refused rather than merged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("dns names `{first}` and `{second}` of policy {policy_id} have the same id; rename one")]
pub struct NameIdCollision {
    pub policy_id: u32,
    pub first: String,
    pub second: String,
}

/// Adds the names' peer sets and port entries to a lowered state (peer sets numbered after
/// the state's own), and the resolvers.
pub fn lower_dns(
    state: &mut DesiredState,
    rules: Vec<DnsRule>,
    resolvers: Vec<ResolverEntry>,
) -> Result<(), NameIdCollision> {
    type PortSet = BTreeMap<(Option<u8>, Option<crate::desired::PortPrefix>), (u32, u32, bool)>;
    let mut by_name: BTreeMap<(u32, Direction, String), Vec<&DnsRule>> = BTreeMap::new();
    for r in &rules {
        by_name
            .entry((r.policy_id, r.direction, r.name.to_ascii_lowercase()))
            .or_default()
            .push(r);
    }
    let mut ids: BTreeMap<(u32, u32), &str> = BTreeMap::new();
    for (policy_id, _, name) in by_name.keys() {
        let id = dns_name_id(name);
        if let Some(first) = ids.insert((*policy_id, id), name)
            && first != name
        {
            return Err(NameIdCollision {
                policy_id: *policy_id,
                first: first.to_string(),
                second: name.clone(),
            });
        }
    }
    let mut next = state.ports.iter().map(|p| p.peer_set).max().unwrap_or(0) + 1;
    let mut sets: BTreeMap<PortSet, u32> = BTreeMap::new();
    let mut names = Vec::new();
    for ((policy_id, direction, name), mut rs) in by_name {
        rs.sort_by_key(|r| r.rule_id);
        let mut set = PortSet::new();
        for r in rs {
            for key in crate::lower::rule_port_keys(r.proto, r.ports) {
                set.entry(key)
                    .or_insert((r.rule_id, r.idle_timeout_s, r.inspect));
            }
        }
        let peer_set = *sets.entry(set).or_insert_with(|| {
            next += 1;
            next - 1
        });
        names.push(DnsNameEntry {
            policy_id,
            direction,
            name_id: dns_name_id(&name),
            name,
            peer_set,
        });
    }
    for (set, peer_set) in &sets {
        for ((proto, port), (rule_id, idle_timeout_s, inspect)) in set {
            state.ports.push(PortEntry {
                peer_set: *peer_set,
                proto: *proto,
                port: *port,
                rule_id: *rule_id,
                idle_timeout_s: *idle_timeout_s,
                inspect: *inspect,
            });
        }
    }
    state.ports.sort();
    let mut resolvers = resolvers;
    resolvers.sort();
    resolvers.dedup();
    state.dns = DnsRules { resolvers, names };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_or_under_a_wildcard_suffix() {
        assert!(name_matches("api.vendor.example", "API.Vendor.example."));
        assert!(!name_matches("api.vendor.example", "x.api.vendor.example"));
        assert!(name_matches("*.vendor.example", "eu.api.vendor.example"));
        assert!(!name_matches("*.vendor.example", "vendor.example"));
        assert!(!name_matches("*.vendor.example", "evilvendor.example"));
        assert!(name_problem("*.vendor.example").is_none());
        assert!(name_problem("api..example").is_some());
        assert!(name_problem("a b.example").is_some());
    }

    #[test]
    fn name_ids_ignore_case_and_are_never_zero() {
        assert_eq!(
            dns_name_id("API.vendor.example"),
            dns_name_id("api.vendor.example.")
        );
        assert_ne!(
            dns_name_id("api.vendor.example"),
            dns_name_id("*.vendor.example")
        );
        assert_ne!(dns_name_id(""), 0);
    }
}
