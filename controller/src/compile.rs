//! From the store's rows to the policy crate's site and profiles, and the compiled state of
//! every gateway. This is the only place that converts store rows into policy types.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, OnceLock, PoisonError},
};

use wardgate_policy::{
    DesiredState, Mode, ProfileSet, StableIds,
    profile::Peer,
    site::{Device, Gateway, Site},
    span::Located,
};

use crate::{
    error::{Error, Result},
    store::{Change, DeviceRow, Snapshot},
};

pub fn parse_mode(s: &str) -> Result<Mode> {
    match s {
        "learn" => Ok(Mode::Learn),
        "monitor" => Ok(Mode::Monitor),
        "enforce" => Ok(Mode::Enforce),
        "quarantine" => Ok(Mode::Quarantine),
        other => Err(Error::Invalid(format!(
            "mode `{other}` is not one of learn, monitor, enforce, quarantine"
        ))),
    }
}

/// Parsed profiles by label, with the YAML text they came from: every write compiles from the
/// stored text, and parsing YAML is most of a small write's cost. A hit needs the same text, so
/// a new version (or a rolled-back one that reused a version number) is never served stale.
fn parsed(file: &str, yaml: &str) -> Result<wardgate_policy::Profile> {
    type Cache = HashMap<String, (String, wardgate_policy::Profile)>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some((text, p)) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(file)
        && text == yaml
    {
        return Ok(p.clone());
    }
    let p =
        wardgate_policy::parse_profile(file, yaml).map_err(|d| Error::Invalid(d.to_string()))?;
    let mut c = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if c.len() >= 4096 {
        c.clear(); // bounded: old versions are not needed again
    }
    c.insert(file.to_string(), (yaml.to_string(), p.clone()));
    Ok(p)
}

pub fn profiles(s: &Snapshot) -> Result<ProfileSet> {
    let mut set = ProfileSet::default();
    let mut diags = wardgate_policy::Diagnostics::default();
    for p in &s.profiles {
        let file = format!("profile {} v{}", p.name, p.version);
        set.insert(&file, parsed(&file, &p.yaml)?, &mut diags);
    }
    if !diags.is_empty() {
        return Err(Error::Invalid(diags.to_string()));
    }
    Ok(set)
}

/// Every stored profile's flow keys (see `wardgate_policy::ids::flow_keys`): what the store
/// keeps rule ids under.
pub fn flow_keys(s: &Snapshot) -> Result<Vec<(String, Vec<String>)>> {
    s.profiles
        .iter()
        .map(|p| {
            let file = format!("profile {} v{}", p.name, p.version);
            Ok((
                p.name.clone(),
                wardgate_policy::ids::flow_keys(&parsed(&file, &p.yaml)?),
            ))
        })
        .collect()
}

/// The store's stable ids and the profiles' versions, for the compiler.
pub fn ids(s: &Snapshot) -> StableIds {
    StableIds {
        policies: s.policy_ids.clone(),
        rules: s.rule_ids.clone(),
        versions: s
            .profiles
            .iter()
            .map(|p| (p.name.clone(), p.version))
            .collect(),
    }
}

pub fn site(s: &Snapshot) -> Result<Site> {
    Ok(Site {
        site: "controller".into(),
        groups: s
            .groups
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().map(Located::new).collect()))
            .collect(),
        gateways: s
            .gateways
            .iter()
            .map(|g| Gateway {
                name: Located::new(g.name.clone()),
                interfaces: g.interfaces.clone(),
                location: g.location.clone(),
            })
            .collect(),
        devices: s
            .devices
            .iter()
            .map(|d| {
                Ok(Device {
                    id: Some(d.id),
                    name: Located::new(d.name.clone()),
                    mac: Located::new(d.mac.clone()),
                    addresses: d.addresses.iter().cloned().map(Located::new).collect(),
                    profile: Located::new(d.profile.clone()),
                    mode: Some(parse_mode(&d.mode)?),
                    gateway: Located::new(d.gateway.clone()),
                    location: d.location.clone(),
                    asset_id: d.asset_id.clone(),
                })
            })
            .collect::<Result<_>>()?,
    })
}

/// The desired states of the gateways whose policy `change` may alter, and only those: an
/// assignment on one ward recompiles that ward's gateway, not the hospital.
pub fn affected(
    after: &Snapshot,
    before: Option<&DeviceRow>,
    change: &Change,
) -> Result<BTreeMap<String, DesiredState>> {
    let set = profiles(after)?;
    let scope = match scope(after, before, change, &set) {
        Some(gateways) => gateways,
        None => after.gateways.iter().map(|g| g.name.clone()).collect(),
    };
    // A gateway the change names but the store does not hold has nothing to compile.
    let known: BTreeSet<&str> = after.gateways.iter().map(|g| g.name.as_str()).collect();
    let site = site(after)?;
    // The whole site must stay valid even when no gateway is recompiled (a new profile that
    // no device uses yet is still checked).
    let diags = wardgate_policy::validate_all("<site>", &site, &set);
    if !diags.is_empty() {
        return Err(Error::Invalid(diags.to_string()));
    }
    let ids = ids(after);
    let mut out = BTreeMap::new();
    for g in scope.iter().filter(|g| known.contains(g.as_str())) {
        let compiled = wardgate_policy::compile_with_ids(&site, &set, &ids, g, 1)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        out.insert(g.clone(), compiled.state);
    }
    Ok(out)
}

/// Which gateways `change` can affect; `None` means all of them (a site group changed).
fn scope(
    after: &Snapshot,
    before: Option<&DeviceRow>,
    change: &Change,
    set: &ProfileSet,
) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    // Devices of a profile with a `same-profile` peer appear in each other's policy, wherever
    // they are: a change to one such device recompiles the gateways of all of them.
    let with_profile = |profile: &str, out: &mut BTreeSet<String>| {
        out.extend(
            after
                .devices
                .iter()
                .filter(|d| d.profile == profile)
                .map(|d| d.gateway.clone()),
        );
    };
    let uses_same_profile = |profile: &str| {
        set.get(profile).is_some_and(|p| {
            p.flows.iter().any(|f| {
                f.peers
                    .iter()
                    .any(|x| matches!(Peer::parse(&x.value), Ok(Peer::SameProfile)))
            })
        })
    };
    match change {
        Change::UpsertDevice(_)
        | Change::AssignProfile { .. }
        | Change::SetMode { .. }
        | Change::SetLocation { .. } => {
            // The device's gateway and profile before and after (a move touches both gateways).
            let now = after
                .devices
                .iter()
                .find(|d| Some(d.name.as_str()) == change.device());
            for d in before.into_iter().chain(now) {
                out.insert(d.gateway.clone());
                if uses_same_profile(&d.profile) {
                    with_profile(&d.profile, &mut out);
                }
            }
        }
        Change::UpsertProfile { name, .. } => with_profile(name, &mut out),
        Change::UpsertGateway(g) => {
            out.insert(g.name.clone());
        }
        Change::UpsertGroup { .. } => return None,
        Change::AcknowledgeAlerts { .. } | Change::SuppressAlerts { .. } => {}
    }
    Some(out)
}
