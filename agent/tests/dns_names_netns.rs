//! Attach tier: flows to an address the device just resolved go by the name it asked for
//! (issue 21 point 2), live. The agent binary runs in the gateway namespace against a real
//! controller (in-process, loopback, mTLS, the demo ward's site); the infusion pump
//! `pump-3a-bed12` is put in learn mode with the real `wardctl`. It resolves a name through
//! Debian's dnsmasq at 198.51.100.53 (the site's group `dns`) and opens a TCP exchange to the
//! answered address; it also asks a second dnsmasq at 198.51.100.20 (a hospital host, no
//! resolver of the site) for another name and connects to that answer. The agent is stopped,
//! which hands every record to the controller: the first flow is stored with its name and
//! `wardctl profile propose` writes `dns:NAME` (the address in the comment); the second is
//! stored without one and proposed as its address. Needs root; fails (never skips) without it.

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::{
    lab::{Lab, wait_generation},
    *,
};
use wardgate_controller::store::{SqliteStore, Store as _};
use wardgate_policy::Proto;
use wardgate_testkit::{
    agent::AgentProcess,
    peers,
    ward::{Ward, ip, tcp_echo, tcp_roundtrip},
};

const DEVICE: &str = "pump-3a-bed12";
const REASON: &str = "CHG-21 pump 3A-12 learns its vendor's service";
/// The site's resolver (demo-ward.yaml group `dns`) and a hospital host that is none.
const RESOLVER: &str = "198.51.100.53";
const ROGUE: &str = "198.51.100.20";
/// The resolver's answer for NAME, and the rogue server's for FORGED_NAME; in no site group
/// (a group would win over a name in the proposal).
const NAME: &str = "updates.vendor.example";
const NAMED: &str = "198.51.100.60";
const FORGED_NAME: &str = "forged.vendor.example";
const FORGED: &str = "198.51.100.61";
const PORT: u16 = 8443;

/// The device asks `server` for `name` (dig, retried while dnsmasq starts: bounded); the
/// addresses answered.
fn resolve(ward: &Ward, server: &str, name: &str) -> Vec<String> {
    let out = peers::until_ok(
        &format!("dig @{server} {name}"),
        Duration::from_secs(15),
        || peers::dns_query(&ward.dev, server, name),
    );
    out.lines()
        .filter(|l| l.parse::<IpAddr>().is_ok())
        .map(str::to_string)
        .collect()
}

/// One TCP exchange from the device to `addr`, retried while the echo server starts (bounded).
fn connect(ward: &Ward, addr: &str, agent: &AgentProcess) {
    let to = SocketAddr::new(addr.parse().unwrap(), PORT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = tcp_roundtrip(&ward.dev, to) {
        assert!(
            Instant::now() < deadline,
            "TCP to {to}: {e}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The device's stored TCP flows to `peer`:`PORT`: (flows, flows with a name, the name).
fn stored(store: &SqliteStore, peer: &str) -> (u64, u64, Option<String>) {
    let peer: IpAddr = peer.parse().unwrap();
    let rows: Vec<_> = store
        .flow_aggregates(DEVICE, 0, u64::MAX >> 1)
        .unwrap()
        .into_iter()
        .filter(|r| r.key.peer == peer && r.key.proto == 6 && r.key.port == PORT)
        .collect();
    let names: Vec<_> = rows.iter().filter_map(|r| r.peer_name.clone()).collect();
    assert!(
        names.windows(2).all(|w| w[0] == w[1]),
        "one name per peer here: {names:?}"
    );
    (
        rows.iter().map(|r| r.flows).sum(),
        rows.iter().map(|r| r.named_flows).sum(),
        names.into_iter().next(),
    )
}

#[test]
fn a_flow_to_a_resolved_address_is_stored_and_proposed_by_name_and_a_forged_answer_names_nothing() {
    require_privileges();
    let ward = Ward::new("dnsn");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let pin = PinRoot::new("dns-names");

    // The answered addresses serve TCP echo on the hospital side.
    for a in [NAMED, FORGED] {
        ip(&[
            "-n",
            &ward.srv,
            "addr",
            "add",
            &format!("{a}/24"),
            "dev",
            "eth0",
        ]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let echo = tcp_echo(
        &ward.srv,
        [NAMED, FORGED]
            .iter()
            .map(|a| SocketAddr::new(a.parse().unwrap(), PORT))
            .collect(),
        stop.clone(),
    );
    let hosts = d.join("hosts");
    std::fs::write(&hosts, format!("{NAMED} {NAME}\n")).unwrap();
    let _resolver = peers::dns_server_hosts(&ward.srv, RESOLVER, &hosts, &[], 300, d);
    let rogue_hosts = d.join("rogue-hosts");
    std::fs::write(&rogue_hosts, format!("{FORGED} {FORGED_NAME}\n")).unwrap();
    let _rogue = peers::dns_server_hosts(&ward.srv, ROGUE, &rogue_hosts, &[], 300, d);

    let lab = Lab::start(&ward, d);
    let config = lab.agent_config(d, &pin);
    let bin = Path::new(env!("CARGO_BIN_EXE_wardgate-agent"));
    let mut agent = AgentProcess::start(bin, &ward.gw, &config, d.join("agent.log"));
    agent.wait_for("policy generation switched");
    let g = lab.write(&ward, &["mode", DEVICE, "learn"], REASON);
    wait_generation(&agent, g);

    // Resolved, then reached at once (the flow's first packet follows the answer by the time
    // it takes to start a thread).
    assert_eq!(resolve(&ward, RESOLVER, NAME), [NAMED]);
    connect(&ward, NAMED, &agent);
    // The rogue server's answer reaches the device (learning passes everything) but is no
    // resolver's: it names nothing.
    assert_eq!(resolve(&ward, ROGUE, FORGED_NAME), [FORGED]);
    connect(&ward, FORGED, &agent);

    // Stopping the agent hands every flow it holds to the controller.
    let status = agent.stop(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    let log = agent.log_text();
    let (flows, named, name) = stored(&lab.store, NAMED);
    assert!(flows >= 1, "no flow to {NAMED} stored:\n{log}");
    assert_eq!(
        (named, name.as_deref()),
        (flows, Some(NAME)),
        "every flow to {NAMED} stored with the name the device resolved it from:\n{log}"
    );
    let (flows, named, name) = stored(&lab.store, FORGED);
    assert!(flows >= 1, "no flow to {FORGED} stored:\n{log}");
    assert_eq!(
        (named, name),
        (0, None),
        "a non-resolver's answer named {FORGED}"
    );

    let (yaml, profile) = lab.propose(&ward, DEVICE, d);
    let tcp_peers: Vec<&str> = profile
        .flows
        .iter()
        .filter(|f| {
            f.direction == wardgate_policy::Direction::FromDevice && f.protocol.value == Proto::Tcp
        })
        .flat_map(|f| f.peers.iter().map(|p| p.value.as_str()))
        .collect();
    assert!(
        tcp_peers.contains(&format!("dns:{NAME}").as_str()),
        "{NAMED} proposed by name: {tcp_peers:?}\n{yaml}"
    );
    assert!(
        yaml.contains(&format!("dns:{NAME} seen at {NAMED}")),
        "the address in the comment:\n{yaml}"
    );
    assert!(
        tcp_peers
            .iter()
            .any(|p| p.split('/').next() == Some(FORGED)),
        "{FORGED} proposed as its address: {tcp_peers:?}\n{yaml}"
    );
    assert!(
        !yaml.contains(FORGED_NAME) && !tcp_peers.contains(&NAMED),
        "no forged name, no named address as an address:\n{yaml}"
    );

    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    lab.stop();
}
