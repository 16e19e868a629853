//! `cargo xtask fuzz`: runs every cargo-fuzz target in fuzz/ for a bounded time (not a test tier).

use std::process::Command;

use anyhow::Context as _;

use crate::{cmd, setup::EBPF_TOOLCHAIN};

/// Seeds each target's corpus with the project's own valid inputs (profiles, sites, MUD files).
fn seed() -> anyhow::Result<()> {
    let seeds: [(&str, &str, &str); 3] = [
        ("profile_yaml", "device-profiles", "yaml"),
        ("site_yaml", "device-profiles/sites", "yaml"),
        (
            "mud_json",
            "policy/tests/fixtures/mud/nist-mud/test/unittest",
            "json",
        ),
    ];
    for (target, dir, ext) in seeds {
        let dest = std::path::Path::new("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dest)?;
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == ext) {
                    std::fs::copy(&p, dest.join(p.file_name().expect("file name")))?;
                }
            }
        }
    }
    Ok(())
}

pub fn run(seconds: u64) -> anyhow::Result<()> {
    seed()?;
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
