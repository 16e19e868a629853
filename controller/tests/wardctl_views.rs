//! wardctl's human views through the real binary against a controller on loopback (the demo
//! site): `devices show` as a page, `devices list` with location and asset id, lookup by asset
//! id, `profile show` in words, alerts with local time, protocol names and the summary,
//! `alerts show`, and `gateways` saying "never connected" until an agent follows its policy.
//! The JSON output keeps its keys.

use std::process::Command;

use tonic::Request;
use wardgate_analysis::{
    FlowDirection,
    detect::{Finding, FlowRef, Matrix, Severity, Technique},
    flow::DeviceRef,
};
use wardgate_controller::store::Store;
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";
/// 2025-12-03 07:00:00 UTC.
const T0: u64 = 1_764_745_200_000_000_000;

/// Runs wardctl as `who` against `lab`, in a time zone two hours east of UTC.
async fn wardctl(lab: &LabController, who: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardctl"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .env("WARDGATE_CONTROLLER", lab.url())
        .env("WARDGATE_CERTS", lab.certs())
        .env("WARDGATE_AS", format!("user-{who}"))
        .env("TZ", "XST-2");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

async fn ok(lab: &LabController, who: &str, args: &[&str]) -> String {
    let (ok, out, err) = wardctl(lab, who, args).await;
    assert!(ok, "wardctl {args:?}: {err}");
    out
}

fn scan() -> Finding {
    let device = DeviceRef {
        name: "pump-3a-bed12".into(),
        id: None,
        mac: None,
    };
    let mut f = Finding::new(
        "scan_vertical",
        &device,
        T0,
        Severity::High,
        0.9,
        Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
    );
    f.id = "gw-ward-3-scan-1".into();
    f.first_seen_ns = T0;
    f.last_seen_ns = T0;
    f.count = 1;
    f.peer = Some("198.51.100.10".parse().unwrap());
    f.summary = "pump-3a-bed12 tried 40 ports of 198.51.100.10 in 2 s".into();
    f.evidence.ports = vec![22, 80, 445];
    f.flows = vec![FlowRef {
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.10".parse().unwrap(),
        device_port: 40_000,
        peer: "198.51.100.10".parse().unwrap(),
        peer_port: 445,
        proto: 6,
        first_seen_ns: T0,
        last_seen_ns: T0,
        packets: 1,
        bytes: 60,
    }];
    f
}

async fn report(lab: &LabController, findings: &[Finding]) {
    let batch = pb::AlertBatch {
        alerts: findings.iter().map(pb::Alert::from).collect(),
    };
    let mut acks = lab
        .agent(GW)
        .await
        .unwrap()
        .report_alerts(Request::new(tokio_stream::iter(vec![batch])))
        .await
        .unwrap()
        .into_inner();
    acks.message().await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_read_words_and_scripts_keep_their_json() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::with_demo_site(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("vic", "viewer")],
        "eve",
    )
    .await
    .unwrap();
    report(&lab, &[scan()]).await;

    // devices show: a page, not JSON.
    let page = ok(&lab, "vic", &["devices", "show", "pump-3a-bed12"]).await;
    for want in [
        "pump-3a-bed12 (device 1)",
        "profile    infusion-pump",
        "mode       enforce: only what its profile allows passes",
        "gateway    gw-ward-3: never connected",
        "location   Ward 3A, bed 12",
        "asset id   BME-004211",
        "tcp/443 to infusion-server",
        "udp/53 to dns",
        "recent alerts",
        "2025-12-03 09:00:00 +02:00  high     pump-3a-bed12 tried 40 ports of 198.51.100.10 in 2 s",
    ] {
        assert!(page.contains(want), "`{want}` missing from:\n{page}");
    }
    assert!(!page.contains('{'), "{page}");
    // By asset id, the same page.
    let by_asset = ok(&lab, "vic", &["devices", "show", "BME-004211"]).await;
    assert_eq!(by_asset, page);
    let (found, _, err) = wardctl(&lab, "vic", &["devices", "show", "BME-999"]).await;
    assert!(
        !found && err.contains("no device is named `BME-999` or has it as asset id"),
        "{err}"
    );
    // JSON as before.
    let json: serde_json::Value = serde_json::from_str(
        &ok(
            &lab,
            "vic",
            &["--output", "json", "devices", "show", "pump-3a-bed12"],
        )
        .await,
    )
    .unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "addresses",
            "asset_id",
            "gateway",
            "id",
            "location",
            "mac",
            "mode",
            "name",
            "profile"
        ]
    );

    // devices list: location and asset id columns, lookup by asset id.
    let list = ok(&lab, "vic", &["devices", "list"]).await;
    let header = list.lines().next().unwrap();
    assert!(
        header.starts_with("id  name")
            && header.contains("location")
            && header.contains("asset id"),
        "{list}"
    );
    assert!(
        list.contains("Ward 3A, equipment room") && list.contains("BME-005120"),
        "{list}"
    );
    let one = ok(
        &lab,
        "vic",
        &["devices", "list", "--asset-id", "bme-003907"],
    )
    .await;
    assert_eq!(one.lines().count(), 2, "{one}");
    assert!(one.contains("monitor-3a-bed12"), "{one}");
    let (found, _, err) = wardctl(&lab, "vic", &["devices", "list", "--asset-id", "BME-1"]).await;
    assert!(
        !found && err.contains("no device has asset id `BME-1`"),
        "{err}"
    );

    // profile show: directions and modes in words.
    let (shown, prof, err) = wardctl(&lab, "vic", &["profile", "show", "infusion-pump"]).await;
    assert!(shown, "{err}");
    assert!(
        prof.contains("from device") && prof.contains("new devices start in learn"),
        "{prof}"
    );
    assert!(
        !prof.contains("FromDevice") && !prof.contains("Learn"),
        "{prof}"
    );

    // alerts: local time (here UTC+2), protocol names, the summary; --utc on request.
    let alerts = ok(&lab, "vic", &["alerts", "list"]).await;
    assert!(
        alerts.contains("2025-12-03 09:00:00 +02:00  high     scan_vertical    pump-3a-bed12")
            && alerts.contains("pump-3a-bed12 tried 40 ports")
            && alerts.contains("(id gw-ward-3-scan-1)"),
        "{alerts}"
    );
    assert!(!alerts.contains("proto 6"), "{alerts}");
    let utc = ok(&lab, "vic", &["alerts", "list", "--utc"]).await;
    assert!(utc.contains("2025-12-03 07:00:00 UTC"), "{utc}");
    let one = ok(&lab, "vic", &["alerts", "show", "gw-ward-3-scan-1"]).await;
    for want in [
        "high alert gw-ward-3-scan-1",
        "pump-3a-bed12 tried 40 ports of 198.51.100.10 in 2 s",
        "when       2025-12-03 09:00:00 +02:00",
        "location   Ward 3A, bed 12",
        "flow       tcp 192.0.2.10:40000 -> 198.51.100.10:445",
        "technique  T0846 Remote System Discovery",
        "ports 22, 80, 445",
        "not acknowledged",
    ] {
        assert!(one.contains(want), "`{want}` missing from:\n{one}");
    }
    let (found, _, err) = wardctl(&lab, "vic", &["alerts", "show", "nope"]).await;
    assert!(!found && err.contains("no alert `nope`"), "{err}");
    let json: serde_json::Value = serde_json::from_str(
        &ok(
            &lab,
            "vic",
            &["--output", "json", "alerts", "show", "gw-ward-3-scan-1"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(json["id"], "gw-ward-3-scan-1");

    // gateways: never connected, then connected once an agent follows its policy.
    let gws = ok(&lab, "vic", &["gateways"]).await;
    assert!(gws.contains("gw-ward-3  never connected"), "{gws}");
    assert!(
        gws.contains("not reported"),
        "no agent reported health yet: {gws}"
    );
    assert!(!gws.contains("applied 0"), "{gws}");
    let mut agent = lab.agent(GW).await.unwrap();
    let mut watch = agent
        .watch_policy(pb::WatchPolicyRequest {
            gateway: GW.into(),
            last_applied_generation: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bundle = watch.message().await.unwrap().unwrap();
    agent
        .report_status(pb::StatusReport {
            gateway: GW.into(),
            applied_generation: bundle.generation,
            error: String::new(),
            epoch: bundle.epoch.clone(),
            health: Some(pb::GatewayHealth {
                agent_version: "0.9.1".into(),
                watchdog_fired: true,
                watchdog_fired_count: 1,
                fail_open_devices: 2,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let gws = ok(&lab, "vic", &["gateways"]).await;
    assert!(
        gws.contains(&format!(
            "gw-ward-3  connected, up to date (generation {})",
            bundle.generation
        )),
        "{gws}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&lab, "vic", &["--output", "json", "gateways"]).await).unwrap();
    assert_eq!(json[0]["applied_generation"], bundle.generation);
    // What the agent reported of itself: its release and the fired watchdog.
    assert!(
        gws.contains("0.9.1") && gws.contains("FIRED since "),
        "{gws}"
    );
    assert!(
        gws.contains(", 2 fail-open devices only monitored (fired 1, recovered 0)"),
        "{gws}"
    );
    assert_eq!(json[0]["agent_version"], "0.9.1");
    assert_eq!(json[0]["watchdog"]["fired"], true);
    assert!(json[0]["watchdog"]["fired_since_unix_ms"].as_i64().unwrap() > 0);
    assert!(json[0].get("connected").is_none(), "JSON unchanged: {json}");
    drop(watch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_are_refused_with_the_closest_known_one() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::with_demo_site(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("sam", "soc")],
        "eve",
    )
    .await
    .unwrap();
    let audited = || lab.store.audit().unwrap().len();
    let before = audited();

    let (ok_, _, err) = wardctl(
        &lab,
        "eve",
        &["devices", "list", "--profile", "infusion-pmp"],
    )
    .await;
    assert!(!ok_);
    assert_eq!(
        err.trim(),
        "error: no profile `infusion-pmp` (did you mean `infusion-pump`?)"
    );
    let (ok_, _, err) = wardctl(&lab, "eve", &["devices", "list", "--gateway", "gw-ward3"]).await;
    assert!(!ok_ && err.contains("did you mean `gw-ward-3`"), "{err}");
    let pumps = ok(
        &lab,
        "eve",
        &["devices", "list", "--profile", "infusion-pump"],
    )
    .await;
    assert_eq!(pumps.lines().count(), 2, "{pumps}");
    // A known profile no device has: said in words, not an empty table.
    assert_eq!(
        ok(&lab, "eve", &["devices", "list", "--profile", "mr"]).await,
        "no devices with profile mr\n"
    );
    let (ok_, _, err) = wardctl(
        &lab,
        "eve",
        &["assign", "pump-3a-bed12", "infusion-pmp", "--dry-run"],
    )
    .await;
    assert!(
        !ok_ && err.contains("did you mean `infusion-pump`"),
        "{err}"
    );

    // A mistyped detector would suppress nothing: refused, not audited.
    let suppress = |detector: &'static str| {
        [
            "alerts",
            "suppress",
            "--device",
            "pump-3a-bed12",
            "--detector",
            detector,
            "--reason",
            "INC-4 known vendor scanner",
        ]
    };
    let (ok_, _, err) = wardctl(&lab, "sam", &suppress("class-protocol")).await;
    assert!(!ok_, "accepted a typo");
    assert!(
        err.contains("no detector `class-protocol` (did you mean `class_protocol`?)")
            && err.contains("scan_vertical"),
        "{err}"
    );
    assert_eq!(audited(), before, "a refused suppression is not audited");
    ok(&lab, "sam", &suppress("class_protocol")).await;
    assert_eq!(audited(), before + 1);
}

/// The scan finding again, later and under another id (a new alert of the same pattern).
fn scan_again(n: u64) -> Finding {
    let mut f = scan();
    f.id = format!("gw-ward-3-scan-{n}");
    f.time_ns = T0 + n * 60_000_000_000;
    f.first_seen_ns = f.time_ns;
    f.last_seen_ns = f.time_ns;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressions_are_listed_removable_and_every_reader_applies_them() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::with_demo_site(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("sam", "soc"), ("vic", "viewer")],
        "eve",
    )
    .await
    .unwrap();
    report(&lab, &[scan()]).await;
    assert_eq!(
        ok(&lab, "sam", &["alerts", "suppressions"]).await,
        "no suppressions\n"
    );
    ok(
        &lab,
        "sam",
        &[
            "alerts",
            "suppress",
            "--device",
            "pump-3a-bed12",
            "--detector",
            "scan_vertical",
            "--reason",
            "INC-12 pen test this week",
        ],
    )
    .await;
    let listed = ok(&lab, "vic", &["alerts", "suppressions"]).await;
    let mut lines = listed.lines();
    assert!(lines.next().unwrap().starts_with("DEVICE"), "{listed}");
    let row = lines.next().unwrap();
    for want in [
        "pump-3a-bed12",
        "scan_vertical",
        "any",
        "user:sam",
        "INC-12 pen test this week",
    ] {
        assert!(row.contains(want), "`{want}` missing from: {row}");
    }

    // A new alert of the pattern: stored, but `list` leaves it out as `tail` and the sinks do.
    report(&lab, &[scan_again(2)]).await;
    let list = ok(&lab, "sam", &["alerts", "list", "--all"]).await;
    assert!(
        list.contains("gw-ward-3-scan-1") && !list.contains("scan-2"),
        "{list}"
    );
    let with = ok(
        &lab,
        "sam",
        &["alerts", "list", "--all", "--include-suppressed"],
    )
    .await;
    assert!(with.contains("gw-ward-3-scan-2, suppressed)"), "{with}");

    // Removed: a viewer may not, the SOC may, once; later alerts are listed again.
    let (done, _, err) = wardctl(
        &lab,
        "vic",
        &[
            "alerts",
            "unsuppress",
            "--device",
            "pump-3a-bed12",
            "--detector",
            "scan_vertical",
            "--reason",
            "over",
        ],
    )
    .await;
    assert!(!done && err.contains("permission denied"), "{err}");
    let args = [
        "alerts",
        "unsuppress",
        "--device",
        "pump-3a-bed12",
        "--detector",
        "scan_vertical",
        "--reason",
        "INC-12 closed",
    ];
    let out = ok(&lab, "sam", &args).await;
    assert!(
        out.starts_with("suppression removed (audit entry "),
        "{out}"
    );
    let (again, _, err) = wardctl(&lab, "sam", &args).await;
    assert!(!again);
    assert!(
        err.contains("suppression `scan_vertical on pump-3a-bed12` not found"),
        "{err}"
    );
    assert_eq!(
        ok(&lab, "sam", &["alerts", "suppressions"]).await,
        "no suppressions\n"
    );
    report(&lab, &[scan_again(3)]).await;
    let list = ok(&lab, "sam", &["alerts", "list", "--all"]).await;
    assert!(list.contains("gw-ward-3-scan-3"), "{list}");
    let audit = ok(&lab, "eve", &["--output", "json", "audit", "list"]).await;
    assert!(audit.contains("unsuppress_alerts"), "{audit}");
}
