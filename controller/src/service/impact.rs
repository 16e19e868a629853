//! The availability warning's inputs, read from the store (the decision is
//! `crate::impact`'s): the devices after a change, and for each device the change moves to
//! enforce or to another profile while enforced, the flows of the window that its policy after
//! would drop and its policy before did not. A shell over the analysis crate's simulation (the
//! datapath's own lowering and lookup).
//!
//! Group changes that narrow a group are not assessed (only profile, assignment, device and
//! mode changes are).

use std::collections::{BTreeMap, BTreeSet};

use wardgate_analysis::{
    FlowDirection, FlowRecord,
    baseline::Groups,
    simulate::{Blocked, simulate_weighted},
};
use wardgate_policy::Mode;
use wardgate_proto::v1 as pb;

use super::{Ctx, learning};
use crate::{
    error::Result,
    impact::{self, Impact, Lost, Member},
    store::{Change, DeviceRow},
};

/// Whether `change` can take traffic away from a device.
fn may_tighten(change: &Change) -> bool {
    match change {
        Change::UpsertProfile { .. } | Change::AssignProfile { .. } => true,
        Change::UpsertDevice(d) => d.mode == Mode::Enforce,
        Change::SetMode { mode, .. } => *mode == Mode::Enforce,
        _ => false,
    }
}

/// (profile YAML, mode) of a device: what decides what it may do.
fn policy<'a>(profiles: &'a BTreeMap<String, String>, d: &DeviceRow) -> (Option<&'a str>, Mode) {
    (profiles.get(&d.profile).map(String::as_str), d.mode)
}

/// What `yaml` would drop among `records` (of several devices), by device. A profile that
/// does not parse or compile blocks nothing here: the write refuses it with its own error.
fn blocked(
    yaml: &str,
    site: &wardgate_policy::Site,
    records: &[(FlowRecord, u64)],
) -> BTreeMap<String, Vec<Blocked>> {
    let mut out: BTreeMap<String, Vec<Blocked>> = BTreeMap::new();
    let Ok(profile) = wardgate_policy::parse_profile("candidate", yaml) else {
        return out;
    };
    let pairs: Vec<(&FlowRecord, u64)> = records.iter().map(|(r, n)| (r, *n)).collect();
    match simulate_weighted(&profile, Some(site), &pairs) {
        Ok(b) => {
            for b in b {
                out.entry(b.device.clone()).or_default().push(b);
            }
        }
        Err(e) => tracing::debug!(error = %e, "impact: profile does not simulate"),
    }
    out
}

/// What the assessment reads before the change.
struct Before {
    /// Profile name -> YAML (latest versions).
    profiles: BTreeMap<String, String>,
    groups: BTreeMap<String, Vec<String>>,
    /// The devices the changes name, those on the profiles they upsert, and every device on
    /// those devices' gateways (a ward's devices are counted behind the gateways the change
    /// reaches), by name.
    devices: BTreeMap<String, DeviceRow>,
}

/// Reads what [`assess`] needs in one read of the site (`Store::read_site`: beside the writes,
/// not queued with them): no more devices than the write's compile reads, so a write still
/// costs what it changes.
fn read_before(ctx: &Ctx, changes: &[Change]) -> Result<Before> {
    let tx = ctx.store.read_site()?;
    let base = tx.base()?;
    let mut devices: BTreeMap<String, DeviceRow> = BTreeMap::new();
    let mut upserted = BTreeSet::new();
    let mut gateways = BTreeSet::new();
    for c in changes {
        if let Change::UpsertProfile { name, .. } = c {
            upserted.insert(name.clone());
        }
        if let Change::UpsertDevice(d) = c {
            gateways.insert(d.gateway.clone());
        }
        if let Some(name) = c.device()
            && let Some(d) = tx.device(name)?
        {
            devices.insert(d.name.clone(), d);
        }
    }
    if !upserted.is_empty() {
        for d in tx.devices_of(&BTreeSet::new(), &upserted)? {
            devices.insert(d.name.clone(), d);
        }
    }
    gateways.extend(devices.values().map(|d| d.gateway.clone()));
    if !gateways.is_empty() {
        for d in tx.devices_of(&gateways, &BTreeSet::new())? {
            devices.insert(d.name.clone(), d);
        }
    }
    drop(tx); // read only
    Ok(Before {
        profiles: base
            .profiles
            .into_iter()
            .map(|p| (p.name, p.yaml))
            .collect(),
        groups: base.groups,
        devices,
    })
}

type FlowKey = (FlowDirection, std::net::IpAddr, u8, u16);

fn key(b: &Blocked) -> FlowKey {
    (b.direction, b.peer, b.proto, b.port)
}

/// What `changes` would cut off, per class and ward, over the controller's window.
pub fn assess(ctx: &Ctx, changes: &[Change]) -> Result<Impact> {
    if !changes.iter().any(may_tighten) {
        return Ok(Impact::default());
    }
    let read = read_before(ctx, changes)?;
    let before_profiles = read.profiles;
    let before = read.devices;
    let before_groups = read.groups;
    let (mut profiles, mut after, mut groups) = (
        before_profiles.clone(),
        before.clone(),
        before_groups.clone(),
    );
    for c in changes {
        match c {
            Change::UpsertProfile { name, yaml } => {
                profiles.insert(name.clone(), yaml.clone());
            }
            Change::UpsertGroup { name, cidrs } => {
                groups.insert(name.clone(), cidrs.clone());
            }
            Change::UpsertDevice(d) => {
                after.insert(d.name.clone(), d.clone());
            }
            Change::AssignProfile { device, profile } => {
                if let Some(d) = after.get_mut(device) {
                    d.profile = profile.clone();
                }
            }
            Change::SetMode { device, mode } => {
                if let Some(d) = after.get_mut(device) {
                    d.mode = *mode;
                }
            }
            Change::SetLocation { device, location } => {
                if let Some(d) = after.get_mut(device) {
                    d.location = location.clone();
                }
            }
            _ => {}
        }
    }
    // Devices enforced after the change under another policy than before. One leaving
    // quarantine (an engineer's or a SOC timer's restore) can only gain traffic.
    let moved: Vec<&DeviceRow> = after
        .values()
        .filter(|d| d.mode == Mode::Enforce)
        .filter(|d| {
            before
                .get(&d.name)
                .is_none_or(|b| b.mode != Mode::Quarantine)
        })
        .filter(|d| {
            before.get(&d.name).map(|b| policy(&before_profiles, b)) != Some(policy(&profiles, d))
        })
        .collect();
    let settings = ctx.availability;
    let now = learning::now_ns();
    let from = settings.window_start_ns(now);
    let mut records: BTreeMap<&str, Vec<(FlowRecord, u64)>> = BTreeMap::new();
    for d in &moved {
        let rows = ctx.store.flow_aggregates(&d.name, from, u64::MAX >> 1)?;
        let r = learning::weighted(&rows, &learning::device_ref(d));
        if !r.is_empty() {
            records.insert(&d.name, r);
        }
    }
    // One simulation per profile, after and before, over all its devices' flows.
    let by_profile = |devices: &dyn Fn(&str) -> Option<(String, Mode)>| {
        let mut m: BTreeMap<String, Vec<(FlowRecord, u64)>> = BTreeMap::new();
        for (name, r) in &records {
            if let Some((profile, Mode::Enforce)) = devices(name) {
                m.entry(profile).or_default().extend(r.iter().cloned());
            }
        }
        m
    };
    let after_sets = by_profile(&|n| after.get(n).map(|d| (d.profile.clone(), d.mode)));
    let before_sets = by_profile(&|n| before.get(n).map(|d| (d.profile.clone(), d.mode)));
    let (site_after, site_before) = (
        super::learning::groups_site(&groups),
        super::learning::groups_site(&before_groups),
    );
    let mut cut: BTreeMap<String, Vec<Blocked>> = BTreeMap::new();
    for (profile, r) in &after_sets {
        if let Some(yaml) = profiles.get(profile) {
            cut.extend(blocked(yaml, &site_after, r));
        }
    }
    let mut already: BTreeSet<(String, FlowKey)> = BTreeSet::new();
    for (profile, r) in &before_sets {
        if let Some(yaml) = before_profiles.get(profile) {
            for (device, b) in blocked(yaml, &site_before, r) {
                already.extend(b.iter().map(|b| (device.clone(), key(b))));
            }
        }
    }
    let names = Groups::from_pairs(
        groups
            .iter()
            .flat_map(|(g, cidrs)| cidrs.iter().map(move |c| (g.as_str(), c.as_str()))),
    );
    let lost: BTreeMap<String, Vec<Lost>> = cut
        .into_iter()
        .map(|(device, b)| {
            let l = b
                .iter()
                .filter(|b| !already.contains(&(device.clone(), key(b))))
                .map(|b| Lost {
                    direction: learning::direction_name(b.direction),
                    peer: b.peer,
                    peer_group: names.name(b.peer).unwrap_or_default().to_string(),
                    proto: b.proto,
                    port: b.port,
                    flows: b.flows,
                    last_seen_ns: b.last_seen_ns,
                })
                .collect();
            (device, l)
        })
        .collect();
    let members: Vec<Member> = after
        .values()
        .map(|d| Member {
            device: d.name.clone(),
            gateway: d.gateway.clone(),
            class: d.profile.clone(),
            ward: d.location.clone(),
        })
        .collect();
    Ok(impact::assess(&settings, now, &members, lost))
}

/// The impact as it travels.
pub fn to_pb(i: &Impact) -> Vec<pb::WardImpact> {
    i.wards
        .iter()
        .map(|w| pb::WardImpact {
            class: w.class.clone(),
            ward: w.ward.clone(),
            devices: w.devices as u32,
            blocked_devices: w.blocked.len() as u32,
            over_threshold: w.over_threshold,
            blocked: w
                .blocked
                .iter()
                .map(|(device, (gateway, lost))| pb::ImpactedDevice {
                    device: device.clone(),
                    gateway: gateway.clone(),
                    flows: lost
                        .iter()
                        .map(|l| pb::ImpactFlow {
                            direction: l.direction.into(),
                            peer: l.peer.to_string(),
                            peer_group: l.peer_group.clone(),
                            proto: l.proto.into(),
                            port: l.port.into(),
                            flows: l.flows,
                            last_seen_unix_ms: (l.last_seen_ns / 1_000_000) as i64,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

/// The impact as a client reads it back (to word it as the controller does).
pub fn from_pb(wards: &[pb::WardImpact]) -> Impact {
    Impact {
        wards: wards
            .iter()
            .map(|w| impact::WardImpact {
                class: w.class.clone(),
                ward: w.ward.clone(),
                devices: w.devices as usize,
                over_threshold: w.over_threshold,
                blocked: w
                    .blocked
                    .iter()
                    .map(|d| {
                        let lost = d
                            .flows
                            .iter()
                            .map(|f| Lost {
                                direction: if f.direction == "to-device" {
                                    "to-device"
                                } else {
                                    "from-device"
                                },
                                peer: f.peer.parse().unwrap_or(std::net::IpAddr::V4(
                                    std::net::Ipv4Addr::UNSPECIFIED,
                                )),
                                peer_group: f.peer_group.clone(),
                                proto: f.proto as u8,
                                port: f.port as u16,
                                flows: f.flows,
                                last_seen_ns: (f.last_seen_unix_ms.max(0) as u64)
                                    .saturating_mul(1_000_000),
                            })
                            .collect();
                        (d.device.clone(), (d.gateway.clone(), lost))
                    })
                    .collect(),
            })
            .collect(),
    }
}
