//! The compiler: profiles + site -> the desired state of one gateway, deterministic.
//!
//! Ids come from a [`StableIds`] (the controller's stored ids, or positions for an offline
//! compile, see [`crate::ids`]); `device_id` = the site's `id` or the 1-based position in the
//! site file (the controller's devices always carry their stored id). Only the gateway's own
//! devices, and the profiles they use, compile into its state.

use std::collections::BTreeSet;

use ipnet::IpNet;
use thiserror::Error;

use crate::{
    desired::{DesiredState, DeviceEntry, MacAddr, PolicyEntry, PortRange, Proto, Rule},
    diag::Diagnostics,
    ids::{self, StableIds},
    lower::{CapacityError, lower},
    profile::{Peer, Profile, ProfileSet},
    site::Site,
    validate,
};

#[derive(Debug, Error)]
pub enum CompileError {
    #[error("the site or a profile is invalid:\n{0}")]
    Invalid(Diagnostics),
    #[error("gateway `{gateway}` is not in the site")]
    UnknownGateway { gateway: String },
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    #[error("profile `{profile}` has {flows} flows; at most 9,999 fit the rule id scheme")]
    TooManyFlows { profile: String, flows: usize },
    #[error("no stable id for {what} `{name}` (the store allocates one when it is written)")]
    MissingId { what: &'static str, name: String },
    #[error("{what} id {id} is used by both `{first}` and `{second}`")]
    DuplicateId {
        what: &'static str,
        id: u32,
        first: String,
        second: String,
    },
}

/// A compiled state plus what could not be compiled into it.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub state: DesiredState,
    /// Peers kept in profiles but not enforced yet (DNS names), as `profile: flow: peer`.
    pub unresolved: Vec<String>,
}

pub fn compile(
    site: &Site,
    profiles: &ProfileSet,
    gateway: &str,
    generation: u32,
) -> Result<DesiredState, CompileError> {
    compile_detailed("<site>", site, profiles, gateway, generation).map(|c| c.state)
}

pub fn compile_detailed(
    site_file: &str,
    site: &Site,
    profiles: &ProfileSet,
    gateway: &str,
    generation: u32,
) -> Result<Compiled, CompileError> {
    let diags = validate::validate_all(site_file, site, profiles);
    if !diags.is_empty() {
        return Err(CompileError::Invalid(diags));
    }
    compile_validated(site, profiles, gateway, generation)
}

/// [`compile_detailed`] without the validation, for a caller that compiles many gateways of one
/// site and has already run [`validate::validate_all`] on it
/// with no diagnostics. On an unvalidated site this may panic.
pub fn compile_validated(
    site: &Site,
    profiles: &ProfileSet,
    gateway: &str,
    generation: u32,
) -> Result<Compiled, CompileError> {
    compile_with_ids(
        site,
        profiles,
        &StableIds::positional(profiles)?,
        gateway,
        generation,
    )
}

/// [`compile_validated`] with the ids (and profile versions) the caller keeps, the
/// controller's stored ones.
pub fn compile_with_ids(
    site: &Site,
    profiles: &ProfileSet,
    ids: &StableIds,
    gateway: &str,
    generation: u32,
) -> Result<Compiled, CompileError> {
    if !site.gateways.iter().any(|g| g.name.value == gateway) {
        return Err(CompileError::UnknownGateway {
            gateway: gateway.to_string(),
        });
    }
    let mut devices = Vec::new();
    let mut used = BTreeSet::new();
    for (i, dev) in site.devices.iter().enumerate() {
        if dev.gateway.value != gateway {
            continue;
        }
        let profile = profiles.get(&dev.profile.value).expect("validated");
        used.insert(dev.profile.value.clone());
        devices.push(DeviceEntry {
            device_id: site.device_id(i),
            name: dev.name.value.clone(),
            addrs: dev
                .addresses
                .iter()
                .map(|a| a.value.trim().parse().expect("validated"))
                .collect(),
            mac: dev.mac.value.parse::<MacAddr>().expect("validated"),
            policy_id: ids.policy(&dev.profile.value)?,
            mode: dev.mode.unwrap_or(profile.default_mode),
            max_flows: profile.conntrack.max_flows,
            fail_open: profile.fail_mode == crate::profile::FailMode::Open,
        });
    }
    let mut unresolved = Vec::new();
    let mut policies = Vec::new();
    for name in &used {
        let profile = profiles.get(name).expect("used profiles exist");
        policies.push(PolicyEntry {
            policy_id: ids.policy(name)?,
            profile: name.clone(),
            profile_version: ids.version(name),
            rules: rules(site, profile, ids, &mut unresolved)?,
        });
    }
    ids::check_unique(
        "device",
        devices.iter().map(|d| (d.device_id, d.name.as_str())),
    )?;
    ids::check_unique(
        "policy",
        policies.iter().map(|p| (p.policy_id, p.profile.as_str())),
    )?;
    let rule_names: Vec<(u32, String)> = policies
        .iter()
        .flat_map(|p| {
            p.rules
                .iter()
                .map(move |r| (r.rule_id, format!("{}: {}", p.profile, r.name)))
        })
        .collect();
    ids::check_unique("rule", rule_names.iter().map(|(i, n)| (*i, n.as_str())))?;
    let state = lower(gateway, generation, devices, policies)?;
    Ok(Compiled { state, unresolved })
}

fn rules(
    site: &Site,
    profile: &Profile,
    ids: &StableIds,
    unresolved: &mut Vec<String>,
) -> Result<Vec<Rule>, CompileError> {
    let mut out = Vec::new();
    let keys = ids::flow_keys(profile);
    for (i, (f, key)) in profile.flows.iter().zip(&keys).enumerate() {
        let rule_id = ids.rule(&profile.name.value, key)?;
        let name = if f.name.is_empty() {
            format!("{}#{}", profile.name.value, i + 1)
        } else {
            f.name.clone()
        };
        let mut peers: Vec<IpNet> = Vec::new();
        for p in &f.peers {
            match Peer::parse(&p.value).expect("validated") {
                Peer::Any => peers
                    .extend(["0.0.0.0/0", "::/0"].map(|s| s.parse::<IpNet>().expect("literal"))),
                Peer::Net(n) => peers.push(n),
                Peer::Group(g) => {
                    peers.extend(site.groups[&g].iter().map(|c| match Peer::parse(&c.value) {
                        Ok(Peer::Net(n)) => n,
                        _ => unreachable!("validated group CIDR"),
                    }))
                }
                Peer::SameProfile => peers.extend(
                    site.devices
                        .iter()
                        .filter(|d| d.profile.value == profile.name.value)
                        .flat_map(|d| d.addresses.iter())
                        .map(|a| {
                            IpNet::from(
                                a.value
                                    .trim()
                                    .parse::<std::net::IpAddr>()
                                    .expect("validated"),
                            )
                        }),
                ),
                Peer::Dns(n) => unresolved.push(format!("{}: {name}: dns:{n}", profile.name.value)),
            }
        }
        peers.sort();
        peers.dedup();
        if peers.is_empty() {
            continue;
        }
        let proto = f.protocol.value;
        let idle = f
            .idle_timeout_s
            .as_ref()
            .map(|t| t.value)
            .unwrap_or(match proto {
                Proto::Tcp => profile.conntrack.tcp_idle_s,
                Proto::Udp => profile.conntrack.udp_idle_s,
                Proto::Icmp | Proto::Icmpv6 => profile.conntrack.icmp_idle_s,
                Proto::Any => profile
                    .conntrack
                    .tcp_idle_s
                    .max(profile.conntrack.udp_idle_s),
            });
        let ranges: Vec<Option<PortRange>> = match &f.ports {
            Some(p) if proto.has_ports() || proto == Proto::Any => p
                .value
                .ranges()
                .expect("validated")
                .into_iter()
                .map(|(lo, hi)| Some(PortRange { lo, hi }))
                .collect(),
            _ => vec![None],
        };
        for ports in ranges {
            out.push(Rule {
                rule_id,
                name: name.clone(),
                direction: f.direction,
                proto,
                peers: peers.clone(),
                ports,
                idle_timeout_s: idle,
                inspect: f.app.is_some(),
            });
        }
    }
    Ok(out)
}
