//! Attach tier: `dns:` peers enforced (issue 21 point 1). The agent binary runs in the gateway
//! namespace; Debian's dnsmasq is the site's resolver (198.51.100.53, its own hosts file, no
//! upstream, no system resolv.conf) answering `api.vendor.example` (a CNAME to
//! `edge.cdn.example`) with an address that rotates (SIGHUP re-reads the hosts file) and a
//! 1-second TTL. The enforced device resolves with dig and connects: each new address is
//! reached, an address it never resolved stays blocked, an address whose answer expired is
//! blocked again for new flows, and an answer from another DNS server (a second dnsmasq at
//! 198.51.100.20, which the device may query but which is no resolver of its profile) teaches
//! the gateway nothing. Then a MUD file's `dns:` peer, imported, is enforced the same way.
//! Needs root; fails (never skips) without it.

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::*;
use wardgate_common::Reason;
use wardgate_policy::{ProfileSet, compile_detailed, mud, parse_profile, parse_site};
use wardgate_testkit::{
    agent::AgentProcess,
    peers::{self, Peer},
    ward::{DEV_IF, Ward, ip, tcp_echo, tcp_roundtrip},
};

const RESOLVER: &str = "198.51.100.53";
const ROGUE: &str = "198.51.100.20";
/// Addresses the name rotates through, and one it is never given.
const ROTATION: [&str; 3] = ["198.51.100.40", "198.51.100.41", "198.51.100.42"];
const NEVER: &str = "198.51.100.43";
const PORT: u16 = 8443;

/// The running agent's log, shown when a query fails.
static LOG: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

const PROFILE: &str = "\
name: pump
default_mode: enforce
flows:
  - name: dns
    direction: from-device
    protocol: udp
    peers: [group:dns, 198.51.100.20]
    ports: 53
  - name: cloud
    direction: from-device
    protocol: tcp
    peers: [dns:api.vendor.example]
    ports: 8443
";

fn site(profile: &str) -> String {
    format!(
        "site: lab\ngroups:\n  dns: [{RESOLVER}/32]\ngateways:\n  - {{name: gw, interfaces: [{DEV_IF}]}}\n\
         devices:\n  - {{name: pump-1, mac: 02:00:00:00:00:0a, addresses: [192.0.2.10], profile: {profile}, mode: enforce, gateway: gw}}\n"
    )
}

/// Compiles the profile into the site and writes the desired state the agent reads.
fn write_desired(profile_yaml: &str, profile: &str, path: &Path) {
    let mut set = ProfileSet::default();
    let mut d = wardgate_policy::Diagnostics::default();
    set.insert(
        "p.yaml",
        parse_profile("p.yaml", profile_yaml).unwrap(),
        &mut d,
    );
    assert!(d.is_empty(), "{d}");
    let site = parse_site("site.yaml", &site(profile)).unwrap();
    let c = compile_detailed("site.yaml", &site, &set, "gw", 1).unwrap();
    assert!(!c.state.dns.names.is_empty(), "no dns names compiled");
    std::fs::write(path, c.state.to_json()).unwrap();
}

fn start_agent(ward: &Ward, d: &Path, pin: &PinRoot) -> AgentProcess {
    let config = d.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [{DEV_IF}]\npin_root: {}\ndesired_state: {}\n\
             dns: {{ttl_floor_s: 1, ttl_ceiling_s: 2}}\n",
            pin.0.display(),
            d.join("desired.json").display()
        ),
    )
    .unwrap();
    let agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wardgate-agent")),
        &ward.gw,
        &config,
        d.join("agent.log"),
    );
    agent.wait_for("active policy generation");
    *LOG.lock().unwrap() = Some(d.join("agent.log"));
    agent
}

/// The device asks `server` for `name`: the addresses in the answer (dig +short).
fn try_resolve(ward: &Ward, server: &str, name: &str) -> Result<Vec<String>, String> {
    let (ok, out) = peers::run_within(
        peers::dns_query(&ward.dev, server, name),
        Duration::from_secs(5),
    );
    if !ok {
        return Err(format!("dig @{server} {name}: {out}"));
    }
    Ok(out
        .lines()
        .filter(|l| l.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string)
        .collect())
}

/// As [`try_resolve`], retried while dnsmasq starts (bounded).
fn resolve(ward: &Ward, server: &str, name: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_resolve(ward, server, name) {
            Ok(a) => return a,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{e}\nagent log:\n{}",
                std::fs::read_to_string(LOG.lock().unwrap().clone().unwrap_or_default())
                    .unwrap_or_default()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The device resolves until the answer is `want` (dnsmasq re-reads its hosts file on SIGHUP;
/// bounded), and returns when it was answered.
fn resolve_until(ward: &Ward, name: &str, want: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = resolve(ward, RESOLVER, name);
        if got == [want] {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never answered {want}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn connect(ward: &Ward, addr: &str) -> Result<(), String> {
    tcp_roundtrip(&ward.dev, SocketAddr::new(addr.parse().unwrap(), PORT))
}

fn rotate(hosts: &Path, dnsmasq: &Peer, addr: &str) {
    std::fs::write(hosts, format!("{addr} edge.cdn.example\n")).unwrap();
    dnsmasq.hup();
}

/// Echo servers on every address the tests use (on the hospital side).
fn servers(ward: &Ward, stop: &Arc<AtomicBool>) {
    for a in ROTATION.iter().chain([&NEVER]) {
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
    let addrs = ROTATION
        .iter()
        .chain([&NEVER])
        .map(|a| SocketAddr::new(a.parse().unwrap(), PORT))
        .collect();
    tcp_echo(&ward.srv, addrs, stop.clone());
}

fn held(pin: &PinRoot) -> u64 {
    let s = wardgate_agent::datapath::pinned::status(&pin.0).unwrap();
    s.reasons.get(&Reason::HoldDnsAnswer).copied().unwrap_or(0)
}

#[test]
fn rotating_answers_are_reached_unresolved_and_forged_ones_stay_blocked() {
    require_privileges();
    let ward = Ward::new("dnsr");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pin = PinRoot::new("dns-rules");
    let stop = Arc::new(AtomicBool::new(false));
    servers(&ward, &stop);

    let hosts = d.join("hosts");
    std::fs::write(&hosts, format!("{} edge.cdn.example\n", ROTATION[0])).unwrap();
    let resolver = peers::dns_server_hosts(
        &ward.srv,
        RESOLVER,
        &hosts,
        &[("api.vendor.example", "edge.cdn.example")],
        1,
        d,
    );
    // Another DNS server the device may ask: it answers the vendor's name with NEVER.
    let rogue_hosts = d.join("rogue-hosts");
    std::fs::write(&rogue_hosts, format!("{NEVER} api.vendor.example\n")).unwrap();
    let _rogue = peers::dns_server_hosts(&ward.srv, ROGUE, &rogue_hosts, &[], 300, d);

    write_desired(PROFILE, "pump", &d.join("desired.json"));
    let agent = start_agent(&ward, d, &pin);

    // Nothing resolved yet: the vendor's first address is blocked.
    assert!(
        connect(&ward, ROTATION[0]).is_err(),
        "allowed before any answer"
    );

    let mut learned_at = Vec::new();
    for (i, addr) in ROTATION.iter().enumerate() {
        if i > 0 {
            rotate(&hosts, &resolver, addr);
        }
        learned_at.push(resolve_until(&ward, "api.vendor.example", addr));
        // At once: the address was installed before the device had the answer.
        connect(&ward, addr)
            .unwrap_or_else(|e| panic!("{addr} (answered) not reached: {e}\n{}", agent.log_text()));
        assert!(connect(&ward, NEVER).is_err(), "{NEVER} was never answered");
    }
    // The first answer's TTL (1 s, at most the 2 s ceiling) is over: a new flow to its address
    // is denied again.
    let expired = learned_at[0] + Duration::from_millis(2_500);
    if let Some(wait) = expired.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    assert!(
        connect(&ward, ROTATION[0]).is_err(),
        "{} reached after its answer expired",
        ROTATION[0]
    );
    // Re-resolving brings the current address back (answers keep coming).
    let now_addr = ROTATION[2];
    resolve_until(&ward, "api.vendor.example", now_addr);
    connect(&ward, now_addr).unwrap();

    // The rogue server's answer reaches the device, but teaches the gateway nothing.
    let held_before = held(&pin);
    assert_eq!(resolve(&ward, ROGUE, "api.vendor.example"), [NEVER]);
    assert!(
        connect(&ward, NEVER).is_err(),
        "an answer from a non-resolver opened {NEVER}"
    );
    assert_eq!(held(&pin), held_before, "a non-resolver's answer was held");
    assert!(held_before >= 4, "held answers: {held_before}");
    stop.store(true, Ordering::Relaxed);
}

/// A MUD file's `dns:` peer (NIST's example camera talking to `cloud-service.example.com`),
/// imported as it is, plus the site's DNS flow an engineer adds: enforced.
#[test]
fn an_imported_mud_dns_peer_is_enforced() {
    require_privileges();
    let fixtures = Path::new("/work/shared/fixtures/mud");
    let text = std::fs::read_to_string(fixtures.join("mud-visualizer/tester_domain.json"))
        .expect("MUD fixtures (held-in material)");
    let mut imported = mud::import(
        &mud::parse_mud(&text).unwrap(),
        &Default::default(),
        Some("camera"),
    )
    .unwrap();
    assert!(
        imported.groups.contains(&"dns".to_string()),
        "{:?}",
        imported.groups
    );
    let site_dns = parse_profile(
        "x.yaml",
        "name: x\nflows:\n  - {name: site dns, direction: from-device, protocol: udp, peers: [group:dns], ports: 53}\n",
    )
    .unwrap()
    .flows
    .remove(0);
    imported.profile.flows.push(site_dns);
    let yaml = mud::to_yaml(&imported);
    assert!(yaml.contains("dns:cloud-service.example.com"), "{yaml}");

    let ward = Ward::new("dnsm");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pin = PinRoot::new("dns-mud");
    let stop = Arc::new(AtomicBool::new(false));
    servers(&ward, &stop);
    let hosts = d.join("hosts");
    std::fs::write(
        &hosts,
        format!("{} cloud-service.example.com\n", ROTATION[1]),
    )
    .unwrap();
    let _resolver = peers::dns_server_hosts(&ward.srv, RESOLVER, &hosts, &[], 60, d);
    write_desired(&yaml, "camera", &d.join("desired.json"));
    let agent = start_agent(&ward, d, &pin);

    assert!(
        connect(&ward, ROTATION[1]).is_err(),
        "allowed before any answer"
    );
    assert_eq!(
        resolve(&ward, RESOLVER, "cloud-service.example.com"),
        [ROTATION[1]]
    );
    connect(&ward, ROTATION[1])
        .unwrap_or_else(|e| panic!("MUD dns peer not reached: {e}\n{}", agent.log_text()));
    assert!(connect(&ward, NEVER).is_err());
    stop.store(true, Ordering::Relaxed);
}
