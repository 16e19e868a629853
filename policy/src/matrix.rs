//! What a validated profile allows towards a site group, and whether it allows one observed
//! flow: the two questions of the console's policy matrix (device classes against groups).
//!
//! Decided on the profile's flows by direction, protocol, port and peer address, the way the
//! datapath's port-level lookup does; what an address alone cannot decide is not taken as
//! allowing: `dns:` peers (their addresses are learned by the agent), `same_profile` peers
//! (the class's own addresses) and application checks (DICOM, HL7) on an allowed port.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    desired::{Direction, PortRange, Proto},
    valid::{ValidFlow, ValidPeer, ValidProfile},
};

/// The networks a flow's peer stands for by address (none for `dns:` and `same_profile`).
fn nets(peer: &ValidPeer) -> Vec<IpNet> {
    match peer {
        ValidPeer::Any => ValidPeer::any_nets().to_vec(),
        ValidPeer::Net(n) => vec![*n],
        ValidPeer::Group { nets, .. } => nets.clone(),
        ValidPeer::SameProfile | ValidPeer::Dns(_) => Vec::new(),
    }
}

/// The flows of `profile` whose peers cover every network of a group (`group` empty: none),
/// i.e. that allow traffic with any address of the group.
pub fn flows_to<'a>(profile: &'a ValidProfile, group: &[IpNet]) -> Vec<&'a ValidFlow> {
    if group.is_empty() {
        return Vec::new();
    }
    profile
        .flows
        .iter()
        .filter(|f| {
            let peers: Vec<IpNet> = f.peers.iter().flat_map(nets).collect();
            group.iter().all(|g| peers.iter().any(|p| p.contains(g)))
        })
        .collect()
}

/// The flows of `profile` with a peer outside every group (an `any` peer or a literal
/// network that is no group's): what it allows towards addresses no group names.
pub fn flows_to_other<'a>(profile: &'a ValidProfile, groups: &[&[IpNet]]) -> Vec<&'a ValidFlow> {
    profile
        .flows
        .iter()
        .filter(|f| {
            f.peers.iter().any(|p| match p {
                ValidPeer::Any => true,
                ValidPeer::Net(n) => !groups.iter().any(|g| g.iter().any(|x| x.contains(n))),
                _ => false,
            })
        })
        .collect()
}

/// Whether `profile` allows a flow in `direction` with `peer` on IP protocol `proto` and
/// port `port` (see the module's note on what is not decided by address).
pub fn allows(
    profile: &ValidProfile,
    direction: Direction,
    peer: IpAddr,
    proto: u8,
    port: u16,
) -> bool {
    matching(profile, direction, peer, proto, port).is_some()
}

/// The first flow (rule) of `profile` that allows a flow in `direction` with `peer` on IP
/// protocol `proto` and port `port`, as [`allows`] decides it.
pub fn matching(
    profile: &ValidProfile,
    direction: Direction,
    peer: IpAddr,
    proto: u8,
    port: u16,
) -> Option<&ValidFlow> {
    profile.flows.iter().find(|f| {
        f.direction == direction
            && f.proto.number().is_none_or(|p| p == proto)
            && (f.ports.is_empty() || f.ports.iter().any(|r| r.contains(port)))
            && f.peers
                .iter()
                .any(|p| nets(p).iter().any(|n| n.contains(&peer)))
    })
}

/// A flow's reach in words: `out tcp/443,8443`, `in udp`, `out any`.
pub fn words(f: &ValidFlow) -> String {
    let dir = match f.direction {
        Direction::FromDevice => "out",
        Direction::ToDevice => "in",
    };
    let proto = match f.proto {
        Proto::Any => "any",
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
        Proto::Icmpv6 => "icmpv6",
    };
    if f.ports.is_empty() {
        return format!("{dir} {proto}");
    }
    let ports: Vec<String> = f.ports.iter().map(range).collect();
    format!("{dir} {proto}/{}", ports.join(","))
}

fn range(r: &PortRange) -> String {
    if r.lo == r.hi {
        r.lo.to_string()
    } else {
        format!("{}-{}", r.lo, r.hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(direction: Direction, proto: Proto, peers: Vec<ValidPeer>, ports: &[u16]) -> ValidFlow {
        ValidFlow {
            key: "k".into(),
            name: "f".into(),
            direction,
            proto,
            peers,
            ports: ports.iter().map(|p| PortRange::single(*p)).collect(),
            idle_timeout_s: 60,
            app: None,
        }
    }

    fn profile(flows: Vec<ValidFlow>) -> ValidProfile {
        ValidProfile {
            name: "pump".into(),
            file: "pump.yaml".into(),
            default_mode: crate::Mode::Learn,
            fail_mode: crate::profile::FailMode::Closed,
            conntrack: serde_json::from_str("{}").unwrap(),
            sensitivity: Default::default(),
            detection: Default::default(),
            flows,
            resolvers: Vec::new(),
        }
    }

    #[test]
    fn a_group_is_reached_only_when_every_network_is_covered() {
        let servers: Vec<IpNet> = vec!["192.0.2.0/28".parse().unwrap()];
        let split: Vec<IpNet> = vec![
            "192.0.2.0/28".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        ];
        let p = profile(vec![
            flow(
                Direction::FromDevice,
                Proto::Tcp,
                vec![ValidPeer::Group {
                    name: "servers".into(),
                    nets: servers.clone(),
                }],
                &[443, 8443],
            ),
            flow(
                Direction::FromDevice,
                Proto::Udp,
                vec![ValidPeer::Dns("ntp.example".into())],
                &[123],
            ),
        ]);
        let to: Vec<String> = flows_to(&p, &servers).into_iter().map(words).collect();
        assert_eq!(to, ["out tcp/443,8443"]);
        assert!(flows_to(&p, &split).is_empty());
        assert!(flows_to_other(&p, &[&servers]).is_empty());
        let peer: IpAddr = "192.0.2.5".parse().unwrap();
        assert!(allows(&p, Direction::FromDevice, peer, 6, 443));
        assert!(!allows(&p, Direction::FromDevice, peer, 6, 22));
        assert!(!allows(&p, Direction::ToDevice, peer, 6, 443));
        assert!(!allows(&p, Direction::FromDevice, peer, 17, 443));
        // A dns: peer is not decided by address.
        assert!(!allows(&p, Direction::FromDevice, peer, 17, 123));
    }

    #[test]
    fn an_any_peer_reaches_every_group_and_the_rest() {
        let p = profile(vec![flow(
            Direction::FromDevice,
            Proto::Any,
            vec![ValidPeer::Any],
            &[],
        )]);
        let g: Vec<IpNet> = vec!["2001:db8::/32".parse().unwrap()];
        assert_eq!(flows_to(&p, &g).len(), 1);
        assert_eq!(flows_to_other(&p, &[&g]).len(), 1);
        assert_eq!(words(&p.flows[0]), "out any");
        assert!(allows(
            &p,
            Direction::FromDevice,
            "203.0.113.9".parse().unwrap(),
            17,
            53
        ));
    }
}
