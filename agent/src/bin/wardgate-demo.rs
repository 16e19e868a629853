//! The demo ward (`cargo xtask demo`): three network namespaces (an infusion pump's VLAN, the
//! gateway, the hospital servers), the real agent enforcing a compiled policy, real TCP and UDP
//! flows, and a mode change made live. Needs root. Everything it creates is removed at the end.

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
use wardgate_agent::{
    datapath::Datapath,
    lab::{self, Ward},
};
use wardgate_policy::{DesiredState, Mode, ProfileSet, diff, parse_site};

const PIN_ROOT: &str = "/sys/fs/bpf/wardgate-demo";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// The demo site and the shipped profile library, compiled for gw-ward-3 with the pump in
/// `pump_mode` (what an engineer's edit of the site file does).
fn compile(root: &Path, generation: u32, pump_mode: Mode) -> anyhow::Result<DesiredState> {
    let profiles =
        ProfileSet::load_dir(&root.join("device-profiles")).map_err(|d| anyhow::anyhow!("{d}"))?;
    let file = root.join("device-profiles/sites/demo-ward.yaml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut site =
        parse_site(&file.display().to_string(), &text).map_err(|d| anyhow::anyhow!("{d}"))?;
    let pump = site
        .devices
        .iter_mut()
        .find(|d| d.name.value == "pump-3a-bed12")
        .context("pump in site")?;
    pump.mode = Some(pump_mode);
    Ok(wardgate_policy::compile(
        &site,
        &profiles,
        "gw-ward-3",
        generation,
    )?)
}

struct Agent(Child);

impl Drop for Agent {
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
    bail!("agent did not log `{needle}`; see {}", log.display())
}

fn write_state(path: &Path, state: &DesiredState) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, state.to_json())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
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
    let agent_bin = std::env::current_exe()?.with_file_name("wardgate-agent");
    if !agent_bin.exists() {
        bail!("{} not built; run `cargo xtask demo`", agent_bin.display());
    }
    let work = tempfile::tempdir()?;
    let _ = std::fs::remove_dir_all(PIN_ROOT);

    println!("== building the ward: pump VLAN 192.0.2.0/24 | gateway | servers 198.51.100.0/24");
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

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    println!(
        "== compiling device-profiles/sites/demo-ward.yaml with the profile library for gw-ward-3"
    );
    let gen1 = compile(&root, 1, Mode::Enforce)?;
    println!(
        "   generation 1: {} devices, {} profiles, {} peer prefixes, {} port rules",
        gen1.devices.len(),
        gen1.policies.len(),
        gen1.peers.len(),
        gen1.ports.len()
    );
    let desired = work.path().join("desired.json");
    write_state(&desired, &gen1)?;
    let config = work.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [{}]\npin_root: {PIN_ROOT}\ndesired_state: {}\n",
            lab::DEV_IF,
            desired.display()
        ),
    )?;
    let log: PathBuf = work.path().join("agent.log");
    println!(
        "== starting wardgate-agent in the gateway namespace (log: {})",
        log.display()
    );
    let agent = Agent(
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

    let mut all_ok = true;
    let (dev, server, dns) = (ward.dev.clone(), "198.51.100.30:443", "198.51.100.53:53");
    let tcp = |to: &str| lab::tcp_roundtrip(&dev, sa(to));
    let udp = |to: &str| lab::udp_roundtrip(&dev, sa(to));
    println!("\n== generation 1: infusion pump pump-3a-bed12 (192.0.2.10) in enforce mode");
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

    println!("\n== generation 2: the engineer quarantines the pump");
    let gen2 = compile(&root, 2, Mode::Quarantine)?;
    for d in diff(&gen1, &gen2).devices_changed {
        println!("   diff: ~ device {d}");
    }
    write_state(&desired, &gen2)?;
    wait_for(&log, "to=2")?;
    all_ok &= check(
        "pump -> infusion server 198.51.100.30:443",
        false,
        tcp(server),
    );
    all_ok &= check("pump -> DNS 198.51.100.53:53/udp", false, udp(dns));

    println!("\n== generation 3: back to enforce");
    write_state(&desired, &compile(&root, 3, Mode::Enforce)?)?;
    wait_for(&log, "to=3")?;
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
