//! The site at a glance: device classes (the profiles devices use) against site groups, each
//! cell what the class's profile allows towards the group (in words), and what devices of the
//! class were seen doing there in the last days that the profile denies. Computed from the
//! validated site (`wardgate_policy::matrix`) and the store's flow rows; the console's
//! `/matrix` only shows it.

use std::collections::{BTreeMap, BTreeSet};

use wardgate_policy::{ValidSite, matrix};

use super::Ctx;
use crate::{compile, error::Result, store::ObservedFlow};

/// Days of flow rows checked for observed-but-denied traffic (today included).
pub const OBSERVED_DAYS: u32 = 7;

/// One class against one group (or against addresses no group names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// What the profile allows with every address of the group, in words (`out tcp/443`).
    pub allowed: Vec<String>,
    /// Flows seen from devices of the class with the group that the profile denies.
    pub denied_flows: u64,
    /// Which devices (by name).
    pub denied_devices: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassRow {
    pub profile: String,
    /// Devices of the class.
    pub devices: usize,
    /// One per group, in `Matrix::groups` order, then one for addresses no group names.
    pub cells: Vec<Cell>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    pub groups: Vec<String>,
    pub rows: Vec<ClassRow>,
}

/// The matrix at `now_ns`.
pub fn matrix(ctx: &Ctx, now_ns: u64) -> Result<Matrix> {
    let snap = ctx.store.snapshot()?;
    let set = compile::profiles(&snap)?;
    let site = compile::valid_site(&snap, &set)?;
    let from_day = wardgate_analysis::aggregate::day_of(now_ns).saturating_sub(OBSERVED_DAYS - 1);
    let observed = ctx.store.observed_flows(from_day)?;
    Ok(build(&site, &observed))
}

/// The matrix of `site` with `observed` flows (pure).
pub fn build(site: &ValidSite, observed: &[ObservedFlow]) -> Matrix {
    let groups: Vec<(&String, &Vec<ipnet::IpNet>)> = site.groups().iter().collect();
    let nets: Vec<&[ipnet::IpNet]> = groups.iter().map(|(_, n)| n.as_slice()).collect();
    let mut in_use: BTreeMap<&str, usize> = BTreeMap::new();
    for d in site.devices() {
        *in_use.entry(d.profile.as_str()).or_default() += 1;
    }
    let mut rows: BTreeMap<&str, ClassRow> = BTreeMap::new();
    for (&name, &devices) in &in_use {
        let Some(p) = site.profiles().get(name) else {
            continue;
        };
        let words = |flows: Vec<&wardgate_policy::ValidFlow>| {
            let mut w: Vec<String> = flows.into_iter().map(matrix::words).collect();
            w.dedup();
            w
        };
        let mut cells: Vec<Cell> = nets
            .iter()
            .map(|n| Cell {
                allowed: words(matrix::flows_to(p, n)),
                ..Cell::default()
            })
            .collect();
        cells.push(Cell {
            allowed: words(matrix::flows_to_other(p, &nets)),
            ..Cell::default()
        });
        rows.insert(
            name,
            ClassRow {
                profile: name.to_string(),
                devices,
                cells,
            },
        );
    }
    for o in observed {
        let (Some(row), Some(p)) = (
            rows.get_mut(o.profile.as_str()),
            site.profiles().get(&o.profile),
        ) else {
            continue;
        };
        if matrix::allows(p, o.direction.to_policy(), o.peer, o.proto, o.port) {
            continue;
        }
        let mut hit = false;
        for (i, n) in nets.iter().enumerate() {
            if n.iter().any(|net| net.contains(&o.peer)) {
                hit = true;
                add(&mut row.cells[i], o);
            }
        }
        if !hit {
            let last = row.cells.len() - 1;
            add(&mut row.cells[last], o);
        }
    }
    Matrix {
        groups: groups.into_iter().map(|(g, _)| g.clone()).collect(),
        rows: rows.into_values().collect(),
    }
}

fn add(cell: &mut Cell, o: &ObservedFlow) {
    cell.denied_flows = cell.denied_flows.saturating_add(o.flows);
    cell.denied_devices.insert(o.device.clone());
}
