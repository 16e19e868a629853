//! Attach tier: captures the project makes itself from real peers in network namespaces (Debian's
//! dcmtk: echoscu and storescu -> storescp; python-hl7: mllp_send -> its MLLP server), taken by
//! dumpcap (tshark's capture engine) on the gateway (Ethernet, pcapng), inside the device (`-i any`: Linux cooked v2,
//! pcap) and on the server (`-i any`: Linux cooked v1, pcapng), then `learn` on each: the AE titles and MSH fields come out exactly as sent. Needs
//! root; fails (never skips) without it.

mod capture;

use std::{path::Path, process::Command, time::Duration};

use capture::{Capture, FileFormat};
use wardgate_agent::learn::{self, LearnArgs};
use wardgate_analysis::{AppIdentity, FlowDirection, LinkType};
use wardgate_testkit::{
    peers::{self, in_netns, run_within, until_ok},
    ward::{DEV_IF, Ward},
};

const CALLING: &str = "CT_SCANNER_1";
const CALLED: &str = "PACS_MAIN";
const MSH: &str = "MSH|^~\\&|PUMP_APP|ICU_3A|EMR_ENGINE|GENERAL_HOSP|20261129090000||ORU^R01^ORU_R01|MSG-42|P|2.6";

#[test]
fn dcmtk_and_python_hl7_identities_come_out_exactly_as_sent() {
    // Safety: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "attach tier cannot run: needs root for network namespaces; run `sudo cargo xtask test`"
    );
    let ward = Ward::new("learn");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The PACS (storescp) and the HL7 engine (python-hl7's MLLP server) in the server namespace.
    let _pacs = peers::storescp(&ward.srv, CALLED, 11112, &d.join("pacs"));
    let _engine = peers::mllp_server(&ward.srv, "198.51.100.20", 2575, &d.join("received.txt"));

    let gw_file = d.join("gateway.pcapng");
    let dev_file = d.join("device.pcap");
    let srv_file = d.join("server.pcapng");
    let gw_cap = Capture::start(&ward.gw, DEV_IF, None, FileFormat::Pcapng, &gw_file);
    let dev_cap = Capture::start(
        &ward.dev,
        "any",
        Some("LINUX_SLL2"),
        FileFormat::Pcap,
        &dev_file,
    );
    // On the server side the device is known by its address only (the gateway's MAC).
    let srv_cap = Capture::start(&ward.srv, "any", None, FileFormat::Pcapng, &srv_file);

    // DICOM from the device: a C-ECHO, then a C-STORE of a small image.
    until_ok("echoscu", Duration::from_secs(20), || {
        let mut c = in_netns(&ward.dev, "echoscu");
        c.args([
            "-to",
            "3",
            "-aet",
            CALLING,
            "-aec",
            CALLED,
            "198.51.100.10",
            "11112",
        ]);
        c
    });
    let image = peers::dicom_image(d);
    let mut c = in_netns(&ward.dev, "storescu");
    c.args([
        "-to",
        "3",
        "-aet",
        CALLING,
        "-aec",
        CALLED,
        "198.51.100.10",
        "11112",
    ])
    .arg(&image);
    let (ok, out) = run_within(c, Duration::from_secs(30));
    assert!(ok, "storescu:\n{out}");
    // HL7 ORU from the device (python-hl7's mllp_send).
    let msg = d.join("oru.hl7");
    std::fs::write(
        &msg,
        format!("\x0b{MSH}\rPID|1||12345\rOBX|1|NM|8867-4^Heart rate^LN||72|/min\r\x1c\r"),
    )
    .unwrap();
    let ack = until_ok("mllp_send", Duration::from_secs(20), || {
        let mut c = in_netns(&ward.dev, "python3");
        c.args(["-m", "hl7.client", "-p", "2575", "-f"])
            .arg(&msg)
            .arg("198.51.100.20");
        c
    });
    assert!(ack.contains("MSA|AA|MSG-42"), "acknowledged: {ack:?}");
    // Let the last FIN/ACKs reach both captures.
    std::thread::sleep(Duration::from_millis(500));
    gw_cap.stop();
    dev_cap.stop();
    srv_cap.stop();

    let site = d.join("site.yaml");
    std::fs::write(
        &site,
        "site: lab\ngroups:\n  pacs: [198.51.100.10/32]\n  hl7-engine: [198.51.100.20/32]\n\
         devices:\n  - name: ct-1\n    mac: 02:00:00:00:00:0a\n    addresses: [192.0.2.10, 2001:db8:1::10]\n    profile: ct\n    gateway: gw1\n",
    )
    .unwrap();
    for (file, link) in [
        (&gw_file, LinkType::Ethernet),
        (&dev_file, LinkType::LinuxSll2),
        (&srv_file, LinkType::LinuxSll),
    ] {
        check_capture_link(file, link);
        let out = d.join(format!(
            "out-{}",
            file.file_stem().unwrap().to_string_lossy()
        ));
        let l = learn::run(&LearnArgs {
            pcap: vec![file.clone()],
            site: Some(site.clone()),
            out: Some(out),
            propose: None,
            simulate: None,
            devices: Vec::new(),
            include_incomplete: false,
        })
        .unwrap();
        let name = file.display();
        assert_eq!(
            (l.malformed, l.files[0].end.cut.as_deref()),
            (0, None),
            "{name}"
        );
        let dicom: Vec<_> = l
            .flows
            .iter()
            .filter_map(|r| match &r.app {
                Some(AppIdentity::Dicom(a)) => Some((r, a)),
                _ => None,
            })
            .collect();
        assert_eq!(
            dicom.len(),
            2,
            "{name}: C-ECHO and C-STORE associations: {dicom:#?}"
        );
        for (r, a) in &dicom {
            assert_eq!(
                (r.device.name.as_str(), r.direction, r.port),
                ("ct-1", FlowDirection::Opened, 11112)
            );
            assert_eq!(
                (a.calling_ae.as_str(), a.called_ae.as_str()),
                (CALLING, CALLED),
                "{name}"
            );
            assert_eq!(a.application_context, "1.2.840.10008.3.1.1.1");
            if a.truncated {
                // storescu offers every storage SOP class: a PDU of several KiB, cut at the
                // first-bytes bound (1 KiB) before its user information item.
                assert!(a.abstract_syntaxes.len() > 1, "{a:?}");
                continue;
            }
            // dcmtk's own implementation class UID root and version name.
            let uid = a.implementation_class_uid.as_deref().unwrap_or_default();
            assert!(uid.starts_with("1.2.276.0.7230010.3"), "{a:?}");
            let version = a.implementation_version.as_deref().unwrap_or_default();
            assert!(version.starts_with("OFFIS_DCMTK_"), "{a:?}");
        }
        assert!(
            dicom
                .iter()
                .any(|(_, a)| a.abstract_syntaxes == ["1.2.840.10008.1.1"]),
            "C-ECHO: Verification SOP class only"
        );
        // storescu proposes many storage SOP classes; the list is bounded.
        assert!(dicom.iter().any(|(_, a)| a.abstract_syntaxes.len() > 1));
        let hl7: Vec<_> = l
            .flows
            .iter()
            .filter_map(|r| match &r.app {
                Some(AppIdentity::Hl7(h)) => Some((r, h)),
                _ => None,
            })
            .collect();
        assert_eq!(hl7.len(), 1, "{name}: {hl7:#?}");
        let (r, h) = hl7[0];
        assert_eq!(
            (r.direction, r.port, r.peer.to_string().as_str()),
            (FlowDirection::Opened, 2575, "198.51.100.20")
        );
        assert_eq!(h.field_separator, '|');
        assert_eq!(h.encoding_characters, "^~\\&");
        assert_eq!(
            (h.sending_application.as_str(), h.sending_facility.as_str()),
            ("PUMP_APP", "ICU_3A")
        );
        assert_eq!(
            (
                h.receiving_application.as_str(),
                h.receiving_facility.as_str()
            ),
            ("EMR_ENGINE", "GENERAL_HOSP")
        );
        assert_eq!(
            (h.message_type.as_str(), h.version.as_str(), h.mllp),
            ("ORU^R01^ORU_R01", "2.6", true)
        );
        // The baseline names the peers by site group and lists both identities.
        let b = l
            .baselines
            .iter()
            .find(|b| b.device.name == "ct-1")
            .unwrap();
        let groups: Vec<_> = b.peers.iter().filter_map(|p| p.group.as_deref()).collect();
        assert!(
            groups.contains(&"pacs") && groups.contains(&"hl7-engine"),
            "{name}: {groups:?}"
        );
        let apps: Vec<_> = b.apps.iter().map(|a| a.identity.as_str()).collect();
        assert!(
            apps.contains(&"dicom CT_SCANNER_1 -> PACS_MAIN"),
            "{apps:?}"
        );
        assert!(
            apps.contains(&"hl7 PUMP_APP/ICU_3A -> EMR_ENGINE/GENERAL_HOSP ORU^R01^ORU_R01"),
            "{apps:?}"
        );
    }
}

/// The capture has the link type this test means to cover (read back with capinfos's reader).
fn check_capture_link(file: &Path, want: LinkType) {
    let out = Command::new("capinfos")
        .args(["-E"])
        .arg(file)
        .output()
        .expect("capinfos (tshark)");
    let text = String::from_utf8_lossy(&out.stdout);
    let expect = match want {
        LinkType::Ethernet => "Ethernet",
        LinkType::LinuxSll2 => "Linux cooked-mode capture v2",
        LinkType::LinuxSll => "Linux cooked-mode capture v1",
        other => panic!("no capture of {other:?} here"),
    };
    assert!(text.contains(expect), "{}: {text}", file.display());
}
