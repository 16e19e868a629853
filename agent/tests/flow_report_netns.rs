//! Attach tier: live flow records reach the controller. The agent binary runs in the gateway
//! namespace against a real controller (in-process, loopback, mTLS, the demo ward's site: the
//! device is the infusion pump `pump-3a-bed12`); the device makes TCP exchanges with the server
//! namespace, and once the live table gives their records up (closed: 10 s after the FIN; or
//! denied: 10 s after the last attempt) the agent's reporter (every 300 ms here) delivers them
//! to the controller, which folds them into `flow_days`. A UDP flow (held until its conntrack
//! entry goes, minutes) reaches the controller when the agent stops, and only once across a
//! restart. Needs root; fails (never skips) without it.

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use support::{lab::Lab, *};
use wardgate_controller::store::{SqliteStore, Store as _};
use wardgate_testkit::{
    agent::AgentProcess,
    ward::{Ward, tcp_echo, tcp_roundtrip, udp_echo, udp_roundtrip},
};

const DEVICE: &str = "pump-3a-bed12";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// (peer, proto, port) -> flows of `DEVICE` the controller stored.
fn stored(store: &SqliteStore, peer: &str, proto: u8, port: u16) -> u64 {
    counts(store, peer, proto, port).0
}

/// (peer, proto, port) -> (flows, packets out, packets in) of `DEVICE` the controller stored.
fn counts(store: &SqliteStore, peer: &str, proto: u8, port: u16) -> (u64, u64, u64) {
    let peer: std::net::IpAddr = peer.parse().unwrap();
    store
        .flow_aggregates(DEVICE, 0, u64::MAX >> 1)
        .unwrap()
        .iter()
        .filter(|r| r.key.peer == peer && r.key.proto == proto && r.key.port == port)
        .fold((0, 0, 0), |(f, o, i), r| {
            (f + r.flows, o + r.packets_out, i + r.packets_in)
        })
}

#[test]
fn flows_a_device_makes_reach_the_controllers_flow_days() {
    require_privileges();
    let ward = Ward::new("frp");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("flowrep");
    let lab = Lab::start(&ward, dir.path());
    let config = lab.agent_config(dir.path(), &pin);
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
        let flows = stored(&lab.store, "198.51.100.10", 6, 8443);
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
    tcp.join().unwrap();
    lab.stop();
}

/// One DNS-like exchange from the pump (a new socket: a new flow), retried while the path
/// comes up (bounded).
fn dns_exchange(ward: &Ward) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = udp_roundtrip(&ward.dev, sa("198.51.100.53:53")) {
        assert!(Instant::now() < deadline, "UDP to 198.51.100.53:53: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_udp_flow_held_when_the_agent_stops_reaches_the_controller_once() {
    require_privileges();
    let ward = Ward::new("frs");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("flowstop");
    let lab = Lab::start(&ward, dir.path());
    let config = lab.agent_config(dir.path(), &pin);
    let stop = Arc::new(AtomicBool::new(false));
    let (_, udp) = udp_echo(&ward.srv, vec![sa("198.51.100.53:53")], stop.clone());
    let bin = Path::new(env!("CARGO_BIN_EXE_wardgate-agent"));
    let mut agent = AgentProcess::start(bin, &ward.gw, &config, dir.path().join("agent.log"));
    agent.wait_for("policy generation switched");

    // The pump's DNS (its profile allows it): answered, so the live table holds the flow until
    // its conntrack entry goes (60 s idle for the pump's UDP), far past this test.
    dns_exchange(&ward);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        stored(&lab.store, "198.51.100.53", 17, 53),
        0,
        "the flow is held, not reported, while it may go on"
    );
    let status = agent.stop(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    // The agent sent its records before it exited.
    let (flows, out, inn) = counts(&lab.store, "198.51.100.53", 17, 53);
    assert_eq!(
        flows,
        1,
        "the held flow, reported at the stop: {:#?}\n{}",
        lab.store.flow_aggregates(DEVICE, 0, u64::MAX >> 1),
        agent.log_text()
    );
    assert!(
        out >= 1 && inn >= 1,
        "with its counters both ways: {out} out, {inn} in"
    );
    assert!(
        agent
            .log_text()
            .contains("live flow table finished at stop")
    );

    // A restart adopts the pinned maps, the flow's conntrack entry included: it is not held,
    // so not reported again. A new flow after the restart is, at the next stop.
    let mut agent = AgentProcess::start(bin, &ward.gw, &config, dir.path().join("agent2.log"));
    agent.wait_for("active policy generation");
    dns_exchange(&ward);
    let status = agent.stop(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert_eq!(
        stored(&lab.store, "198.51.100.53", 17, 53),
        2,
        "the first flow once, the new one once:\n{}",
        agent.log_text()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    udp.join().unwrap();
    lab.stop();
}
