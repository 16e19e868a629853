//! What a gateway can send the controller is bounded (security hardening, point 6): an agent's
//! alerts about devices not behind its gateway, with control characters in identifiers or with
//! times out of range are refused by id (and the stream goes on); flow rows per device per day
//! are capped, the overflow counted per device and day and shown by `wardctl devices
//! baseline`; and proposals and simulations read the store without holding the connection
//! every write waits for.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use tonic::Request;
use wardgate_analysis::{FlowDirection, FlowOutcome, FlowRecord, TcpOutcome, flow::DeviceRef};
use wardgate_controller::{
    server::Settings,
    store::{FlowLimits, Store},
};
use wardgate_proto::v1::{self as pb, alert_service_client::AlertServiceClient};
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";
const OTHER: &str = "gw-other";
const US: &str = "us-3a-portable";
const PUMP: &str = "pump-3a-bed12";
const NS: u64 = 1_000_000_000;
const DAY: u64 = 86_400 * NS;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn start(dir: &std::path::Path, settings: &Settings) -> LabController {
    let lab = LabController::start_with(
        dir,
        &[GW.to_string(), OTHER.to_string()],
        &[("eve", "engineer"), ("vic", "viewer"), ("sam", "soc")],
        settings,
    )
    .await
    .unwrap();
    lab.push_demo_site("eve", "CHG-1 commissioning")
        .await
        .unwrap();
    lab
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

fn alert(id: &str, device: &str) -> pb::Alert {
    pb::Alert {
        id: id.into(),
        device: device.into(),
        kind: "deny".into(),
        severity: "high".into(),
        src: "192.0.2.10".into(),
        dst: "198.51.100.10".into(),
        dst_port: 445,
        protocol: 6,
        observed_unix_ms: (now_ns() / 1_000_000) as i64,
        summary: "Flow denied by policy".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_about_other_gateways_devices_or_out_of_bounds_are_refused_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), &Settings::default()).await;
    // gw-other's agent speaks about the pump, which is behind gw-ward-3.
    let stolen = alert("o-1", PUMP);
    // A device the inventory does not hold (an unknown-device alert): taken.
    let unknown = alert("o-2", "dev-02:00:00:00:00:99");
    let mut forged = alert("o-3", "pump\n2026-12-06 CEF:0|forged");
    forged.device = "pump\n2026-12-06 CEF:0|forged".into();
    let mut old = alert("o-4", "dev-x");
    old.observed_unix_ms = 1_500_000_000_000; // 2017
    let mut ahead = alert("o-5", "dev-x");
    ahead.observed_unix_ms = ((now_ns() + 2 * DAY) / 1_000_000) as i64;
    let mut noisy = alert("o-6", "dev-x");
    noisy.summary = "scan\r\nCEF:0|forged|line".into();
    let mut long = alert("o-8", "dev-x");
    long.rule_name = "r".repeat(300);
    let batches = vec![
        pb::AlertBatch {
            alerts: vec![stolen, unknown, forged, old, ahead, noisy, long],
        },
        // The stream goes on after refusals.
        pb::AlertBatch {
            alerts: vec![alert("o-7", "dev-x")],
        },
    ];
    let mut acks = lab
        .agent(OTHER)
        .await
        .unwrap()
        .report_alerts(Request::new(tokio_stream::iter(batches)))
        .await
        .unwrap()
        .into_inner();
    let a1 = acks.message().await.unwrap().unwrap();
    let a2 = acks.message().await.unwrap().unwrap();
    assert_eq!(a1.ids, ["o-2", "o-6"]);
    let refused: Vec<(&str, &str)> = a1
        .refused
        .iter()
        .map(|r| (r.id.as_str(), r.code.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            ("o-1", "permission_denied"),
            ("o-3", "invalid_argument"),
            ("o-4", "invalid_argument"),
            ("o-5", "invalid_argument"),
            ("o-8", "invalid_argument"),
        ]
    );
    assert!(
        a1.refused[0].reason.contains("is on gateway `gw-ward-3`"),
        "{:?}",
        a1.refused[0]
    );
    assert!(
        a1.refused[1].reason.contains("device"),
        "{:?}",
        a1.refused[1]
    );
    assert!(
        a1.refused[2].reason.contains("before 2020"),
        "{:?}",
        a1.refused[2]
    );
    assert!(
        a1.refused[3].reason.contains("ahead"),
        "{:?}",
        a1.refused[3]
    );
    assert!(
        a1.refused[4].reason.contains("rule_name"),
        "{:?}",
        a1.refused[4]
    );
    assert_eq!(a2.ids, ["o-7"]);

    // Only the admitted ones are stored, free text cleaned.
    let mut soc = AlertServiceClient::new(lab.channel("user-sam").await.unwrap());
    let list = soc
        .list(pb::AlertFilter {
            gateway: OTHER.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    let mut ids: Vec<&str> = list.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["o-2", "o-6", "o-7"]);
    let noisy = list.iter().find(|a| a.id == "o-6").unwrap();
    assert_eq!(noisy.summary, "scan\u{fffd}\nCEF:0|forged|line");
    // The pump's own gateway still reports about it.
    let mut acks = lab
        .agent(GW)
        .await
        .unwrap()
        .report_alerts(Request::new(tokio_stream::iter(vec![pb::AlertBatch {
            alerts: vec![alert("g-1", PUMP)],
        }])))
        .await
        .unwrap()
        .into_inner();
    let a = acks.message().await.unwrap().unwrap();
    assert_eq!(
        (a.ids.as_slice(), a.refused.len()),
        (&["g-1".to_string()][..], 0)
    );
}

/// A flow of the ultrasound to `peer` on TCP `port`, completed, starting at `t`.
fn flow(peer: &str, port: u16, t: u64) -> FlowRecord {
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
        packets_out: 10,
        bytes_out: 1000,
        packets_in: 5,
        bytes_in: 300,
        first_seen_ns: t,
        last_seen_ns: t + 2 * NS,
        tcp: Some(TcpOutcome::Established),
        outcome: FlowOutcome::Established,
        rule: Some(1),
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}

async fn report(lab: &LabController, records: &[FlowRecord]) -> Result<pb::FlowAck, tonic::Status> {
    lab.agent(GW)
        .await
        .unwrap()
        .report_flows(pb::FlowBatch {
            gateway: String::new(),
            records: records.iter().map(pb::FlowRecord::from).collect(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_rows_past_the_cap_are_counted_per_device_and_day_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(
        dir.path(),
        &Settings {
            flow_rows_per_device_day: 5,
            ..Settings::default()
        },
    )
    .await;
    // Halfway through today (UTC): every record below falls on one day.
    let now = now_ns();
    let t = now - now % DAY + (now % DAY) / 2;
    let scan: Vec<FlowRecord> = (0..8).map(|i| flow("198.51.100.10", 1000 + i, t)).collect();
    let ack = report(&lab, &scan).await.unwrap();
    assert_eq!((ack.stored, ack.over_cap), (5, 3));
    // A row that exists still takes records; a new one does not.
    let ack = report(&lab, &[flow("198.51.100.10", 1000, t + NS)])
        .await
        .unwrap();
    assert_eq!((ack.stored, ack.over_cap), (1, 0));
    let ack = report(&lab, &[flow("198.51.100.99", 443, t + NS)])
        .await
        .unwrap();
    assert_eq!((ack.stored, ack.over_cap), (0, 1));
    // Another day has room of its own.
    let ack = report(&lab, &[flow("198.51.100.99", 443, t - DAY)])
        .await
        .unwrap();
    assert_eq!((ack.stored, ack.over_cap), (1, 0));
    let rows = lab.store.flow_aggregates(US, 0, u64::MAX >> 1).unwrap();
    assert_eq!(rows.len(), 6);
    let day = (t / DAY) as u32;
    assert_eq!(lab.store.flow_overflow(US).unwrap(), [(day, 4)]);

    let (ok, table, err) = wardctl(&lab, "vic", &["devices", "baseline", US]).await;
    assert!(ok, "{err}");
    let date = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(u64::from(day) * 86_400),
    )
    .to_string();
    let want = format!(
        "over the cap of 5 flow rows per day on {}: 4 flow records not stored",
        &date[..10]
    );
    assert!(table.contains(&want), "{want} missing from:\n{table}");
    let (ok, out, err) = wardctl(
        &lab,
        "vic",
        &["--output", "json", "devices", "baseline", US],
    )
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows_per_day_cap"], 5);
    assert_eq!(v["over_cap"][0]["flows"], 4, "{out}");
    assert_eq!(
        v["over_cap"][0]["day_start_unix_ms"],
        u64::from(day) * 86_400_000
    );
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heavy_propose_or_simulate_does_not_hold_up_a_concurrent_assign() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path(), &Settings::default()).await;
    // Six days of a chatty device: 6 x 8,000 distinct rows, stored directly.
    let now = now_ns();
    let start_t = now - 6 * DAY;
    let limits = FlowLimits {
        retention_days: 30,
        rows_per_device_day: 100_000,
    };
    for d in 0..6u64 {
        let records: Vec<FlowRecord> = (0..8_000u32)
            .map(|i| {
                let peer = format!("10.{}.{}.{}", d, i / 250, i % 250 + 1);
                flow(
                    &peer,
                    1000 + (i % 50) as u16,
                    start_t + d * DAY + u64::from(i) * NS,
                )
            })
            .collect();
        lab.store.insert_flows(GW, &records, now, limits).unwrap();
    }
    let mut admin = lab.admin("eve").await.unwrap();
    let propose = |mut a: pb::admin_service_client::AdminServiceClient<
        tonic::transport::Channel,
    >| async move {
        let t = Instant::now();
        a.propose_profile(pb::ProposeProfileRequest {
            device: US.into(),
            include_incomplete: false,
        })
        .await
        .unwrap();
        t.elapsed()
    };
    let one = propose(admin.clone()).await;
    println!("one propose: {one:?}");
    // Proposals and simulations back to back while the engineer assigns profiles.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Rounds done so far: the assigns go on until two ran beside them (a debug build's
    // proposal takes about as long as 30 assigns, so a fixed count of assigns could end first).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let heavy = {
        let (admin, stop, done) = (admin.clone(), stop.clone(), done.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if n.is_multiple_of(2) {
                    propose(admin.clone()).await;
                } else {
                    admin
                        .clone()
                        .simulate(pb::SimulateRequest {
                            device: US.into(),
                            yaml: "name: sim\nflows: []\n".into(),
                            since_s: 0,
                        })
                        .await
                        .unwrap();
                }
                n += 1;
                done.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = Vec::new();
    for i in 0..600u32 {
        if i >= 30 && done.load(std::sync::atomic::Ordering::Relaxed) >= 2 {
            break;
        }
        let profile = if i.is_multiple_of(2) {
            "patient-monitor"
        } else {
            "ultrasound"
        };
        let t = Instant::now();
        admin
            .assign_profile(pb::AssignProfileRequest {
                accept_impact: false,
                device: US.into(),
                profile: profile.into(),
                reason: format!("CHG-9 step {i}"),
                dry_run: false,
            })
            .await
            .unwrap();
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = heavy.await.unwrap();
    let p50 = percentile(&mut latencies, 0.5);
    let p90 = percentile(&mut latencies, 0.9);
    println!(
        "{rounds} proposals/simulations; assign p50 {p50:?} p90 {p90:?} max {:?}",
        latencies.last().unwrap()
    );
    assert!(rounds >= 2, "the proposals ran while assigning ({rounds})");
    // Holding the write connection, a read of 48,000 rows made an assign wait for it (most of a
    // proposal); on a read connection an assign waits for nothing but its own commit.
    assert!(
        p90 < one / 4,
        "assign p90 {p90:?} is not well under one proposal ({one:?})"
    );
}
