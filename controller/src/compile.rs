//! From the store's rows to the policy crate's validated site and profiles, and the compiled
//! state of every gateway. This is the only place that converts store rows into policy types;
//! typed rows (MACs, addresses, modes) go in typed, not as text to parse again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, OnceLock, PoisonError},
};

use wardgate_policy::{
    DesiredState, Mode, ProfileSet, SiteInput, StableIds, ValidSite, profile::Peer, site::Gateway,
    span::Located, valid::DeviceInput,
};

use crate::{
    error::{Error, Result},
    store::{Change, DeviceRow, SiteReader, Snapshot},
};

pub fn parse_mode(s: &str) -> Result<Mode> {
    s.parse()
        .map_err(|e: wardgate_policy::UnknownMode| Error::Invalid(e.to_string()))
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

/// The snapshot's site, validated with `set`: the rows' MACs, addresses and modes are typed
/// already and go in as they are (only groups, stored as text, and profiles are parsed).
pub fn valid_site(s: &Snapshot, set: &ProfileSet) -> Result<ValidSite> {
    let groups: BTreeMap<String, Vec<Located<String>>> = s
        .groups
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().cloned().map(Located::new).collect()))
        .collect();
    let gateways: Vec<Gateway> = s
        .gateways
        .iter()
        .map(|g| Gateway {
            name: Located::new(g.name.clone()),
            interfaces: g.interfaces.clone(),
            location: g.location.clone(),
        })
        .collect();
    let input = SiteInput {
        name: "controller",
        groups: &groups,
        gateways: &gateways,
        devices: s
            .devices
            .iter()
            .map(|d| DeviceInput {
                id: d.id,
                name: Located::new(d.name.clone()),
                mac: Located::new(Ok(d.mac)),
                addresses: d.addresses.iter().map(|a| Located::new(Ok(*a))).collect(),
                profile: Located::new(d.profile.clone()),
                mode: Some(d.mode),
                gateway: Located::new(d.gateway.clone()),
                location: d.location.clone(),
                asset_id: d.asset_id.clone(),
            })
            .collect(),
    };
    wardgate_policy::validate_input("<site>", &input, set)
        .map_err(|diags| Error::Invalid(diags.to_string()))
}

/// Profiles with a `same-profile` peer: their devices appear in each other's policy, wherever
/// they are.
fn uses_same_profile(set: &ProfileSet, profile: &str) -> bool {
    set.get(profile).is_some_and(|p| {
        p.flows.iter().any(|f| {
            f.peers
                .iter()
                .any(|x| matches!(Peer::parse(&x.value), Ok(Peer::SameProfile)))
        })
    })
}

/// The desired states of the gateways whose policy `changes` may alter, and only those,
/// compiled from the devices they hold (and their same-profile peers): an assignment on one
/// ward reads, validates and recompiles that ward's gateway, not the hospital. Site-wide
/// uniqueness (names, ids, MACs, addresses) is the store's to check, by lookup.
pub fn affected(
    r: &dyn SiteReader,
    before: &[Option<DeviceRow>],
    changes: &[Change],
) -> Result<BTreeMap<String, DesiredState>> {
    if changes.iter().all(|c| {
        matches!(
            c,
            Change::AcknowledgeAlerts { .. }
                | Change::SetBaseline { .. }
                | Change::IssueEnrollmentToken { .. }
                | Change::Enroll { .. }
                | Change::RenewCertificate { .. }
                | Change::RefuseCertificate { .. }
                | Change::RevokeGateway { .. }
                | Change::ConsoleLogin { .. }
                | Change::SubmitChange(_)
                | Change::ApproveChange { .. }
                | Change::CloseChange { .. }
        )
    }) {
        return Ok(BTreeMap::new());
    }
    let mut snap = r.base()?;
    let set = profiles(&snap)?;
    let none = BTreeSet::new();
    let mut scope = BTreeSet::new();
    // Profiles whose devices' gateways are affected.
    let mut touched = BTreeSet::new();
    for (change, before) in changes.iter().zip(before) {
        match change {
            Change::UpsertDevice(_)
            | Change::AssignProfile { .. }
            | Change::SetMode { .. }
            | Change::SetLocation { .. } => {
                // The device's gateway and profile before and after (a move touches both).
                let now = match change.device() {
                    Some(name) => r.device(name)?,
                    None => None,
                };
                for d in before.iter().chain(now.as_ref()) {
                    scope.insert(d.gateway.clone());
                    if uses_same_profile(&set, &d.profile) {
                        touched.insert(d.profile.clone());
                    }
                }
            }
            Change::UpsertProfile { name, .. } => {
                touched.insert(name.clone());
            }
            Change::UpsertGateway(g) => {
                scope.insert(g.name.clone());
            }
            // Any profile may name a group: every gateway.
            Change::UpsertGroup { .. } => {
                scope.extend(r.gateway_names()?);
            }
            Change::AcknowledgeAlerts { .. }
            | Change::SuppressAlerts { .. }
            | Change::UnsuppressAlerts { .. }
            | Change::RequestQuarantine { .. }
            | Change::ApproveQuarantine { .. }
            | Change::QuarantineTimer { .. }
            | Change::ClearQuarantineTimer { .. }
            | Change::Refused { .. }
            | Change::RecordImport { .. }
            | Change::SetBaseline { .. }
            | Change::IssueEnrollmentToken { .. }
            | Change::Enroll { .. }
            | Change::RenewCertificate { .. }
            | Change::RefuseCertificate { .. }
            | Change::RevokeGateway { .. }
            | Change::ConsoleLogin { .. }
            | Change::SubmitChange(_)
            | Change::ApproveChange { .. }
            | Change::CloseChange { .. } => {}
        }
    }
    if !touched.is_empty() {
        scope.extend(
            r.devices_of(&none, &touched)?
                .into_iter()
                .map(|d| d.gateway),
        );
    }
    // What those gateways compile from: their devices, and every device of a same-profile
    // profile used on them (its peers).
    let mut devices = r.devices_of(&scope, &none)?;
    let peers: BTreeSet<String> = devices
        .iter()
        .filter(|d| uses_same_profile(&set, &d.profile))
        .map(|d| d.profile.clone())
        .collect();
    if !peers.is_empty() {
        devices = r.devices_of(&scope, &peers)?;
    }
    // The gateways in scope and those of the devices read (same-profile peers elsewhere),
    // not the hospital's every gateway.
    let mut wanted = scope.clone();
    wanted.extend(devices.iter().map(|d| d.gateway.clone()));
    snap.gateways = r.gateways(&wanted)?;
    snap.devices = devices;
    // What is read must be valid, profiles included (a new profile that no device uses yet is
    // still checked).
    let site = valid_site(&snap, &set)?;
    // A gateway the change names but the store does not hold has nothing to compile.
    let known: BTreeSet<&str> = snap.gateways.iter().map(|g| g.name.as_str()).collect();
    let ids = ids(&snap);
    let mut out = BTreeMap::new();
    for g in scope.iter().filter(|g| known.contains(g.as_str())) {
        let compiled = wardgate_policy::compile_valid(&site, &ids, g, 1)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        out.insert(g.clone(), compiled.state);
    }
    Ok(out)
}
