//! `cargo xtask bench throughput`: real traffic through a gateway network namespace (device ns
//! <-> gateway ns <-> server ns, veth pairs, `wardgate_testkit::ward::Ward`), with no filter, with
//! the wardgate datapath attached to the device-facing interface, and with an nftables forward
//! chain holding the same allowlist; the filters at 10 and at 10,000 rules.
//!
//! Metrics: iperf3 TCP throughput with 1 and with 8 streams, and new TCP connections per
//! second (`wrk -H 'Connection: close'`: every request is a new connection) against a small
//! multi-threaded HTTP responder in the server namespace.
//!
//! Interleaved: each round runs every configuration once (the starting configuration rotates
//! from round to round), and each row prints the median over the rounds with its min-max. The
//! ratios are paired: per round (configurations measured back to back), then the median of
//! those with a distribution-free confidence interval, so a slow round from other work on the
//! machine moves both sides of a ratio together instead of one row's median.
//! `WG_BENCH_ROUNDS` and `WG_BENCH_SECONDS` set the rounds and the seconds per measurement.
//! Documentation addresses only; every external command runs under `timeout`, every loop is
//! bounded in count and time; the namespaces, the iperf3 server and the bpffs pins (which hold
//! the datapath's links) are removed on exit, also when the bench panics. Needs root.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use wardgate_testkit::stats::median_min_max;

use wardgate_agent::datapath::Datapath;
use wardgate_common::{ACTION_DROP, GatewayConfig};
use wardgate_policy::{
    Direction, Mode, Proto,
    desired::{DeviceEntry, MacAddr, PolicyEntry, PortRange, Rule},
    lower::lower,
};
use wardgate_testkit::ward::{self as lab, DEV_IF, Ward};

const DEVICE: &str = "192.0.2.10";
const DEVICE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const SERVER: &str = "198.51.100.10";
const IPERF_PORT: u16 = 5201;
const HTTP_PORT: u16 = 8080;
/// Seconds per measurement unless `WG_BENCH_SECONDS` says otherwise (1-60).
const SECONDS: u32 = 3;
/// Rounds unless `WG_BENCH_ROUNDS` says otherwise (3-50).
const ROUNDS: usize = 5;
/// HTTP responder threads.
const HTTP_WORKERS: usize = 4;
/// Nothing in the bench runs longer than this.
const BENCH_LIMIT: Duration = Duration::from_secs(90 * 60);

/// Seconds per measurement (`WG_BENCH_SECONDS`).
fn seconds() -> u32 {
    static S: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *S.get_or_init(|| {
        std::env::var("WG_BENCH_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SECONDS)
            .clamp(1, 60)
    })
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Filter {
    None,
    Wardgate,
    Nftables,
}

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Filter::None => "no filter",
            Filter::Wardgate => "wardgate",
            Filter::Nftables => "nftables",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Metric {
    Tcp1,
    Tcp8,
    Conns,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Tcp1 => "TCP 1 stream, Gbit/s",
            Metric::Tcp8 => "TCP 8 streams, Gbit/s",
            Metric::Conns => "new connections/s",
        }
    }
}

const METRICS: [Metric; 3] = [Metric::Tcp1, Metric::Tcp8, Metric::Conns];
const CONFIGS: [(Filter, u32); 5] = [
    (Filter::None, 0),
    (Filter::Wardgate, 10),
    (Filter::Nftables, 10),
    (Filter::Wardgate, 10_000),
    (Filter::Nftables, 10_000),
];

/// Set by SIGINT/SIGTERM; checked between commands, it turns into a panic, which unwinds
/// through `Lab`'s cleanup.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupted() {
    assert!(
        !INTERRUPTED.load(Ordering::Relaxed),
        "interrupted: cleaning up"
    );
}

/// Everything the bench creates outside itself, removed on drop (also while unwinding).
struct Lab {
    ward: Option<Ward>,
    iperf_server: Option<Child>,
    pins: Vec<PathBuf>,
    stop: Arc<AtomicBool>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The server runs under `timeout`, which forwards SIGTERM to it and exits.
        if let Some(mut c) = self.iperf_server.take() {
            // Safety: kill on the pid of a child we spawned and have not reaped yet.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let _ = c.wait();
        }
        // Removing the pin root removes the pinned links: the datapath detaches.
        for p in &self.pins {
            let _ = std::fs::remove_dir_all(p);
        }
        // Deleting the namespaces removes the veths and the nftables table with them.
        self.ward.take();
    }
}

/// `timeout` around `ip netns exec NS args...`, so no command can hang the bench.
fn ns_cmd(ns: &str, secs: u32, args: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "2", &secs.to_string(), "ip", "netns", "exec", ns])
        .args(args);
    c
}

fn sysctl(ns: &str, key: &str) {
    let out = ns_cmd(ns, 10, &["sysctl", "-qw", key]).output().unwrap();
    assert!(out.status.success(), "sysctl {key} in {ns}");
}

/// The allowlist: what the traffic needs (TCP to the server's iperf3 and HTTP ports) and
/// filler rules (single TCP ports on 203.0.113.0/24 hosts), `n` in all.
fn allowlist(n: u32) -> Vec<([u8; 4], u16)> {
    let mut v = vec![
        ([198, 51, 100, 10], IPERF_PORT),
        ([198, 51, 100, 10], HTTP_PORT),
    ];
    let mut i = 0u32;
    while (v.len() as u32) < n {
        v.push(([203, 0, 113, 1 + (i % 250) as u8], 1024 + (i / 250) as u16));
        i += 1;
    }
    v
}

/// Loads the datapath inside the gateway namespace, writes the config, an empty management
/// allowlist and the policy, and attaches it to the device-facing interface.
fn attach_wardgate(ward: &Ward, pin: PathBuf, n: u32) {
    let rules: Vec<Rule> = allowlist(n)
        .into_iter()
        .enumerate()
        .map(|(i, (peer, port))| Rule {
            rule_id: i as u32 + 1,
            name: format!("r{i}"),
            direction: Direction::FromDevice,
            proto: Proto::Tcp,
            peers: vec![
                format!("{}.{}.{}.{}/32", peer[0], peer[1], peer[2], peer[3])
                    .parse()
                    .unwrap(),
            ],
            ports: Some(PortRange::single(port)),
            idle_timeout_s: 600,
            inspect: false,
            app: None,
        })
        .collect();
    let device = DeviceEntry {
        device_id: 1,
        name: "device".into(),
        addrs: vec![DEVICE.parse().unwrap()],
        mac: MacAddr(DEVICE_MAC),
        policy_id: 1,
        mode: Mode::Enforce,
        // The default profile values (no lifted cap): wrk opens some 20,000 connections/s from
        // this one "device", and the cap counts live flows (a closed one gives its place back),
        // so it holds what a device holds, not how fast it works.
        max_flows: 0,
        fail_open: false,
        grace_s: wardgate_common::DEFAULT_GRACE_S,
    };
    let policy = PolicyEntry {
        policy_id: 1,
        profile: "throughput".into(),
        profile_version: 0,
        rules,
        sensitivity: Default::default(),
        detection: Default::default(),
    };
    let state = lower("throughput", 1, vec![device], vec![policy]).expect("fits the maps");
    lab::run_in(&ward.gw, move || {
        let _ = std::fs::remove_dir_all(&pin);
        let mut dp = Datapath::load(&pin).expect("load datapath");
        // `..Default::default()` keeps the bench building when the config gains fields.
        #[allow(clippy::needless_update)]
        let cfg = GatewayConfig {
            unknown_action: ACTION_DROP,
            non_ip_action: ACTION_DROP,
            event_rate: 20,
            event_burst: 50,
            ..Default::default()
        };
        dp.set_gateway_config(&cfg).unwrap();
        dp.set_management(&[]).unwrap();
        dp.apply(&state).unwrap();
        dp.attach(DEV_IF).expect("attach");
    });
}

/// The same allowlist as an nftables set of concatenations in a forward chain.
fn nft_ruleset(n: u32) -> String {
    let elements: Vec<String> = allowlist(n)
        .into_iter()
        .map(|(p, port)| {
            format!(
                "{DEVICE} . {}.{}.{}.{} . tcp . {port}",
                p[0], p[1], p[2], p[3]
            )
        })
        .collect();
    format!(
        "table inet wgbench {{\n\
         \tset allow4 {{\n\
         \t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service\n\
         \t\telements = {{ {} }}\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tiifname \"{DEV_IF}\" ip saddr . ip daddr . meta l4proto . th dport @allow4 accept\n\
         \t}}\n\
         }}\n",
        elements.join(",\n\t\t\t")
    )
}

fn nft(ns: &str, input: &str, args: &[&str]) {
    let mut child = ns_cmd(ns, 60, &[&["nft"], args].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// iperf3 from the device to the server: received Gbit/s.
fn iperf(ward: &Ward, streams: u32) -> f64 {
    let t = seconds().to_string();
    let p = streams.to_string();
    let port = IPERF_PORT.to_string();
    // The server takes one test at a time and needs a moment between tests: a few tries.
    let mut last = String::new();
    for _ in 0..5 {
        check_interrupted();
        let out = ns_cmd(
            &ward.dev,
            seconds() + 20,
            &[
                "iperf3",
                "-c",
                SERVER,
                "-p",
                &port,
                "-t",
                &t,
                "-P",
                &p,
                "-J",
                "--connect-timeout",
                "3000",
            ],
        )
        .output()
        .expect("run iperf3");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = json["end"]["sum_received"]["bits_per_second"].as_f64()
            && out.status.success()
        {
            return bps / 1e9;
        }
        last = format!(
            "{} {}",
            json["error"],
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("iperf3 -P {streams} failed: {last}");
}

/// wrk with `Connection: close`: completed requests (= new connections) per second.
fn wrk(ward: &Ward) -> f64 {
    let url = format!("http://{SERVER}:{HTTP_PORT}/");
    let d = format!("{}s", seconds());
    let out = ns_cmd(
        &ward.dev,
        seconds() + 20,
        &[
            "wrk",
            "-t",
            "2",
            "-c",
            "32",
            "-d",
            &d,
            "--timeout",
            "2s",
            "-H",
            "Connection: close",
            &url,
        ],
    )
    .output()
    .expect("run wrk");
    check_interrupted();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    if let Some(errors) = text.lines().find(|l| l.contains("Socket errors")) {
        eprintln!("  wrk: {}", errors.trim());
    }
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output: {text}"));
    assert!(rate > 0.0, "no connection completed: {text}");
    rate
}

/// A tiny HTTP/1.1 responder on the server: reads a request head, answers 200 with a 2-byte
/// body and `Connection: close`, closes. `HTTP_WORKERS` threads share the listener.
fn http_server(ward: &Ward, stop: Arc<AtomicBool>) {
    let addr: SocketAddr = format!("{SERVER}:{HTTP_PORT}").parse().unwrap();
    let listener = lab::run_in(&ward.srv, move || {
        TcpListener::bind(addr).expect("bind the HTTP responder")
    });
    // accept() honours SO_RCVTIMEO: the workers wake every 200 ms to check stop and the limit.
    set_timeout(&listener, Duration::from_millis(200));
    let deadline = Instant::now() + BENCH_LIMIT;
    for _ in 0..HTTP_WORKERS {
        let l = listener.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((s, _)) = l.accept() {
                    respond(s);
                }
            }
        });
    }
}

fn set_timeout(l: &TcpListener, d: Duration) {
    use std::os::fd::AsRawFd as _;
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // Safety: setsockopt on a socket we own, with a timeval of the right size.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVTIMEO on the listener");
}

fn respond(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut len = 0;
    // At most a few reads: a request head fits in one segment.
    for _ in 0..8 {
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            return;
        }
    }
}

/// The median of paired ratios with a distribution-free confidence interval of at least 95%
/// (order statistics k and n+1-k of the sorted ratios, k from the binomial(n, 1/2) tail; with
/// fewer than 6 rounds no such interval exists and the min-max is given, which covers
/// 1 - 2^(1-n)).
fn median_ci(ratios: &[f64]) -> (f64, f64, f64) {
    let mut v = ratios.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let (median, _, _) = median_min_max(&v);
    // P(Binomial(n, 1/2) <= j), exactly, in f64 (n <= 50).
    let tail = |j: usize| -> f64 {
        let mut c = 1.0f64;
        let mut sum = 0.0;
        for i in 0..=j {
            if i > 0 {
                c = c * (n + 1 - i) as f64 / i as f64;
            }
            sum += c;
        }
        sum / 2f64.powi(n as i32)
    };
    let mut k = 1;
    while k < n / 2 && 2.0 * tail(k) <= 0.05 {
        k += 1;
    }
    (median, v[k - 1], v[n - k])
}

/// How a row stands against a goal of `ratio >= target`, from the paired ratios.
fn verdict(med: f64, hi: f64, target: f64) -> &'static str {
    if med >= target {
        "met"
    } else if hi >= target {
        "within noise"
    } else {
        "missed"
    }
}

fn fmt_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Conns => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

/// `Ward::new`, which removes nothing if it fails half-way (it panics before a `Ward` exists to
/// drop): then remove this process's namespaces by name.
fn new_ward() -> Ward {
    match std::panic::catch_unwind(|| Ward::new("tput")) {
        Ok(w) => w,
        Err(e) => {
            let suffix = format!("-tput-{}", std::process::id() % 100_000);
            let list = Command::new("ip").args(["netns", "list"]).output();
            let list = list.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            for line in list.unwrap_or_default().lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with("wg") && name.ends_with(&suffix) {
                    let _ = Command::new("ip").args(["netns", "del", name]).output();
                }
            }
            std::panic::resume_unwind(e)
        }
    }
}

fn main() {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("throughput bench needs root (network namespaces, eBPF, nftables)");
        std::process::exit(1);
    }
    for tool in ["iperf3", "wrk", "nft", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} not found (cargo xtask setup installs it)");
    }
    // Safety: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let rounds = std::env::var("WG_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
        .clamp(3, 50);
    // Other work on the machine slows every configuration, but not necessarily alike.
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut lab = Lab {
        ward: Some(new_ward()),
        iperf_server: None,
        pins: Vec::new(),
        stop: stop.clone(),
    };
    let ward = lab.ward.as_ref().unwrap();
    // wrk opens tens of thousands of connections a second: let the device reuse ports.
    sysctl(&ward.dev, "net.ipv4.tcp_tw_reuse=1");
    sysctl(&ward.dev, "net.ipv4.ip_local_port_range=1024 65000");
    let iperf_server = ns_cmd(
        &ward.srv,
        BENCH_LIMIT.as_secs() as u32,
        &["iperf3", "-s", "-B", SERVER, "-p", &IPERF_PORT.to_string()],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start the iperf3 server");
    lab.iperf_server = Some(iperf_server);
    http_server(ward, stop.clone());
    std::thread::sleep(Duration::from_millis(500));

    let mut samples: BTreeMap<(usize, Metric), Vec<f64>> = BTreeMap::new();
    let mut pin_seq = 0;
    for round in 0..rounds {
        assert!(started.elapsed() < BENCH_LIMIT, "bench over its time limit");
        check_interrupted();
        for k in 0..CONFIGS.len() {
            let c = (k + round) % CONFIGS.len();
            let (filter, n) = CONFIGS[c];
            let ward = lab.ward.as_ref().unwrap();
            let mut pin = None;
            match filter {
                Filter::None => {}
                Filter::Wardgate => {
                    pin_seq += 1;
                    let p = PathBuf::from(format!(
                        "/sys/fs/bpf/wgtput-{}-{pin_seq}",
                        std::process::id()
                    ));
                    lab.pins.push(p.clone());
                    attach_wardgate(ward, p.clone(), n);
                    pin = Some(p);
                }
                Filter::Nftables => nft(&ward.gw, &nft_ruleset(n), &["-f", "-"]),
            }
            let ward = lab.ward.as_ref().unwrap();
            for m in METRICS {
                let v = match m {
                    Metric::Tcp1 => iperf(ward, 1),
                    Metric::Tcp8 => iperf(ward, 8),
                    Metric::Conns => wrk(ward),
                };
                samples.entry((c, m)).or_default().push(v);
            }
            match filter {
                Filter::None => {}
                Filter::Wardgate => {
                    let p = pin.unwrap();
                    std::fs::remove_dir_all(&p).expect("remove the pin root (detach)");
                    lab.pins.retain(|x| x != &p);
                }
                Filter::Nftables => nft(&ward.gw, "", &["delete", "table", "inet", "wgbench"]),
            }
            eprintln!(
                "round {}/{rounds}: {} {n} rules done ({:.0} s)",
                round + 1,
                filter.name(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    let find = |f: Filter, n: u32| CONFIGS.iter().position(|&x| x == (f, n)).unwrap();
    // Paired: each round measured every configuration back to back, so the ratio within a
    // round cancels what the machine's other work did to that round.
    let paired = |c: usize, base: usize, m: Metric| -> Vec<f64> {
        samples[&(c, m)]
            .iter()
            .zip(&samples[&(base, m)])
            .map(|(a, b)| a / b)
            .collect()
    };
    println!(
        "\n{rounds} interleaved rounds, {} s per measurement; median (min-max) over the rounds; \
         ratios are per-round paired ratios: median [confidence interval of at least 95%]. \
         Goal: wardgate >= nftables and >= 90% of no filter on every row. A row is met when \
         both medians reach the goal, within noise when a median misses it but its interval \
         reaches it, missed when the interval is wholly below.\n",
        seconds()
    );
    println!(
        "| config | rules | metric | median (min-max) | ratio to no filter | ratio to nftables | goal |"
    );
    println!("|---|---:|---|---:|---:|---:|---|");
    let (mut met, mut noise, mut missed) = (0, 0, 0);
    for m in METRICS {
        for (c, &(filter, n)) in CONFIGS.iter().enumerate() {
            let (med, lo, hi) = median_min_max(&samples[&(c, m)]);
            let none = find(Filter::None, 0);
            let (rules, to_base_s, to_nft_s, goal) = if filter == Filter::None {
                ("-".to_string(), "1.00".to_string(), "-".to_string(), "-")
            } else {
                let (b, blo, bhi) = median_ci(&paired(c, none, m));
                let to_base_s = format!("{b:.2} [{blo:.2}-{bhi:.2}]");
                if filter == Filter::Wardgate {
                    let (r, rlo, rhi) = median_ci(&paired(c, find(Filter::Nftables, n), m));
                    let v = match (verdict(b, bhi, 0.9), verdict(r, rhi, 1.0)) {
                        ("met", "met") => "met",
                        ("missed", _) | (_, "missed") => "missed",
                        _ => "within noise",
                    };
                    match v {
                        "met" => met += 1,
                        "missed" => missed += 1,
                        _ => noise += 1,
                    }
                    (
                        n.to_string(),
                        to_base_s,
                        format!("{r:.2} [{rlo:.2}-{rhi:.2}]"),
                        v,
                    )
                } else {
                    (n.to_string(), to_base_s, "-".to_string(), "-")
                }
            };
            println!(
                "| {} | {rules} | {} | {} ({}-{}) | {to_base_s} | {to_nft_s} | {goal} |",
                filter.name(),
                m.name(),
                fmt_value(m, med),
                fmt_value(m, lo),
                fmt_value(m, hi),
            );
        }
    }
    println!(
        "\nLoad average before the bench started: {}",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "Goal (wardgate >= nftables and >= 90% of no filter on every row): {} \
         (rows: {met} met, {noise} within noise, {missed} missed)",
        if missed + noise == 0 {
            "met"
        } else if missed == 0 {
            "not shown (within noise)"
        } else {
            "NOT met"
        }
    );
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
    drop(lab);
}
