//! Policy sync against a real controller (in-process, loopback, mTLS, SQLite): the agent's sync
//! task converts each typed bundle and hands it to the map writer, reports what was applied (or
//! the writer's error) with the store epoch, follows a new assignment at once, resumes after a
//! restart from what it holds, converges on a recreated or restored store whatever its
//! generation numbers, and receives a bundle larger than tonic's default 4 MiB. No root needed:
//! the map writer is played by the test (the datapath tiers cover the maps).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

mod support;

use support::sync_agent::{Agent, handed};
use tokio::sync::mpsc;
use wardgate_agent::{
    alerts::{AlertQueue, Outbox},
    config::{Addresses, ControllerConfig},
    health::HealthSource,
    metrics::Live,
    sync::{self, Applied, Holding},
};
use wardgate_controller::store::{AlertQuery, Store};
use wardgate_proto::v1 as pb;
use wardgate_testkit::{controller::LabController, relay::Relay};

const GW: &str = "gw-ward-3";

/// (applied generation, applied epoch, last error) as the controller lists it.
async fn gateway_status(lab: &LabController) -> (u32, String, String) {
    let gws = lab
        .admin("eve")
        .await
        .unwrap()
        .list_gateways(pb::ListGatewaysRequest {})
        .await
        .unwrap()
        .into_inner()
        .gateways;
    let g = gws.into_iter().find(|g| g.name == GW).unwrap();
    (g.applied_generation, g.applied_epoch, g.last_error)
}

async fn applied_on_controller(lab: &LabController, want: u32) {
    for _ in 0..100 {
        let (applied, epoch, _) = gateway_status(lab).await;
        if applied == want && epoch == lab.store.epoch().unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the controller never saw generation {want} of its epoch applied");
}

/// The demo site on an in-process controller, with one engineer (`eve`).
async fn demo_lab(dir: &std::path::Path) -> LabController {
    LabController::with_demo_site(dir, &[GW.to_string()], &[("eve", "engineer")], "eve")
        .await
        .unwrap()
}

/// The agent's controller settings for the lab's gateway `GW`.
fn agent_config(lab: &LabController) -> ControllerConfig {
    ControllerConfig {
        address: lab.url().into(),
        certs: lab.certs().to_path_buf(),
        gateway: GW.into(),
        server_name: "localhost".into(),
        outbox: None,
        flow_report_every_ms: 30_000,
        health_report_every_ms: 60_000,
        connect_timeout_ms: 5_000,
        renewal: Default::default(),
    }
}

async fn set_mode(lab: &LabController, device: &str, mode: &str) -> u32 {
    lab.admin("eve")
        .await
        .unwrap()
        .set_mode(pb::SetModeRequest {
            accept_impact: false,
            device: device.into(),
            mode: mode.into(),
            reason: "test".into(),
            dry_run: false,
            for_minutes: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .generations[GW]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_the_controller_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lab = demo_lab(dir.path()).await;
    let latest = lab.store.latest(GW).unwrap().unwrap();
    let epoch = lab.store.epoch().unwrap();
    let cfg = agent_config(&lab);

    // A fresh agent (nothing applied) gets the latest generation, typed, with the store's epoch
    // and content hash, equal to what the store compiled.
    let (writer, mut bundles) = mpsc::channel(64);
    let (report, applied) = mpsc::channel(4);
    let alerts = AlertQueue::new(Outbox::default());
    let live = Live::default();
    let task = tokio::spawn(sync::run(
        cfg.clone(),
        Holding::default(),
        writer,
        applied,
        alerts,
        live.clone(),
        HealthSource::from_fn(|| None),
    ));
    let first = handed(&mut bundles).await;
    assert_eq!(first.generation, latest.generation);
    assert_eq!(*first, latest.state(&epoch).unwrap());
    assert_eq!(first.content_hash, latest.content_hash());
    // The metrics say so: connected, and the newest generation offered.
    assert_eq!(live.controller_connected_to(&lab.url()), 1);
    assert_eq!(live.controller_connects.get(), 1);
    assert_eq!(
        live.controller_generation.get(),
        i64::from(latest.generation)
    );
    report
        .send(Applied {
            holding: Holding::of(&first),
            error: String::new(),
        })
        .await
        .unwrap();
    applied_on_controller(&lab, latest.generation).await;

    // An engineer quarantines the pump: the next generation is handed over.
    let g2 = set_mode(&lab, "pump-3a-bed12", "quarantine").await;
    let state = handed(&mut bundles).await;
    assert_eq!(state.generation, g2);
    let pump = state
        .devices
        .iter()
        .find(|d| d.name == "pump-3a-bed12")
        .unwrap();
    assert_eq!(pump.mode, wardgate_policy::Mode::Quarantine);
    // The writer failed to apply it: the error reaches the controller, applied stays.
    report
        .send(Applied {
            holding: Holding::of(&first),
            error: "map full".into(),
        })
        .await
        .unwrap();
    applied_on_controller(&lab, latest.generation).await;
    assert_eq!(gateway_status(&lab).await.2, "map full");

    // Restart (the agent was killed after applying g2): it resumes holding g2, receives
    // nothing, and the next change arrives.
    task.abort();
    let (writer, mut bundles) = mpsc::channel(64);
    let (_report, applied) = mpsc::channel(4);
    let alerts = AlertQueue::new(Outbox::default());
    let _task = tokio::spawn(sync::run(
        cfg,
        Holding::of(&state),
        writer,
        applied,
        alerts,
        Live::default(),
        HealthSource::from_fn(|| None),
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), bundles.recv())
            .await
            .is_err(),
        "what the agent holds is not sent again"
    );
    let g3 = set_mode(&lab, "pump-3a-bed12", "enforce").await;
    assert_eq!(g3, g2 + 1);
    // A fresh channel: the first hand-over must already be the new generation.
    assert_eq!(handed(&mut bundles).await.generation, g3);
}

/// Log lines of this test binary (a global subscriber: the sync task runs on other threads).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let make = move || Sink(sink.clone());
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_writer(make)
                .with_ansi(false)
                .finish(),
        )
        .unwrap();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_store_with_lower_generations_still_reaches_the_agent() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let lab = demo_lab(dir.path()).await;
    let old_epoch = lab.store.epoch().unwrap();
    let addr = lab.addr.to_string();
    let cfg = agent_config(&lab);
    let mut agent = Agent::start(cfg.clone(), Holding::default());
    handed(&mut agent.seen).await;
    // The agent runs far ahead: a few more generations.
    let mut last = 0;
    for mode in ["monitor", "enforce", "monitor", "enforce"] {
        last = set_mode(&lab, "pump-3a-bed12", mode).await;
        agent.reaches(last).await;
    }
    applied_on_controller(&lab, last).await;

    // The store is lost and recreated from the site (same address and certificate names):
    // its generations start again, below the agent's.
    lab.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let lab = LabController::start_at(dir.path(), &[GW.to_string()], &[("eve", "engineer")], &addr)
        .await
        .unwrap();
    lab.push_demo_site("eve", "rebuilt after the disk failure")
        .await
        .unwrap();
    let new_epoch = lab.store.epoch().unwrap();
    let latest = lab.store.latest_generation(GW).unwrap();
    assert_ne!(new_epoch, old_epoch);
    assert!(latest < last, "the new store is behind: {latest} < {last}");

    // The agent converges on the new store's latest, whatever its number, and says so.
    let mut agent = agent.restart(cfg);
    let state = handed(&mut agent.seen).await;
    assert_eq!(
        (state.generation, state.epoch.as_str()),
        (latest, new_epoch.as_str())
    );
    applied_on_controller(&lab, latest).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("controller store epoch changed")
                && l.contains(&old_epoch)
                && l.contains(&new_epoch)),
        "the epoch change is logged:\n{text}"
    );
    // And it keeps following it.
    let next = set_mode(&lab, "pump-3a-bed12", "quarantine").await;
    assert_eq!(handed(&mut agent.seen).await.generation, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_store_that_diverged_reaches_the_agent_even_at_the_same_number() {
    let dir = tempfile::tempdir().unwrap();
    let lab = demo_lab(dir.path()).await;
    let addr = lab.addr.to_string();
    let backup = dir.path().join("backup.db");
    // A backup of the store now (same epoch when restored).
    lab.store
        .execute_raw(&format!("VACUUM INTO '{}'", backup.display()))
        .unwrap();
    let at_backup = lab.store.latest_generation(GW).unwrap();
    let cfg = agent_config(&lab);
    let mut agent = Agent::start(cfg.clone(), Holding::default());
    handed(&mut agent.seen).await;
    let ahead = set_mode(&lab, "pump-3a-bed12", "quarantine").await;
    assert_eq!(ahead, at_backup + 1);
    agent.reaches(ahead).await;
    applied_on_controller(&lab, ahead).await;

    // Restore the backup and change something else: the store's generation `ahead` now
    // exists again with other content.
    lab.shutdown().await.unwrap();
    let data = dir.path().join("data");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(&backup, data.join("wardgate.db")).unwrap();
    let lab = LabController::start_at(dir.path(), &[GW.to_string()], &[("eve", "engineer")], &addr)
        .await
        .unwrap();
    let diverged = set_mode(&lab, "monitor-3a-bed12", "enforce").await;
    assert_eq!(diverged, ahead, "same number, other content");
    assert_eq!(
        lab.store.epoch().unwrap(),
        agent.holding.lock().unwrap().epoch,
        "same epoch"
    );

    let mut agent = agent.restart(cfg);
    let state = handed(&mut agent.seen).await;
    assert_eq!(state.generation, diverged);
    let mode = |name: &str| state.devices.iter().find(|d| d.name == name).unwrap().mode;
    assert_eq!(mode("monitor-3a-bed12"), wardgate_policy::Mode::Enforce);
    assert_ne!(mode("pump-3a-bed12"), wardgate_policy::Mode::Quarantine);
    applied_on_controller(&lab, diverged).await;
}

/// Two controllers on one store (replicas), each behind a relay that plays its host, and an
/// agent given both addresses: when the host of the one it is on dies, the agent moves to the
/// other at once, without taking again what it holds (same store, same epoch), and a
/// generation written through the survivor after the death reaches it within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_fails_over_to_a_replica_on_the_same_store() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let a = demo_lab(dir.path()).await;
    let b = a.replica().await.unwrap();
    let host_a = Relay::start(a.addr).await.unwrap();
    let host_b = Relay::start(b.addr).await.unwrap();
    let (url_a, url_b) = (host_a.url(), host_b.url());
    let cfg = ControllerConfig {
        address: Addresses::new(vec![url_a.clone(), url_b.clone()]).unwrap(),
        connect_timeout_ms: 1_000,
        ..agent_config(&a)
    };
    let live = Live::default();
    let mut agent = Agent::start_with(cfg, Holding::default(), live.clone());
    let first = handed(&mut agent.seen).await;
    assert_eq!(first.generation, a.store.latest_generation(GW).unwrap());
    applied_on_controller(&a, first.generation).await;
    // On the first address, and the metrics say which.
    let on = |live: &Live| {
        (
            live.controller_connected_to(&url_a),
            live.controller_connected_to(&url_b),
        )
    };
    assert_eq!(on(&live), (1, 0));
    assert_eq!(live.controller_connects.get(), 1);

    // A's host dies: its connections close and its port refuses.
    host_a.cut().await;
    drop(a);
    let died = tokio::time::Instant::now();
    let next = set_mode(&b, "pump-3a-bed12", "quarantine").await;
    assert_eq!(next, first.generation + 1);
    // The first hand-over after the death is the new generation: the replica did not send
    // again what the agent holds.
    let state = tokio::time::timeout(Duration::from_secs(5), agent.seen.recv())
        .await
        .expect("the new generation reached the agent within 5 s of the death")
        .unwrap();
    let took = died.elapsed();
    println!("failover: generation {next} handed over {took:?} after the death");
    assert_eq!(state.generation, next);
    assert_eq!(state.epoch, first.epoch, "one store, one epoch");
    let pump = state
        .devices
        .iter()
        .find(|d| d.name == "pump-3a-bed12")
        .unwrap();
    assert_eq!(pump.mode, wardgate_policy::Mode::Quarantine);
    // Applied by the agent, and reported to the survivor.
    applied_on_controller(&b, next).await;
    assert_eq!(agent.holding.lock().unwrap().generation, next);
    assert_eq!(on(&live), (0, 1));
    assert_eq!(live.controller_connects.get(), 2);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("left controller") && l.contains(&url_a) && l.contains(&url_b)),
        "leaving A for B is logged with both addresses:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("connected to controller") && l.contains(&url_b)),
        "the new controller is logged:\n{text}"
    );
}

/// The controller's host vanishes without closing anything (no FIN, no reset): the HTTP/2
/// keep-alive (a ping after 15 s of silence, 10 s to answer) breaks the stream and the agent
/// moves to the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_vanished_controller_is_left_for_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let a = demo_lab(dir.path()).await;
    let b = a.replica().await.unwrap();
    let host_a = Relay::start(a.addr).await.unwrap();
    let host_b = Relay::start(b.addr).await.unwrap();
    let cfg = ControllerConfig {
        address: Addresses::new(vec![host_a.url(), host_b.url()]).unwrap(),
        connect_timeout_ms: 1_000,
        ..agent_config(&a)
    };
    let live = Live::default();
    let mut agent = Agent::start_with(cfg, Holding::default(), live.clone());
    let first = handed(&mut agent.seen).await;
    applied_on_controller(&a, first.generation).await;
    assert_eq!(live.controller_connected_to(&host_a.url()), 1);

    host_a.freeze();
    let froze = tokio::time::Instant::now();
    let next = set_mode(&b, "pump-3a-bed12", "quarantine").await;
    let state = tokio::time::timeout(Duration::from_secs(40), agent.seen.recv())
        .await
        .expect("the keep-alive left the frozen controller within 40 s")
        .unwrap();
    let took = froze.elapsed();
    println!("silent failover: generation {next} handed over {took:?} after the freeze");
    assert_eq!(state.generation, next);
    assert!(
        took >= Duration::from_secs(10),
        "noticed by the keep-alive, not by a closed connection: {took:?}"
    );
    applied_on_controller(&b, next).await;
    assert_eq!(live.controller_connected_to(&host_b.url()), 1);
    drop(host_a);
}

/// The next address is a controller of another store (another epoch, its generations behind
/// the agent's): after the failover the agent takes that store's latest whatever its number,
/// and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_another_store_takes_its_latest_whatever_its_number() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let a = demo_lab(dir.path()).await;
    let other = a.beside(&dir.path().join("other-data")).await.unwrap();
    other
        .push_demo_site("eve", "the standby's own copy of the site")
        .await
        .unwrap();
    let host_a = Relay::start(a.addr).await.unwrap();
    let cfg = ControllerConfig {
        address: Addresses::new(vec![host_a.url(), other.url()]).unwrap(),
        connect_timeout_ms: 1_000,
        ..agent_config(&a)
    };
    let mut agent = Agent::start(cfg, Holding::default());
    handed(&mut agent.seen).await;
    // The agent runs ahead of the other store.
    let mut last = 0;
    for mode in ["monitor", "enforce", "monitor"] {
        last = set_mode(&a, "pump-3a-bed12", mode).await;
        agent.reaches(last).await;
    }
    applied_on_controller(&a, last).await;
    let (old_epoch, new_epoch) = (a.store.epoch().unwrap(), other.store.epoch().unwrap());
    let behind = other.store.latest_generation(GW).unwrap();
    assert_ne!(old_epoch, new_epoch);
    assert!(behind < last, "{behind} < {last}");

    host_a.cut().await;
    drop(a);
    let state = handed(&mut agent.seen).await;
    assert_eq!(
        (state.generation, state.epoch.as_str()),
        (behind, new_epoch.as_str())
    );
    applied_on_controller(&other, behind).await;
    assert_eq!(agent.holding.lock().unwrap().epoch, new_epoch);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("controller store epoch changed")
                && l.contains(&old_epoch)
                && l.contains(&new_epoch)),
        "the epoch change is logged:\n{text}"
    );
}

/// The first addresses do not answer at start (one refuses, one accepts and never speaks
/// TLS): the agent goes on to the next, each attempt bounded by `connect_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_first_addresses_are_skipped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let lab = demo_lab(dir.path()).await;
    // A port nothing listens on, and a listener that never accepts (the kernel completes the
    // TCP handshake; nothing answers the TLS one).
    let refused = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("https://localhost:{}", l.local_addr().unwrap().port())
    };
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("https://localhost:{}", silent.local_addr().unwrap().port());
    let cfg = ControllerConfig {
        address: Addresses::new(vec![refused.clone(), silent_url.clone(), lab.url()]).unwrap(),
        connect_timeout_ms: 1_000,
        ..agent_config(&lab)
    };
    let live = Live::default();
    let started = tokio::time::Instant::now();
    let mut agent = Agent::start_with(cfg, Holding::default(), live.clone());
    let first = handed(&mut agent.seen).await;
    let took = started.elapsed();
    println!("past a refused and a silent address in {took:?}");
    assert_eq!(first.generation, lab.store.latest_generation(GW).unwrap());
    assert!(
        took < Duration::from_secs(4),
        "one bounded attempt each (1 s), no backoff within a round: {took:?}"
    );
    applied_on_controller(&lab, first.generation).await;
    assert_eq!(agent.holding.lock().unwrap().generation, first.generation);
    assert_eq!(
        (
            live.controller_connected_to(&refused),
            live.controller_connected_to(&silent_url),
            live.controller_connected_to(&lab.url())
        ),
        (0, 0, 1)
    );
}

/// A ward whose compiled policy is several MiB: the agent used to keep tonic's 4 MiB decode
/// limit and reconnected forever; both ends now use the one transport limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_over_four_mib_reaches_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let lab = demo_lab(dir.path()).await;
    let mut agent = Agent::start(agent_config(&lab), Holding::default());
    handed(&mut agent.seen).await;
    // 4 profiles of 30 flows to a group of 2,000 IPv6 hosts: about 5 MB typed.
    let writes = lab.grow_policy("eve", GW, 4, 30, 2_000).await.unwrap();
    let last = writes.last().unwrap().as_ref().unwrap().generations[GW];
    let stored = lab.store.latest(GW).unwrap().unwrap();
    assert_eq!(stored.generation, last);
    let len =
        wardgate_proto::bundle_len(&stored.state(&lab.store.epoch().unwrap()).unwrap(), "grow");
    println!("bundle of generation {last}: {len} bytes");
    assert!(len > 4 << 20, "over tonic's default limit: {len}");
    let state = agent.reaches(last).await;
    assert_eq!(state.ports, stored.state("").unwrap().ports);
    applied_on_controller(&lab, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_from_the_datapath_reach_the_soc_once() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::with_demo_site(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("sam", "soc")],
        "eve",
    )
    .await
    .unwrap();
    let row = lab.store.latest(GW).unwrap().unwrap();
    let latest = row.generation;
    let state = row.state(&lab.store.epoch().unwrap()).unwrap();
    let pump = state
        .devices
        .iter()
        .find(|d| d.name == "pump-3a-bed12")
        .unwrap();
    let mut soc = lab.alerts("sam").await.unwrap();
    let mut tail = soc
        .subscribe(pb::AlertFilter::default())
        .await
        .unwrap()
        .into_inner();

    let cfg = agent_config(&lab);
    let (notify, _wake) = mpsc::channel(64);
    let (_report, applied) = mpsc::channel(4);
    let alerts = AlertQueue::new(Outbox::default());
    let _task = tokio::spawn(sync::run(
        cfg,
        Holding::of(&state),
        notify,
        applied,
        alerts.clone(),
        Live::default(),
        HealthSource::from_fn(|| None),
    ));
    // What the event reader makes of a denied SMB connection and a spoofed MAC.
    let event = |kind, dport| wardgate_agent::datapath::convert::DatapathEvent {
        kind,
        reason: None,
        device_id: pump.device_id,
        policy_id: pump.policy_id,
        rule_id: 0,
        generation: latest,
        proto: 6,
        from_device: true,
        src: "192.0.2.10".parse().unwrap(),
        sport: 40000,
        dst: "198.51.100.10".parse().unwrap(),
        dport,
        src_mac: [2, 0, 0, 0, 0, 0x66],
        app: None,
    };
    use wardgate_agent::datapath::convert::EventKind;
    assert!(
        wardgate_agent::alerts::from_event(
            &event(EventKind::NewFlow, 443),
            Some(&state),
            "x".into(),
            0
        )
        .is_none(),
        "new flows are learning data, not alerts"
    );
    for (id, kind, dport) in [
        ("t-1", EventKind::Deny, 445),
        ("t-2", EventKind::Spoof, 443),
        // The same alert again (a re-send after a lost ack): stored once.
        ("t-1", EventKind::Deny, 445),
    ] {
        let a = wardgate_agent::alerts::from_event(
            &event(kind, dport),
            Some(&state),
            id.into(),
            now_unix_ms(),
        )
        .unwrap();
        alerts.push_all(vec![pb::Alert::from(&a)]);
    }
    let first = tokio::time::timeout(Duration::from_secs(10), tail.message())
        .await
        .expect("the SOC sees the alert within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            first.gateway.as_str(),
            first.device.as_str(),
            first.profile.as_str(),
            first.kind.as_str(),
            first.severity.as_str(),
            first.dst_port
        ),
        (GW, "pump-3a-bed12", "infusion-pump", "deny", "high", 445)
    );
    let mut stored = Vec::new();
    for _ in 0..100 {
        stored = soc
            .list(pb::AlertFilter::default())
            .await
            .unwrap()
            .into_inner()
            .alerts;
        if stored.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got: Vec<(String, String, String)> = stored
        .into_iter()
        .map(|a| (a.id, a.severity, a.mitre_technique))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("t-1".into(), "high".into(), String::new()),
            ("t-2".into(), "critical".into(), "T0830".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_raised_during_an_outage_survive_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lab = demo_lab(dir.path()).await;
    let latest = lab.store.latest_generation(GW).unwrap();
    let desired = dir.path().join("agent/desired.json");
    let up = agent_config(&lab);
    let outbox = up.outbox_path(&desired);
    assert_eq!(outbox, dir.path().join("agent/alerts-outbox.sqlite"));
    // Observed now: the controller refuses alerts dated before 2020 (alert admission).
    let now_ms = now_unix_ms();
    let alert = |i: usize| pb::Alert {
        id: format!("outage-{i}"),
        kind: "deny".into(),
        severity: "high".into(),
        observed_unix_ms: now_ms,
        ..Default::default()
    };
    // More alerts than the old in-memory channel held (1,024), raised while nothing listens at
    // the controller's address.
    const N: usize = 1_500;
    {
        let down = ControllerConfig {
            address: "https://127.0.0.1:9".into(),
            ..up.clone()
        };
        let queue = AlertQueue::new(Outbox::open(&outbox).unwrap());
        let (notify, _wake) = mpsc::channel(4);
        let (_report, applied) = mpsc::channel(4);
        let task = tokio::spawn(sync::run(
            down,
            Holding {
                generation: latest,
                ..Default::default()
            },
            notify,
            applied,
            queue.clone(),
            Live::default(),
            HealthSource::from_fn(|| None),
        ));
        for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
            queue.push_all(chunk.iter().map(|&i| alert(i)).collect());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The agent stops (or is killed) before the controller comes back.
        task.abort();
        let _ = task.await;
        assert_eq!(
            Arc::strong_count(&queue),
            1,
            "the aborted link let go of the outbox"
        );
    }
    assert!(
        lab.store
            .alerts(&AlertQuery::recent(10))
            .unwrap()
            .is_empty(),
        "nothing reached the controller"
    );

    // The restarted agent finds every alert in the outbox file and delivers it.
    let queue = AlertQueue::new(Outbox::open(&outbox).unwrap());
    assert_eq!(queue.lock().len(), N);
    let (notify, _wake) = mpsc::channel(4);
    let (_report, applied) = mpsc::channel(4);
    let task = tokio::spawn(sync::run(
        up,
        Holding {
            generation: latest,
            ..Default::default()
        },
        notify,
        applied,
        queue.clone(),
        Live::default(),
        HealthSource::from_fn(|| None),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stored = lab
            .store
            .alerts(&AlertQuery::recent(N as u32 + 10))
            .unwrap()
            .len();
        let pending = queue.lock().len();
        if stored == N && pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 20 s: {stored} of {N} stored, {pending} still pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Acknowledged alerts are gone from the file too.
    task.abort();
    let _ = task.await;
    drop(queue);
    assert!(Outbox::open(&outbox).unwrap().is_empty());
}

/// Wall time in ms: alerts are admitted only with a plausible observation time.
fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
