//! Act 2, learning: the portable ultrasound (in learn mode, as its profile's default) does
//! its clinical work against real peers on the hospital side: DNS (dnsmasq), NTP (chronyd),
//! DICOM (dcmtk storescu -> storescp, the PACS) and HL7 (python-hl7's MLLP client -> server,
//! ACK received). The gateway reports the flows; the controller records them.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::Wardctl;
use crate::{
    peers::{self, Peer, in_netns, run_within},
    switched::{NTP, SwitchedWard},
};

pub const DEVICE: &str = "us-3a-portable";
const PACS: &str = "198.51.100.10";
const DNS: &str = "198.51.100.53";
const HL7: &str = "198.51.100.20";
const MSH: &str =
    "MSH|^~\\&|US_1|WARD_3A|HL7_ENGINE|DEMO_HOSP|20261206090000||ORU^R01^ORU_R01|MSG-7|P|2.6";

/// The hospital's clinical servers, stopped when dropped.
pub struct Peers {
    _servers: Vec<Peer>,
    dir: PathBuf,
    image: PathBuf,
    message: PathBuf,
}

impl Peers {
    pub fn start(ward: &SwitchedWard, dir: &Path) -> anyhow::Result<Peers> {
        let srv = &ward.ward.srv;
        std::fs::create_dir_all(dir)?;
        let servers = vec![
            peers::dns_server(srv, DNS, &[("pacs.ward3.example", PACS)], dir),
            peers::ntp_server(srv, NTP, dir),
            peers::storescp(srv, "PACS", 104, &dir.join("pacs")),
            peers::mllp_server(srv, HL7, 2575, &dir.join("hl7-received.txt")),
        ];
        let message = dir.join("oru.hl7");
        std::fs::write(
            &message,
            format!("\x0b{MSH}\rPID|1||12345\rOBX|1|ST|US^Exam||done\r\x1c\r"),
        )?;
        Ok(Peers {
            _servers: servers,
            image: peers::dicom_image(dir),
            dir: dir.to_path_buf(),
            message,
        })
    }

    /// One round of the ultrasound's clinical traffic from `ns`: each step, and its outcome
    /// (Ok, or what the client said).
    pub fn clinical(&self, ns: &str) -> Vec<(String, Result<(), String>)> {
        let limit = Duration::from_secs(15);
        let mut out = Vec::new();
        let (ok, said) = run_within(peers::dns_query(ns, DNS, "pacs.ward3.example"), limit);
        out.push((
            format!("DNS: pacs.ward3.example at {DNS}:53/udp (dnsmasq)"),
            answer(ok && said.trim() == PACS, said),
        ));
        let (ok, said) = run_within(peers::ntp_query(ns, NTP, &self.dir), limit);
        out.push((
            format!("NTP: time from {NTP}:123/udp (chronyd)"),
            answer(ok, said),
        ));
        let mut c = in_netns(ns, "storescu");
        c.args(["-to", "3", "-aet", "US_1", "-aec", "PACS", PACS, "104"])
            .arg(&self.image);
        let (ok, said) = run_within(c, limit);
        out.push((
            format!("DICOM: C-STORE of an image to the PACS {PACS}:104 (storescp)"),
            answer(ok, said),
        ));
        let mut c = in_netns(ns, "python3");
        c.args(["-m", "hl7.client", "-p", "2575", "-f"])
            .arg(&self.message)
            .arg(HL7);
        let (ok, said) = run_within(c, limit);
        out.push((
            format!("HL7: ORU to the engine {HL7}:2575 (MLLP), ACK received"),
            answer(ok && said.contains("MSA|AA|MSG-7"), said),
        ));
        out
    }
}

fn answer(ok: bool, said: String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        let said = said.trim();
        Err(said.lines().last().unwrap_or(said).to_string())
    }
}

/// The clinical round while learning: every step must succeed (the servers may still be
/// starting: a few tries, bounded).
pub fn run(
    peers: &Peers,
    ward: &SwitchedWard,
    wardctl: &Wardctl,
    work: &Path,
) -> anyhow::Result<()> {
    println!(
        "\n== learning: {DEVICE} (192.0.2.12, 02:00:00:00:00:0c) in learn mode talks to the hospital"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let round = loop {
        let round = peers.clinical(&ward.us);
        if round.iter().all(|(_, r)| r.is_ok()) || Instant::now() > deadline {
            break round;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let mut all = true;
    for (what, r) in &round {
        all &= super::check(what, true, r.clone());
    }
    if !all {
        bail!("the ultrasound's clinical traffic failed while learning");
    }
    // The learning window opens with the device's first flow record: the TCP flows, reported
    // when they close. UDP flows are reported when their conntrack entry goes idle (60 s by
    // default), and those that began before the window opened stay out of it: one more
    // round once it is open, then wait (bounded) until the proposal holds all four.
    let nothing = work.join("nothing.yaml");
    std::fs::write(&nothing, "name: allow-nothing\nflows: []\n")?;
    let recorded = || -> usize {
        wardctl
            .run(&[
                "--output",
                "json",
                "simulate",
                "--profile",
                &nothing.display().to_string(),
                "--device",
                DEVICE,
            ])
            .ok()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
            .and_then(|v| v["blocked"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    // TCP records leave the gateway 10 s after their FIN: 60 s is for a loaded machine.
    let waited = Instant::now();
    let deadline = waited + Duration::from_secs(60);
    while recorded() < 2 {
        if Instant::now() > deadline {
            bail!("no flow record of {DEVICE} reached the controller within 60 s");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "   after {} s the learning window is open; a second round inside it",
        waited.elapsed().as_secs()
    );
    for (what, r) in peers.clinical(&ward.us) {
        if !super::check(&what, true, r) {
            bail!("the ultrasound's clinical traffic failed while learning");
        }
    }
    println!("   waiting for the gateway's flow records (UDP ones after 60 s idle)...");
    let waited = Instant::now();
    // UDP records leave 60 s after the last packet; 150 s is for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let yaml = wardctl
            .run(&[
                "profile",
                "propose",
                "--device",
                DEVICE,
                "--include-incomplete",
            ])
            .unwrap_or_default();
        if [
            "ports: [53]",
            "ports: [123]",
            "ports: [104]",
            "ports: [2575]",
        ]
        .iter()
        .all(|p| yaml.contains(p))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the baseline of {DEVICE} lacks some of DNS, NTP, DICOM, HL7 after 150 s:\n{yaml}"
            );
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    println!(
        "   after {} s the baseline holds all four (DNS, NTP, DICOM, HL7)",
        waited.elapsed().as_secs()
    );
    println!("   wardctl devices baseline {DEVICE}:");
    let baseline = wardctl
        .run(&["devices", "baseline", DEVICE])
        .context("wardctl devices baseline")?;
    for line in baseline.lines().take(12) {
        println!("   {line}");
    }
    Ok(())
}
