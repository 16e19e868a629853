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

/// Where screenshots go: `docs/images` with `WARDGATE_SCREENSHOTS` set, `tmp` otherwise.
fn shots_dir(tmp: &Path) -> std::path::PathBuf {
    if std::env::var_os("WARDGATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/images")
    } else {
        tmp.to_path_buf()
    }
}

/// A scan alert of `device` on gw-ward-3, as its agent reports it, stored.
fn store_alert(c: &Console, id: &str, device: &str, summary: &str) {
    use wardgate_analysis::detect::{Finding, Matrix, Metric, Severity, Technique};
    let d = wardgate_analysis::flow::DeviceRef {
        name: device.into(),
        id: None,
        mac: None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut f = Finding::new(
        "scan_vertical",
        &d,
        now,
        Severity::High,
        0.9,
        Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
    );
    f.id = id.into();
    f.first_seen_ns = now - 60_000_000_000;
    f.last_seen_ns = now;
    f.count = 1;
    f.peer = Some("198.51.100.10".parse().unwrap());
    f.summary = summary.into();
    f.evidence.window_start_ns = f.first_seen_ns;
    f.evidence.window_end_ns = now;
    f.evidence.metrics = vec![Metric::new("distinct_ports", 40.0).threshold(20.0)];
    f.evidence.ports = vec![22, 80, 443, 3389];
    wardgate_controller::alerts::enrich(c.store.as_ref(), &mut f).unwrap();
    c.store
        .insert_alerts("gw-ward-3", &[wardgate_controller::alerts::new_row(&f)])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soc_user_sees_alerts_arrive_and_acknowledges_one_in_headless_chromium() {
    const SOC_USER: &str = "899700000004";
    const SUMMARY: &str = "pump-0002 touched 40 ports of 198.51.100.10";
    const LATER: &str = "monitor-0003 touched 40 ports of 198.51.100.10";
    let dir = browser_dir();
    let psc = MockPsc::start().await;
    psc.add_users(&[User::new(SOC_USER, "Samia", "Haddad")]);
    let c = Console::start_with(8, |cfg, addr| {
        let mut oidc = oidc_config(&psc, addr, &[], &[]);
        oidc.roles.soc = vec![SOC_USER.into()];
        cfg.oidc = Some(oidc);
    })
    .await;
    store_alert(&c, "scan-1", "pump-0002", SUMMARY);
    let tmp = tempfile::tempdir().unwrap();
    let shots = shots_dir(tmp.path());
    // The second alert is stored once the script has the list open (it writes this file).
    let ready = tmp.path().join("ready");

    let mut node = Command::new("node");
    node.arg("soc.mjs")
        .current_dir(&dir)
        .env(
            "CONSOLE_URL",
            format!("https://localhost:{}", c.addr.port()),
        )
        .env("PSC_URL", psc.base())
        .env("SOC_USER", SOC_USER)
        .env("SUMMARY", SUMMARY)
        .env("LATER", LATER)
        .env("READY_FILE", &ready)
        .env("SHOTS", &shots);
    let node = tokio::task::spawn_blocking(move || node.output());
    // Waits (at most 60 s) for the script to have the list open, then stores the next alert.
    for _ in 0..600 {
        if ready.exists() {
            store_alert(&c, "scan-2", "monitor-0003", LATER);
            break;
        }
        if node.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = node.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "node soc.mjs: {stderr}\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["pages"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["axe"].as_array().unwrap().len(), 0, "{report}");

    // What the browser did, as the store has it.
    let audit = c.store.audit().unwrap();
    let ack = audit
        .iter()
        .find(|e| e.action == "acknowledge_alerts")
        .expect("the acknowledgement is in the trail");
    assert_eq!(ack.actor, format!("user:{SOC_USER}"));
    assert_eq!(ack.target, "gw-ward-3/scan-1");
    assert_eq!(ack.reason, "INC-2041: scheduled vulnerability scan");
    for page in ["alerts", "alert", "audit"] {
        let png = shots.join(format!("console-{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", png.display());
    }
}

/// Runs `script` (in `tests/browser/`) with `env`; its JSON report. Fails without node, npm or
/// chromium (it never skips).
fn run_scenario(script: &str, env: &[(&str, String)]) -> serde_json::Value {
    let dir = browser_dir();
    let mut node = Command::new("node");
    node.arg(script).current_dir(&dir);
    for (k, v) in env {
        node.env(k, v);
    }
    let out = tokio::task::block_in_place(|| node.output()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "node {script}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

/// `tests/browser/import.mjs`: an engineer imports a CSV inventory, sees the diff, confirms,
/// and opens the device's page with its sources and charts; axe-core on each page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engineer_imports_a_csv_in_headless_chromium() {
    let psc = MockPsc::start().await;
    psc.add_users(&[User::new("899700000001", "Hélène", "Martin")]);
    let c = Console::start_with(4, |cfg, addr| {
        cfg.oidc = Some(oidc_config(&psc, addr, &["899700000001"], &[]));
    })
    .await;
    report_flows(&c, DEVICE);
    let tmp = tempfile::tempdir().unwrap();
    let shots = shots_dir(tmp.path());
    let report = run_scenario(
        "import.mjs",
        &[
            (
                "CONSOLE_URL",
                format!("https://localhost:{}", c.addr.port()),
            ),
            ("PSC_URL", psc.base()),
            ("DEVICE", DEVICE.to_string()),
            ("SHOTS", shots.display().to_string()),
        ],
    );
    assert_eq!(report["pages"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["axe"].as_array().unwrap().len(), 0, "{report}");
    // What the browser did, as the store has it.
    let new = c.store.device("pump-new-1").unwrap().unwrap();
    assert_eq!(new.mode.to_string(), "learn");
    assert_eq!(c.store.device(DEVICE).unwrap().unwrap().location, "ICU 3");
    let last = c.store.audit().unwrap().pop().unwrap();
    assert_eq!(last.action, "import_devices");
    for page in ["import", "import-diff", "device-charts"] {
        let png = shots.join(format!("console-{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", png.display());
    }
}

/// The site at a glance (`tests/browser/glance.mjs`): a viewer reaches the matrix and the
/// gateways from the navigation (one agent's reported release and fired watchdog, the other's
/// "not reported"); both pages axe-clean, screenshots `console-matrix.png` and
/// `console-gateways.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_at_a_glance_in_headless_chromium_with_no_serious_axe_violation() {
    use wardgate_controller::{
        auth::Role,
        console::session,
        store::{AgentHealth, Change, IssuedCert},
    };
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
    // gw-ward-3's agent reported its health with the watchdog fired; gw-ward-4's none.
    let latest = c.store.latest_generation("gw-ward-3").unwrap();
    let health = AgentHealth {
        agent_version: "0.9.1".into(),
        watchdog_fired: true,
        watchdog_fired_count: 1,
        fail_open_devices: 1,
        ..Default::default()
    };
    c.store
        .report_status(
            "gw-ward-3",
            latest,
            &c.store.epoch().unwrap(),
            "",
            Some(&health),
        )
        .unwrap();
    let (b, _) = c.browser_as("vera", Role::Viewer);
    let id = b.cookies[session::COOKIE].clone();
    let tmp = tempfile::tempdir().unwrap();
    let shots = shots_dir(tmp.path());
    let report = run_scenario(
        "glance.mjs",
        &[
            (
                "CONSOLE_URL",
                format!("https://localhost:{}", c.addr.port()),
            ),
            ("SESSION", id),
            ("SHOTS", shots.display().to_string()),
        ],
    );
    assert_eq!(report["pages"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["axe"].as_array().unwrap().len(), 0, "{report}");
    for page in ["matrix", "gateways"] {
        let png = shots.join(format!("console-{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", png.display());
    }
}

/// The availability warning in the browser (`tests/browser/impact.mjs`): the warning and its
/// checkbox after a simulation, submit refused unticked then accepted, the review's warning,
/// the approval with the box ticked; axe on each page; `console-impact.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_availability_warning_needs_its_checkbox_in_headless_chromium() {
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
    let tmp = tempfile::tempdir().unwrap();
    let shots = shots_dir(tmp.path());
    let report = run_scenario(
        "impact.mjs",
        &[
            (
                "CONSOLE_URL",
                format!("https://localhost:{}", c.addr.port()),
            ),
            ("PSC_URL", psc.base()),
            ("DEVICE", DEVICE.to_string()),
            ("CANDIDATE", candidate),
            ("SHOTS", shots.display().to_string()),
        ],
    );
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

/// The device page's flow list (`tests/browser/flows.mjs`): a viewer opens the device from the
/// inventory and reads its flows with their verdicts and rules (a table with a caption and
/// column headers); axe-clean, screenshot `console-device-flows.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_a_devices_flows_in_headless_chromium() {
    use wardgate_controller::{auth::Role, console::session};
    let c = Console::start(6, 900).await;
    report_flows(&c, DEVICE);
    let (b, _) = c.browser_as("vera", Role::Viewer);
    let id = b.cookies[session::COOKIE].clone();
    let tmp = tempfile::tempdir().unwrap();
    let shots = shots_dir(tmp.path());
    let report = run_scenario(
        "flows.mjs",
        &[
            (
                "CONSOLE_URL",
                format!("https://localhost:{}", c.addr.port()),
            ),
            ("SESSION", id),
            ("DEVICE", DEVICE.to_string()),
            ("SHOTS", shots.display().to_string()),
        ],
    );
    assert_eq!(report["pages"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["axe"].as_array().unwrap().len(), 0, "{report}");
    let png = std::fs::read(shots.join("console-device-flows.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
}

/// `tests/browser/session.mjs`: the mode form submitted by Chromium without its CSRF token and a
/// script's POST with a forged one are refused and change nothing; a session left idle past its
/// timeout sends the next click back to the login ("Your session has ended"), and the store has
/// it revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csrf_less_post_is_refused_and_an_idle_session_ends_in_headless_chromium() {
    const IDLE_SECONDS: u64 = 6;
    // A learning device (every tenth of the harness's is enforced).
    const DEVICE: &str = "pump-0002";
    let psc = MockPsc::start().await;
    psc.add_users(&[User::new("899700000001", "Hélène", "Martin")]);
    let c = Console::start_with(4, |cfg, addr| {
        cfg.oidc = Some(oidc_config(&psc, addr, &["899700000001"], &[]));
        cfg.idle_timeout_seconds = IDLE_SECONDS;
    })
    .await;
    let audit_before = c.store.audit().unwrap().len();
    let tmp = tempfile::tempdir().unwrap();
    let shots = shots_dir(tmp.path());
    let report = run_scenario(
        "session.mjs",
        &[
            (
                "CONSOLE_URL",
                format!("https://localhost:{}", c.addr.port()),
            ),
            ("PSC_URL", psc.base()),
            ("DEVICE", DEVICE.to_string()),
            ("SHOTS", shots.display().to_string()),
            ("IDLE_SECONDS", IDLE_SECONDS.to_string()),
        ],
    );
    assert_eq!(report["pages"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["axe"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(
        c.store.device(DEVICE).unwrap().unwrap().mode,
        wardgate_policy::Mode::Learn,
        "a refused POST changed the device"
    );
    let audit = c.store.audit().unwrap();
    assert!(
        audit[audit_before..]
            .iter()
            .all(|e| e.action != "set_mode" && e.target != DEVICE),
        "a refused POST reached the audit trail: {:?}",
        &audit[audit_before..]
    );
    let sessions = c.store.sessions_of("899700000001").unwrap();
    assert_eq!(sessions.len(), 1, "one login");
    assert!(
        sessions[0].revoked_ms.is_some(),
        "the idle session is revoked in the store"
    );
}
