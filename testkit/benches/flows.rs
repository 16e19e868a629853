//! `cargo xtask bench flows`: live flow records through a gateway namespace.
//!
//! 1. New flows per second: the real agent binary in the gateway namespace, the device in learn
//!    mode (every flow recorded), UDP datagrams from the device each to a new (address, port) of
//!    the server's /24, paced at 20,000/s and then as fast as one sender goes, 2 s each. Per run:
//!    datagrams sent, new conntrack entries the datapath made (`PassLearn` packets), flow
//!    records the agent kept (its live table's `opened`), records lost to a full ring
//!    (`WG_FLOWLOST_V1`), and kept / made.
//! 2. The agent's resident memory after start, without baselines and holding 10,000 devices'
//!    baselines (`detection: {baselines: ...}`, made here from synthetic flow records with the
//!    analysis crate's builder), the two started alternately (A B, B A, A B): VmRSS once it
//!    holds still after the policy is active, VmHWM (the peak, so the load's), and the difference
//!    per device. `WG_BENCH_AGENT_BEFORE=PATH` adds a third side in the same alternation: that
//!    agent binary (an older build) holding the same baselines.
//! 3. What flow recording costs the datapath's established path (a flow cache hit, as in
//!    `bench datapath`): BPF_PROG_TEST_RUN of one established TCP packet, 500,000 times, with
//!    recording on (`recording.enabled`, the default) and off, interleaved (A B, B A, ...) over
//!    11 rounds on one pinned CPU. A cache slot takes the switch when it is filled, so each side
//!    has its own flow, established while the switch was in its position.
//!
//! Needs root. Prints tables. `WG_BENCH_ONLY=memory` runs only section 2 (seconds),
//! `WG_BENCH_ONLY=recording` only section 3.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use wardgate_testkit::stats::median_min_max;

use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::PacketBuilder;
use wardgate_agent::datapath::{Datapath, pinned};
use wardgate_analysis::{
    FlowRecord,
    baseline::{self, Groups, Limits, Window},
    flow::{DeviceRef, FlowDirection, TcpOutcome},
};
use wardgate_common::{GatewayConfig, Reason, program_names};
use wardgate_policy::{
    Mode,
    desired::{DeviceEntry, MacAddr, PolicyEntry},
    lower::lower,
};
use wardgate_testkit::ward::{self as lab, DEV_IF, Ward};

const DEVICE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const RUN: Duration = Duration::from_secs(2);
const BASELINE_DEVICES: u32 = 10_000;
/// Agent starts per side for the memory table.
const MEM_ROUNDS: usize = 3;
/// Established-path runs: packets per kernel run and interleaved rounds.
const REPEAT: u32 = 500_000;
const ROUNDS: usize = 11;

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(ward: &Ward, dir: &Path, pin: &Path, baselines: Option<&Path>) -> Agent {
        Agent::start_bin(&agent_bin(), ward, dir, pin, baselines)
    }

    fn start_bin(
        bin: &Path,
        ward: &Ward,
        dir: &Path,
        pin: &Path,
        baselines: Option<&Path>,
    ) -> Agent {
        let config = dir.join("agent.yaml");
        let mut text = format!(
            "interfaces: [{DEV_IF}]\npin_root: {}\ndesired_state: {}\n",
            pin.display(),
            dir.join("desired.json").display()
        );
        if let Some(b) = baselines {
            text.push_str(&format!("detection: {{baselines: {}}}\n", b.display()));
        }
        std::fs::write(&config, text).unwrap();
        let log = dir.join(format!("agent-{}.log", baselines.is_some()));
        let child = Command::new(bin)
            .args(["--netns", &ward.gw, "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start agent");
        let a = Agent { child, log };
        a.wait_for("active policy generation", Duration::from_secs(60));
        a
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent never logged `{needle}`:\n{}", self.log_text());
    }

    /// The last `live flow table` line's (opened, lost).
    fn table(&self) -> (u64, u64) {
        let text = self.log_text();
        let Some(line) = text.lines().rev().find(|l| l.contains("live flow table")) else {
            return (0, 0);
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.trim_matches('"').parse().ok())
                .unwrap_or(0)
        };
        (field("opened"), field("lost"))
    }

    /// Waits until the table's counts stop moving (two report periods), bounded.
    fn settled(&self) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = self.table();
        loop {
            std::thread::sleep(
                wardgate_agent::flows::REPORT_EVERY * 2 + Duration::from_millis(200),
            );
            let now = self.table();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// VmRSS once it holds still (1 s within 0.1 MiB; the baselines load after the policy is
    /// active), bounded.
    fn settled_rss(&self) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = self.status_mib("VmRSS");
        let mut still = 0;
        while still < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.status_mib("VmRSS");
            still = if (now - last).abs() < 0.1 {
                still + 1
            } else {
                0
            };
            last = now;
        }
        last
    }

    /// A `/proc/PID/status` size (`VmRSS`, `VmHWM`) in MiB.
    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        kb / 1024.0
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The device alone, learning (every flow tracked and recorded), its flow cap lifted: a load
/// generator opens far more flows than any medical device should.
fn write_desired(dir: &Path) {
    let dev = DeviceEntry {
        device_id: 1,
        name: "device".into(),
        addrs: vec!["192.0.2.10".parse().unwrap()],
        mac: MacAddr(DEVICE_MAC),
        policy_id: 1,
        mode: Mode::Learn,
        max_flows: 1_000_000,
        fail_open: false,
        grace_s: wardgate_common::DEFAULT_GRACE_S,
    };
    let policy = PolicyEntry {
        policy_id: 1,
        profile: "bench".into(),
        profile_version: 1,
        rules: Vec::new(),
        sensitivity: Default::default(),
        detection: Default::default(),
    };
    let state = lower("bench", 1, vec![dev], vec![policy]).unwrap();
    std::fs::write(dir.join("desired.json"), state.to_json()).unwrap();
}

fn new_flows_made(pin: &Path) -> u64 {
    pinned::status(pin)
        .unwrap()
        .reasons
        .get(&Reason::PassLearn)
        .copied()
        .unwrap_or(0)
}

/// Sends one datagram to each next destination for `RUN`, at `rate` per second (0: as fast as
/// it goes). Destinations walk 198.51.100.2-254 x ports from `*next` on, so every datagram is
/// a new flow. Returns (sent, seconds taken).
fn send(ward: &Ward, rate: u32, first: u32) -> (u64, f64) {
    lab::run_in(&ward.dev, move || {
        let s = UdpSocket::bind("192.0.2.10:0").unwrap();
        s.set_nonblocking(true).unwrap();
        let started = Instant::now();
        let mut n = 0u64;
        let payload = [0u8; 32];
        while started.elapsed() < RUN {
            if rate > 0 {
                let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
                if n >= due {
                    std::hint::spin_loop();
                    continue;
                }
            }
            let i = first + n as u32;
            let host = 2 + (i / 60_000) % 253;
            let port = 1024 + (i % 60_000) as u16;
            let to = SocketAddr::from((Ipv4Addr::new(198, 51, 100, host as u8), port));
            if s.send_to(&payload, to).is_ok() {
                n += 1;
            }
        }
        (n, started.elapsed().as_secs_f64())
    })
}

/// 10,000 devices' baselines from synthetic records: each device 20 peers x 2 services over a
/// day, as a ward's devices look.
fn baselines_file(dir: &Path) -> (PathBuf, u64) {
    const H: u64 = 3_600_000_000_000;
    let mut records = Vec::new();
    for d in 0..BASELINE_DEVICES {
        let device = DeviceRef {
            name: format!("dev-{d:05}"),
            id: Some(d + 1),
            mac: None,
        };
        let addr = Ipv4Addr::from(0x0a00_0000 + d).into();
        for p in 0..20u32 {
            for hour in 0..4u64 {
                let t = hour * 6 * H + u64::from(p) * 1_000_000_000;
                records.push(FlowRecord {
                    device: device.clone(),
                    direction: FlowDirection::Opened,
                    device_addr: addr,
                    device_port: 40000,
                    peer: Ipv4Addr::new(198, 51, 100, (p + 1) as u8).into(),
                    peer_port: if p % 2 == 0 { 104 } else { 2575 },
                    proto: 6,
                    port: if p % 2 == 0 { 104 } else { 2575 },
                    icmp_type: None,
                    vlan: None,
                    packets_out: 10,
                    bytes_out: 4000,
                    packets_in: 8,
                    bytes_in: 1200,
                    first_seen_ns: t,
                    last_seen_ns: t + 1_000_000_000,
                    tcp: Some(TcpOutcome::Established),
                    outcome: wardgate_analysis::FlowOutcome::Established,
                    rule: None,
                    app: None,
                    tcp_flags: None,
                    peer_name: None,
                    continuation: false,
                });
            }
        }
    }
    let window = Window {
        start_ns: 0,
        end_ns: 24 * H,
    };
    let list = baseline::baselines(&records, &Groups::default(), &Limits::default(), window);
    assert_eq!(list.len(), BASELINE_DEVICES as usize);
    let path = dir.join("baselines.json");
    std::fs::write(&path, serde_json::to_vec(&list).unwrap()).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    (path, size)
}

fn tcp_frame(sport: u16, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(DEVICE_MAC, [2, 0, 0, 0, 0, 1]).ipv4(
        [192, 0, 2, 10],
        [198, 51, 100, 10],
        64,
    );
    let mut out = Vec::new();
    let t = b.tcp(sport, 8080, 1, 1000);
    let t = if syn { t.syn() } else { t.ack(1) };
    t.write(&mut out, &[]).unwrap();
    out
}

fn test_run(dp: &mut Datapath, frame: &[u8], repeat: u32) -> (u32, f64) {
    let r = dp
        .classifier(program_names::INGRESS)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .unwrap();
    (r.return_value, r.duration.as_nanos() as f64)
}

/// 3. The established path with recording on and off, interleaved on one pinned CPU.
fn recording_cost(dir: &Path) {
    // Safety: a zeroed cpu_set_t with one bit set, for this thread (per-CPU flow cache).
    unsafe {
        let cpu = libc::sched_getcpu().max(0) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin the bench to one CPU"
        );
    }
    let pin = PathBuf::from(format!("/sys/fs/bpf/wgbench-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pin);
    let mut dp = Datapath::load(&pin).expect("load datapath");
    write_desired(dir);
    let text = std::fs::read_to_string(dir.join("desired.json")).unwrap();
    dp.apply(&wardgate_policy::DesiredState::from_json(&text).unwrap())
        .unwrap();
    let config = |off: bool| GatewayConfig {
        event_rate: 20,
        event_burst: 50,
        recording_off: u32::from(off),
        ..Default::default()
    };
    // Each side's flow, opened and established under its own switch position.
    let flows = [(false, 41_000u16), (true, 41_001u16)];
    for (off, sport) in flows {
        dp.set_gateway_config(&config(off)).unwrap();
        assert_eq!(test_run(&mut dp, &tcp_frame(sport, true), 1).0, 0);
        assert_eq!(test_run(&mut dp, &tcp_frame(sport, false), 1).0, 0);
    }
    let mut samples = [Vec::new(), Vec::new()];
    for r in 0..ROUNDS {
        let order: Vec<usize> = if r % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for i in order {
            let (off, sport) = flows[i];
            dp.set_gateway_config(&config(off)).unwrap();
            let (verdict, ns) = test_run(&mut dp, &tcp_frame(sport, false), REPEAT);
            assert_eq!(verdict, 0, "established packets pass");
            samples[i].push(ns);
        }
    }
    drop(dp);
    let _ = std::fs::remove_dir_all(&pin);
    let (on, off) = (median_min_max(&samples[0]), median_min_max(&samples[1]));
    let per_round: Vec<f64> = samples[0]
        .iter()
        .zip(&samples[1])
        .map(|(a, b)| a / b)
        .collect();
    let pr = median_min_max(&per_round);
    let ratio = on.0 / off.0;
    println!(
        "\nestablished path (flow cache hit) with flow recording on and off: BPF_PROG_TEST_RUN, \
         {REPEAT} packets per run, {ROUNDS} interleaved rounds, ns/packet median (min-max)"
    );
    println!("| recording on | recording off | on / off (medians) | per-round on / off | goal |");
    println!("|---:|---:|---:|---:|---|");
    println!(
        "| {:.1} ({:.1}-{:.1}) | {:.1} ({:.1}-{:.1}) | {ratio:.3}x | {:.3}x ({:.3}-{:.3}) | <= 1.10x: {} |",
        on.0,
        on.1,
        on.2,
        off.0,
        off.1,
        off.2,
        pr.0,
        pr.1,
        pr.2,
        if ratio <= 1.10 { "met" } else { "not met" }
    );
}

fn main() {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("flows bench needs root (network namespaces, eBPF)");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let only = std::env::var("WG_BENCH_ONLY").unwrap_or_default();
    if only == "recording" {
        recording_cost(dir.path());
        return;
    }
    let pin = PathBuf::from(format!("/sys/fs/bpf/wgbench-flows-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pin);
    let ward = Ward::new("flwb");
    write_desired(dir.path());
    if only == "memory" {
        memory(&ward, dir.path(), &pin);
        let _ = std::fs::remove_dir_all(&pin);
        return;
    }

    // 1. New flows per second.
    let agent = Agent::start(&ward, dir.path(), &pin, None);
    println!(
        "\nnew flows through the gateway namespace (device learning, UDP, {} s per run)",
        RUN.as_secs()
    );
    println!(
        "| target flows/s | sent | sent/s | entries made (datapath) | records kept (agent) | lost (ring full) | kept / made |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut first = 0u32;
    for rate in [20_000u32, 0] {
        let made0 = new_flows_made(&pin);
        let (kept0, lost0) = agent.table();
        let (sent, secs) = send(&ward, rate, first);
        first += sent as u32;
        let (kept1, lost1) = agent.settled();
        let made = new_flows_made(&pin) - made0;
        let kept = kept1 - kept0;
        println!(
            "| {} | {sent} | {:.0} | {made} | {kept} | {} | {:.4} |",
            if rate == 0 {
                "max".to_string()
            } else {
                rate.to_string()
            },
            sent as f64 / secs,
            lost1 - lost0,
            kept as f64 / made.max(1) as f64
        );
    }
    drop(agent);

    // 2. Resident memory holding 10,000 devices' baselines.
    memory(&ward, dir.path(), &pin);
    let _ = std::fs::remove_dir_all(&pin);

    // 3. What recording costs the established path (the agent is gone: nothing else runs).
    recording_cost(dir.path());
}

/// 2. The agent's memory without baselines and holding 10,000 devices', started alternately.
fn memory(ward: &Ward, dir: &Path, pin: &Path) {
    let (path, size) = baselines_file(dir);
    let held = format!(
        "{BASELINE_DEVICES} devices' baselines ({:.1} MiB of JSON)",
        size as f64 / 1048576.0
    );
    // (row label, agent binary, with baselines, goal)
    let mut sides = vec![
        ("no baselines".to_string(), agent_bin(), false, ""),
        (held.clone(), agent_bin(), true, "VmRSS < 64"),
    ];
    if let Ok(before) = std::env::var("WG_BENCH_AGENT_BEFORE") {
        sides.push((format!("{held}, agent {before}"), before.into(), true, ""));
    }
    // Per side, (VmRSS, VmHWM) of each start.
    let mut rss = vec![Vec::new(); sides.len()];
    let mut hwm = vec![Vec::new(); sides.len()];
    for round in 0..MEM_ROUNDS {
        for i in 0..sides.len() {
            // Rotated each round: A B C, B C A, C A B.
            let s = (round + i) % sides.len();
            let (_, bin, with, _) = &sides[s];
            let agent = Agent::start_bin(bin, ward, dir, pin, with.then_some(path.as_path()));
            rss[s].push(agent.settled_rss());
            hwm[s].push(agent.status_mib("VmHWM"));
        }
    }
    let cell = |v: &[f64]| {
        let (m, lo, hi) = median_min_max(v);
        format!("{m:.1} ({lo:.1}-{hi:.1})")
    };
    println!("\nagent memory after start, {MEM_ROUNDS} starts each, alternated (median (min-max))");
    println!("| agent | VmRSS MiB | peak VmHWM MiB | goal |");
    println!("|---|---|---|---|");
    for (s, (label, _, _, goal)) in sides.iter().enumerate() {
        println!(
            "| {label} | {} | {} | {goal} |",
            cell(&rss[s]),
            cell(&hwm[s])
        );
    }
    let per_device = (median_min_max(&rss[1]).0 - median_min_max(&rss[0]).0) * 1048576.0
        / f64::from(BASELINE_DEVICES);
    println!(
        "resident bytes per device's baseline (VmRSS difference of the medians / {BASELINE_DEVICES}): {per_device:.0}"
    );
}

/// The release `wardgate-agent` beside this bench's directory (`target/release/deps/..`);
/// `cargo xtask bench flows` builds it first.
fn agent_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/release/deps")
        .join("wardgate-agent");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --release -p wardgate-agent` (cargo xtask bench flows does)",
        bin.display()
    );
    bin
}
