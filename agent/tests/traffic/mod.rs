//! Traffic from real tools for the namespace tests that raise findings: the ward's device (an
//! infusion pump at 192.0.2.10) scans a server, tries SMB and floods UDP; a hospital
//! workstation (198.51.100.20) scans the pump. Every run is bounded in count and time.
// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use wardgate_testkit::ward::Ward;

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
