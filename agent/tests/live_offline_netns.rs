//! Attach tier: one engine, live and offline (issue 22). The real agent binary runs live in the
//! gateway namespace, its site (the demo ward's, its infusion pump in monitor mode so traffic
//! flows) pushed by a controller with the repository's profiles, while dumpcap
//! captures the device-facing interface. The pump scans a server, tries SMB, floods UDP, looks
//! up names as a DNS tunnel does (through an attacker's server) and as a DGA does (through the
//! hospital's resolver, which answers NXDOMAIN); a hospital workstation scans the pump. Then the agent stops (it finishes every flow it holds
//! and flushes its alert outbox to the controller), and `replay` runs over the capture with the
//! same site file and profiles. The findings the controller stored and the replay's are the
//! same set, keyed by detector, subject and peer. Needs root; fails (never skips) without it.

mod capture;
mod support;
mod traffic;

use std::{collections::BTreeSet, path::Path, time::Duration};

use capture::{Capture, FileFormat};
use support::{PinRoot, lab::Lab, require_privileges};
use wardgate_agent::replay::{self, Format, ReplayArgs};
use wardgate_analysis::detect::Finding;
use wardgate_controller::store::{AlertQuery, Store};
use wardgate_testkit::{
    agent::AgentProcess,
    ward::{DEV_IF, Ward},
};

/// The one site file of both paths: the demo ward's (its groups are what the profiles name),
/// with its infusion pump in monitor mode so its traffic flows.
fn site_file(dir: &Path) -> std::path::PathBuf {
    let demo =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles/sites/demo-ward.yaml");
    let text = std::fs::read_to_string(&demo).unwrap();
    let pump = "    profile: infusion-pump\n    mode: enforce\n";
    assert!(
        text.contains(pump),
        "the demo ward's pump is enforced: {text}"
    );
    let site = dir.join("site.yaml");
    std::fs::write(
        &site,
        text.replace(pump, "    profile: infusion-pump\n    mode: monitor\n"),
    )
    .unwrap();
    site
}

/// The demo ward's infusion pump (192.0.2.10).
const PUMP: &str = "pump-3a-bed12";

/// Findings offline has and live may lack, for a known product difference not fixed yet; each
/// is listed in the output when live lacks it. None now: the pump's UDP flood (30,000 datagrams
/// in well under a second, mostly answered by the datapath's flow cache and never folded into
/// conntrack) reaches the live detectors in full, as the agent reads a finishing flow's cache
/// slots (`CtReader::unsynced`).
const LIVE_MISSES: &[(&str, &str, &str)] = &[];

/// What must agree: which detector, about whom (the subject), against which peer.
type Key = (String, String, String);

fn key(f: &Finding) -> Key {
    (
        f.detector.clone(),
        f.device.name.clone(),
        f.peer.map_or_else(|| "-".into(), |p| p.to_string()),
    )
}

fn listing(findings: &[&Finding]) -> String {
    let mut lines: Vec<String> = findings
        .iter()
        .map(|f| {
            let (d, s, p) = key(f);
            format!("  {d} {s} -> {p} (count {}): {}", f.count, f.summary)
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

#[test]
fn live_agent_and_replay_of_its_capture_give_the_same_findings() {
    require_privileges();
    let ward = Ward::new("livoff");
    let dir = tempfile::tempdir().unwrap();
    let pin = PinRoot::new("liveoff");
    let site = site_file(dir.path());
    let lab = Lab::start_with_site(&ward, dir.path(), &site);
    let config = lab.agent_config(dir.path(), &pin);
    let mut agent = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_wardgate-agent")),
        &ward.gw,
        &config,
        dir.path().join("agent.log"),
    );
    agent.wait_for("policy generation switched");

    let file = dir.path().join("gateway.pcap");
    let cap = Capture::start(&ward.gw, DEV_IF, None, FileFormat::Pcap, &file);
    traffic::pump_scans_tries_smb_and_floods(&ward);
    traffic::pump_tunnels_and_tries_generated_names(&ward, dir.path());
    // Last: it ends with a pause, so dumpcap has handed over every frame before it stops.
    traffic::workstation_scans_pump(&ward);
    cap.stop();
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    // Offline: the same site file and profiles over the capture.
    let r = replay::run(&ReplayArgs {
        pcap: vec![file.clone()],
        site: Some(site.clone()),
        baselines: None,
        profiles: Some(support::lab::profiles_dir()),
        config: None,
        format: Format::Json,
        summary: None,
    })
    .unwrap();
    // Live: what the controller stored (the agent flushed its outbox before it exited), the
    // detectors' findings only (the datapath's own events, such as would-deny, have no
    // offline counterpart).
    let stored: Vec<Finding> = lab
        .store
        .alerts(&AlertQuery::recent(10_000))
        .unwrap()
        .iter()
        .map(|a| serde_json::from_str::<Finding>(&a.body).unwrap())
        .collect();
    let live: Vec<Finding> = stored
        .iter()
        .filter(|f| !f.detector.starts_with("datapath_"))
        .cloned()
        .collect();
    eprintln!(
        "stored alerts: {} ({} from the datapath)",
        stored.len(),
        stored.len() - live.len()
    );
    let log = agent.log_text();
    lab.stop();

    let offline: Vec<&Finding> = r.findings.iter().collect();
    let live: Vec<&Finding> = live.iter().collect();
    let both = format!(
        "live ({}):\n{}\noffline ({}):\n{}",
        live.len(),
        listing(&live),
        offline.len(),
        listing(&offline)
    );
    eprintln!("{both}");
    // The capture raised what the traffic is for, so an empty comparison cannot pass.
    let offline_keys: BTreeSet<Key> = offline.iter().map(|f| key(f)).collect();
    let live_keys: BTreeSet<Key> = live.iter().map(|f| key(f)).collect();
    for want in [
        ("scan_vertical", PUMP, "198.51.100.10"),
        ("class_protocol", PUMP, "198.51.100.30"),
        ("flood_udp", PUMP, "198.51.100.53"),
        ("scan_vertical", "198.51.100.20", "192.0.2.10"),
        ("scan_flag_probe", "198.51.100.20", "192.0.2.10"),
        // The DNS detectors' peer is the server asked.
        ("dns_tunnel", PUMP, traffic::TUNNEL_SERVER),
        ("dns_nxdomain", PUMP, traffic::RESOLVER),
    ] {
        let want = (want.0.to_string(), want.1.to_string(), want.2.to_string());
        assert!(
            offline_keys.contains(&want),
            "offline lacks {want:?}\n{both}"
        );
    }
    // Live gives what offline gives, but for the known misses when live lacks them.
    let missed: Vec<&Key> = offline_keys
        .iter()
        .filter(|k| {
            !live_keys.contains(*k)
                && LIVE_MISSES.contains(&(k.0.as_str(), k.1.as_str(), k.2.as_str()))
        })
        .collect();
    eprintln!("known live misses (flow cache tail, see LIVE_MISSES): {missed:?}");
    let offline_keys: BTreeSet<Key> = offline_keys
        .iter()
        .filter(|k| !missed.contains(k))
        .cloned()
        .collect();
    assert_eq!(
        live_keys,
        offline_keys,
        "live and offline differ: only live {:?}, only offline {:?}\n{both}\nagent log:\n{log}",
        live_keys.difference(&offline_keys).collect::<Vec<_>>(),
        offline_keys.difference(&live_keys).collect::<Vec<_>>(),
    );
}
