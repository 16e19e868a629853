//! `dns:` peers compile with their resolver group (issue 21 point 1): the name's peer set
//! carries the rules that name it, the resolvers are the profile's `dns_resolvers` group or
//! the site's `dns`; without either the profile is refused at the peer's position.

use wardgate_policy::{
    Direction, ProfileSet, compile_detailed,
    dns::{dns_name_id, name_matches},
    lower::lookup,
    parse_profile, parse_site, validate,
};

const PROFILE: &str = "\
name: pump
default_mode: enforce
flows:
  - name: cloud
    direction: from-device
    protocol: tcp
    peers: [dns:api.vendor.example, 'dns:*.cdn.example']
    ports: 443
  - name: time
    direction: from-device
    protocol: udp
    peers: [dns:API.vendor.example]
    ports: 123
  - name: resolver
    direction: from-device
    protocol: udp
    peers: [group:dns]
    ports: 53
";

fn site_yaml(groups: &str) -> String {
    format!(
        "site: s\ngroups:\n{groups}gateways:\n  - {{name: gw, interfaces: [eth1]}}\n\
         devices:\n  - {{name: p1, mac: 02:00:00:00:00:01, addresses: [192.0.2.10], profile: pump, gateway: gw}}\n"
    )
}

fn rid(s: &wardgate_policy::DesiredState, name: &str) -> u32 {
    s.policies[0]
        .rules
        .iter()
        .find(|r| r.name == name)
        .unwrap()
        .rule_id
}

fn set(yaml: &str) -> ProfileSet {
    let mut set = ProfileSet::default();
    let mut d = wardgate_policy::Diagnostics::default();
    set.insert(
        "pump.yaml",
        parse_profile("pump.yaml", yaml).unwrap(),
        &mut d,
    );
    assert!(d.is_empty(), "{d}");
    set
}

#[test]
fn dns_peers_lower_to_names_with_their_rules_and_the_resolver_group() {
    let site = parse_site(
        "s.yaml",
        &site_yaml("  dns: [198.51.100.53/32, 2001:db8:100::53/128]\n"),
    )
    .unwrap();
    let c = compile_detailed("s.yaml", &site, &set(PROFILE), "gw", 1).unwrap();
    assert!(c.unresolved.is_empty(), "{:?}", c.unresolved);
    let s = &c.state;
    let policy = s.policies[0].policy_id;
    let resolvers: Vec<String> = s.dns.resolvers.iter().map(|r| r.cidr.to_string()).collect();
    assert_eq!(resolvers, ["198.51.100.53/32", "2001:db8:100::53/128"]);
    assert!(s.dns.resolvers.iter().all(|r| r.policy_id == policy));
    let names: Vec<&str> = s.dns.names.iter().map(|n| n.name.as_str()).collect();
    // Case folded: `API.vendor.example` is the same name as `api.vendor.example`.
    assert_eq!(names, ["*.cdn.example", "api.vendor.example"]);
    let api = &s.dns.names[1];
    assert_eq!(api.name_id, dns_name_id("api.vendor.example"));
    assert_eq!(api.direction, Direction::FromDevice);
    // The name's peer set holds both rules that name it, and nothing else.
    let rule = |set: u32, proto: u8, port: u16| {
        s.ports
            .iter()
            .find(|p| {
                p.peer_set == set
                    && p.proto == Some(proto)
                    && p.port.is_some_and(|pp| pp.value == port && pp.len == 16)
            })
            .map(|p| p.rule_id)
    };
    let cloud = rid(s, "cloud");
    let time = rid(s, "time");
    assert_eq!(rule(api.peer_set, 6, 443), Some(cloud));
    assert_eq!(rule(api.peer_set, 17, 123), Some(time));
    assert_eq!(rule(api.peer_set, 17, 53), None);
    let cdn = &s.dns.names[0];
    assert_eq!(rule(cdn.peer_set, 6, 443), Some(cloud));
    assert_eq!(rule(cdn.peer_set, 17, 123), None);
    // The names' sets are not reachable by address: the address lookup knows only the resolver.
    assert_eq!(
        lookup(
            s,
            policy,
            Direction::FromDevice,
            "198.51.100.53".parse().unwrap(),
            17,
            53
        ),
        Some(rid(s, "resolver"))
    );
    assert_eq!(
        lookup(
            s,
            policy,
            Direction::FromDevice,
            "203.0.113.7".parse().unwrap(),
            6,
            443
        ),
        None
    );
    assert!(name_matches(&cdn.name, "eu.cdn.example"));
    // Through JSON (the last-known-good file) unchanged.
    let back = wardgate_policy::DesiredState::from_json(&s.to_json()).unwrap();
    assert_eq!(&back, s);
}

#[test]
fn a_profile_group_names_the_resolvers() {
    let yaml = PROFILE.replace(
        "default_mode: enforce\n",
        "default_mode: enforce\ndns_resolvers: lab-dns\n",
    );
    let site = parse_site(
        "s.yaml",
        &site_yaml("  dns: [198.51.100.53/32]\n  lab-dns: [203.0.113.53/32]\n"),
    )
    .unwrap();
    let c = compile_detailed("s.yaml", &site, &set(&yaml), "gw", 1).unwrap();
    let resolvers: Vec<String> = c
        .state
        .dns
        .resolvers
        .iter()
        .map(|r| r.cidr.to_string())
        .collect();
    assert_eq!(resolvers, ["203.0.113.53/32"]);
    // An unknown group there is an error at its position.
    let site = parse_site("s.yaml", &site_yaml("  dns: [198.51.100.53/32]\n")).unwrap();
    let report = validate("s.yaml", &site, &set(&yaml)).to_string();
    assert!(
        report.contains("pump.yaml:3:16: error: dns_resolvers: unknown group `lab-dns`"),
        "{report}"
    );
}

#[test]
fn a_dns_peer_without_resolvers_is_an_error_at_the_peer() {
    let yaml = PROFILE.replace("[group:dns]", "[198.51.100.53]");
    let site = parse_site("s.yaml", &site_yaml("  pacs: [198.51.100.10/32]\n")).unwrap();
    let report = validate("s.yaml", &site, &set(&yaml)).to_string();
    assert!(
        report.contains("pump.yaml:7:13: error: `dns:api.vendor.example` has no resolver group"),
        "{report}"
    );
    assert!(
        report.contains("set `dns_resolvers: GROUP` in profile `pump`"),
        "{report}"
    );
    assert!(compile_detailed("s.yaml", &site, &set(&yaml), "gw", 1).is_err());
    // A malformed name is refused where it stands.
    let bad = yaml.replace("dns:api.vendor.example", "dns:api..example");
    let p = parse_profile("pump.yaml", &bad).unwrap();
    let report = wardgate_policy::validate_profile("pump.yaml", &p).to_string();
    assert!(
        report.contains("pump.yaml:7:13: error: `dns:api..example` is not a DNS name"),
        "{report}"
    );
}
