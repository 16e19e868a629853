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

/// node, npm and chromium checked, `npm ci` run once (the tests run at the same time): the
/// scripts' directory.
fn browser_dir() -> std::path::PathBuf {
    static NPM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    need("node", "apt-get install nodejs");
    need("npm", "apt-get install npm");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is required by the browser test (apt-get install chromium); it does \
         not skip"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let _one = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join("node_modules").exists() {
        let ci = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(ci.success(), "npm ci in {}", dir.display());
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engineers_loop_in_headless_chromium_with_no_serious_axe_violation() {
    let dir = browser_dir();

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

/// The availability warning in the browser (`tests/browser/impact.mjs`): the warning and its
/// checkbox after a simulation, submit refused unticked then accepted, the review's warning,
/// the approval with the box ticked; axe on each page; `console-impact.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_availability_warning_needs_its_checkbox_in_headless_chromium() {
    let dir = browser_dir();
    let psc = MockPsc::start().await;
    psc.add_users(&[
        User::new("899700000001", "Hélène", "Martin"),
        User::new("899700000002", "Karim", "Benali"),
    ]);
    let c = Console::start_with(8, |cfg, addr| {
        cfg.oidc = Some(oidc_config(
            &psc,
            addr,
            &["899700000001", "899700000002"],
            &[],
        ));
    })
    .await;
    report_flows(&c, DEVICE);
    let pump = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles/infusion-pump.yaml"),
    )
    .unwrap();
    let candidate = pump
        .replace("name: infusion-pump\n", "name: infusion-pump-nodns\n")
        .replace(
            "  - name: dns\n    direction: from-device\n    protocol: udp\n    peers: [group:dns]\n    ports: 53\n",
            "",
        );
    let shot_dir = tempfile::tempdir().unwrap();
    let shots = if std::env::var_os("WARDGATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/images")
    } else {
        shot_dir.path().to_path_buf()
    };
    let mut node = Command::new("node");
    node.arg("impact.mjs")
        .current_dir(&dir)
        .env(
            "CONSOLE_URL",
            format!("https://localhost:{}", c.addr.port()),
        )
        .env("PSC_URL", psc.base())
        .env("DEVICE", DEVICE)
        .env("CANDIDATE", &candidate)
        .env("SHOTS", &shots);
    let out = tokio::task::block_in_place(|| node.output()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "node impact.mjs: {stderr}\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["pages"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["axe"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(
        c.store.device(DEVICE).unwrap().unwrap().profile,
        "infusion-pump-nodns"
    );
    let audit = c.store.audit().unwrap();
    let approved = audit.iter().find(|e| e.action == "approve_change").unwrap();
    assert!(
        approved.diff.contains("impact_accepted"),
        "{}",
        approved.diff
    );
    let png = std::fs::read(shots.join("console-impact.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
}
