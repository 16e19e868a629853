//! `wardgate-agent learn` on captures: every third-party fixture, generated captures for every
//! link type (pcap and multi-section pcapng with nanosecond timestamps), a refused link type, a
//! file cut mid-packet, a malformed packet, and a site file. No privileges needed.

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    time::Duration,
};

use etherparse::PacketBuilder;
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        Block, PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            section_header::SectionHeaderBlock,
        },
    },
};
use wardgate_agent::learn::{self, LearnArgs, Learned};
use wardgate_analysis::{FlowDirection, TcpOutcome};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../analysis/tests/fixtures/pcap")
}

fn learn_files(
    files: &[PathBuf],
    site: Option<PathBuf>,
) -> anyhow::Result<(Learned, tempfile::TempDir)> {
    let out = tempfile::tempdir()?;
    let l = learn::run(&LearnArgs {
        pcap: files.to_vec(),
        site,
        out: Some(out.path().to_path_buf()),
        propose: None,
        simulate: None,
        devices: Vec::new(),
        include_incomplete: false,
    })?;
    Ok((l, out))
}

/// Frame counts as `capinfos -c` gives them.
const FIXTURES: &[(&str, u64, &str)] = &[
    ("ndpi/bacnet.pcap", 23, "pcapng"),
    ("ndpi/modbus.pcap", 102, "pcap"),
    ("ndpi/mqtt.pcap", 9, "pcapng"),
    ("ndpi/smb_frags.pcap", 8, "pcap"),
    ("ndpi/smbv1.pcap", 7, "pcap"),
    ("ndpi/snmp.pcap", 72, "pcapng"),
    ("ndpi/ssdp-m-search.pcap", 19, "pcap"),
    ("ndpi/synscan.pcap", 2011, "pcap"),
    ("ndpi/syslog.pcap", 94, "pcap"),
    ("ndpi/telnet.pcap", 92, "pcap"),
    ("suricata-verify/mqtt-events-invalid-qos.pcap", 12, "pcap"),
    ("suricata-verify/mqtt311-pub-userpass.pcap", 12, "pcap"),
];

#[test]
fn every_fixture_capture_is_read_whole() {
    let mut on_disk: Vec<String> = Vec::new();
    for dir in ["ndpi", "suricata-verify"] {
        for e in std::fs::read_dir(fixtures().join(dir)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".pcap") || name.ends_with(".pcapng") {
                on_disk.push(format!("{dir}/{name}"));
            }
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|(f, _, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every fixture capture is in the table");
    for (file, frames, format) in FIXTURES {
        let (l, out) = learn_files(&[fixtures().join(file)], None).unwrap();
        let f = &l.files[0];
        assert_eq!((f.end.frames, f.end.format), (*frames, *format), "{file}");
        assert_eq!((f.malformed, f.end.cut.as_deref()), (0, None), "{file}");
        assert!(l.table.flows > 0 && l.records > 0, "{file}: {:?}", l.table);
        assert!(!l.baselines.is_empty(), "{file}");
        // The outputs are there and read back.
        let flows = std::fs::read_to_string(out.path().join("flows.jsonl")).unwrap();
        assert_eq!(flows.lines().count(), l.records, "{file}");
        for line in flows.lines() {
            serde_json::from_str::<wardgate_analysis::FlowRecord>(line).unwrap();
        }
        let b: Vec<wardgate_analysis::baseline::Baseline> = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("baselines.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(b.len(), l.baselines.len());
    }
}

#[test]
fn a_syn_scan_is_one_device_with_many_refused_or_unanswered_flows() {
    let (l, _) = learn_files(&[fixtures().join("ndpi/synscan.pcap")], None).unwrap();
    // The scanner opened every flow; the target received them (each flow is a record on both).
    let scanner = l
        .baselines
        .iter()
        .find(|b| {
            b.flows >= 1000
                && b.services
                    .iter()
                    .all(|s| s.direction == FlowDirection::Opened)
        })
        .unwrap();
    let target = l
        .baselines
        .iter()
        .find(|b| {
            b.flows >= 1000
                && b.services
                    .iter()
                    .all(|s| s.direction == FlowDirection::Received)
        })
        .unwrap();
    assert_eq!(scanner.flows, target.flows);
    assert_eq!(scanner.peers.len(), 1, "one target");
    assert!(
        scanner.services_overflow > 900,
        "ports past the bound are counted"
    );
    assert!(
        scanner.tcp.refused + scanner.tcp.no_answer > 900,
        "{:?}",
        scanner.tcp
    );
    let r = l
        .flows
        .iter()
        .find(|r| r.device == scanner.device && r.tcp == Some(TcpOutcome::Refused))
        .unwrap();
    assert_eq!(r.direction, FlowDirection::Opened);
}

#[test]
fn modbus_client_and_server_sides() {
    let (l, _) = learn_files(&[fixtures().join("ndpi/modbus.pcap")], None).unwrap();
    let opened: Vec<_> = l
        .flows
        .iter()
        .filter(|r| r.port == 502 && r.direction == FlowDirection::Opened)
        .collect();
    let received: Vec<_> = l
        .flows
        .iter()
        .filter(|r| r.port == 502 && r.direction == FlowDirection::Received)
        .collect();
    assert!(!opened.is_empty() && !received.is_empty(), "{:#?}", l.flows);
    assert!(
        opened
            .iter()
            .all(|r| r.proto == 6 && r.packets_out > 0 && r.packets_in > 0)
    );
    assert_eq!(opened[0].bytes_out, received[0].bytes_in);
}

// Generated captures ------------------------------------------------------------------------

const DEV_MAC: [u8; 6] = [0x00, 0x09, 0xfb, 0x00, 0x00, 0x01]; // Philips
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// A UDP datagram 192.0.2.10:40000 -> 198.51.100.53:53 (IPv4) or 2001:db8::10 -> 2001:db8::53.
fn ip_udp(v6: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if v6 {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut b = a;
        a[15] = 0x10;
        b[15] = 0x53;
        PacketBuilder::ipv6(a, b, 64)
            .udp(40000, 53)
            .write(&mut out, payload)
            .unwrap();
    } else {
        PacketBuilder::ipv4([192, 0, 2, 10], [198, 51, 100, 53], 64)
            .udp(40000, 53)
            .write(&mut out, payload)
            .unwrap();
    }
    out
}

fn ethernet(l3: &[u8], v6: bool) -> Vec<u8> {
    let mut f = PEER_MAC.to_vec();
    f.extend_from_slice(&DEV_MAC);
    f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    f.extend_from_slice(l3);
    f
}

fn sll(l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 4, 0, 1, 0, 6];
    f.extend_from_slice(&DEV_MAC);
    f.extend_from_slice(&[0, 0, 0x08, 0x00]);
    f.extend_from_slice(l3);
    f
}

fn sll2(l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 3, 0, 1, 4, 6];
    f.extend_from_slice(&DEV_MAC);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(l3);
    f
}

fn null(l3: &[u8], family: u32, be: bool) -> Vec<u8> {
    let mut f = if be {
        family.to_be_bytes()
    } else {
        family.to_le_bytes()
    }
    .to_vec();
    f.extend_from_slice(l3);
    f
}

fn write_pcap(path: &Path, link: DataLink, ts: TsResolution, frames: &[(Duration, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let header = PcapHeader {
        datalink: link,
        ts_resolution: ts,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).unwrap();
    for (t, f) in frames {
        w.write_packet(&PcapPacket::new(*t, f.len() as u32, f))
            .unwrap();
    }
}

const T0: u64 = 1_780_000_000_123_456_789; // ns since the epoch (2026)

#[test]
fn every_link_type_in_pcap_files() {
    let dir = tempfile::tempdir().unwrap();
    let v4 = ip_udp(false, b"query");
    let v6 = ip_udp(true, b"query");
    let cases: Vec<(&str, DataLink, Vec<u8>, &str)> = vec![
        (
            "eth",
            DataLink::ETHERNET,
            ethernet(&v4, false),
            "PhilipsP-00:09:fb:00:00:01",
        ),
        (
            "sll",
            DataLink::LINUX_SLL,
            sll(&v4),
            "PhilipsP-00:09:fb:00:00:01",
        ),
        (
            "sll2",
            DataLink::LINUX_SLL2,
            sll2(&v6),
            "PhilipsP-00:09:fb:00:00:01",
        ),
        ("raw", DataLink::RAW, v4.clone(), "host-192.0.2.10"),
        ("ipv6", DataLink::IPV6, v6.clone(), "host-2001:db8::10"),
        (
            "null",
            DataLink::NULL,
            null(&v4, 2, false),
            "host-192.0.2.10",
        ),
        (
            "null6",
            DataLink::NULL,
            null(&v6, 30, false),
            "host-2001:db8::10",
        ),
        (
            "loop",
            DataLink::LOOP,
            null(&v4, 2, true),
            "host-192.0.2.10",
        ),
    ];
    for (name, link, frame, device) in cases {
        let path = dir.path().join(format!("{name}.pcap"));
        write_pcap(
            &path,
            link,
            TsResolution::NanoSecond,
            &[(Duration::from_nanos(T0), frame)],
        );
        let (l, _) = learn_files(&[path], None).unwrap();
        assert_eq!((l.frames, l.malformed), (1, 0), "{name}");
        assert_eq!(l.records, 1, "{name}");
        let r = &l.flows[0];
        assert_eq!(r.device.name, device, "{name}");
        assert_eq!(
            (r.direction, r.proto, r.port),
            (FlowDirection::Opened, 17, 53),
            "{name}"
        );
        assert_eq!(r.first_seen_ns, T0, "{name}: nanosecond timestamp");
    }
}

#[test]
fn pcapng_sections_interfaces_and_timestamp_resolutions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("multi.pcapng");
    let file = std::fs::File::create(&path).unwrap();
    let mut w = PcapNgWriter::with_endianness(file, Endianness::Little).unwrap();
    let iface = |link, resol: Option<u8>| InterfaceDescriptionBlock {
        linktype: link,
        snaplen: 0,
        options: resol
            .map(InterfaceDescriptionOption::IfTsResol)
            .into_iter()
            .collect(),
    };
    let epb = |id, raw_ts: u64, data: Vec<u8>| EnhancedPacketBlock {
        interface_id: id,
        // pcap-file writes the raw count; its unit is the interface's resolution.
        timestamp: Duration::from_nanos(raw_ts),
        original_len: data.len() as u32,
        data: Cow::Owned(data),
        options: vec![],
    };
    let v4 = ip_udp(false, b"a");
    let v6 = ip_udp(true, b"b");
    // Section 1: Ethernet in nanoseconds, SLL in the default microseconds.
    w.write_pcapng_block(iface(DataLink::ETHERNET, Some(9)))
        .unwrap();
    w.write_pcapng_block(iface(DataLink::LINUX_SLL, None))
        .unwrap();
    w.write_pcapng_block(epb(0, T0, ethernet(&v4, false)))
        .unwrap();
    w.write_pcapng_block(epb(1, T0 / 1000 + 5_000_000, sll(&v4)))
        .unwrap();
    // Section 2, big-endian: its interface 0 is SLL2 with 2^-20 s units, then raw IP.
    w.write_block(&Block::SectionHeader(SectionHeaderBlock {
        endianness: Endianness::Big,
        ..SectionHeaderBlock::default()
    }))
    .unwrap();
    w.write_pcapng_block(iface(DataLink::LINUX_SLL2, Some(0x80 | 20)))
        .unwrap();
    w.write_pcapng_block(iface(DataLink::RAW, Some(9))).unwrap();
    let t2_s = T0 / 1_000_000_000 + 100;
    w.write_pcapng_block(epb(0, t2_s << 20, sll2(&v6))).unwrap();
    w.write_pcapng_block(epb(1, T0 + 200_000_000_000, v4.clone()))
        .unwrap();
    drop(w);
    let (l, _) = learn_files(&[path], None).unwrap();
    let f = &l.files[0];
    assert_eq!((f.end.format, f.end.frames, f.malformed), ("pcapng", 4, 0));
    // Ethernet and SLL carry the device's MAC: one flow (5 s apart, inside the UDP timeout).
    let by_mac: Vec<_> = l
        .flows
        .iter()
        .filter(|r| r.device.mac.is_some() && r.proto == 17 && r.peer.is_ipv4())
        .collect();
    assert_eq!(by_mac.len(), 1, "{:#?}", l.flows);
    assert_eq!(by_mac[0].packets_out, 2);
    assert_eq!(by_mac[0].first_seen_ns, T0);
    assert_eq!(by_mac[0].last_seen_ns, (T0 / 1000 + 5_000_000) * 1000);
    let v6r = l.flows.iter().find(|r| r.peer.is_ipv6()).unwrap();
    assert_eq!(
        v6r.first_seen_ns,
        t2_s * 1_000_000_000,
        "binary timestamp resolution"
    );
    let raw = l.flows.iter().find(|r| r.device.mac.is_none()).unwrap();
    assert_eq!(raw.first_seen_ns, T0 + 200_000_000_000);
    assert_eq!(l.window.end_ns, T0 + 200_000_000_000);
}

#[test]
fn unsupported_link_types_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wifi.pcap");
    write_pcap(
        &path,
        DataLink::IEEE802_11_RADIOTAP,
        TsResolution::MicroSecond,
        &[(Duration::ZERO, vec![0; 40])],
    );
    let e = format!("{:#}", learn_files(&[path], None).unwrap_err());
    assert!(
        e.contains("IEEE802_11_RADIOTAP (127) is not supported"),
        "{e}"
    );
    assert!(e.contains("wifi.pcap"), "{e}");
}

#[test]
fn a_file_cut_mid_packet_is_read_up_to_the_cut() {
    let whole = std::fs::read(fixtures().join("ndpi/telnet.pcap")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pcap");
    // Cut 10 bytes into the last packet's data.
    std::fs::write(&path, &whole[..whole.len() - 30]).unwrap();
    let (l, _) = learn_files(std::slice::from_ref(&path), None).unwrap();
    let f = &l.files[0];
    assert_eq!(f.end.frames, 91, "every whole packet before the cut");
    assert_eq!(f.end.cut.as_deref(), Some("file ends inside packet 92"));
    let mut out = Vec::new();
    learn::print_summary(&l, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("file ends inside packet 92 (read up to the cut)"),
        "{text}"
    );
    // A pcapng cut inside a block.
    let whole = std::fs::read(fixtures().join("ndpi/snmp.pcap")).unwrap();
    std::fs::write(&path, &whole[..whole.len() - 7]).unwrap();
    let (l, _) = learn_files(&[path], None).unwrap();
    assert_eq!(l.files[0].end.frames, 71);
    assert!(
        l.files[0]
            .end
            .cut
            .as_deref()
            .unwrap()
            .starts_with("file ends inside block")
    );
}

#[test]
fn a_malformed_packet_is_counted_and_skipped_with_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pcap");
    let good = ethernet(&ip_udp(false, b"x"), false);
    let mut bad = good.clone();
    bad[14] = 0x4f; // IHL 15: a 60-byte header in a shorter packet
    let t = Duration::from_nanos(T0);
    write_pcap(
        &path,
        DataLink::ETHERNET,
        TsResolution::MicroSecond,
        &[
            (t, good.clone()),
            (t, bad),
            (t, good[..20].to_vec()),
            (t, good),
        ],
    );
    let (l, _) = learn_files(&[path], None).unwrap();
    assert_eq!((l.frames, l.malformed), (4, 2));
    let nums: Vec<u64> = l.malformed_listed.iter().map(|m| m.number).collect();
    assert_eq!(nums, vec![2, 3]);
    assert!(
        l.malformed_listed[0].error.contains("IPv4"),
        "{:?}",
        l.malformed_listed
    );
    assert_eq!(l.flows[0].packets_out, 2, "the good packets still count");
}

#[test]
fn a_site_names_devices_and_peer_groups() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("c.pcap");
    let frames: Vec<(Duration, Vec<u8>)> = (0..6u64)
        .map(|i| {
            (
                Duration::from_nanos(T0 + i * 30_000_000_000),
                ethernet(&ip_udp(false, b"q"), false),
            )
        })
        .collect();
    write_pcap(&cap, DataLink::ETHERNET, TsResolution::NanoSecond, &frames);
    let site = dir.path().join("site.yaml");
    std::fs::write(
        &site,
        "site: t\ngroups:\n  dns: [198.51.100.53/32]\ndevices:\n  - name: monitor-7\n    mac: 00:09:fb:00:00:01\n    addresses: [192.0.2.10]\n    profile: monitor\n    gateway: gw1\n",
    )
    .unwrap();
    let (l, out) = learn_files(std::slice::from_ref(&cap), Some(site)).unwrap();
    assert_eq!(l.baselines.len(), 1);
    let b = &l.baselines[0];
    assert_eq!(
        (b.device.name.as_str(), b.device.id),
        ("monitor-7", Some(1))
    );
    assert_eq!(b.peers[0].group.as_deref(), Some("dns"));
    // Flows 30 s apart: within the UDP timeout (60 s) they are one flow.
    assert_eq!(b.flows, 1);
    let devices: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("devices.json")).unwrap())
            .unwrap();
    assert_eq!(devices[0]["vendor"], "Philips Patient Monitoring");
    // A broken site file is refused with its position.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "site: t\ndevices:\n  - nam: x\n").unwrap();
    let e = format!("{:#}", learn_files(&[cap], Some(bad)).unwrap_err());
    assert!(e.contains("bad.yaml:3"), "{e}");
}

/// Local check against the GPL reference captures (tapirx), which the project must not copy:
/// run with `cargo test -p wardgate-agent --test learn -- --ignored` where they are present.
/// The expected values are what Wireshark's DICOM and HL7 dissectors show for the same files.
#[test]
#[ignore = "reads GPL captures from outside the repository (WARDGATE_GPL_FIXTURES)"]
fn gpl_reference_captures_local_check() {
    use wardgate_analysis::AppIdentity;
    let dir = PathBuf::from(
        std::env::var("WARDGATE_GPL_FIXTURES")
            .unwrap_or_else(|_| "/work/shared/fixtures/pcap/tapirx-gpl-reference-only".into()),
    );
    assert!(
        dir.is_dir(),
        "GPL reference captures not found at {}",
        dir.display()
    );
    let (l, _) = learn_files(&[dir.join("dicom_arq_1_find_testclient.pcap")], None).unwrap();
    let Some(AppIdentity::Dicom(rq)) = &l.flows[0].app else {
        panic!("{:?}", l.flows[0].app)
    };
    assert_eq!(
        (rq.calling_ae.as_str(), rq.called_ae.as_str()),
        ("testclient", "testserver")
    );
    assert_eq!(rq.application_context, "1.2.840.10008.3.1.1.1");
    assert_eq!(
        rq.abstract_syntaxes,
        [
            "1.2.840.10008.5.1.4.1.2.1.1",
            "1.2.840.10008.5.1.4.1.2.2.1",
            "1.2.840.10008.5.1.4.1.2.3.1",
            "1.2.840.10008.5.1.4.31"
        ]
    );
    assert_eq!(
        rq.implementation_class_uid.as_deref(),
        Some("1.2.826.0.1.3680043.9.7133.1.1")
    );
    assert_eq!(rq.implementation_version.as_deref(), Some("GODICOM_1_1"));
    for (file, app, fac, msg) in [
        (
            "HL7-ADT.pcap",
            "SENDING_APPLICATION",
            "SENDING_FACILITY",
            "ADT^A01",
        ),
        ("HL7-ORU.pcap", "SendingApp", "SendingFac", "ORU^R01"),
    ] {
        let (l, _) = learn_files(&[dir.join(file)], None).unwrap();
        let r = l
            .flows
            .iter()
            .find(|r| r.direction == FlowDirection::Opened)
            .unwrap();
        assert_eq!(r.port, 6661);
        let Some(AppIdentity::Hl7(h)) = &r.app else {
            panic!("{file}: {:?}", r.app)
        };
        assert_eq!(
            (h.sending_application.as_str(), h.sending_facility.as_str()),
            (app, fac),
            "{file}"
        );
        assert_eq!(
            (h.message_type.as_str(), h.version.as_str(), h.mllp),
            (msg, "2.3", true),
            "{file}"
        );
    }
}

fn learn_with(
    files: &[PathBuf],
    site: Option<PathBuf>,
    propose: Option<PathBuf>,
    simulate: Option<PathBuf>,
    devices: &[&str],
) -> anyhow::Result<Learned> {
    // The fixtures are one-sided captures (a broadcast, requests whose answers were not
    // captured): their proposals take every flow, as `learn --propose --include-incomplete`.
    let include_incomplete = propose.is_some();
    learn::run(&LearnArgs {
        pcap: files.to_vec(),
        site,
        out: None,
        propose,
        simulate,
        devices: devices.iter().map(|d| d.to_string()).collect(),
        include_incomplete,
    })
}

#[test]
fn proposals_from_every_fixture_block_nothing_of_their_capture() {
    for (file, _, _) in FIXTURES {
        let dir = tempfile::tempdir().unwrap();
        let cap = fixtures().join(file);
        // `--propose` itself refuses a proposal that blocks one of its own flows.
        let l = learn_with(
            std::slice::from_ref(&cap),
            None,
            Some(dir.path().into()),
            None,
            &[],
        )
        .unwrap();
        assert_eq!(l.proposed.len(), l.baselines.len(), "{file}");
        for (b, p) in l.baselines.iter().zip(&l.proposed) {
            let sim = learn_with(
                std::slice::from_ref(&cap),
                None,
                None,
                Some(p.clone()),
                &[&b.device.name],
            )
            .unwrap()
            .simulation
            .unwrap();
            assert_eq!(sim.devices, vec![b.device.name.clone()]);
            assert!(sim.flows > 0);
            assert!(sim.blocked.is_empty(), "{file}: {:?}", sim.blocked);
        }
    }
}

/// A TCP SYN from the device to `to`:`port` (Ethernet).
fn tcp_syn(to: [u8; 4], port: u16) -> Vec<u8> {
    let mut l3 = Vec::new();
    PacketBuilder::ipv4([192, 0, 2, 10], to, 64)
        .tcp(41000, port, 1, 1000)
        .syn()
        .write(&mut l3, &[])
        .unwrap();
    ethernet(&l3, false)
}

#[test]
fn a_proposal_blocks_a_flow_outside_its_capture_and_the_simulation_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = |s: u64| Duration::from_nanos(T0 + s * 1_000_000_000);
    let usual: Vec<(Duration, Vec<u8>)> = (0..5)
        .flat_map(|i| {
            [
                (t(i * 120), ethernet(&ip_udp(false, b"q"), false)),
                (t(i * 120 + 1), tcp_syn([198, 51, 100, 10], 104)),
            ]
        })
        .collect();
    let learned_cap = dir.path().join("week.pcap");
    write_pcap(
        &learned_cap,
        DataLink::ETHERNET,
        TsResolution::NanoSecond,
        &usual,
    );
    let mut later = usual.clone();
    later.push((t(900), tcp_syn([203, 0, 113, 7], 443)));
    later.push((t(901), tcp_syn([198, 51, 100, 10], 22)));
    let later_cap = dir.path().join("later.pcap");
    write_pcap(
        &later_cap,
        DataLink::ETHERNET,
        TsResolution::NanoSecond,
        &later,
    );
    let site = dir.path().join("site.yaml");
    std::fs::write(
        &site,
        "site: t\ngroups:\n  dns: [198.51.100.53/32]\n  pacs: [198.51.100.10/32]\ndevices:\n  - name: monitor-7\n    mac: 00:09:fb:00:00:01\n    addresses: [192.0.2.10]\n    profile: proposed-monitor-7\n    gateway: gw1\n",
    )
    .unwrap();
    let props = dir.path().join("proposed");
    let l = learn_with(
        std::slice::from_ref(&learned_cap),
        Some(site.clone()),
        Some(props.clone()),
        None,
        &[],
    )
    .unwrap();
    let path = props.join("proposed-monitor-7.yaml");
    assert_eq!(l.proposed, vec![path.clone()]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("peers: [\"group:dns\"]\n    ports: [53]"),
        "{text}"
    );
    assert!(
        text.contains("peers: [\"group:pacs\"]\n    ports: [104]"),
        "{text}"
    );
    assert!(text.contains("  # 5 flows, "), "{text}");
    // The site assigns the proposal to the device: simulated without naming it.
    let l = learn_with(&[later_cap], Some(site), None, Some(path), &[]).unwrap();
    let sim = l.simulation.as_ref().unwrap();
    assert_eq!(sim.devices, vec!["monitor-7".to_string()]);
    let blocked: Vec<(String, u16, u64)> = sim
        .blocked
        .iter()
        .map(|b| (b.peer.to_string(), b.port, b.flows))
        .collect();
    assert_eq!(
        blocked,
        vec![
            ("198.51.100.10".to_string(), 22, 1),
            ("203.0.113.7".to_string(), 443, 1)
        ]
    );
    let mut out = Vec::new();
    learn::print_summary(&l, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("would have blocked 2 flows"), "{text}");
    assert!(
        text.contains("monitor-7 -> 203.0.113.7 tcp/443: 1 flows"),
        "{text}"
    );
}

#[test]
fn a_broken_candidate_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "name: x\nflows:\n  - direction: from-device\n    protocol: tcp\n    peers: [any]\n    ports: [70000]\n").unwrap();
    let e = format!(
        "{:#}",
        learn_with(
            &[fixtures().join("ndpi/mqtt.pcap")],
            None,
            None,
            Some(p),
            &[]
        )
        .unwrap_err()
    );
    assert!(e.contains("bad.yaml:6"), "{e}");
    assert!(e.contains("70000"), "{e}");
    let e = format!(
        "{:#}",
        learn_with(
            &[fixtures().join("ndpi/mqtt.pcap")],
            None,
            None,
            Some(dir.path().join("none.yaml")),
            &[]
        )
        .unwrap_err()
    );
    assert!(e.contains("none.yaml"), "{e}");
}

/// `--simulate` on a capture of several devices, none named and no site assigning the
/// profile: refused with the devices to choose from, never the profile applied to all.
#[test]
fn simulating_a_capture_of_several_devices_needs_one_named() {
    let (file, l) = FIXTURES
        .iter()
        .find_map(|(file, _, _)| {
            let (l, _) = learn_files(&[fixtures().join(file)], None).ok()?;
            (l.devices.len() >= 2).then_some((*file, l))
        })
        .expect("a fixture capture with two devices or more");
    let cap = fixtures().join(file);
    let dir = tempfile::tempdir().unwrap();
    let proposed = learn_with(
        std::slice::from_ref(&cap),
        None,
        Some(dir.path().into()),
        None,
        &[],
    )
    .unwrap()
    .proposed;
    let profile = proposed[0].clone();
    let err = format!(
        "{:#}",
        learn_with(
            std::slice::from_ref(&cap),
            None,
            None,
            Some(profile.clone()),
            &[]
        )
        .expect_err("refused without --device")
    );
    assert!(
        err.contains("say which to simulate with --device NAME"),
        "{err}"
    );
    for d in &l.devices {
        assert!(err.contains(&d.name), "{err} names {}", d.name);
    }
    let first = l.devices[0].name.as_str();
    let sim = learn_with(
        std::slice::from_ref(&cap),
        None,
        None,
        Some(profile),
        &[first],
    )
    .unwrap()
    .simulation
    .unwrap();
    assert_eq!(sim.devices, vec![first.to_string()]);
}
