//! Proposals cannot be poisoned (security hardening, point 7): a device that makes failed
//! connection attempts (a scan of unanswered SYNs, refused ports, contacts the datapath
//! denied) does not get them proposed as allowed flows. `wardctl profile propose` makes rules
//! from completed flows only, lists what it left out (stderr and the YAML's header comment)
//! and says where a rule allows more than was seen.

use std::process::Command;

use wardgate_analysis::{FlowDirection, FlowOutcome, FlowRecord, TcpOutcome, flow::DeviceRef};
use wardgate_controller::server::Settings;
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";
const US: &str = "us-3a-portable";
const NS: u64 = 1_000_000_000;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn flow(peer: &str, port: u16, t: u64, outcome: FlowOutcome) -> FlowRecord {
    let answered = outcome == FlowOutcome::Established;
    FlowRecord {
        device: DeviceRef {
            name: US.into(),
            id: None,
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.12".parse().unwrap(),
        device_port: 40_000,
        peer: peer.parse().unwrap(),
        peer_port: port,
        proto: 6,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 2,
        bytes_out: 120,
        packets_in: u64::from(answered),
        bytes_in: if answered { 60 } else { 0 },
        first_seen_ns: t,
        last_seen_ns: t + NS,
        tcp: Some(match outcome {
            FlowOutcome::Established => TcpOutcome::Established,
            FlowOutcome::Refused => TcpOutcome::Refused,
            _ => TcpOutcome::NoAnswer,
        }),
        outcome,
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}

async fn wardctl(lab: &LabController, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardctl"));
    cmd.args(args)
        .env("WARDGATE_CONTROLLER", lab.url())
        .env("WARDGATE_CERTS", lab.certs())
        .env("WARDGATE_AS", "user-vic");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanning_device_gets_only_its_established_flow_proposed_and_the_rest_listed() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::start_with(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("vic", "viewer")],
        &Settings::default(),
    )
    .await
    .unwrap();
    lab.push_demo_site("eve", "CHG-1 commissioning")
        .await
        .unwrap();
    let t = now_ns() - 3600 * NS;
    // One real conversation with the PACS, then a scan of the same host: 60 unanswered SYNs
    // to other ports, 3 refused, and 2 contacts the datapath denied.
    let mut records = vec![flow("198.51.100.10", 104, t, FlowOutcome::Established)];
    for p in 0..60u16 {
        records.push(flow(
            "198.51.100.10",
            2000 + p,
            t + NS,
            FlowOutcome::Unanswered,
        ));
    }
    for p in [22, 23, 3389] {
        records.push(flow("198.51.100.10", p, t + 2 * NS, FlowOutcome::Refused));
    }
    for _ in 0..2 {
        records.push(flow("203.0.113.66", 445, t + 3 * NS, FlowOutcome::Denied));
    }
    let ack = lab
        .agent(GW)
        .await
        .unwrap()
        .report_flows(pb::FlowBatch {
            gateway: String::new(),
            records: records.iter().map(pb::FlowRecord::from).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.stored as usize, records.len());

    let file = dir.path().join("proposed.yaml");
    let (ok, _, err) = wardctl(
        &lab,
        &[
            "profile",
            "propose",
            "--device",
            US,
            "--out",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let yaml = std::fs::read_to_string(&file).unwrap();
    println!("{yaml}\n{err}");
    let p = wardgate_policy::parse_profile("p", &yaml).unwrap();
    assert!(wardgate_policy::validate_profile("p", &p).is_empty());
    // Only the established flow is allowed.
    assert_eq!(p.flows.len(), 1, "{yaml}");
    assert!(
        yaml.contains("peers: [\"group:pacs\"]\n    ports: [104]\n"),
        "{yaml}"
    );
    for scanned in ["2000", "3389", "445", "203.0.113.66", "WIDENED"] {
        assert!(
            !yaml
                .lines()
                .filter(|l| !l.starts_with('#'))
                .any(|l| l.contains(scanned)),
            "{scanned} in a rule:\n{yaml}"
        );
    }
    // What was left out: in the YAML's header and in the command's output.
    for text in [&yaml, &err] {
        assert!(text.contains("65 flows that did not complete"), "{text}");
        assert!(
            text.contains("from-device tcp 198.51.100.10 ports 2000-2059: 60 unanswered"),
            "{text}"
        );
        assert!(
            text.contains("from-device tcp 198.51.100.10 ports 22-23,3389: 3 refused"),
            "{text}"
        );
        assert!(
            text.contains("from-device tcp 203.0.113.66 port 445: 2 denied"),
            "{text}"
        );
    }
    let (ok, out, err) = wardctl(
        &lab,
        &["--output", "json", "profile", "propose", "--device", US],
    )
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["flows"], 1);
    assert_eq!(v["left_out_flows"], 65);
    assert_eq!(v["left_out"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["left_out"][1]["ports"].as_array().unwrap().len(),
        60,
        "{out}"
    );

    // Asked for, the failed attempts are in, and the range they need is said to be wider
    // than what was seen, in the YAML and in the output.
    let (ok, yaml, err) = wardctl(
        &lab,
        &["profile", "propose", "--device", US, "--include-incomplete"],
    )
    .await;
    assert!(ok, "{err}");
    let p = wardgate_policy::parse_profile("p", &yaml).unwrap();
    assert!(p.flows.len() >= 2, "{yaml}");
    assert!(
        yaml.contains("# Includes 65 flows that did not complete"),
        "{yaml}"
    );
    assert!(
        yaml.contains("  # WIDENED: 64 distinct ports seen, written as the range 22-3389"),
        "{yaml}"
    );
    assert!(
        err.contains("WIDENED: ") && err.contains("written as the range 22-3389"),
        "{err}"
    );
    assert!(err.contains("left out: nothing"), "{err}");
}
