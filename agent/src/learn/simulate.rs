//! `learn --simulate PROFILE`: the capture's flows through a candidate profile.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use wardgate_analysis::simulate::{Blocked, simulate};
use wardgate_policy::{Profile, Site};

use super::Learned;

#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    pub profile: String,
    pub devices: Vec<String>,
    pub flows: usize,
    pub blocked: Vec<Blocked>,
}

/// Reads and validates the candidate (errors point at file:line:column).
pub fn load_profile(path: &Path) -> anyhow::Result<Profile> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {file}"))?;
    let p = wardgate_policy::parse_profile(&file, &text).map_err(|d| anyhow::anyhow!("{d}"))?;
    let d = wardgate_policy::validate_profile(&file, &p);
    anyhow::ensure!(d.is_empty(), "{d}");
    Ok(p)
}

pub fn run(
    profile: &Profile,
    site: Option<&Site>,
    asked: &[String],
    l: &Learned,
) -> anyhow::Result<Simulation> {
    let known: Vec<&str> = l.devices.iter().map(|d| d.name.as_str()).collect();
    for d in asked {
        anyhow::ensure!(
            known.contains(&d.as_str()),
            "--device {d}: no such device in the capture (devices: {})",
            known.join(", ")
        );
    }
    let assigned: Vec<String> = site
        .map(|s| {
            s.devices
                .iter()
                .filter(|d| d.profile.value == profile.name.value)
                .map(|d| d.name.value.clone())
                .collect()
        })
        .unwrap_or_default();
    // Never every device of a capture by default: a profile is written for one kind of
    // device, and applied to all it "blocks" whatever the others do.
    let devices: Vec<String> = if !asked.is_empty() {
        asked.to_vec()
    } else if !assigned.is_empty() {
        assigned
    } else if let [only] = known.as_slice() {
        vec![only.to_string()]
    } else {
        anyhow::bail!(
            "the capture holds {} devices ({}) and no site assigns profile `{}` to any: say \
             which to simulate with --device NAME",
            known.len(),
            known.join(", "),
            profile.name.value
        );
    };
    let records: Vec<_> = l
        .flows
        .iter()
        .filter(|r| devices.contains(&r.device.name))
        .cloned()
        .collect();
    anyhow::ensure!(
        !records.is_empty(),
        "no flows of {} in the capture: nothing to simulate the profile against",
        devices.join(", ")
    );
    let blocked = simulate(profile, site, &records)?;
    Ok(Simulation {
        profile: profile.name.value.clone(),
        devices,
        flows: records.len(),
        blocked,
    })
}
