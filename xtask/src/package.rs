//! `cargo xtask package`: .deb packages of the agent and the controller with cargo-deb (pinned,
//! installed by `cargo xtask setup`). What each holds is `[package.metadata.deb]` in its
//! Cargo.toml; the units are packaging/systemd, the example configs packaging/examples.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::cmd;

/// The cargo-deb `cargo xtask setup` installs.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// The packages, named as their crates.
pub const PACKAGES: [&str; 2] = ["wardgate-agent", "wardgate-controller"];

/// Builds the release binaries (the agent with its eBPF object embedded), then one .deb per
/// package; returns their paths.
pub fn run() -> anyhow::Result<Vec<PathBuf>> {
    let mut build = cmd::cargo();
    build
        .args(["build", "--release"])
        .args(PACKAGES.iter().flat_map(|p| ["-p", p]))
        // A package must carry the real datapath, never the empty object of a host-only build.
        .env_remove("AYA_BUILD_SKIP");
    cmd::run(&mut build)?;
    let mut debs = Vec::new();
    for package in PACKAGES {
        let out = cmd::output(cmd::cargo().args(["deb", "--no-build", "-p", package]))
            .context("cargo deb (run `cargo xtask setup` to install cargo-deb)")?;
        let Some(path) = out.lines().rev().find(|l| l.ends_with(".deb")) else {
            bail!("cargo deb -p {package} named no .deb:\n{out}");
        };
        println!("{path}");
        debs.push(PathBuf::from(path));
    }
    Ok(debs)
}
