//! The real wardctl against a [`LabController`] on loopback, as a given identity
//! (`user-NAME`), from the repository root (so relative paths in arguments resolve there).
//! Include with `#[path = "support/wardctl.rs"] mod wardctl;`.

// Each test file uses what it needs of it.
#![allow(dead_code)]

use std::process::Command;

use wardgate_testkit::controller::LabController;

/// wardctl's exit status, stdout and stderr.
pub async fn run(lab: &LabController, identity: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardctl"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .env("WARDGATE_CONTROLLER", lab.url())
        .env("WARDGATE_CERTS", lab.certs())
        .env("WARDGATE_AS", identity);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// wardctl's stdout; panics (with its stderr) if it failed.
pub async fn ok(lab: &LabController, identity: &str, args: &[&str]) -> String {
    let (ok, out, err) = run(lab, identity, args).await;
    assert!(ok, "wardctl {args:?} as {identity}: {err}");
    out
}
