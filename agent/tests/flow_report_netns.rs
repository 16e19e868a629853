//! Attach tier: live flow records reach the controller. The agent binary runs in the gateway
//! namespace against a real controller (in-process, loopback, mTLS, the demo ward's site: the
//! device is the infusion pump `pump-3a-bed12`); the device makes TCP exchanges with the server
//! namespace, and once the live table gives their records up (closed: 10 s after the FIN; or
//! denied: 10 s after the last attempt) the agent's reporter (every 300 ms here) delivers them
//! to the controller, which folds them into `flow_days`. Needs root; fails (never skips)
//! without it.

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::AtomicBool, mpsc},
    time::{Duration, Instant},
};

use support::*;
use wardgate_agent::config::AgentConfig;
use wardgate_controller::store::{SqliteStore, Store as _};
use wardgate_testkit::{
    agent::AgentProcess,
    controller::LabController,
    ward::{Ward, in_ns, tcp_echo, tcp_roundtrip},
};

const GW: &str = "gw-ward-3";
const DEVICE: &str = "pump-3a-bed12";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// (peer, proto, port) -> flows of `DEVICE` the controller stored.
fn stored(store: &SqliteStore, peer: &str, proto: u8, port: u16) -> u64 {
    let peer: std::net::IpAddr = peer.parse().unwrap();
    store
        .flow_aggregates(DEVICE, 0, u64::MAX >> 1)
        .unwrap()
        .iter()
        .filter(|r| r.key.peer == peer && r.key.proto == proto && r.key.port == port)
        .map(|r| r.flows)
        .sum()
}

#[test]
fn flows_a_device_makes_reach_the_controllers_flow_days() {
    require_privileges();
    let ward = Ward::new("frp");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("flowrep");
    let (up_tx, up_rx) = mpsc::channel::<(String, std::path::PathBuf, Arc<SqliteStore>)>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let ctl_dir = dir.path().join("controller");
    // The controller, in the gateway namespace on loopback, until the test is done (bounded).
    let controller = in_ns(&ward.gw, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap();
            let lab = LabController::start_on(
                &ctl_dir,
                &[GW.to_string()],
                &[("eve", "engineer")],
                listener,
            )
            .await
            .unwrap();
            lab.push_demo_site("eve", "CHG-1 commissioning")
                .await
                .unwrap();
            up_tx
                .send((lab.url(), lab.certs().to_path_buf(), lab.store.clone()))
                .unwrap();
            let _ =
                tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(120)))
                    .await;
            lab.shutdown().await.unwrap();
        })
    });
    let (url, certs, store) = up_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the controller came up within 60 s");

    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [{}]\npin_root: {}\ndesired_state: {}\n\
             controller: {{address: \"{url}\", certs: {}, gateway: {GW}, \
             flow_report_every_ms: 300}}\n",
            wardgate_testkit::ward::DEV_IF,
            pin.0.display(),
            dir.path().join("desired.json").display(),
            certs.display()
        ),
    )
    .unwrap();
    AgentConfig::load(&config).expect("test config is valid");
    let agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wardgate-agent")),
        &ward.gw,
        &config,
        dir.path().join("agent.log"),
    );
    agent.wait_for("policy generation switched");

    let stop = Arc::new(AtomicBool::new(false));
    let tcp = tcp_echo(&ward.srv, vec![sa("198.51.100.10:8443")], stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    // Whatever the pump's profile says of them: records are kept in every mode, denied
    // contacts included.
    for _ in 0..3 {
        let _ = tcp_roundtrip(&ward.dev, sa("198.51.100.10:8443"));
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let flows = stored(&store, "198.51.100.10", 6, 8443);
        if flows >= 3 {
            assert_eq!(flows, 3, "each connection once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flow records not at the controller within 30 s ({flows} of 3):\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = done_tx.send(());
    tcp.join().unwrap();
    controller.join().unwrap();
}
