//! From the store's rows to the policy crate's site and profiles, and the compiled state of
//! every gateway. This is the only place that converts store rows into policy types.

use std::collections::BTreeMap;

use wardgate_policy::{
    DesiredState, Mode, ProfileSet,
    site::{Device, Gateway, Site},
    span::Located,
};

use crate::{
    error::{Error, Result},
    store::Snapshot,
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

pub fn profiles(s: &Snapshot) -> Result<ProfileSet> {
    let mut set = ProfileSet::default();
    let mut diags = wardgate_policy::Diagnostics::default();
    for p in &s.profiles {
        let file = format!("profile {} v{}", p.name, p.version);
        let parsed = wardgate_policy::parse_profile(&file, &p.yaml)
            .map_err(|d| Error::Invalid(d.to_string()))?;
        set.insert(&file, parsed, &mut diags);
    }
    if !diags.is_empty() {
        return Err(Error::Invalid(diags.to_string()));
    }
    Ok(set)
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

/// The desired state of every gateway (generation numbers are assigned by the store). An
/// invalid site or profile refuses the write with every problem listed.
pub fn all(s: &Snapshot) -> Result<BTreeMap<String, DesiredState>> {
    let set = profiles(s)?;
    let site = site(s)?;
    let mut out = BTreeMap::new();
    for g in &s.gateways {
        let state = wardgate_policy::compile(&site, &set, &g.name, 1)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        out.insert(g.name.clone(), state);
    }
    Ok(out)
}
