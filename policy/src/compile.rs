//! The compiler: a validated site ([`ValidSite`]) -> the desired state of one gateway,
//! deterministic. It reads typed values only, so it cannot fail on what validation checked;
//! what it can still refuse is typed: an unknown gateway, missing or shared stable ids, and a
//! state that does not fit the datapath's maps.
//!
//! Ids come from a [`StableIds`] (the controller's stored ids, or positions for an offline
//! compile, see [`crate::ids`]); `device_id` = the site's `id` or the 1-based position in the
//! site file (the controller's devices always carry their stored id). Only the gateway's own
//! devices, and the profiles they use, compile into its state.

use std::collections::BTreeSet;

use ipnet::IpNet;
use thiserror::Error;

use crate::{
    desired::{AppRule, DesiredState, DeviceEntry, PolicyEntry, PortRange, Rule},
    diag::Diagnostics,
    dns::{DnsRule, ResolverEntry},
    ids::{self, StableIds},
    lower::{CapacityError, lower},
    profile::ProfileSet,
    site::Site,
    valid::{ValidPeer, ValidProfile, ValidSite},
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
    #[error(transparent)]
    DnsNameId(#[from] crate::dns::NameIdCollision),
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
    /// Peers kept in profiles but not enforced, as `profile: flow: peer` (none since `dns:`
    /// peers are enforced; kept for callers that list them).
    pub unresolved: Vec<String>,
}

/// Validates and compiles with positional ids (an offline compile of a site file).
pub fn compile(
    site: &Site,
    profiles: &ProfileSet,
    gateway: &str,
    generation: u32,
) -> Result<DesiredState, CompileError> {
    compile_detailed("<site>", site, profiles, gateway, generation).map(|c| c.state)
}

/// [`compile`], with the unresolved peers; `site_file` names the site in diagnostics.
pub fn compile_detailed(
    site_file: &str,
    site: &Site,
    profiles: &ProfileSet,
    gateway: &str,
    generation: u32,
) -> Result<Compiled, CompileError> {
    let valid =
        validate::validate_site(site_file, site, profiles).map_err(CompileError::Invalid)?;
    compile_valid(
        &valid,
        &StableIds::positional_of(&valid)?,
        gateway,
        generation,
    )
}

/// Validates and compiles with the ids (and profile versions) the caller keeps.
pub fn compile_with_ids(
    site: &Site,
    profiles: &ProfileSet,
    ids: &StableIds,
    gateway: &str,
    generation: u32,
) -> Result<Compiled, CompileError> {
    let valid = validate::validate_site("<site>", site, profiles).map_err(CompileError::Invalid)?;
    compile_valid(&valid, ids, gateway, generation)
}

/// The desired state of `gateway` in a validated site, with the caller's ids. A caller that
/// compiles many gateways of one site validates once and calls this for each.
pub fn compile_valid(
    site: &ValidSite,
    ids: &StableIds,
    gateway: &str,
    generation: u32,
) -> Result<Compiled, CompileError> {
    if !site.gateways.iter().any(|g| g.name == gateway) {
        return Err(CompileError::UnknownGateway {
            gateway: gateway.to_string(),
        });
    }
    let mut devices = Vec::new();
    let mut used = BTreeSet::new();
    for dev in site.devices.iter().filter(|d| d.gateway == gateway) {
        used.insert(dev.profile.as_str());
        devices.push(DeviceEntry {
            device_id: dev.id,
            name: dev.name.clone(),
            addrs: dev.addresses.clone(),
            mac: dev.mac,
            policy_id: ids.policy(&dev.profile)?,
            mode: dev.mode,
            max_flows: dev.max_flows,
            fail_open: dev.fail_open,
            grace_s: dev.grace_s,
        });
    }
    let unresolved = Vec::new();
    let mut policies = Vec::new();
    let mut dns_rules = Vec::new();
    let mut resolvers = Vec::new();
    for (name, profile) in site
        .profiles
        .iter()
        .filter(|(n, _)| used.contains(n.as_str()))
    {
        let policy_id = ids.policy(name)?;
        resolvers.extend(
            profile
                .resolvers
                .iter()
                .map(|&cidr| ResolverEntry { policy_id, cidr }),
        );
        policies.push(PolicyEntry {
            policy_id,
            profile: name.clone(),
            profile_version: ids.version(name),
            rules: rules(site, profile, ids, policy_id, &mut dns_rules)?,
            sensitivity: profile.sensitivity,
            detection: profile.detection.clone(),
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
    let mut state = lower(gateway, generation, devices, policies)?;
    crate::dns::lower_dns(&mut state, dns_rules, resolvers)?;
    state.groups = site.groups.clone();
    Ok(Compiled { state, unresolved })
}

fn rules(
    site: &ValidSite,
    profile: &ValidProfile,
    ids: &StableIds,
    policy_id: u32,
    dns_rules: &mut Vec<DnsRule>,
) -> Result<Vec<Rule>, CompileError> {
    let mut out = Vec::new();
    for f in &profile.flows {
        let rule_id = ids.rule(&profile.name, &f.key)?;
        let mut peers: Vec<IpNet> = Vec::new();
        let mut names = Vec::new();
        for p in &f.peers {
            match p {
                ValidPeer::Any => peers.extend(ValidPeer::any_nets()),
                ValidPeer::Net(n) => peers.push(*n),
                ValidPeer::Group { nets, .. } => peers.extend(nets.iter().copied()),
                ValidPeer::SameProfile => peers.extend(
                    site.devices
                        .iter()
                        .filter(|d| d.profile == profile.name)
                        .flat_map(|d| d.addresses.iter().copied().map(IpNet::from)),
                ),
                ValidPeer::Dns(n) => names.push(n.to_ascii_lowercase()),
            }
        }
        peers.sort();
        peers.dedup();
        names.sort();
        names.dedup();
        if peers.is_empty() && names.is_empty() {
            continue;
        }
        let ranges: Vec<Option<PortRange>> = if f.ports.is_empty() {
            vec![None]
        } else {
            f.ports.iter().copied().map(Some).collect()
        };
        for ports in ranges {
            for name in &names {
                dns_rules.push(DnsRule {
                    policy_id,
                    rule_id,
                    direction: f.direction,
                    name: name.clone(),
                    proto: f.proto,
                    ports,
                    idle_timeout_s: f.idle_timeout_s,
                    inspect: f.app.is_some(),
                });
            }
            out.push(Rule {
                rule_id,
                name: f.name.clone(),
                direction: f.direction,
                proto: f.proto,
                peers: peers.clone(),
                ports,
                idle_timeout_s: f.idle_timeout_s,
                inspect: f.app.is_some(),
                app: f.app.as_ref().map(app_rule).filter(AppRule::checks),
            });
        }
    }
    Ok(out)
}

/// A profile flow's application rule, compiled (validation checked every value).
fn app_rule(app: &crate::profile::App) -> AppRule {
    use crate::profile::App;
    let list = |v: &Option<crate::span::Located<crate::profile::Values>>| {
        let mut l = v.as_ref().map(|v| v.value.list()).unwrap_or_default();
        l.sort();
        l.dedup();
        l
    };
    match app {
        App::Dicom {
            calling_ae,
            called_ae,
        } => AppRule::Dicom {
            calling_ae: list(calling_ae),
            called_ae: list(called_ae),
        },
        App::Hl7 {
            sending_application,
            sending_facility,
            receiving_application,
            message_type,
        } => AppRule::Hl7 {
            sending_application: list(sending_application),
            sending_facility: list(sending_facility),
            receiving_application: list(receiving_application),
            message_type: list(message_type),
        },
    }
}
