//! The agent's bounds at work (`limits:`, issue 23 point 5), its real pieces against a real
//! controller (in-process, loopback, mTLS, SQLite): with an outbox of 10 alerts and a queue of
//! 5 flow records, an outage drops the lowest-severity alerts first (oldest first within a
//! severity) and the oldest records, counts each drop per kind and severity in the metrics,
//! and once the controller is reachable exactly what was kept arrives. No root needed.

use std::{sync::Arc, time::Duration};

use prometheus_client::{encoding::prometheus_text::encode, registry::Registry};
use tokio::sync::{mpsc, watch};
use wardgate_agent::{
    alerts::{AlertQueue, Outbox, OutboxLimits},
    config::{AgentConfig, ControllerConfig},
    flow_report::{FlowQueue, Reporter},
    health::HealthSource,
    limits::Usage,
    metrics::{self, Fill, Live},
    sync::{self, Holding},
};
use wardgate_controller::store::{AlertQuery, Store};
use wardgate_proto::v1 as pb;
use wardgate_testkit::{
    controller::LabController,
    flows::tcp_record,
    prometheus::{promtool_check, samples},
};

const GW: &str = "gw-ward-3";
const NS: u64 = 1_000_000_000;
const DEVICE: &str = "pump-3a-bed12";

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The i-th alert of the outage: per 10, 1 critical spoof, 2 high denies, 3 medium would-denies
/// and 4 low unknown devices, interleaved.
fn alert(i: usize, now_ms: i64) -> pb::Alert {
    let (kind, severity) = match i % 10 {
        0 => ("spoof", "critical"),
        1 | 2 => ("deny", "high"),
        3..=5 => ("would_deny", "medium"),
        _ => ("unknown_device", "low"),
    };
    pb::Alert {
        id: format!("outage-{i:02}"),
        kind: kind.into(),
        severity: severity.into(),
        observed_unix_ms: now_ms,
        ..Default::default()
    }
}

/// Log lines written while `f` runs on this thread.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let sub = wardgate_daemon::log::subscriber(
        wardgate_daemon::log::LogFormat::Text,
        move || writer.clone(),
        false,
    );
    tracing::subscriber::with_default(sub, f);
    String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
}

fn scrape(r: &Registry) -> String {
    let mut t = String::new();
    encode(&mut t, r).unwrap();
    t
}

/// The value of `series` (name and labels, as printed) in the scrape `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    samples(text).get(series).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_limits_drop_the_lowest_and_oldest_first_count_it_and_deliver_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let lab =
        LabController::with_demo_site(dir.path(), &[GW.to_string()], &[("eve", "engineer")], "eve")
            .await
            .unwrap();
    let latest = lab.store.latest_generation(GW).unwrap();
    // The agent's own config, as an operator writes it.
    let cfg = AgentConfig::parse(&format!(
        "interfaces: [wg-dev0]\ndesired_state: {}\n\
         controller: {{address: \"https://127.0.0.1:9\", certs: {}, gateway: {GW}, \
         flow_report_every_ms: 100}}\n\
         limits: {{outbox_alerts: 10, flow_records: 5, outbox_bytes: 64K}}\n",
        dir.path().join("agent/desired.json").display(),
        lab.certs().display()
    ))
    .unwrap();
    let down: ControllerConfig = cfg.controller.clone().unwrap();
    let up = ControllerConfig {
        address: lab.url().into(),
        ..down.clone()
    };
    let outbox_path = down.outbox_path(&cfg.desired_state);
    let live = Live::default();
    let queue =
        AlertQueue::new(Outbox::open_with(&outbox_path, OutboxLimits::of(&cfg.limits)).unwrap());
    let flows = FlowQueue::new(cfg.limits.flow_records, live.clone());
    let mut usage = Usage::new(
        cfg.limits,
        live.clone(),
        Some(queue.clone()),
        Some(flows.clone()),
        None,
    );
    let (_applied, applied_rx) = watch::channel(None);
    let registry = metrics::registry(
        "/nonexistent/wardgate".into(),
        &live,
        Some(queue.clone()),
        Arc::new(Fill::default()),
        applied_rx,
    );

    // The outage: the link and the reporter retry an address where nothing listens.
    let link = |c: ControllerConfig| {
        let (notify, wake) = mpsc::channel(4);
        let (report, applied) = mpsc::channel(4);
        let task = tokio::spawn(sync::run(
            c,
            Holding {
                generation: latest,
                ..Default::default()
            },
            notify,
            applied,
            queue.clone(),
            live.clone(),
            HealthSource::from_fn(|| None),
        ));
        (task, wake, report)
    };
    let (task, _wake, _report) = link(down.clone());
    let reporter = tokio::spawn(Reporter::new(down, flows.clone()).run(Duration::from_millis(100)));
    let now_ms = now_unix_ms();
    const N: usize = 30;
    for i in 0..N {
        queue.push_all(vec![alert(i, now_ms)]);
    }
    let now_ns = now_ms as u64 * 1_000_000;
    let t = now_ns - now_ns % (86_400 * NS) + (now_ns % (86_400 * NS)) / 2;
    for port in 1001..=1008 {
        flows.push_all(&[tcp_record(DEVICE, port, t)]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kept: the 3 critical and 6 high alerts and the newest medium one; dropped: all 12 low,
    // then the 8 oldest medium. The records: the newest 5 of 8.
    let pending = |q: &AlertQueue| {
        let mut o = q.lock();
        o.reconnected();
        let mut ids: Vec<String> = o.next_batch().into_iter().map(|a| a.id).collect();
        o.reconnected();
        ids.sort();
        ids
    };
    let kept: Vec<String> = (0..N)
        .filter(|i| matches!(i % 10, 0..=2) || *i == 25)
        .map(|i| format!("outage-{i:02}"))
        .collect();
    assert_eq!(pending(&queue), kept);
    assert_eq!(flows.len(), 5);

    // Both queues full: one warning each, naming the key to raise; not again while they stay.
    let logs = logged(|| usage.sample());
    for line in [
        "outbox at 100% of its limit: raise limits.outbox_alerts",
        "flow_records at 100% of its limit: raise limits.flow_records",
    ] {
        assert_eq!(logs.matches(line).count(), 1, "`{line}` once in:\n{logs}");
    }
    let again = logged(|| usage.sample());
    assert!(!again.contains("of its limit"), "said once: {again}");
    let text = scrape(&registry);
    // What an operator sees (shown with --nocapture).
    print!("{logs}");
    for l in text.lines().filter(|l| {
        l.starts_with("wardgate_agent_resource_")
            || l.starts_with("wardgate_agent_outbox_")
            || l.starts_with("wardgate_agent_flow_records_dropped")
            || l.starts_with("wardgate_agent_disk_writes")
    }) {
        println!("{l}");
    }
    for (series, want) in [
        (
            r#"wardgate_agent_outbox_dropped_alerts_total{kind="unknown_device",severity="low"}"#,
            12.0,
        ),
        (
            r#"wardgate_agent_outbox_dropped_alerts_total{kind="would_deny",severity="medium"}"#,
            8.0,
        ),
        (
            r#"wardgate_agent_flow_records_dropped_total{reason="queue_full"}"#,
            3.0,
        ),
        ("wardgate_agent_outbox_alerts", 10.0),
        (
            r#"wardgate_agent_resource_usage_entries{resource="outbox"}"#,
            10.0,
        ),
        (
            r#"wardgate_agent_resource_limit_entries{resource="outbox"}"#,
            10.0,
        ),
        (
            r#"wardgate_agent_resource_usage_entries{resource="flow_records"}"#,
            5.0,
        ),
        (
            r#"wardgate_agent_resource_limit_entries{resource="flow_records"}"#,
            5.0,
        ),
        (
            r#"wardgate_agent_resource_limit_bytes{resource="outbox"}"#,
            65_536.0,
        ),
        (
            r#"wardgate_agent_resource_limit_bytes{resource="memory"}"#,
            (1u64 << 30) as f64,
        ),
        (
            r#"wardgate_agent_disk_writes_refused_total{file="outbox"}"#,
            0.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    }
    // Nothing high or critical was dropped: no such series.
    assert!(!text.contains(r#"severity="high""#), "{text}");
    assert!(!text.contains(r#"severity="critical""#), "{text}");
    // The process's own memory and descriptors, read from /proc/self.
    let rss = value(
        &text,
        r#"wardgate_agent_resource_usage_bytes{resource="memory"}"#,
    )
    .unwrap();
    assert!(rss > 1e6, "resident memory {rss}");
    let fds = value(
        &text,
        r#"wardgate_agent_resource_usage_entries{resource="open_files"}"#,
    )
    .unwrap();
    let fd_limit = value(
        &text,
        r#"wardgate_agent_resource_limit_entries{resource="open_files"}"#,
    )
    .unwrap();
    assert!(fds >= 3.0 && fds < fd_limit, "{fds} of {fd_limit}");
    let file = value(
        &text,
        r#"wardgate_agent_resource_usage_bytes{resource="outbox_file"}"#,
    )
    .unwrap();
    assert!(file > 0.0, "the outbox file exists");
    let bytes = value(
        &text,
        r#"wardgate_agent_resource_usage_bytes{resource="outbox"}"#,
    )
    .unwrap();
    assert!(bytes > 0.0 && bytes < 65_536.0, "{bytes}");
    promtool_check(&text);
    assert!(
        lab.store
            .alerts(&AlertQuery::recent(100))
            .unwrap()
            .is_empty()
    );

    // The controller reachable: a new link and reporter deliver exactly what was kept.
    task.abort();
    let _ = task.await;
    reporter.abort();
    let _ = reporter.await;
    let (task, _wake, _report) = link(up.clone());
    let reporter = tokio::spawn(Reporter::new(up, flows.clone()).run(Duration::from_millis(100)));
    let flow_ports = || -> Vec<u16> {
        let mut p: Vec<u16> = lab
            .store
            .flow_aggregates(DEVICE, 0, u64::MAX >> 1)
            .unwrap()
            .iter()
            .map(|r| r.key.port)
            .filter(|p| (1001..=1008).contains(p))
            .collect();
        p.sort();
        p
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stored = lab.store.alerts(&AlertQuery::recent(100)).unwrap().len();
        if stored == kept.len() && queue.lock().is_empty() && flows.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 20 s: {stored} alerts stored, {} pending, {} records queued",
            queue.lock().len(),
            flows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stored: Vec<String> = lab
        .store
        .alerts(&AlertQuery::recent(100))
        .unwrap()
        .into_iter()
        .map(|a| {
            let finding: serde_json::Value = serde_json::from_str(&a.body).unwrap();
            finding["id"].as_str().unwrap().to_string()
        })
        .collect();
    stored.sort();
    assert_eq!(
        stored, kept,
        "the controller has what was kept, nothing dropped"
    );
    assert_eq!(flow_ports(), [1004, 1005, 1006, 1007, 1008]);
    task.abort();
    reporter.abort();

    let logs = logged(|| usage.sample());
    for line in ["outbox back under 70%", "flow_records back under 70%"] {
        assert_eq!(logs.matches(line).count(), 1, "`{line}` once in:\n{logs}");
    }
    let text = scrape(&registry);
    for (series, want) in [
        ("wardgate_agent_outbox_alerts", 0.0),
        (
            r#"wardgate_agent_resource_usage_entries{resource="outbox"}"#,
            0.0,
        ),
        (
            r#"wardgate_agent_resource_usage_entries{resource="flow_records"}"#,
            0.0,
        ),
        (
            r#"wardgate_agent_resource_usage_bytes{resource="outbox"}"#,
            0.0,
        ),
        // The drops stay counted.
        (
            r#"wardgate_agent_outbox_dropped_alerts_total{kind="unknown_device",severity="low"}"#,
            12.0,
        ),
        ("wardgate_agent_flow_records_sent_total", 5.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    }
    promtool_check(&text);
}
