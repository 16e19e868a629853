//! Traffic from real tools for the namespace tests that raise findings: the ward's device (an
//! infusion pump at 192.0.2.10) scans a server, tries SMB, floods UDP and asks DNS what a
//! tunnel and a domain generation algorithm ask; a hospital workstation (198.51.100.20) scans
//! the pump. Every run is bounded in count and time.
// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use wardgate_testkit::{peers, ward::Ward};

pub fn in_netns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Runs to completion within `limit`; panics with the output otherwise.
pub fn run_within(mut cmd: Command, limit: Duration, what: &str) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e} (installed by `cargo xtask setup`)"));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(out.path()).unwrap_or_default();
            assert!(s.success(), "{what} failed ({s}):\n{text}");
            return text;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// From the pump: a real SYN scan of 200 ports (1000-1199) on 198.51.100.10 (nothing listens:
/// every port is refused), an SMB connection attempt to 198.51.100.30 (refused), and up to
/// 30,000 UDP datagrams to 198.51.100.53:9 within 5 s.
pub fn pump_scans_tries_smb_and_floods(ward: &Ward) {
    let mut c = in_netns(&ward.dev, "nmap");
    c.args([
        "-n",
        "-Pn",
        "-sS",
        "-T4",
        "--max-retries",
        "0",
        "-p",
        "1000-1199",
        "198.51.100.10",
    ]);
    let out = run_within(c, Duration::from_secs(60), "nmap");
    assert!(out.contains("Nmap done"), "{out}");
    let mut c = in_netns(&ward.dev, "python3");
    c.args([
        "-c",
        "import socket\ns=socket.socket()\ns.settimeout(3)\ntry:\n s.connect(('198.51.100.30',445))\nexcept OSError:\n pass",
    ]);
    run_within(c, Duration::from_secs(10), "smb attempt");
    let mut c = in_netns(&ward.dev, "python3");
    c.args([
        "-c",
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nend=time.time()+5\nfor i in range(30000):\n s.sendto(b'x'*18,('198.51.100.53',9))\n if time.time()>end: break",
    ]);
    run_within(c, Duration::from_secs(20), "udp flood");
}

/// From the hospital side: a workstation's address (198.51.100.20) scans 200 ports of the pump
/// (1-199 closed, 1100 open: a listener there for the scans), a SYN scan then a NULL scan.
pub fn workstation_scans_pump(ward: &Ward) {
    let mut listener = in_netns(&ward.dev, "python3");
    listener.args([
        "-c",
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',1100))\ns.listen(16)\ntime.sleep(60)",
    ]);
    let mut listener = listener.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for kind in ["-sS", "-sN"] {
        let mut c = in_netns(&ward.srv, "nmap");
        c.args([
            "-n",
            "-Pn",
            kind,
            "-T4",
            "--max-retries",
            "0",
            "-S",
            "198.51.100.20",
            "-e",
            "eth0",
            "-p",
            "1-199,1100",
            "192.0.2.10",
        ]);
        let out = run_within(c, Duration::from_secs(60), "nmap");
        assert!(out.contains("Nmap done"), "{out}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = listener.kill();
    let _ = listener.wait();
}

/// The attacker's DNS server the pump tunnels through (on the hospital side) and the domain
/// it serves.
pub const TUNNEL_SERVER: &str = "198.51.100.30";
pub const TUNNEL_DOMAIN: &str = "tunnel.example";
/// The hospital's resolver (the demo ward's group `dns`).
pub const RESOLVER: &str = "198.51.100.53";
/// Lookups of each burst.
pub const TUNNEL_LOOKUPS: usize = 40;
pub const GENERATED_NAMES: usize = 30;

/// From the pump, through Debian's dnsmasq on the hospital side, each started here and ended
/// on return: a tunnel-like burst (40 lookups of a new 32-hex-digit label each under
/// `tunnel.example`, dnscat2's shape) to an attacker's own server at 198.51.100.30, and a
/// DGA-like burst (30 generated names under `.test`) to the site's resolver at 198.51.100.53,
/// which answers NXDOMAIN for every name under `.test` (an empty `--address`). dig's batch mode
/// asks them in order, each one try of 1 s. `dir` holds the servers' pid files and logs.
pub fn pump_tunnels_and_tries_generated_names(ward: &Ward, dir: &Path) {
    let (tunnel_dir, resolver_dir) = (dir.join("dns-tunnel"), dir.join("dns-resolver"));
    for d in [&tunnel_dir, &resolver_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let _tunnel = peers::dns_server(
        &ward.srv,
        TUNNEL_SERVER,
        &[(TUNNEL_DOMAIN, "198.51.100.99")],
        &tunnel_dir,
    );
    let _resolver = peers::dns_server(&ward.srv, RESOLVER, &[("test", "")], &resolver_dir);
    // Both answer before the bursts (each probe is one name more of its burst's kind).
    for (server, probe) in [
        (TUNNEL_SERVER, "ready.tunnel.example"),
        (RESOLVER, "ready.test"),
    ] {
        peers::until_ok(
            &format!("dig @{server} {probe}"),
            Duration::from_secs(15),
            || peers::dns_query(&ward.dev, server, probe),
        );
    }
    // A fixed pseudo-random sequence (an LCG): the same names every run.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) as u32
    };
    let mut batch = String::new();
    for _ in 0..TUNNEL_LOOKUPS {
        let label = format!("{:08x}{:08x}{:08x}{:08x}", next(), next(), next(), next());
        batch.push_str(&format!(
            "@{TUNNEL_SERVER} {label}.{TUNNEL_DOMAIN} A +time=1 +tries=1\n"
        ));
    }
    for _ in 0..GENERATED_NAMES {
        let name: String = (0..12)
            .map(|_| char::from(b'a' + (next() % 26) as u8))
            .collect();
        batch.push_str(&format!("@{RESOLVER} {name}.test A +time=1 +tries=1\n"));
    }
    let file = dir.join("dns-batch.txt");
    std::fs::write(&file, batch).unwrap();
    let mut c = in_netns(&ward.dev, "dig");
    c.arg("-f").arg(&file);
    let out = run_within(c, Duration::from_secs(90), "dig -f");
    let count = |status: &str| out.matches(&format!("status: {status}")).count();
    assert_eq!(count("NOERROR"), TUNNEL_LOOKUPS, "{out}");
    assert_eq!(count("NXDOMAIN"), GENERATED_NAMES, "{out}");
}
