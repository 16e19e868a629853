//! The controller of the agent's namespace tests: in-process, in the gateway namespace on
//! loopback, real mTLS and SQLite, the demo ward's site pushed by the engineer `eve`.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use wardgate_agent::config::AgentConfig;
use wardgate_controller::store::SqliteStore;
use wardgate_testkit::{
    agent::AgentProcess,
    controller::LabController,
    ward::{Ward, in_ns},
};

use super::PinRoot;

/// The demo site's gateway.
pub const GW: &str = "gw-ward-3";
/// The demo site's engineer in these tests.
pub const ENGINEER: &str = "eve";

/// The controller of these tests: in the gateway namespace on loopback (mTLS, the demo ward's
/// site pushed), serving until `stop` (bounded: 120 s).
pub struct Lab {
    pub url: String,
    pub certs: PathBuf,
    pub store: Arc<SqliteStore>,
    done: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Lab {
    pub fn start(ward: &Ward, dir: &Path) -> Lab {
        Lab::start_with_sinks(ward, dir, Vec::new())
    }

    /// As `start`, with the controller's SOC sinks.
    pub fn start_with_sinks(
        ward: &Ward,
        dir: &Path,
        sinks: Vec<wardgate_controller::config::SinkConfig>,
    ) -> Lab {
        Lab::start_with(ward, dir, sinks, None)
    }

    /// As `start`, with the site file `site` (its gateway must be `GW`) pushed instead of the
    /// demo ward's, with the repository's profiles.
    pub fn start_with_site(ward: &Ward, dir: &Path, site: &Path) -> Lab {
        Lab::start_with(ward, dir, Vec::new(), Some(site.to_path_buf()))
    }

    fn start_with(
        ward: &Ward,
        dir: &Path,
        sinks: Vec<wardgate_controller::config::SinkConfig>,
        site: Option<PathBuf>,
    ) -> Lab {
        let (up_tx, up_rx) = mpsc::channel::<(String, PathBuf, Arc<SqliteStore>)>();
        let (done, done_rx) = mpsc::channel::<()>();
        let ctl_dir = dir.join("controller");
        let thread = in_ns(&ward.gw, move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let lab = LabController::start_with_sinks(
                    &ctl_dir,
                    &[GW.to_string()],
                    &[(ENGINEER, "engineer")],
                    &sinks,
                )
                .await
                .unwrap();
                match &site {
                    Some(site) => {
                        lab.push_site(ENGINEER, site, &profiles_dir(), "CHG-1 commissioning")
                            .await
                    }
                    None => lab.push_demo_site(ENGINEER, "CHG-1 commissioning").await,
                }
                .unwrap();
                up_tx
                    .send((lab.url(), lab.certs().to_path_buf(), lab.store.clone()))
                    .unwrap();
                let _ = tokio::task::spawn_blocking(move || {
                    done_rx.recv_timeout(Duration::from_secs(120))
                })
                .await;
                lab.shutdown().await.unwrap();
            })
        });
        let (url, certs, store) = up_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the controller came up within 60 s");
        Lab {
            url,
            certs,
            store,
            done,
            thread,
        }
    }

    /// The agent's config: the ward's device interface, its own pin root, this controller,
    /// records sent every 300 ms.
    pub fn agent_config(&self, dir: &Path, pin: &PinRoot) -> PathBuf {
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "interfaces: [{}]\npin_root: {}\ndesired_state: {}\n\
                 controller: {{address: \"{}\", certs: {}, gateway: {GW}, \
                 flow_report_every_ms: 300}}\n",
                wardgate_testkit::ward::DEV_IF,
                pin.0.display(),
                dir.join("desired.json").display(),
                self.url,
                self.certs.display()
            ),
        )
        .unwrap();
        AgentConfig::load(&config).expect("test config is valid");
        config
    }

    pub fn stop(self) {
        let _ = self.done.send(());
        self.thread.join().unwrap();
    }
}

/// The repository's device profiles (the classes and their sensitivity).
pub fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles")
}

/// The real `wardctl` binary, beside this test's (`target/release`): built by
/// `cargo build --release -p wardgate-controller --bin wardctl`, which `cargo xtask test
/// attach` runs first (a test binary of the agent has no `CARGO_BIN_EXE_wardctl`).
pub fn wardctl_bin() -> PathBuf {
    release_bin("wardctl")
}

/// The controller crate's binary `name`, beside this test's: `target/release/deps/TEST-HASH`
/// -> `target/release/NAME`. `cargo xtask test` builds the controller's binaries before the
/// agent tests that run them.
pub fn release_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .unwrap();
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --release -p wardgate-controller --bins` \
         (cargo xtask test does)",
        bin.display()
    );
    bin
}

impl Lab {
    /// `wardctl ARGS` as the engineer, in the gateway namespace (the controller listens on its
    /// loopback), connection settings from the environment as an engineer's shell would have.
    pub fn wardctl(&self, ward: &Ward, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &ward.gw])
            .arg(wardctl_bin())
            .args(args)
            .env("WARDGATE_CONTROLLER", &self.url)
            .env("WARDGATE_CERTS", &self.certs)
            .env("WARDGATE_AS", format!("user-{ENGINEER}"))
            .env("WARDGATE_SERVER_NAME", "localhost");
        c
    }
}

impl Lab {
    /// Runs `wardctl ARGS` as the engineer; its stdout (JSON for `--output json`). Fails the
    /// test, with both outputs, when wardctl does.
    pub fn wardctl_ok(&self, ward: &Ward, args: &[&str]) -> String {
        let out = self
            .wardctl(ward, args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run wardctl");
        assert!(
            out.status.success(),
            "wardctl {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `wardctl profile propose --device DEVICE` into `dir/proposed.yaml`: its text (printed)
    /// and the profile, which must parse and validate.
    pub fn propose(
        &self,
        ward: &Ward,
        device: &str,
        dir: &std::path::Path,
    ) -> (String, wardgate_policy::Profile) {
        let proposal = dir.join("proposed.yaml");
        self.wardctl_ok(
            ward,
            &[
                "profile",
                "propose",
                "--device",
                device,
                "--out",
                proposal.to_str().unwrap(),
            ],
        );
        let yaml = std::fs::read_to_string(&proposal).unwrap();
        println!("proposed profile:\n{yaml}");
        let profile = wardgate_policy::parse_profile("proposed.yaml", &yaml)
            .unwrap_or_else(|e| panic!("the proposal parses: {e}\n{yaml}"));
        let problems = wardgate_policy::validate_profile("proposed.yaml", &profile);
        assert!(problems.is_empty(), "the proposal validates: {problems}");
        (yaml, profile)
    }

    /// A write through wardctl (`--output json`, `--reason REASON`); the generation it compiled
    /// for the gateway.
    pub fn write(&self, ward: &Ward, args: &[&str], reason: &str) -> u64 {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--reason", reason]);
        let out = self.wardctl_ok(ward, &all);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v["generations"][GW]
            .as_u64()
            .unwrap_or_else(|| panic!("no generation for {GW}: {out}"))
    }
}

/// Waits (bounded: 30 s) until the agent logged that generation `n` is in its maps.
pub fn wait_generation(agent: &AgentProcess, n: u64) {
    let needle = format!("to={n} ");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent
        .log_text()
        .lines()
        .any(|l| l.contains("policy generation switched") && l.contains(&needle))
    {
        assert!(
            Instant::now() < deadline,
            "generation {n} never applied:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
