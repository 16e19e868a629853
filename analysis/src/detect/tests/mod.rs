//! Each detector on synthetic flow records: it fires on the pattern it is for, once after
//! aggregation, with its evidence, and stays quiet on the device's ordinary traffic.

use std::net::IpAddr;

mod dns;
mod floods;
mod scans;
mod threats;
mod tuning;

use super::*;
use crate::{
    decode::proto,
    flow::{DeviceRef, FlowDirection, FlowRecord, TcpOutcome},
};

const MS: u64 = 1_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn dev(name: &str, mac: &str) -> DeviceRef {
    DeviceRef {
        name: name.into(),
        id: None,
        mac: Some(mac.parse().unwrap()),
    }
}

fn pump() -> DeviceRef {
    dev("pump-1", "02:00:00:00:00:0a")
}

/// A flow the device opened.
fn opened(
    d: &DeviceRef,
    t_ns: u64,
    p: u8,
    peer: &str,
    port: u16,
    tcp: Option<TcpOutcome>,
) -> FlowRecord {
    let answered = matches!(tcp, Some(TcpOutcome::Established | TcpOutcome::Refused));
    FlowRecord {
        device: d.clone(),
        direction: FlowDirection::Opened,
        device_addr: ip("192.0.2.10"),
        device_port: 40000,
        peer: ip(peer),
        peer_port: port,
        proto: p,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 1,
        bytes_out: 60,
        packets_in: u64::from(answered),
        bytes_in: if answered { 60 } else { 0 },
        first_seen_ns: t_ns,
        last_seen_ns: t_ns + MS,
        tcp,
        outcome: crate::flow::FlowOutcome::of_record(
            p,
            FlowDirection::Opened,
            tcp,
            1,
            u64::from(answered),
            false,
        ),
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}

fn site() -> SiteFacts {
    let s = wardgate_policy::parse_site(
        "site.yaml",
        "site: t\ngroups:\n  pacs: [198.51.100.10/32]\ndevices:\n  - name: pump-1\n    mac: 02:00:00:00:00:0a\n    addresses: [192.0.2.10]\n    profile: infusion-pump\n    gateway: gw-1\n    location: Ward 3A, bed 12\n    asset_id: BME-1\n  - name: pacs-1\n    mac: 02:00:00:00:00:0b\n    addresses: [192.0.2.20]\n    profile: pacs\n    gateway: gw-1\n",
    )
    .unwrap();
    SiteFacts::from_site(&s)
}

fn run(site: SiteFacts, flows: &[FlowRecord], claims: &[AddressClaim]) -> Vec<Finding> {
    let cfg = DetectConfig::default();
    run_all(
        baseline_free(&cfg),
        site,
        Baselines::default(),
        cfg.aggregate,
        flows,
        claims,
    )
}

fn by(findings: &[Finding], detector: &str) -> Vec<Finding> {
    findings
        .iter()
        .filter(|f| f.detector == detector)
        .cloned()
        .collect()
}

/// A pump's ordinary day: HTTPS to its server, DNS and NTP, every minute.
fn ordinary(d: &DeviceRef, minutes: u64) -> Vec<FlowRecord> {
    let mut v = Vec::new();
    for m in 0..minutes {
        let t = m * 60 * NS;
        v.push(opened(
            d,
            t,
            proto::TCP,
            "198.51.100.30",
            443,
            Some(TcpOutcome::Established),
        ));
        let mut dns = opened(d, t + MS, proto::UDP, "198.51.100.53", 53, None);
        dns.packets_in = 1;
        v.push(dns);
        let mut ntp = opened(d, t + 2 * MS, proto::UDP, "198.51.100.123", 123, None);
        ntp.packets_in = 1;
        v.push(ntp);
    }
    v
}

#[test]
fn ordinary_traffic_raises_nothing() {
    let flows = ordinary(&pump(), 24 * 60);
    let f = run(site(), &flows, &[]);
    assert!(f.is_empty(), "{f:#?}");
    // Without a site (general host thresholds) neither.
    assert!(run(SiteFacts::default(), &flows, &[]).is_empty());
}

#[test]
fn vertical_scan_is_one_finding_with_the_ports_and_count() {
    let d = pump();
    // 40 ports in 3 s, refused.
    let flows: Vec<_> = (0..40u16)
        .map(|i| {
            opened(
                &d,
                u64::from(i) * 75 * MS,
                proto::TCP,
                "198.51.100.10",
                20 + i,
                Some(TcpOutcome::Refused),
            )
        })
        .collect();
    let f = run(site(), &flows, &[]);
    let v = by(&f, "scan_vertical");
    assert_eq!(v.len(), 1, "{f:#?}");
    let v = &v[0];
    assert_eq!(v.peer, Some(ip("198.51.100.10")));
    // Raised at the 6th port within 2 s (a site device's burst count), then updated by each
    // new one; the evidence is the window holding the most (5 min: all 40, limit 8).
    assert_eq!(v.count, 35);
    assert_eq!(v.evidence.ports.len(), 40);
    let m = &v.evidence.metrics[0];
    assert_eq!(
        (m.name.as_str(), m.observed, m.threshold),
        ("distinct_ports", 40.0, Some(8.0))
    );
    assert_eq!(v.technique.id, "T1046");
    assert_eq!(v.severity, Severity::High);
    assert_eq!(v.action, "wardctl mode pump-1 quarantine");
    // The engine filled the device context from the site.
    assert_eq!(v.class.as_deref(), Some("infusion-pump"));
    assert_eq!(v.location.as_deref(), Some("Ward 3A, bed 12"));
    assert_eq!(v.asset_id.as_deref(), Some("BME-1"));
    assert_eq!(v.gateway.as_deref(), Some("gw-1"));
    assert!(
        v.summary.contains("40 tcp ports on 198.51.100.10"),
        "{}",
        v.summary
    );
    // A general host needs 15 in 5 min: 14 ports, 20 s apart (no burst), raise nothing.
    let h = dev("host-a", "02:00:00:00:01:01");
    let few: Vec<_> = (0..14u16)
        .map(|i| {
            opened(
                &h,
                u64::from(i) * 20 * NS,
                proto::TCP,
                "198.51.100.10",
                20 + i,
                Some(TcpOutcome::NoAnswer),
            )
        })
        .collect();
    assert!(by(&run(SiteFacts::default(), &few, &[]), "scan_vertical").is_empty());
}

/// Live, records reach the engine when their flow's fate is known, not in the order the flows
/// opened: the evidence window of a scan still starts before it ends (the controller refuses
/// an alert whose window does not, and the live finding was lost).
#[test]
fn a_scan_fed_out_of_time_order_has_a_window_that_starts_before_it_ends() {
    let d = pump();
    let cfg = DetectConfig::default();
    let mut engine = Engine::new(
        baseline_free(&cfg),
        site(),
        Baselines::default(),
        cfg.aggregate,
    );
    let mut found = Vec::new();
    for i in (0..10u16).rev() {
        let r = opened(
            &d,
            1_000 * MS + u64::from(i) * MS,
            proto::TCP,
            "198.51.100.10",
            20 + i,
            Some(TcpOutcome::Refused),
        );
        found.extend(engine.observe(&Observation::Flow(&r)));
    }
    let v: Vec<_> = found
        .iter()
        .filter(|f| f.detector == "scan_vertical")
        .collect();
    assert!(!v.is_empty(), "{found:#?}");
    for f in v {
        assert!(
            f.evidence.window_start_ns <= f.evidence.window_end_ns,
            "{:?}",
            f.evidence
        );
    }
}

#[test]
fn answered_ports_are_not_a_scan() {
    let d = pump();
    let flows: Vec<_> = (0..40u16)
        .map(|i| {
            opened(
                &d,
                u64::from(i) * MS,
                proto::TCP,
                "198.51.100.10",
                2000 + i,
                Some(TcpOutcome::Established),
            )
        })
        .collect();
    assert!(by(&run(site(), &flows, &[]), "scan_vertical").is_empty());
}

#[test]
fn ports_outside_the_window_do_not_add_up() {
    let d = pump();
    // 7 failed ports every 10 minutes, twice: never 8 inside 5 minutes, 14 in all (a slow scan
    // needs 16 within 4 h: `scans::a_slow_scan_is_caught_by_the_long_window`).
    let flows: Vec<_> = (0..14u16)
        .map(|i| {
            let t = u64::from(i / 7) * 600 * NS + u64::from(i % 7) * NS;
            opened(
                &d,
                t,
                proto::TCP,
                "198.51.100.10",
                100 + i,
                Some(TcpOutcome::NoAnswer),
            )
        })
        .collect();
    assert!(by(&run(site(), &flows, &[]), "scan_vertical").is_empty());
}

#[test]
fn horizontal_scan_names_the_port() {
    let d = pump();
    let flows: Vec<_> = (1..=30u8)
        .map(|i| {
            opened(
                &d,
                u64::from(i) * 100 * MS,
                proto::TCP,
                &format!("192.0.2.{}", 100 + i),
                445,
                Some(TcpOutcome::NoAnswer),
            )
        })
        .collect();
    let f = run(site(), &flows, &[]);
    let h = by(&f, "scan_horizontal");
    assert_eq!(h.len(), 1, "{f:#?}");
    assert_eq!(h[0].evidence.ports, vec![445]);
    assert_eq!(h[0].evidence.peers.len(), 30);
    assert_eq!(h[0].technique.id, "T0846");
    // SMB from a pump is also a class-protocol finding, one per peer.
    assert_eq!(by(&f, "class_protocol").len(), 30);
}

#[test]
fn trw_calls_a_device_after_three_failures_and_a_host_after_four() {
    let trw = trw::Trw::new(trw::TrwConfig::default());
    assert_eq!(trw.failures_to_detect(0.9), 3);
    assert_eq!(trw.failures_to_detect(0.8), 4);
    let d = pump();
    let fail = |i: u8, who: &DeviceRef| {
        opened(
            who,
            u64::from(i) * NS,
            proto::TCP,
            &format!("203.0.113.{i}"),
            80,
            Some(TcpOutcome::NoAnswer),
        )
    };
    let f = run(site(), &[fail(1, &d), fail(2, &d)], &[]);
    assert!(by(&f, "scan_trw").is_empty());
    let f = run(site(), &[fail(1, &d), fail(2, &d), fail(3, &d)], &[]);
    let t = by(&f, "scan_trw");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].evidence.metrics[0].observed, 3.0);
    let h = dev("host-a", "02:00:00:00:01:01");
    let three: Vec<_> = (1..=3).map(|i| fail(i, &h)).collect();
    assert!(by(&run(SiteFacts::default(), &three, &[]), "scan_trw").is_empty());
    let four: Vec<_> = (1..=4).map(|i| fail(i, &h)).collect();
    assert_eq!(
        by(&run(SiteFacts::default(), &four, &[]), "scan_trw").len(),
        1
    );
    // Successes in between pull the walk back: one failure in five never reaches the threshold
    // (half failing does, for a device: 0.5 is far from its theta0 of 0.9).
    let mixed: Vec<_> = (1..=40u8)
        .map(|i| {
            let out = if i % 5 != 0 {
                TcpOutcome::Established
            } else {
                TcpOutcome::NoAnswer
            };
            opened(
                &d,
                u64::from(i) * NS,
                proto::TCP,
                &format!("203.0.113.{i}"),
                443,
                Some(out),
            )
        })
        .collect();
    assert!(by(&run(site(), &mixed, &[]), "scan_trw").is_empty());
}

#[test]
fn fanout_to_new_peers() {
    let d = pump();
    let flows: Vec<_> = (1..=20u8)
        .map(|i| {
            opened(
                &d,
                u64::from(i) * NS,
                proto::TCP,
                &format!("203.0.113.{i}"),
                443,
                Some(TcpOutcome::Established),
            )
        })
        .collect();
    let f = run(site(), &flows, &[]);
    let o = by(&f, "fanout");
    assert_eq!(o.len(), 1, "{f:#?}");
    assert_eq!(o[0].evidence.metrics[0].observed, 20.0);
    assert_eq!(o[0].evidence.metrics[0].threshold, Some(15.0));
    // The same peers again an hour later are not new.
    let again: Vec<_> = flows
        .iter()
        .chain(
            flows
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.first_seen_ns += 3600 * NS;
                    r
                })
                .collect::<Vec<_>>()
                .iter(),
        )
        .cloned()
        .collect();
    assert_eq!(by(&run(site(), &again, &[]), "fanout")[0].count, 6);
}

#[test]
fn class_protocols_by_class() {
    let d = pump();
    let smb = opened(
        &d,
        0,
        proto::TCP,
        "198.51.100.10",
        445,
        Some(TcpOutcome::Established),
    );
    let f = run(site(), std::slice::from_ref(&smb), &[]);
    let c = by(&f, "class_protocol");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].technique.id, "T0886");
    assert_eq!(c[0].evidence.names, vec!["smb".to_string()]);
    assert_eq!(c[0].severity, Severity::High);
    // A PACS is a Windows server: exempt by default.
    let pacs = dev("pacs-1", "02:00:00:00:00:0b");
    let mut p = smb.clone();
    p.device = pacs;
    p.device_addr = ip("192.0.2.20");
    assert!(run(site(), &[p], &[]).is_empty());
    // Without a site there is no class to hold it against.
    assert!(
        by(
            &run(SiteFacts::default(), std::slice::from_ref(&smb), &[]),
            "class_protocol"
        )
        .is_empty()
    );
    // A class's own list replaces the default.
    let mut cfg = DetectConfig::default();
    cfg.class_protocol.classes.insert(
        "infusion-pump".into(),
        vec![class_protocol::Service {
            name: "http".into(),
            protocol: "tcp".into(),
            ports: vec![80],
        }],
    );
    let f = run_all(
        baseline_free(&cfg),
        site(),
        Baselines::default(),
        cfg.aggregate.clone(),
        &[smb],
        &[],
    );
    assert!(by(&f, "class_protocol").is_empty());
    // Telnet served by the pump (it answered) counts; a refused probe of it does not.
    let mut served = opened(
        &d,
        0,
        proto::TCP,
        "203.0.113.9",
        23,
        Some(TcpOutcome::Established),
    );
    served.direction = FlowDirection::Received;
    served.packets_out = 3;
    assert_eq!(
        by(&run(site(), &[served.clone()], &[]), "class_protocol").len(),
        1
    );
    served.tcp = Some(TcpOutcome::Refused);
    assert!(by(&run(site(), &[served], &[]), "class_protocol").is_empty());
}

#[test]
fn floods_by_rate_not_by_total() {
    let d = pump();
    // 2,000 unanswered SYNs in 5 s to one peer: 200/s over the 10 s window... a flood at 100/s.
    let syn: Vec<_> = (0..2000u64)
        .map(|i| {
            let mut r = opened(
                &d,
                i * 2500 * 1000,
                proto::TCP,
                "198.51.100.10",
                443,
                Some(TcpOutcome::NoAnswer),
            );
            r.device_port = 1024 + i as u16;
            r
        })
        .collect();
    let f = run(site(), &syn, &[]);
    let fl = by(&f, "flood_syn");
    assert_eq!(
        fl.len(),
        1,
        "{:#?}",
        f.iter().map(|f| &f.detector).collect::<Vec<_>>()
    );
    assert_eq!(fl[0].peer, Some(ip("198.51.100.10")));
    assert_eq!(fl[0].technique.id, "T0814");
    // One long UDP stream of 1M packets over a day is 11.6 packets/s: no flood.
    let mut stream = opened(&d, 0, proto::UDP, "198.51.100.40", 5000, None);
    stream.packets_out = 1_000_000;
    stream.last_seen_ns = 86_400 * NS;
    assert!(run(site(), &[stream.clone()], &[]).is_empty());
    // The same packets in 2 s are.
    stream.last_seen_ns = 2 * NS;
    assert_eq!(by(&run(site(), &[stream], &[]), "flood_udp").len(), 1);
}

#[test]
fn spoofing_of_a_site_address() {
    // An unknown MAC answers ARP for the pump's address.
    let claim = AddressClaim {
        ts_ns: 5,
        mac: "02:00:00:00:00:ee".parse().unwrap(),
        frame_src: "02:00:00:00:00:ee".parse().unwrap(),
        addr: ip("192.0.2.10"),
        kind: ClaimKind::ArpReply,
        vlan: None,
    };
    let f = run(site(), &[], std::slice::from_ref(&claim));
    let s = by(&f, "spoof");
    assert_eq!(s.len(), 1, "{f:#?}");
    assert!(
        s[0].summary.contains("belongs to pump-1"),
        "{}",
        s[0].summary
    );
    // The pump's own claim is fine.
    let mut own = claim.clone();
    own.mac = "02:00:00:00:00:0a".parse().unwrap();
    assert!(run(site(), &[], &[own]).is_empty());
    // The PACS sending from the pump's address.
    let mut r = opened(
        &dev("pacs-1", "02:00:00:00:00:0b"),
        0,
        proto::UDP,
        "198.51.100.53",
        53,
        None,
    );
    r.packets_in = 1;
    let s = by(&run(site(), &[r], &[]), "spoof");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].device.name, "pacs-1");
    // Without a site: the first holder owns the address until it is quiet for an hour.
    let a = AddressClaim {
        mac: "02:00:00:00:00:01".parse().unwrap(),
        ..claim.clone()
    };
    let b = AddressClaim {
        ts_ns: 60 * NS,
        mac: "02:00:00:00:00:02".parse().unwrap(),
        ..claim.clone()
    };
    assert_eq!(
        run(SiteFacts::default(), &[], &[a.clone(), b.clone()]).len(),
        1
    );
    let later = AddressClaim {
        ts_ns: 2 * 3600 * NS,
        ..b
    };
    assert!(run(SiteFacts::default(), &[], &[a, later]).is_empty());
}

#[test]
fn config_reads_partial_files_and_refuses_unknown_keys() {
    let c: DetectConfig =
        serde_json::from_str(r#"{"scan": {"count_answered": true}, "trw": {"half_life_s": 60}}"#)
            .unwrap();
    assert!(c.scan.count_answered);
    assert_eq!(c.scan.windows[1].vertical.device, 8);
    assert_eq!(c.trw.half_life_s, 60);
    // An earlier release's single window still reads, as the 5 min window's values.
    let old: DetectConfig =
        serde_json::from_str(r#"{"scan": {"window_s": 60, "vertical": {"host": 3, "device": 2}}}"#)
            .unwrap();
    let resolved = scan::VerticalScan::new(old.scan).config().windows[1].clone();
    assert_eq!((resolved.window_s, resolved.vertical.host), (60, 3));
    assert!(serde_json::from_str::<DetectConfig>(r#"{"scn": {}}"#).is_err());
}

mod with_baseline {
    use super::*;
    use crate::baseline::{Groups, Limits, Window, baselines};

    const DAY: u64 = 86_400 * NS;

    /// A week of the pump's ordinary traffic (HTTPS, DNS, NTP every minute, 1 KiB each) as its
    /// baseline; detection starts after it.
    fn learned() -> (Baselines, u64) {
        let d = pump();
        let mut flows = ordinary(&d, 7 * 24 * 60);
        for r in &mut flows {
            r.bytes_out = 1024;
        }
        let end = flows.last().unwrap().first_seen_ns;
        let b = baselines(
            &flows,
            &Groups::default(),
            &Limits::default(),
            Window {
                start_ns: 0,
                end_ns: end,
            },
        );
        (Baselines::new(b), end + NS)
    }

    fn run_b(flows: &[FlowRecord]) -> Vec<Finding> {
        let cfg = DetectConfig::default();
        let (b, _) = learned();
        run_all(detectors(&cfg, true), site(), b, cfg.aggregate, flows, &[])
    }

    fn later(mut v: Vec<FlowRecord>, start: u64) -> Vec<FlowRecord> {
        for r in &mut v {
            r.first_seen_ns += start;
            r.last_seen_ns += start;
            r.bytes_out = 1024;
        }
        v
    }

    #[test]
    fn the_ordinary_day_after_learning_raises_nothing() {
        let (_, start) = learned();
        let f = run_b(&later(ordinary(&pump(), 24 * 60), start));
        assert!(f.is_empty(), "{f:#?}");
    }

    #[test]
    fn new_peer_service_protocol_once_each() {
        let (_, start) = learned();
        let d = pump();
        let mut v = later(ordinary(&d, 60), start);
        for i in 0..5 {
            v.push(opened(
                &d,
                start + i * NS,
                proto::TCP,
                "203.0.113.7",
                8443,
                Some(TcpOutcome::Established),
            ));
        }
        let mut gre = opened(&d, start + 9 * NS, 47, "198.51.100.30", 0, None);
        gre.packets_in = 1;
        v.push(gre);
        v.sort_by_key(|r| r.first_seen_ns);
        let f = run_b(&v);
        let peer = by(&f, "new_peer");
        assert_eq!(peer.len(), 1, "{f:#?}");
        assert_eq!(peer[0].peer, Some(ip("203.0.113.7")));
        assert_eq!(peer[0].count, 1);
        assert_eq!(by(&f, "new_service").len(), 2);
        assert_eq!(
            by(&f, "new_protocol")[0].evidence.names,
            vec!["ip-47".to_string()]
        );
    }

    #[test]
    fn volume_spike_against_the_same_hour() {
        let (_, start) = learned();
        let d = pump();
        let mut v = later(ordinary(&d, 60), start);
        // The baseline hour moves ~180 KiB; 50 MiB to its own server is a spike.
        let mut big = opened(
            &d,
            start + 30 * 60 * NS,
            proto::TCP,
            "198.51.100.30",
            443,
            Some(TcpOutcome::Established),
        );
        big.bytes_out = 50 << 20;
        v.push(big);
        v.sort_by_key(|r| r.first_seen_ns);
        let f = run_b(&v);
        let s = by(&f, "volume");
        assert_eq!(s.len(), 1, "{f:#?}");
        let m = &s[0].evidence.metrics[0];
        assert!(m.observed > 50.0 * 1024.0 * 1024.0);
        let median = m.baseline.unwrap();
        assert!((100_000.0..300_000.0).contains(&median), "{median}");
        assert!(m.threshold.unwrap() >= 1024.0 * 1024.0);
    }

    /// A flow the pump holds open to `peer` from `start` for `minutes`, as the live table
    /// records it: its first minute (1 KiB sent), then a continuation a minute with `per_minute`
    /// bytes sent in it.
    fn long_flow(start: u64, minutes: u64, peer: &str, per_minute: u64) -> Vec<FlowRecord> {
        let mut first = opened(
            &pump(),
            start,
            proto::TCP,
            peer,
            443,
            Some(TcpOutcome::Established),
        );
        first.bytes_out = 1024;
        first.last_seen_ns = start + 60 * NS;
        let mut v = vec![first.clone()];
        for m in 1..minutes {
            v.push(FlowRecord {
                packets_out: per_minute.div_ceil(1400),
                bytes_out: per_minute,
                first_seen_ns: start + m * 60 * NS,
                last_seen_ns: start + (m + 1) * 60 * NS,
                continuation: true,
                ..first.clone()
            });
        }
        v
    }

    /// `flows` with `extra` merged in time order.
    fn with(mut flows: Vec<FlowRecord>, extra: &[FlowRecord]) -> Vec<FlowRecord> {
        flows.extend_from_slice(extra);
        flows.sort_by_key(|r| r.first_seen_ns);
        flows
    }

    #[test]
    fn a_long_flow_feeds_volume_as_it_runs_and_is_one_new_contact() {
        let (_, start) = learned();
        let ordinary = later(ordinary(&pump(), 180), start);
        // Two hours to a new outside peer, ten times the hour's ~180 KiB after its first
        // minute: only its continuations carry the bytes.
        let long = long_flow(start + 30 * NS, 120, "203.0.113.77", 30 << 10);
        let f = run_b(&with(ordinary.clone(), &long));
        let volume = by(&f, "volume");
        assert!(!volume.is_empty(), "{f:#?}");
        assert!(volume[0].evidence.metrics[0].observed > f64::from(1 << 20));
        // One new peer, once: the continuations are no new contacts.
        let new: Vec<_> = f
            .iter()
            .filter(|x| x.detector.starts_with("new_"))
            .collect();
        assert_eq!(new.len(), 1, "{new:#?}");
        assert_eq!((new[0].detector.as_str(), new[0].count), ("new_peer", 1));
        // The first minute alone is under the limit: without its continuations no volume.
        assert!(by(&run_b(&with(ordinary, &long[..1])), "volume").is_empty());
    }

    #[test]
    fn a_long_flows_continuations_are_no_beacon() {
        let (_, start) = learned();
        let ordinary = later(ordinary(&pump(), 480), start);
        // Eight hours (a beacon is scored once its calls span 6 hourly bins), 300 bytes a
        // minute: the continuations come every 60 s exactly.
        let long = long_flow(start + 30 * NS, 480, "203.0.113.66", 300);
        let f = run_b(&with(ordinary.clone(), &long));
        assert!(by(&f, "beacon").is_empty(), "{f:#?}");
        assert_eq!(by(&f, "new_peer")[0].count, 1);
        // Taken as flows, they would read as a beacon.
        let unmarked: Vec<_> = long
            .iter()
            .map(|r| FlowRecord {
                continuation: false,
                ..r.clone()
            })
            .collect();
        assert_eq!(by(&run_b(&with(ordinary, &unmarked)), "beacon").len(), 1);
    }

    #[test]
    fn beacon_every_60s_with_jitter_but_not_to_known_peers() {
        let (_, start) = learned();
        let d = pump();
        let mut v = later(ordinary(&d, 480), start);
        // Every 60 s +- 3 s, 300-310 bytes, to an outside address.
        // Eight hours: a beacon is scored once its calls span 6 hourly bins.
        for i in 0..480u64 {
            let jitter = (i * 7919 % 7) as i64 - 3;
            // Signed arithmetic: a negative jitter cast to u64 overflowed in debug builds.
            let t = (start as i64 + (i * 60 * NS) as i64 + jitter * NS as i64 + (30 * NS) as i64)
                as u64;
            let mut r = opened(
                &d,
                t,
                proto::TCP,
                "203.0.113.66",
                443,
                Some(TcpOutcome::Established),
            );
            r.bytes_out = 300 + i % 11;
            v.push(r);
        }
        v.sort_by_key(|r| r.first_seen_ns);
        let f = run_b(&v);
        let b = by(&f, "beacon");
        assert_eq!(b.len(), 1, "{f:#?}");
        assert_eq!(b[0].peer, Some(ip("203.0.113.66")));
        assert!(b[0].confidence >= 0.8);
        // The pump's NTP every 60 s to its known server is in v too and raised nothing.
        assert!(f.iter().all(|x| x.peer != Some(ip("198.51.100.123"))));
        // Random calls to the same outside peer are not a beacon.
        let mut rnd = later(ordinary(&d, 480), start);
        let mut t = start;
        for i in 0..120u64 {
            t += (i * 2654435761 % 600 + 1) * NS;
            let mut r = opened(
                &d,
                t,
                proto::TCP,
                "203.0.113.66",
                443,
                Some(TcpOutcome::Established),
            );
            r.bytes_out = 200 + (i * 40503 % 5000);
            rnd.push(r);
        }
        rnd.sort_by_key(|r| r.first_seen_ns);
        assert!(by(&run_b(&rnd), "beacon").is_empty());
    }

    #[test]
    fn a_beacon_to_one_name_behind_rotating_addresses_is_one_series() {
        let (_, start) = learned();
        let d = pump();
        // Every 60 s +- 3 s for eight hours to c2.cdn.example, whose answers move it to another
        // address every 3 calls (fast flux): 160 addresses of 3 calls each.
        let calls = |named: bool| {
            let mut v = later(ordinary(&d, 480), start);
            for i in 0..480u64 {
                let jitter = (i * 7919 % 7) as i64 - 3;
                let t =
                    (start as i64 + (i * 60 * NS) as i64 + jitter * NS as i64 + (30 * NS) as i64)
                        as u64;
                let addr = format!("203.0.113.{}", 10 + i / 3 % 160);
                let mut r = opened(&d, t, proto::TCP, &addr, 443, Some(TcpOutcome::Established));
                r.bytes_out = 300 + i % 11;
                r.peer_name = named.then(|| "c2.cdn.example".to_string());
                v.push(r);
            }
            v.sort_by_key(|r| r.first_seen_ns);
            v
        };
        let f = run_b(&calls(true));
        let b = by(&f, "beacon");
        assert_eq!(b.len(), 1, "one series, one finding: {b:#?}");
        assert_eq!(b[0].evidence.names, ["c2.cdn.example"]);
        assert_eq!(
            b[0].peer,
            Some(ip("203.0.113.10")),
            "the series' first address"
        );
        // The addresses called, up to the listing's cap.
        assert_eq!(b[0].evidence.peers.len(), 64, "{:?}", b[0].evidence.peers);
        assert!(b[0].summary.contains("c2.cdn.example"), "{}", b[0].summary);
        assert!(b[0].confidence >= 0.8);
        // The same calls with no name: keyed by address, 3 calls each, no beacon (as before).
        assert!(by(&run_b(&calls(false)), "beacon").is_empty());
    }

    #[test]
    fn beacon_scores() {
        let h = 3600 * NS;
        // Every 60 s for 6 h, 300 bytes each: every part scores 1.
        let s: Vec<u64> = (0..360).map(|i| i * 60 * NS).collect();
        let sc = beacon::score(&s, &vec![300.0; 360]).unwrap();
        assert_eq!(
            (sc.time, sc.size, sc.duration, sc.histogram),
            (1.0, 1.0, 1.0, 1.0)
        );
        assert_eq!((sc.total, sc.hours), (1.0, 6));
        // Eight calls within one hour, however regular, are not scored (issue: they scored 1.0).
        let burst: Vec<u64> = (0..8).map(|i| i * 60 * NS).collect();
        assert_eq!(beacon::score(&burst, &[300.0; 8]), None);
        // Six hours with calls in only the first and the last: duration 2/6, histogram low.
        let ends: Vec<u64> = (0..30)
            .map(|i| i * 60 * NS)
            .chain((0..30).map(|i| 5 * h + i * 60 * NS))
            .collect();
        let sc = beacon::score(&ends, &[300.0; 60]).unwrap();
        assert!((sc.duration - 2.0 / 6.0).abs() < 1e-9, "{sc:?}");
        assert!(sc.histogram < 0.5 && sc.total < 0.8, "{sc:?}");
        // A 5 s MAD is irregular for a 10 s timer and regular for an hourly one (relative MAD).
        let jittered = |period: f64| -> Vec<f64> {
            (0..40)
                .map(|i| period + if i % 2 == 0 { 5.0 } else { -5.0 })
                .collect()
        };
        assert!(beacon::relative_regularity(&jittered(10.0)) < 0.8);
        assert!(beacon::relative_regularity(&jittered(3600.0)) > 0.99);
        let _ = DAY;
    }

    #[test]
    fn fanout_leaves_out_peers_the_baseline_knows() {
        // The pump's baseline: its ordinary week plus HTTPS to 20 servers, once each.
        let d = pump();
        let mut learning = ordinary(&d, 7 * 24 * 60);
        for i in 1..=20u8 {
            learning.push(opened(
                &d,
                u64::from(i) * 3600 * NS,
                proto::TCP,
                &format!("203.0.113.{i}"),
                443,
                Some(TcpOutcome::Established),
            ));
        }
        learning.sort_by_key(|r| r.first_seen_ns);
        let end = learning.last().unwrap().first_seen_ns;
        let b = Baselines::new(baselines(
            &learning,
            &Groups::default(),
            &Limits::default(),
            Window {
                start_ns: 0,
                end_ns: end,
            },
        ));
        // After learning, the 20 within a minute: known, so no fan-out.
        let again: Vec<_> = (1..=20u8)
            .map(|i| {
                opened(
                    &d,
                    end + u64::from(i) * NS,
                    proto::TCP,
                    &format!("203.0.113.{i}"),
                    443,
                    Some(TcpOutcome::Established),
                )
            })
            .collect();
        let cfg = DetectConfig::default();
        let with = run_all(
            detectors(&cfg, true),
            site(),
            b,
            cfg.aggregate.clone(),
            &again,
            &[],
        );
        assert!(by(&with, "fanout").is_empty(), "{with:#?}");
        // Without the baseline they are 20 new peers (over the device's 15).
        let without = run_all(
            detectors(&cfg, false),
            site(),
            Baselines::default(),
            cfg.aggregate,
            &again,
            &[],
        );
        assert_eq!(by(&without, "fanout").len(), 1);
    }

    #[test]
    fn broadcast_and_multicast_are_no_new_peer_service_or_class_protocol() {
        let (_, start) = learned();
        let d = pump();
        let mut v = later(ordinary(&d, 60), start);
        // NetBIOS name queries to the subnet broadcast, DHCP to the limited broadcast, mDNS and
        // SSDP to their groups: habits of a device's stack, never a finding.
        for (i, (to, port)) in [
            ("192.0.2.255", 137u16),
            ("255.255.255.255", 67),
            ("224.0.0.251", 5353),
            ("239.255.255.250", 1900),
            ("ff02::fb", 5353),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = opened(&d, start + (i as u64 + 1) * NS, proto::UDP, to, port, None);
            if to.contains(':') {
                r.device_addr = ip("2001:db8::10");
            }
            v.push(r);
        }
        v.sort_by_key(|r| r.first_seen_ns);
        let f = run_b(&v);
        assert!(f.is_empty(), "{f:#?}");
        // The same NetBIOS query to a host is a class-protocol finding and a new service.
        let mut unicast = v.clone();
        unicast.push(opened(
            &d,
            start + 10 * NS,
            proto::UDP,
            "198.51.100.99",
            137,
            None,
        ));
        let f = run_b(&unicast);
        assert_eq!(by(&f, "class_protocol").len(), 1, "{f:#?}");
        assert!(f.iter().any(|x| x.detector == "new_service"), "{f:#?}");
    }
}
