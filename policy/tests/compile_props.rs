//! Property: for random profiles and sites, every flow a profile allows is allowed by the
//! compiled state (through the datapath's two-lookup model), and no flow outside it is.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use proptest::prelude::*;
use wardgate_policy::{
    Direction, Mode, ProfileSet, Proto, compile,
    lower::lookup,
    profile::{App, Conntrack, FailMode, Flow, PortItem, Ports, Profile, Sensitivity},
    site::{Device, Gateway, Site},
    span::Located,
};

/// Small address universe so probes often hit rule peers: 4 /24s in documentation space.
fn nets() -> Vec<&'static str> {
    vec![
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8:5::/64",
    ]
}

#[derive(Clone, Debug)]
enum PeerSpec {
    Any,
    Group(usize),
    Cidr(usize, u8, u8), // net index, host byte, prefix bits within the /24 (24..=32)
}

#[derive(Clone, Debug)]
struct FlowSpec {
    dir: Direction,
    proto: Proto,
    peers: Vec<PeerSpec>,
    ports: Option<Vec<(u16, u16)>>,
}

fn peer_spec() -> impl Strategy<Value = PeerSpec> {
    prop_oneof![
        1 => Just(PeerSpec::Any),
        3 => (0usize..3).prop_map(PeerSpec::Group),
        4 => (0usize..4, any::<u8>(), 24u8..=32).prop_map(|(n, h, b)| PeerSpec::Cidr(n, h, b)),
    ]
}

fn port_range() -> impl Strategy<Value = (u16, u16)> {
    (1u16..200, 0u16..40).prop_map(|(lo, w)| (lo, lo.saturating_add(w)))
}

fn flow_spec() -> impl Strategy<Value = FlowSpec> {
    (
        prop_oneof![Just(Direction::FromDevice), Just(Direction::ToDevice)],
        prop_oneof![
            Just(Proto::Tcp),
            Just(Proto::Udp),
            Just(Proto::Icmp),
            Just(Proto::Any)
        ],
        prop::collection::vec(peer_spec(), 1..3),
        prop::option::of(prop::collection::vec(port_range(), 1..3)),
    )
        .prop_map(|(dir, proto, peers, ports)| {
            let ports = if proto == Proto::Icmp { None } else { ports };
            FlowSpec {
                dir,
                proto,
                peers,
                ports,
            }
        })
}

fn cidr(n: usize, host: u8, bits: u8) -> IpNet {
    let base: IpNet = nets()[n].parse().unwrap();
    match base {
        IpNet::V4(v4) => {
            let mut o = v4.addr().octets();
            o[3] = host;
            IpNet::new(IpAddr::from(o), bits).unwrap().trunc()
        }
        IpNet::V6(v6) => {
            let mut o = v6.addr().octets();
            o[15] = host;
            IpNet::new(IpAddr::from(o), 96 + bits).unwrap().trunc()
        }
    }
}

fn groups() -> Vec<Vec<IpNet>> {
    vec![
        vec!["198.51.100.10/32".parse().unwrap()],
        vec![
            "203.0.113.0/25".parse().unwrap(),
            "2001:db8:5::/120".parse().unwrap(),
        ],
        vec![
            "192.0.2.64/26".parse().unwrap(),
            "198.51.100.128/25".parse().unwrap(),
        ],
    ]
}

/// A peer as the profile file spells it (two specs can spell the same CIDR).
fn peer_text(p: &PeerSpec) -> String {
    match p {
        PeerSpec::Any => "any".to_string(),
        PeerSpec::Group(g) => format!("group:g{g}"),
        PeerSpec::Cidr(n, h, b) => cidr(*n, *h, *b).to_string(),
    }
}

fn profile(flows: &[FlowSpec]) -> Profile {
    let flows = flows
        .iter()
        .map(|f| Flow {
            name: String::new(),
            direction: f.dir,
            protocol: Located::new(f.proto),
            peers: f.peers.iter().map(|p| Located::new(peer_text(p))).collect(),
            ports: f.ports.as_ref().map(|r| {
                Located::new(Ports::List(
                    r.iter()
                        .map(|(lo, hi)| PortItem::Text(format!("{lo}-{hi}")))
                        .collect(),
                ))
            }),
            idle_timeout_s: None,
            app: None,
        })
        .collect();
    Profile {
        name: Located::new("p".into()),
        description: String::new(),
        vendors: vec![],
        models: vec![],
        default_mode: Mode::Enforce,
        fail_mode: FailMode::Open,
        baseline_sensitivity: Sensitivity::Medium,
        detection: Default::default(),
        conntrack: Conntrack::default(),
        dns_resolvers: None,
        flows,
    }
}

fn site() -> Site {
    let mut g = BTreeMap::new();
    for (i, nets) in groups().into_iter().enumerate() {
        g.insert(
            format!("g{i}"),
            nets.into_iter()
                .map(|n| Located::new(n.to_string()))
                .collect(),
        );
    }
    Site {
        site: "s".into(),
        groups: g,
        gateways: vec![Gateway {
            name: Located::new("gw".into()),
            interfaces: vec!["wg-dev0".into()],
            location: String::new(),
        }],
        devices: vec![Device {
            id: Some(1),
            name: Located::new("d".into()),
            mac: Located::new("02:00:00:00:00:01".into()),
            addresses: vec![Located::new("192.0.2.1".into())],
            profile: Located::new("p".into()),
            mode: None,
            gateway: Located::new("gw".into()),
            location: String::new(),
            asset_id: String::new(),
        }],
    }
}

/// What the profile means, evaluated directly (the specification).
fn allowed(flows: &[FlowSpec], dir: Direction, peer: IpAddr, proto: u8, port: u16) -> bool {
    flows.iter().any(|f| {
        let proto_ok = match f.proto {
            Proto::Any => f.ports.is_none() || proto == 6 || proto == 17,
            p => p.number() == Some(proto),
        };
        let port_ok = match &f.ports {
            None => true,
            Some(r) => r.iter().any(|(lo, hi)| *lo <= port && port <= *hi),
        };
        let peer_ok = f.peers.iter().any(|p| match p {
            PeerSpec::Any => true,
            PeerSpec::Group(g) => groups()[*g].iter().any(|n| n.contains(&peer)),
            PeerSpec::Cidr(n, h, b) => cidr(*n, *h, *b).contains(&peer),
        });
        f.dir == dir && proto_ok && port_ok && peer_ok
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn compiled_state_allows_exactly_the_profile(
        flows in prop::collection::vec(flow_spec(), 1..6),
        probes in prop::collection::vec((any::<bool>(), 0usize..4, any::<u8>(), prop_oneof![Just(6u8), Just(17), Just(1)], 1u16..260), 64),
    ) {
        // Validation rejects repeated flows; dropping repeats does not change what is allowed.
        let mut flows = flows;
        let mut seen = std::collections::BTreeSet::new();
        flows.retain(|f| {
            let mut peers: Vec<String> = f.peers.iter().map(peer_text).collect();
            peers.sort();
            seen.insert(format!("{:?}{:?}{peers:?}{:?}", f.dir, f.proto, f.ports))
        });
        let mut set = ProfileSet::default();
        let mut d = wardgate_policy::Diagnostics::default();
        set.insert("p.yaml", profile(&flows), &mut d);
        let state = compile(&site(), &set, "gw", 1).expect("random profile compiles");
        let policy = state.devices[0].policy_id;
        // Probe random flows, plus the edges of every rule's port ranges and CIDRs.
        let mut all = probes.clone();
        for f in &flows {
            for (lo, hi) in f.ports.clone().unwrap_or_default() {
                for port in [lo.saturating_sub(1).max(1), lo, hi, hi.saturating_add(1)] {
                    all.push((f.dir == Direction::FromDevice, 1, 10, 6, port));
                    all.push((f.dir == Direction::FromDevice, 2, 5, 17, port));
                }
            }
        }
        for (from, net, host, proto, port) in all {
            let dir = if from { Direction::FromDevice } else { Direction::ToDevice };
            let peer = match cidr(net, host, 32) { IpNet::V4(n) => IpAddr::V4(n.addr()), IpNet::V6(n) => IpAddr::V6(n.addr()) };
            let port = if proto == 1 { 0 } else { port };
            let want = allowed(&flows, dir, peer, proto, port);
            let got = lookup(&state, policy, dir, peer, proto, port).is_some();
            prop_assert_eq!(got, want, "{:?} {} proto {} port {} flows {:?}", dir, peer, proto, port, flows);
        }
    }
}

/// A flow with an app constraint compiles to a rule whose flows the datapath inspects (and its
/// port entries carry the mark); one without does not.
#[test]
fn app_constraints_mark_their_rules_for_inspection() {
    let tcp = |port: u16| FlowSpec {
        dir: Direction::FromDevice,
        proto: Proto::Tcp,
        peers: vec![PeerSpec::Group(0)],
        ports: Some(vec![(port, port)]),
    };
    let mut p = profile(&[tcp(104), tcp(443)]);
    p.flows[0].app = Some(App::Dicom {
        calling_ae: Some(wardgate_policy::span::Located::new(
            wardgate_policy::profile::Values::One("CT1".into()),
        )),
        called_ae: None,
    });
    let mut set = ProfileSet::default();
    let mut d = wardgate_policy::Diagnostics::default();
    set.insert("p.yaml", p, &mut d);
    let state = compile(&site(), &set, "gw", 1).expect("compiles");
    let rules = &state.policies[0].rules;
    let inspected: Vec<(u16, bool)> = rules
        .iter()
        .map(|r| (r.ports.unwrap().lo, r.inspect))
        .collect();
    assert_eq!(inspected, [(104, true), (443, false)]);
    let dicom = rules.iter().find(|r| r.inspect).unwrap().rule_id;
    assert!(state.ports.iter().any(|e| e.rule_id == dicom));
    for e in &state.ports {
        assert_eq!(e.inspect, e.rule_id == dicom, "{e:?}");
    }
}
