//! The package tier's skew check (issue 23 point 4): the demo ward's short story
//! (`wardgate-demo` with `WARDGATE_DEMO_AGENT` or `WARDGATE_DEMO_CONTROLLER` set tells only what
//! the previous release can: policy synced and applied three times, deny alerts at the SOC,
//! flow records at the controller; the whole story needs `wardctl changes` and the console) run
//! with the previous release's agent against this release's controller, then with this agent
//! against the previous controller and its wardctl. The previous binaries come out of its .debs.
//! An incompatible pairing is refused at `Register` (controller/tests/api.rs,
//! proto/src/compat.rs).

use std::{path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::{cmd, previous};

pub fn run(previous_debs: &[PathBuf]) -> anyhow::Result<()> {
    let root = previous::target_dir()
        .join("previous")
        .join(previous::COMMIT)
        .join("root");
    for deb in previous_debs {
        previous::unpack(deb, &root.join(deb.file_stem().context("deb name")?))?;
    }
    let bin = |deb: &PathBuf| -> anyhow::Result<PathBuf> {
        Ok(root
            .join(deb.file_stem().context("deb name")?)
            .join("usr/bin"))
    };
    let (agent_dir, controller_dir) = (bin(&previous_debs[0])?, bin(&previous_debs[1])?);
    cmd::run(
        cmd::cargo()
            .args([
                "build",
                "--release",
                "-p",
                "wardgate-testkit",
                "--bin",
                "wardgate-demo",
            ])
            .env_remove("AYA_BUILD_SKIP"),
    )?;
    let demo = previous::target_dir().join("release/wardgate-demo");
    for (what, key, value) in [
        (
            "the previous agent against this controller",
            "WARDGATE_DEMO_AGENT",
            agent_dir.join("wardgate-agent"),
        ),
        (
            "this agent against the previous controller",
            "WARDGATE_DEMO_CONTROLLER",
            controller_dir,
        ),
    ] {
        println!("skew: {what} ({})", previous::VERSION);
        cmd::run(Command::new(&demo).env(key, &value)).with_context(|| format!("skew: {what}"))?;
        println!("skew: {what}: policy synced, alerts and flow records delivered");
    }
    Ok(())
}
