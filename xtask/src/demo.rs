//! `cargo xtask demo`: builds the release binaries and runs the demo ward.

use crate::cmd;

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    build_and_run()
}

/// Builds the agent and controller binaries the demo starts, then runs it (fails if any flow
/// does not behave as the policy says).
pub fn build_and_run() -> anyhow::Result<()> {
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
        "wardgate-testkit",
        "--bin",
        "wardgate-demo",
    ]))
}
