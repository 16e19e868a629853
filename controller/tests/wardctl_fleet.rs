//! `wardctl gateways enroll` and `revoke` through the real binary against a controller on
//! loopback: the token is printed once with the command for the gateway and the CA
//! fingerprint, only its hash is stored, a viewer may not ask for one, and a revoked name gets
//! no new token. `wardctl gateways` alone still lists.

use std::process::Command;

use wardgate_controller::store::Store as _;
use wardgate_testkit::controller::LabController;

async fn wardctl(lab: &LabController, who: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardctl"));
    cmd.args(args)
        .env("WARDGATE_CONTROLLER", lab.url())
        .env("WARDGATE_CERTS", lab.certs())
        .env("WARDGATE_AS", format!("user-{who}"));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_shown_once_and_stored_hashed_and_revoked_names_get_none() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::start_fleet(
        dir.path(),
        &[],
        &[("eve", "engineer"), ("vic", "viewer")],
        &Default::default(),
    )
    .await
    .unwrap();
    let root = std::fs::read_to_string(lab.certs().join("ca.pem")).unwrap();
    let (_, root) = x509_parser::pem::parse_x509_pem(root.as_bytes()).unwrap();
    let fingerprint = wardgate_controller::issuing::fingerprint(&root.contents);

    let (ok, out, err) = wardctl(
        &lab,
        "eve",
        &[
            "gateways",
            "enroll",
            "gw-ward-9",
            "--valid-for",
            "2h",
            "--enroll-url",
            "https://controller.example.org:7444",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("wgt_"))
        .expect("a token in the output")
        .to_string();
    assert!(
        out.contains(&format!(
            "wardgate-agent enroll --controller https://controller.example.org:7444 --token {token} --ca-fingerprint {fingerprint}"
        )),
        "{out}"
    );
    let trail = lab.store.audit().unwrap();
    let issued = trail
        .iter()
        .find(|e| e.action == "enrollment_token_issued")
        .expect("audited");
    assert_eq!(
        (issued.actor.as_str(), issued.target.as_str()),
        ("user:eve", "gw-ward-9")
    );
    assert_eq!(issued.reason, "gateway commissioning");
    assert!(
        !issued.diff.contains(&token),
        "the token is not in the trail"
    );
    let hash = wardgate_controller::fleet::token_hash(&token);
    let mut stored = Vec::new();
    for f in ["wardgate.db", "wardgate.db-wal"] {
        stored.extend(std::fs::read(dir.path().join("data").join(f)).unwrap_or_default());
    }
    let holds = |s: &str| stored.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(
        holds(&hash),
        "the hash is stored (the check can find what it looks for)"
    );
    assert!(!holds(&token), "the token is not in the store");

    let (ok, _, err) = wardctl(&lab, "vic", &["gateways", "enroll", "gw-ward-9"]).await;
    assert!(!ok);
    assert!(err.contains("permission denied"), "{err}");

    let (ok, out, err) = wardctl(
        &lab,
        "eve",
        &[
            "--output",
            "json",
            "gateways",
            "revoke",
            "gw-ward-9",
            "--reason",
            "INC-1",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["revoked"], true);
    let (ok, _, err) = wardctl(&lab, "eve", &["gateways", "enroll", "gw-ward-9"]).await;
    assert!(!ok);
    assert!(err.contains("gw-ward-9 is revoked"), "{err}");

    let (ok, _, err) = wardctl(&lab, "eve", &["gateways"]).await;
    assert!(ok, "{err}");
}
