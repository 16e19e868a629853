//! Attach tier, segmentation: the real agent binary enforcing between devices behind one
//! gateway, on VLAN trunks, and against ARP poisoning, in network namespaces it builds and
//! removes. Needs root; fails (never skips) without it. Run with --test-threads=1.

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::*;
use wardgate_agent::config::AgentConfig;
use wardgate_policy::{
    DesiredState, Direction, Mode, Proto,
    desired::{DeviceEntry, MacAddr, PolicyEntry, PortRange, Rule},
};
use wardgate_testkit::{agent::AgentProcess, ward::*};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Namespaces removed on drop (also on a failed assertion).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn new(tag: &str, names: &[&str]) -> Namespaces {
        require_privileges();
        let n = std::process::id() % 100_000;
        let list: Vec<String> = names
            .iter()
            .map(|name| format!("wg{name}-{tag}-{n}"))
            .collect();
        for ns in &list {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Namespaces(list)
    }

    fn get(&self, i: usize) -> &str {
        &self.0[i]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn forwarding(gw: &str) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            gw,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "sysctl ip_forward");
}

/// The agent binary on `interfaces` of namespace `gw`, enforcing `dir/desired.json`.
fn start_agent(gw: &str, interfaces: &[&str], dir: &Path, pin: &Path) -> AgentProcess {
    start_agent_with(gw, interfaces, dir, pin, "")
}

/// As `start_agent`, with `extra` appended to the config.
fn start_agent_with(
    gw: &str,
    interfaces: &[&str],
    dir: &Path,
    pin: &Path,
    extra: &str,
) -> AgentProcess {
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [{}]\npin_root: {}\ndesired_state: {}\n{extra}",
            interfaces.join(", "),
            pin.display(),
            dir.join("desired.json").display()
        ),
    )
    .unwrap();
    AgentConfig::load(&config).expect("test config is valid");
    let agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wardgate-agent")),
        gw,
        &config,
        dir.join("agent.log"),
    );
    agent.wait_for("active policy generation");
    agent
}

fn apply(agent: &AgentProcess, dir: &Path, state: &DesiredState) {
    let tmp = dir.join("desired.json.tmp");
    std::fs::write(&tmp, state.to_json()).unwrap();
    std::fs::rename(tmp, dir.join("desired.json")).unwrap();
    agent.wait_for(&format!("to={}", state.generation));
}

fn tcp_rule(id: u32, direction: Direction, peer: &str, port: u16) -> Rule {
    Rule {
        rule_id: id,
        name: format!("rule-{id}"),
        direction,
        proto: Proto::Tcp,
        peers: vec![peer.parse().unwrap()],
        ports: Some(PortRange { lo: port, hi: port }),
        idle_timeout_s: 600,
        inspect: false,
        app: None,
    }
}

fn udp_rule(id: u32, peer: &str, port: u16) -> Rule {
    Rule {
        proto: Proto::Udp,
        ..tcp_rule(id, Direction::FromDevice, peer, port)
    }
}

fn dev(
    id: u32,
    name: &str,
    addrs: &[&str],
    mac: [u8; 6],
    policy_id: u32,
    mode: Mode,
) -> DeviceEntry {
    DeviceEntry {
        device_id: id,
        name: name.into(),
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        mac: MacAddr(mac),
        policy_id,
        mode,
        max_flows: 0,
        fail_open: false,
        grace_s: wardgate_common::DEFAULT_GRACE_S,
    }
}

fn state(
    generation: u32,
    devices: Vec<DeviceEntry>,
    policies: Vec<(u32, Vec<Rule>)>,
) -> DesiredState {
    let policies = policies
        .into_iter()
        .map(|(policy_id, rules)| PolicyEntry {
            policy_id,
            profile: format!("profile-{policy_id}"),
            profile_version: 0,
            rules,
            sensitivity: Default::default(),
            detection: Default::default(),
        })
        .collect();
    wardgate_policy::lower::lower("gw-test", generation, devices, policies).unwrap()
}

/// Waits (bounded) until `ns` reaches `target` by ping.
fn reachable(ns: &str, target: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-c1", "-W1", target])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{target} unreachable from {ns}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn veth(a_ns: &str, a: &str, b_ns: &str, b: &str) {
    ip(&[
        "-n", a_ns, "link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns,
    ]);
    ip(&["-n", a_ns, "link", "set", a, "up"]);
    ip(&["-n", b_ns, "link", "set", b, "up"]);
}

fn addr(ns: &str, ifname: &str, cidr: &str) {
    ip(&["-n", ns, "addr", "add", cidr, "dev", ifname]);
}

fn mac(ns: &str, ifname: &str, mac: &str) {
    ip(&["-n", ns, "link", "set", ifname, "address", mac]);
}

const PUMP: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const PACS: [u8; 6] = [2, 0, 0, 0, 0, 0x10];

#[test]
fn devices_on_two_interfaces_need_both_policies() {
    // pump (192.0.2.10 on wg-dev0) and PACS (203.0.113.10 on wg-dev1) behind one gateway.
    let ns = Namespaces::new("d2d", &["p", "g", "s"]);
    let (pump, gw, pacs) = (ns.get(0), ns.get(1), ns.get(2));
    veth(gw, "wg-dev0", pump, "eth0");
    veth(gw, "wg-dev1", pacs, "eth0");
    mac(pump, "eth0", "02:00:00:00:00:0a");
    mac(pacs, "eth0", "02:00:00:00:00:10");
    addr(pump, "eth0", "192.0.2.10/24");
    addr(gw, "wg-dev0", "192.0.2.1/24");
    addr(pacs, "eth0", "203.0.113.10/24");
    addr(gw, "wg-dev1", "203.0.113.1/24");
    ip(&["-n", pump, "route", "add", "default", "via", "192.0.2.1"]);
    ip(&["-n", pacs, "route", "add", "default", "via", "203.0.113.1"]);
    forwarding(gw);
    reachable(pump, "203.0.113.10");

    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        tcp_echo(
            pacs,
            vec![sa("203.0.113.10:104"), sa("203.0.113.10:105")],
            stop.clone(),
        ),
        tcp_echo(pump, vec![sa("192.0.2.10:104")], stop.clone()),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("d2d");
    let devices = |pump_mode, pacs_mode| {
        vec![
            dev(1, "pump-1", &["192.0.2.10"], PUMP, 1, pump_mode),
            dev(2, "pacs-1", &["203.0.113.10"], PACS, 2, pacs_mode),
        ]
    };
    let policies = || {
        vec![
            (
                1,
                vec![tcp_rule(1, Direction::FromDevice, "203.0.113.10/32", 104)],
            ),
            (
                2,
                vec![tcp_rule(2, Direction::ToDevice, "192.0.2.0/24", 104)],
            ),
        ]
    };
    std::fs::write(
        tmp.path().join("desired.json"),
        state(1, devices(Mode::Enforce, Mode::Enforce), policies()).to_json(),
    )
    .unwrap();
    let agent = start_agent(gw, &["wg-dev0", "wg-dev1"], tmp.path(), &pin.0);

    // Both enforced: the pump's from-device rule and the PACS's to-device rule allow it; the
    // SYN-ACK (the PACS's MAC at its own ingress) and the data pass both ways.
    for _ in 0..3 {
        tcp_roundtrip(pump, sa("203.0.113.10:104")).expect("pump -> PACS DICOM");
    }
    assert!(
        tcp_roundtrip(pump, sa("203.0.113.10:105")).is_err(),
        "port 105 is in no policy"
    );
    assert!(
        tcp_roundtrip(pacs, sa("192.0.2.10:104")).is_err(),
        "the PACS may not open the pump"
    );

    // The pump learning: it may send anything, but the enforced PACS still only takes 104.
    apply(
        &agent,
        tmp.path(),
        &state(2, devices(Mode::Learn, Mode::Enforce), policies()),
    );
    tcp_roundtrip(pump, sa("203.0.113.10:104")).expect("learning pump -> PACS DICOM");
    assert!(
        tcp_roundtrip(pump, sa("203.0.113.10:105")).is_err(),
        "a learning device opened a port the enforced PACS does not allow"
    );

    // Quarantine of either end cuts the flow.
    apply(
        &agent,
        tmp.path(),
        &state(3, devices(Mode::Enforce, Mode::Quarantine), policies()),
    );
    assert!(
        tcp_roundtrip(pump, sa("203.0.113.10:104")).is_err(),
        "PACS quarantined"
    );
    apply(
        &agent,
        tmp.path(),
        &state(4, devices(Mode::Quarantine, Mode::Enforce), policies()),
    );
    assert!(
        tcp_roundtrip(pump, sa("203.0.113.10:104")).is_err(),
        "pump quarantined"
    );
    apply(
        &agent,
        tmp.path(),
        &state(5, devices(Mode::Enforce, Mode::Enforce), policies()),
    );
    tcp_roundtrip(pump, sa("203.0.113.10:104")).expect("both enforced again");

    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}

fn counters(pin: &Path) -> std::collections::BTreeMap<wardgate_common::Reason, u64> {
    wardgate_agent::datapath::pinned::status(pin)
        .expect("read the pinned maps")
        .reasons
}

/// `f` with VLAN tags inserted after the MAC addresses (outermost first).
fn tagged(f: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = f[..12].to_vec();
    for (tpid, vid) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&vid.to_be_bytes());
    }
    out.extend_from_slice(&f[12..]);
    out
}

#[test]
fn vlan_tagged_frames_on_a_trunk_are_enforced() {
    // The gateway's device-facing interface is a trunk. This kernel has no 802.1Q support
    // (CONFIG_VLAN_8021Q unset: no VLAN subinterfaces can be made), so the device side sends
    // real tagged frames with a packet socket. On receive the kernel moves the outer tag into
    // the skb's metadata before TC sees the frame: single-tagged frames reach the program as
    // metadata + IP, double-tagged ones (802.1ad outside, 802.1Q inside) with the inner tag
    // still in the frame. Both paths are exercised; the counters say what the program decided.
    let ns = Namespaces::new("vlan", &["p", "g"]);
    let (pump, gw) = (ns.get(0), ns.get(1));
    veth(gw, "wg-trk0", pump, "eth0");
    mac(pump, "eth0", "02:00:00:00:00:0a");
    let tmp = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("vlan");
    let devices = vec![dev(1, "pump-1", &["192.0.2.10"], PUMP, 1, Mode::Enforce)];
    let rules = vec![udp_rule(1, "198.51.100.10/32", 5000)];
    std::fs::write(
        tmp.path().join("desired.json"),
        state(1, devices, vec![(1, rules)]).to_json(),
    )
    .unwrap();
    let _agent = start_agent(gw, &["wg-trk0"], tmp.path(), &pin.0);

    let udp = |sport: u16, dport: u16| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2(PUMP, [2, 0, 0, 0, 0, 1])
            .ipv4([192, 0, 2, 10], [198, 51, 100, 10], 64)
            .udp(sport, dport)
            .write(&mut out, b"wardgate")
            .unwrap();
        out
    };
    let single = [(0x8100, 100)];
    let double = [(0x88a8, 200), (0x8100, 300)];
    let triple = [(0x88a8, 200), (0x8100, 300), (0x8100, 400)];
    let before = counters(&pin.0);
    for (i, tags) in [&single[..], &double[..]].into_iter().enumerate() {
        let base = 41000 + 10 * i as u16;
        send_frame(pump, "eth0", tagged(&udp(base, 445), tags));
        send_frame(pump, "eth0", tagged(&udp(base + 1, 5000), tags));
    }
    send_frame(pump, "eth0", tagged(&udp(41100, 5000), &triple));
    std::thread::sleep(Duration::from_millis(200));
    let after = counters(&pin.0);
    let moved = |r| after[&r] - before[&r];
    use wardgate_common::Reason::*;
    assert_eq!(
        (
            moved(DropPolicy),
            moved(PassPolicy),
            moved(DropVlan),
            moved(PassNonIp)
        ),
        (2, 2, 1, 0),
        "tagged frames: the inner IP judged (2 denied, 2 allowed), a third tag dropped, none \
         passed unparsed"
    );
    // `wardgate-agent status` reads the same pins without loading anything.
    let out = Command::new(env!("CARGO_BIN_EXE_wardgate-agent"))
        .args(["status", "--pin-root"])
        .arg(&pin.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status: {text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["drop_vlan", "1"]),
        "status output:\n{text}"
    );
    assert!(text.contains("active slot"), "{text}");
}

fn neighbour_mac(ns: &str, addr: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "neigh", "show", addr])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn arp_poisoning_from_another_device_does_not_take_the_pumps_traffic() {
    // The pump and a compromised camera share the device VLAN (a bridge); the camera claims
    // the pump's address in ARP replies to the gateway.
    let ns = Namespaces::new("arp", &["p", "c", "b", "g"]);
    let (pump, cam, sw, gw) = (ns.get(0), ns.get(1), ns.get(2), ns.get(3));
    ip(&["-n", sw, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", sw, "link", "set", "br0", "up"]);
    for (peer_ns, peer_if, port) in [
        (pump, "eth0", "sw-p"),
        (cam, "eth0", "sw-c"),
        (gw, "wg-dev0", "sw-g"),
    ] {
        veth(sw, port, peer_ns, peer_if);
        ip(&["-n", sw, "link", "set", port, "master", "br0"]);
    }
    mac(pump, "eth0", "02:00:00:00:00:0a");
    mac(cam, "eth0", "02:00:00:00:00:ee");
    addr(pump, "eth0", "192.0.2.10/24");
    addr(cam, "eth0", "192.0.2.20/24");
    addr(gw, "wg-dev0", "192.0.2.1/24");
    reachable(pump, "192.0.2.1");
    reachable(cam, "192.0.2.1");

    let tmp = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("arp");
    let devices = vec![
        dev(1, "pump-1", &["192.0.2.10"], PUMP, 1, Mode::Enforce),
        dev(
            2,
            "camera-1",
            &["192.0.2.20"],
            [2, 0, 0, 0, 0, 0xee],
            1,
            Mode::Enforce,
        ),
    ];
    std::fs::write(
        tmp.path().join("desired.json"),
        state(
            1,
            devices,
            vec![(
                1,
                vec![Rule {
                    proto: Proto::Icmp,
                    ports: None,
                    ..tcp_rule(1, Direction::ToDevice, "192.0.2.1/32", 0)
                }],
            )],
        )
        .to_json(),
    )
    .unwrap();
    let agent = start_agent(gw, &["wg-dev0"], tmp.path(), &pin.0);
    let gw_mac = {
        let out = Command::new("ip")
            .args(["-n", gw, "-br", "link", "show", "wg-dev0"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let field = text
            .split_whitespace()
            .nth(2)
            .expect("link address")
            .to_string();
        let bytes: Vec<u8> = field
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        <[u8; 6]>::try_from(bytes).unwrap()
    };
    // The gateway knows the pump at its own MAC; past the ARP lock time (1 s) an unsolicited
    // reply would replace the entry.
    reachable(gw, "192.0.2.10");
    assert!(neighbour_mac(gw, "192.0.2.10").contains("02:00:00:00:00:0a"));
    std::thread::sleep(Duration::from_millis(1500));
    let cam_mac = [2, 0, 0, 0, 0, 0xee];
    let mut reply = gw_mac.to_vec();
    reply.extend_from_slice(&cam_mac);
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    reply.extend_from_slice(&cam_mac);
    reply.extend_from_slice(&[192, 0, 2, 10]);
    reply.extend_from_slice(&gw_mac);
    reply.extend_from_slice(&[192, 0, 2, 1]);
    for _ in 0..5 {
        send_frame(cam, "eth0", reply.clone());
        std::thread::sleep(Duration::from_millis(200));
    }
    let entry = neighbour_mac(gw, "192.0.2.10");
    assert!(
        entry.contains("02:00:00:00:00:0a") && !entry.contains("02:00:00:00:00:ee"),
        "the gateway's entry for the pump was poisoned: {entry}"
    );
    reachable(gw, "192.0.2.10");
    agent.wait_for("spoof");
}

fn signal(agent: &AgentProcess, sig: i32) {
    // Safety: kill on our own child's pid.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, sig) }, 0);
}

#[test]
fn a_stalled_agent_fails_open_only_the_devices_whose_profile_says_so() {
    // Three devices on three interfaces: a fail-open pump, a fail-closed device, and a
    // quarantined fail-open device; a server on the hospital side. The agent is stopped
    // (SIGSTOP) past its heartbeat limit, then continued.
    let ns = Namespaces::new("wdog", &["a", "b", "c", "g", "s"]);
    let (open_dev, closed_dev, quar_dev, gw, srv) =
        (ns.get(0), ns.get(1), ns.get(2), ns.get(3), ns.get(4));
    let devices = [
        (
            open_dev,
            "wg-dev0",
            "02:00:00:00:00:0a",
            "192.0.2.10/26",
            "192.0.2.1",
        ),
        (
            closed_dev,
            "wg-dev1",
            "02:00:00:00:00:0b",
            "192.0.2.70/26",
            "192.0.2.65",
        ),
        (
            quar_dev,
            "wg-dev2",
            "02:00:00:00:00:0c",
            "192.0.2.130/26",
            "192.0.2.129",
        ),
    ];
    for (n, gw_if, m, cidr, gw_addr) in devices {
        veth(gw, gw_if, n, "eth0");
        mac(n, "eth0", m);
        addr(n, "eth0", cidr);
        addr(gw, gw_if, &format!("{gw_addr}/26"));
        ip(&["-n", n, "route", "add", "default", "via", gw_addr]);
    }
    veth(gw, "wg-srv0", srv, "eth0");
    addr(gw, "wg-srv0", "198.51.100.1/24");
    addr(srv, "eth0", "198.51.100.10/24");
    ip(&["-n", srv, "route", "add", "default", "via", "198.51.100.1"]);
    forwarding(gw);
    for (n, ..) in devices {
        reachable(n, "198.51.100.10");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let echo = tcp_echo(
        srv,
        vec![sa("198.51.100.10:104"), sa("198.51.100.10:445")],
        stop.clone(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("wdog");
    let mut open = dev(1, "pump-1", &["192.0.2.10"], PUMP, 1, Mode::Enforce);
    open.fail_open = true;
    let closed = dev(
        2,
        "monitor-1",
        &["192.0.2.70"],
        [2, 0, 0, 0, 0, 0x0b],
        1,
        Mode::Enforce,
    );
    let mut quarantined = dev(
        3,
        "pump-2",
        &["192.0.2.130"],
        [2, 0, 0, 0, 0, 0x0c],
        1,
        Mode::Quarantine,
    );
    quarantined.fail_open = true;
    let rules = vec![tcp_rule(1, Direction::FromDevice, "198.51.100.10/32", 104)];
    std::fs::write(
        tmp.path().join("desired.json"),
        state(1, vec![open, closed, quarantined], vec![(1, rules)]).to_json(),
    )
    .unwrap();
    let limit = Duration::from_millis(1000);
    let agent = start_agent_with(
        gw,
        &["wg-dev0", "wg-dev1", "wg-dev2"],
        tmp.path(),
        &pin.0,
        "watchdog: {heartbeat_limit_ms: 1000}\n",
    );
    let smb = sa("198.51.100.10:445");
    let dicom = sa("198.51.100.10:104");
    let enforced = || {
        tcp_roundtrip(open_dev, dicom).expect("allowed flow");
        assert!(
            tcp_roundtrip(open_dev, smb).is_err(),
            "fail-open pump, SMB, agent healthy"
        );
        assert!(
            tcp_roundtrip(closed_dev, smb).is_err(),
            "fail-closed device, SMB"
        );
        assert!(
            tcp_roundtrip(quar_dev, dicom).is_err(),
            "quarantined device"
        );
    };
    enforced();

    signal(&agent, libc::SIGSTOP);
    std::thread::sleep(limit + Duration::from_millis(500));
    let before = counters(&pin.0);
    tcp_roundtrip(open_dev, smb)
        .expect("a fail-open device's denied flow passes while the agent is stalled");
    assert!(
        tcp_roundtrip(closed_dev, smb).is_err(),
        "a fail-closed device stays enforced while the agent is stalled"
    );
    assert!(
        tcp_roundtrip(quar_dev, dicom).is_err(),
        "a quarantined device stays cut while the agent is stalled"
    );
    let after = counters(&pin.0);
    let would_deny = after[&wardgate_common::Reason::PassMonitorWouldDeny]
        - before[&wardgate_common::Reason::PassMonitorWouldDeny];
    assert!(
        would_deny >= 3,
        "the failed-open flow's packets are counted as would-deny: {would_deny}"
    );
    let st = wardgate_agent::datapath::pinned::status(&pin.0).unwrap();
    assert_eq!(
        (st.watchdog.stale, st.watchdog.went_stale),
        (1, 1),
        "{st:?}"
    );

    let resumed = Instant::now();
    signal(&agent, libc::SIGCONT);
    std::thread::sleep(limit / 2);
    assert!(
        tcp_roundtrip(open_dev, smb).is_err(),
        "enforcement is back within the limit after the agent resumes"
    );
    // The probe was sent limit/2 after SIGCONT and dropped; its timeout is in `probe_done`.
    let probe_done = resumed.elapsed();
    enforced();
    let st = wardgate_agent::datapath::pinned::status(&pin.0).unwrap();
    assert_eq!((st.watchdog.stale, st.watchdog.recovered), (0, 1), "{st:?}");
    // Reported once each way, after the agent read its ring buffer again.
    agent.wait_for("kind=\"watchdog\" reason=\"pass_policy\"");
    let log = agent.log_text();
    let reports = log
        .lines()
        .filter(|l| l.contains("kind=\"watchdog\"") || l.contains("kind=watchdog"))
        .count();
    assert_eq!(reports, 2, "watchdog reports in the agent log:\n{log}");
    eprintln!(
        "a denied connection {:?} after SIGCONT was dropped (heartbeat limit {limit:?}; the probe \
         gave up {probe_done:?} after SIGCONT)",
        limit / 2
    );
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
}
