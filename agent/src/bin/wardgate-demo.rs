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
use wardgate_policy::{
    DesiredState, Direction, Mode, Proto,
    desired::{DeviceEntry, MacAddr, PolicyEntry, PortRange, Rule},
    lower::lower,
};

const PIN_ROOT: &str = "/sys/fs/bpf/wardgate-demo";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// The infusion-pump policy of the demo: DICOM to PACS, DNS, HL7 from the interface engine.
fn state(generation: u32, pump_mode: Mode) -> anyhow::Result<DesiredState> {
    let rule = |id: u32, name: &str, direction, proto, peer: &str, port: u16| Rule {
        rule_id: id,
        name: name.to_string(),
        direction,
        proto,
        peers: vec![peer.parse().expect("literal CIDR")],
        ports: Some(PortRange::single(port)),
        idle_timeout_s: if port == 2575 { 4 * 3600 } else { 600 },
    };
    let rules = vec![
        rule(
            1001,
            "dicom to pacs",
            Direction::FromDevice,
            Proto::Tcp,
            "198.51.100.10/32",
            104,
        ),
        rule(
            1002,
            "dns",
            Direction::FromDevice,
            Proto::Udp,
            "198.51.100.0/24",
            53,
        ),
        rule(
            1003,
            "hl7 mllp from engine",
            Direction::ToDevice,
            Proto::Tcp,
            "198.51.100.20/32",
            2575,
        ),
        rule(
            1004,
            "dicom to pacs (v6)",
            Direction::FromDevice,
            Proto::Tcp,
            "2001:db8:100::10/128",
            104,
        ),
    ];
    let pump = DeviceEntry {
        device_id: 1,
        name: "pump-3a-bed12".into(),
        addrs: vec!["192.0.2.10".parse()?, "2001:db8:1::10".parse()?],
        mac: MacAddr([2, 0, 0, 0, 0, 0x0a]),
        policy_id: 1,
        mode: pump_mode,
    };
    let policies = vec![PolicyEntry {
        policy_id: 1,
        profile: "infusion-pump".into(),
        rules,
    }];
    Ok(lower("gw-ward-3", generation, vec![pump], policies)?)
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
    let _pacs = lab::tcp_echo(
        &ward.srv,
        vec![
            sa("198.51.100.10:104"),
            sa("198.51.100.10:445"),
            sa("[2001:db8:100::10]:104"),
        ],
        stop.clone(),
    );
    let (_, _dns) = lab::udp_echo(&ward.srv, vec![sa("198.51.100.10:53")], stop.clone());
    let _mllp = lab::tcp_echo(&ward.dev, vec![sa("192.0.2.10:2575")], stop.clone());

    let desired = work.path().join("desired.json");
    write_state(&desired, &state(1, Mode::Enforce)?)?;
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
    println!("\n== generation 1: pump in enforce mode");
    all_ok &= check(
        "pump -> PACS 198.51.100.10:104 (DICOM)",
        true,
        lab::tcp_roundtrip(&ward.dev, sa("198.51.100.10:104")),
    );
    all_ok &= check(
        "pump -> PACS [2001:db8:100::10]:104 (DICOM, IPv6)",
        true,
        lab::tcp_roundtrip(&ward.dev, sa("[2001:db8:100::10]:104")),
    );
    all_ok &= check(
        "pump -> DNS 198.51.100.10:53/udp",
        true,
        lab::udp_roundtrip(&ward.dev, sa("198.51.100.10:53")),
    );
    all_ok &= check(
        "pump -> 198.51.100.10:445 (SMB, not in the profile)",
        false,
        lab::tcp_roundtrip(&ward.dev, sa("198.51.100.10:445")),
    );

    println!("\n== generation 2: the engineer quarantines the pump");
    write_state(&desired, &state(2, Mode::Quarantine)?)?;
    wait_for(&log, "to=2")?;
    all_ok &= check(
        "pump -> PACS 198.51.100.10:104 (DICOM)",
        false,
        lab::tcp_roundtrip(&ward.dev, sa("198.51.100.10:104")),
    );
    all_ok &= check(
        "pump -> DNS 198.51.100.10:53/udp",
        false,
        lab::udp_roundtrip(&ward.dev, sa("198.51.100.10:53")),
    );

    println!("\n== generation 3: back to enforce");
    write_state(&desired, &state(3, Mode::Enforce)?)?;
    wait_for(&log, "to=3")?;
    all_ok &= check(
        "pump -> PACS 198.51.100.10:104 (DICOM)",
        true,
        lab::tcp_roundtrip(&ward.dev, sa("198.51.100.10:104")),
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
