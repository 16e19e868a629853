//! `cargo xtask demo`: builds the release binaries and runs the demo ward.

use crate::cmd;

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "-p",
        "wardgate-agent",
        "-p",
        "wardgate-controller",
    ]))?;
    cmd::run(cmd::cargo().args([
        "run",
        "--release",
        "-p",
        "wardgate-agent",
        "--bin",
        "wardgate-demo",
    ]))
}
