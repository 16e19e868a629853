//! `cargo xtask fuzz`: runs every cargo-fuzz target in fuzz/ for a bounded time (not a test tier).

use std::process::Command;

use anyhow::Context as _;

use crate::{cmd, setup::EBPF_TOOLCHAIN};

pub fn run(seconds: u64) -> anyhow::Result<()> {
    if !cmd::succeeds(Command::new("cargo").args([
        &format!("+{EBPF_TOOLCHAIN}"),
        "fuzz",
        "--version",
    ])) {
        cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz")?;
    }
    let list =
        cmd::output(Command::new("cargo").args([&format!("+{EBPF_TOOLCHAIN}"), "fuzz", "list"]))?;
    let targets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    anyhow::ensure!(!targets.is_empty(), "no fuzz targets in fuzz/");
    for t in targets {
        cmd::run(Command::new("cargo").args([
            &format!("+{EBPF_TOOLCHAIN}"),
            "fuzz",
            "run",
            t,
            "--",
            &format!("-max_total_time={seconds}"),
        ]))?;
    }
    Ok(())
}
