//! `cargo xtask test`: every tier, in order, with a summary. A privileged tier that cannot run
//! fails; a test binary that ran no test fails.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// rustfmt --check on every crate.
    Fmt,
    /// clippy with warnings denied, on the real eBPF build.
    Clippy,
    /// Unit and integration tests that need no privileges (policy, controller, agent units).
    Unit,
    /// The eBPF object through BPF_PROG_TEST_RUN (root).
    Datapath,
    /// The agent on veth pairs in network namespaces (root).
    Attach,
    /// The demo ward end to end: controller on its embedded store, wardctl, the agent syncing
    /// and enforcing (root). The README's main command, checked.
    Demo,
    /// The .deb packages: built, installed with dpkg, their binaries and services started as
    /// systemd would, purged; the previous release upgraded to these under traffic and back,
    /// and each release's agent against the other's controller (root).
    Package,
}

const ALL: [Tier; 7] = [
    Tier::Fmt,
    Tier::Clippy,
    Tier::Unit,
    Tier::Datapath,
    Tier::Attach,
    Tier::Demo,
    Tier::Package,
];

fn privileged_preflight() -> anyhow::Result<()> {
    // Safety: geteuid has no preconditions.
    let euid = unsafe { libc_geteuid() };
    if euid != 0 {
        bail!("privileged tier cannot run: needs root (CAP_BPF, CAP_NET_ADMIN); euid is {euid}");
    }
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"])).context(
            "privileged tier cannot run: /sys/fs/bpf is not bpffs and mounting it failed",
        )?;
    }
    if !cmd::succeeds(Command::new("ip").args(["netns", "list"])) {
        bail!("privileged tier cannot run: `ip netns` unavailable (install iproute2)");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The agent's test files the Unit tier runs (no root): policy sync, enrollment and renewal,
/// and flow-record reports against an in-process controller (the test plays the writer);
/// offline learning from captures; detectors replayed over captures; the systemd unit through
/// systemd-analyze.
const UNIT_AGENT_TESTS: &[&str] = &[
    "sync",
    "ha",
    "fleet",
    "learn",
    "unit_file",
    "replay",
    "replay_dns",
    "flow_report",
    "limits",
];

/// The agent's test files the Attach tier runs (root: programs attached in namespaces).
const ATTACH_AGENT_TESTS: &[&str] = &[
    "netns",
    "segmentation",
    "learn_netns",
    "metrics",
    "service",
    "replay_netns",
    "flows_netns",
    "payload_netns",
    "app_rules_netns",
    "dns_rules_netns",
    "dns_names_netns",
    "flow_report_netns",
    "lifecycle_netns",
    "spoof_netns",
    "limits_netns",
    "grace_netns",
    "live_offline_netns",
];

/// The Datapath tier's.
const DATAPATH_AGENT_TESTS: &[&str] = &["datapath"];

/// Every `agent/tests/*.rs` is in one tier's list: a test file added without naming it would
/// otherwise never run.
fn every_agent_test_in_a_tier() -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests");
    let mut missing = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && ![UNIT_AGENT_TESTS, ATTACH_AGENT_TESTS, DATAPATH_AGENT_TESTS]
                .iter()
                .any(|l| l.contains(&stem))
        {
            missing.push(stem.to_string());
        }
    }
    if !missing.is_empty() {
        bail!(
            "agent test files in no tier (add them to UNIT_AGENT_TESTS, ATTACH_AGENT_TESTS or \
             DATAPATH_AGENT_TESTS in xtask/src/test.rs): {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Runs a cargo test command and fails if it executed no test at all.
/// The `failures:` sections of libtest's output (each failing test's output and the list of
/// names), at most 80 lines, or its last 20 lines when it has none (a build or harness error).
fn failures(stdout: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    let picked: Vec<&str> = match lines.iter().position(|l| *l == "failures:") {
        Some(start) => lines[start..]
            .iter()
            .take_while(|l| !l.starts_with("test result: "))
            .filter(|l| !backtrace_line(l))
            .take(80)
            .copied()
            .collect(),
        None => lines[lines.len().saturating_sub(20)..].to_vec(),
    };
    picked.join("\n")
}

/// A line of a panic's stack backtrace ("stack backtrace:", "  12: frame", "at path:line", the
/// note after it): left out of the summary, where they pushed out what the tests said.
fn backtrace_line(line: &str) -> bool {
    let t = line.trim_start();
    line == "stack backtrace:"
        || t.starts_with("at ")
        || t.starts_with("note: Some details are omitted")
        || t.split_once(": ").is_some_and(|(n, _)| {
            line.starts_with(' ') && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
}

fn cargo_test(args: &[&str]) -> anyhow::Result<()> {
    let mut c = cmd::cargo();
    c.arg("test").args(args);
    eprintln!("$ {}", cmd::display(&c));
    let out = c
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting `{}`", cmd::display(&c)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        bail!(
            "`{}` failed; what its failing tests said:\n{}",
            cmd::display(&c),
            failures(&stdout)
        );
    }
    let executed: u64 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: "))
        .filter_map(|l| l.split(';').next())
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    if executed == 0 {
        bail!("`{}` ran no test", cmd::display(&c));
    }
    Ok(())
}

/// The policy and controller crates' integration tests (the unit tier runs them).
const CONTROLLER_TESTS: &[&str] = &[
    "--release",
    "-p",
    "wardgate-policy",
    "-p",
    "wardgate-controller",
    "--tests",
];

/// Builds the controller's binaries (release) for the agent tests that run them, with the very
/// command of the unit tier's controller tests: the same features, so the same build (after
/// those tests, nothing to do). A plain `cargo build -p wardgate-controller` resolves other
/// features and compiled the crate (and on a clean machine its dependencies) once more.
fn build_controller_bins() -> anyhow::Result<()> {
    cmd::run(
        cmd::cargo()
            .arg("test")
            .args(CONTROLLER_TESTS)
            .arg("--no-run"),
    )
}

/// The agent's test files `tests` (release), then `after` (e.g. `--` and libtest flags).
fn agent_tests(tests: &[&str], after: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["--release", "-p", "wardgate-agent"];
    for t in tests {
        args.extend(["--test", t]);
    }
    args.extend(after);
    cargo_test(&args)
}

fn run_tier(tier: Tier) -> anyhow::Result<()> {
    match tier {
        Tier::Fmt => cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"])),
        Tier::Clippy => {
            cmd::run(cmd::cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "wardgate-ebpf",
                "--all-targets",
                "--release",
                "--",
                "-D",
                "warnings",
            ]))?;
            // The eBPF crate only builds for the BPF target, with the pinned nightly.
            cmd::run(
                std::process::Command::new("cargo")
                    .current_dir("ebpf")
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .args([
                        &format!("+{}", setup::EBPF_TOOLCHAIN),
                        "clippy",
                        "--release",
                        "--target",
                        "bpfel-unknown-none",
                        "-Z",
                        "build-std=core",
                        "--",
                        "-D",
                        "warnings",
                    ]),
            )
        }
        Tier::Unit => {
            cargo_test(&[
                "--workspace",
                "--exclude",
                "wardgate-ebpf",
                "--release",
                "--lib",
                "--bins",
            ])?;
            cargo_test(CONTROLLER_TESTS)?;
            // Policy sync and flow-record reports against an in-process controller (no root: the
            // test plays the writer);
            // offline learning from captures; detectors replayed over captures; the agent's systemd
            // unit through systemd-analyze.
            every_agent_test_in_a_tier()?;
            // The HA test runs two controller processes, which no agent test target builds.
            build_controller_bins()?;
            agent_tests(UNIT_AGENT_TESTS, &[])
        }
        Tier::Datapath => {
            privileged_preflight()?;
            agent_tests(DATAPATH_AGENT_TESTS, &[])
        }
        Tier::Attach => {
            privileged_preflight()?;
            // The lifecycle test runs the real wardctl, which no agent test target builds.
            build_controller_bins()?;
            agent_tests(ATTACH_AGENT_TESTS, &["--", "--test-threads=1"])
        }
        Tier::Demo => {
            privileged_preflight()?;
            crate::demo::build_and_run()
        }
        Tier::Package => {
            privileged_preflight()?;
            crate::package_check::run()
        }
    }
}

pub fn run(tiers: &[Tier], no_setup: bool) -> anyhow::Result<()> {
    if !no_setup {
        setup::run().context("setup (run `cargo xtask setup` to see each step)")?;
    }
    let tiers: Vec<Tier> = if tiers.is_empty() {
        ALL.to_vec()
    } else {
        tiers.to_vec()
    };
    let mut results: Vec<(Tier, Result<(), String>, Duration)> = Vec::new();
    for tier in tiers {
        eprintln!("\n==== tier {tier:?} ====");
        let start = Instant::now();
        let res = run_tier(tier).map_err(|e| format!("{e:#}"));
        if let Err(e) = &res {
            eprintln!("tier {tier:?} FAILED: {e}");
        }
        results.push((tier, res, start.elapsed()));
    }
    println!("\n| tier | result | seconds |\n|---|---|---:|");
    for (tier, res, took) in &results {
        let r = if res.is_ok() { "passed" } else { "FAILED" };
        println!("| {tier:?} | {r} | {:.0} |", took.as_secs_f64());
    }
    let failed = results.iter().filter(|(_, r, _)| r.is_err()).count();
    let passed = results.len() - failed;
    println!("tiers: {passed} passed, {failed} failed");
    // Again after the table: a CI log may keep only the end of a long run.
    for (tier, res, _) in &results {
        if let Err(e) = res {
            println!("\n==== why tier {tier:?} failed\n{e}");
        }
    }
    if failed > 0 {
        bail!("{failed} test tier(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::failures;

    #[test]
    fn the_failure_summary_keeps_what_the_test_said_and_drops_its_backtrace() {
        let out = "running 1 test\ntest a ... FAILED\n\nfailures:\n\n---- a stdout ----\n\
                   thread 'a' panicked at x.rs:1:5:\nonly live [\"dns_tunnel\"]\n\
                   stack backtrace:\n   0: __rustc::rust_begin_unwind\n   1: a::f\n\
                   \x20            at ./x.rs:1:5\n\
                   note: Some details are omitted, run with `RUST_BACKTRACE=full`\n\n\
                   failures:\n    a\n\ntest result: FAILED. 0 passed; 1 failed\n";
        let s = failures(out);
        assert!(s.contains("only live [\"dns_tunnel\"]"), "{s}");
        assert!(s.contains("panicked at x.rs:1:5"), "{s}");
        for gone in [
            "stack backtrace",
            "rust_begin_unwind",
            "a::f",
            "./x.rs",
            "RUST_BACKTRACE",
        ] {
            assert!(!s.contains(gone), "{gone} left in:\n{s}");
        }
    }
}
