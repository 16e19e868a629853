//! `cargo xtask demo [--keep]`: builds the release binaries and runs the demo ward (with
//! `--keep` it stays up until Ctrl-C, the console reachable from the browser).

use crate::cmd;

pub fn run(keep: bool) -> anyhow::Result<()> {
    crate::setup::run()?;
    build(keep)
}

/// Builds the agent and controller binaries the demo starts, then runs it (fails if any flow
/// does not behave as the policy says).
pub fn build_and_run() -> anyhow::Result<()> {
    build(false)
}

fn build(keep: bool) -> anyhow::Result<()> {
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "-p",
        "wardgate-agent",
        "-p",
        "wardgate-controller",
    ]))?;
    let mut run = cmd::cargo();
    run.args([
        "run",
        "--release",
        "-p",
        "wardgate-testkit",
        "--bin",
        "wardgate-demo",
    ]);
    if keep {
        run.args(["--", "--keep"]);
    }
    cmd::run_keeping_tail(&mut run, 60)
}
