//! The agent's flow-record client (`sync::report_flows`) against a real controller (in-process,
//! loopback, mTLS, SQLite): more records than one batch holds arrive in acknowledged batches
//! and are folded by the controller; a refused batch says how many records were acknowledged
//! before it and that sending it again will not help. No root needed.

use wardgate_agent::{config::ControllerConfig, sync};
use wardgate_analysis::FlowRecord;
use wardgate_controller::store::Store;
use wardgate_proto::flows::MAX_FLOWS_PER_BATCH;
use wardgate_testkit::{controller::LabController, flows::tcp_record};

const GW: &str = "gw-ward-3";
const NS: u64 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_go_in_acknowledged_batches_and_a_refusal_says_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let lab =
        LabController::with_demo_site(dir.path(), &[GW.to_string()], &[("eve", "engineer")], "eve")
            .await
            .unwrap();
    let cfg = ControllerConfig {
        address: lab.url().into(),
        certs: lab.certs().to_path_buf(),
        gateway: GW.into(),
        server_name: "localhost".into(),
        outbox: None,
        flow_report_every_ms: 30_000,
        health_report_every_ms: 60_000,
        connect_timeout_ms: 5_000,
        renewal: Default::default(),
    };
    let mut client = sync::connect(&cfg).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Halfway through today (UTC), so every record falls on one day.
    let t = now - now % (86_400 * NS) + (now % (86_400 * NS)) / 2;
    let n = MAX_FLOWS_PER_BATCH + 100;
    let records: Vec<FlowRecord> = (0..n)
        .map(|i| tcp_record("pump-3a-bed12", 8443, t + i as u64))
        .collect();
    let done = sync::report_flows(&mut client, GW, &records).await.unwrap();
    assert_eq!(
        done,
        sync::FlowsReported {
            acknowledged: n,
            stored: n as u64,
            unknown_device: 0,
            expired: 0,
        }
    );
    let rows = lab
        .store
        .flow_aggregates("pump-3a-bed12", 0, u64::MAX >> 1)
        .unwrap();
    assert_eq!(rows.len(), 1, "one device, peer, port and day");
    assert_eq!(
        (rows[0].flows, rows[0].bytes_out),
        (n as u64, 200 * n as u64)
    );

    // A bad record in the second batch: the first is acknowledged, the error says so and that
    // resending will not help.
    let mut bad = records.clone();
    bad[MAX_FLOWS_PER_BATCH + 5].last_seen_ns = 0;
    let e = sync::report_flows(&mut client, GW, &bad).await.unwrap_err();
    assert_eq!(e.reported.acknowledged, MAX_FLOWS_PER_BATCH);
    assert_eq!(e.status.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.status.message().contains("last_seen_ns"), "{e}");
    assert!(!e.retryable());
    let rows = lab
        .store
        .flow_aggregates("pump-3a-bed12", 0, u64::MAX >> 1)
        .unwrap();
    assert_eq!(rows[0].flows, (n + MAX_FLOWS_PER_BATCH) as u64);

    // The controller gone: retryable.
    lab.shutdown().await.unwrap();
    let e = sync::report_flows(&mut client, GW, &records[..1])
        .await
        .unwrap_err();
    assert_eq!(e.reported.acknowledged, 0);
    assert!(e.retryable(), "{e}");
}

/// The agent's reporting queue and its reporter task: records queued as the live flow table
/// gives them up reach the controller's `flow_days` within the interval; with the controller
/// gone they stay queued (nothing lost), and at stop `drain` sends what is left once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_records_reach_flow_days_on_the_interval_and_survive_an_outage() {
    use std::time::{Duration, Instant};
    use wardgate_agent::{
        flow_report::{FlowQueue, Reporter},
        metrics::Live,
    };

    let dir = tempfile::tempdir().unwrap();
    let lab =
        LabController::with_demo_site(dir.path(), &[GW.to_string()], &[("eve", "engineer")], "eve")
            .await
            .unwrap();
    let cfg = ControllerConfig {
        address: lab.url().into(),
        certs: lab.certs().to_path_buf(),
        gateway: GW.into(),
        server_name: "localhost".into(),
        outbox: None,
        flow_report_every_ms: 200,
        health_report_every_ms: 60_000,
        connect_timeout_ms: 5_000,
        renewal: Default::default(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let t = now - now % (86_400 * NS) + (now % (86_400 * NS)) / 2;
    let live = Live::default();
    let queue = FlowQueue::new(10_000, live.clone());
    let task = tokio::spawn(Reporter::new(cfg.clone(), queue.clone()).run(cfg.flow_report_every()));
    queue.push_all(&[
        tcp_record("pump-3a-bed12", 2575, t),
        tcp_record("pump-3a-bed12", 2575, t + 1),
    ]);
    let flows = |lab: &LabController| {
        lab.store
            .flow_aggregates("pump-3a-bed12", 0, u64::MAX >> 1)
            .unwrap()
            .iter()
            .filter(|r| r.key.port == 2575)
            .map(|r| r.flows)
            .sum::<u64>()
    };
    let started = Instant::now();
    // Stored, then acknowledged: wait for both.
    while flows(&lab) < 2 || !queue.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "records not reported in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(flows(&lab), 2);
    assert_eq!(live.flow_records_sent.get(), 2);

    // A record refused for what it holds is dropped and counted; the good one after it goes.
    let mut bad = tcp_record("pump-3a-bed12", 2575, t);
    bad.last_seen_ns = 0;
    queue.push_all(&[bad]);
    let started = Instant::now();
    while !queue.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refused record still queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        live.flow_records_dropped_of(wardgate_agent::flow_report::DROP_REFUSED),
        1
    );

    // The controller gone: records stay queued across rounds.
    let addr = format!("127.0.0.1:{}", lab.url().rsplit(':').next().unwrap());
    lab.shutdown().await.unwrap();
    queue.push_all(&[tcp_record("pump-3a-bed12", 2575, t + 2)]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(queue.len(), 1, "an undelivered record is kept");
    task.abort();

    // Back at the same address (same store): the drain at stop delivers it.
    let lab = LabController::start_at(dir.path(), &[GW.to_string()], &[("eve", "engineer")], &addr)
        .await
        .unwrap();
    let left = Reporter::new(cfg, queue.clone())
        .drain(Duration::from_secs(10))
        .await;
    assert_eq!(left, 0);
    assert_eq!(flows(&lab), 3);
    assert_eq!(live.flow_records_sent.get(), 3);
}
