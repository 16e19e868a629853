//! A three-host ward in network namespaces for tests and the demo: device <-> gateway <->
//! server, documentation addresses only. Everything is removed on drop; every wait and every
//! traffic loop is bounded in count and time.

use std::{
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use wardgate_agent::netns;

pub const DEV_IF: &str = "wg-dev0";

pub struct Ward {
    pub dev: String,
    pub gw: String,
    pub srv: String,
}

/// Runs `ip` with `args`; panics with its stderr if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Ward {
    /// Builds the namespaces; `tag` keeps parallel test binaries apart (max 6 chars).
    pub fn new(tag: &str) -> Ward {
        let n = std::process::id() % 100_000;
        let w = Ward {
            dev: format!("wgd-{tag}-{n}"),
            gw: format!("wgg-{tag}-{n}"),
            srv: format!("wgs-{tag}-{n}"),
        };
        for ns in [&w.dev, &w.gw, &w.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
        }
        w.add_device_link();
        w.add_server_side();
        w.wait_reachable(&w.dev);
        w
    }
}

impl Ward {
    /// The hospital side: the gateway's veth `wg-srv0` <-> `eth0` in the server namespace with
    /// the servers' addresses, routes both ways, forwarding on.
    pub(crate) fn add_server_side(&self) {
        let (dev, gw, srv) = (self.dev.as_str(), self.gw.as_str(), self.srv.as_str());
        ip(&["-n", dev, "link", "set", "lo", "up"]);
        ip(&[
            "-n", gw, "link", "add", "wg-srv0", "type", "veth", "peer", "name", "eth0", "netns",
            srv,
        ]);
        for (ns, ifs) in [(gw, vec!["lo", "wg-srv0"]), (srv, vec!["lo", "eth0"])] {
            for i in ifs {
                ip(&["-n", ns, "link", "set", i, "up"]);
            }
        }
        for (ns, ifname, addr) in [
            (gw, "wg-srv0", "198.51.100.1/24"),
            (gw, "wg-srv0", "2001:db8:100::1/64"),
            (srv, "eth0", "198.51.100.10/24"),
            (srv, "eth0", "198.51.100.20/24"),
            (srv, "eth0", "198.51.100.30/24"),
            (srv, "eth0", "198.51.100.53/24"),
            (srv, "eth0", "2001:db8:100::10/64"),
        ] {
            if addr.contains(':') {
                ip(&["-n", ns, "addr", "add", addr, "dev", ifname, "nodad"]);
            } else {
                ip(&["-n", ns, "addr", "add", addr, "dev", ifname]);
            }
        }
        ip(&["-n", srv, "route", "add", "default", "via", "198.51.100.1"]);
        ip(&[
            "-n",
            srv,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:100::1",
        ]);
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let out = Command::new("ip")
                .args(["netns", "exec", gw, "sysctl", "-qw", key])
                .output()
                .unwrap();
            assert!(out.status.success(), "sysctl {key}");
        }
    }

    /// Waits (bounded) until the server answers pings of both families from `ns`.
    pub(crate) fn wait_reachable(&self, dev: &str) {
        // IPv6 neighbour discovery through the forwarding gateway takes a moment after setup:
        // wait (bounded) until both families reach the server before any test traffic.
        for target in ["198.51.100.10", "2001:db8:100::10"] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let ok = Command::new("ip")
                    .args(["netns", "exec", dev, "ping", "-c1", "-W1", target])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{target} unreachable in the test ward"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The device's link: the veth `DEV_IF` (gateway) <-> `eth0` (device) with the device's MAC,
    /// addresses and default routes.
    fn add_device_link(&self) {
        let (dev, gw) = (self.dev.as_str(), self.gw.as_str());
        ip(&[
            "-n", gw, "link", "add", DEV_IF, "type", "veth", "peer", "name", "eth0", "netns", dev,
        ]);
        ip(&[
            "-n",
            dev,
            "link",
            "set",
            "eth0",
            "address",
            "02:00:00:00:00:0a",
        ]);
        ip(&["-n", dev, "link", "set", "eth0", "up"]);
        ip(&["-n", gw, "link", "set", DEV_IF, "up"]);
        for (ns, ifname, addr) in [
            (dev, "eth0", "192.0.2.10/24"),
            (dev, "eth0", "2001:db8:1::10/64"),
            (gw, DEV_IF, "192.0.2.1/24"),
            (gw, DEV_IF, "2001:db8:1::1/64"),
        ] {
            if addr.contains(':') {
                ip(&["-n", ns, "addr", "add", addr, "dev", ifname, "nodad"]);
            } else {
                ip(&["-n", ns, "addr", "add", addr, "dev", ifname]);
            }
        }
        ip(&["-n", dev, "route", "add", "default", "via", "192.0.2.1"]);
        ip(&[
            "-n",
            dev,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:1::1",
        ]);
    }

    /// Deletes the device's veth pair (both ends go), as when a VLAN interface is removed.
    pub fn delete_device_link(&self) {
        ip(&["-n", &self.gw, "link", "del", DEV_IF]);
    }

    /// Creates the device's veth pair again, as it was (a new interface index on the gateway).
    pub fn recreate_device_link(&self) {
        self.add_device_link();
    }
}

impl Drop for Ward {
    fn drop(&mut self) {
        for ns in [&self.dev, &self.gw, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a thread inside namespace `ns` (sockets it creates stay in that namespace).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        netns::enter(&ns).expect("enter netns");
        f()
    })
}

pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_ns(ns, f).join().expect("thread in namespace")
}

/// TCP echo servers on `addrs` (in the current namespace of the spawned thread) until `stop`.
pub fn tcp_echo(ns: &str, addrs: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    in_ns(ns, move || {
        let listeners: Vec<_> = addrs
            .iter()
            .map(|a| {
                let l = TcpListener::bind(a).expect("bind echo");
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for l in &listeners {
                if let Ok((s, _)) = l.accept() {
                    std::thread::spawn(move || echo_stream(s));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn echo_stream(mut s: TcpStream) {
    use std::io::{Read, Write};
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 1500];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// UDP echo servers; returns a counter of datagrams received per address.
pub fn udp_echo(
    ns: &str,
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> (Vec<Arc<AtomicU64>>, JoinHandle<()>) {
    let counters: Vec<_> = addrs.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let c2 = counters.clone();
    let h = in_ns(ns, move || {
        let socks: Vec<_> = addrs
            .iter()
            .map(|a| {
                let s = UdpSocket::bind(a).expect("bind udp echo");
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        // Whole datagrams, however large (fragmented ones are reassembled by the kernel).
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let mut idle = true;
            for (s, c) in socks.iter().zip(&c2) {
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    idle = false;
                    c.fetch_add(1, Ordering::Relaxed);
                    let _ = s.send_to(&buf[..n], from);
                }
            }
            if idle {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    (counters, h)
}

/// One TCP request/response through the ward; `Err` if the connection or echo fails.
pub fn tcp_roundtrip(ns: &str, to: SocketAddr) -> Result<(), String> {
    run_in(ns, move || {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(700))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        s.write_all(b"ping").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if &buf == b"ping" {
            Ok(())
        } else {
            Err("bad echo".into())
        }
    })
}

/// One UDP request/response; `Err` if no answer within the timeout.
pub fn udp_roundtrip(ns: &str, to: SocketAddr) -> Result<(), String> {
    udp_exchange(ns, to, 4)
}

/// One UDP datagram of `len` bytes and its echo, which must come back whole; larger than the
/// MTU, both go as IP fragments.
pub fn udp_exchange(ns: &str, to: SocketAddr, len: usize) -> Result<(), String> {
    run_in(ns, move || {
        let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .unwrap();
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        s.send_to(&sent, to).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; len + 1];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        if buf[..n] == sent[..] {
            Ok(())
        } else {
            Err(format!("echo of {n} bytes, sent {len}"))
        }
    })
}

/// Sends `count` sequenced datagrams to each target, one round every `gap`, counting echoes.
/// Returns (sent per target, echoes per target).
pub fn udp_stream(
    ns: &str,
    targets: Vec<SocketAddr>,
    count: u32,
    gap: Duration,
) -> (Vec<u64>, Vec<u64>) {
    run_in(ns, move || {
        let socks: Vec<_> = targets
            .iter()
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let mut sent = vec![0u64; targets.len()];
        let mut got = vec![0u64; targets.len()];
        let mut buf = [0u8; 64];
        let drain = |got: &mut Vec<u64>, buf: &mut [u8]| {
            for (i, s) in socks.iter().enumerate() {
                while s.recv_from(buf).is_ok() {
                    got[i] += 1;
                }
            }
        };
        for seq in 0..count {
            for (i, (s, t)) in socks.iter().zip(&targets).enumerate() {
                if s.send_to(&seq.to_be_bytes(), t).is_ok() {
                    sent[i] += 1;
                }
            }
            drain(&mut got, &mut buf);
            std::thread::sleep(gap);
        }
        // Let the last echoes arrive.
        let end = Instant::now() + Duration::from_millis(500);
        while Instant::now() < end {
            drain(&mut got, &mut buf);
            std::thread::sleep(Duration::from_millis(5));
        }
        (sent, got)
    })
}
