use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::{
    dicom::AssociateRq,
    flow::{DeviceRef, FlowOutcome, TcpOutcome},
    simulate::simulate,
};

const S: u64 = 1_000_000_000;
const SITE: &str = "site: t\ngroups:\n  pacs: [198.51.100.0/25]\n  dns: [2001:db8::53/128]\n";

fn rec(dir: FlowDirection, peer: IpAddr, proto: u8, port: u16, t: u64) -> FlowRecord {
    FlowRecord {
        device: DeviceRef {
            name: "CT 1".into(),
            id: None,
            mac: None,
        },
        direction: dir,
        device_addr: "192.0.2.10".parse().unwrap(),
        device_port: 40000,
        peer,
        peer_port: port,
        proto,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 2,
        bytes_out: 100,
        packets_in: 1,
        bytes_in: 60,
        first_seen_ns: 1_780_000_000 * S + t,
        last_seen_ns: 1_780_000_000 * S + t + S,
        tcp: (proto == 6).then_some(TcpOutcome::Established),
        outcome: crate::flow::FlowOutcome::Established,
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}

fn site() -> wardgate_policy::Site {
    wardgate_policy::parse_site("s.yaml", SITE).unwrap()
}

#[test]
fn groups_ranges_apps_and_comments() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut recs = vec![
        rec(FlowDirection::Opened, ip("198.51.100.5"), 6, 104, 0),
        rec(FlowDirection::Opened, ip("198.51.100.6"), 6, 104, S),
        rec(FlowDirection::Opened, ip("2001:db8::53"), 17, 53, 2 * S),
        rec(FlowDirection::Received, ip("203.0.113.9"), 6, 8080, 3 * S),
        rec(FlowDirection::Received, ip("203.0.113.9"), 6, 8081, 4 * S),
        rec(FlowDirection::Received, ip("203.0.113.9"), 6, 8082, 4 * S),
        rec(FlowDirection::Received, ip("203.0.113.9"), 6, 9000, 4 * S),
        rec(FlowDirection::Opened, ip("203.0.113.1"), 1, 0, 5 * S),
    ];
    for r in &mut recs[..2] {
        r.app = Some(AppIdentity::Dicom(AssociateRq {
            calling_ae: "CT_1".into(),
            called_ae: "PACS \"main\"".into(),
            ..AssociateRq::default()
        }));
    }
    let groups = Groups::from_site(&site());
    let y = propose("CT 1", &recs, &groups).yaml;
    let p = wardgate_policy::parse_profile("p.yaml", &y).unwrap_or_else(|e| panic!("{e}\n{y}"));
    assert!(
        wardgate_policy::validate_profile("p.yaml", &p).is_empty(),
        "{y}"
    );
    assert_eq!(p.name.value, "proposed-ct-1");
    assert_eq!(p.flows.len(), 4, "{y}");
    assert!(y.contains("peers: [\"group:pacs\"]\n    ports: [104]\n    app: {dicom: {calling_ae: \"CT_1\", called_ae: \"PACS \\\"main\\\"\"}}"), "{y}");
    assert!(
        y.contains("  # 2 flows, 320 bytes, first seen 2026-05-28T20:26:40Z"),
        "{y}"
    );
    assert!(y.contains("peers: [\"group:dns\"]"), "{y}");
    assert!(y.contains("direction: to-device\n    protocol: tcp\n    peers: [\"203.0.113.9\"]\n    ports: [\"8080-8082\", 9000]"), "{y}");
    assert!(
        y.contains("protocol: icmp\n    peers: [\"203.0.113.1\"]\n"),
        "{y}"
    );
    assert!(simulate(&p, Some(&site()), &recs).unwrap().is_empty());
}

#[test]
fn failed_contacts_are_left_out_and_listed_unless_asked_for() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut recs = vec![rec(FlowDirection::Opened, ip("198.51.100.5"), 6, 443, 0)];
    // A scan: unanswered SYNs to 40 other ports of another host, one refused.
    for p in 0..40u16 {
        let mut r = rec(FlowDirection::Opened, ip("203.0.113.7"), 6, 1000 + p, S);
        (r.tcp, r.outcome, r.packets_in, r.bytes_in) =
            (Some(TcpOutcome::NoAnswer), FlowOutcome::Unanswered, 0, 0);
        recs.push(r);
    }
    let mut rst = rec(FlowDirection::Opened, ip("198.51.100.5"), 6, 22, 2 * S);
    (rst.tcp, rst.outcome) = (Some(TcpOutcome::Refused), FlowOutcome::Refused);
    recs.push(rst);
    let p = propose("CT 1", &recs, &Groups::default());
    let prof = wardgate_policy::parse_profile("p.yaml", &p.yaml).unwrap();
    assert_eq!(prof.flows.len(), 1, "{}", p.yaml);
    assert!(p.yaml.contains("ports: [443]"), "{}", p.yaml);
    assert!(!p.yaml.contains("203.0.113.7\""), "{}", p.yaml);
    assert_eq!(p.flows, 1);
    assert_eq!(p.left_out.len(), 2);
    assert_eq!(p.left_out[1].ports.len(), 40);
    assert_eq!(p.left_out_flows(), 41);
    assert!(p.widened.is_empty());
    assert!(
        p.yaml
            .contains("# Left out: 41 flows that did not complete"),
        "{}",
        p.yaml
    );
    assert!(
        p.yaml
            .contains("#   from-device tcp 198.51.100.5 port 22: 1 refused\n"),
        "{}",
        p.yaml
    );
    assert!(
        p.yaml
            .contains("#   from-device tcp 203.0.113.7 ports 1000-1039: 40 unanswered\n"),
        "{}",
        p.yaml
    );
    // Asked for, they are in, and the range they make is called a widening.
    let all = propose_weighted(
        "CT 1",
        recs.iter().map(|r| (r, 1)),
        &Groups::default(),
        ProposeOptions {
            include_incomplete: true,
        },
    );
    assert!(all.left_out.is_empty());
    assert_eq!(all.flows, 42);
    assert!(
        all.yaml
            .contains("# Includes 41 flows that did not complete")
    );
    assert_eq!(all.widened.len(), 1, "{:?}", all.widened);
    assert!(
        all.widened[0].contains("40 distinct ports seen, written as the range 1000-1039"),
        "{:?}",
        all.widened
    );
    assert!(
        all.yaml.contains("  # WIDENED: 40 distinct ports seen"),
        "{}",
        all.yaml
    );
    // Nothing completed: a profile with no flows, still valid.
    let none = propose("CT 1", &recs[1..], &Groups::default());
    let prof = wardgate_policy::parse_profile("p.yaml", &none.yaml).unwrap();
    assert!(prof.flows.is_empty());
    assert!(wardgate_policy::validate_profile("p.yaml", &prof).is_empty());
}

#[test]
fn many_peers_collapse_to_their_24_and_many_ports_to_a_range() {
    let recs: Vec<FlowRecord> = (0..40u16)
        .map(|i| {
            rec(
                FlowDirection::Opened,
                IpAddr::from([203, 0, 113, (i % 20) as u8]),
                6,
                1000 + 3 * i,
                u64::from(i),
            )
        })
        .collect();
    let y = propose("CT 1", &recs, &Groups::default()).yaml;
    // Each peer used two ports, so the peers split into rules by port set; check one collapse:
    // a single rule with every peer and every port comes from records sharing a port set.
    let same: Vec<FlowRecord> = (0..40u16)
        .flat_map(|i| {
            (0..40u16).map(move |p| {
                rec(
                    FlowDirection::Opened,
                    IpAddr::from([203, 0, 113, i as u8]),
                    6,
                    2000 + 2 * p,
                    0,
                )
            })
        })
        .collect();
    let y2 = propose("CT 1", &same, &Groups::default()).yaml;
    assert!(
        y2.contains("peers: [\"203.0.113.0/24\"]\n    ports: [\"2000-2078\"]"),
        "{y2}"
    );
    // Both widenings are said in the YAML.
    assert!(
        y2.contains("  # WIDENED: 40 addresses seen in 203.0.113.0/24, written as the whole /24"),
        "{y2}"
    );
    assert!(
        y2.contains(
            "  # WIDENED: 40 distinct ports seen, written as the range 2000-2078 (79 ports)"
        ),
        "{y2}"
    );
    assert!(
        y2.contains("# Widened (these rules allow more than was seen):"),
        "{y2}"
    );
    for text in [y, y2] {
        let p = wardgate_policy::parse_profile("p.yaml", &text).unwrap();
        assert!(
            wardgate_policy::validate_profile("p.yaml", &p).is_empty(),
            "{text}"
        );
    }
}

fn any_record() -> impl Strategy<Value = FlowRecord> {
    let peer = prop_oneof![
        (0u8..=255).prop_map(|h| IpAddr::from([198, 51, 100, h])),
        (0u8..=40).prop_map(|h| IpAddr::from([203, 0, 113, h])),
        (0u16..=300).prop_map(|h| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, h])),
    ];
    let proto = prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(58u8), Just(47u8)];
    (any::<bool>(), peer, proto, 1u16..=65535, 0u64..86_400).prop_map(
        |(opened, peer, proto, port, t)| {
            let dir = if opened {
                FlowDirection::Opened
            } else {
                FlowDirection::Received
            };
            let port = if proto == 6 || proto == 17 { port } else { 0 };
            rec(dir, peer, proto, port, t * S)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A profile proposed from a capture validates, blocks nothing in that capture when
    /// simulated, and blocks a flow outside it.
    #[test]
    fn a_proposal_passes_its_own_flows_and_blocks_others(recs in proptest::collection::vec(any_record(), 1..80)) {
        let site = site();
        let y = propose("CT 1", &recs, &Groups::from_site(&site)).yaml;
        let p = wardgate_policy::parse_profile("p.yaml", &y).map_err(|e| TestCaseError::fail(format!("{e}\n{y}")))?;
        prop_assert!(wardgate_policy::validate_profile("p.yaml", &p).is_empty(), "{}", y);
        let blocked = simulate(&p, Some(&site), &recs).unwrap();
        prop_assert!(blocked.is_empty(), "{:?}\n{}", blocked, y);
        // A peer in no rule (192.0.2.0/24 is never generated) on TCP: blocked either way.
        let outside = [
            rec(FlowDirection::Opened, "192.0.2.99".parse().unwrap(), 6, 443, 0),
            rec(FlowDirection::Received, "192.0.2.99".parse().unwrap(), 17, 69, 0),
        ];
        let blocked = simulate(&p, Some(&site), &outside).unwrap();
        prop_assert_eq!(blocked.len(), 2, "{}", y);
    }
}

#[test]
fn simulate_applies_the_application_rule_to_the_recorded_identities() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let dicom = |calling: &str| {
        Some(AppIdentity::Dicom(AssociateRq {
            calling_ae: calling.into(),
            called_ae: "PACS".into(),
            ..AssociateRq::default()
        }))
    };
    let mut ok = rec(FlowDirection::Opened, ip("198.51.100.5"), 6, 104, 0);
    ok.app = dicom("CT_1");
    let mut bad = rec(FlowDirection::Opened, ip("198.51.100.5"), 6, 104, S);
    bad.app = dicom("CT_9");
    // Not inspected: nothing says the rule would refuse it.
    let unknown = rec(FlowDirection::Opened, ip("198.51.100.6"), 6, 104, 2 * S);
    let y = "name: ct\ndefault_mode: enforce\nflows:\n  - direction: from-device\n    \
             protocol: tcp\n    peers: [group:pacs]\n    ports: 104\n    \
             app: {dicom: {calling_ae: [CT_1, CT_2], called_ae: PACS}}\n";
    let p = wardgate_policy::parse_profile("p.yaml", y).unwrap();
    let blocked = simulate(&p, Some(&site()), &[ok, bad, unknown]).unwrap();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(
        (blocked[0].flows, blocked[0].app.as_deref()),
        (1, Some("dicom CT_9 -> PACS"))
    );
}

fn named(peer: &str, name: Option<&str>, port: u16, t: u64) -> FlowRecord {
    let mut r = rec(FlowDirection::Opened, peer.parse().unwrap(), 6, port, t);
    r.peer_name = name.map(str::to_string);
    r
}

#[test]
fn peers_reached_by_name_become_one_dns_peer_with_their_addresses_in_a_comment() {
    let api = Some("api.vendor.example");
    let recs = vec![
        // A name whose address rotated three times: one `dns:` peer, one rule.
        named("203.0.113.7", api, 443, 0),
        named("203.0.113.8", api, 443, S),
        named("198.51.100.200", api, 443, 2 * S),
        // Mixed: one flow to this address had no name, so the address stays.
        named("203.0.113.50", Some("cdn.vendor.example"), 443, 3 * S),
        named("203.0.113.50", None, 443, 4 * S),
        // An address in a site group keeps its group, name or not.
        named("198.51.100.5", Some("pacs.example"), 104, 5 * S),
    ];
    let y = propose("CT 1", &recs, &Groups::from_site(&site())).yaml;
    let p = wardgate_policy::parse_profile("p.yaml", &y).unwrap_or_else(|e| panic!("{e}\n{y}"));
    assert!(
        wardgate_policy::validate_profile("p.yaml", &p).is_empty(),
        "{y}"
    );
    assert_eq!(p.flows.len(), 2, "{y}");
    assert!(
        y.contains("peers: [\"dns:api.vendor.example\", \"203.0.113.50\"]\n    ports: [443]"),
        "{y}"
    );
    assert!(
        y.contains("# dns:api.vendor.example seen at 198.51.100.200, 203.0.113.7, 203.0.113.8\n"),
        "{y}"
    );
    assert!(y.contains("peers: [\"group:pacs\"]"), "{y}");
    for addr in ["203.0.113.7", "203.0.113.8", "198.51.100.200"] {
        assert!(
            !y.contains(&format!("\"{addr}\"")),
            "{addr} is a peer:\n{y}"
        );
    }
    assert!(
        !y.contains("pacs.example") && !y.contains("seen at 198.51.100.5"),
        "{y}"
    );
    // The proposal passes its own flows, and a name it never saw is blocked.
    assert!(simulate(&p, Some(&site()), &recs).unwrap().is_empty());
    let other = named("203.0.113.99", Some("evil.example"), 443, 6 * S);
    let blocked = simulate(&p, Some(&site()), &[other]).unwrap();
    assert_eq!(blocked.len(), 1);
}

#[test]
fn simulate_allows_a_named_flow_by_exact_name_or_wildcard_and_nothing_else() {
    let profile = |peer: &str| {
        let y = format!(
            "name: p\nflows:\n  - name: cloud\n    direction: from-device\n    protocol: tcp\n    \
             peers: [\"{peer}\"]\n    ports: [443]\n"
        );
        wardgate_policy::parse_profile("p.yaml", &y).unwrap_or_else(|e| panic!("{e}\n{y}"))
    };
    let flows = [
        named("203.0.113.7", Some("api.vendor.example"), 443, 0),
        named("203.0.113.8", Some("eu.api.vendor.example"), 443, S),
        // No name: an address is not a name.
        named("203.0.113.9", None, 443, 2 * S),
        // The right name on the wrong port.
        named("203.0.113.7", Some("api.vendor.example"), 8443, 3 * S),
    ];
    let blocked_peers = |peer: &str| -> Vec<(String, u16)> {
        simulate(&profile(peer), None, &flows)
            .unwrap()
            .iter()
            .map(|b| (b.peer.to_string(), b.port))
            .collect()
    };
    let mut exact = blocked_peers("dns:api.vendor.example");
    exact.sort();
    assert_eq!(
        exact,
        [
            ("203.0.113.7".to_string(), 8443),
            ("203.0.113.8".to_string(), 443),
            ("203.0.113.9".to_string(), 443)
        ]
    );
    let mut wild = blocked_peers("dns:*.vendor.example");
    wild.sort();
    assert_eq!(
        wild,
        [
            ("203.0.113.7".to_string(), 8443),
            ("203.0.113.9".to_string(), 443)
        ]
    );
}
