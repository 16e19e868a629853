use std::net::IpAddr;

use super::*;
use crate::{
    app::AppIdentity,
    flow::{FlowRecord, TcpOutcome},
    hl7::Hl7Header,
};

const S: u64 = 1_000_000_000;
const H: u64 = 3600 * S;

fn rec(peer: &str, proto: u8, port: u16, t: u64, bytes: u64) -> FlowRecord {
    FlowRecord {
        device: DeviceRef {
            name: "pump-1".into(),
            id: Some(1),
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.10".parse().unwrap(),
        device_port: 40000,
        peer: peer.parse().unwrap(),
        peer_port: port,
        proto,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 1,
        bytes_out: bytes,
        packets_in: 1,
        bytes_in: 0,
        first_seen_ns: t,
        last_seen_ns: t + S,
        tcp: (proto == 6).then_some(TcpOutcome::Established),
        outcome: crate::flow::FlowOutcome::Established,
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}

#[test]
fn peers_services_protocols_apps_and_periodicity() {
    let mut recs: Vec<FlowRecord> = (0..10)
        .map(|i| rec("198.51.100.53", 17, 53, i * 60 * S, 100))
        .collect();
    let mut hl7 = rec("198.51.100.7", 6, 2575, 30 * S, 5000);
    hl7.app = Some(AppIdentity::Hl7(Hl7Header {
        field_separator: '|',
        encoding_characters: "^~\\&".into(),
        sending_application: "PUMP".into(),
        sending_facility: "ICU".into(),
        receiving_application: "EMR".into(),
        receiving_facility: "HOSP".into(),
        message_type: "ORU^R01".into(),
        version: "2.6".into(),
        mllp: true,
    }));
    recs.push(hl7);
    let site =
        wardgate_policy::parse_site("s.yaml", "site: t\ngroups:\n  dns: [198.51.100.53/32]\n")
            .unwrap();
    let b = baselines(
        &recs,
        &Groups::from_site(&site),
        &Limits::default(),
        Window {
            start_ns: 0,
            end_ns: 600 * S,
        },
    );
    assert_eq!(b.len(), 1);
    let b = &b[0];
    assert_eq!((b.flows, b.bytes_out), (11, 6000));
    let dns = &b.peers[0];
    assert_eq!((dns.group.as_deref(), dns.flows), (Some("dns"), 10));
    assert!(dns.period.as_ref().unwrap().periodic);
    assert_eq!(b.peers[1].group, None);
    assert_eq!(b.services.len(), 2);
    assert_eq!(
        (b.services[0].proto, b.services[0].port, b.services[0].flows),
        (6, 2575, 1)
    );
    assert_eq!(b.protocols.get("udp"), Some(&10));
    assert_eq!(b.apps[0].identity, "hl7 PUMP/ICU -> EMR/HOSP ORU^R01");
    assert_eq!(b.tcp.established, 1);
}

#[test]
fn hourly_median_and_mad_over_days_with_silent_days_as_zero() {
    // Hour 9 on three of four days: 100, 100, 400 bytes; day 4 silent.
    let recs = vec![
        rec("203.0.113.1", 6, 443, 9 * H, 100),
        rec("203.0.113.1", 6, 443, 33 * H, 100),
        rec("203.0.113.1", 6, 443, 57 * H, 400),
    ];
    let b = &baselines(
        &recs,
        &Groups::default(),
        &Limits::default(),
        Window {
            start_ns: 0,
            end_ns: 96 * H - 1,
        },
    )[0];
    let nine = b.hourly.iter().find(|h| h.hour == 9).unwrap();
    assert_eq!(nine.days, 4);
    assert_eq!((nine.bytes_median, nine.bytes_mad), (100.0, 50.0));
    let ten = b.hourly.iter().find(|h| h.hour == 10).unwrap();
    assert_eq!((ten.bytes_median, ten.bytes_mad), (0.0, 0.0));
}

/// A stream held open for three days (a monitor's waveforms to its central station) is one
/// flow, one peer and one start, and its bytes are in every hour it moved them, as the live
/// `volume` counts them from its continuations: the hour after its start is no silent hour.
#[test]
fn a_long_flows_continuations_add_bytes_to_their_hours_and_nothing_else() {
    let mut recs = vec![rec("198.51.100.40", 6, 2000, 0, 600)];
    for m in 1..72 * 60u64 {
        let mut c = rec("198.51.100.40", 6, 2000, m * 60 * S, 600);
        c.continuation = true;
        recs.push(c);
    }
    let b = &baselines(
        &recs,
        &Groups::default(),
        &Limits::default(),
        Window {
            start_ns: 0,
            end_ns: 72 * H - 1,
        },
    )[0];
    assert_eq!(b.flows, 1);
    assert_eq!((b.peers.len(), b.peers[0].flows), (1, 1));
    assert_eq!(b.peers[0].bytes, 72 * 60 * 600);
    let ten = b.hourly.iter().find(|h| h.hour == 10).unwrap();
    assert_eq!((ten.bytes_median, ten.flows_median), (60.0 * 600.0, 0.0));
}

#[test]
fn sets_are_bounded_and_overflow_counted_and_small() {
    let recs: Vec<FlowRecord> = (0..500u32)
        .map(|i| {
            let peer = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]).to_string();
            rec(&peer, 6, 1000 + i as u16, u64::from(i) * S, 10)
        })
        .collect();
    let l = Limits::default();
    let b = &baselines(
        &recs,
        &Groups::default(),
        &l,
        Window {
            start_ns: 0,
            end_ns: 30 * 24 * H,
        },
    )[0];
    assert_eq!(b.peers.len(), l.peers);
    assert_eq!(b.peers_overflow, 500 - l.peers as u64);
    assert_eq!(b.services.len(), l.services);
    assert_eq!(b.services_overflow, 500 - l.services as u64);
    assert_eq!(b.hourly.len(), 24);
    assert!(b.hourly.iter().all(|h| h.days as usize == l.days));
    let size = serde_json::to_vec(b).unwrap().len();
    assert!(size < 16 * 1024, "baseline is {size} bytes");
}

#[test]
fn a_baseline_from_aggregates_is_the_baseline_from_the_records() {
    // DNS every minute for two days, an HL7 flow with an identity, HTTPS at various hours.
    let mut recs: Vec<FlowRecord> = (0..2 * 24 * 60)
        .map(|i| rec("198.51.100.53", 17, 53, i * 60 * S, 100 + i % 7))
        .collect();
    let mut hl7 = rec("198.51.100.7", 6, 2575, 30 * S, 5000);
    hl7.app = Some(AppIdentity::Hl7(Hl7Header {
        field_separator: '|',
        encoding_characters: "^~\\&".into(),
        sending_application: "PUMP".into(),
        sending_facility: "ICU".into(),
        receiving_application: "EMR".into(),
        receiving_facility: "HOSP".into(),
        message_type: "ORU^R01".into(),
        version: "2.6".into(),
        mllp: true,
    }));
    recs.push(hl7);
    recs.extend((0..40).map(|i| rec("203.0.113.9", 6, 443, i * 77 * 60 * S, 1000 * i)));
    // Periodicity keeps the first starts per peer: the records must come in time order for
    // the two to keep the same ones.
    recs.sort_by_key(|r| r.first_seen_ns);
    let groups = Groups::from_pairs([("dns", "198.51.100.53/32")]);
    let (l, w) = (
        Limits::default(),
        Window {
            start_ns: 0,
            end_ns: 48 * H - 1,
        },
    );
    let from_records = baselines(&recs, &groups, &l, w).remove(0);
    let mut b = BaselineBuilder::new(recs[0].device.clone(), l);
    for a in crate::aggregate::aggregate(&recs) {
        b.add_aggregate(&a);
    }
    let from_aggregates = b.finish(&groups, w);
    assert_eq!(from_aggregates, from_records);
    assert_eq!(from_aggregates.peers[0].group.as_deref(), Some("dns"));
}
