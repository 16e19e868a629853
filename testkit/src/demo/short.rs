//! The short story, for the package tier's skew check (another release's agent or controller
//! and wardctl): the pump in enforce, then quarantined and back with `wardctl mode`, deny
//! alerts at the SOC, flow records at the controller, the audit trail. It uses nothing the
//! previous release lacks.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use wardgate_agent::datapath::Datapath;

use super::{
    Bins, CONTROLLER_ADDR, CONTROLLER_URL, GATEWAY, PIN_ROOT, Proc, Wardctl, check, sa, wait_for,
};
use crate::ward::{self as lab, Ward};

pub fn run(bins: &Bins) -> anyhow::Result<()> {
    let (agent_bin, controller_bin, wardctl_bin) = (&bins.agent, &bins.controller, &bins.wardctl);
    let work = tempfile::tempdir()?;
    let _ = std::fs::remove_dir_all(PIN_ROOT);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");

    println!("== building the ward: pump VLAN 192.0.2.0/24 | gateway | hospital 198.51.100.0/24");
    let ward = Ward::new("demo");
    let stop = Arc::new(AtomicBool::new(false));
    let _servers = lab::tcp_echo(
        &ward.srv,
        vec![
            sa("198.51.100.30:443"),
            sa("198.51.100.10:104"),
            sa("198.51.100.10:445"),
        ],
        stop.clone(),
    );
    let (_, _dns) = lab::udp_echo(&ward.srv, vec![sa("198.51.100.53:53")], stop.clone());

    let certs = work.path().join("certs");
    let wardctl = Wardctl {
        bin: wardctl_bin.clone(),
        netns: ward.srv.clone(),
        certs: certs.clone(),
    };
    println!("== wardctl certs init: a lab CA, the controller, gateway gw-ward-3, engineer eve");
    wardctl.run(&[
        "certs",
        "init",
        "--dir",
        &certs.display().to_string(),
        "--gateway",
        GATEWAY,
        "--user",
        "eve:engineer",
        "--user",
        "sam:soc",
    ])?;
    let data = work.path().join("controller-data");
    let controller_log = work.path().join("controller.log");
    println!(
        "== starting wardgate-controller on {CONTROLLER_ADDR} (hospital side), embedded SQLite store in {}",
        data.display()
    );
    let _controller = Proc(
        Command::new("ip")
            .args(["netns", "exec", &ward.srv])
            .arg(controller_bin)
            .args(["--listen", CONTROLLER_ADDR, "--data"])
            .arg(&data)
            .arg("--certs")
            .arg(&certs)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&controller_log)?)
            .spawn()
            .context("starting the controller")?,
    );
    wait_for(&controller_log, "controller serving")?;
    println!("== wardctl push: device-profiles/sites/demo-ward.yaml and the profile library");
    let pushed = wardctl.run(&[
        "push",
        "--site",
        &root
            .join("device-profiles/sites/demo-ward.yaml")
            .display()
            .to_string(),
        "--profiles",
        &root.join("device-profiles").display().to_string(),
        "--reason",
        "CHG-1 commissioning ward 3",
    ])?;
    println!("   {}", pushed.trim());

    let desired = work.path().join("desired.json");
    let config = work.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [{}]\npin_root: {PIN_ROOT}\ndesired_state: {}\ncontroller:\n  address: {CONTROLLER_URL}\n  certs: {}\n  gateway: {GATEWAY}\n  flow_report_every_ms: 300\n",
            lab::DEV_IF,
            desired.display(),
            certs.display(),
        ),
    )?;
    let log: PathBuf = work.path().join("agent.log");
    println!(
        "== starting wardgate-agent in the gateway namespace; it syncs policy from the controller (log: {})",
        log.display()
    );
    let agent = Proc(
        Command::new(agent_bin)
            .args(["--netns", &ward.gw, "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting the agent")?,
    );
    wait_for(&log, "policy generation switched")?;
    let first: serde_json::Value =
        serde_json::from_str(&wardctl.run(&["--output", "json", "gateways"])?)?;
    let gen1 = first[0]["latest_generation"].as_u64().unwrap_or(0);
    wardctl.wait_applied(gen1)?;
    println!("   wardctl gateways:");
    for line in wardctl.run(&["gateways"])?.lines() {
        println!("   {line}");
    }

    let mut all_ok = true;
    let (dev, server, dns) = (ward.dev.clone(), "198.51.100.30:443", "198.51.100.53:53");
    let tcp = |to: &str| lab::tcp_roundtrip(&dev, sa(to));
    let udp = |to: &str| lab::udp_roundtrip(&dev, sa(to));
    println!("\n== generation {gen1}: infusion pump pump-3a-bed12 (192.0.2.10) in enforce mode");
    all_ok &= check(
        "pump -> infusion server 198.51.100.30:443",
        true,
        tcp(server),
    );
    all_ok &= check("pump -> DNS 198.51.100.53:53/udp", true, udp(dns));
    all_ok &= check(
        "pump -> PACS 198.51.100.10:104 (not in its profile)",
        false,
        tcp("198.51.100.10:104"),
    );
    all_ok &= check(
        "pump -> 198.51.100.10:445 (SMB, lateral movement)",
        false,
        tcp("198.51.100.10:445"),
    );

    println!("\n== wardctl mode pump-3a-bed12 quarantine --reason 'INC-3 pump probing SMB'");
    let gen2 = wardctl.pump_mode("quarantine", "INC-3 pump probing SMB")?;
    let took = wardctl.wait_applied(gen2)?;
    println!(
        "   generation {gen2} compiled, pushed, written to the maps and reported applied in {} ms",
        took.as_millis()
    );
    all_ok &= check(
        "pump -> infusion server 198.51.100.30:443",
        false,
        tcp(server),
    );
    all_ok &= check("pump -> DNS 198.51.100.53:53/udp", false, udp(dns));

    println!("\n== wardctl mode pump-3a-bed12 enforce --reason 'INC-3 closed, pump reimaged'");
    let gen3 = wardctl.pump_mode("enforce", "INC-3 closed, pump reimaged")?;
    wardctl.wait_applied(gen3)?;
    all_ok &= check(
        "pump -> infusion server 198.51.100.30:443",
        true,
        tcp(server),
    );

    std::thread::sleep(Duration::from_millis(300));
    println!("\n== datapath counters (per reason)");
    let mut dp = Datapath::load(Path::new(PIN_ROOT))?;
    for (reason, n) in dp.stats()? {
        if n > 0 {
            println!("  {:<26} {n}", reason.name());
        }
    }
    println!("\n== events the agent logged");
    for line in std::fs::read_to_string(&log)?
        .lines()
        .filter(|l| l.contains("datapath event"))
        .take(12)
    {
        println!(
            "  {}",
            line.split("datapath event").nth(1).unwrap_or(line).trim()
        );
    }
    println!("\n== the SOC's view: wardctl alerts list (as sam, role soc)");
    // The agent streams alerts as the datapath reports them; wait (bounded) for the last ones.
    let deadline = Instant::now() + Duration::from_secs(10);
    let deny_alerts = |out: &str| {
        out.lines()
            .filter(|l| l.contains(" datapath_deny "))
            .count()
    };
    let alerts = loop {
        let out = wardctl.run_as("user-sam", &["alerts", "list"])?;
        if deny_alerts(&out) >= 4 || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for line in alerts.lines().take(8) {
        println!("  {line}");
    }
    // Two denied flows in enforce and two in quarantine, each at least one alert.
    let denied = deny_alerts(&alerts);
    println!("  {denied} deny alerts at the SOC (at least 4 expected)");
    all_ok &= denied >= 4;

    println!(
        "\n== the pump's flow records at the controller: wardctl simulate of a profile allowing nothing"
    );
    // Records are sent every 300 ms; wait (bounded) for the pump's allowed flows.
    let nothing = work.path().join("nothing.yaml");
    std::fs::write(&nothing, "name: allow-nothing\nflows: []\n")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let recorded = loop {
        let out = wardctl.run(&[
            "--output",
            "json",
            "simulate",
            "--profile",
            &nothing.display().to_string(),
            "--device",
            "pump-3a-bed12",
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("wardctl simulate json")?;
        let flows = v["flows"].as_u64().unwrap_or(0);
        if flows > 0 || Instant::now() > deadline {
            break flows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("  {recorded} flow records of pump-3a-bed12 at the controller (at least 1 expected)");
    all_ok &= recorded > 0;

    println!("\n== wardctl audit list (who, what, why) and verify");
    for line in wardctl.run(&["audit", "list"])?.lines().rev().take(4) {
        println!("  {line}");
    }
    println!("  {}", wardctl.run(&["audit", "verify"])?.trim());
    stop.store(true, Ordering::Relaxed);
    drop(agent);
    drop(dp);
    let _ = std::fs::remove_dir_all(PIN_ROOT);
    drop(ward);
    if !all_ok {
        bail!("the demo ward did not behave as expected");
    }
    println!("\nall flows behaved as the policy says; namespaces and pins removed");
    Ok(())
}
