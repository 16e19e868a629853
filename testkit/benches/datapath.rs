//! `cargo xtask bench datapath`: ns/packet of the real datapath through BPF_PROG_TEST_RUN for
//! new-allowed, established and denied packets, each next to its baseline program measured the
//! same way in the same run, for 10 / 1,000 / 100,000 rules and 10 / 10,000 devices.
//!
//! Two methods, because a repeated frame is only "new" once:
//! - `repeat`: one frame run 500,000 times in the kernel (steady-state paths: established,
//!   denied, and the trivial `wg_pass` baseline);
//! - `distinct`: 5,000 different frames run once each, the kernel timing each run (new flows,
//!   the floor program `wg_floor_ct_insert` = parse + one conntrack insert, and the trivial
//!   baseline measured the same way). Each run starts cache-cold and includes the kernel's timer
//!   overhead, so a ratio is only meaningful against a baseline of the same method.
//!
//! Interleaved: every row measures its subject and its baseline(s) alternately for 11 rounds
//! (A B, B A, A B, ... so neither always goes first), and prints the median of each with the
//! min-max spread, the ratio of the medians, and the range of the per-round ratios.
//! Interference on a shared machine hits both sides of a round alike, so the ratio holds where
//! absolute numbers do not. A new flow can only be measured once: each round uses 5,000 flows
//! of its own (source ports 1024..56024 over the 11 rounds), the floor the same source ports on
//! the next destination port. Needs root.
//!
//! Commit to commit: `WG_BENCH_BEFORE=<git rev>` (built here from a temporary worktree, cached
//! under the temp dir) or `WG_BENCH_BEFORE=<path to an eBPF object>` loads that object as a
//! second datapath, configured the same way, and measures its `wg_ingress` in the same rounds
//! on the same frames as this build's (interleaved with the subject and the baselines; its
//! floor runs too, so both conntrack maps fill alike); a last table gives both per path and
//! their ratio. The older object must have this agent's maps.

#[path = "datapath/dns.rs"]
mod datapath_dns;

use std::net::IpAddr;

use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::PacketBuilder;
use wardgate_agent::datapath::Datapath;
use wardgate_common::{GatewayConfig, program_names};
use wardgate_policy::{
    Direction, Mode, Proto,
    desired::{DeviceEntry, MacAddr, PolicyEntry, PortRange, Rule},
    lower::lower,
};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const REPEAT: u32 = 500_000;
/// New flows per round (11 rounds of distinct source ports must fit in 1024..65535).
const DISTINCT: u16 = 5_000;
/// Interleaved rounds per row.
const ROUNDS: u16 = 11;

fn peers() -> Vec<[u8; 4]> {
    // Documentation ranges only.
    let mut v = Vec::new();
    for net in [[198, 51, 100], [203, 0, 113], [192, 0, 2]] {
        for h in 1..=250u8 {
            v.push([net[0], net[1], net[2], h]);
        }
    }
    v
}

/// `n` rules: single ports on /32 peers, every 50th a port range, every 500th a /24.
fn rules(n: u32) -> Vec<Rule> {
    let peers = peers();
    (0..n)
        .map(|i| {
            let p = peers[i as usize % peers.len()];
            let port = 1024 + (i / peers.len() as u32) as u16;
            let (cidr, ports) = if i % 500 == 499 {
                (
                    format!("{}.{}.{}.0/24", p[0], p[1], p[2]),
                    PortRange {
                        lo: 60000,
                        hi: 60010,
                    },
                )
            } else if i % 50 == 49 {
                (
                    format!("{}.{}.{}.{}/32", p[0], p[1], p[2], p[3]),
                    PortRange {
                        lo: port,
                        hi: port + 7,
                    },
                )
            } else {
                (
                    format!("{}.{}.{}.{}/32", p[0], p[1], p[2], p[3]),
                    PortRange::single(port),
                )
            };
            Rule {
                rule_id: i + 1,
                name: format!("r{i}"),
                direction: Direction::FromDevice,
                proto: Proto::Tcp,
                peers: vec![cidr.parse().unwrap()],
                ports: Some(ports),
                idle_timeout_s: 600,
                inspect: false,
                app: None,
            }
        })
        .collect()
}

fn devices(n: u32) -> Vec<DeviceEntry> {
    // The bench opens far more flows per device than any medical device should (the default
    // cap is 8,192): lift the cap so new flows stay new-allowed; the budget check itself still
    // runs on every new flow. `default_cap_rows` measures at the default.
    devices_capped(n, 1_000_000)
}

/// `n` devices with `max_flows` (0 = the datapath's default, 8,192 live flows).
fn devices_capped(n: u32, max_flows: u32) -> Vec<DeviceEntry> {
    (0..n)
        .map(|i| {
            let addr: IpAddr = if i == 0 {
                "192.0.2.10".parse().unwrap()
            } else {
                format!("2001:db8:d::{:x}", i).parse().unwrap()
            };
            DeviceEntry {
                device_id: i + 1,
                name: format!("dev{i}"),
                addrs: vec![addr],
                mac: MacAddr(if i == 0 {
                    MAC
                } else {
                    [2, 0, 0, 1, (i >> 8) as u8, i as u8]
                }),
                policy_id: 1,
                max_flows,
                fail_open: false,
                grace_s: wardgate_common::DEFAULT_GRACE_S,
                mode: Mode::Enforce,
            }
        })
        .collect()
}

/// A segment between the device (192.0.2.10:`sport`) and `peer:dport`, either way, with
/// `seq`, ACK 1 (not on a SYN), and `payload`.
#[allow(clippy::too_many_arguments)]
fn segment(
    to_peer: bool,
    sport: u16,
    peer: [u8; 4],
    dport: u16,
    seq: u32,
    syn: bool,
    ack: bool,
    payload: &[u8],
) -> Vec<u8> {
    let gw = [2, 0, 0, 0, 0, 1];
    let b = if to_peer {
        PacketBuilder::ethernet2(MAC, gw).ipv4([192, 0, 2, 10], peer, 64)
    } else {
        PacketBuilder::ethernet2(gw, MAC).ipv4(peer, [192, 0, 2, 10], 64)
    };
    let (sp, dp) = if to_peer {
        (sport, dport)
    } else {
        (dport, sport)
    };
    let t = b.tcp(sp, dp, seq, 1000);
    let t = if syn { t.syn() } else { t };
    let t = if ack { t.ack(1) } else { t };
    let mut out = Vec::new();
    t.write(&mut out, payload).unwrap();
    out
}

/// The first bytes of an A-ASSOCIATE-RQ from `calling` to PACS (74 bytes of header and an
/// application context item; dcmtk's is ~200 bytes with its presentation contexts).
fn associate_rq(calling: &str) -> Vec<u8> {
    let ae = |s: &str| {
        let mut a = [b' '; 16];
        a[..s.len()].copy_from_slice(s.as_bytes());
        a
    };
    let mut body = vec![0x00, 0x01, 0x00, 0x00];
    body.extend(ae("PACS"));
    body.extend(ae(calling));
    body.extend([0u8; 32]);
    let ctx = b"1.2.840.10008.3.1.1.1";
    body.extend([0x10, 0x00, 0x00, ctx.len() as u8]);
    body.extend(ctx);
    let mut pdu = vec![0x01, 0x00];
    pdu.extend((body.len() as u32).to_be_bytes());
    pdu.extend(body);
    pdu
}

fn tcp_frame(sport: u16, dst: [u8; 4], dport: u16, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC, [2, 0, 0, 0, 0, 1]).ipv4([192, 0, 2, 10], dst, 64);
    let mut out = Vec::new();
    if syn {
        b.tcp(sport, dport, 1, 1000)
            .syn()
            .write(&mut out, &[])
            .unwrap();
    } else {
        b.tcp(sport, dport, 1, 1000)
            .ack(1)
            .write(&mut out, &[])
            .unwrap();
    }
    out
}

/// The eBPF toolchain of agent/build.rs, for building an older commit's object.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-15";

/// `WG_BENCH_BEFORE`: (label, object bytes) of the build to compare with, if any.
fn before_object() -> Option<(String, Vec<u8>)> {
    let spec = std::env::var("WG_BENCH_BEFORE")
        .ok()
        .filter(|s| !s.is_empty())?;
    let path = std::path::Path::new(&spec);
    if path.is_file() {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {spec}: {e}"));
        return Some((spec, bytes));
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let rev = git(&["rev-parse", "--short=12", &format!("{spec}^{{commit}}")]);
    let cache = std::env::temp_dir().join("wardgate-bench-before");
    let object = cache.join(format!("{rev}.o"));
    if !object.is_file() {
        std::fs::create_dir_all(&cache).unwrap();
        let src = cache.join(format!("src-{rev}"));
        let _ = std::fs::remove_dir_all(&src);
        git(&["worktree", "add", "--detach", src.to_str().unwrap(), &rev]);
        eprintln!(
            "building the eBPF object of {spec} ({rev}) in {}",
            src.display()
        );
        // As aya-build builds it for agent/build.rs, so only the source differs.
        let mut cmd = std::process::Command::new("cargo");
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if (k.starts_with("CARGO") && k != "CARGO_HOME") || k.starts_with("RUST") {
                cmd.env_remove(k);
            }
        }
        let status = cmd
            .arg(format!("+{EBPF_TOOLCHAIN}"))
            .args([
                "build",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .current_dir(src.join("ebpf"))
            .env("CARGO_TARGET_DIR", cache.join("target"))
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!(
                    "--cfg=bpf_target_arch=\"{}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
                    std::env::consts::ARCH
                ),
            )
            .status()
            .expect("run cargo");
        let built = cache.join("target/bpfel-unknown-none/release/wardgate");
        let copied = status.success() && std::fs::copy(&built, &object).is_ok();
        git(&["worktree", "remove", "--force", src.to_str().unwrap()]);
        assert!(copied, "building the eBPF object of {spec} failed");
    }
    let bytes = std::fs::read(&object).unwrap();
    Some((format!("{spec} ({rev})"), bytes))
}

/// One kernel run of `frame`, `REPEAT` times: (verdict, mean ns per run).
fn repeat(dp: &mut Datapath, prog: &'static str, frame: &[u8]) -> (u32, f64) {
    let r = dp
        .classifier(prog)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: REPEAT,
            ..Default::default()
        })
        .unwrap();
    (r.return_value, r.duration.as_nanos() as f64)
}

/// Each frame run once: (verdicts, mean ns per frame).
fn distinct(dp: &mut Datapath, prog: &'static str, frames: &[Vec<u8>]) -> (Vec<u32>, f64) {
    let p = dp.classifier(prog).unwrap();
    let mut total = 0u128;
    let mut verdicts = Vec::new();
    for f in frames {
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(f),
                repeat: 1,
                ..Default::default()
            })
            .unwrap();
        total += r.duration.as_nanos();
        verdicts.push(r.return_value);
    }
    (verdicts, total as f64 / frames.len() as f64)
}

fn libc_last_cpu() -> usize {
    // Safety: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize - 1
}

/// Per CPU from /proc/stat: (busy, steal, total) jiffies.
fn cpu_times() -> Vec<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            let steal = v.get(7).copied().unwrap_or(0);
            (total - idle, steal, total)
        })
        .collect()
}

/// What else the machine did while a configuration was measured.
struct Load {
    /// Busy share of the CPUs the bench is not pinned to, in percent.
    others_busy: f64,
    /// Time the hypervisor gave the bench's CPU to someone else, in percent.
    bench_steal: f64,
}

impl Load {
    fn between(a: &[(u64, u64, u64)], b: &[(u64, u64, u64)], bench_cpu: usize) -> Load {
        let (mut busy, mut total) = (0u64, 0u64);
        let mut bench_steal = 0.0;
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let dt = y.2.saturating_sub(x.2).max(1);
            if i == bench_cpu {
                bench_steal = 100.0 * y.1.saturating_sub(x.1) as f64 / dt as f64;
            } else {
                busy += y.0.saturating_sub(x.0);
                total += dt;
            }
        }
        Load {
            others_busy: 100.0 * busy as f64 / total.max(1) as f64,
            bench_steal,
        }
    }
}

/// Median and spread of one side of a row.
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(samples: &[f64]) -> Stat {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

impl std::fmt::Display for Stat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} ({:.1}-{:.1})", self.median, self.min, self.max)
    }
}

/// New flows, `ROUNDS` rounds of `per_round` each on distinct source ports (round `r` from
/// 1024 + r * per_round): every program on them, the floor on the same ports to `port + 1`
/// (other tuples, same conntrack map), in alternating order. Every frame must pass. Samples
/// (ns/frame) per program.
fn new_flow_rounds(
    dps: &mut [Datapath],
    progs: &[Prog],
    per_round: u16,
    peer: [u8; 4],
    port: u16,
) -> Vec<Vec<f64>> {
    let mut samples = vec![Vec::new(); progs.len()];
    for r in 0..ROUNDS {
        let sports = (0..per_round).map(|i| 1024 + r * per_round + i);
        let new: Vec<_> = sports
            .clone()
            .map(|s| tcp_frame(s, peer, port, true))
            .collect();
        let floor: Vec<_> = sports.map(|s| tcp_frame(s, peer, port + 1, true)).collect();
        for i in order(r, progs.len()) {
            let (dp, name) = progs[i];
            let frames = if name == program_names::FLOOR_CT_INSERT {
                &floor
            } else {
                &new
            };
            let (v, ns) = distinct(&mut dps[dp], name, frames);
            assert!(
                v.iter().all(|&x| x == 0),
                "{name} of datapath {dp}: every frame must pass"
            );
            samples[i].push(ns);
        }
    }
    samples
}

/// Round `r`'s order: even rounds run the programs as listed, odd rounds in reverse.
fn order(r: u16, n: usize) -> Vec<usize> {
    if r.is_multiple_of(2) {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

/// A program of one of the loaded datapaths (0: this build, 1: `WG_BENCH_BEFORE`).
type Prog = (usize, &'static str);

/// The programs alternately on the same repeated frame, `ROUNDS` times: samples per program.
/// Every `wg_ingress` must answer `verdict`.
fn interleaved_repeat(
    dps: &mut [Datapath],
    progs: &[Prog],
    frame: &[u8],
    verdict: u32,
) -> Vec<Vec<f64>> {
    let mut samples = vec![Vec::new(); progs.len()];
    for r in 0..ROUNDS {
        for i in order(r, progs.len()) {
            let (dp, name) = progs[i];
            let (v, ns) = repeat(&mut dps[dp], name, frame);
            if name == program_names::INGRESS {
                assert_eq!(v, verdict, "{name} of datapath {dp}: unexpected verdict");
            }
            samples[i].push(ns);
        }
    }
    samples
}

/// This build against `WG_BENCH_BEFORE`, one path of one configuration.
struct Versus {
    rules: u32,
    devices: u32,
    path: &'static str,
    method: &'static str,
    current: Stat,
    before: Stat,
    /// Current / before within each round.
    round_ratio: Stat,
}

struct Row {
    rules: u32,
    devices: u32,
    path: &'static str,
    method: &'static str,
    subject: Stat,
    baseline_name: &'static str,
    baseline: Stat,
    /// Subject / baseline within each round: how much the ratio itself moves.
    round_ratio: Stat,
}

/// A pin root removed on drop, also when the bench panics.
struct PinRoot(std::path::PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Row {
    fn ratio(&self) -> f64 {
        self.subject.median / self.baseline.median
    }
}

fn main() {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("datapath bench needs root (BPF_PROG_TEST_RUN)");
        std::process::exit(1);
    }
    let bench_cpu = libc_last_cpu();
    // One CPU: BPF_PROG_TEST_RUN runs on the caller's CPU, and per-CPU state (the flow cache,
    // conntrack's LRU lists) must not change under a measurement when the scheduler moves us.
    // Safety: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(bench_cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin the bench to one CPU"
        );
    }
    let before = before_object();
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    let mut versus = Vec::new();
    let mut loads = Vec::new();
    let mut generation = 0;
    // A fresh datapath (empty conntrack, fresh maps) per configuration: new-flow cost depends
    // on how full the conntrack LRU is, and that must not differ between rule counts.
    let fresh = |n: u32, object: Option<&[u8]>| {
        let which = if object.is_some() {
            "before"
        } else {
            "current"
        };
        let pin = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/wgbench-{}-{n}-{which}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&pin);
        let pin = PinRoot(pin);
        let mut dp = match object {
            Some(o) => Datapath::load_object(&pin.0, o).expect("load the WG_BENCH_BEFORE object"),
            None => Datapath::load(&pin.0).expect("load datapath"),
        };
        // `..Default::default()` keeps the bench building when the config gains fields.
        #[allow(clippy::needless_update)]
        let cfg = GatewayConfig {
            unknown_action: 0,
            non_ip_action: 0,
            event_rate: 20,
            event_burst: 50,
            ..Default::default()
        };
        dp.set_gateway_config(&cfg).unwrap();
        (pin, dp)
    };
    // WG_BENCH_QUICK=1 measures only the smallest configuration (for quick experiments).
    let quick = std::env::var_os("WG_BENCH_QUICK").is_some();
    // WG_BENCH_DNS=1 measures only the DNS-answer rows.
    if std::env::var_os("WG_BENCH_DNS").is_some() {
        dns_rows(&fresh);
        return;
    }
    let rule_counts: &[u32] = if quick { &[10] } else { &[10, 1_000, 100_000] };
    let device_counts: &[u32] = if quick { &[10] } else { &[10, 10_000] };
    for &n_rules in rule_counts {
        for &n_dev in device_counts {
            generation += 1;
            let (pin, dp) = fresh(generation, None);
            let mut pins = vec![pin];
            let mut dps = vec![dp];
            if let Some((_, object)) = &before {
                let (pin, dp) = fresh(generation, Some(object.as_slice()));
                pins.push(pin);
                dps.push(dp);
            }
            let rules = rules(n_rules);
            let policies = vec![PolicyEntry {
                policy_id: 1,
                profile: "bench".into(),
                profile_version: 0,
                rules: rules.clone(),
                sensitivity: Default::default(),
                detection: Default::default(),
            }];
            let state =
                lower("bench", generation, devices(n_dev), policies).expect("fits the maps");
            for dp in &mut dps {
                dp.apply(&state).unwrap();
            }
            // An allowed target: the first rule (a /32 peer, single port).
            let allowed = &rules[0];
            let IpAddr::V4(peer) = allowed.peers[0].addr() else {
                unreachable!()
            };
            let port = allowed.ports.unwrap().lo;
            for dp in &mut dps {
                let floor = dp.classifier(program_names::FLOOR_CT_INSERT).unwrap();
                if floor.fd().is_err() {
                    floor.load().unwrap();
                }
            }

            let cpu_before = cpu_times();
            // New flows: each round, 5,000 new flows through the datapath, the floor on the
            // same source ports to the next destination port (other tuples, same conntrack
            // map), and the trivial program on the first set, in alternating order.
            let mut progs: Vec<Prog> = vec![
                (0, program_names::INGRESS),
                (0, program_names::FLOOR_CT_INSERT),
                (0, program_names::PASS),
            ];
            // The older build's floor runs too, untimed in the tables but in the same order, so
            // its conntrack holds as many entries as this build's when its new flows insert.
            if dps.len() > 1 {
                progs.push((1, program_names::INGRESS));
                progs.push((1, program_names::FLOOR_CT_INSERT));
            }
            let samples = new_flow_rounds(&mut dps, &progs, DISTINCT, peer.octets(), port);
            let new_before = samples.get(3).cloned();
            let [new_s, floor_s, trivial_distinct] = [0, 1, 2].map(|i| samples[i].clone());

            // Steady state, repeated frames. The first new flow of round 0 is established now.
            let mut progs: Vec<Prog> = vec![(0, program_names::INGRESS), (0, program_names::PASS)];
            if dps.len() > 1 {
                progs.push((1, program_names::INGRESS));
            }
            let est = tcp_frame(1024, peer.octets(), port, false);
            let est_all = interleaved_repeat(&mut dps, &progs, &est, 0);
            let (est_s, trivial_est) = (&est_all[0], &est_all[1]);
            let denied = tcp_frame(9_999, [198, 51, 100, 1], 445, true);
            let deny_all = interleaved_repeat(&mut dps, &progs, &denied, 2);
            let (deny_s, trivial_deny) = (&deny_all[0], &deny_all[1]);
            if dps.len() > 1 {
                for (path, method, current, before) in [
                    ("established", "repeat", est_s, &est_all[2]),
                    ("denied", "repeat", deny_s, &deny_all[2]),
                    (
                        "new-allowed",
                        "distinct",
                        &new_s,
                        new_before.as_ref().unwrap(),
                    ),
                ] {
                    let per_round: Vec<f64> =
                        current.iter().zip(before).map(|(a, b)| a / b).collect();
                    versus.push(Versus {
                        rules: n_rules,
                        devices: n_dev,
                        path,
                        method,
                        current: stat(current),
                        before: stat(before),
                        round_ratio: stat(&per_round),
                    });
                }
            }

            for (path, method, subject, baseline_name, baseline) in [
                ("established", "repeat", est_s, "trivial", trivial_est),
                ("denied", "repeat", deny_s, "trivial", trivial_deny),
                ("new-allowed", "distinct", &new_s, "floor", &floor_s),
                (
                    "new-allowed",
                    "distinct",
                    &new_s,
                    "trivial",
                    &trivial_distinct,
                ),
                (
                    "floor: parse + conntrack insert",
                    "distinct",
                    &floor_s,
                    "trivial",
                    &trivial_distinct,
                ),
            ] {
                let per_round: Vec<f64> =
                    subject.iter().zip(baseline).map(|(a, b)| a / b).collect();
                rows.push(Row {
                    rules: n_rules,
                    devices: n_dev,
                    path,
                    method,
                    subject: stat(subject),
                    baseline_name,
                    baseline: stat(baseline),
                    round_ratio: stat(&per_round),
                });
            }
            let load = Load::between(&cpu_before, &cpu_times(), bench_cpu);
            eprintln!(
                "measured {n_rules} rules x {n_dev} devices ({:.0} s so far; other CPUs {:.0}% \
                 busy, steal on the bench CPU {:.1}%)",
                started.elapsed().as_secs_f64(),
                load.others_busy,
                load.bench_steal
            );
            loads.push((n_rules, n_dev, load));
            drop(dps);
            drop(pins);
        }
    }

    app_rows(&mut rows, &fresh);
    default_cap_rows(&mut rows, &fresh);

    println!(
        "\n{ROUNDS} interleaved rounds per row; ns/packet as median (min-max) over the rounds; \
         ratio = median / baseline median; per-round ratio = subject / baseline within each round, \
         median (min-max).\n"
    );
    println!(
        "Limit lifted: the devices' `conntrack.max_flows` is 1,000,000 here (default 8,192 live \
         flows). The new-flow rows open {} flows from one device that never close; at the \
         default the ones past 8,192 would be `DropFlowCap`, a refusal, not a new flow. Every \
         new flow still runs the budget check. The other rows are at the defaults, and the \
         `new-allowed, default cap` rows measure new flows at the default cap ({} a round, {} \
         in all, under it; the next flow past 8,192 was checked to be refused).\n",
        u32::from(ROUNDS) * u32::from(DISTINCT),
        AT_DEFAULT,
        u32::from(ROUNDS) * u32::from(AT_DEFAULT)
    );
    println!(
        "| rules | devices | path | method | ns/pkt | baseline | baseline ns/pkt | ratio of \
         medians | per-round ratio |"
    );
    println!("|---:|---:|---|---|---:|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2}x | {:.2}x ({:.2}-{:.2}) |",
            r.rules,
            r.devices,
            r.path,
            r.method,
            r.subject,
            r.baseline_name,
            r.baseline,
            r.ratio(),
            r.round_ratio.median,
            r.round_ratio.min,
            r.round_ratio.max
        );
    }
    // Interference: the ratios absorb load that slows both sides of a round alike, not load
    // (another core's cache traffic, steal) that slows memory-heavy paths more than `wg_pass`.
    println!("\n| rules | devices | other CPUs busy during the rows | steal on the bench CPU |");
    println!("|---:|---:|---:|---:|");
    for (r, d, l) in &loads {
        println!(
            "| {r} | {d} | {:.0}% | {:.1}% |",
            l.others_busy, l.bench_steal
        );
    }
    if let Some((label, _)) = &before {
        println!(
            "\nThis build against WG_BENCH_BEFORE={label}, measured in the same rounds on the same \
             frames; ratio = current median / before median; per-round ratio = current / before \
             within each round, median (min-max).\n"
        );
        println!(
            "| rules | devices | path | method | current ns/pkt | before ns/pkt | ratio of \
             medians | per-round ratio |"
        );
        println!("|---:|---:|---|---|---:|---:|---:|---:|");
        for v in &versus {
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.2}x | {:.2}x ({:.2}-{:.2}) |",
                v.rules,
                v.devices,
                v.path,
                v.method,
                v.current,
                v.before,
                v.current.median / v.before.median,
                v.round_ratio.median,
                v.round_ratio.min,
                v.round_ratio.max
            );
        }
    }
    if quick {
        return;
    }
    // Scaling: 100k rules against 10 rules, same device count and path. Configurations are
    // measured minutes apart, so the verdict compares each path's median relative to the
    // baseline median of its own rounds (which absorbs drift of the machine between them); the
    // change of the raw medians is printed beside it.
    println!(
        "\n| path | method | devices | median 10 rules | median 100k rules | raw change | \
         change relative to baseline |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut scaling_worst = 0.0f64;
    for (path, baseline_name) in [
        ("established", "trivial"),
        ("denied", "trivial"),
        ("new-allowed", "floor"),
    ] {
        for dev in [10, 10_000] {
            let get = |rules| {
                rows.iter()
                    .find(|r| {
                        r.rules == rules
                            && r.devices == dev
                            && r.path == path
                            && r.baseline_name == baseline_name
                    })
                    .unwrap()
            };
            let (small, big) = (get(10), get(100_000));
            let raw = big.subject.median / small.subject.median - 1.0;
            let change = big.ratio() / small.ratio() - 1.0;
            scaling_worst = scaling_worst.max(change.abs());
            println!(
                "| {path} | {} | {dev} | {:.1} | {:.1} | {:+.1}% | {:+.1}% (vs {baseline_name}) |",
                small.method,
                small.subject.median,
                big.subject.median,
                raw * 100.0,
                change * 100.0
            );
        }
    }
    // The targets, worst case over every configuration.
    let worst = |path: &str, baseline_name: &str| {
        rows.iter()
            .filter(|r| r.path == path && r.baseline_name == baseline_name)
            .map(|r| (r.ratio(), r.round_ratio.median))
            .fold((0.0, 0.0), |(a, b), (x, y)| {
                (f64::max(a, x), f64::max(b, y))
            })
    };
    println!(
        "\n| target | worst ratio of medians | worst median per-round ratio | met (ratio of \
         medians) |"
    );
    println!("|---|---:|---:|---|");
    for (name, ratio, limit) in [
        (
            "established <= 2x trivial (repeat)",
            worst("established", "trivial"),
            Some(2.0),
        ),
        (
            "new flow <= 1.5x floor (distinct)",
            worst("new-allowed", "floor"),
            Some(1.5),
        ),
        (
            "established packet of an app-checked flow <= 2x trivial (repeat)",
            worst("established, app-checked flow", "trivial"),
            Some(2.0),
        ),
        (
            "(reference: DICOM association checked vs inspected without app rule, distinct)",
            worst(
                "DICOM A-ASSOCIATE-RQ checked, allowed",
                "inspected, no app rule",
            ),
            None,
        ),
        (
            "(reference: new flow vs trivial, distinct)",
            worst("new-allowed", "trivial"),
            None,
        ),
        (
            "(reference: floor vs trivial, distinct)",
            worst("floor: parse + conntrack insert", "trivial"),
            None,
        ),
        (
            "(reference: denied vs trivial, repeat)",
            worst("denied", "trivial"),
            None,
        ),
    ] {
        let met = match limit {
            Some(l) if ratio.0 <= l => "yes",
            Some(_) => "no",
            None => "-",
        };
        println!("| {name} | {:.2}x | {:.2}x | {met} |", ratio.0, ratio.1);
    }
    let met = if scaling_worst <= 0.15 { "yes" } else { "no" };
    println!(
        "| 100k rules within 15% of 10 rules (every path, relative to baseline) | {:.1}% | - | {met} |",
        scaling_worst * 100.0
    );
    dns_rows(&fresh);
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
}

/// DNS answers held for `dns:` peers (last: it moves this thread to a namespace of its own).
fn dns_rows(fresh: &Fresh) {
    {
        let (pin, mut dp) = fresh(2_000, None);
        let policies = vec![PolicyEntry {
            policy_id: 1,
            profile: "bench".into(),
            profile_version: 0,
            rules: rules(10),
            sensitivity: Default::default(),
            detection: Default::default(),
        }];
        let state = lower("bench", 2_000, devices(10), policies).expect("fits the maps");
        datapath_dns::rows(&mut dp, &pin.0, state);
    }
}

/// Flows per round of the app-rule rows (each needs its handshake first, untimed).
const APP_FLOWS: u16 = 1_000;

/// Application rules (10 rules, 10 devices): the packet that carries an A-ASSOCIATE-RQ of a
/// rule with `calling_ae` (allowed, and refused: the reset built and redirected), against the
/// same packet of a flow whose rule is inspected without an app rule (the payload record both
/// pay) and the trivial program, each on fresh flows (distinct); and an established packet of
/// a checked flow (its payload budget spent: a flow-cache hit) against the trivial program
/// (repeat).
/// A fresh datapath for a configuration (`main`'s `fresh`).
type Fresh = dyn Fn(u32, Option<&[u8]>) -> (PinRoot, Datapath);

/// New flows per round at the default cap: the rounds' flows stay under 8,192 live flows.
const AT_DEFAULT: u16 = (wardgate_common::CT_DEFAULT_MAX_FLOWS / ROUNDS as u32) as u16;

/// The new-flow row at the defaults (what a user gets): the device keeps the default cap of
/// 8,192 live flows, so each round opens 744 new flows (8,184 in all, under the cap), against
/// the floor in the same rounds. Then the cap itself: the flows up to 8,192 pass, the next one
/// is refused (`DropFlowCap`, the device being enforced).
fn default_cap_rows(rows: &mut Vec<Row>, fresh: &Fresh) {
    let (_pin, mut dp) = fresh(3_000, None);
    let rules = rules(10);
    let policies = vec![PolicyEntry {
        policy_id: 1,
        profile: "bench".into(),
        profile_version: 0,
        rules: rules.clone(),
        sensitivity: Default::default(),
        detection: Default::default(),
    }];
    dp.apply(&lower("bench", 3_000, devices_capped(10, 0), policies).unwrap())
        .unwrap();
    let IpAddr::V4(peer) = rules[0].peers[0].addr() else {
        unreachable!()
    };
    let port = rules[0].ports.unwrap().lo;
    let floor = dp.classifier(program_names::FLOOR_CT_INSERT).unwrap();
    if floor.fd().is_err() {
        floor.load().unwrap();
    }
    let progs: [Prog; 3] = [
        (0, program_names::INGRESS),
        (0, program_names::FLOOR_CT_INSERT),
        (0, program_names::PASS),
    ];
    let samples = new_flow_rounds(
        std::slice::from_mut(&mut dp),
        &progs,
        AT_DEFAULT,
        peer.octets(),
        port,
    );
    // The cap: the places left pass, the one after is refused.
    let opened = u32::from(ROUNDS) * u32::from(AT_DEFAULT);
    let left = (wardgate_common::CT_DEFAULT_MAX_FLOWS - opened) as u16;
    let base = 1024 + ROUNDS * AT_DEFAULT;
    let last: Vec<_> = (0..=left)
        .map(|i| tcp_frame(base + i, peer.octets(), port, true))
        .collect();
    let (v, _) = distinct(&mut dp, program_names::INGRESS, &last);
    assert!(
        v[..usize::from(left)].iter().all(|&x| x == 0) && v[usize::from(left)] != 0,
        "at the default cap, flows up to 8,192 pass and the next is refused: {v:?}"
    );
    let mut push = |baseline_name, subject: &[f64], baseline: &[f64]| {
        let per_round: Vec<f64> = subject.iter().zip(baseline).map(|(a, b)| a / b).collect();
        rows.push(Row {
            rules: 10,
            devices: 10,
            path: "new-allowed, default cap",
            method: "distinct",
            subject: stat(subject),
            baseline_name,
            baseline: stat(baseline),
            round_ratio: stat(&per_round),
        });
    };
    push("floor", &samples[0], &samples[1]);
    push("trivial", &samples[0], &samples[2]);
}

fn app_rows(rows: &mut Vec<Row>, fresh: &Fresh) {
    use wardgate_policy::desired::AppRule;
    let (_pin, mut dp) = fresh(1_000, None);
    let mut rules = rules(10);
    // Rule 2 (peer 198.51.100.2:1024): DICOM, calling AE MODALITY1. Rule 3 (.3:1024): inspected
    // only.
    rules[1].inspect = true;
    rules[1].app = Some(AppRule::Dicom {
        calling_ae: vec!["MODALITY1".into()],
        called_ae: Vec::new(),
    });
    rules[2].inspect = true;
    let policies = vec![PolicyEntry {
        policy_id: 1,
        profile: "bench".into(),
        profile_version: 0,
        rules: rules.clone(),
        sensitivity: Default::default(),
        detection: Default::default(),
    }];
    dp.apply(&lower("bench", 1_000, devices(10), policies).unwrap())
        .unwrap();
    let peer = |r: &Rule| match r.peers[0].addr() {
        IpAddr::V4(a) => (a.octets(), r.ports.unwrap().lo),
        IpAddr::V6(_) => unreachable!(),
    };
    let (checked, port) = peer(&rules[1]);
    let (plain, plain_port) = peer(&rules[2]);
    let ok = associate_rq("MODALITY1");
    let bad = associate_rq("INTRUDER");
    // Opens `n` flows from `base` (SYN, SYN-ACK, ACK) and returns their first data segments.
    let open = |dp: &mut Datapath, base: u16, to: [u8; 4], dport: u16, rq: &[u8]| {
        let mut firsts = Vec::new();
        for i in 0..APP_FLOWS {
            let sport = base + i;
            let syn = segment(true, sport, to, dport, 0, true, false, &[]);
            let syn_ack = segment(false, sport, to, dport, 4999, true, true, &[]);
            let ack = segment(true, sport, to, dport, 1, false, true, &[]);
            assert_eq!(repeat1(dp, program_names::INGRESS, &syn), 0, "SYN");
            assert_eq!(repeat1(dp, program_names::EGRESS, &syn_ack), 0, "SYN-ACK");
            assert_eq!(repeat1(dp, program_names::INGRESS, &ack), 0, "ACK");
            firsts.push(segment(true, sport, to, dport, 1, false, true, rq));
        }
        firsts
    };
    let mut samples = vec![Vec::new(); 4];
    for r in 0..ROUNDS {
        let base = 1024 + r * APP_FLOWS;
        let allowed = open(&mut dp, base, checked, port, &ok);
        let refused = open(&mut dp, base + ROUNDS * APP_FLOWS, checked, port, &bad);
        let inspected = open(&mut dp, base, plain, plain_port, &ok);
        for i in order(r, 4) {
            let (frames, want, prog) = match i {
                0 => (&allowed, 0, program_names::INGRESS),
                1 => (&refused, 7, program_names::INGRESS),
                2 => (&inspected, 0, program_names::INGRESS),
                _ => (&allowed, 0, program_names::PASS),
            };
            let (v, ns) = distinct(&mut dp, prog, frames);
            if prog == program_names::INGRESS {
                assert!(v.iter().all(|&x| x == want), "app rows: verdict {want}");
            }
            samples[i].push(ns);
        }
    }
    // An established packet of a checked flow: past `INSPECT_MAX_PACKETS` (its payload budget
    // dropped even where the record buckets, spent by the rounds, refused its records), then
    // on the flow cache.
    let sport = 1024;
    let mut seq = 1 + ok.len() as u32;
    for k in 0..10 {
        let back = segment(
            false,
            sport,
            checked,
            port,
            5000 + k * 10,
            false,
            true,
            &[0; 10],
        );
        assert_eq!(repeat1(&mut dp, program_names::EGRESS, &back), 0);
        let out = segment(true, sport, checked, port, seq, false, true, &[4; 100]);
        assert_eq!(repeat1(&mut dp, program_names::INGRESS, &out), 0);
        seq += 100;
    }
    let est = segment(true, sport, checked, port, seq, false, true, &[4; 100]);
    let progs: Vec<Prog> = vec![(0, program_names::INGRESS), (0, program_names::PASS)];
    let est_all = interleaved_repeat(std::slice::from_mut(&mut dp), &progs, &est, 0);
    let mut push = |path, method, subject: &[f64], baseline_name, baseline: &[f64]| {
        let per_round: Vec<f64> = subject.iter().zip(baseline).map(|(a, b)| a / b).collect();
        rows.push(Row {
            rules: 10,
            devices: 10,
            path,
            method,
            subject: stat(subject),
            baseline_name,
            baseline: stat(baseline),
            round_ratio: stat(&per_round),
        });
    };
    let [allowed, refused, inspected, trivial] = [0, 1, 2, 3].map(|i| samples[i].clone());
    push(
        "DICOM A-ASSOCIATE-RQ checked, allowed",
        "distinct",
        &allowed,
        "inspected, no app rule",
        &inspected,
    );
    push(
        "DICOM A-ASSOCIATE-RQ checked, allowed",
        "distinct",
        &allowed,
        "trivial",
        &trivial,
    );
    push(
        "DICOM A-ASSOCIATE-RQ checked, refused (RST built)",
        "distinct",
        &refused,
        "inspected, no app rule",
        &inspected,
    );
    push(
        "established, app-checked flow",
        "repeat",
        &est_all[0],
        "trivial",
        &est_all[1],
    );
}

/// One run of `frame`: the verdict.
fn repeat1(dp: &mut Datapath, prog: &'static str, frame: &[u8]) -> u32 {
    dp.classifier(prog)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        })
        .unwrap()
        .return_value
}
