//! wardctl's file commands, run as a user would: the real binary, real files.

use std::{path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn wardctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wardctl"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn validate_passes_on_the_shipped_library() {
    let (ok, out, err) = wardctl(&[
        "profile",
        "validate",
        "device-profiles/",
        "--site",
        "device-profiles/sites/demo-ward.yaml",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("14 profiles valid"), "{out}");
    let (ok, out, _) = wardctl(&[
        "--output",
        "json",
        "profile",
        "validate",
        "device-profiles/",
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["profiles"].as_array().unwrap().len(), 14);
}

#[test]
fn validate_fails_on_broken_files_with_positions() {
    let (ok, _, err) = wardctl(&["profile", "validate", "policy/tests/broken"]);
    assert!(!ok);
    assert!(
        err.contains(
            "policy/tests/broken/bad-values.yaml:11:12: error: port 70000 is out of range"
        ),
        "{err}"
    );
    assert!(
        err.contains("policy/tests/broken/typo-key.yaml:5:5: error:"),
        "{err}"
    );
    let (ok, out, _) = wardctl(&[
        "--output",
        "json",
        "profile",
        "validate",
        "policy/tests/broken",
    ]);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["line"] == 11 && p["column"] == 12)
    );
}

#[test]
fn show_compile_and_diff() {
    let (ok, out, err) = wardctl(&["profile", "show", "lab-analyzer"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("2575-2580")
            && out.contains("application rule (enforced at each flow's first message): hl7 sending_application ANALYZER; receiving_application LIS"),
        "{out}"
    );
    let (ok, _, err) = wardctl(&["profile", "show", "lab-analyser"]);
    assert!(!ok && err.contains("did you mean `lab-analyzer`"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("desired.json");
    let (ok, _, err) = wardctl(&[
        "site",
        "compile",
        "--site",
        "device-profiles/sites/demo-ward.yaml",
        "--gateway",
        "gw-ward-3",
        "--generation",
        "9",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let state =
        wardgate_policy::DesiredState::from_json(&std::fs::read_to_string(&out_file).unwrap())
            .unwrap();
    assert_eq!(
        (
            state.gateway.as_str(),
            state.generation,
            state.devices.len()
        ),
        ("gw-ward-3", 9, 3)
    );
    let (ok, _, err) = wardctl(&[
        "site",
        "compile",
        "--site",
        "device-profiles/sites/demo-ward.yaml",
        "--gateway",
        "gw-nope",
    ]);
    assert!(
        !ok && err.contains("gateway `gw-nope` is not in the site"),
        "{err}"
    );

    let changed = dir.path().join("site2.yaml");
    let text =
        std::fs::read_to_string(root().join("device-profiles/sites/demo-ward.yaml")).unwrap();
    std::fs::write(&changed, text.replace("mode: monitor", "mode: enforce")).unwrap();
    let (ok, out, err) = wardctl(&[
        "--output",
        "json",
        "site",
        "diff",
        "device-profiles/sites/demo-ward.yaml",
        changed.to_str().unwrap(),
        "--gateway",
        "gw-ward-3",
    ]);
    assert!(ok, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        d["devices_changed"],
        serde_json::json!(["monitor-3a-bed12"])
    );
}

#[test]
fn import_mud_writes_a_valid_profile() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("super1.yaml");
    let (ok, _, err) = wardctl(&[
        "profile",
        "import-mud",
        "policy/tests/fixtures/mud/nist-mud/test/unittest/mud-controllerclass-test/mudfile-controllerclass-test.json",
        "--bind",
        "controller=his",
        "--name",
        "super1",
        "--out",
        dest.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&dest).unwrap();
    let p = wardgate_policy::parse_profile("super1.yaml", &text).unwrap();
    assert_eq!(p.name.value, "super1");
    assert_eq!(p.flows[0].peers[0].value, "group:his");
    let (ok, _, err) = wardctl(&["profile", "import-mud", "README.md"]);
    assert!(!ok && err.contains("not JSON"), "{err}");
    let (ok, _, err) = wardctl(&["profile", "import-mud", "x.json", "--bind", "ctrl=his"]);
    assert!(!ok && err.contains("not a MUD abstraction"), "{err}");
}

#[test]
fn a_missing_file_names_the_flag_that_chose_it() {
    // No controller is needed: the files are read before connecting.
    let (ok, _, err) = wardctl(&[
        "push",
        "--site",
        "no-such-site.yaml",
        "--reason",
        "x",
        "--controller",
        "https://localhost:1",
    ]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: reading the site file no-such-site.yaml (--site): no such file"
    );
    let (ok, _, err) = wardctl(&[
        "push",
        "--site",
        "device-profiles/sites/demo-ward.yaml",
        "--profiles",
        "no-such-dir",
        "--dry-run",
    ]);
    assert!(
        !ok && err.contains("no profile directory no-such-dir (--profiles"),
        "{err}"
    );
    let (ok, _, err) = wardctl(&["simulate", "--profile", "no-such.yaml", "--device", "pump"]);
    assert!(
        !ok && err.contains("no-such.yaml (--profile): no such file"),
        "{err}"
    );
}
