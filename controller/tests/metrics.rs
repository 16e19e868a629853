//! The controller's `/metrics`, scraped with curl around real gRPC calls (an agent watching,
//! a policy change, a status report, alerts): gateways, generations, alerts in and write
//! latency move, and `promtool check metrics` (Debian prometheus) accepts every scrape. The
//! binary is started from a config file too: its endpoint answers, and a typo in the file is
//! refused with file, line and column.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use tonic::Request;
use wardgate_controller::store::Store as _;
use wardgate_proto::v1 as pb;
use wardgate_testkit::{
    controller::LabController,
    prometheus::{promtool_check, samples, value},
};

const GW: &str = "gw-ward-3";

/// `GET /metrics` with curl (a plain HTTP client).
fn scrape(addr: SocketAddr) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .expect("curl runs (apt package curl)");
    assert!(
        out.status.success(),
        "scrape of {addr} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn value_or_0(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    s.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_generations_alerts_and_writes_move_after_real_calls() {
    let dir = tempfile::tempdir().unwrap();
    let lab =
        LabController::with_demo_site(dir.path(), &[GW.to_string()], &[("eve", "engineer")], "eve")
            .await
            .unwrap();
    let before_text = scrape(lab.metrics_addr);
    let before = samples(&before_text);
    let latest = format!("wardgate_controller_gateway_latest_generation{{gateway=\"{GW}\"}}");
    let applied = format!("wardgate_controller_gateway_applied_generation{{gateway=\"{GW}\"}}");
    let connected = format!("wardgate_controller_gateway_connected{{gateway=\"{GW}\"}}");
    let high =
        format!("wardgate_controller_alerts_received_total{{gateway=\"{GW}\",severity=\"high\"}}");
    let changes = r#"wardgate_controller_store_write_duration_seconds_count{kind="change"}"#;
    assert_eq!(value(&before, "wardgate_controller_gateways"), 1.0);
    assert_eq!(
        value(&before, "wardgate_controller_gateways_connected"),
        0.0
    );
    assert_eq!(value(&before, &connected), 0.0);
    assert_eq!(value(&before, &applied), 0.0);
    let g0 = value(&before, &latest);
    assert!(g0 >= 1.0, "seeding compiled generations:\n{before_text}");
    assert!(value(&before, changes) > 0.0, "seeding was written");

    // An agent connects and watches, a change makes a generation, the agent reports it
    // applied and sends alerts. It holds exactly the latest generation (same store epoch and
    // content), so the first bundle is the new one.
    let epoch = lab.store.epoch().unwrap();
    let held = lab.store.latest(GW).unwrap().unwrap();
    assert_eq!(f64::from(held.generation), g0);
    let mut agent = lab.agent(GW).await.unwrap();
    let mut watch = agent
        .watch_policy(pb::WatchPolicyRequest {
            gateway: GW.into(),
            last_applied_generation: held.generation,
            epoch: epoch.clone(),
            content_hash: held.content_hash(),
        })
        .await
        .unwrap()
        .into_inner();
    let w = lab
        .admin("eve")
        .await
        .unwrap()
        .set_mode(pb::SetModeRequest {
            accept_impact: false,
            device: "us-3a-portable".into(),
            mode: "enforce".into(),
            reason: "CHG-9".into(),
            dry_run: false,
            for_minutes: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let g1 = w.generations[GW];
    let bundle = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("bundle within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(bundle.generation, g1);
    agent
        .report_status(pb::StatusReport {
            gateway: GW.into(),
            applied_generation: g1,
            error: String::new(),
            epoch,
            health: None,
        })
        .await
        .unwrap();
    let alert = |id: &str, severity: &str| pb::Alert {
        id: id.into(),
        kind: "deny".into(),
        severity: severity.into(),
        observed_unix_ms: now_ms(),
        ..Default::default()
    };
    let mut acks = agent
        .report_alerts(Request::new(tokio_stream::iter(vec![pb::AlertBatch {
            alerts: vec![
                alert("m-1", "high"),
                alert("m-2", "high"),
                alert("m-3", "low"),
            ],
        }])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().ids.len(), 3);

    let after_text = scrape(lab.metrics_addr);
    let after = samples(&after_text);
    assert_eq!(value(&after, "wardgate_controller_gateways_connected"), 1.0);
    assert_eq!(value(&after, &connected), 1.0);
    assert_eq!(value(&after, &latest), f64::from(g1));
    assert!(f64::from(g1) > g0);
    assert_eq!(value(&after, &applied), f64::from(g1));
    assert_eq!(value(&after, &high) - value_or_0(&before, &high), 2.0);
    assert!(
        value(&after, "wardgate_controller_policy_bundles_sent_total")
            > value(&before, "wardgate_controller_policy_bundles_sent_total")
    );
    assert_eq!(value(&after, changes) - value(&before, changes), 1.0);
    for kind in ["alerts", "status"] {
        let count =
            format!("wardgate_controller_store_write_duration_seconds_count{{kind=\"{kind}\"}}");
        assert_eq!(value(&after, &count), 1.0, "{kind}:\n{after_text}");
    }

    // The agent goes away: the gateway is no longer connected (bounded wait for the server
    // to notice the closed stream).
    drop(watch);
    drop(acks);
    drop(agent);
    let deadline = Instant::now() + Duration::from_secs(10);
    let gone_text = loop {
        let t = scrape(lab.metrics_addr);
        if value(&samples(&t), "wardgate_controller_gateways_connected") == 0.0 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "still connected after 10 s:\n{t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(value(&samples(&gone_text), &connected), 0.0);

    for text in [&before_text, &after_text, &gone_text] {
        promtool_check(text);
    }
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sink_shows_its_lag_deliveries_and_failures() {
    use wardgate_controller::config::{SinkConfig, SinkKind};
    let dir = tempfile::tempdir().unwrap();
    let sink = |kind, name: &str, address: Option<String>, path| SinkConfig {
        kind,
        name: Some(name.into()),
        address,
        tls: None,
        path,
        rotate_bytes: 64 << 20,
        keep: 5,
    };
    let ocsf = dir.path().join("ocsf.jsonl");
    // A file that takes everything, and a collector that is not there (nothing listens).
    let lab = LabController::start_with_sinks(
        dir.path(),
        &[GW.to_string()],
        &[],
        &[
            sink(SinkKind::Ocsf, "file", None, Some(ocsf.clone())),
            sink(
                SinkKind::Syslog,
                "siem",
                Some(format!("127.0.0.1:{}", free_port())),
                None,
            ),
        ],
    )
    .await
    .unwrap();
    let lag = |sink: &str| format!("wardgate_controller_sink_lag_alerts{{sink=\"{sink}\"}}");
    let delivered =
        |sink: &str| format!("wardgate_controller_sink_delivered_alerts_total{{sink=\"{sink}\"}}");
    let failures =
        |sink: &str| format!("wardgate_controller_sink_failures_total{{sink=\"{sink}\"}}");
    let before_text = scrape(lab.metrics_addr);
    let before = samples(&before_text);
    for s in ["file", "siem"] {
        assert_eq!(value(&before, &lag(s)), 0.0);
        assert_eq!(value(&before, &delivered(s)), 0.0);
    }

    let alert = |id: &str| pb::Alert {
        id: id.into(),
        kind: "deny".into(),
        severity: "high".into(),
        observed_unix_ms: now_ms(),
        ..Default::default()
    };
    let mut acks = lab
        .agent(GW)
        .await
        .unwrap()
        .report_alerts(Request::new(tokio_stream::iter(vec![pb::AlertBatch {
            alerts: vec![alert("l-1"), alert("l-2"), alert("l-3")],
        }])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().ids.len(), 3);

    let deadline = Instant::now() + Duration::from_secs(10);
    let after_text = loop {
        let t = scrape(lab.metrics_addr);
        let s = samples(&t);
        if value(&s, &delivered("file")) == 3.0 && value(&s, &failures("siem")) >= 1.0 {
            break t;
        }
        assert!(Instant::now() < deadline, "sinks did not move:\n{t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = samples(&after_text);
    assert_eq!(value(&after, &lag("file")), 0.0, "the file caught up");
    assert_eq!(value(&after, &lag("siem")), 3.0, "the collector is down");
    assert_eq!(value(&after, &delivered("siem")), 0.0);
    assert_eq!(value(&after, &failures("file")), 0.0);
    assert_eq!(std::fs::read_to_string(&ocsf).unwrap().lines().count(), 3);
    for text in [&before_text, &after_text] {
        promtool_check(text);
    }
    lab.shutdown().await.unwrap();
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_serves_metrics_from_its_config_file_and_refuses_typos() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    wardgate_controller::certs::init(
        &certs,
        &[GW.to_string()],
        &[],
        &wardgate_controller::certs::InitOptions::default(),
    )
    .unwrap();
    let (grpc, metrics) = (free_port(), free_port());
    let config = dir.path().join("controller.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{grpc}\ndata: {}\ncerts: {}\nmetrics:\n  listen: 127.0.0.1:{metrics}\n",
            dir.path().join("data").display(),
            certs.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("controller.log");
    let _controller = Killed(
        Command::new(env!("CARGO_BIN_EXE_wardgate-controller"))
            .arg("--config")
            .arg(&config)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "metrics endpoint never came up:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = scrape(addr);
    assert_eq!(value(&samples(&text), "wardgate_controller_gateways"), 0.0);
    promtool_check(&text);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains(&format!("127.0.0.1:{grpc}")),
        "gRPC listens where the file says"
    );

    // A typo: refused before anything starts, with file, line and column.
    std::fs::write(
        &config,
        "listen: 127.0.0.1:7443\nmetrcis:\n  listen: 127.0.0.1:9465\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wardgate-controller"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("{}:2:1", config.display())) && err.contains("metrcis"),
        "{err}"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
