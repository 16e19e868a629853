//! The typed path: validation returns a `ValidSite` with typed values, or exactly the
//! diagnostics `validate_all` reports; compiling a `ValidSite` never panics.

use std::net::IpAddr;

use proptest::prelude::*;
use wardgate_policy::{
    CompileError, Direction, Mode, ProfileSet, Proto, StableIds, ValidPeer, compile_detailed,
    compile_valid,
    desired::{MacAddr, PortRange},
    parse_profile, parse_site,
    profile::{Flow, PortItem, Ports, Profile},
    site::{Device, Gateway, Site},
    span::Located,
    validate_all, validate_site,
};

const PROFILE: &str = "\
name: ct
default_mode: monitor
conntrack: {udp_idle_s: 45}
flows:
  - name: dicom
    direction: from-device
    protocol: tcp
    peers: [group:pacs, same-profile]
    ports: [104, \"11112-11120\"]
  - direction: from-device
    protocol: udp
    peers: [any, dns:ntp.example.org]
    ports: 123
  - direction: to-device
    protocol: icmp
    peers: [198.51.100.0/24]
    idle_timeout_s: 5
";

const SITE: &str = "\
site: test
groups:
  pacs: [198.51.100.10/32, 2001:db8::/64]
  dns: [198.51.100.53/32]
gateways:
  - {name: gw, interfaces: [eth1]}
devices:
  - {name: ct-1, mac: 02:00:00:00:00:01, addresses: [192.0.2.10], profile: ct, gateway: gw}
  - {id: 40, name: ct-2, mac: 02-00-00-00-00-02, addresses: [' 192.0.2.11 ', 2001:db8:1::2], profile: ct, mode: enforce, gateway: gw}
";

fn set(yaml: &str) -> ProfileSet {
    let mut set = ProfileSet::default();
    let mut d = wardgate_policy::Diagnostics::default();
    set.insert("ct.yaml", parse_profile("ct.yaml", yaml).unwrap(), &mut d);
    assert!(d.is_empty());
    set
}

#[test]
fn validation_produces_the_typed_site() {
    let set = set(PROFILE);
    let site = parse_site("s.yaml", SITE).unwrap();
    let v = validate_site("s.yaml", &site, &set).unwrap_or_else(|d| panic!("{d}"));

    assert_eq!(v.name(), "test");
    assert_eq!(v.gateways().len(), 1);
    assert_eq!(v.gateways()[0].interfaces, ["eth1"]);
    assert_eq!(
        v.groups()["pacs"],
        [
            "198.51.100.10/32".parse().unwrap(),
            "2001:db8::/64".parse().unwrap()
        ]
    );
    let [a, b] = v.devices() else {
        panic!("{:?}", v.devices())
    };
    assert_eq!((a.id, b.id), (1, 40), "position, then the explicit id");
    assert_eq!(a.mac, MacAddr([2, 0, 0, 0, 0, 1]));
    assert_eq!(b.mac, MacAddr([2, 0, 0, 0, 0, 2]));
    assert_eq!(
        b.addresses,
        [
            "192.0.2.11".parse::<IpAddr>().unwrap(),
            "2001:db8:1::2".parse().unwrap()
        ]
    );
    assert_eq!(
        (a.mode, b.mode),
        (Mode::Monitor, Mode::Enforce),
        "the profile's default, then the device's own"
    );
    assert!(a.fail_open, "profiles fail open by default");

    let p = &v.profiles()["ct"];
    let [dicom, ntp, icmp] = &p.flows[..] else {
        panic!("{:?}", p.flows)
    };
    assert_eq!(
        (dicom.key.as_str(), dicom.name.as_str()),
        ("dicom", "dicom")
    );
    assert_eq!((ntp.key.as_str(), ntp.name.as_str()), ("#2", "ct#2"));
    assert_eq!(dicom.proto, Proto::Tcp);
    assert_eq!(
        dicom.ports,
        [
            PortRange::single(104),
            PortRange {
                lo: 11112,
                hi: 11120
            }
        ]
    );
    assert_eq!(
        dicom.peers,
        [
            ValidPeer::Group {
                name: "pacs".into(),
                nets: v.groups()["pacs"].clone()
            },
            ValidPeer::SameProfile
        ]
    );
    assert_eq!(
        ntp.peers,
        [ValidPeer::Any, ValidPeer::Dns("ntp.example.org".into())]
    );
    assert_eq!(ntp.idle_timeout_s, 45, "the profile's udp timeout");
    assert_eq!(icmp.direction, Direction::ToDevice);
    assert_eq!(icmp.idle_timeout_s, 5);
    assert!(icmp.ports.is_empty());

    // The wrappers and the typed path compile the same state.
    let ids = StableIds::positional_of(&v).unwrap();
    assert_eq!(ids, StableIds::positional(&set).unwrap());
    let typed = compile_valid(&v, &ids, "gw", 3).unwrap();
    let wrapped = compile_detailed("s.yaml", &site, &set, "gw", 3).unwrap();
    assert_eq!(typed.state, wrapped.state);
    // The `dns:` peer is enforced: its name, with the site's `dns` group as resolvers.
    assert!(typed.unresolved.is_empty(), "{:?}", typed.unresolved);
    assert_eq!(typed.state.dns.names.len(), 1);
    assert_eq!(typed.state.dns.names[0].name, "ntp.example.org");
    assert_eq!(
        typed.state.dns.resolvers[0].cidr,
        "198.51.100.53/32".parse().unwrap()
    );
    assert!(matches!(
        compile_valid(&v, &ids, "gw-9", 3),
        Err(CompileError::UnknownGateway { .. })
    ));
    assert!(matches!(
        compile_valid(&v, &StableIds::default(), "gw", 3),
        Err(CompileError::MissingId { .. })
    ));
}

#[test]
fn an_invalid_site_gives_the_diagnostics_of_validate_all() {
    let set = set(PROFILE);
    let broken = SITE
        .replace("02:00:00:00:00:01", "02:00:00:00:zz:01")
        .replace("198.51.100.10/32", "198.51.100.10/33")
        .replace("profile: ct, mode", "profile: cx, mode");
    let site = parse_site("s.yaml", &broken).unwrap();
    let diags = validate_site("s.yaml", &site, &set).unwrap_err();
    assert_eq!(diags, validate_all("s.yaml", &site, &set));
    let text = diags.to_string();
    assert!(text.contains("is not a MAC address"), "{text}");
    assert!(text.contains("unknown profile `cx`"), "{text}");
    assert!(text.contains("group `pacs`: `198.51.100.10/33`"), "{text}");
}

// Random sites and profiles, mostly valid, from pools of good and (less often) bad values.
const GOOD_PEERS: &[&str] = &[
    "any",
    "same-profile",
    "group:pacs",
    "dns:x.example",
    "198.51.100.0/24",
    "2001:db8::/48",
];
const BAD_PEERS: &[&str] = &["group:missing", "198.51.100.7/24", "bad peer"];
const PROFILES: &[&str] = &["a", "b", "c"];
const GATEWAYS: &[&str] = &["gw-1", "gw-2", "gw-3"];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(pool).prop_map(str::to_string)
}

/// A good value 29 times in 30.
fn mostly<T: std::fmt::Debug + Clone + 'static>(
    good: impl Strategy<Value = T> + 'static,
    bad: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = T> {
    prop_oneof![29 => good, 1 => bad]
}

fn flow() -> impl Strategy<Value = Flow> {
    let range = mostly(
        (1i64..2000, 1i64..70).prop_map(|(lo, w)| format!("{lo}-{}", lo + w - 1)),
        prop_oneof![
            Just("0".to_string()),
            Just("9-1".to_string()),
            Just("x".to_string())
        ],
    );
    (
        prop_oneof![Just(Direction::FromDevice), Just(Direction::ToDevice)],
        prop_oneof![
            Just(Proto::Tcp),
            Just(Proto::Udp),
            Just(Proto::Icmp),
            Just(Proto::Any)
        ],
        prop::collection::vec(mostly(pick(GOOD_PEERS), pick(BAD_PEERS)), 1..3),
        prop::option::of(prop::collection::vec(range, 1..3)),
        prop::option::of(mostly(1u32..600, Just(0))),
        mostly(Just(false), Just(true)),
    )
        .prop_map(
            |(direction, proto, peers, ports, idle, keep_icmp_ports)| Flow {
                name: String::new(),
                direction,
                protocol: Located::new(proto),
                peers: peers.into_iter().map(Located::new).collect(),
                ports: ports
                    .filter(|_| proto != Proto::Icmp || keep_icmp_ports)
                    .map(|p| {
                        Located::new(Ports::List(p.into_iter().map(PortItem::Text).collect()))
                    }),
                idle_timeout_s: idle.map(Located::new),
                app: None,
            },
        )
}

fn profile_set() -> impl Strategy<Value = ProfileSet> {
    prop::collection::vec(prop::collection::vec(flow(), 0..4), 2..=PROFILES.len()).prop_map(|ps| {
        let mut set = ProfileSet::default();
        let mut d = wardgate_policy::Diagnostics::default();
        for (name, flows) in PROFILES.iter().zip(ps) {
            let p = Profile {
                name: Located::new(name.to_string()),
                description: String::new(),
                vendors: vec![],
                models: vec![],
                default_mode: Mode::Learn,
                fail_mode: Default::default(),
                baseline_sensitivity: Default::default(),
                detection: Default::default(),
                conntrack: Default::default(),
                dns_resolvers: None,
                flows,
            };
            set.insert(&format!("{name}.yaml"), p, &mut d);
        }
        set
    })
}

fn site() -> impl Strategy<Value = Site> {
    let device = (
        mostly(0u8..2, Just(2)), // no id, an id of its own, or id 1 (the first's position)
        any::<bool>(),
        mostly(Just(false), Just(true)),
        mostly(Just(false), Just(true)),
        pick(&PROFILES[..2]),
        mostly(pick(&GATEWAYS[..2]), pick(GATEWAYS)),
    );
    (
        prop::collection::vec(
            mostly(
                pick(&["198.51.100.10/32", "2001:db8::/64"]),
                pick(&["any", "x"]),
            ),
            1..3,
        ),
        mostly(Just(false), Just(true)),
        prop::collection::vec(device, 0..5),
    )
        .prop_map(|(pacs, one_gateway, devices)| Site {
            site: "s".into(),
            groups: [
                (
                    "pacs".to_string(),
                    pacs.into_iter().map(Located::new).collect(),
                ),
                // The resolvers `dns:` peers learn from.
                (
                    "dns".to_string(),
                    vec![Located::new("198.51.100.53/32".to_string())],
                ),
            ]
            .into(),
            gateways: GATEWAYS[..if one_gateway { 1 } else { 2 }]
                .iter()
                .map(|g| Gateway {
                    name: Located::new(g.to_string()),
                    interfaces: vec!["eth1".into()],
                    location: String::new(),
                })
                .collect(),
            devices: devices
                .into_iter()
                .enumerate()
                .map(|(i, (explicit, v6, bad_mac, bad_addr, profile, gateway))| {
                    let id = match explicit {
                        0 => None,
                        1 => Some(100 + i as u32),
                        _ => Some(1),
                    };
                    let mut addresses = vec![format!("192.0.2.{}", i + 1)];
                    if v6 {
                        addresses.push(format!("2001:db8:1::{}", i + 1));
                    }
                    if bad_addr {
                        addresses.push("192.0.2.1".into()); // a duplicate, or its own twice
                    }
                    Device {
                        id,
                        name: Located::new(format!("d{i}")),
                        mac: Located::new(if bad_mac {
                            "02:00".to_string()
                        } else {
                            format!("02:00:00:00:00:{i:02x}")
                        }),
                        addresses: addresses.into_iter().map(Located::new).collect(),
                        profile: Located::new(profile),
                        mode: None,
                        gateway: Located::new(gateway),
                        location: String::new(),
                        asset_id: String::new(),
                    }
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Validation succeeds exactly when `validate_all` finds nothing, and then compiling any
    /// gateway name returns a state or a typed error, never a panic and never `Invalid`.
    #[test]
    fn compiling_a_valid_site_never_panics(set in profile_set(), site in site()) {
        let all = validate_all("s.yaml", &site, &set);
        match validate_site("s.yaml", &site, &set) {
            Err(d) => {
                prop_assert!(!d.is_empty());
                prop_assert_eq!(d, all);
            }
            Ok(v) => {
                prop_assert!(all.is_empty(), "{}", all);
                let ids = StableIds::positional_of(&v).unwrap();
                for g in GATEWAYS {
                    match compile_valid(&v, &ids, g, 1) {
                        Ok(c) => prop_assert_eq!(&c.state.gateway, g),
                        Err(CompileError::Invalid(d)) => prop_assert!(false, "{}", d),
                        Err(_) => {}
                    }
                }
            }
        }
    }
}
