//! Scans from any side: a host probing devices, half-open and flag probes, quick sweeps, slow
//! scans, and the threshold random walk's direction and decay.

use super::*;
use crate::flow::{FlowOutcome, TcpFlags};

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const URG: u8 = 0x20;

/// A flow `peer` opened to the pump (its address 192.0.2.10), TCP, with the flags each way.
fn received(t_ns: u64, peer: &str, port: u16, tcp: TcpOutcome, flags: TcpFlags) -> FlowRecord {
    let mut r = opened(&pump(), t_ns, proto::TCP, peer, port, Some(tcp));
    r.direction = FlowDirection::Received;
    r.device_port = port;
    r.peer_port = 50_000;
    // Seen from the pump: the opener's packets are the ones it received.
    let answered = !matches!(tcp, TcpOutcome::NoAnswer);
    (r.packets_in, r.bytes_in) = (1, 44);
    (r.packets_out, r.bytes_out) = if answered { (1, 44) } else { (0, 0) };
    r.outcome = FlowOutcome::of_record(
        proto::TCP,
        FlowDirection::Received,
        Some(tcp),
        r.packets_out,
        r.packets_in,
        false,
    );
    r.tcp_flags = Some(flags);
    r
}

fn flags(first: u8, sent: u8, received: u8) -> TcpFlags {
    TcpFlags {
        first,
        sent,
        received,
    }
}

/// nmap -sS from a workstation: closed ports answer RST, open ones SYN-ACK, then nmap resets.
fn syn_scan_of_the_pump(scanner: &str, ports: std::ops::Range<u16>) -> Vec<FlowRecord> {
    ports
        .enumerate()
        .map(|(i, port)| {
            let t = i as u64 * 5 * MS;
            if port % 10 == 0 {
                // Open: SYN -> SYN-ACK -> RST from the scanner, no data (half-open).
                let mut r = received(
                    t,
                    scanner,
                    port,
                    TcpOutcome::Established,
                    flags(SYN, SYN | ACK, SYN | RST),
                );
                (r.packets_in, r.bytes_in) = (2, 84);
                r
            } else {
                received(
                    t,
                    scanner,
                    port,
                    TcpOutcome::Refused,
                    flags(SYN, RST | ACK, SYN),
                )
            }
        })
        .collect()
}

#[test]
fn a_host_scanning_a_device_is_the_subject_and_the_device_the_evidence() {
    let flows = syn_scan_of_the_pump("198.51.100.7", 1..201);
    let f = run(site(), &flows, &[]);
    let v = by(&f, "scan_vertical");
    assert_eq!(v.len(), 1, "{f:#?}");
    let v = &v[0];
    assert_eq!(v.device.name, "198.51.100.7");
    assert_eq!(v.peer, Some(ip("192.0.2.10")));
    assert_eq!(v.evidence.peers, vec![ip("192.0.2.10")]);
    // Every port counts, the 20 open ones too (answered, then reset with no data: half-open).
    assert_eq!(v.evidence.metrics[0].observed, 200.0);
    assert_eq!(v.severity, Severity::High, "a medical device was scanned");
    assert!(
        v.action.starts_with("investigate 198.51.100.7"),
        "{}",
        v.action
    );
    assert!(
        v.summary
            .starts_with("198.51.100.7 probed 200 tcp ports on 192.0.2.10"),
        "{}",
        v.summary
    );
    // The flow as the scanner opened it: the SOC reads the scanner as the source.
    assert_eq!(v.flows[0].device_addr, ip("198.51.100.7"));
    let cef = format::cef::cef(v);
    for field in ["shost=198.51.100.7", "src=198.51.100.7", "dst=192.0.2.10"] {
        assert!(cef.contains(field), "{field} in {cef}");
    }
    // Not the pump's fault: nothing names it as the subject.
    assert!(f.iter().all(|x| x.device.name != "pump-1"), "{f:#?}");
    // A site device scanning another is named as itself.
    let mut from_pacs = syn_scan_of_the_pump("192.0.2.20", 1..30);
    from_pacs.truncate(29);
    let f = run(site(), &from_pacs, &[]);
    assert_eq!(by(&f, "scan_vertical")[0].device.name, "pacs-1");
    assert_eq!(
        by(&f, "scan_vertical")[0].action,
        "wardctl mode pacs-1 quarantine"
    );
}

#[test]
fn half_open_contacts_fail_and_ones_with_data_do_not() {
    let h = dev("host-a", "02:00:00:00:01:01");
    let contact = |i: u8, bytes: u64| {
        let mut r = opened(
            &h,
            u64::from(i) * NS,
            proto::TCP,
            &format!("203.0.113.{i}"),
            443,
            Some(TcpOutcome::Established),
        );
        (r.packets_out, r.bytes_out) = (2, 2 * bytes);
        (r.packets_in, r.bytes_in) = (1, 44);
        r.tcp_flags = Some(flags(SYN, SYN | RST, SYN | ACK));
        r
    };
    let probes: Vec<_> = (1..=4).map(|i| contact(i, 44)).collect();
    let t = by(&run(SiteFacts::default(), &probes, &[]), "scan_trw");
    assert_eq!(
        t.len(),
        1,
        "four half-open first contacts are four failures"
    );
    // The same four carrying data (a request, then a reset) are conversations.
    let talks: Vec<_> = (1..=4).map(|i| contact(i, 700)).collect();
    assert!(by(&run(SiteFacts::default(), &talks, &[]), "scan_trw").is_empty());
}

#[test]
fn null_fin_xmas_and_syn_fin_probes_are_raised_at_once() {
    for (first, kind) in [
        (0, "NULL"),
        (FIN, "FIN"),
        (FIN | PSH | URG, "Xmas"),
        (SYN | FIN, "SYN+FIN"),
    ] {
        let r = received(
            0,
            "198.51.100.7",
            80,
            TcpOutcome::Unknown,
            flags(first, RST | ACK, first),
        );
        let f = by(&run(site(), &[r], &[]), "scan_flag_probe");
        assert_eq!(f.len(), 1, "{kind}");
        assert_eq!(f[0].device.name, "198.51.100.7");
        assert_eq!(f[0].peer, Some(ip("192.0.2.10")));
        assert!(
            f[0].summary.contains(&format!("TCP {kind} probe")),
            "{}",
            f[0].summary
        );
    }
    // A flow seen mid-stream (ACK first) and an ordinary SYN are no probes.
    for first in [ACK, ACK | PSH, SYN, RST] {
        let r = received(
            0,
            "198.51.100.7",
            80,
            TcpOutcome::Established,
            flags(first, ACK | PSH, first | ACK),
        );
        assert!(
            by(&run(site(), &[r], &[]), "scan_flag_probe").is_empty(),
            "{first:#x}"
        );
    }
}

#[test]
fn a_quick_sweep_of_ten_ports_is_caught_in_its_burst_window() {
    // A general host: 10 refused ports of one host in half a second (under the 5 min count of 15).
    let h = dev("host-a", "02:00:00:00:01:01");
    let sweep: Vec<_> = (0..10u16)
        .map(|i| {
            opened(
                &h,
                u64::from(i) * 50 * MS,
                proto::TCP,
                "198.51.100.10",
                8000 + i,
                Some(TcpOutcome::Refused),
            )
        })
        .collect();
    let v = by(&run(SiteFacts::default(), &sweep, &[]), "scan_vertical");
    assert_eq!(v.len(), 1);
    assert!(
        v[0].summary.contains("(limit 8 in 2 s)"),
        "{}",
        v[0].summary
    );
    // The same ten spread over four minutes stay under every count.
    let spread: Vec<_> = sweep
        .iter()
        .enumerate()
        .map(|(i, r)| FlowRecord {
            first_seen_ns: i as u64 * 25 * NS,
            last_seen_ns: i as u64 * 25 * NS + MS,
            ..r.clone()
        })
        .collect();
    assert!(by(&run(SiteFacts::default(), &spread, &[]), "scan_vertical").is_empty());
}

#[test]
fn a_slow_scan_is_caught_by_the_long_window() {
    // 7 failed ports every 10 minutes for 70 minutes: never 8 inside 5 minutes, 70 in 4 h.
    let flows: Vec<_> = (0..70u16)
        .map(|i| {
            let t = u64::from(i / 7) * 600 * NS + u64::from(i % 7) * NS;
            opened(
                &pump(),
                t,
                proto::TCP,
                "198.51.100.10",
                100 + i,
                Some(TcpOutcome::NoAnswer),
            )
        })
        .collect();
    let v = by(&run(site(), &flows, &[]), "scan_vertical");
    assert_eq!(v.len(), 1);
    assert!(
        v[0].summary.contains("(limit 16 in 4 h)"),
        "{}",
        v[0].summary
    );
    assert_eq!(v[0].evidence.metrics[0].observed, 70.0);
}

#[test]
fn the_walk_decays_so_failures_weeks_apart_do_not_add_up() {
    let d = pump();
    let fail = |i: u8, t: u64| {
        opened(
            &d,
            t,
            proto::TCP,
            &format!("203.0.113.{i}"),
            80,
            Some(TcpOutcome::NoAnswer),
        )
    };
    let days: Vec<_> = (1..=5u8)
        .map(|i| fail(i, u64::from(i) * 7 * 24 * 3600 * NS))
        .collect();
    assert!(by(&run(site(), &days, &[]), "scan_trw").is_empty());
    let minute: Vec<_> = (1..=3u8).map(|i| fail(i, u64::from(i) * 10 * NS)).collect();
    assert_eq!(by(&run(site(), &minute, &[]), "scan_trw").len(), 1);
}

#[test]
fn denied_flows_of_a_device_are_no_failures_of_its_peers() {
    // An enforced pump whose contacts the datapath denied: what it tried, not peers failing.
    let denied: Vec<_> = (1..=5u8)
        .map(|i| {
            let mut r = opened(
                &pump(),
                u64::from(i) * NS,
                proto::TCP,
                &format!("203.0.113.{i}"),
                443,
                Some(TcpOutcome::NoAnswer),
            );
            r.outcome = FlowOutcome::Denied;
            r
        })
        .collect();
    assert!(by(&run(site(), &denied, &[]), "scan_trw").is_empty());
}

#[test]
fn the_walk_follows_remote_sources_probing_devices() {
    // One outside host, telnet to four addresses of the ward, none answering.
    let flows: Vec<_> = (1..=4u8)
        .map(|i| {
            let mut r = received(
                u64::from(i) * NS,
                "203.0.113.66",
                23,
                TcpOutcome::NoAnswer,
                flags(SYN, 0, SYN),
            );
            r.device_addr = ip(&format!("192.0.2.{}", 10 + i));
            r
        })
        .collect();
    let t = by(&run(site(), &flows, &[]), "scan_trw");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].device.name, "203.0.113.66");
    assert_eq!(t[0].evidence.peers.len(), 4);
}

#[test]
fn one_way_udp_services_are_no_failed_contacts() {
    // Syslog to 30 collectors never answers; a UDP sweep of port 161 to 30 hosts does not either.
    let to = |port: u16| -> Vec<FlowRecord> {
        (1..=30u8)
            .map(|i| {
                opened(
                    &pump(),
                    u64::from(i) * 100 * MS,
                    proto::UDP,
                    &format!("198.51.100.{i}"),
                    port,
                    None,
                )
            })
            .collect()
    };
    assert!(by(&run(site(), &to(514), &[]), "scan_horizontal").is_empty());
    assert_eq!(by(&run(site(), &to(161), &[]), "scan_horizontal").len(), 1);
}
