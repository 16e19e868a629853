//! `cargo xtask bench learn`: packets/s of `wardgate-agent learn` next to `tshark -q -z conv,ip`
//! and `ndpiReader` on one generated ward capture, interleaved A B C A B C ... for
//! WG_BENCH_ROUNDS rounds (default 5), with each run's peak RSS from wait4's rusage and the
//! baseline bytes per device from learn's output.

mod capture;
mod measure;

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};

use crate::cmd;
use measure::Run;

/// No single run may take longer than this (WG_BENCH_TIMEOUT seconds).
const RUN_LIMIT: Duration = Duration::from_secs(300);

struct Tool {
    name: &'static str,
    does: &'static str,
    cmd: Box<dyn Fn() -> Command>,
}

pub fn run() -> anyhow::Result<()> {
    let rounds: usize = env_num("WG_BENCH_ROUNDS", 5)?;
    if rounds < 1 {
        bail!("WG_BENCH_ROUNDS must be at least 1");
    }
    let limit = Duration::from_secs(env_num("WG_BENCH_TIMEOUT", RUN_LIMIT.as_secs())?);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    cmd::run(cmd::cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "wardgate-agent",
        "--bin",
        "wardgate-agent",
    ]))?;
    let agent = root.join("target/release/wardgate-agent");
    let dir = root.join("target/bench-learn");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pcap = dir.join("ward-1000.pcap");
    let out = dir.join("learn-out");

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before the bench: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = std::time::Instant::now();
    let g = capture::write(&pcap, capture::DEVICES)?;
    eprintln!(
        "bench learn: generated {} ({} packets, {} sessions, {} devices, {:.1} MB, 26 h) in {:.1} s",
        pcap.display(),
        g.packets,
        g.sessions,
        capture::DEVICES,
        g.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    if g.packets < 1_000_000 {
        bail!("the generated capture has only {} packets", g.packets);
    }

    let tools = [
        Tool {
            name: "learn",
            does: "wardgate-agent learn: decode, flow table, baselines, DICOM/HL7 identity; writes flows.jsonl and baselines.json",
            cmd: {
                let (agent, pcap, out) = (agent.clone(), pcap.clone(), out.clone());
                Box::new(move || {
                    let mut c = Command::new(&agent);
                    c.arg("learn")
                        .arg("--pcap")
                        .arg(&pcap)
                        .arg("--out")
                        .arg(&out);
                    c
                })
            },
        },
        Tool {
            name: "tshark",
            does: "tshark -n -q -z conv,ip: IPv4 conversation statistics (dissects every packet)",
            cmd: {
                let pcap = pcap.clone();
                Box::new(move || {
                    let mut c = Command::new("tshark");
                    c.args(["-n", "-q", "-z", "conv,ip", "-r"]).arg(&pcap);
                    c
                })
            },
        },
        Tool {
            name: "ndpiReader",
            does: "ndpiReader -q: nDPI flow table and deep packet inspection of each flow's first packets",
            cmd: {
                let pcap = pcap.clone();
                Box::new(move || {
                    let mut c = Command::new("ndpiReader");
                    c.args(["-q", "-i"]).arg(&pcap);
                    c
                })
            },
        },
    ];

    let mut runs: Vec<Vec<Run>> = tools.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (tool, runs) in tools.iter().zip(&mut runs) {
            let log = dir.join(format!("{}.out", tool.name));
            let r = measure::run((tool.cmd)(), &log, limit)
                .with_context(|| format!("round {round}: {}", tool.name))?;
            eprintln!(
                "bench learn: round {round}/{rounds} {:<10} {:>7.2} s wall, {:>6.2} s cpu, {:>7.1} MiB peak RSS",
                tool.name,
                r.wall.as_secs_f64(),
                r.cpu.as_secs_f64(),
                r.max_rss_kib as f64 / 1024.0
            );
            runs.push(r);
        }
    }

    let learned = read_learned(&out)?;
    if learned.frames != g.packets {
        bail!(
            "learn read {} frames of the {} generated",
            learned.frames,
            g.packets
        );
    }
    print_table(&tools, &runs, g.packets, rounds);
    println!();
    println!(
        "learn found {} devices, {} flow records; baseline bytes per device (compact JSON): median {}, max {}",
        learned.devices, learned.records, learned.baseline_median, learned.baseline_max
    );
    println!(
        "capture: {} packets, {:.1} MB, {} devices with medical OUIs, 26 h; outputs of the last round in {}",
        g.packets,
        g.bytes as f64 / 1e6,
        capture::DEVICES,
        dir.display()
    );
    Ok(())
}

fn print_table(tools: &[Tool], runs: &[Vec<Run>], packets: u64, rounds: usize) {
    let med = |rs: &[Run]| measure::median(rs.iter().map(|r| r.wall.as_secs_f64()).collect());
    let learn_wall = med(&runs[0]);
    println!();
    println!("bench learn: {packets} packets, {rounds} rounds interleaved; median (min-max)");
    println!();
    println!(
        "| tool | what it does on the file | packets/s | wall s | CPU s | peak RSS MiB | learn speed vs it |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (tool, rs) in tools.iter().zip(runs) {
        let walls: Vec<f64> = rs.iter().map(|r| r.wall.as_secs_f64()).collect();
        let cpus: Vec<f64> = rs.iter().map(|r| r.cpu.as_secs_f64()).collect();
        let rss: Vec<f64> = rs.iter().map(|r| r.max_rss_kib as f64 / 1024.0).collect();
        let pps: Vec<f64> = walls.iter().map(|w| packets as f64 / w).collect();
        let wall = med(rs);
        let ratio = if tool.name == "learn" {
            "-".to_string()
        } else {
            format!("{:.2}x", wall / learn_wall)
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            tool.name,
            tool.does,
            spread(&pps, 0),
            spread(&walls, 2),
            spread(&cpus, 2),
            spread(&rss, 1),
            ratio
        );
    }
    let vs = |i: usize| med(&runs[i]) / learn_wall;
    let met = vs(1) >= 5.0 && vs(2) > 1.0;
    println!();
    println!(
        "goal (learn >= 5x tshark and faster than ndpiReader, ratio of median wall times): {} ({:.2}x tshark, {:.2}x ndpiReader)",
        if met { "met" } else { "NOT met" },
        vs(1),
        vs(2)
    );
}

fn spread(v: &[f64], prec: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let m = measure::median(v.to_vec());
    format!("{m:.prec$} ({min:.prec$}-{max:.prec$})")
}

struct Learned {
    frames: u64,
    records: u64,
    devices: usize,
    baseline_median: usize,
    baseline_max: usize,
}

fn read_learned(out: &Path) -> anyhow::Result<Learned> {
    let read = |name: &str| -> anyhow::Result<serde_json::Value> {
        let path = out.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let summary = read("summary.json")?;
    let baselines = read("baselines.json")?;
    let baselines = baselines
        .as_array()
        .context("baselines.json is not an array")?;
    let mut sizes: Vec<usize> = baselines
        .iter()
        .map(|b| serde_json::to_vec(b).map(|v| v.len()))
        .collect::<Result<_, _>>()?;
    sizes.sort_unstable();
    Ok(Learned {
        frames: summary["frames"]
            .as_u64()
            .context("summary.json has no frames")?,
        records: summary["records"].as_u64().unwrap_or(0),
        devices: summary["devices"].as_array().map_or(0, Vec::len),
        baseline_median: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        baseline_max: sizes.last().copied().unwrap_or(0),
    })
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}
