//! Learning at the controller, through the real gRPC server with mTLS: flow records reported by
//! an agent are folded per device, peer, port and day and pruned past the retention; a
//! device's baseline, a profile proposed from it and a simulation of it through wardctl;
//! freeze / approve / relearn audited and refused for a viewer; bad requests with their status.

use std::{path::Path, process::Command};

use tonic::Code;
use wardgate_analysis::{
    AppIdentity, FlowDirection, FlowRecord, TcpOutcome, flow::DeviceRef, hl7::Hl7Header,
};
use wardgate_controller::{server::Settings, store::Store};
use wardgate_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";
const US: &str = "us-3a-portable";
const NS: u64 = 1_000_000_000;
const DAY: u64 = 86_400 * NS;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A flow of `device` to or from `peer` on `proto`/`port`, starting at `t` (ns).
fn rec(device: &str, dir: FlowDirection, peer: &str, proto: u8, port: u16, t: u64) -> FlowRecord {
    FlowRecord {
        device: DeviceRef {
            name: device.into(),
            id: None,
            mac: None,
        },
        direction: dir,
        device_addr: "192.0.2.12".parse().unwrap(),
        device_port: if dir == FlowDirection::Opened {
            40_000
        } else {
            port
        },
        peer: peer.parse().unwrap(),
        peer_port: if dir == FlowDirection::Opened {
            port
        } else {
            50_000
        },
        proto,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 10,
        bytes_out: 1000,
        packets_in: 5,
        bytes_in: 300,
        first_seen_ns: t,
        last_seen_ns: t + 2 * NS,
        tcp: (proto == 6).then_some(TcpOutcome::Established),
        outcome: wardgate_analysis::FlowOutcome::Established,
        rule: Some(1),
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}

fn opened(peer: &str, proto: u8, port: u16, t: u64) -> FlowRecord {
    rec(US, FlowDirection::Opened, peer, proto, port, t)
}

async fn start(dir: &Path, settings: &Settings) -> LabController {
    let lab = LabController::start_with(
        dir,
        &[GW.to_string(), "gw-other".to_string()],
        &[("eve", "engineer"), ("vic", "viewer")],
        settings,
    )
    .await
    .unwrap();
    lab.push_demo_site("eve", "CHG-1 commissioning")
        .await
        .unwrap();
    lab
}

async fn report(
    agent: &mut AgentServiceClient<tonic::transport::Channel>,
    records: &[FlowRecord],
) -> Result<pb::FlowAck, tonic::Status> {
    agent
        .report_flows(pb::FlowBatch {
            gateway: String::new(),
            records: records.iter().map(pb::FlowRecord::from).collect(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Runs wardctl as `who` against `lab` (off the runtime's threads).
async fn wardctl(lab: &LabController, who: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardctl"));
    cmd.args(args)
        .env("WARDGATE_CONTROLLER", lab.url())
        .env("WARDGATE_CERTS", lab.certs())
        .env("WARDGATE_AS", format!("user-{who}"));
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
async fn records_fold_per_day_peer_and_port_and_old_days_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(
        dir.path(),
        &Settings {
            flow_retention_days: 3,
            ..Settings::default()
        },
    )
    .await;
    let mut agent = lab.agent(GW).await.unwrap();
    // Halfway through today (UTC): the records below fall on one day whatever the hour.
    let now = now_ns();
    let t = now - now % DAY + (now % DAY) / 2;
    let ack = report(
        &mut agent,
        &[
            opened("198.51.100.10", 6, 104, t),
            opened("198.51.100.10", 6, 104, t + NS),
            opened("198.51.100.10", 6, 11112, t + 2 * NS),
            // Older than the retention: counted, not stored.
            opened("198.51.100.10", 6, 104, t - 10 * DAY),
        ],
    )
    .await
    .unwrap();
    assert_eq!((ack.stored, ack.expired, ack.unknown_device), (3, 1, 0));
    // A second batch on the same day, peer and port adds to the same row.
    report(&mut agent, &[opened("198.51.100.10", 6, 104, t + 3 * NS)])
        .await
        .unwrap();
    let rows = lab.store.flow_aggregates(US, 0, u64::MAX >> 1).unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let dicom = rows.iter().find(|r| r.key.port == 104).unwrap();
    assert_eq!(
        (
            dicom.flows,
            dicom.packets_out,
            dicom.packets_in,
            dicom.bytes_out,
            dicom.bytes_in
        ),
        (3, 30, 15, 3000, 900)
    );
    assert_eq!((dicom.first_seen_ns, dicom.last_seen_ns), (t, t + 5 * NS));
    assert_eq!(dicom.detail.tcp.established, 3);
    let other = rows.iter().find(|r| r.key.port == 11112).unwrap();
    assert_eq!(other.flows, 1);

    // Three days later the rows are past the retention and go.
    assert_eq!(lab.store.prune_flows(t + 3 * DAY, 3).unwrap(), 2);
    assert!(
        lab.store
            .flow_aggregates(US, 0, u64::MAX >> 1)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_propose_and_simulate_through_wardctl() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), &Settings::default()).await;
    let mut agent = lab.agent(GW).await.unwrap();
    let t = now_ns() - 3600 * NS;
    let mut records = Vec::new();
    for i in 0..6 {
        let mut dicom = opened("198.51.100.10", 6, 104, t + i * 60 * NS);
        if i < 3 {
            dicom.app = Some(AppIdentity::Hl7(Hl7Header {
                field_separator: '|',
                encoding_characters: "^~\\&".into(),
                sending_application: "US3".into(),
                sending_facility: "WARD3".into(),
                receiving_application: "RIS".into(),
                receiving_facility: "HOSP".into(),
                message_type: "ORM^O01".into(),
                version: "2.5".into(),
                mllp: true,
            }));
        }
        records.push(dicom);
        records.push(opened("198.51.100.53", 17, 53, t + i * 60 * NS + NS));
    }
    records.push(opened("198.51.100.123", 17, 123, t + 10 * NS));
    records.push(rec(
        US,
        FlowDirection::Received,
        "203.0.113.70",
        6,
        443,
        t + 20 * NS,
    ));
    let ack = report(&mut agent, &records).await.unwrap();
    assert_eq!(ack.stored as usize, records.len());

    // The baseline, as JSON and as a table.
    let (ok, out, err) = wardctl(
        &lab,
        "vic",
        &["--output", "json", "devices", "baseline", US],
    )
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "learning");
    assert_eq!(v["window"]["days"], 7);
    let b = &v["baseline"];
    assert_eq!(b["flows"], records.len());
    let peers = b["peers"].as_array().unwrap();
    let group_of = |addr: &str| {
        peers
            .iter()
            .find(|p| p["addr"] == addr)
            .map(|p| p["group"].clone())
    };
    assert_eq!(group_of("198.51.100.10"), Some("pacs".into()));
    assert_eq!(group_of("198.51.100.53"), Some("dns".into()));
    assert_eq!(
        group_of("203.0.113.70"),
        Some("clinical-workstations".into())
    );
    assert_eq!(b["protocols"]["udp"], 7);
    assert_eq!(b["services"].as_array().unwrap().len(), 4);
    assert_eq!(
        b["apps"][0]["identity"],
        "hl7 US3/WARD3 -> RIS/HOSP ORM^O01"
    );
    assert_eq!(b["apps"][0]["flows"], 3);
    assert!(!b["hourly"].as_array().unwrap().is_empty());
    let (ok, table, err) = wardctl(&lab, "vic", &["devices", "baseline", US]).await;
    assert!(ok, "{err}");
    println!("{table}");
    for want in [
        "learning",
        "7 days",
        "pacs",
        "clinical-workstations",
        "hl7 US3/WARD3",
        "to-device",
        "hourly volume",
    ] {
        assert!(table.contains(want), "{want} missing from:\n{table}");
    }

    // A proposal that validates, and that blocks none of the recorded flows.
    let profile = dir.path().join("proposed.yaml");
    let (ok, _, err) = wardctl(
        &lab,
        "vic",
        &[
            "profile",
            "propose",
            "--device",
            US,
            "--out",
            profile.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let yaml = std::fs::read_to_string(&profile).unwrap();
    let parsed = wardgate_policy::parse_profile("p", &yaml).unwrap();
    assert!(wardgate_policy::validate_profile("p", &parsed).is_empty());
    assert!(
        yaml.contains("group:pacs") && yaml.contains("group:dns"),
        "{yaml}"
    );
    let sim_args = [
        "--output",
        "json",
        "simulate",
        "--profile",
        profile.to_str().unwrap(),
        "--device",
        US,
        "--since",
        "7d",
    ];
    let simulate = || wardctl(&lab, "vic", &sim_args);
    let (ok, out, err) = simulate().await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["flows"], records.len());
    assert_eq!(v["blocked"], serde_json::json!([]), "{out}");
    // Nothing recorded in the span (the flows are an hour old): said plainly, and not exit 0.
    let (ok, out, err) = wardctl(
        &lab,
        "vic",
        &[
            "simulate",
            "--profile",
            profile.to_str().unwrap(),
            "--device",
            US,
            "--since",
            "10m",
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("no recorded flows of `{US}` in the last 10m")),
        "{err}"
    );

    // An extra flow on another port is listed as blocked, with its count and last seen.
    let extra = opened("198.51.100.10", 6, 8080, now_ns() - NS);
    report(&mut agent, &[extra.clone(), extra.clone()])
        .await
        .unwrap();
    let (ok, out, err) = simulate().await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let blocked = v["blocked"].as_array().unwrap();
    assert_eq!(blocked.len(), 1, "{out}");
    let b = &blocked[0];
    assert_eq!(b["direction"], "from-device");
    assert_eq!(b["peer"], "198.51.100.10");
    assert_eq!(b["peer_group"], "pacs");
    assert_eq!(b["port"], 8080);
    assert_eq!(b["flows"], 2);
    assert_eq!(
        b["last_seen_unix_ms"],
        (extra.last_seen_ns / 1_000_000) as i64
    );
    let (ok, table, _) = wardctl(
        &lab,
        "vic",
        &[
            "simulate",
            "--profile",
            profile.to_str().unwrap(),
            "--device",
            US,
        ],
    )
    .await;
    assert!(ok);
    assert!(table.contains("2 of") && table.contains("8080"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_approve_relearn_are_audited_and_refused_for_a_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), &Settings::default()).await;
    let mut agent = lab.agent(GW).await.unwrap();
    let t = now_ns() - 600 * NS;
    report(
        &mut agent,
        &[
            opened("198.51.100.10", 6, 104, t),
            opened("198.51.100.53", 17, 53, t),
        ],
    )
    .await
    .unwrap();
    // Entries other than recorded refusals (a refusal for want of a role is audited as
    // `refused`, naming who tried).
    let audit_len = || {
        lab.store
            .audit()
            .unwrap()
            .iter()
            .filter(|e| e.action != "refused")
            .count()
    };
    let before = audit_len();

    // A viewer may read but not move it.
    let (ok, _, err) = wardctl(
        &lab,
        "vic",
        &["devices", "baseline", US, "--freeze", "--reason", "CHG-7"],
    )
    .await;
    assert!(!ok && err.contains("permission denied"), "{err}");
    // Approval needs a frozen baseline; a write needs a reason.
    let (ok, _, err) = wardctl(
        &lab,
        "eve",
        &["devices", "baseline", US, "--approve", "--reason", "CHG-7"],
    )
    .await;
    assert!(
        !ok && err.contains("only a frozen baseline can be approved")
            && err.contains("freeze it first"),
        "{err}"
    );
    let (ok, _, err) = wardctl(&lab, "eve", &["devices", "baseline", US, "--freeze"]).await;
    assert!(!ok && err.contains("--reason"), "{err}");
    assert_eq!(audit_len(), before, "refusals write nothing");
    let refused: Vec<String> = lab
        .store
        .audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "refused")
        .map(|e| e.actor)
        .collect();
    assert_eq!(refused, ["user:vic"], "the viewer's attempt is recorded");

    for (action, reason) in [
        ("--freeze", "CHG-7 learned"),
        ("--approve", "CHG-7 signed off"),
    ] {
        let (ok, _, err) = wardctl(
            &lab,
            "eve",
            &["devices", "baseline", US, action, "--reason", reason],
        )
        .await;
        assert!(ok, "{action}: {err}");
    }
    let (ok, out, _) = wardctl(
        &lab,
        "vic",
        &["--output", "json", "devices", "baseline", US],
    )
    .await;
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["baseline"]["flows"].as_u64()),
        (Some("approved"), Some(2))
    );
    // Frozen: a flow reported now is recorded but the baseline does not grow.
    report(&mut agent, &[opened("198.51.100.11", 6, 104, now_ns())])
        .await
        .unwrap();
    let (_, out, _) = wardctl(
        &lab,
        "vic",
        &["--output", "json", "devices", "baseline", US],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["baseline"]["flows"], 2, "{out}");

    let (ok, _, err) = wardctl(
        &lab,
        "eve",
        &[
            "devices",
            "baseline",
            US,
            "--relearn",
            "--window-days",
            "3",
            "--reason",
            "CHG-8 firmware update",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (_, out, _) = wardctl(
        &lab,
        "vic",
        &["--output", "json", "devices", "baseline", US],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["state"].as_str(),
            v["window"]["days"].as_u64(),
            v["baseline"]["flows"].as_u64()
        ),
        (Some("learning"), Some(3), Some(0)),
        "relearn clears: {out}"
    );

    // All three in the audit trail, by eve, with their reasons; the chain holds.
    let (ok, out, err) = wardctl(&lab, "vic", &["--output", "json", "audit", "list"]).await;
    assert!(ok, "{err}");
    let entries: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ours: Vec<(&str, &str, &str)> = entries
        .iter()
        .filter(|e| e["target"] == US && e["action"].as_str().unwrap().starts_with("baseline_"))
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ours,
        [
            ("baseline_freeze", "user:eve", "CHG-7 learned"),
            ("baseline_approve", "user:eve", "CHG-7 signed off"),
            ("baseline_relearn", "user:eve", "CHG-8 firmware update"),
        ]
    );
    let relearn = entries.last().unwrap();
    assert!(
        relearn["diff"]
            .as_str()
            .unwrap()
            .contains("\"flow_rows_cleared\":3"),
        "{relearn}"
    );
    let (ok, _, err) = wardctl(&lab, "vic", &["audit", "verify"]).await;
    assert!(ok, "{err}");
    assert_eq!(audit_len(), before + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), &Settings::default()).await;
    let mut eve = lab.admin("eve").await.unwrap();
    eve.upsert_gateway(pb::UpsertGatewayRequest {
        gateway: Some(pb::Gateway {
            name: "gw-other".into(),
            interfaces: vec!["wg-dev1".into()],
            ..Default::default()
        }),
        reason: "CHG-2".into(),
    })
    .await
    .unwrap();
    eve.upsert_device(pb::UpsertDeviceRequest {
        accept_impact: false,
        device: Some(pb::Device {
            name: "pump-other".into(),
            mac: "02:00:00:00:01:01".into(),
            addresses: vec!["192.0.2.40".into()],
            profile: "infusion-pump".into(),
            mode: "learn".into(),
            gateway: "gw-other".into(),
            ..Default::default()
        }),
        reason: "CHG-2".into(),
    })
    .await
    .unwrap();
    let mut agent = lab.agent(GW).await.unwrap();
    let t = now_ns() - 60 * NS;
    let good = opened("198.51.100.10", 6, 104, t);
    let stored = || {
        lab.store
            .flow_aggregates(US, 0, u64::MAX >> 1)
            .unwrap()
            .len()
    };

    // A bad record refuses the whole batch, naming the record and the field.
    let mut bad = pb::FlowRecord::from(&good);
    bad.peer = vec![1, 2, 3];
    let s = agent
        .report_flows(pb::FlowBatch {
            gateway: String::new(),
            records: vec![pb::FlowRecord::from(&good), bad],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("flow record 1: peer"), "{s:?}");
    let mut bad = pb::FlowRecord::from(&good);
    bad.last_seen_ns = bad.first_seen_ns - 1;
    let s = report_raw(&mut agent, vec![bad]).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    // Too many records in one batch.
    let many = vec![pb::FlowRecord::from(&good); wardgate_proto::flows::MAX_FLOWS_PER_BATCH + 1];
    let s = report_raw(&mut agent, many).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    // A device of another gateway, or a batch naming another gateway.
    let s = report(
        &mut agent,
        &[
            good.clone(),
            rec(
                "pump-other",
                FlowDirection::Opened,
                "198.51.100.10",
                6,
                443,
                t,
            ),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let s = agent
        .report_flows(pb::FlowBatch {
            gateway: "gw-other".into(),
            records: vec![pb::FlowRecord::from(&good)],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    // A person is not an agent.
    let mut as_user = AgentServiceClient::new(lab.channel("user-eve").await.unwrap());
    let s = report_raw(&mut as_user, vec![pb::FlowRecord::from(&good)])
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    // Over the transport limit (a client without the agent's encoding limit).
    let mut unlimited =
        AgentServiceClient::new(lab.channel(&format!("gateway-{GW}")).await.unwrap());
    let mut huge = pb::FlowRecord::from(&good);
    huge.device = "x".repeat(2 << 20);
    let s = report_raw(&mut unlimited, vec![huge]).await.unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    assert_eq!(stored(), 0, "nothing of a refused batch is stored");

    // Records of a device the controller does not know are counted, not stored.
    let ack = report(
        &mut agent,
        &[rec(
            "Philips-02:00:00:99:00:01",
            FlowDirection::Opened,
            "198.51.100.10",
            6,
            104,
            t,
        )],
    )
    .await
    .unwrap();
    assert_eq!((ack.stored, ack.unknown_device), (0, 1));

    // Admin calls.
    let s = eve
        .get_baseline(pb::GetBaselineRequest { device: US.into() })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "no flows yet: {s:?}");
    let s = eve
        .get_baseline(pb::GetBaselineRequest {
            device: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = eve
        .propose_profile(pb::ProposeProfileRequest {
            device: String::new(),
            include_incomplete: false,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    for (action, days) in [("thaw", 0), ("relearn", 9999), ("freeze", 3)] {
        let s = eve
            .set_baseline_state(pb::SetBaselineStateRequest {
                device: US.into(),
                action: action.into(),
                window_days: days,
                reason: "x".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{action} {days}: {s:?}");
    }
    let s = eve
        .simulate(pb::SimulateRequest {
            device: US.into(),
            yaml: "name: [unclosed".into(),
            since_s: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = eve
        .simulate(pb::SimulateRequest {
            device: US.into(),
            yaml: "name: p\nflows:\n  - direction: from-device\n    protocol: tcp\n    peers: [group:nowhere]\n    ports: 443\n".into(),
            since_s: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "an unknown group: {s:?}");
}

async fn report_raw(
    agent: &mut AgentServiceClient<tonic::transport::Channel>,
    records: Vec<pb::FlowRecord>,
) -> Result<pb::FlowAck, tonic::Status> {
    agent
        .report_flows(pb::FlowBatch {
            gateway: String::new(),
            records,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// wardctl's errors are one plain line: the server's message (no gRPC status dump), a refused
/// connection and a missing certificate with the flag that fixes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wardctl_errors_are_one_plain_line_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), &Settings::default()).await;
    let (ok, _, err) = wardctl(&lab, "vic", &["devices", "baseline", "no-such-device"]).await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("no-such-device"),
        "{err}"
    );
    for internal in ["status:", "code:", "NotFound", "Some requested entity"] {
        assert!(!err.contains(internal), "{internal} in {err}");
    }
    let run = |controller: String, who: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_wardctl"))
            .args(["gateways"])
            .env("WARDGATE_CONTROLLER", controller)
            .env("WARDGATE_CERTS", lab.certs())
            .env("WARDGATE_AS", who)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Nothing listens on this port (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = run(format!("https://127.0.0.1:{port}"), "user-vic");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("nothing accepts connections there") && err.contains("--controller"),
        "{err}"
    );
    let err = run(lab.url(), "user-nobody");
    assert!(
        err.contains("user-nobody.pem") && err.contains("--as") && err.ends_with("no such file\n"),
        "{err}"
    );
}

/// Names reported with flows are stored with their rows and propose `dns:` peers; simulate
/// allows them by name (issue 21 point 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_names_are_stored_and_proposed_as_dns_peers() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), &Settings::default()).await;
    let mut agent = lab.agent(GW).await.unwrap();
    let t = now_ns() - 3600 * NS;
    let mut records = Vec::new();
    // The cloud name rotated over three addresses; a workstation (a site group) without one.
    for (i, addr) in ["203.0.113.21", "203.0.113.22", "203.0.113.23"]
        .iter()
        .enumerate()
    {
        let mut r = opened(addr, 6, 443, t + i as u64 * 60 * NS);
        r.peer_name = Some("API.Vendor.example".into());
        records.push(r);
    }
    records.push(opened("203.0.113.99", 6, 443, t + 300 * NS));
    let ack = report(&mut agent, &records).await.unwrap();
    assert_eq!(ack.stored as usize, records.len());
    // Stored with the row, lower case.
    let rows = lab.store.flow_aggregates(US, 0, u64::MAX).unwrap();
    let named: Vec<_> = rows.iter().filter(|r| r.peer_name.is_some()).collect();
    assert_eq!(named.len(), 3, "{rows:?}");
    assert!(
        named
            .iter()
            .all(|r| r.peer_name.as_deref() == Some("api.vendor.example") && r.named_flows == 1)
    );
    let mut admin = lab.admin("eve").await.unwrap();
    let p = admin
        .propose_profile(pb::ProposeProfileRequest {
            device: US.into(),
            include_incomplete: false,
        })
        .await
        .unwrap()
        .into_inner();
    println!("{}", p.yaml);
    assert!(
        p.yaml
            .contains("peers: [\"dns:api.vendor.example\", \"group:clinical-workstations\"]"),
        "{}",
        p.yaml
    );
    assert!(
        p.yaml
            .contains("# dns:api.vendor.example seen at 203.0.113.21, 203.0.113.22, 203.0.113.23"),
        "{}",
        p.yaml
    );
    let sim = admin
        .simulate(pb::SimulateRequest {
            device: US.into(),
            yaml: p.yaml.clone(),
            since_s: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(sim.blocked.is_empty(), "{sim:?}");
}
