//! A gateway's life without a person, against a real controller (in-process, loopback, mTLS,
//! SQLite): enrollment with a one-time token (the agent library's `enroll`, as `wardgate-agent
//! enroll` runs it), the refusals (reused, expired, wrong name, revoked name, wrong CA
//! fingerprint, rate limit) and their audit entries, renewals that keep the policy link alive,
//! renewal refused to a revoked gateway, and a controller restarted during a renewal.

mod support;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use support::sync_agent::Agent;
use wardgate_agent::{
    config::{ControllerConfig, RenewalConfig},
    enroll::{self, EnrollError, Target},
    identity, renew,
    sync::Holding,
};
use wardgate_controller::{server::Settings, store::Store as _};
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";

fn settings(lifetime: Duration) -> Settings {
    Settings {
        gateway_cert_lifetime: lifetime,
        enroll_burst: 50,
        enroll_per_minute: 600,
        ..Settings::default()
    }
}

/// The demo site on a controller with an enrollment listener; `eve` engineer, `vic` viewer.
async fn fleet_lab(dir: &Path, settings: &Settings, gateways: &[String]) -> LabController {
    let lab = LabController::start_fleet(
        dir,
        gateways,
        &[("eve", "engineer"), ("vic", "viewer")],
        settings,
    )
    .await
    .unwrap();
    lab.push_demo_site("eve", "CHG-1 commissioning")
        .await
        .unwrap();
    lab
}

async fn token(lab: &LabController, gateway: &str, valid_for_seconds: u64) -> (String, String) {
    let r = lab
        .admin("eve")
        .await
        .unwrap()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            gateway: gateway.into(),
            valid_for_seconds,
            reason: "CHG-2 new gateway".into(),
        })
        .await
        .unwrap()
        .into_inner();
    (r.token, r.ca_fingerprint)
}

fn target(lab: &LabController, gateway: &str, certs: PathBuf) -> Target {
    Target {
        url: lab.enroll_url().unwrap(),
        server_name: "localhost".into(),
        gateway: gateway.into(),
        certs,
    }
}

fn agent_config(lab: &LabController, gateway: &str, certs: PathBuf) -> ControllerConfig {
    ControllerConfig {
        address: lab.url().into(),
        certs,
        gateway: gateway.into(),
        server_name: "localhost".into(),
        outbox: None,
        flow_report_every_ms: 30_000,
        health_report_every_ms: 60_000,
        connect_timeout_ms: 5_000,
        renewal: RenewalConfig {
            retry_min_ms: 200,
            retry_max_ms: 1_000,
            ..RenewalConfig::default()
        },
    }
}

/// (action, target, diff) of every audit entry.
fn audit(lab: &LabController) -> Vec<(String, String, String)> {
    lab.store
        .audit()
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.target, e.diff))
        .collect()
}

async fn set_mode(lab: &LabController, mode: &str) -> u32 {
    lab.admin("eve")
        .await
        .unwrap()
        .set_mode(pb::SetModeRequest {
            accept_impact: false,
            device: "pump-3a-bed12".into(),
            mode: mode.into(),
            reason: "test".into(),
            dry_run: false,
            for_minutes: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .generations[GW]
}

/// Whether an agent of `GW` follows its policy stream now.
async fn connected(lab: &LabController) -> bool {
    lab.admin("eve")
        .await
        .unwrap()
        .list_gateways(pb::ListGatewaysRequest {})
        .await
        .unwrap()
        .into_inner()
        .gateways
        .into_iter()
        .any(|g| g.name == GW && g.connected)
}

/// Polls the certificate file until its serial differs from `old` (within `secs`).
async fn new_serial(cert: &Path, old: &str, secs: u64) -> String {
    for _ in 0..secs * 20 {
        if let Ok(v) = identity::validity(cert)
            && v.serial != old
        {
            return v.serial;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} still has serial {old} after {secs} s", cert.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_gateway_has_a_private_key_and_its_certificate_and_syncs_policy() {
    let dir = tempfile::tempdir().unwrap();
    let lab = fleet_lab(dir.path(), &settings(Duration::from_secs(3600)), &[]).await;
    // Only engineers issue tokens.
    let denied = lab
        .admin("vic")
        .await
        .unwrap()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            gateway: GW.into(),
            valid_for_seconds: 0,
            reason: "try".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let (tok, fp) = token(&lab, GW, 0).await;
    let certs = dir.path().join("gateway");
    let done = enroll::enroll(&target(&lab, GW, certs.clone()), &tok, &fp)
        .await
        .unwrap();

    let mode = std::fs::metadata(&done.files.key)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the gateway's key is private");
    let pem = std::fs::read(&done.files.cert).unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    assert_eq!(
        wardgate_controller::auth::from_der(&p.contents).unwrap(),
        wardgate_controller::auth::Identity::Gateway(GW.into())
    );
    let ca = std::fs::read(&done.files.ca).unwrap();
    let (_, ca) = x509_parser::pem::parse_x509_pem(&ca).unwrap();
    assert_eq!(enroll::fingerprint(&ca.contents), fp);
    // About an hour, as the controller is configured.
    let left = done.not_after_unix - std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64;
    assert!((3500..=3600).contains(&left), "{left}");

    // The new identity syncs: the gateway's policy arrives, and a change after it too.
    let mut agent = Agent::start(agent_config(&lab, GW, certs), Holding::default());
    let first = agent.at_least(1).await;
    let next = set_mode(&lab, "quarantine").await;
    assert!(next > first);
    assert_eq!(agent.at_least(next).await, next);

    let entries = audit(&lab);
    assert!(
        entries
            .iter()
            .any(|(a, t, _)| a == "enrollment_token_issued" && t == GW),
        "{entries:?}"
    );
    let enrolled: Vec<_> = entries
        .iter()
        .filter(|(a, t, _)| a == "gateway_enrolled" && t == GW)
        .collect();
    assert_eq!(enrolled.len(), 1, "{entries:?}");
    assert!(enrolled[0].2.contains(&done.serial), "{enrolled:?}");
    // The token itself is nowhere in the trail.
    assert!(!entries.iter().any(|(_, _, d)| d.contains(&tok)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_enrollments_say_why_to_the_audit_trail_and_nothing_to_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let lab = fleet_lab(dir.path(), &settings(Duration::from_secs(3600)), &[]).await;
    let certs = |name: &str| dir.path().join(name);
    let refused = |r: Result<enroll::Enrolled, EnrollError>| match r {
        Err(EnrollError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // Used twice.
    let (tok, fp) = token(&lab, GW, 0).await;
    enroll::enroll(&target(&lab, GW, certs("a")), &tok, &fp)
        .await
        .unwrap();
    let reused = refused(enroll::enroll(&target(&lab, GW, certs("b")), &tok, &fp).await);
    assert!(!certs("b").join(format!("gateway-{GW}.key")).exists());

    // Another gateway's token.
    let (tok2, _) = token(&lab, "gw-ward-4", 0).await;
    let wrong_name = refused(enroll::enroll(&target(&lab, GW, certs("c")), &tok2, &fp).await);

    // Expired.
    let (tok3, _) = token(&lab, "gw-ward-5", 1).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let expired = refused(enroll::enroll(&target(&lab, "gw-ward-5", certs("d")), &tok3, &fp).await);

    // Revoked after the token was issued; no new token for it either.
    let (tok4, _) = token(&lab, "gw-ward-6", 0).await;
    lab.admin("eve")
        .await
        .unwrap()
        .revoke_gateway(pb::RevokeGatewayRequest {
            gateway: "gw-ward-6".into(),
            reason: "INC-7 stolen".into(),
        })
        .await
        .unwrap();
    let revoked = refused(enroll::enroll(&target(&lab, "gw-ward-6", certs("e")), &tok4, &fp).await);
    let again = lab
        .admin("eve")
        .await
        .unwrap()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            gateway: "gw-ward-6".into(),
            valid_for_seconds: 0,
            reason: "retry".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(again.message().contains("revoked"), "{}", again.message());

    // A token nobody issued.
    let unknown = refused(
        enroll::enroll(
            &target(&lab, "gw-nobody", certs("f")),
            &format!("wgt_{}", "0".repeat(64)),
            &fp,
        )
        .await,
    );

    // The caller learns nothing about which case it was (or whether the name exists).
    for m in [&reused, &wrong_name, &expired, &revoked, &unknown] {
        assert!(
            m.ends_with(wardgate_controller::fleet::ENROLL_REFUSED),
            "{m}"
        );
    }
    // The audit trail does.
    let why: Vec<(String, String)> = audit(&lab)
        .into_iter()
        .filter(|(a, _, _)| a == "enrollment_refused")
        .map(|(_, t, d)| (t, d))
        .collect();
    let has = |gw: &str, text: &str| {
        assert!(
            why.iter().any(|(t, d)| t == gw && d.contains(text)),
            "no refusal of {gw} with `{text}` in {why:?}"
        )
    };
    has(GW, "token already used");
    has(GW, "token issued for gateway gw-ward-4");
    has("gw-ward-5", "token expired");
    has("gw-ward-6", "is revoked");
    has("gw-nobody", "unknown token");
    assert_eq!(why.len(), 5);

    // Refusals are chained like every other entry.
    let trail = lab.store.audit().unwrap();
    assert_eq!(wardgate_controller::audit::verify(&trail), Ok(trail.len()));

    // A wrong CA fingerprint: refused by the agent before anything is sent.
    let (tok5, _) = token(&lab, "gw-ward-7", 0).await;
    let wrong = enroll::enroll(
        &target(&lab, "gw-ward-7", certs("g")),
        &tok5,
        &"ab".repeat(32),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(wrong, EnrollError::FingerprintMismatch { .. }),
        "{wrong:?}"
    );
    assert!(wrong.to_string().contains("refusing to enroll"), "{wrong}");
    assert!(!certs("g").exists(), "nothing written");
    // ... so the token is still unused and works with the right one.
    enroll::enroll(&target(&lab, "gw-ward-7", certs("g")), &tok5, &fp)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_attempts_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        enroll_burst: 2,
        enroll_per_minute: 1,
        ..Settings::default()
    };
    let lab = fleet_lab(dir.path(), &s, &[]).await;
    let (_, fp) = token(&lab, GW, 0).await;
    let mut messages = Vec::new();
    for i in 0..3 {
        let e = enroll::enroll(
            &target(&lab, GW, dir.path().join(format!("g{i}"))),
            "wgt_guess",
            &fp,
        )
        .await
        .unwrap_err();
        messages.push(e.to_string());
    }
    assert!(messages[1].contains("enrollment refused"), "{messages:?}");
    assert!(
        messages[2].contains("too many enrollment attempts"),
        "{messages:?}"
    );
    // A flood is not audited.
    let refusals = audit(&lab)
        .iter()
        .filter(|(a, _, _)| a == "enrollment_refused")
        .count();
    assert_eq!(refusals, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_renews_its_certificate_twice_and_keeps_its_policy_link() {
    let dir = tempfile::tempdir().unwrap();
    // Renewal at two thirds: about every 4 s.
    let lab = fleet_lab(dir.path(), &settings(Duration::from_secs(6)), &[]).await;
    let (tok, fp) = token(&lab, GW, 0).await;
    let certs = dir.path().join("gateway");
    let done = enroll::enroll(&target(&lab, GW, certs.clone()), &tok, &fp)
        .await
        .unwrap();
    let mut agent = Agent::start(agent_config(&lab, GW, certs), Holding::default());
    let first = agent.at_least(1).await;

    let s1 = new_serial(&done.files.cert, &done.serial, 15).await;
    let s2 = new_serial(&done.files.cert, &s1, 15).await;
    assert_ne!(s2, done.serial);
    // Past the first certificate's expiry: only a renewed one can connect now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let next = set_mode(&lab, "monitor").await;
    assert!(next > first);
    assert_eq!(agent.at_least(next).await, next);

    assert!(agent.live.cert_renewals.get() >= 2);
    let expiry = agent.live.cert_expiry.get();
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64;
    assert!(
        expiry > now && expiry <= now + 7,
        "expiry {expiry}, now {now}"
    );
    let renewed: Vec<_> = audit(&lab)
        .into_iter()
        .filter(|(a, t, _)| a == "certificate_renewed" && t == GW)
        .collect();
    assert!(renewed.len() >= 2, "{renewed:?}");
    assert!(renewed.iter().any(|(_, _, d)| d.contains(&s1)));
    assert!(renewed.iter().any(|(_, _, d)| d.contains(&s2)));
}

/// The TLS layer refused the certificate (revoked): the handshake, or with TLS 1.3 the
/// connection right after it, fails; the service never answers.
fn cut_off(e: &renew::RenewError) -> bool {
    match e {
        renew::RenewError::Connect(_) => true,
        renew::RenewError::Refused(s) => {
            matches!(
                s.code(),
                tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown
            )
        }
        renew::RenewError::Files(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_gateway_cannot_renew() {
    let dir = tempfile::tempdir().unwrap();
    // GW holds a certificate from the root (`certs init`, before enrollment existed).
    let lab = fleet_lab(
        dir.path(),
        &settings(Duration::from_secs(3600)),
        &[GW.into()],
    )
    .await;
    let root_issued = agent_config(&lab, GW, lab.certs().to_path_buf());
    // Renewing works while it is not revoked...
    let before = renew::renew_once(&root_issued).await.unwrap();
    let revoke = |gw: &'static str| {
        let lab = &lab;
        async move {
            lab.admin("eve")
                .await
                .unwrap()
                .revoke_gateway(pb::RevokeGatewayRequest {
                    gateway: gw.into(),
                    reason: "INC-9 decommissioned".into(),
                })
                .await
                .unwrap()
        }
    };
    // ... an enrolled one too.
    let (tok, fp) = token(&lab, "gw-ward-4", 0).await;
    let certs = dir.path().join("gw4");
    let enrolled = enroll::enroll(&target(&lab, "gw-ward-4", certs.clone()), &tok, &fp)
        .await
        .unwrap();

    revoke(GW).await;
    // The renewed certificate came from the issuing CA, so it is on its list now and its
    // connection is refused; revoking the name refuses a certificate from the root too.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let cut = renew::renew_once(&root_issued).await.unwrap_err();
    assert!(cut_off(&cut), "{cut:?}");

    // A root-issued certificate that is not on any list: refused by name, PermissionDenied.
    let lab2_dir = tempfile::tempdir().unwrap();
    let lab2 = fleet_lab(
        lab2_dir.path(),
        &settings(Duration::from_secs(3600)),
        &[GW.into()],
    )
    .await;
    let cfg2 = agent_config(&lab2, GW, lab2.certs().to_path_buf());
    let mut following = Agent::start(cfg2.clone(), Holding::default());
    following.at_least(1).await;
    assert!(connected(&lab2).await);
    lab2.admin("eve")
        .await
        .unwrap()
        .revoke_gateway(pb::RevokeGatewayRequest {
            gateway: GW.into(),
            reason: "INC-9 decommissioned".into(),
        })
        .await
        .unwrap();
    // Its policy stream ends at once, and it cannot come back.
    let mut cut = false;
    for _ in 0..100 {
        if !connected(&lab2).await {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cut, "the revoked gateway still follows its policy");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!connected(&lab2).await, "the revoked gateway reconnected");
    drop(following);
    let serial_before = identity::validity(&lab2.certs().join(format!("gateway-{GW}.pem")))
        .unwrap()
        .serial;
    let e = renew::renew_once(&cfg2).await.unwrap_err();
    assert!(e.denied(), "{e:?}");
    assert!(e.to_string().contains("revoked"), "{e}");
    assert_eq!(
        identity::validity(&lab2.certs().join(format!("gateway-{GW}.pem")))
            .unwrap()
            .serial,
        serial_before,
        "nothing replaced"
    );
    assert!(
        audit(&lab2)
            .iter()
            .any(|(a, t, d)| a == "renewal_refused" && t == GW && d.contains("revoked")),
        "{:?}",
        audit(&lab2)
    );
    // Sync is refused by name too.
    let reg = lab2
        .agent(GW)
        .await
        .unwrap()
        .register(pb::RegisterRequest {
            gateway: GW.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reg.code(), tonic::Code::PermissionDenied);

    // The enrolled gateway, revoked: its certificate goes on the issuing CA's list.
    revoke("gw-ward-4").await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let cfg4 = agent_config(&lab, "gw-ward-4", certs);
    let cut = renew::renew_once(&cfg4).await.unwrap_err();
    assert!(cut_off(&cut), "{cut:?}");
    assert_eq!(
        identity::validity(&enrolled.files.cert).unwrap().serial,
        enrolled.serial
    );
    assert!(!before.serial.is_empty());
    let list = std::fs::read(lab.certs().join("issuing-crl.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&list).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).unwrap();
    let listed: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert!(listed.contains(&enrolled.serial), "{listed:?}");
    assert!(listed.contains(&before.serial), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_during_a_controller_restart_is_retried_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(Duration::from_secs(20));
    let lab = fleet_lab(dir.path(), &s, &[]).await;
    let (tok, fp) = token(&lab, GW, 0).await;
    let certs = dir.path().join("gateway");
    let done = enroll::enroll(&target(&lab, GW, certs.clone()), &tok, &fp)
        .await
        .unwrap();
    let mut agent = Agent::start(agent_config(&lab, GW, certs), Holding::default());
    agent.at_least(1).await;
    let (addr, enroll_addr) = (lab.addr, lab.enroll_addr);
    lab.shutdown().await.unwrap();

    // Renewal falls due (about 13 s after enrollment) while the controller is down.
    for _ in 0..400 {
        if agent.live.cert_renewal_failures.get() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        agent.live.cert_renewal_failures.get() >= 2,
        "renewal was not attempted while the controller was down"
    );
    assert_eq!(
        identity::validity(&done.files.cert).unwrap().serial,
        done.serial
    );
    let lab = LabController::restart(dir.path(), addr, enroll_addr, &s)
        .await
        .unwrap();
    let renewed = new_serial(&done.files.cert, &done.serial, 5).await;
    // Counted once the new pair is installed.
    for _ in 0..100 {
        if agent.live.cert_renewals.get() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.live.cert_renewals.get(), 1);
    assert!(
        audit(&lab)
            .iter()
            .any(|(a, _, d)| a == "certificate_renewed" && d.contains(&renewed))
    );
    // The policy link reconnects with the new certificate. In-process, the old controller's
    // connections outlive it and its store closes (a TRUNCATE checkpoint) only when the last
    // one ends, which a process exit does at once: give it that moment before writing.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let next = set_mode(&lab, "quarantine").await;
    assert_eq!(agent.at_least(next).await, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_enrolls_and_says_why_it_refuses_a_wrong_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let lab = fleet_lab(dir.path(), &settings(Duration::from_secs(3600)), &[]).await;
    let (tok, fp) = token(&lab, GW, 0).await;
    let certs = dir.path().join("gateway");
    let run = |fingerprint: String| {
        let args = vec![
            "enroll".to_string(),
            "--controller".into(),
            lab.enroll_url().unwrap(),
            "--token".into(),
            tok.clone(),
            "--ca-fingerprint".into(),
            fingerprint,
            "--gateway".into(),
            GW.into(),
            "--certs".into(),
            certs.display().to_string(),
            "--server-name".into(),
            "localhost".into(),
        ];
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_wardgate-agent"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    // Upper case with colons, as some tools print it.
    let wrong = run(vec!["AB"; 32].join(":")).await.unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("does not present the CA with fingerprint")
            && stderr.contains(&fp)
            && stderr.contains("nothing was sent"),
        "{stderr}"
    );
    let ok = run(fp.to_uppercase()).await.unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains(&format!("enrolled as gateway:{GW}")),
        "{stdout}"
    );
    let key = certs.join(format!("gateway-{GW}.key"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The same token a second time: the controller's one refusal message.
    let again = run(fp).await.unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("enrollment refused"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
