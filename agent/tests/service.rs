//! Attach tier: the agent binary as systemd runs it (packaging/systemd/wardgate-agent.service):
//! with only the unit's capabilities, JSON logs, and a NOTIFY_SOCKET the test owns. READY=1
//! comes once the policy is in the maps and the programs are attached; WATCHDOG=1 pings come at
//! half WATCHDOG_USEC; SIGTERM sends STOPPING=1, flushes the alert outbox to the controller
//! (bounded) and exits 0, and what could not be delivered is there at the next start. Needs root;
//! fails (never skips) without it.

mod support;

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use support::*;
use wardgate_agent::{
    alerts::Outbox, config::AgentConfig, datapath::pinned, run::STOP_FLUSH_LIMIT,
};
use wardgate_common::program_names;
use wardgate_controller::store::{AlertQuery, Store as _};
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;
use wardgate_testkit::ward::{DEV_IF, Ward, in_ns, run_in};

const GW: &str = "gw-ward-3";

/// The unit's CapabilityBoundingSet as a setpriv bounding set (`-all,+bpf,...`).
fn unit_capabilities() -> String {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/wardgate-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let caps = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the agent unit sets CapabilityBoundingSet");
    let mut set = String::from("-all");
    for cap in caps.split_whitespace() {
        set.push_str(",+");
        set.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    set
}

/// The socket systemd would listen on for the service's notifications.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn new(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket { sock, path }
    }

    /// The next notification, or `None` after `limit`.
    fn recv(&self, limit: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Waits (bounded) for a notification holding `line`; returns it and what came before.
    fn wait_for(&self, line: &str, limit: Duration) -> (String, Vec<String>) {
        let deadline = Instant::now() + limit;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .recv(left.max(Duration::from_millis(1)))
                .unwrap_or_else(|| panic!("no {line} within {limit:?}; got {before:?}"));
            if msg.lines().any(|l| l == line) {
                return (msg, before);
            }
            before.push(msg);
        }
    }
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// The agent binary, started from inside namespace `ns` (so without --netns, which would need
    /// CAP_SYS_ADMIN) with only the unit's capabilities and no new privileges, as the unit runs
    /// it.
    fn start(ns: &str, config: &Path, notify: &NotifySocket, watchdog_usec: Option<u64>) -> Agent {
        let log = config.with_extension(format!("{}.log", Instant::now().elapsed().as_nanos()));
        let mut c = Command::new("setpriv");
        c.arg(format!("--bounding-set={}", unit_capabilities()))
            .args(["--inh-caps=-all", "--no-new-privs"])
            .arg(env!("CARGO_BIN_EXE_wardgate-agent"))
            .args(["run", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WARDGATE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        match watchdog_usec {
            Some(us) => c.env("WATCHDOG_USEC", us.to_string()),
            None => c.env_remove("WATCHDOG_USEC"),
        };
        let child = run_in(ns, move || c.spawn().expect("start agent under setpriv"));
        Agent { child, log }
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    fn record(&self, message: &str) -> Option<serde_json::Value> {
        self.records().into_iter().find(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
    }

    fn wait_record(&self, message: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(r) = self.record(message) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "agent never logged `{message}`:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigterm(&self) {
        // Safety: kill on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    /// Waits (bounded) for the agent to exit; its exit status and how long it took.
    fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "agent still running {limit:?} after SIGTERM:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wardgate_first(ns: &str) -> bool {
    run_in(ns, || {
        let name = std::ffi::CString::new(DEV_IF).unwrap();
        [
            (TcAttachType::Ingress, program_names::INGRESS),
            (TcAttachType::Egress, program_names::EGRESS),
        ]
        .into_iter()
        .all(|(hook, ours)| {
            SchedClassifier::query_tcx(name.as_c_str(), hook)
                .is_ok_and(|(_, progs)| progs.first().and_then(|p| p.name_as_str()) == Some(ours))
        })
    })
}

fn write_config(dir: &Path, pin: &Path, controller: Option<(&str, &Path)>) -> PathBuf {
    let config = dir.join("agent.yaml");
    let mut text = format!(
        "interfaces: [{DEV_IF}]\npin_root: {}\ndesired_state: {}\n",
        pin.display(),
        dir.join("desired.json").display()
    );
    if let Some((address, certs)) = controller {
        text.push_str(&format!(
            "controller: {{address: \"{address}\", certs: {}, gateway: {GW}}}\n",
            certs.display()
        ));
    }
    std::fs::write(&config, text).unwrap();
    AgentConfig::load(&config).expect("test config is valid");
    config
}

#[test]
fn systemd_hears_ready_once_the_policy_is_enforced_then_watchdog_pings_and_stopping() {
    require_privileges();
    let ward = Ward::new("sdn");
    let pin = PinRoot::new("sdn");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("desired.json"),
        reference_state(7).to_json(),
    )
    .unwrap();
    let config = write_config(dir.path(), &pin.0, None);
    let notify = NotifySocket::new(dir.path());
    // WatchdogSec=1s: pings expected every 500 ms.
    let mut agent = Agent::start(&ward.gw, &config, &notify, Some(1_000_000));

    let (ready, before) = notify.wait_for("READY=1", Duration::from_secs(30));
    let at_ready = Instant::now();
    assert!(
        before.is_empty(),
        "READY=1 is the first notification: {before:?}"
    );
    // Checked right after READY=1: the policy is already in the maps and the programs attached.
    let status = pinned::status(&pin.0).unwrap();
    assert_eq!(
        status.generation, 7,
        "READY=1 before the policy was applied"
    );
    assert!(
        wardgate_first(&ward.gw),
        "READY=1 before the programs were attached"
    );
    assert!(ready.contains("STATUS=enforcing generation 7"), "{ready:?}");

    // Pings for 3 s, at half WATCHDOG_USEC.
    let mut pings = Vec::new();
    while at_ready.elapsed() < Duration::from_secs(3) {
        if let Some(msg) = notify.recv(Duration::from_millis(100)) {
            assert_eq!(msg.trim(), "WATCHDOG=1", "only pings while running");
            pings.push(Instant::now());
        }
    }
    let gaps: Vec<u128> = pings
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    println!("{} pings in 3 s, gaps (ms): {gaps:?}", pings.len());
    assert!(
        (5..=8).contains(&pings.len()),
        "expected a ping every 500 ms: {} in 3 s",
        pings.len()
    );
    assert!(
        gaps.iter().all(|g| (350..=700).contains(g)),
        "pings at half WATCHDOG_USEC (500 ms): {gaps:?}"
    );

    agent.sigterm();
    let (stopping, _) = notify.wait_for("STOPPING=1", Duration::from_secs(10));
    assert!(stopping.contains("STATUS="), "{stopping:?}");
    let (status, took) = agent.wait_exit(Duration::from_secs(10));
    println!("exit {status} {took:?} after SIGTERM");
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    // Enforcement stays after the agent stops; every log line was a JSON record.
    assert!(wardgate_first(&ward.gw), "the datapath stays attached");
    let records = agent.records();
    assert!(
        records.iter().all(|r| r["level"].is_string()),
        "{records:?}"
    );
    assert!(agent.record("policy generation switched").is_some());
}

/// Alerts the outbox holds from an earlier outage.
fn outage_alerts(path: &Path, n: usize) {
    let mut outbox = Outbox::open(path).unwrap();
    // Observed now: the controller refuses alerts dated before 2020 (alert admission).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    outbox.push_all(
        (0..n)
            .map(|i| pb::Alert {
                id: format!("outage-{i}"),
                kind: "deny".into(),
                severity: "high".into(),
                observed_unix_ms: now_ms,
                ..Default::default()
            })
            .collect(),
    );
}

#[test]
fn sigterm_flushes_the_outbox_to_the_controller_and_keeps_what_it_could_not_deliver() {
    require_privileges();
    let ward = Ward::new("drn");
    let pin = PinRoot::new("drn");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let gw = ward.gw.clone();
    const N: usize = 2_000;
    let outbox = d.join("alerts-outbox.sqlite");
    outage_alerts(&outbox, N);
    let notify = NotifySocket::new(&d);
    // The controller's address, in the gateway namespace where the agent runs; nothing listens
    // there yet.
    let port = run_in(&gw, || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
    let certs = d.join("controller/certs");
    let config = write_config(
        &d,
        &pin.0,
        Some((&format!("https://localhost:{port}"), &certs)),
    );

    // 1. The controller is down: SIGTERM still stops the agent, within the flush limit, with
    //    every alert kept.
    let mut agent = Agent::start(&gw, &config, &notify, None);
    notify.wait_for("READY=1", Duration::from_secs(30));
    agent.wait_record("controller not reached", Duration::from_secs(30));
    agent.sigterm();
    let (status, took) = agent.wait_exit(STOP_FLUSH_LIMIT + Duration::from_secs(10));
    println!("controller down: exit {status} {took:?} after SIGTERM");
    assert!(status.success(), "{status}");
    let flushed = agent.record("alert outbox flushed at stop").unwrap();
    assert_eq!(
        (flushed["pending"].as_u64(), flushed["left"].as_u64()),
        (Some(N as u64), Some(N as u64)),
        "{flushed}"
    );
    assert!(
        took >= STOP_FLUSH_LIMIT,
        "it did try for the whole limit: {took:?}"
    );
    assert_eq!(
        Outbox::open(&outbox).unwrap().len(),
        N,
        "kept for the next start"
    );
    drop(agent);

    // 2. The next start, the controller still down until the agent is up and waiting to retry:
    //    then it comes up, and SIGTERM delivers every alert before the agent exits.
    let mut agent = Agent::start(&gw, &config, &notify, None);
    notify.wait_for("READY=1", Duration::from_secs(30));
    agent.wait_record("controller not reached", Duration::from_secs(30));
    let (up_tx, up_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let ctl_dir = d.join("controller");
    let controller = in_ns(&gw, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let lab = LabController::start_on(
                &ctl_dir,
                &[GW.to_string()],
                &[("eve", "engineer")],
                listener,
            )
            .await
            .unwrap();
            lab.push_demo_site("eve", "CHG-1 commissioning")
                .await
                .unwrap();
            up_tx.send(()).unwrap();
            // Serve until the agent has stopped (bounded).
            tokio::task::spawn_blocking(move || {
                let _ = done_rx.recv_timeout(Duration::from_secs(60));
            })
            .await
            .unwrap();
            let stored = lab
                .store
                .alerts(&AlertQuery::recent(N as u32 + 10))
                .unwrap()
                .len();
            lab.shutdown().await.unwrap();
            stored
        })
    });
    // Controller up (certificates written, site loaded); the agent is still in its backoff.
    up_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the controller came up within 60 s");
    let pending = Outbox::open(&outbox).unwrap().len();
    assert_eq!(pending, N, "nothing delivered before SIGTERM");
    agent.sigterm();
    let (status, took) = agent.wait_exit(STOP_FLUSH_LIMIT + Duration::from_secs(10));
    println!("controller up: exit {status} {took:?} after SIGTERM");
    assert!(status.success(), "{status}");
    let flushed = agent.record("alert outbox flushed at stop").unwrap();
    println!("{flushed}");
    assert_eq!(
        (flushed["pending"].as_u64(), flushed["left"].as_u64()),
        (Some(N as u64), Some(0)),
        "every pending alert delivered at stop: {flushed}"
    );
    assert!(took < STOP_FLUSH_LIMIT, "{took:?}");
    assert!(
        Outbox::open(&outbox).unwrap().is_empty(),
        "acknowledged alerts left the file"
    );
    done_tx.send(()).unwrap();
    let stored = controller.join().expect("controller thread");
    assert_eq!(stored, N, "the controller stored every alert once");
}
