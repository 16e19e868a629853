//! Policy sync against a real controller (in-process, loopback, mTLS, SQLite): the agent's sync
//! task caches each generation as the desired-state file, wakes the map writer, reports what was
//! applied (or the writer's error), follows a new assignment at once, and resumes after a restart
//! from the generation it had applied. No root needed: the map
//! writer is played by the test (the datapath tiers cover the maps).

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use wardgate_agent::{
    alerts::{AlertQueue, Outbox},
    config::ControllerConfig,
    metrics::Live,
    sync::{self, Applied},
};
use wardgate_controller::{lab::LabController, store::Store};
use wardgate_policy::DesiredState;
use wardgate_proto::v1 as pb;

const GW: &str = "gw-ward-3";

async fn woken(rx: &mut mpsc::Receiver<()>) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the sync task wrote a generation within 10 s")
        .expect("sync task alive");
}

fn cached(path: &std::path::Path) -> DesiredState {
    DesiredState::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Waits (each wake bounded by `woken`) until the cached file holds generation `want`; wakes
/// for generations written before it may still be queued.
async fn cached_at(rx: &mut mpsc::Receiver<()>, path: &std::path::Path, want: u32) -> DesiredState {
    loop {
        woken(rx).await;
        let state = cached(path);
        assert!(
            state.generation <= want,
            "overshot: {} > {want}",
            state.generation
        );
        if state.generation == want {
            return state;
        }
    }
}

async fn applied_on_controller(lab: &LabController, want: u32) {
    let mut admin = lab.admin("eve").await.unwrap();
    for _ in 0..100 {
        let gws = admin
            .list_gateways(pb::ListGatewaysRequest {})
            .await
            .unwrap()
            .into_inner()
            .gateways;
        if gws
            .iter()
            .any(|g| g.name == GW && g.applied_generation == want)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the controller never saw generation {want} applied");
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
        address: lab.url(),
        certs: lab.certs().to_path_buf(),
        gateway: GW.into(),
        server_name: "localhost".into(),
        outbox: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_the_controller_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lab = demo_lab(dir.path()).await;
    let latest = lab.store.latest_generation(GW).unwrap();
    let cfg = agent_config(&lab);
    let desired = dir.path().join("agent/desired.json");

    // A fresh agent (nothing applied) gets every generation up to the latest.
    let (notify, mut wake) = mpsc::channel(64);
    let (report, applied) = mpsc::channel(4);
    let alerts = AlertQueue::new(Outbox::default());
    let live = Live::default();
    let task = tokio::spawn(sync::run(
        cfg.clone(),
        desired.clone(),
        0,
        notify,
        applied,
        alerts,
        live.clone(),
    ));
    cached_at(&mut wake, &desired, latest).await;
    // The metrics say so: connected, and the newest generation offered.
    assert_eq!(live.controller_connected.get(), 1);
    assert_eq!(live.controller_connects.get(), 1);
    assert_eq!(live.controller_generation.get(), i64::from(latest));
    report
        .send(Applied {
            generation: latest,
            error: String::new(),
        })
        .await
        .unwrap();
    applied_on_controller(&lab, latest).await;

    // An engineer quarantines the pump: the next generation arrives and is cached.
    let w = lab
        .admin("eve")
        .await
        .unwrap()
        .set_mode(pb::SetModeRequest {
            device: "pump-3a-bed12".into(),
            mode: "quarantine".into(),
            reason: "INC-3".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let g2 = w.generations[GW];
    let state = cached_at(&mut wake, &desired, g2).await;
    let pump = state
        .devices
        .iter()
        .find(|d| d.name == "pump-3a-bed12")
        .unwrap();
    assert_eq!(pump.mode, wardgate_policy::Mode::Quarantine);
    // The writer failed to apply it: the error reaches the controller, applied stays.
    report
        .send(Applied {
            generation: latest,
            error: "map full".into(),
        })
        .await
        .unwrap();
    applied_on_controller(&lab, latest).await;
    let gw = lab
        .admin("eve")
        .await
        .unwrap()
        .list_gateways(pb::ListGatewaysRequest {})
        .await
        .unwrap()
        .into_inner()
        .gateways
        .into_iter()
        .find(|g| g.name == GW)
        .unwrap();
    assert_eq!(gw.last_error, "map full");

    // Restart (the agent was killed after applying g2): it resumes after g2, receives nothing
    // older, and the next change arrives.
    task.abort();
    let (notify, mut wake) = mpsc::channel(64);
    let (_report, applied) = mpsc::channel(4);
    let alerts = AlertQueue::new(Outbox::default());
    let _task = tokio::spawn(sync::run(
        cfg,
        desired.clone(),
        g2,
        notify,
        applied,
        alerts,
        Live::default(),
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), wake.recv())
            .await
            .is_err(),
        "nothing older than the applied generation is sent again"
    );
    let w = lab
        .admin("eve")
        .await
        .unwrap()
        .set_mode(pb::SetModeRequest {
            device: "pump-3a-bed12".into(),
            mode: "enforce".into(),
            reason: "INC-3 closed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // A fresh channel: the first wake must already be the new generation.
    woken(&mut wake).await;
    assert_eq!(cached(&desired).generation, w.generations[GW]);
    assert_eq!(w.generations[GW], g2 + 1);
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
    let latest = lab.store.latest_generation(GW).unwrap();
    let state = DesiredState::from_json(
        &lab.store.generations_after(GW, latest - 1).unwrap()[0].state_json,
    )
    .unwrap();
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
        dir.path().join("agent/desired.json"),
        latest,
        notify,
        applied,
        alerts.clone(),
        Live::default(),
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
        let a = wardgate_agent::alerts::from_event(&event(kind, dport), Some(&state), id.into(), 1)
            .unwrap();
        alerts.push_all(vec![a]);
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
    let alert = |i: usize| pb::Alert {
        id: format!("outage-{i}"),
        kind: "deny".into(),
        severity: "high".into(),
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
            desired.clone(),
            latest,
            notify,
            applied,
            queue.clone(),
            Live::default(),
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
        lab.store.alerts(10).unwrap().is_empty(),
        "nothing reached the controller"
    );

    // The restarted agent finds every alert in the outbox file and delivers it.
    let queue = AlertQueue::new(Outbox::open(&outbox).unwrap());
    assert_eq!(queue.lock().len(), N);
    let (notify, _wake) = mpsc::channel(4);
    let (_report, applied) = mpsc::channel(4);
    let task = tokio::spawn(sync::run(
        up,
        desired,
        latest,
        notify,
        applied,
        queue.clone(),
        Live::default(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stored = lab.store.alerts(N as u32 + 10).unwrap().len();
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
