use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::{
    dicom::AssociateRq,
    flow::{DeviceRef, TcpOutcome},
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
        rule: None,
        app: None,
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
    let y = propose("CT 1", &recs, &groups);
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
    let y = propose("CT 1", &recs, &Groups::default());
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
    let y2 = propose("CT 1", &same, &Groups::default());
    assert!(
        y2.contains("peers: [\"203.0.113.0/24\"]\n    ports: [\"2000-2078\"]"),
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
        let y = propose("CT 1", &recs, &Groups::from_site(&site));
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
