//! The evaluation section of `cargo xtask eval`: third-party captures whose sources label the
//! attack in them (analysis/tests/fixtures/eval/MANIFEST.yaml: source, commit, licence, the
//! label quoted and the answer key derived from it), replayed and scored per detector. An
//! attack is found when a finding of one of its expected detectors names the labelled attacker
//! (as subject, peer or evidence), found with the wrong source when they fire without naming
//! it, missed when none fires. Every finding on the benign captures is a false alert, counted
//! per device-day (devices x capture duration). The section reports; it never fails the run.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use anyhow::Context as _;
use serde::Deserialize;

use super::replay;

/// Where the material and its manifest live.
pub const DIR: &str = "analysis/tests/fixtures/eval";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    sources: Vec<Source>,
    captures: Vec<Capture>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    id: String,
    repo: String,
    commit: String,
    licence: String,
    licence_file: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for the reader of the manifest
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // path, label, notes and victim document the key; the eval reads the rest
struct Capture {
    file: String,
    source: String,
    path: String,
    label: String,
    kind: String,
    #[serde(default)]
    detectors: Vec<String>,
    #[serde(default)]
    attacker: Vec<String>,
    attacker_note: Option<String>,
    victim: Option<String>,
    site: Option<String>,
    #[serde(default)]
    benign: bool,
    devices: Option<u32>,
    duration_s: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Found,
    WrongSource,
    Missed,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Found => "found",
            Outcome::WrongSource => "WRONG SOURCE",
            Outcome::Missed => "MISSED",
        }
    }
}

/// One form for addresses and MACs: an IP address as Rust prints it, anything else lowercase.
fn norm(s: &str) -> String {
    s.parse::<IpAddr>()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| s.to_ascii_lowercase())
}

/// Every address or MAC a finding names: its subject (MAC, name, own addresses in its flows),
/// its peer, the peers of its evidence and of its flows.
fn named(f: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |v: &serde_json::Value| {
        if let Some(s) = v.as_str() {
            out.insert(norm(s));
        }
    };
    add(&f["device"]["mac"]);
    add(&f["device"]["name"]);
    add(&f["peer"]);
    for p in f["evidence"]["peers"].as_array().into_iter().flatten() {
        add(p);
    }
    for fl in f["flows"].as_array().into_iter().flatten() {
        add(&fl["device_addr"]);
        add(&fl["peer"]);
    }
    out
}

fn detector(f: &serde_json::Value) -> &str {
    f["detector"].as_str().unwrap_or("?")
}

/// Scores one attack capture: the outcome and, per detector, the findings and how many name
/// the attacker.
fn score(
    c: &Capture,
    findings: &[serde_json::Value],
) -> (Outcome, BTreeMap<String, (usize, usize)>) {
    let attacker: BTreeSet<String> = c.attacker.iter().map(|a| norm(a)).collect();
    let mut per: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for f in findings {
        let e = per.entry(detector(f).to_string()).or_default();
        e.0 += 1;
        if !named(f).is_disjoint(&attacker) {
            e.1 += 1;
        }
    }
    let expected = c.detectors.iter().filter_map(|d| per.get(d));
    let (fired, right) = expected.fold((0, 0), |(a, b), (n, r)| (a + n, b + r));
    let outcome = if right > 0 {
        Outcome::Found
    } else if fired > 0 {
        Outcome::WrongSource
    } else {
        Outcome::Missed
    };
    (outcome, per)
}

/// Per detector: labelled attacks expecting it, found, wrong source, missed; false alerts.
#[derive(Default)]
struct Row {
    attacks: usize,
    found: usize,
    wrong: usize,
    missed: usize,
    false_alerts: usize,
}

/// Reads the manifest of `dir` and checks it against the files: every capture's source is
/// listed, and every capture, site and licence file is there.
fn load(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join("MANIFEST.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let m: Manifest =
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut files: Vec<std::path::PathBuf> = m
        .sources
        .iter()
        .map(|s| dir.join(&s.licence_file))
        .collect();
    for c in &m.captures {
        anyhow::ensure!(
            m.sources.iter().any(|s| s.id == c.source),
            "{}: source {} is not in the manifest's sources",
            c.file,
            c.source
        );
        anyhow::ensure!(
            c.benign || (!c.detectors.is_empty() && !c.attacker.is_empty()),
            "{}: an attack capture needs detectors and an attacker",
            c.file
        );
        anyhow::ensure!(
            !c.benign || (c.devices.is_some() && c.duration_s.is_some()),
            "{}: a benign capture needs devices and duration_s",
            c.file
        );
        files.push(dir.join("pcap").join(&c.file));
        files.extend(c.site.iter().map(|s| dir.join(s)));
    }
    for f in files {
        anyhow::ensure!(f.is_file(), "{} is missing", f.display());
    }
    Ok(m)
}

pub fn run(work: &Path) -> anyhow::Result<()> {
    let dir = Path::new(DIR);
    let m = load(dir)?;
    let summary = work.join("summary-eval.json");
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let (mut device_days, mut benign_devices, mut benign_s) = (0.0, 0u32, 0.0);
    let w = m.captures.iter().map(|c| c.file.len()).max().unwrap_or(10);
    println!(
        "{:w$}  {:14} {:12} findings (detector x count, naming the attacker)",
        "capture", "expected", "outcome"
    );
    for c in &m.captures {
        let site = c.site.as_ref().map(|s| dir.join(s));
        let (findings, seen_days) = replay(
            &dir.join("pcap").join(&c.file),
            site.as_deref(),
            None,
            &summary,
        )
        .with_context(|| format!("replaying {}", c.file))?;
        let (outcome, per) = score(c, &findings);
        let listed: Vec<String> = per
            .iter()
            .map(|(d, (n, r))| format!("{d} x{n} ({r})"))
            .collect();
        let listed = if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        };
        if c.benign {
            let (devices, secs) = (c.devices.unwrap_or(0), c.duration_s.unwrap_or(0.0));
            benign_devices += devices;
            benign_s += secs;
            device_days += f64::from(devices) * secs / 86_400.0;
            for (d, (n, _)) in &per {
                rows.entry(d.clone()).or_default().false_alerts += n;
            }
            // The replay's own measure (each device's first to last flow) beside the key's.
            println!(
                "{:w$}  {:14} {:12} {listed}; {devices} devices x {secs} s (replay saw {:.4} \
                 device-days)",
                c.file,
                "(benign)",
                if per.is_empty() {
                    "clean"
                } else {
                    "FALSE ALERTS"
                },
                seen_days
            );
        } else {
            for d in &c.detectors {
                let r = rows.entry(d.clone()).or_default();
                r.attacks += 1;
                match per.get(d) {
                    Some((_, right)) if *right > 0 => r.found += 1,
                    Some(_) => r.wrong += 1,
                    None => r.missed += 1,
                }
            }
            println!(
                "{:w$}  {:14} {:12} {listed}",
                c.file,
                c.detectors.join(","),
                outcome.word()
            );
        }
    }
    println!();
    println!(
        "{:16} {:>7} {:>5} {:>12} {:>6} {:>12} {:>14}",
        "detector", "attacks", "found", "wrong source", "missed", "false alerts", "per device-day"
    );
    for (d, r) in &rows {
        println!(
            "{d:16} {:>7} {:>5} {:>12} {:>6} {:>12} {:>14.2}",
            r.attacks,
            r.found,
            r.wrong,
            r.missed,
            r.false_alerts,
            r.false_alerts as f64 / device_days.max(f64::MIN_POSITIVE)
        );
    }
    let attacks = m.captures.iter().filter(|c| !c.benign).count();
    let found: usize = rows.values().map(|r| r.found).sum();
    let false_alerts: usize = rows.values().map(|r| r.false_alerts).sum();
    println!();
    println!(
        "labelled attacks: {attacks}, found with the right source: {found}; benign: {} captures, \
         {benign_devices} devices, {:.2} h of capture, {device_days:.3} device-days, {false_alerts} false \
         alerts = {:.2} per device-day (goal: every attack found with the right source, <= 0.1 \
         false alerts per device-day)",
        m.captures.iter().filter(|c| c.benign).count(),
        benign_s / 3600.0,
        false_alerts as f64 / device_days.max(f64::MIN_POSITIVE)
    );
    println!("sources:");
    for s in &m.sources {
        println!(
            "  {} {} @ {} ({}, {})",
            s.id,
            s.repo,
            &s.commit[..12.min(s.commit.len())],
            s.licence,
            s.licence_file
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(attacker: &[&str], detectors: &[&str]) -> Capture {
        Capture {
            file: "x.pcap".into(),
            source: "s".into(),
            path: "p".into(),
            label: "l".into(),
            kind: "k".into(),
            detectors: detectors.iter().map(|s| s.to_string()).collect(),
            attacker: attacker.iter().map(|s| s.to_string()).collect(),
            attacker_note: None,
            victim: None,
            site: None,
            benign: false,
            devices: None,
            duration_s: None,
        }
    }

    #[test]
    fn the_manifest_lists_every_file_it_needs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DIR);
        let m = load(&dir).unwrap();
        assert!(m.captures.iter().any(|c| c.benign));
        assert!(m.captures.iter().any(|c| !c.benign));
    }

    #[test]
    fn scores_by_the_attacker_named_anywhere_in_the_finding() {
        let c = capture(&["2001:DB8:1:0::2", "00:50:B6:19:E6:50"], &["flood_icmp"]);
        let by_mac = serde_json::json!({"detector": "flood_icmp", "device": {"name": "h", "mac": "00:50:b6:19:e6:50"}});
        let by_evidence = serde_json::json!({"detector": "flood_icmp", "device": {"name": "v"}, "evidence": {"peers": ["2001:db8:1::2"]}});
        let other = serde_json::json!({"detector": "flood_icmp", "device": {"name": "v"}, "peer": "2001:db8:1::9"});
        let unexpected = serde_json::json!({"detector": "spoof", "device": {"name": "h", "mac": "00:50:b6:19:e6:50"}});
        assert!(score(&c, &[by_mac]).0 == Outcome::Found);
        assert!(score(&c, &[by_evidence]).0 == Outcome::Found);
        assert!(score(&c, std::slice::from_ref(&other)).0 == Outcome::WrongSource);
        let (o, per) = score(&c, &[unexpected, other]);
        assert!(o == Outcome::WrongSource);
        assert_eq!(per["spoof"], (1, 1));
        assert!(score(&c, &[]).0 == Outcome::Missed);
    }
}
