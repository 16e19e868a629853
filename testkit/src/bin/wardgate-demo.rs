//! The demo ward (`cargo xtask demo`): three network namespaces (an infusion pump's VLAN, the
//! gateway, the hospital side), the controller on its embedded SQLite store, the real agent
//! syncing policy from it and enforcing in the kernel, real TCP and UDP flows, and mode changes
//! made with wardctl. Needs root. Everything it creates is removed at the end.
//!
//! `WARDGATE_DEMO_AGENT=PATH` runs another agent binary, `WARDGATE_DEMO_CONTROLLER=DIR` another
//! `wardgate-controller` and its `wardctl` (from DIR): the package tier's skew check runs the
//! previous release's agent against this controller and the reverse.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use wardgate_agent::datapath::Datapath;
use wardgate_testkit::ward::{self as lab, Ward};

const PIN_ROOT: &str = "/sys/fs/bpf/wardgate-demo";
const GATEWAY: &str = "gw-ward-3";
/// The controller listens on the hospital side; the agent reaches it through the gateway.
const CONTROLLER_ADDR: &str = "198.51.100.20:7443";
const CONTROLLER_URL: &str = "https://198.51.100.20:7443";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // Safety: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(log: &Path, needle: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("`{needle}` never appeared in {}", log.display())
}

/// wardctl as the engineer, run on the hospital side (the server namespace).
struct Wardctl {
    bin: PathBuf,
    netns: String,
    certs: PathBuf,
}

impl Wardctl {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run_as("user-eve", args)
    }

    fn run_as(&self, identity: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(&self.bin)
            .args(args)
            .env("WARDGATE_CONTROLLER", CONTROLLER_URL)
            .env("WARDGATE_CERTS", &self.certs)
            .env("WARDGATE_AS", identity)
            .output()
            .context("running wardctl")?;
        if !out.status.success() {
            bail!(
                "wardctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets the pump's mode through the controller; returns the generation it compiled.
    fn pump_mode(&self, mode: &str, reason: &str) -> anyhow::Result<u64> {
        let out = self.run(&[
            "--output",
            "json",
            "mode",
            "pump-3a-bed12",
            mode,
            "--reason",
            reason,
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("wardctl json")?;
        v["generations"][GATEWAY]
            .as_u64()
            .context("the mode change compiled no generation for gw-ward-3")
    }

    /// Waits until the agent reports `generation` applied (it reports after writing the maps).
    fn wait_applied(&self, generation: u64) -> anyhow::Result<Duration> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            let out = self.run(&["--output", "json", "gateways"])?;
            let v: serde_json::Value = serde_json::from_str(&out).context("wardctl json")?;
            let applied = v
                .as_array()
                .and_then(|gs| gs.iter().find(|g| g["name"] == GATEWAY))
                .and_then(|g| g["applied_generation"].as_u64());
            if applied == Some(generation) {
                return Ok(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("gw-ward-3 never reported generation {generation} applied")
    }
}

fn check(what: &str, expect_ok: bool, result: Result<(), String>) -> bool {
    let ok = result.is_ok();
    let verdict = if ok { "passed " } else { "blocked" };
    let mark = if ok == expect_ok {
        "as expected"
    } else {
        "UNEXPECTED"
    };
    println!("  {verdict}  {what:<58} {mark}");
    ok == expect_ok
}

fn main() -> anyhow::Result<()> {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo needs root (network namespaces, eBPF)");
    }
    let bin = |name: &str| -> anyhow::Result<PathBuf> {
        let p = std::env::current_exe()?.with_file_name(name);
        if !p.exists() {
            bail!("{} not built; run `cargo xtask demo`", p.display());
        }
        Ok(p)
    };
    let (mut agent_bin, mut controller_bin, mut wardctl_bin) = (
        bin("wardgate-agent")?,
        bin("wardgate-controller")?,
        bin("wardctl")?,
    );
    if let Some(agent) = std::env::var_os("WARDGATE_DEMO_AGENT") {
        agent_bin = PathBuf::from(agent);
    }
    if let Some(dir) = std::env::var_os("WARDGATE_DEMO_CONTROLLER") {
        controller_bin = Path::new(&dir).join("wardgate-controller");
        wardctl_bin = Path::new(&dir).join("wardctl");
    }
    for b in [&agent_bin, &controller_bin, &wardctl_bin] {
        let out = Command::new(b)
            .arg("--version")
            .output()
            .with_context(|| format!("{}", b.display()))?;
        println!(
            "== {} ({})",
            String::from_utf8_lossy(&out.stdout).trim(),
            b.display()
        );
    }
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
        bin: wardctl_bin,
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
            .arg(&controller_bin)
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
        Command::new(&agent_bin)
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
