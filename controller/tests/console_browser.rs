//! The console in real headless Chromium: `tests/browser/console.mjs` (playwright-core driving
//! Debian's `/usr/bin/chromium`, axe-core on every page) against this process's console and
//! mock Pro Santé Connect. Engineer 1 proposes, simulates and submits; engineer 2 reviews and approves; a
//! viewer sees no write button and a forged POST is 403; a screenshot of each page goes to
//! `docs/images/console-*.png` when `WARDGATE_SCREENSHOTS` is set (a temporary directory
//! otherwise). Needs node, npm and chromium (`cargo xtask setup` installs
//! them): without them the test fails, it never skips.

mod console_harness;

use std::{path::Path, process::Command};

use console_harness::{psc::MockPsc, psc::User, *};
use wardgate_controller::store::Store;

const DEVICE: &str = "pump-0000";

fn need(program: &str, hint: &str) {
    let found = Command::new(program).arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "`{program}` is required by the browser test ({hint}); it does not skip"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engineers_loop_in_headless_chromium_with_no_serious_axe_violation() {
    need("node", "apt-get install nodejs");
    need("npm", "apt-get install npm");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is required by the browser test (apt-get install chromium); it does \
         not skip"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules").exists() {
        let ci = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(ci.success(), "npm ci in {}", dir.display());
    }

    let psc = MockPsc::start().await;
    psc.add_users(&[
        User::new("899700000001", "Hélène", "Martin"),
        User::new("899700000002", "Karim", "Benali"),
        User::new("899700000003", "Victor", "Durand"),
    ]);
    let c = Console::start_with(8, |cfg, addr| {
        cfg.oidc = Some(oidc_config(
            &psc,
            addr,
            &["899700000001", "899700000002"],
            &["899700000003"],
        ));
    })
    .await;
    report_flows(&c, DEVICE);
    // The committed screenshots change only on request (`WARDGATE_SCREENSHOTS=1`): a test run
    // leaves the tree clean, its pictures in a temporary directory.
    let shot_dir = tempfile::tempdir().unwrap();
    let shots = if std::env::var_os("WARDGATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/images")
    } else {
        shot_dir.path().to_path_buf()
    };

    let mut node = Command::new("node");
    node.arg("console.mjs")
        .current_dir(&dir)
        .env(
            "CONSOLE_URL",
            format!("https://localhost:{}", c.addr.port()),
        )
        .env("PSC_URL", psc.base())
        .env("DEVICE", DEVICE)
        .env("SHOTS", &shots);
    // The console and the mock run on this runtime's other thread meanwhile.
    let out = tokio::task::block_in_place(|| node.output()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "node console.mjs: {stderr}\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["pages"].as_array().unwrap().len(), 9, "{report}");
    assert_eq!(report["axe"].as_array().unwrap().len(), 0, "{report}");

    // What the browser did, as the store has it.
    let d = c.store.device(DEVICE).unwrap().unwrap();
    assert_ne!(
        d.profile, "infusion-pump",
        "the approved profile is applied"
    );
    // pump-0000 enforces from the start; the viewer's forged POST asked for quarantine.
    assert_eq!(
        d.mode.to_string(),
        "enforce",
        "the viewer's forged mode change wrote nothing"
    );
    assert!(!audit_has_quarantine(&c));
    let audit = c.store.audit().unwrap();
    let approved = audit.iter().find(|e| e.action == "approve_change").unwrap();
    assert_eq!(approved.actor, "user:899700000002");
    assert!(approved.diff.contains("899700000001"));
    for page in [
        "login",
        "inventory",
        "device",
        "proposal",
        "simulation",
        "submitted",
        "approved",
        "viewer",
    ] {
        let png = shots.join(format!("console-{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", png.display());
    }
}

fn audit_has_quarantine(c: &Console) -> bool {
    c.store
        .audit()
        .unwrap()
        .iter()
        .any(|e| e.action == "set_mode" || e.diff.contains("quarantine"))
}

/// The site at a glance (`tests/browser/glance.mjs`): a viewer reaches the matrix and the
/// gateways from the navigation; both pages axe-clean, screenshots `console-matrix.png` and
/// `console-gateways.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_at_a_glance_in_headless_chromium_with_no_serious_axe_violation() {
    use wardgate_controller::{
        auth::Role,
        console::session,
        store::{Change, IssuedCert},
    };
    need("node", "apt-get install nodejs");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is required"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules").exists() {
        let ci = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(ci.success(), "npm ci in {}", dir.display());
    }
    let c = Console::start(6, 900).await;
    report_flows(&c, DEVICE);
    let now = wardgate_controller::audit::now_ms();
    c.ctx
        .write(
            "gateway:gw-ward-3",
            "renewal",
            Change::RenewCertificate {
                gateway: "gw-ward-3".into(),
                cert: IssuedCert {
                    serial: "0a".into(),
                    not_after_ms: now + 10 * 86_400_000,
                },
            },
        )
        .unwrap();
    let _watch = c.ctx.push.watch("gw-ward-3");
    let (b, _) = c.browser_as("vera", Role::Viewer);
    let id = b.cookies[session::COOKIE].clone();
    let shot_dir = tempfile::tempdir().unwrap();
    let shots = if std::env::var_os("WARDGATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/images")
    } else {
        shot_dir.path().to_path_buf()
    };
    let mut node = Command::new("node");
    node.arg("glance.mjs")
        .current_dir(&dir)
        .env(
            "CONSOLE_URL",
            format!("https://localhost:{}", c.addr.port()),
        )
        .env("SESSION", id)
        .env("SHOTS", &shots);
    let out = tokio::task::block_in_place(|| node.output()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "node glance.mjs: {stderr}\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["pages"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["axe"].as_array().unwrap().len(), 0, "{report}");
    for page in ["matrix", "gateways"] {
        let png = shots.join(format!("console-{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", png.display());
    }
}
