//! The controller binary as systemd runs it (packaging/systemd/wardgate-controller.service):
//! the unit passes `systemd-analyze verify` and its sandbox scores as OK; with a NOTIFY_SOCKET of
//! the test's own it says READY=1 once it listens (and serves mTLS calls then), STOPPING=1 on
//! SIGTERM, and exits 0; it never says READY=1 without its certificates; logs are JSON lines
//! with `--log-format json`.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use wardgate_controller::cli::remote::Remote;
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

const EXE: &str = env!("CARGO_BIN_EXE_wardgate-controller");

#[test]
fn the_unit_passes_systemd_analyze_verify_and_security() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/systemd/wardgate-controller.service");
    let score = wardgate_daemon::unit_file::check(&unit, Path::new(EXE)).unwrap();
    println!("wardgate-controller.service exposure {score}");
}

fn notify_socket(dir: &Path) -> UnixDatagram {
    let sock = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    sock
}

fn recv(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 4096];
    sock.recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn start(dir: &Path, certs: &Path) -> Child {
    Command::new(EXE)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("data"))
        .arg("--certs")
        .arg(certs)
        .args(["--log-format", "json"])
        .env("NOTIFY_SOCKET", dir.join("notify.sock"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("controller.log")).unwrap())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_it_listens_stopping_on_sigterm_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    wardgate_controller::certs::init(
        &certs,
        &[],
        &[("eve".into(), "engineer".into())],
        &wardgate_controller::certs::InitOptions::default(),
    )
    .unwrap();
    let sock = notify_socket(dir.path());
    let mut child = start(dir.path(), &certs);

    let ready = tokio::task::spawn_blocking(move || (recv(&sock), sock))
        .await
        .unwrap();
    let (msg, sock) = (ready.0.expect("READY=1 within 30 s"), ready.1);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    let addr = msg
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=serving on "))
        .unwrap_or_else(|| panic!("no listen address in {msg:?}"));
    let port = addr.rsplit(':').next().unwrap();
    // Right after READY=1, an mTLS call is served.
    let remote = Remote::to(
        format!("https://localhost:{port}"),
        certs.clone(),
        "user-eve",
        "localhost",
    );
    let mut admin = AdminServiceClient::new(remote.channel().await.unwrap());
    admin
        .list_gateways(pb::ListGatewaysRequest {})
        .await
        .expect("served right after READY=1");

    // Safety: kill on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    drop(admin);
    let stopping = tokio::task::spawn_blocking(move || recv(&sock))
        .await
        .unwrap()
        .expect("STOPPING=1 within 30 s");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    let log = std::fs::read_to_string(dir.path().join("controller.log")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["message"] == "controller serving" && r["listen"] == addr),
        "{log}"
    );
}

#[test]
fn a_sigterm_right_after_ready_is_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    wardgate_controller::certs::init(
        &certs,
        &[],
        &[],
        &wardgate_controller::certs::InitOptions::default(),
    )
    .unwrap();
    let sock = notify_socket(dir.path());
    let mut child = start(dir.path(), &certs);
    let ready = recv(&sock).expect("READY=1 within 30 s");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Safety: kill on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let stopping = recv(&sock).expect("STOPPING=1 within 30 s");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status}");
}

#[test]
fn without_its_certificates_it_never_says_ready_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let sock = notify_socket(dir.path());
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = start(dir.path(), &dir.path().join("missing"));
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(!status.success());
    assert_eq!(
        recv(&sock),
        None,
        "no READY=1 from a controller that cannot serve"
    );
    let log = std::fs::read_to_string(dir.path().join("controller.log")).unwrap();
    assert!(
        log.contains("server.pem"),
        "the error names the file: {log}"
    );
}
