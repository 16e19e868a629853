//! Attach tier: medical identity live. The agent binary runs in the gateway namespace; the
//! device (learning: no rule decides, so the gateway's default medical ports are inspected)
//! talks to real peers through it: dcmtk's echoscu to storescp on 11112, python-hl7's
//! mllp_send to its MLLP server on 2575, and a plain TCP echo on 8080. The datapath hands the
//! agent the first payload bytes of the DICOM and HL7 flows; the agent logs each flow's app
//! identity when it is found (`app identity ... app=<JSON>`), and the AE titles and MSH fields
//! must be exactly as sent. The 8080 flow gets none. Needs root; fails (never skips) without it.

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use support::*;
use wardgate_agent::config::AgentConfig;
use wardgate_analysis::AppIdentity;
use wardgate_policy::{
    Mode,
    desired::{DeviceEntry, MacAddr, PolicyEntry},
    lower::lower,
};
use wardgate_testkit::{
    agent::AgentProcess,
    peers::{self, in_netns, until_ok},
    ward::{DEV_IF, Ward, tcp_echo, tcp_roundtrip},
};

const CALLING: &str = "MODALITY1";
const CALLED: &str = "PACS1";
const MSH: &str =
    "MSH|^~\\&|MONITOR_APP|ICU_7B|LAB_ENGINE|CITY_HOSP|20261203101500||ORU^R01^ORU_R01|MSG-7|P|2.5";

/// The app identities the agent logged, with the flow's service port.
fn identities(log: &str) -> Vec<(u16, AppIdentity)> {
    log.lines()
        .filter(|l| l.contains("app identity"))
        .map(|l| {
            let port = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("port="))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no port in {l}"));
            let json = &l[l.find("app=").unwrap_or_else(|| panic!("no app in {l}")) + 4..];
            let app = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
            (port, app)
        })
        .collect()
}

fn write_desired(path: &Path) {
    let dev = DeviceEntry {
        device_id: 1,
        name: "modality-1".into(),
        addrs: vec!["192.0.2.10".parse().unwrap()],
        mac: MacAddr([2, 0, 0, 0, 0, 0x0a]),
        policy_id: 1,
        mode: Mode::Learn,
        max_flows: 0,
        fail_open: false,
        grace_s: wardgate_common::DEFAULT_GRACE_S,
    };
    let policy = PolicyEntry {
        policy_id: 1,
        profile: "ct".into(),
        profile_version: 1,
        rules: Vec::new(),
        sensitivity: Default::default(),
        detection: Default::default(),
    };
    let state = lower("gw-payload", 1, vec![dev], vec![policy]).unwrap();
    std::fs::write(path, state.to_json()).unwrap();
}

#[test]
fn dicom_and_hl7_identities_come_out_live_exactly_as_sent() {
    require_privileges();
    let ward = Ward::new("payl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pin = PinRoot::new("payload");

    // The PACS, the HL7 engine and a plain TCP service in the server namespace.
    let _pacs = peers::storescp(&ward.srv, CALLED, 11112, &d.join("pacs"));
    let _engine = peers::mllp_server(&ward.srv, "198.51.100.20", 2575, &d.join("received.txt"));
    let stop = Arc::new(AtomicBool::new(false));
    let echo_at: SocketAddr = "198.51.100.30:8080".parse().unwrap();
    let echo = tcp_echo(&ward.srv, vec![echo_at], stop.clone());

    let desired = d.join("desired.json");
    write_desired(&desired);
    let config = d.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [{DEV_IF}]\npin_root: {}\ndesired_state: {}\n",
            pin.0.display(),
            desired.display()
        ),
    )
    .unwrap();
    let cfg = AgentConfig::load(&config).expect("test config is valid");
    assert!(cfg.recording.enabled && cfg.recording.inspect_ports.contains(&11112));
    let agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wardgate-agent")),
        &ward.gw,
        &config,
        d.join("agent.log"),
    );
    agent.wait_for("active policy generation");

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
    let msg = d.join("oru.hl7");
    std::fs::write(
        &msg,
        format!("\x0b{MSH}\rPID|1||98765\rOBX|1|NM|8867-4^Heart rate^LN||64|/min\r\x1c\r"),
    )
    .unwrap();
    let ack = until_ok("mllp_send", Duration::from_secs(20), || {
        let mut c = in_netns(&ward.dev, "python3");
        c.args(["-m", "hl7.client", "-p", "2575", "-f"])
            .arg(&msg)
            .arg("198.51.100.20");
        c
    });
    assert!(ack.contains("MSA|AA|MSG-7"), "acknowledged: {ack:?}");
    // The same bytes on a port nobody marked: no payload goes to the agent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = tcp_roundtrip(&ward.dev, echo_at) {
        assert!(Instant::now() < deadline, "echo on 8080: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Both identities, as logged when found.
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let found = identities(&agent.log_text());
        let dicom = found
            .iter()
            .any(|(_, a)| matches!(a, AppIdentity::Dicom(_)));
        let hl7 = found.iter().any(|(_, a)| matches!(a, AppIdentity::Hl7(_)));
        if dicom && hl7 {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never logged both identities:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    echo.join().unwrap();
    for (port, app) in &found {
        match app {
            AppIdentity::Dicom(a) => {
                assert_eq!(*port, 11112);
                assert_eq!(
                    (a.calling_ae.as_str(), a.called_ae.as_str()),
                    (CALLING, CALLED)
                );
                assert_eq!(a.application_context, "1.2.840.10008.3.1.1.1");
                assert_eq!(
                    a.abstract_syntaxes,
                    ["1.2.840.10008.1.1"],
                    "C-ECHO: Verification"
                );
            }
            AppIdentity::Hl7(h) => {
                assert_eq!(*port, 2575);
                assert_eq!(
                    (
                        h.sending_application.as_str(),
                        h.sending_facility.as_str(),
                        h.receiving_application.as_str(),
                        h.receiving_facility.as_str(),
                    ),
                    ("MONITOR_APP", "ICU_7B", "LAB_ENGINE", "CITY_HOSP")
                );
                assert_eq!(
                    (h.message_type.as_str(), h.version.as_str(), h.mllp),
                    ("ORU^R01^ORU_R01", "2.5", true)
                );
            }
        }
    }
    assert!(
        found.iter().all(|(port, _)| *port != 8080),
        "nothing identified on 8080: {found:?}"
    );
    // The live table counted the payload records it used; none went unmatched or was lost.
    let log = agent.log_text();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("live flow table"))
        .unwrap_or_default()
        .to_string();
    for zero in ["payload_rate_limited=0", "payload_ring_full=0"] {
        assert!(last.is_empty() || last.contains(zero), "{last}");
    }
}
