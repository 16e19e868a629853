//! Certificates and the TLS front door: lifetimes, key modes, the CA key kept apart, names
//! validated, revocation (refused at the TLS layer, live connections cut), the controller's
//! name checked as configured, the handshake timeout and the connection limit.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::io::AsyncReadExt as _;
use wardgate_controller::{
    certs::{self, InitOptions},
    cli::remote::Remote,
    server::{self, Settings, TlsFiles},
    store::{SqliteStore, Store},
};
use wardgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";

fn wardctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wardctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// (not_after - not_before) of a PEM certificate.
fn lifetime(p: &Path) -> Duration {
    let text = std::fs::read(p).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
    let cert = pem.parse_x509().unwrap();
    let v = cert.validity();
    Duration::from_secs((v.not_after.timestamp() - v.not_before.timestamp()) as u64)
}

fn days(d: u64) -> Duration {
    // Issued with an hour of slack before now.
    Duration::from_secs(d * 86_400 + 3_600)
}

#[test]
fn init_sets_lifetimes_key_modes_and_keeps_the_ca_key_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let d = dir.to_str().unwrap();
    let (ok, out, err) = wardctl(&[
        "certs",
        "init",
        "--dir",
        d,
        "--gateway",
        GW,
        "--user",
        "eve:engineer",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("the CA key to"), "{out}");
    // Every key 0600, certificates 0644; the CA key is not among what gateways read.
    for name in ["server", &format!("gateway-{GW}"), "user-eve"] {
        assert_eq!(mode(&dir.join(format!("{name}.key"))), 0o600, "{name}.key");
        assert_eq!(mode(&dir.join(format!("{name}.pem"))), 0o644, "{name}.pem");
    }
    assert!(
        !dir.join("ca.key").exists(),
        "no CA key beside the certificates"
    );
    let ca_dir = tmp.path().join("certs-ca");
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    assert_eq!(mode(&ca_dir), 0o700);
    assert!(dir.join("crl.pem").exists(), "an empty revocation list");
    // Lifetimes: CA ten years, server and gateways a year, people 90 days.
    assert_eq!(lifetime(&dir.join("ca.pem")), days(3650));
    assert_eq!(lifetime(&dir.join("server.pem")), days(365));
    assert_eq!(lifetime(&dir.join(format!("gateway-{GW}.pem"))), days(365));
    assert_eq!(lifetime(&dir.join("user-eve.pem")), days(90));

    // Configurable; keys written over with another mode come back 0600.
    std::fs::set_permissions(
        dir.join("user-eve.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (ok, _, err) = wardctl(&[
        "certs",
        "init",
        "--dir",
        d,
        "--user",
        "eve:engineer",
        "--user-days",
        "7",
        "--gateway-days",
        "30",
        "--gateway",
        GW,
    ]);
    assert!(ok, "{err}");
    assert_eq!(lifetime(&dir.join("user-eve.pem")), days(7));
    assert_eq!(lifetime(&dir.join(format!("gateway-{GW}.pem"))), days(30));
    assert_eq!(mode(&dir.join("user-eve.key")), 0o600);
}

#[test]
fn names_with_control_characters_or_separators_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("certs");
    let d = d.to_str().unwrap();
    for (args, what) in [
        (vec!["--gateway", "gw\u{7}bell"], "gateway name"),
        (vec!["--gateway", "../etc"], "gateway name"),
        (vec!["--user", "eve\nadmin:engineer"], "user name"),
        (vec!["--server-name", "ctl\u{1b}[31m"], "controller name"),
    ] {
        let mut all = vec!["certs", "init", "--dir", d];
        all.extend(args);
        let (ok, _, err) = wardctl(&all);
        assert!(!ok, "{all:?} accepted");
        assert!(err.contains(what), "{all:?}: {err}");
    }
    assert!(
        !tmp.path().join("certs").join("gateway-../etc.pem").exists()
            && !tmp.path().join("etc.pem").exists()
    );
    assert!(certs::validate_name("gateway", "gw-ward-3.a_b").is_ok());
    // A French name: "letters" means unaccented ASCII, and the message says which name would do.
    let e = certs::validate_name("user", "hélène.martin").unwrap_err();
    assert!(
        e.contains("ASCII") && e.contains("`helene.martin` would do"),
        "{e}"
    );
    assert!(certs::validate_name("user", "helene.martin").is_ok());
}

async fn list(remote: &Remote) -> anyhow::Result<usize> {
    let mut c = AdminServiceClient::new(remote.channel().await?);
    Ok(c.list_devices(pb::ListDevicesRequest::default())
        .await?
        .into_inner()
        .devices
        .len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_is_refused_and_its_connections_cut() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::with_demo_site(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("sam", "soc")],
        "eve",
    )
    .await
    .unwrap();
    assert_eq!(list(&lab.remote("user-eve")).await.unwrap(), 3);
    // The gateway watches its policy on a long-lived stream.
    let mut agent = lab.agent(GW).await.unwrap();
    let mut watch = agent
        .watch_policy(pb::WatchPolicyRequest {
            gateway: GW.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some());

    let certs_dir = lab.certs().to_str().unwrap().to_string();
    let (ok, out, err) = wardctl(&[
        "certs",
        "revoke",
        "--dir",
        &certs_dir,
        "user-eve",
        &format!("gateway-{GW}"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("revoked 2 certificate(s)"), "{out}");

    // The controller picks the list up: eve is refused (at the TLS layer, never by a handler).
    let t = Instant::now();
    let refused = loop {
        match list(&lab.remote("user-eve")).await {
            Err(e) => break format!("{e:#}"),
            Ok(_) if t.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(_) => panic!("eve still served 5 s after her certificate was revoked"),
        }
    };
    // TLS 1.3 lets the client finish its half of the handshake first, so by timing the call
    // sees the alert (CertificateRevoked) or only the closed connection; never a handler's
    // status.
    assert!(
        refused.contains("transport error")
            && !refused.contains("permission denied")
            && !refused.contains("not authenticated"),
        "refused by the TLS layer, before any handler: {refused}"
    );
    println!("revoked user -> {refused} after {:?}", t.elapsed());
    // The gateway's open stream ends.
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the revoked gateway's stream is cut within 5 s");
    assert!(cut.is_err(), "the stream ended with an error: {cut:?}");
    // Others are still served.
    assert_eq!(list(&lab.remote("user-sam")).await.unwrap(), 3);
    // Revoking again is harmless and the list keeps both.
    let (ok, out, _) = wardctl(&["certs", "revoke", "--dir", &certs_dir, "user-eve"]);
    assert!(ok && out.contains("lists 2 in all"), "{out}");
}

/// Polls `list` as a new client every 100 ms until `served` is what it wants, within
/// `limit`; returns how long it took and the last error.
async fn until_served(remote: &Remote, served: bool, limit: Duration) -> (Duration, String) {
    let t = Instant::now();
    loop {
        let got = list(remote).await;
        let last = got
            .as_ref()
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        if got.is_ok() == served {
            return (t.elapsed(), last);
        }
        assert!(
            t.elapsed() < limit,
            "still {} after {limit:?}: {last}",
            if served { "refused" } else { "served" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Revocation fails closed: a revocation list that disappears, or stops parsing, after one was
/// loaded refuses every new connection (it is not an empty list, which would let every revoked
/// certificate back in) within the watcher's interval; the list restored, connections work
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_list_that_disappears_or_breaks_refuses_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::start(dir.path(), &[GW.to_string()], &[("sam", "soc")])
        .await
        .unwrap();
    let sam = lab.remote("user-sam");
    assert_eq!(list(&sam).await.unwrap(), 0);
    let crl = lab.certs().join("crl.pem");
    let good = std::fs::read(&crl).unwrap();

    std::fs::remove_file(&crl).unwrap();
    // The watcher polls every 0.5 s.
    let (took, refused) = until_served(&sam, false, Duration::from_secs(3)).await;
    println!("CRL deleted -> refused after {took:?}: {refused}");
    assert!(
        refused.contains("transport error") && !refused.contains("not authenticated"),
        "refused by the TLS front door: {refused}"
    );
    // And it stays refused (not a one-off while the file was being replaced).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(list(&sam).await.is_err(), "served again without a list");

    std::fs::write(&crl, &good).unwrap();
    let (took, _) = until_served(&sam, true, Duration::from_secs(3)).await;
    println!("CRL restored -> served after {took:?}");

    // A list that no longer parses is no better than none.
    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nnot a list\n-----END X509 CRL-----\n",
    )
    .unwrap();
    until_served(&sam, false, Duration::from_secs(3)).await;
    std::fs::write(&crl, b"").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        list(&sam).await.is_err(),
        "an emptied file is not an empty list"
    );
    std::fs::write(&crl, &good).unwrap();
    until_served(&sam, true, Duration::from_secs(3)).await;
}

/// Without its revocation list the controller does not start (the list is required, not
/// optional: a deleted file must not mean "nothing revoked").
#[test]
fn the_controller_does_not_start_without_its_revocation_list() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs::init(&certs, &[], &[], &InitOptions::default()).unwrap();
    std::fs::remove_file(certs.join("crl.pem")).unwrap();
    let log = dir.path().join("controller.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardgate-controller"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--certs")
        .arg(&certs)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the controller is serving without its revocation list");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("crl.pem"), "{err}");
}

/// A controller whose certificate names only `controller.example`.
async fn named_controller(
    dir: &Path,
    settings: Settings,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let certs_dir = dir.join("certs");
    certs::init(
        &certs_dir,
        &[],
        &[("eve".into(), "engineer".into())],
        &InitOptions {
            server_names: vec!["controller.example".into()],
            ..InitOptions::default()
        },
    )
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("data")).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = TlsFiles::in_dir(&certs_dir);
    let task = tokio::spawn(async move {
        server::serve(
            store,
            Default::default(),
            &tls,
            &settings,
            listener,
            std::future::pending(),
        )
        .await
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_name_is_checked_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, task) = named_controller(dir.path(), Settings::default()).await;
    let remote = |name: &str| {
        Remote::to(
            format!("https://{addr}"),
            dir.path().join("certs"),
            "user-eve",
            name,
        )
    };
    let wrong = list(&remote("localhost")).await.unwrap_err();
    assert!(
        format!("{wrong:#}").contains("certificate not valid for name \"localhost\""),
        "the name is checked: {wrong:?}"
    );
    assert_eq!(list(&remote("controller.example")).await.unwrap(), 0);
    // wardctl takes the name from --server-name or WARDGATE_SERVER_NAME.
    let certs_dir = dir.path().join("certs");
    let url = format!("https://{addr}");
    let args = [
        "devices",
        "--controller",
        &url,
        "--certs",
        certs_dir.to_str().unwrap(),
        "--as",
        "user-eve",
        "list",
    ];
    let run = |name: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_wardctl"))
            .args(args)
            .env("WARDGATE_SERVER_NAME", name)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run("localhost");
    assert!(!ok && err.contains("not valid for name"), "{err}");
    let (ok, err) = run("controller.example");
    assert!(ok, "{err}");
    task.abort();

    // A controller told its name refuses to start with a certificate for another.
    let other = tempfile::tempdir().unwrap();
    let (_, task) = named_controller(
        other.path(),
        Settings {
            server_name: Some("ward3-controller.example".into()),
            ..Settings::default()
        },
    )
    .await;
    let e = task.await.unwrap().unwrap_err();
    assert!(
        format!("{e:#}").contains("not the configured server name `ward3-controller.example`"),
        "{e:#}"
    );
}

async fn limited_lab(dir: &Path, settings: Settings) -> LabController {
    LabController::start_with(dir, &[], &[("eve", "engineer")], &settings)
        .await
        .unwrap()
}

/// Reads until the server closes the connection; how long that took.
async fn closed_after(tcp: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_handshakes_is_cut_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let lab = limited_lab(
        dir.path(),
        Settings {
            handshake_timeout: Duration::from_secs(1),
            ..Settings::default()
        },
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(lab.addr).await.unwrap();
    // Meanwhile others are served: the silent one holds no one up.
    assert_eq!(list(&lab.remote("user-eve")).await.unwrap(), 0);
    let cut = closed_after(&mut silent, Duration::from_secs(5))
        .await
        .expect("the silent connection is closed within 5 s");
    println!("silent client cut after {cut:?}");
    assert!(
        cut >= Duration::from_millis(700) && cut < Duration::from_secs(3),
        "cut after {cut:?}, timeout 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lab = limited_lab(
        dir.path(),
        Settings {
            max_connections: 3,
            handshake_timeout: Duration::from_secs(30),
            ..Settings::default()
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(lab.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fourth is closed at once (well before the 30 s handshake timeout).
    let mut over = tokio::net::TcpStream::connect(lab.addr).await.unwrap();
    let closed = closed_after(&mut over, Duration::from_secs(5))
        .await
        .expect("the connection over the limit is closed");
    assert!(closed < Duration::from_secs(2), "{closed:?}");
    assert!(
        list(&lab.remote("user-eve")).await.is_err(),
        "a real client over the limit is refused too"
    );
    // The held ones still hold their slots (not closed by the server).
    assert!(
        closed_after(&mut held[0], Duration::from_millis(300))
            .await
            .is_none()
    );
    // Slots come back when connections close.
    drop(held);
    let t = Instant::now();
    loop {
        match list(&lab.remote("user-eve")).await {
            Ok(n) => {
                assert_eq!(n, 0);
                break;
            }
            Err(e) if t.elapsed() > Duration::from_secs(5) => {
                panic!("no slot 5 s after the held connections closed: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
