//! `wardgate-agent replay` on a generated capture of DNS: a host's tunnel-like queries (new
//! 50-character base32 labels under one domain, asked as TXT, with their answers) are one
//! `dns_tunnel` finding naming the domain; a malformed DNS message is counted, not fatal. The
//! same capture cut to a few queries raises nothing. Flows are named from the answers of the
//! site's resolvers only, as live. No privileges needed.

use std::{path::Path, time::Duration};

use etherparse::PacketBuilder;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};
use wardgate_agent::replay::{self, Format, ReplayArgs};

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const HOST: [u8; 4] = [192, 0, 2, 77];
const RESOLVER: [u8; 4] = [198, 51, 100, 53];
const T0: Duration = Duration::from_secs(1_780_000_000);

/// A DNS message with one question (`flags` 0x0100 a query, 0x8180 an answer).
fn dns(id: u16, flags: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0]);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

fn udp(from_host: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let b = if from_host {
        PacketBuilder::ethernet2(HOST_MAC, ROUTER_MAC)
            .ipv4(HOST, RESOLVER, 64)
            .udp(40000, 53)
    } else {
        PacketBuilder::ethernet2(ROUTER_MAC, HOST_MAC)
            .ipv4(RESOLVER, HOST, 64)
            .udp(53, 40000)
    };
    b.write(&mut out, payload).unwrap();
    out
}

fn write_pcap(path: &Path, frames: &[(Duration, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).unwrap();
    for (t, f) in frames {
        w.write_packet(&PcapPacket::new(*t, f.len() as u32, f))
            .unwrap();
    }
}

/// `n` tunnel-like queries, one every 2 s, each answered 20 ms later, and one malformed message.
fn tunnel(n: u16) -> Vec<(Duration, Vec<u8>)> {
    let mut seed = 3u64;
    let mut frames = Vec::new();
    for i in 0..n {
        let label: String = (0..50)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from(b"abcdefghijklmnopqrstuvwxyz234567"[(seed >> 33) as usize % 32])
            })
            .collect();
        let name = format!("{label}.t.tunnel-example.com");
        let t = T0 + Duration::from_secs(2 * u64::from(i));
        frames.push((t, udp(true, &dns(i, 0x0100, &name, 16))));
        frames.push((
            t + Duration::from_millis(20),
            udp(false, &dns(i, 0x8180, &name, 16)),
        ));
    }
    // A query whose header claims a question its 7 bytes cannot hold.
    frames.push((
        T0 + Duration::from_secs(1),
        udp(true, &[0, 1, 1, 0, 0, 1, 0]),
    ));
    frames.sort_by_key(|(t, _)| *t);
    frames
}

fn args(pcap: &Path) -> ReplayArgs {
    ReplayArgs {
        pcap: vec![pcap.to_path_buf()],
        site: None,
        baselines: None,
        profiles: None,
        config: None,
        format: Format::Json,
        summary: None,
    }
}

#[test]
fn tunnel_like_dns_queries_in_a_capture_are_a_dns_tunnel_finding() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tunnel.pcap");
    write_pcap(&pcap, &tunnel(40));
    let r = replay::run(&args(&pcap)).unwrap();
    assert_eq!(r.dns.len(), 80, "40 queries and 40 answers");
    assert_eq!(r.dns_malformed, 1);
    assert_eq!(r.summary().dns_messages, 80);
    let t: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.detector == "dns_tunnel")
        .collect();
    assert_eq!(t.len(), 1, "{:#?}", r.findings);
    assert_eq!(t[0].evidence.names[0], "tunnel-example.com");
    assert_eq!(t[0].device.mac.unwrap().to_string(), "02:00:00:00:00:77");
    assert_eq!(t[0].peer.unwrap().to_string(), "198.51.100.53");
    assert_eq!(t[0].technique.id, "T1071.004");
    assert!(r.detectors.contains(&"dns_tunnel"));
    assert!(r.detectors.contains(&"dns_nxdomain"));

    // A few such queries (under the host threshold of 30 names) raise nothing.
    write_pcap(&pcap, &tunnel(10));
    let r = replay::run(&args(&pcap)).unwrap();
    assert!(
        r.findings.iter().all(|f| f.detector != "dns_tunnel"),
        "{:#?}",
        r.findings
    );
}

/// An answer to `name` (type A) with one address record, TTL 60 s.
fn a_answer(id: u16, name: &str, addr: [u8; 4]) -> Vec<u8> {
    let mut m = dns(id, 0x8180, name, 1);
    m[7] = 1; // one answer record
    // The question's name (a pointer to offset 12), A, IN, TTL, 4 bytes of address.
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    m.extend_from_slice(&addr);
    m
}

#[test]
fn replay_names_flows_from_the_site_resolvers_answers_only() {
    // The demo ward: its pump (192.0.2.10), its resolver group `dns` (198.51.100.53).
    let site =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles/sites/demo-ward.yaml");
    const PUMP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const PUMP: [u8; 4] = [192, 0, 2, 10];
    let answer = |server: [u8; 4], name: &str, addr: [u8; 4]| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(ROUTER_MAC, PUMP_MAC)
            .ipv4(server, PUMP, 64)
            .udp(53, 40000)
            .write(&mut out, &a_answer(7, name, addr))
            .unwrap();
        out
    };
    let syn = |to: [u8; 4]| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(PUMP_MAC, ROUTER_MAC)
            .ipv4(PUMP, to, 64)
            .tcp(41000, 443, 1, 64240)
            .syn()
            .write(&mut out, &[])
            .unwrap();
        out
    };
    let (named, forged) = ([203, 0, 113, 5], [203, 0, 113, 6]);
    let frames = vec![
        (T0, answer(RESOLVER, "api.vendor.example", named)),
        // The same from a hospital host that is no resolver of the site.
        (
            T0,
            answer([198, 51, 100, 20], "forged.vendor.example", forged),
        ),
        (T0 + Duration::from_secs(1), syn(named)),
        (T0 + Duration::from_secs(1), syn(forged)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("names.pcap");
    write_pcap(&pcap, &frames);
    let r = replay::run(&ReplayArgs {
        site: Some(site),
        ..args(&pcap)
    })
    .unwrap();
    let name_of = |to: [u8; 4]| {
        let to = std::net::IpAddr::from(to);
        let f: Vec<_> = r.flows.iter().filter(|f| f.peer == to).collect();
        assert_eq!(f.len(), 1, "{:#?}", r.flows);
        f[0].peer_name.clone()
    };
    assert_eq!(name_of(named).as_deref(), Some("api.vendor.example"));
    assert_eq!(name_of(forged), None);
    // A profile that names another group as its resolvers (`dns_resolvers: hl7-engine`, the
    // group of 198.51.100.20) makes that host's answers count too, as live.
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(
        profiles.join("odd.yaml"),
        "name: odd\ndns_resolvers: hl7-engine\nflows: []\n",
    )
    .unwrap();
    let r = replay::run(&ReplayArgs {
        site: Some(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles/sites/demo-ward.yaml"),
        ),
        profiles: Some(profiles),
        ..args(&pcap)
    })
    .unwrap();
    let f: Vec<_> = r
        .flows
        .iter()
        .filter(|f| f.peer == std::net::IpAddr::from(forged))
        .collect();
    assert_eq!(f[0].peer_name.as_deref(), Some("forged.vendor.example"));
}
