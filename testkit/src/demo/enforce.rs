//! Act 4, enforced: the ultrasound's clinical traffic still passes; then it scans the hospital
//! side (nmap, the first 100 ports of the PACS) and is caught: the probes are dropped at the
//! gateway, the agent's vertical-scan detector names the device, and the alert reaches the
//! SOC: rsyslogd's file, the OCSF file, `wardctl alerts list`.

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use super::{Wardctl, check, sa};
use crate::{
    demo::learn::{DEVICE, Peers},
    peers::{in_netns, run_within},
    switched::SwitchedWard,
    ward as lab,
};

/// The detector the scan must raise.
const SCAN: &str = "scan_vertical";

/// Lines of `file` that mention the ultrasound's scan.
fn mentions(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| (l.contains(DEVICE) || l.contains("192.0.2.12")) && l.contains(SCAN))
        .map(str::to_string)
        .collect()
}

fn short(line: &str) -> String {
    if line.chars().count() > 220 {
        format!("{}...", line.chars().take(220).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Whether every step behaved as the policy says.
pub fn run(
    peers: &Peers,
    ward: &SwitchedWard,
    wardctl: &Wardctl,
    syslog: &Path,
    ocsf: &Path,
) -> anyhow::Result<bool> {
    let mut all_ok = true;
    println!("\n== enforced: the same clinical traffic");
    for (what, r) in peers.clinical(&ward.us) {
        all_ok &= check(&what, true, r);
    }

    // Services a scan would find if nothing stopped it.
    let stop = Arc::new(AtomicBool::new(false));
    let _listeners = lab::tcp_echo(
        &ward.ward.srv,
        vec![sa("198.51.100.10:22"), sa("198.51.100.10:445")],
        stop.clone(),
    );
    let target = "198.51.100.10";
    println!("\n== {DEVICE} scans the PACS: nmap -sS -p 1-100 {target}");
    let mut c = in_netns(&ward.us, "nmap");
    c.args([
        "-n",
        "-Pn",
        "-sS",
        "-T4",
        "--max-retries",
        "0",
        "--host-timeout",
        "20s",
        "-p",
        "1-100",
        target,
    ]);
    let (_, out) = run_within(c, Duration::from_secs(60));
    let open: Vec<&str> = out.lines().filter(|l| l.contains("/tcp open")).collect();
    for l in out.lines().filter(|l| l.contains("/tcp ")).take(8) {
        println!("   {l}");
    }
    all_ok &= check(
        "nmap finds no open port (22 and 445 listen on 198.51.100.10)",
        true,
        if out.contains("Nmap done") && open.is_empty() {
            Ok(())
        } else {
            Err(format!("open: {open:?}"))
        },
    );
    all_ok &= check(
        "ultrasound -> 198.51.100.10:445 (SMB, not in its profile)",
        false,
        lab::tcp_roundtrip(&ward.us, sa("198.51.100.10:445")),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    println!("\n== the SOC: the {SCAN} alert as it arrived (bounded wait: 60 s)");
    let waited = Instant::now();
    let deadline = waited + Duration::from_secs(60);
    let (in_syslog, in_ocsf) = loop {
        let (s, o) = (mentions(syslog), mentions(ocsf));
        if (!s.is_empty() && !o.is_empty()) || Instant::now() > deadline {
            break (s, o);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("   waited {} s", waited.elapsed().as_secs());
    println!(
        "   rsyslogd ({}): {} {SCAN} lines about {DEVICE}",
        syslog.display(),
        in_syslog.len()
    );
    for l in in_syslog.iter().take(3) {
        println!("     {}", short(l));
    }
    println!(
        "   OCSF file ({}): {} {SCAN} lines about {DEVICE}",
        ocsf.display(),
        in_ocsf.len()
    );
    for l in in_ocsf.iter().take(2) {
        println!("     {}", short(l));
    }
    all_ok &= check(
        "the scan alert reached rsyslogd and the OCSF file",
        true,
        if in_syslog.is_empty() || in_ocsf.is_empty() {
            Err("missing".into())
        } else {
            Ok(())
        },
    );
    println!("\n== wardctl alerts list (sam, soc)");
    let alerts = wardctl.run_as("user-sam", &["alerts", "list"])?;
    let ours: Vec<&str> = alerts.lines().filter(|l| l.contains(DEVICE)).collect();
    let scans = ours.iter().filter(|l| l.contains(SCAN)).count();
    for l in ours.iter().take(8) {
        println!("   {l}");
    }
    all_ok &= check(
        "a scan alert about the ultrasound at the SOC",
        true,
        if scans == 0 {
            Err(format!("no {SCAN} among {} alerts", ours.len()))
        } else {
            Ok(())
        },
    );
    Ok(all_ok)
}
