//! Several controllers on one database: what one writes reaches the agents and alert readers
//! of the others (LISTEN/NOTIFY), and a SOC sink configured on each delivers every alert once
//! (its lease), taken over when its holder dies.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use super::{super::Sql, *};
use crate::{
    config::{SinkConfig, SinkKind},
    metrics::ControllerMetrics,
    push::{Push, follow},
    sinks::{LEASE, Sinks},
};

/// Writes a new generation of `gw` through `store` (the pump's mode flips each time); its
/// number.
fn write_generation(store: &dyn Store, gw: &str, n: u32) -> u32 {
    let mode = if n.is_multiple_of(2) {
        Mode::Monitor
    } else {
        Mode::Enforce
    };
    let gw_name = gw.to_string();
    let compile = move |_: &dyn crate::store::SiteReader, _: &[_], _: &[_]| {
        Ok(BTreeMap::from([(
            gw_name.clone(),
            crate::generation::one_pump(&gw_name, 1, mode),
        )]))
    };
    let out = write(
        store,
        "user:sam",
        &format!("INC-{n}"),
        &[gateway(gw)],
        &compile,
    )
    .unwrap();
    out.generations[gw]
}

/// Waits (bounded) until `rx` carries `generation`; how long it took.
async fn seen(
    rx: &mut tokio::sync::watch::Receiver<crate::push::Latest>,
    generation: u32,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let got = tokio::time::timeout(
        within,
        rx.wait_for(|l| l.as_ref().is_some_and(|p| p.generation >= generation)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let at = started.elapsed();
    assert!(
        got,
        "generation {generation} not announced within {within:?} (have {:?})",
        rx.borrow().as_ref().map(|p| p.generation)
    );
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_reaches_the_watchers_of_another() {
    let url = fresh();
    let a = Arc::new(PgStore::connect(&url).unwrap());
    let b: Arc<dyn Store> = Arc::new(PgStore::connect(&url).unwrap());
    let push_b = Arc::new(Push::default());
    let follower = tokio::spawn(follow(b.clone(), push_b.clone()));
    let mut rx = push_b.watch("gw-r");
    let mut alerts_b = push_b.alerts();

    // Writes through A, announced on B: each within 1 s (measured).
    let mut slowest = Duration::ZERO;
    for n in 1..=5 {
        let g = tokio::task::block_in_place(|| write_generation(&*a, "gw-r", n));
        assert_eq!(g, n);
        slowest = slowest.max(seen(&mut rx, g, Duration::from_secs(1)).await);
    }
    let p = rx.borrow().clone().unwrap();
    let stored = b.generation("gw-r", 5).unwrap().unwrap();
    assert_eq!(
        p.content_hash,
        stored.content_hash(),
        "B announced the stored bundle"
    );
    println!("a generation written through A reached B's watcher within {slowest:?}");

    // New alerts through A wake B's alert readers.
    tokio::task::block_in_place(|| a.insert_alerts("gw-r", &[alert("x", 3, 1, 1)]).unwrap());
    tokio::time::timeout(Duration::from_secs(1), alerts_b.changed())
        .await
        .expect("B's alert readers woken within 1 s")
        .unwrap();

    // B's listening connection is cut, and a write lands while it is down: once it is back,
    // B re-reads the latest generations (nothing missed while disconnected).
    let cut = tokio::task::block_in_place(|| {
        a.conn()
            .unwrap()
            .one(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
    });
    assert_eq!(cut, 2, "both stores' listening connections cut");
    let g = tokio::task::block_in_place(|| write_generation(&*a, "gw-r", 6));
    seen(&mut rx, g, Duration::from_secs(3)).await;
    follower.abort();
}

/// The ids of the events in an OCSF sink's file, with how often each is there.
fn delivered(path: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["class_uid"] == 1008 {
            continue; // an audit checkpoint, not an alert
        }
        let uid = v["finding_info"]["uid"].as_str().unwrap().to_string();
        *out.entry(uid).or_default() += 1;
    }
    out
}

/// Stores alerts `from..to` of gateway `gw` through `store`, a few per write.
fn store_alerts(store: &dyn Store, gw: &str, from: usize, to: usize) {
    let device = wardgate_analysis::flow::DeviceRef {
        name: "pump".into(),
        id: None,
        mac: None,
    };
    let all: Vec<NewAlert> = (from..to)
        .map(|i| {
            let mut f = wardgate_analysis::detect::Finding::new(
                "scan_vertical",
                &device,
                1,
                wardgate_analysis::detect::Severity::High,
                1.0,
                wardgate_analysis::detect::Technique::new(
                    "",
                    "",
                    wardgate_analysis::detect::Matrix::Ics,
                ),
            );
            f.id = format!("a{i}");
            NewAlert {
                id: f.id.clone(),
                device: "pump".into(),
                severity: 3,
                body: serde_json::to_string(&f).unwrap(),
                detector: "scan_vertical".into(),
                peer: String::new(),
                count: 1,
                last_seen_ns: 1,
            }
        })
        .collect();
    for chunk in all.chunks(5) {
        store.insert_alerts(gw, chunk).unwrap();
    }
}

/// Waits (bounded) until `n` distinct events are in the file; the counts then.
async fn until_delivered(path: &Path, n: usize, within: Duration) -> BTreeMap<String, usize> {
    let started = Instant::now();
    loop {
        let got = delivered(path);
        if got.len() >= n || started.elapsed() > within {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_on_two_replicas_delivers_each_alert_once_and_is_taken_over_when_its_holder_dies() {
    let url = fresh();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("soc.jsonl");
    let cfg = SinkConfig {
        kind: SinkKind::Ocsf,
        name: Some("soc".into()),
        address: None,
        tls: None,
        path: Some(path.clone()),
        rotate_bytes: 1 << 30,
        keep: 1,
    };
    let metrics = Arc::new(ControllerMetrics::default());
    // Replica A on a runtime of its own, so that it can die (its tasks dropped mid-step).
    let a: Arc<dyn Store> = Arc::new(PgStore::connect(&url).unwrap());
    let b: Arc<dyn Store> = Arc::new(PgStore::connect(&url).unwrap());
    let rt_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sinks_a = {
        let _in = rt_a.enter();
        Sinks::start(a.clone(), std::slice::from_ref(&cfg), metrics.clone()).unwrap()
    };
    tokio::task::block_in_place(|| store_alerts(a.as_ref(), "gw-1", 0, 40));
    let first = until_delivered(&path, 40, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 40, "A delivered the first alerts");
    // B starts the same sink: A holds the lease, so B delivers nothing.
    let sinks_b = Sinks::start(b.clone(), std::slice::from_ref(&cfg), metrics.clone()).unwrap();
    assert!(!tokio::task::block_in_place(|| b.hold_sink_lease("soc", LEASE)).unwrap());
    // Alerts stored through both replicas while A delivers them all ...
    let (a2, b2) = (a.clone(), b.clone());
    tokio::task::block_in_place(move || {
        store_alerts(a2.as_ref(), "gw-1", 40, 70);
        store_alerts(b2.as_ref(), "gw-2", 0, 30);
    });
    let second = until_delivered(&path, 100, Duration::from_secs(5)).await;
    assert_eq!(second.len(), 100);
    // ... then A dies in the middle of a stream of alerts: B takes its sink over after the
    // lease's expiry and delivers the rest.
    let stream = {
        let b = b.clone();
        std::thread::spawn(move || {
            for i in 0..20 {
                store_alerts(b.as_ref(), "gw-3", i * 5, i * 5 + 5);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Its tasks die with their runtime (dropped at their next await), not by stopping.
    let killed = Instant::now();
    rt_a.shutdown_background();
    drop(sinks_a);
    drop(a);
    tokio::task::block_in_place(|| stream.join().unwrap());
    let all = until_delivered(&path, 200, LEASE + Duration::from_secs(5)).await;
    let took_over = killed.elapsed();
    let twice: Vec<_> = all.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(all.len(), 200, "every alert delivered");
    println!("after the holder died, B delivered the rest within {took_over:?}");
    sinks_b.stop().await;
}
