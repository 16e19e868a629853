//! What a write would change for each device, in words (`+ tcp/8443 to infusion-server`):
//! the dry runs of `assign`, `mode` and `push`, from the states before and after
//! ([`crate::write::preview`]). Pure. Rules are compared by what they allow (direction,
//! protocol, peers, ports), not by their names or ids, which embed the profile's name: moving
//! a device to a copy of its profile with one more port shows that one port.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use wardgate_policy::{
    DesiredState,
    desired::{DeviceEntry, Direction, PortRange, Proto, Rule},
};

use crate::words;

/// One device's change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceChange {
    pub gateway: String,
    pub device: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// Empty where the device is not on the gateway before (after).
    pub mode_before: String,
    pub mode_after: String,
    pub profile_before: String,
    pub profile_after: String,
    /// What the device may newly do, and may no longer do, in words.
    pub allowed_added: Vec<String>,
    pub allowed_removed: Vec<String>,
    /// Where the change can stop the device's traffic, what to expect; empty otherwise.
    pub warning: String,
}

/// The availability warning of a change from mode `before` to `after` ("" for a device that
/// was not there) that removes `removed` allowed flows.
pub fn warning(before: &str, after: &str, removed: usize) -> String {
    match (before, after) {
        (b, "quarantine") if b != "quarantine" => {
            "all its traffic will be dropped, clinical traffic included".into()
        }
        (b, "enforce") if b != "enforce" => "from now on, flows its profile does not allow are \
            dropped (`wardctl simulate` shows which of its recorded flows would be)"
            .into(),
        ("enforce", "enforce") if removed > 0 => {
            "it is enforced: the removed flows are dropped at once".into()
        }
        _ => String::new(),
    }
}

/// What a rule allows: its identity in a diff.
type Allows = (Direction, Proto, Vec<IpNet>, Option<PortRange>);

fn allows(r: &Rule) -> Allows {
    let mut peers = r.peers.clone();
    peers.sort();
    peers.dedup();
    (r.direction, r.proto, peers, r.ports)
}

/// A device's profile name and what its rules allow.
fn of(state: &DesiredState, d: &DeviceEntry) -> (String, BTreeMap<Allows, Rule>) {
    match state.policies.iter().find(|p| p.policy_id == d.policy_id) {
        Some(p) => (
            p.profile.clone(),
            p.rules.iter().map(|r| (allows(r), r.clone())).collect(),
        ),
        None => (String::new(), BTreeMap::new()),
    }
}

/// Every device whose mode, profile or allowed flows differ between `before` (none: the
/// gateway has no policy yet) and `after`, by device name.
pub fn device_changes(
    before: Option<&DesiredState>,
    after: &DesiredState,
    groups: &[(String, Vec<IpNet>)],
) -> Vec<DeviceChange> {
    let empty = DesiredState {
        gateway: after.gateway.clone(),
        generation: 0,
        epoch: String::new(),
        content_hash: String::new(),
        devices: Vec::new(),
        policies: Vec::new(),
        peers: Vec::new(),
        ports: Vec::new(),
        groups: Default::default(),
        dns: Default::default(),
    };
    let before = before.unwrap_or(&empty);
    let by_name = |s: &DesiredState| -> BTreeMap<String, DeviceEntry> {
        s.devices
            .iter()
            .map(|d| (d.name.clone(), d.clone()))
            .collect()
    };
    let (b, a) = (by_name(before), by_name(after));
    let names: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let (pb, rb, mb) = match b.get(name) {
            Some(d) => {
                let (p, r) = of(before, d);
                (p, r, d.mode.as_str().to_string())
            }
            None => (String::new(), BTreeMap::new(), String::new()),
        };
        let (pa, ra, ma) = match a.get(name) {
            Some(d) => {
                let (p, r) = of(after, d);
                (p, r, d.mode.as_str().to_string())
            }
            None => (String::new(), BTreeMap::new(), String::new()),
        };
        let added: Vec<String> = ra
            .iter()
            .filter(|(k, _)| !rb.contains_key(*k))
            .map(|(_, r)| words::rule(r, groups))
            .collect();
        let removed: Vec<String> = rb
            .iter()
            .filter(|(k, _)| !ra.contains_key(*k))
            .map(|(_, r)| words::rule(r, groups))
            .collect();
        if pb == pa && mb == ma && added.is_empty() && removed.is_empty() {
            continue;
        }
        let warning = warning(&mb, &ma, removed.len());
        out.push(DeviceChange {
            warning,
            gateway: after.gateway.clone(),
            device: name.clone(),
            change: match (b.contains_key(name), a.contains_key(name)) {
                (false, _) => "added",
                (_, false) => "removed",
                _ => "changed",
            },
            mode_before: mb,
            mode_after: ma,
            profile_before: pb,
            profile_after: pa,
            allowed_added: added,
            allowed_removed: removed,
        });
    }
    out
}

/// A device's change for people, one line for the device then `+`/`-` lines.
pub fn render(c: &DeviceChange) -> String {
    use std::fmt::Write as _;
    let mut s = format!("{} on {}", c.device, c.gateway);
    match c.change {
        "added" => {
            let _ = write!(
                s,
                ": new, profile {}, mode {}",
                c.profile_after, c.mode_after
            );
        }
        "removed" => s.push_str(": no longer on this gateway"),
        _ => {
            let mut parts = Vec::new();
            if c.profile_before != c.profile_after {
                parts.push(format!(
                    "profile {} -> {}",
                    c.profile_before, c.profile_after
                ));
            }
            if c.mode_before != c.mode_after {
                parts.push(format!("mode {} -> {}", c.mode_before, c.mode_after));
            }
            if !parts.is_empty() {
                let _ = write!(s, ": {}", parts.join(", "));
            }
        }
    }
    for a in &c.allowed_added {
        let _ = write!(s, "\n  + {a}");
    }
    for r in &c.allowed_removed {
        let _ = write!(s, "\n  - {r}");
    }
    if c.change == "changed" && c.allowed_added.is_empty() && c.allowed_removed.is_empty() {
        s.push_str("\n  allowed flows unchanged");
    }
    if !c.warning.is_empty() {
        let _ = write!(s, "\n  ! {}", c.warning);
    }
    s
}

#[cfg(test)]
mod tests {
    use wardgate_policy::desired::{MacAddr, Mode, PolicyEntry};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn rule(id: u32, name: &str, proto: Proto, peer: &str, port: u16) -> Rule {
        Rule {
            rule_id: id,
            name: name.into(),
            direction: Direction::FromDevice,
            proto,
            peers: vec![net(peer)],
            ports: Some(PortRange::single(port)),
            idle_timeout_s: 60,
            inspect: false,
            app: None,
        }
    }

    fn state(profile: &str, mode: Mode, rules: Vec<Rule>) -> DesiredState {
        DesiredState {
            gateway: "gw-3a".into(),
            generation: 1,
            epoch: String::new(),
            content_hash: String::new(),
            devices: vec![DeviceEntry {
                device_id: 1,
                name: "pump".into(),
                addrs: vec!["192.0.2.10".parse().unwrap()],
                mac: MacAddr([2, 0, 0, 0, 0, 10]),
                policy_id: 7,
                mode,
                max_flows: 0,
                fail_open: false,
                grace_s: wardgate_policy::profile::DEFAULT_GRACE_MAX_S,
            }],
            policies: vec![PolicyEntry {
                policy_id: 7,
                profile: profile.into(),
                profile_version: 1,
                rules,
                sensitivity: Default::default(),
                detection: Default::default(),
            }],
            peers: Vec::new(),
            ports: Vec::new(),
            groups: Default::default(),
            dns: Default::default(),
        }
    }

    fn groups() -> Vec<(String, Vec<IpNet>)> {
        vec![
            ("infusion-server".into(), vec![net("198.51.100.30/32")]),
            ("dns".into(), vec![net("198.51.100.53/32")]),
        ]
    }

    #[test]
    fn a_copied_profile_with_one_more_port_shows_that_port_only() {
        let before = state(
            "infusion-pump",
            Mode::Enforce,
            vec![
                rule(1, "infusion-pump#1", Proto::Tcp, "198.51.100.30/32", 443),
                rule(2, "infusion-pump#2", Proto::Udp, "198.51.100.53/32", 53),
            ],
        );
        // Other names and ids: the rules a new profile compiles to.
        let after = state(
            "infusion-pump-bbraun",
            Mode::Enforce,
            vec![
                rule(
                    11,
                    "infusion-pump-bbraun#1",
                    Proto::Tcp,
                    "198.51.100.30/32",
                    443,
                ),
                rule(
                    12,
                    "infusion-pump-bbraun#2",
                    Proto::Tcp,
                    "198.51.100.30/32",
                    8443,
                ),
            ],
        );
        let c = device_changes(Some(&before), &after, &groups());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].allowed_added, ["tcp/8443 to infusion-server"]);
        assert_eq!(c[0].allowed_removed, ["udp/53 to dns"]);
        assert_eq!(
            render(&c[0]),
            "pump on gw-3a: profile infusion-pump -> infusion-pump-bbraun\n  \
             + tcp/8443 to infusion-server\n  - udp/53 to dns\n  \
             ! it is enforced: the removed flows are dropped at once"
        );
    }

    #[test]
    fn a_mode_change_alone_and_no_change_at_all() {
        let rules = vec![rule(1, "p#1", Proto::Tcp, "198.51.100.30/32", 443)];
        let before = state("p", Mode::Monitor, rules.clone());
        let after = state("p", Mode::Enforce, rules);
        let c = device_changes(Some(&before), &after, &groups());
        assert_eq!(
            render(&c[0]),
            "pump on gw-3a: mode monitor -> enforce\n  allowed flows unchanged\n  ! from now \
             on, flows its profile does not allow are dropped (`wardctl simulate` shows which of \
             its recorded flows would be)"
        );
        assert_eq!(warning("learn", "monitor", 0), "");
        assert_eq!(warning("enforce", "enforce", 0), "");
        assert!(warning("enforce", "quarantine", 0).contains("all its traffic"));
        assert!(device_changes(Some(&after), &after, &groups()).is_empty());
        // A gateway's first policy: every device is new.
        let first = device_changes(None, &after, &groups());
        assert_eq!(first[0].change, "added");
        assert_eq!(first[0].allowed_added, ["tcp/443 to infusion-server"]);
    }
}
