//! The demo ward (`cargo xtask demo`), the whole story of a ward put under wardgate (see
//! [`story`]); with `WARDGATE_DEMO_AGENT` or `WARDGATE_DEMO_CONTROLLER` set (the package tier's
//! skew check, previous release's binaries without `wardctl changes` or the console), the
//! short story of one pump's enforce and quarantine ([`short`]). Needs root. Everything it
//! creates is removed at the end.

mod approve;
mod commission;
mod console;
mod enforce;
mod learn;
mod short;
mod story;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub const PIN_ROOT: &str = "/sys/fs/bpf/wardgate-demo";
pub const GATEWAY: &str = "gw-ward-3";
/// The controller listens on the hospital side; the agent reaches it through the gateway.
pub const CONTROLLER_ADDR: &str = "198.51.100.20:7443";
pub const CONTROLLER_URL: &str = "https://198.51.100.20:7443";

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub struct Proc(pub Child);

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

pub fn wait_for(log: &Path, needle: &str) -> anyhow::Result<()> {
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
pub struct Wardctl {
    pub bin: PathBuf,
    pub netns: String,
    pub certs: PathBuf,
}

impl Wardctl {
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run_as("user-eve", args)
    }

    pub fn run_as(&self, identity: &str, args: &[&str]) -> anyhow::Result<String> {
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
    pub fn pump_mode(&self, mode: &str, reason: &str) -> anyhow::Result<u64> {
        self.set_mode("pump-3a-bed12", mode, reason)
    }

    /// Sets `device`'s mode through the controller; returns the generation it compiled.
    pub fn set_mode(&self, device: &str, mode: &str, reason: &str) -> anyhow::Result<u64> {
        let out = self.run(&["--output", "json", "mode", device, mode, "--reason", reason])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("wardctl json")?;
        v["generations"][GATEWAY]
            .as_u64()
            .context("the mode change compiled no generation for gw-ward-3")
    }

    /// Waits until the agent reports `generation` applied (it reports after writing the maps).
    pub fn wait_applied(&self, generation: u64) -> anyhow::Result<Duration> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
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
        bail!("gw-ward-3 did not report generation {generation} applied within 60 s")
    }
}

pub fn check(what: &str, expect_ok: bool, result: Result<(), String>) -> bool {
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

/// The binaries the demo runs.
pub struct Bins {
    pub agent: PathBuf,
    pub controller: PathBuf,
    pub wardctl: PathBuf,
}

/// Runs the demo: the whole story, or the short one with another release's binaries.
/// `keep`: leave the ward and the console up until Ctrl-C (the whole story only).
pub fn run(keep: bool) -> anyhow::Result<()> {
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
    let mut bins = Bins {
        agent: bin("wardgate-agent")?,
        controller: bin("wardgate-controller")?,
        wardctl: bin("wardctl")?,
    };
    let mut skew = false;
    if let Some(agent) = std::env::var_os("WARDGATE_DEMO_AGENT") {
        bins.agent = PathBuf::from(agent);
        skew = true;
    }
    if let Some(dir) = std::env::var_os("WARDGATE_DEMO_CONTROLLER") {
        bins.controller = Path::new(&dir).join("wardgate-controller");
        bins.wardctl = Path::new(&dir).join("wardctl");
        skew = true;
    }
    for b in [&bins.agent, &bins.controller, &bins.wardctl] {
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
    if skew {
        println!(
            "== another release's binary (skew check): the short story, one pump's enforce and \
             quarantine (that release has no `wardctl changes` and no console)"
        );
        if keep {
            println!("   --keep is for the whole story; ignored");
        }
        return short::run(&bins);
    }
    story::run(&bins, keep)
}
