//! Differences between two generations of a gateway's desired state.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::desired::{DesiredState, PeerEntry, PortEntry};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateDiff {
    pub from_generation: u32,
    pub to_generation: u32,
    pub devices_added: Vec<String>,
    pub devices_removed: Vec<String>,
    /// Devices whose addresses, MAC, profile or mode changed.
    pub devices_changed: Vec<String>,
    /// Logical rules, as `profile: rule name (direction proto peers ports)`.
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    pub peers_added: Vec<PeerEntry>,
    pub peers_removed: Vec<PeerEntry>,
    pub ports_added: Vec<PortEntry>,
    pub ports_removed: Vec<PortEntry>,
}

impl StateDiff {
    pub fn is_empty(&self) -> bool {
        self.devices_added.is_empty()
            && self.devices_removed.is_empty()
            && self.devices_changed.is_empty()
            && self.rules_added.is_empty()
            && self.rules_removed.is_empty()
            && self.peers_added.is_empty()
            && self.peers_removed.is_empty()
            && self.ports_added.is_empty()
            && self.ports_removed.is_empty()
    }
}

fn rules(s: &DesiredState) -> BTreeSet<String> {
    s.policies
        .iter()
        .flat_map(|p| {
            p.rules.iter().map(move |r| {
                let peers: Vec<String> = r.peers.iter().map(ToString::to_string).collect();
                let ports = r.ports.map_or("all ports".to_string(), |p| {
                    if p.lo == p.hi {
                        format!("port {}", p.lo)
                    } else {
                        format!("ports {}-{}", p.lo, p.hi)
                    }
                });
                format!(
                    "{}: {} ({:?} {:?} {} {ports})",
                    p.profile,
                    r.name,
                    r.direction,
                    r.proto,
                    peers.join(",")
                )
            })
        })
        .collect()
}

fn minus<T: Ord + Clone>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> Vec<T> {
    a.difference(b).cloned().collect()
}

pub fn diff(prev: &DesiredState, next: &DesiredState) -> StateDiff {
    let names = |s: &DesiredState| {
        s.devices
            .iter()
            .map(|d| d.name.clone())
            .collect::<BTreeSet<_>>()
    };
    let (pn, nn) = (names(prev), names(next));
    let profile_of = |s: &DesiredState, id: u32| {
        s.policies
            .iter()
            .find(|p| p.policy_id == id)
            .map(|p| p.profile.clone())
    };
    let devices_changed = nn
        .intersection(&pn)
        .filter(|name| {
            let a = prev
                .devices
                .iter()
                .find(|d| &&d.name == name)
                .expect("in prev");
            let b = next
                .devices
                .iter()
                .find(|d| &&d.name == name)
                .expect("in next");
            a.addrs != b.addrs
                || a.mac != b.mac
                || a.mode != b.mode
                || profile_of(prev, a.policy_id) != profile_of(next, b.policy_id)
        })
        .cloned()
        .collect();
    let (pr, nr) = (rules(prev), rules(next));
    let set = |v: &[PeerEntry]| v.iter().copied().collect::<BTreeSet<_>>();
    let pset = |v: &[PortEntry]| v.iter().copied().collect::<BTreeSet<_>>();
    StateDiff {
        from_generation: prev.generation,
        to_generation: next.generation,
        devices_added: minus(&nn, &pn),
        devices_removed: minus(&pn, &nn),
        devices_changed,
        rules_added: minus(&nr, &pr),
        rules_removed: minus(&pr, &nr),
        peers_added: minus(&set(&next.peers), &set(&prev.peers)),
        peers_removed: minus(&set(&prev.peers), &set(&next.peers)),
        ports_added: minus(&pset(&next.ports), &pset(&prev.ports)),
        ports_removed: minus(&pset(&prev.ports), &pset(&next.ports)),
    }
}
