//! The detectors a hospital SOC expects beyond scans: a device answering as a DHCP server or
//! announcing itself as a router, password guessing on a login service, and a device reaching
//! a device on another segment.

use super::*;
use crate::flow::{FlowOutcome, TcpFlags};

const ACK_PSH: u8 = 0x18;

/// A site of two gateways: the pump and a PACS behind gw-1, a monitor behind gw-2.
fn two_gateways() -> SiteFacts {
    let s = wardgate_policy::parse_site(
        "site.yaml",
        "site: t\ndevices:\n  - name: pump-1\n    mac: 02:00:00:00:00:0a\n    addresses: [192.0.2.10]\n    profile: infusion-pump\n    gateway: gw-1\n  - name: pacs-1\n    mac: 02:00:00:00:00:0b\n    addresses: [192.0.2.20]\n    profile: pacs\n    gateway: gw-1\n  - name: monitor-1\n    mac: 02:00:00:00:00:0c\n    addresses: [192.0.2.30]\n    profile: patient-monitor\n    gateway: gw-2\n",
    )
    .unwrap();
    SiteFacts::from_site(&s)
}

fn run_with(cfg: DetectConfig, site: SiteFacts, flows: &[FlowRecord]) -> Vec<Finding> {
    run_all(
        baseline_free(&cfg),
        site,
        Baselines::default(),
        cfg.aggregate,
        flows,
        &[],
    )
}

/// A UDP datagram the pump sent from `sport` to `peer:dport`, unanswered.
fn udp_from_pump(t_ns: u64, sport: u16, peer: &str, dport: u16) -> FlowRecord {
    let mut r = opened(&pump(), t_ns, proto::UDP, peer, dport, None);
    r.device_port = sport;
    r.bytes_out = 328;
    r
}

#[test]
fn a_device_answering_dhcp_is_a_rogue_server_and_its_own_requests_are_not() {
    // The pump's own DHCP client traffic (68 -> 67) and a DHCPv6 solicit raise nothing.
    let client = vec![
        udp_from_pump(0, 68, "255.255.255.255", 67),
        udp_from_pump(MS, 546, "ff02::1:2", 547),
    ];
    assert!(by(&run(site(), &client, &[]), "rogue_dhcp").is_empty());

    // An offer from the pump to the broadcast address: raised at once, high.
    let offer = vec![udp_from_pump(0, 67, "255.255.255.255", 68)];
    let f = run(site(), &offer, &[]);
    let r = by(&f, "rogue_dhcp");
    assert_eq!(r.len(), 1, "{f:#?}");
    assert_eq!(r[0].device.name, "pump-1");
    assert_eq!(r[0].severity, Severity::High);
    assert_eq!(r[0].technique.id, "T1557.003");
    assert_eq!(r[0].technique.tactic().0, "TA0006");
    assert!(r[0].summary.contains("DHCP server"), "{}", r[0].summary);
    // DHCPv6: advertise from 547 to 546.
    let v6 = vec![udp_from_pump(0, 547, "2001:db8::5", 546)];
    assert_eq!(by(&run(site(), &v6, &[]), "rogue_dhcp").len(), 1);

    // Without a site, a host answering DHCP is the hospital's server: nothing ...
    assert!(by(&run(SiteFacts::default(), &offer, &[]), "rogue_dhcp").is_empty());
    // ... unless the site lists its servers and the host is not one of them.
    let mut cfg = DetectConfig::default();
    cfg.rogue_dhcp.servers = vec!["198.51.100.67/32".parse().unwrap()];
    assert_eq!(
        by(
            &run_with(cfg.clone(), SiteFacts::default(), &offer),
            "rogue_dhcp"
        )
        .len(),
        1
    );
    let mut listed = offer.clone();
    listed[0].device_addr = ip("198.51.100.67");
    assert!(by(&run_with(cfg, SiteFacts::default(), &listed), "rogue_dhcp").is_empty());
}

#[test]
fn a_device_sending_router_advertisements_or_redirects_is_a_rogue_router() {
    let icmp = |p: u8, t: u8, peer: &str, dir: FlowDirection| {
        let mut r = opened(&pump(), 0, p, peer, 0, None);
        r.icmp_type = Some(t);
        r.direction = dir;
        r
    };
    for (p, t) in [(proto::ICMPV6, 134), (proto::ICMPV6, 137), (proto::ICMP, 5)] {
        let peer = if p == proto::ICMP {
            "192.0.2.20"
        } else {
            "ff02::1"
        };
        let f = run(site(), &[icmp(p, t, peer, FlowDirection::Opened)], &[]);
        let r = by(&f, "rogue_router");
        assert_eq!(r.len(), 1, "type {t}: {f:#?}");
        assert_eq!(r[0].device.name, "pump-1");
        assert_eq!(r[0].evidence.metrics[0].observed, f64::from(t));
    }
    // The router's advertisement received by the pump, a neighbour solicitation the pump
    // sends, and a general host's advertisement: nothing.
    let quiet = [
        icmp(proto::ICMPV6, 134, "ff02::1", FlowDirection::Received),
        icmp(proto::ICMPV6, 135, "ff02::1:ff00:1", FlowDirection::Opened),
    ];
    assert!(by(&run(site(), &quiet, &[]), "rogue_router").is_empty());
    let host_ra = [icmp(proto::ICMPV6, 134, "ff02::1", FlowDirection::Opened)];
    assert!(by(&run(SiteFacts::default(), &host_ra, &[]), "rogue_router").is_empty());
}

/// A short SSH session `opener` opened to the pump: handshake, a few kB each way, closed in
/// `secs` seconds.
fn ssh_to_pump(t_ns: u64, opener: &str, secs: u64, kib: u64) -> FlowRecord {
    let mut r = opened(
        &pump(),
        t_ns,
        proto::TCP,
        opener,
        22,
        Some(TcpOutcome::Established),
    );
    r.direction = FlowDirection::Received;
    r.device_port = 22;
    r.peer_port = 50_000;
    (r.packets_in, r.bytes_in) = (12, kib * 512);
    (r.packets_out, r.bytes_out) = (12, kib * 512);
    r.last_seen_ns = t_ns + secs * NS;
    r.tcp_flags = Some(TcpFlags {
        first: 0x02,
        sent: 0x12 | ACK_PSH,
        received: 0x02 | ACK_PSH | 0x01,
    });
    r.outcome = FlowOutcome::Established;
    r
}

#[test]
fn many_short_sessions_to_a_login_service_are_brute_force_by_the_opener() {
    // hydra from a workstation: 25 SSH sessions of 2 s, 3 s apart.
    let guesses: Vec<_> = (0..25)
        .map(|i| ssh_to_pump(i * 3 * NS, "198.51.100.20", 2, 4))
        .collect();
    let f = run(site(), &guesses, &[]);
    let b = by(&f, "brute_force");
    assert_eq!(b.len(), 1, "{f:#?}");
    let b = &b[0];
    // The opener is the subject, the pump the target; the host is not enforced by wardgate.
    assert_eq!(b.device.name, "198.51.100.20");
    assert_eq!(b.peer, Some(ip("192.0.2.10")));
    assert_eq!(b.evidence.ports, vec![22]);
    assert_eq!(b.evidence.metrics[0].threshold, Some(20.0));
    assert_eq!(b.technique.id, "T1110");
    assert_eq!(b.technique.tactic(), ("TA0006", "Credential Access"));
    assert!(
        b.action.starts_with("investigate 198.51.100.20"),
        "{}",
        b.action
    );
    assert_eq!(b.severity, Severity::High);

    // 19 sessions (under a host's 20), sessions of a minute, or of 200 kB: no brute force.
    let few: Vec<_> = guesses[..19].to_vec();
    assert!(by(&run(site(), &few, &[]), "brute_force").is_empty());
    let long: Vec<_> = (0..25)
        .map(|i| ssh_to_pump(i * 3 * NS, "198.51.100.20", 60, 4))
        .collect();
    assert!(by(&run(site(), &long, &[]), "brute_force").is_empty());
    let big: Vec<_> = (0..25)
        .map(|i| ssh_to_pump(i * 3 * NS, "198.51.100.20", 2, 400))
        .collect();
    assert!(by(&run(site(), &big, &[]), "brute_force").is_empty());
    // Half-open probes (no data) are the scan detectors' evidence, not guesses.
    let probes: Vec<_> = (0..25)
        .map(|i| {
            let mut r = ssh_to_pump(i * 3 * NS, "198.51.100.20", 0, 0);
            (r.packets_in, r.bytes_in, r.packets_out, r.bytes_out) = (2, 84, 1, 44);
            r
        })
        .collect();
    assert!(by(&run(site(), &probes, &[]), "brute_force").is_empty());
    // Spread over more than the 5 min window: 25 sessions 20 s apart never hold 20 at once.
    let slow: Vec<_> = (0..25)
        .map(|i| ssh_to_pump(i * 20 * NS, "198.51.100.20", 2, 4))
        .collect();
    assert!(by(&run(site(), &slow, &[]), "brute_force").is_empty());
}

#[test]
fn a_device_guessing_passwords_is_raised_at_the_device_threshold() {
    // The pump opens 10 short RDP sessions to a server within a minute (a site device: 10).
    let guesses: Vec<_> = (0..10)
        .map(|i| {
            let mut r = opened(
                &pump(),
                i * 5 * NS,
                proto::TCP,
                "198.51.100.40",
                3389,
                Some(TcpOutcome::Established),
            );
            (r.packets_in, r.bytes_in, r.packets_out, r.bytes_out) = (8, 3000, 8, 2000);
            r.last_seen_ns = r.first_seen_ns + NS;
            r
        })
        .collect();
    let b = by(&run(site(), &guesses, &[]), "brute_force");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].device.name, "pump-1");
    assert_eq!(b[0].action, "wardctl mode pump-1 quarantine");
    assert!(by(&run(site(), &guesses[..9], &[]), "brute_force").is_empty());
}

/// A TCP flow `from` (a device at `addr`) opened to `peer`, answered.
fn device_flow(from: &str, mac: &str, addr: &str, peer: &str, vlan: Option<u16>) -> FlowRecord {
    let mut r = opened(
        &dev(from, mac),
        0,
        proto::TCP,
        peer,
        8080,
        Some(TcpOutcome::Established),
    );
    r.device_addr = ip(addr);
    r.vlan = vlan;
    r
}

#[test]
fn a_device_reaching_a_device_on_another_segment_is_lateral_movement() {
    // Another gateway: raised, naming both devices.
    let cross = [device_flow(
        "pump-1",
        "02:00:00:00:00:0a",
        "192.0.2.10",
        "192.0.2.30",
        None,
    )];
    let f = run(two_gateways(), &cross, &[]);
    let l = by(&f, "lateral");
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(l[0].device.name, "pump-1");
    assert_eq!(l[0].peer, Some(ip("192.0.2.30")));
    assert_eq!(l[0].technique.tactic(), ("TA0109", "Lateral Movement"));
    assert!(
        l[0].summary.contains("monitor-1") && l[0].summary.contains("gateway gw-1 to gateway gw-2"),
        "{}",
        l[0].summary
    );

    // Same gateway, VLANs unknown: not judged.
    let same = [device_flow(
        "pump-1",
        "02:00:00:00:00:0a",
        "192.0.2.10",
        "192.0.2.20",
        None,
    )];
    assert!(by(&run(two_gateways(), &same, &[]), "lateral").is_empty());
    // Same gateway, the PACS seen on VLAN 20 and the pump on VLAN 10: raised.
    let mut vlans = vec![device_flow(
        "pacs-1",
        "02:00:00:00:00:0b",
        "192.0.2.20",
        "198.51.100.10",
        Some(20),
    )];
    vlans.push(device_flow(
        "pump-1",
        "02:00:00:00:00:0a",
        "192.0.2.10",
        "192.0.2.20",
        Some(10),
    ));
    vlans[1].first_seen_ns = NS;
    let l = by(&run(two_gateways(), &vlans, &[]), "lateral");
    assert_eq!(l.len(), 1);
    assert!(
        l[0].summary.contains("VLAN 10 to VLAN 20"),
        "{}",
        l[0].summary
    );
    // One VLAN for both: nothing.
    vlans[0].vlan = Some(10);
    assert!(by(&run(two_gateways(), &vlans, &[]), "lateral").is_empty());

    // Admitted by the profile (a live record with its rule), or a class allowed to: nothing.
    let mut ruled = cross.clone();
    ruled[0].rule = Some(7);
    assert!(by(&run(two_gateways(), &ruled, &[]), "lateral").is_empty());
    let mut cfg = DetectConfig::default();
    cfg.lateral.allowed_classes = vec!["infusion-pump".into()];
    assert!(by(&run_with(cfg, two_gateways(), &cross), "lateral").is_empty());
    // A flow to a server that is no device: nothing.
    let server = [device_flow(
        "pump-1",
        "02:00:00:00:00:0a",
        "192.0.2.10",
        "198.51.100.30",
        None,
    )];
    assert!(by(&run(two_gateways(), &server, &[]), "lateral").is_empty());
}
