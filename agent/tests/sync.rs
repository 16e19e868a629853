//! Policy sync against a real controller (in-process, loopback, mTLS, SQLite): the agent's sync
//! task caches each generation as the desired-state file, wakes the map writer, reports what was
//! applied (or the writer's error), follows a new assignment at once, and resumes after a restart
//! from the generation it had applied. No root needed: the map
//! writer is played by the test (the datapath tiers cover the maps).

use std::{path::PathBuf, time::Duration};

use tokio::sync::mpsc;
use wardgate_agent::{
    config::ControllerConfig,
    sync::{self, Applied},
};
use wardgate_controller::{lab::LabController, store::Store};
use wardgate_policy::DesiredState;
use wardgate_proto::v1 as pb;

const GW: &str = "gw-ward-3";

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

async fn woken(rx: &mut mpsc::Receiver<()>) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the sync task wrote a generation within 10 s")
        .expect("sync task alive");
}

fn cached(path: &std::path::Path) -> DesiredState {
    DesiredState::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_the_controller_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::start(dir.path(), &[GW.to_string()], &[("eve", "engineer")])
        .await
        .unwrap();
    lab.push_site(
        "eve",
        &root().join("device-profiles/sites/demo-ward.yaml"),
        &root().join("device-profiles"),
        "CHG-1 commissioning",
    )
    .await
    .unwrap();
    let latest = lab.store.latest_generation(GW).unwrap();
    let cfg = ControllerConfig {
        address: lab.url(),
        certs: lab.certs().to_path_buf(),
        gateway: GW.into(),
    };
    let desired = dir.path().join("agent/desired.json");

    // A fresh agent (nothing applied) gets every generation up to the latest.
    let (notify, mut wake) = mpsc::channel(64);
    let (report, applied) = mpsc::channel(4);
    let task = tokio::spawn(sync::run(cfg.clone(), desired.clone(), 0, notify, applied));
    let mut last = 0;
    while last < latest {
        woken(&mut wake).await;
        last = cached(&desired).generation;
    }
    assert_eq!(last, latest);
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
    woken(&mut wake).await;
    let state = cached(&desired);
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
    let _task = tokio::spawn(sync::run(cfg, desired.clone(), g2, notify, applied));
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
    woken(&mut wake).await;
    assert_eq!(cached(&desired).generation, w.generations[GW]);
    assert_eq!(w.generations[GW], g2 + 1);
}
