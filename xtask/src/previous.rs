//! The previous release: what the package tier upgrades from and downgrades back to, and what
//! its skew check pairs with this release. Built from its commit once (one release build of the
//! agent and the controller, sharing this workspace's target directory so the dependencies are
//! compiled once for both); its .debs are kept under `target/previous/<commit>/`, so a rerun
//! reuses them.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

use crate::{cmd, package};

/// The previous release's commit (the last main commit that passed CI before versions were
/// exchanged and checked). Change it, and [`VERSION`], at each release.
pub const COMMIT: &str = "9c15ebdb086a0df94dacb5eed8eaa19ca5f09edc";

/// Its workspace version (the .debs' version is this with `-1`).
pub const VERSION: &str = "0.1.0";

/// The workspace root (xtask is one of its members).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cargo target directory the builds share.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The previous release's .debs (agent, controller, in [`package::PACKAGES`] order), built on
/// first use.
pub fn debs() -> anyhow::Result<Vec<PathBuf>> {
    let target = target_dir();
    let out = target.join("previous").join(COMMIT);
    let debs: Vec<PathBuf> = package::PACKAGES
        .iter()
        .map(|p| out.join(format!("{p}_{VERSION}-1_amd64.deb")))
        .collect();
    if debs.iter().all(|d| d.exists()) {
        println!(
            "previous release {VERSION} ({}): reusing {}",
            &COMMIT[..7],
            out.display()
        );
        return Ok(debs);
    }
    let root = root();
    let present = || {
        cmd::succeeds(Command::new("git").arg("-C").arg(&root).args([
            "cat-file",
            "-e",
            &format!("{COMMIT}^{{commit}}"),
        ]))
    };
    if !present() {
        // A shallow clone lacks the older commit: deepen it from where it was cloned (an
        // ancestor of main, so a full history has it). Failures are told by the check below.
        println!(
            "previous release {VERSION}: {} not in this clone; fetching it",
            &COMMIT[..7]
        );
        let _ = cmd::succeeds(Command::new("git").arg("-C").arg(&root).args([
            "fetch",
            "--quiet",
            "--unshallow",
        ]));
        if !present() {
            let _ = cmd::succeeds(
                Command::new("git")
                    .arg("-C")
                    .arg(&root)
                    .args(["fetch", "--quiet", "origin", COMMIT]),
            );
        }
    }
    ensure!(
        present(),
        "the previous release's commit {COMMIT} is not in this clone (a shallow clone? \
         `git fetch --unshallow`)"
    );
    let src = target
        .join("previous")
        .join(format!("src-{}", &COMMIT[..7]));
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    let tar = target
        .join("previous")
        .join(format!("{}.tar", &COMMIT[..7]));
    cmd::run(
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["archive", "--output"])
            .arg(&tar)
            .arg(COMMIT),
    )?;
    cmd::run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&src))?;
    std::fs::remove_file(&tar)?;

    let started = Instant::now();
    let mut build = cmd::cargo();
    build
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--release"])
        .args(package::PACKAGES.iter().flat_map(|p| ["-p", p]))
        .env_remove("AYA_BUILD_SKIP");
    cmd::run(&mut build).context("building the previous release")?;
    std::fs::create_dir_all(&out)?;
    for (package, deb) in package::PACKAGES.iter().zip(&debs) {
        cmd::run(
            cmd::cargo()
                .current_dir(&src)
                .env("CARGO_TARGET_DIR", &target)
                .args(["deb", "--no-build", "-p", package, "--output"])
                .arg(deb),
        )?;
        if !deb.exists() {
            bail!("cargo deb -p {package} wrote no {}", deb.display());
        }
    }
    println!(
        "previous release {VERSION} ({}) built in {:.0?}: {}",
        &COMMIT[..7],
        started.elapsed(),
        out.display()
    );
    std::fs::remove_dir_all(&src)?;
    Ok(debs)
}

/// The files of `deb` unpacked under `dir` (its binaries run without installing it).
pub fn unpack(deb: &Path, dir: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))
}
