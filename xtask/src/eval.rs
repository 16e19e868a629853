//! `cargo xtask eval`: runs `wardgate-agent replay` in two sections. The regression: the
//! project's test captures (the fixtures and captures it generates) against answer keys written
//! beside the code, per capture and detector the findings expected and got, then the false
//! findings per device-day on the benign ones; fails when any cell differs. The evaluation:
//! labelled third-party material the code did not write (`third_party`), scored per detector;
//! it reports and never fails the run.

#[path = "eval/gen.rs"]
mod generate;
#[path = "eval/third_party.rs"]
mod third_party;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::cmd;

/// Every detector the replay can run.
const DETECTORS: &[&str] = &[
    "scan_vertical",
    "scan_horizontal",
    "scan_trw",
    "scan_flag_probe",
    "fanout",
    "class_protocol",
    "flood_syn",
    "flood_udp",
    "flood_icmp",
    "spoof",
    "new_peer",
    "new_service",
    "new_protocol",
    "new_app",
    "volume",
    "beacon",
    "brute_force",
    "rogue_dhcp",
    "rogue_router",
    "lateral",
    "dns_tunnel",
    "dns_nxdomain",
];

struct Fixture {
    file: &'static str,
    site: Option<&'static str>,
    benign: bool,
    expected: &'static [&'static str],
}

/// The third-party captures in analysis/tests/fixtures/pcap (sites in ../sites).
const FIXTURES: &[Fixture] = &[
    Fixture {
        file: "ndpi/synscan.pcap",
        site: None,
        benign: false,
        expected: &["scan_vertical"],
    },
    Fixture {
        file: "ndpi/smbv1.pcap",
        site: Some("smbv1-pump.yaml"),
        benign: false,
        expected: &["class_protocol"],
    },
    Fixture {
        file: "ndpi/mqtt.pcap",
        site: None,
        benign: true,
        expected: &[],
    },
    Fixture {
        file: "ndpi/modbus.pcap",
        site: None,
        benign: true,
        expected: &[],
    },
    Fixture {
        file: "ndpi/bacnet.pcap",
        site: None,
        benign: true,
        expected: &[],
    },
    Fixture {
        file: "ndpi/snmp.pcap",
        site: None,
        benign: true,
        expected: &[],
    },
    Fixture {
        file: "ndpi/syslog.pcap",
        site: None,
        benign: true,
        expected: &[],
    },
    Fixture {
        file: "ndpi/ssdp-m-search.pcap",
        site: None,
        benign: true,
        expected: &[],
    },
    Fixture {
        file: "suricata-verify/mqtt-events-invalid-qos.pcap",
        site: None,
        benign: true,
        expected: &[],
    },
    Fixture {
        file: "suricata-verify/mqtt311-pub-userpass.pcap",
        site: None,
        benign: true,
        expected: &[],
    },
];

struct Run {
    name: String,
    benign: bool,
    expected: BTreeSet<String>,
    got: Vec<String>,
    device_days: f64,
}

/// The release agent `cargo build` just made, in `CARGO_TARGET_DIR` when one is set.
fn agent() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("release/wardgate-agent")
}

/// Replays one capture: its findings (JSON) and the device-days the replay saw.
fn replay(
    pcap: &Path,
    site: Option<&Path>,
    baselines: Option<&Path>,
    summary: &Path,
) -> anyhow::Result<(Vec<serde_json::Value>, f64)> {
    let mut c = Command::new(agent());
    c.arg("replay").arg("--pcap").arg(pcap);
    if let Some(s) = site {
        c.arg("--site").arg(s);
    }
    if let Some(b) = baselines {
        c.arg("--baselines").arg(b);
    }
    c.args(["--format", "json", "--summary"]).arg(summary);
    c.env("RUST_LOG", "warn");
    let out = cmd::output(&mut c)?;
    let mut findings = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        findings
            .push(serde_json::from_str(line).with_context(|| format!("replay printed {line:?}"))?);
    }
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(summary)
            .with_context(|| format!("reading {}", summary.display()))?,
    )?;
    Ok((findings, s["device_days"].as_f64().unwrap_or(0.0)))
}

/// The detectors of a replay's findings, one entry per finding.
fn detectors(findings: &[serde_json::Value]) -> Vec<String> {
    findings
        .iter()
        .map(|f| f["detector"].as_str().unwrap_or("?").to_string())
        .collect()
}

pub fn run() -> anyhow::Result<()> {
    cmd::run(Command::new("cargo").args([
        "build",
        "--release",
        "-p",
        "wardgate-agent",
        "--bin",
        "wardgate-agent",
    ]))?;
    let fixtures = Path::new("analysis/tests/fixtures");
    let dir = Path::new("target/eval");
    generate::generate(dir).context("generating the eval captures")?;
    let summary = dir.join("summary.json");
    let mut runs = Vec::new();
    for f in FIXTURES {
        let site = f.site.map(|s| fixtures.join("sites").join(s));
        let (findings, device_days) = replay(
            &fixtures.join("pcap").join(f.file),
            site.as_deref(),
            None,
            &summary,
        )?;
        let got = detectors(&findings);
        runs.push(Run {
            name: format!(
                "{}{}",
                f.file,
                if f.site.is_some() {
                    " (site: pump)"
                } else {
                    ""
                }
            ),
            benign: f.benign,
            expected: f.expected.iter().map(|s| s.to_string()).collect(),
            got,
            device_days,
        });
    }
    let site = dir.join("site.yaml");
    for c in generate::CASES {
        let baselines = match c.learn {
            Some(l) => {
                let out = dir.join(format!("learned-{l}"));
                cmd::output(
                    Command::new(agent())
                        .args(["learn", "--pcap"])
                        .arg(dir.join(l))
                        .arg("--site")
                        .arg(&site)
                        .arg("--out")
                        .arg(&out)
                        .env("RUST_LOG", "warn"),
                )?;
                Some(out)
            }
            None => None,
        };
        let (findings, device_days) = replay(
            &dir.join(c.file),
            Some(&site),
            baselines.as_deref(),
            &summary,
        )?;
        let got = detectors(&findings);
        runs.push(Run {
            name: c.name.to_string(),
            benign: c.benign,
            expected: c.expected.iter().map(|s| s.to_string()).collect(),
            got,
            device_days,
        });
    }
    println!(
        "== regression: the project's fixtures and generated captures, keys written beside the code"
    );
    let bad = print_table(&runs);
    println!();
    println!(
        "== evaluation: labelled third-party material ({}/MANIFEST.yaml)",
        third_party::DIR
    );
    third_party::run(dir)?;
    anyhow::ensure!(
        bad == 0,
        "regression: {bad} capture x detector cells differ from what is expected"
    );
    Ok(())
}

/// Prints the regression table; returns how many cells differ from the keys.
fn print_table(runs: &[Run]) -> usize {
    let w = runs
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(10)
        .max(10);
    println!(
        "{:w$}  {:16} {:>8} {:>5}  ",
        "capture", "detector", "expected", "got"
    );
    let mut bad = 0;
    for r in runs {
        let mut shown = false;
        for d in DETECTORS {
            let expected = r.expected.contains(*d);
            let got = r.got.iter().filter(|g| g == d).count();
            if !expected && got == 0 {
                continue;
            }
            let ok = expected == (got > 0);
            if !ok {
                bad += 1;
            }
            println!(
                "{:w$}  {:16} {:>8} {:>5}  {}",
                if shown { "" } else { r.name.as_str() },
                d,
                if expected { "yes" } else { "no" },
                got,
                if ok { "ok" } else { "MISMATCH" }
            );
            shown = true;
        }
        if !shown {
            println!("{:w$}  {:16} {:>8} {:>5}  ok", r.name, "(any)", "none", 0);
        }
    }
    let benign: Vec<&Run> = runs.iter().filter(|r| r.benign).collect();
    let false_alerts: usize = benign.iter().map(|r| r.got.len()).sum();
    let days: f64 = benign.iter().map(|r| r.device_days).sum();
    println!();
    println!(
        "benign captures: {} ({:.3} device-days); false findings: {false_alerts}; per device-day: {:.2} (goal <= 1)",
        benign.len(),
        days,
        if days > 0.0 {
            false_alerts as f64 / days
        } else {
            0.0
        }
    );
    bad
}
