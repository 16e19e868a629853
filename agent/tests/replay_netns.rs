//! Attach tier: captures the project makes in network namespaces from real tools, then
//! `replay` on them. The device (an infusion pump by the site file) runs Debian's nmap SYN scan
//! against a server, tries SMB on another, and floods UDP; dumpcap captures on the gateway's
//! device-facing interface. The scan is one vertical-scan finding naming the pump, the SMB
//! attempt a class-protocol finding, the flood a UDP-flood finding. Then the other way: a
//! hospital workstation scans the pump (nmap SYN and NULL scans); the workstation is the subject
//! of the findings and the pump their evidence. Needs root; fails (never skips) without it.

mod capture;
mod traffic;

use std::time::Duration;

use capture::{Capture, FileFormat};
use wardgate_agent::replay::{self, Format, ReplayArgs};
use wardgate_analysis::detect::Finding;
use wardgate_testkit::ward::{DEV_IF, Ward};

const SITE: &str = "site: detect-lab
groups:
  servers: [198.51.100.0/24]
devices:
  - name: pump-lab
    mac: 02:00:00:00:00:0a
    addresses: [192.0.2.10]
    profile: infusion-pump
    gateway: gw-lab
";

fn require_root() {
    // Safety: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "attach tier cannot run: needs root for network namespaces; run `sudo cargo xtask test`"
    );
}

/// `replay` of the capture `file` with the lab's site file (written into `dir`).
fn replay_with_site(dir: &std::path::Path, file: &std::path::Path) -> replay::Replayed {
    let site = dir.join("site.yaml");
    std::fs::write(&site, SITE).unwrap();
    replay::run(&ReplayArgs {
        pcap: vec![file.to_path_buf()],
        site: Some(site),
        baselines: None,
        profiles: None,
        config: None,
        format: Format::Json,
        summary: None,
    })
    .unwrap()
}

fn by_detector<'a>(findings: &'a [Finding], detector: &str) -> Vec<&'a Finding> {
    findings.iter().filter(|f| f.detector == detector).collect()
}

#[test]
fn nmap_smb_and_flood_from_a_pump_are_found() {
    require_root();
    let ward = Ward::new("detect");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.pcap");
    let cap = Capture::start(&ward.gw, DEV_IF, None, FileFormat::Pcap, &file);

    traffic::pump_scans_tries_smb_and_floods(&ward);
    std::thread::sleep(Duration::from_millis(500));
    cap.stop();

    let r = replay_with_site(dir.path(), &file);
    let by = |d: &str| by_detector(&r.findings, d);
    let scan = by("scan_vertical");
    assert_eq!(scan.len(), 1, "{:#?}", r.findings);
    assert_eq!(scan[0].device.name, "pump-lab");
    assert_eq!(scan[0].peer.unwrap().to_string(), "198.51.100.10");
    assert_eq!(
        scan[0].evidence.metrics[0].observed, 200.0,
        "{:#?}",
        scan[0]
    );
    // Raised at the 6th port within 2 s (a site device's burst count), then once per port.
    assert_eq!(scan[0].count, 200 - 6 + 1);
    let smb: Vec<_> = by("class_protocol")
        .into_iter()
        .filter(|f| f.evidence.ports == [445])
        .collect();
    assert_eq!(smb.len(), 1, "{:#?}", r.findings);
    assert_eq!(smb[0].peer.unwrap().to_string(), "198.51.100.30");
    let flood = by("flood_udp");
    assert_eq!(flood.len(), 1, "{:#?}", r.findings);
    assert_eq!(flood[0].peer.unwrap().to_string(), "198.51.100.53");
    // Nothing else: the scan probed no port the class forbids (1000-1199), one server only.
    let others: Vec<_> = r
        .findings
        .iter()
        .filter(|f| {
            !["scan_vertical", "class_protocol", "flood_udp"].contains(&f.detector.as_str())
        })
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    eprintln!("replay of the lab capture:");
    replay::print(&r.findings, Format::Cef, &mut std::io::stderr()).unwrap();
}

#[test]
fn nmap_from_the_hospital_side_names_the_scanner_and_the_pump() {
    require_root();
    let ward = Ward::new("inscan");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.pcap");
    let cap = Capture::start(&ward.gw, DEV_IF, None, FileFormat::Pcap, &file);
    traffic::workstation_scans_pump(&ward);
    cap.stop();

    let r = replay_with_site(dir.path(), &file);
    let by = |d: &str| by_detector(&r.findings, d);
    let scan = by("scan_vertical");
    assert_eq!(scan.len(), 1, "{:#?}", r.findings);
    assert_eq!(
        scan[0].device.name, "198.51.100.20",
        "the scanner is the subject"
    );
    assert_eq!(
        scan[0].peer.unwrap().to_string(),
        "192.0.2.10",
        "the pump is the evidence"
    );
    assert_eq!(
        scan[0].evidence.metrics[0].observed, 200.0,
        "every probed port counts, the open one too (half-open): {:#?}",
        scan[0]
    );
    let null = by("scan_flag_probe");
    assert_eq!(null.len(), 1, "{:#?}", r.findings);
    assert_eq!(null[0].device.name, "198.51.100.20");
    assert!(
        null[0].summary.contains("NULL probe"),
        "{}",
        null[0].summary
    );
    // The pump is never blamed.
    assert!(
        r.findings.iter().all(|f| f.device.name != "pump-lab"),
        "{:#?}",
        r.findings
    );
    eprintln!("replay of the inbound scan capture:");
    replay::print(&r.findings, Format::Cef, &mut std::io::stderr()).unwrap();
}
