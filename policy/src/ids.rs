//! Stable ids. The datapath reports a policy id and a rule id in every event, and alerts are
//! stored with them, so an id must keep naming the same profile and the same flow across
//! unrelated edits: adding a profile or a flow must not renumber the others. The controller
//! allocates ids once per profile name and per flow key and keeps them in its store (they never
//! change and never collide); an offline compile of a site file derives them from positions.

use std::collections::BTreeMap;

use crate::{compile::CompileError, profile::Profile, profile::ProfileSet, valid::ValidSite};

/// Ids (and versions) of profiles and their flows for one compile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StableIds {
    /// Profile name -> policy id.
    pub policies: BTreeMap<String, u32>,
    /// (profile name, flow key) -> rule id; see [`flow_keys`].
    pub rules: BTreeMap<(String, String), u32>,
    /// Profile name -> version (reported with alerts); absent = 0.
    pub versions: BTreeMap<String, u32>,
}

/// The key of each flow of `profile`, in order: its name, or `#N` (1-based position) when it
/// has none; a name used again in the same profile gets `name#2`, `name#3`, ... The key is what
/// a rule id is kept under, so naming flows keeps their ids when flows are reordered.
pub fn flow_keys(profile: &Profile) -> Vec<String> {
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    profile
        .flows
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if f.name.is_empty() {
                return format!("#{}", i + 1);
            }
            let n = seen.entry(f.name.as_str()).or_insert(0);
            *n += 1;
            if *n == 1 {
                f.name.clone()
            } else {
                format!("{}#{n}", f.name)
            }
        })
        .collect()
}

/// Largest flow count per profile the positional scheme can number.
pub const POSITIONAL_FLOWS_MAX: usize = 9_999;

impl StableIds {
    /// Ids from positions, for offline compiles: policy id = 1 + the profile's place in name
    /// order, rule id = policy id * 10,000 + flow position. Adding a profile renumbers the
    /// profiles after it; the controller's stored ids do not have that problem.
    pub fn positional(profiles: &ProfileSet) -> Result<Self, CompileError> {
        Self::from_positions(
            profiles
                .profiles
                .iter()
                .map(|(name, (_, p))| (name.as_str(), flow_keys(p))),
        )
    }

    /// [`StableIds::positional`] of a validated site's profiles (the same ids).
    pub fn positional_of(site: &ValidSite) -> Result<Self, CompileError> {
        Self::from_positions(site.profiles.iter().map(|(name, p)| {
            (
                name.as_str(),
                p.flows.iter().map(|f| f.key.clone()).collect(),
            )
        }))
    }

    /// Profiles in name order, each with its flow keys in order.
    fn from_positions<'a>(
        profiles: impl Iterator<Item = (&'a str, Vec<String>)>,
    ) -> Result<Self, CompileError> {
        let mut ids = StableIds::default();
        for (i, (name, keys)) in profiles.enumerate() {
            if keys.len() > POSITIONAL_FLOWS_MAX {
                return Err(CompileError::TooManyFlows {
                    profile: name.to_string(),
                    flows: keys.len(),
                });
            }
            let policy_id = i as u32 + 1;
            ids.policies.insert(name.to_string(), policy_id);
            for (j, key) in keys.into_iter().enumerate() {
                ids.rules
                    .insert((name.to_string(), key), policy_id * 10_000 + j as u32 + 1);
            }
        }
        Ok(ids)
    }

    pub fn policy(&self, profile: &str) -> Result<u32, CompileError> {
        match self.policies.get(profile) {
            Some(&id) if id != 0 => Ok(id),
            _ => Err(CompileError::MissingId {
                what: "profile",
                name: profile.to_string(),
            }),
        }
    }

    pub fn rule(&self, profile: &str, key: &str) -> Result<u32, CompileError> {
        match self.rules.get(&(profile.to_string(), key.to_string())) {
            Some(&id) if id != 0 => Ok(id),
            _ => Err(CompileError::MissingId {
                what: "flow",
                name: format!("{profile}: {key}"),
            }),
        }
    }

    pub fn version(&self, profile: &str) -> u32 {
        self.versions.get(profile).copied().unwrap_or(0)
    }
}

/// Refuses two names sharing one id (what `what` names, e.g. "rule"): the datapath would
/// report both under one number.
pub fn check_unique<'a>(
    what: &'static str,
    ids: impl IntoIterator<Item = (u32, &'a str)>,
) -> Result<(), CompileError> {
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    for (id, name) in ids {
        if let Some(first) = seen.insert(id, name)
            && first != name
        {
            return Err(CompileError::DuplicateId {
                what,
                id,
                first: first.to_string(),
                second: name.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(flows: &[&str]) -> Profile {
        let mut yaml = "name: p\ndescription: d\nflows:\n".to_string();
        for f in flows {
            yaml.push_str(&format!(
                "  - {{name: '{f}', direction: from-device, protocol: tcp, peers: [198.51.100.1], ports: 1}}\n"
            ));
        }
        crate::parse_profile("p.yaml", &yaml).unwrap()
    }

    #[test]
    fn flow_keys_are_names_then_positions_and_repeats_are_numbered() {
        assert_eq!(
            flow_keys(&profile(&["dicom", "", "dns", "dicom", ""])),
            ["dicom", "#2", "dns", "dicom#2", "#5"]
        );
    }

    #[test]
    fn two_names_on_one_id_are_refused() {
        assert!(check_unique("rule", [(1, "a"), (2, "b"), (1, "a")]).is_ok());
        let e = check_unique("rule", [(1, "a"), (1, "b")]).unwrap_err();
        assert_eq!(e.to_string(), "rule id 1 is used by both `a` and `b`");
    }

    #[test]
    fn a_missing_id_is_an_error_naming_it() {
        let ids = StableIds::default();
        assert_eq!(
            ids.rule("ct", "dns").unwrap_err().to_string(),
            "no stable id for flow `ct: dns` (the store allocates one when it is written)"
        );
        assert!(ids.policy("ct").is_err());
    }
}
