//! `wardgate-agent replay` on the fixture captures: the SYN scan is one aggregated finding naming
//! the scanner with its count; SMB from a device the site makes an infusion pump is a
//! class-protocol finding; the clean single-protocol captures raise nothing; every format prints
//! one parseable line per finding. No privileges needed.

use std::path::{Path, PathBuf};

use wardgate_agent::replay::{self, Format, ReplayArgs};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../analysis/tests/fixtures")
}

fn args(pcap: &str, site: Option<&str>) -> ReplayArgs {
    ReplayArgs {
        pcap: vec![root().join("pcap").join(pcap)],
        site: site.map(|s| root().join("sites").join(s)),
        baselines: None,
        profiles: None,
        config: None,
        format: Format::Json,
        summary: None,
    }
}

#[test]
fn synscan_is_one_aggregated_scan_finding_naming_the_scanner() {
    let r = replay::run(&args("ndpi/synscan.pcap", None)).unwrap();
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = &r.findings[0];
    assert_eq!(f.detector, "scan_vertical");
    assert_eq!(f.device.mac.unwrap().to_string(), "00:25:b3:bf:91:ee");
    assert_eq!(f.flows[0].device_addr.to_string(), "172.16.0.8");
    assert_eq!(f.peer.unwrap().to_string(), "64.13.134.52");
    // tshark: 1000 distinct destination ports got a SYN, 3 answered with a SYN-ACK.
    let ports = &f.evidence.metrics[0];
    assert_eq!(ports.name, "distinct_ports");
    assert_eq!(ports.observed, 997.0);
    // Raised at the 8th port within 2 s (a general host's burst count), then once per port new
    // in a window (a few SYNs retried after 2 s are new again in the 2 s window).
    assert_eq!(f.count, 991);
    assert_eq!(f.technique.id, "T1046");
    assert!(
        f.summary.contains("997 tcp ports on 64.13.134.52"),
        "{}",
        f.summary
    );
}

/// A class's `detection:` tuning, read from its profile: `off` silences the detector for the
/// class's devices; a misspelt detector is refused at its line and column.
#[test]
fn a_profiles_detection_tuning_applies_to_its_class() {
    let dir = tempfile::tempdir().unwrap();
    let write = |body: &str| {
        std::fs::write(
            dir.path().join("infusion-pump.yaml"),
            format!("name: infusion-pump\ndetection:\n{body}flows: []\n"),
        )
        .unwrap();
    };
    let mut a = args("ndpi/smbv1.pcap", Some("smbv1-pump.yaml"));
    a.profiles = Some(dir.path().to_path_buf());
    write("  scan_vertical: 40\n");
    let r = replay::run(&a).unwrap();
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    write("  class_protocol: off\n");
    let r = replay::run(&a).unwrap();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    write("  scan_vertical: 40\n  class_protocl: off\n");
    let Err(e) = replay::run(&a) else {
        panic!("a misspelt detector is refused")
    };
    let e = e.to_string();
    assert!(
        e.contains("infusion-pump.yaml:4:3: detection: `class_protocl` is not a detector"),
        "{e}"
    );
}

#[test]
fn smb_from_an_infusion_pump_is_a_class_protocol_finding() {
    let r = replay::run(&args("ndpi/smbv1.pcap", Some("smbv1-pump.yaml"))).unwrap();
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = &r.findings[0];
    assert_eq!(f.detector, "class_protocol");
    assert_eq!(f.device.name, "pump-smb");
    assert_eq!(f.class.as_deref(), Some("infusion-pump"));
    assert_eq!(f.asset_id.as_deref(), Some("BME-004211"));
    assert_eq!(f.technique.id, "T0886");
    assert_eq!(f.evidence.ports, vec![445]);
    assert_eq!(f.action, "wardctl mode pump-smb quarantine");
    // Without the site the client has no class: nothing.
    assert!(
        replay::run(&args("ndpi/smbv1.pcap", None))
            .unwrap()
            .findings
            .is_empty()
    );
}

#[test]
fn clean_captures_raise_nothing() {
    for pcap in [
        "ndpi/mqtt.pcap",
        "ndpi/modbus.pcap",
        "ndpi/bacnet.pcap",
        "ndpi/snmp.pcap",
        "ndpi/syslog.pcap",
        "ndpi/ssdp-m-search.pcap",
        "suricata-verify/mqtt-events-invalid-qos.pcap",
        "suricata-verify/mqtt311-pub-userpass.pcap",
    ] {
        let r = replay::run(&args(pcap, None)).unwrap();
        assert!(r.frames > 0, "{pcap}");
        assert!(r.findings.is_empty(), "{pcap}: {:#?}", r.findings);
    }
}

#[test]
fn every_format_prints_one_line_per_finding() {
    let r = replay::run(&args("ndpi/synscan.pcap", None)).unwrap();
    for format in [Format::Json, Format::Cef, Format::Ocsf] {
        let mut out = Vec::new();
        replay::print(&r.findings, format, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{format:?}: {text}");
        match format {
            Format::Json => {
                let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
                assert_eq!(v["detector"], "scan_vertical");
            }
            Format::Cef => {
                assert!(lines[0].starts_with("<36>1 2010-07-04T20:24:21.314308Z - wardgate - scan_vertical - CEF:0|wardgate|wardgate|"), "{}", lines[0]);
                assert!(lines[0].contains(" cnt=991 "), "{}", lines[0]);
            }
            Format::Ocsf => {
                let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
                assert_eq!(
                    (v["class_uid"].as_u64(), v["type_uid"].as_u64()),
                    (Some(2004), Some(200401))
                );
                assert_eq!(v["finding_info"]["uid"], r.findings[0].id.as_str());
            }
        }
    }
}

#[test]
fn bad_inputs_are_named() {
    let mut a = args("ndpi/synscan.pcap", None);
    a.baselines = Some(root().join("no-such-dir"));
    let e = format!("{:#}", replay::run(&a).err().unwrap());
    assert!(e.contains("no-such-dir"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("detect.yaml");
    std::fs::write(
        &cfg,
        "scan:\n  window_s: 60\n  vertcal: {host: 1, device: 1}\n",
    )
    .unwrap();
    let mut a = args("ndpi/synscan.pcap", None);
    a.config = Some(cfg.clone());
    let e = format!("{:#}", replay::run(&a).err().unwrap());
    assert!(e.contains("detect.yaml") && e.contains("vertcal"), "{e}");
    // A valid partial config applies: a 0 s window never holds 15 of the scan's ports.
    std::fs::write(
        &cfg,
        "scan:\n  windows: [{window_s: 0, vertical: {host: 15, device: 8}, horizontal: {host: 25, device: 10}}]\n",
    )
    .unwrap();
    let r = replay::run(&a).unwrap();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

/// The OCSF lines validate against the OCSF schema's own models (py-ocsf-models, installed by
/// `cargo xtask setup`): required attributes, types and enums (class_uid, type_uid,
/// severity_id, metadata.product, finding_info.uid).
#[test]
fn ocsf_findings_validate_against_py_ocsf_models() {
    let mut lines = Vec::new();
    for (pcap, site) in [
        ("ndpi/synscan.pcap", None),
        ("ndpi/smbv1.pcap", Some("smbv1-pump.yaml")),
    ] {
        let r = replay::run(&args(pcap, site)).unwrap();
        replay::print(&r.findings, Format::Ocsf, &mut lines).unwrap();
    }
    assert_eq!(
        wardgate_testkit::ocsf::validate_detection_findings(std::str::from_utf8(&lines).unwrap()),
        2
    );
}

#[test]
fn baselines_are_read_whole_and_a_bad_file_is_named() {
    let out = tempfile::tempdir().unwrap();
    let l = wardgate_agent::learn::run(&wardgate_agent::learn::LearnArgs {
        pcap: vec![root().join("pcap/ndpi/modbus.pcap")],
        site: None,
        out: Some(out.path().to_path_buf()),
        propose: None,
        simulate: None,
        devices: Vec::new(),
        include_incomplete: false,
    })
    .unwrap();
    let b = replay::read_baselines(out.path()).unwrap();
    assert!(!l.baselines.is_empty());
    assert_eq!(b.len(), l.baselines.len());
    for full in &l.baselines {
        let got = b.get(&full.device.name).expect("every device read");
        assert_eq!(got.window(), full.window);
        assert!(full.peers.iter().all(|p| got.knows_peer(p.addr)));
    }
    let mut a = args("ndpi/modbus.pcap", None);
    a.baselines = Some(out.path().to_path_buf());
    replay::run(&a).unwrap();

    // Cut mid-file, and a list of something else: the file and what failed are named.
    let text = std::fs::read_to_string(out.path().join("baselines.json")).unwrap();
    let bad = out.path().join("cut.json");
    std::fs::write(&bad, &text[..text.len() - 10]).unwrap();
    let e = format!("{:#}", replay::read_baselines(&bad).err().unwrap());
    assert!(e.contains("cut.json") && e.contains("EOF"), "{e}");
    std::fs::write(&bad, r#"[{"device": {"name": "pump-1"}, "flows": 3}]"#).unwrap();
    a.baselines = Some(bad);
    let e = format!("{:#}", replay::run(&a).err().unwrap());
    assert!(
        e.contains("cut.json") && e.contains("missing field `window`"),
        "{e}"
    );
}

/// Every kind of OCSF event the product emits (a Detection Finding created and updated, a
/// Network Activity for a deny and for a would-deny) follows the official schema of the OCSF
/// version it names: no attribute the schema does not define, types and enums as the schema
/// says (`wardgate_testkit::ocsf::validate_against_schema`).
#[test]
fn ocsf_events_of_every_kind_follow_the_official_schema() {
    use wardgate_analysis::{
        detect::format::ocsf::{self, DenyRecord},
        flow::{DeviceRef, FlowDirection},
    };
    let mut lines = String::new();
    let r = replay::run(&args("ndpi/synscan.pcap", None)).unwrap();
    assert!(!r.findings.is_empty());
    for f in &r.findings {
        lines.push_str(&ocsf::event(f, false).to_string());
        lines.push('\n');
        lines.push_str(&ocsf::event(f, true).to_string());
        lines.push('\n');
    }
    for (enforced, mac) in [(true, Some("02:00:00:00:00:0a")), (false, None)] {
        let d = DenyRecord {
            id: format!("deny-{enforced}"),
            time_ns: 1_700_000_000_000_000_000,
            gateway: Some("gw-1".into()),
            device: DeviceRef {
                name: "pump-1".into(),
                id: Some(1),
                mac: mac.map(|m| m.parse().unwrap()),
            },
            direction: FlowDirection::Opened,
            src: "192.0.2.10".parse().unwrap(),
            src_port: 40000,
            dst: "203.0.113.99".parse().unwrap(),
            dst_port: 4444,
            proto: 17,
            reason: "policy".into(),
            enforced,
            generation: Some(3),
        };
        lines.push_str(&ocsf::network_activity(&d).to_string());
        lines.push('\n');
    }
    assert_eq!(
        wardgate_testkit::ocsf::validate_against_schema(&lines),
        2 * r.findings.len() + 2
    );
}
