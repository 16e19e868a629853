//! Checks of the systemd units in packaging/systemd with systemd's own tools, for the tests of
//! both daemons: `systemd-analyze verify` (syntax, known keys, the ExecStart binary runs) and
//! `systemd-analyze security --offline` (the sandbox's exposure score).

use std::{path::Path, process::Command};

/// Highest exposure score accepted (systemd's scale, 0-10; below 4.0 is "OK").
pub const MAX_EXPOSURE: f64 = 3.0;

/// Verifies `unit` (named `<name>.service`) as if `/usr/bin/<exe name>` were `exe`: a copy with
/// that path rewritten, so the check runs against the binary just built. Returns the exposure
/// score; any warning is an error.
pub fn check(unit: &Path, exe: &Path) -> Result<f64, String> {
    let text = std::fs::read_to_string(unit).map_err(|e| format!("{}: {e}", unit.display()))?;
    let name = exe
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("exe has no file name")?;
    let installed = format!("/usr/bin/{name}");
    if !text.contains(&format!("ExecStart={installed} ")) {
        return Err(format!("{} does not start {installed}", unit.display()));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let copy = dir
        .path()
        .join(unit.file_name().ok_or("unit has no file name")?);
    std::fs::write(&copy, text.replace(&installed, &exe.to_string_lossy()))
        .map_err(|e| e.to_string())?;
    let run = |args: &[&str]| {
        let out = Command::new("systemd-analyze")
            .args(args)
            .arg(&copy)
            .output()
            .map_err(|e| format!("systemd-analyze (apt install systemd): {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() || !stderr.trim().is_empty() {
            return Err(format!(
                "systemd-analyze {} {}: {}\n{stderr}{stdout}",
                args.join(" "),
                unit.display(),
                out.status
            ));
        }
        Ok(stdout)
    };
    run(&["verify"])?;
    let report = run(&["security", "--offline=yes", "--no-pager"])?;
    let score: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for "))
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no exposure level in:\n{report}"))?;
    if score > MAX_EXPOSURE {
        return Err(format!(
            "{} exposure {score} > {MAX_EXPOSURE}:\n{report}",
            unit.display()
        ));
    }
    Ok(score)
}
