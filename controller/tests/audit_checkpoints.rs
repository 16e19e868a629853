//! Signed audit checkpoints: the controller signs its chain head and sends it to the SOC sinks,
//! a real rsyslog (see `support::rsyslog`) and an OCSF file; `audit verify --checkpoints` on
//! what the SOC kept passes on an intact trail and catches what the head file cannot once the
//! attacker owns the controller's disk: a deleted tail or a rewritten chain with the head file
//! rewritten to match, and a checkpoint whose signature was forged.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use support::rsyslog::{Rsyslog, free_port};
use wardgate_controller::{
    audit::{
        self, AuditEntry,
        checkpoint::{Checkpoint, Signed},
        signing::SigningKey,
    },
    config::{CheckpointConfig, SinkConfig, SinkKind},
    store::{SqliteStore, Store as _},
};
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";

fn syslog_sink(port: u16) -> SinkConfig {
    SinkConfig {
        kind: SinkKind::Syslog,
        name: Some("siem".into()),
        address: Some(format!("127.0.0.1:{port}")),
        tls: None,
        path: None,
        rotate_bytes: 64 << 20,
        keep: 5,
    }
}

fn ocsf_sink(path: &Path) -> SinkConfig {
    SinkConfig {
        kind: SinkKind::Ocsf,
        name: None,
        address: None,
        tls: None,
        path: Some(path.to_path_buf()),
        rotate_bytes: 64 << 20,
        keep: 5,
    }
}

/// Runs a binary of this package; (success, stdout, stderr).
fn run(bin: &str, args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `wardgate-controller audit verify` on `data`, against the checkpoints in `soc_file`.
fn verify_offline(data: &Path, soc_file: &Path, key: &Path) -> (bool, String, String) {
    run(
        env!("CARGO_BIN_EXE_wardgate-controller"),
        &[
            "audit",
            "verify",
            "--data",
            data.to_str().unwrap(),
            "--checkpoints",
            soc_file.to_str().unwrap(),
            "--checkpoint-key",
            key.to_str().unwrap(),
        ],
        &[],
    )
}

/// The same check without checkpoints: the head file only.
fn verify_head_only(data: &Path) -> (bool, String, String) {
    run(
        env!("CARGO_BIN_EXE_wardgate-controller"),
        &["audit", "verify", "--data", data.to_str().unwrap()],
        &[],
    )
}

/// `wardctl audit verify --checkpoints` through the API, as `vic`.
async fn verify_wardctl(
    lab: &LabController,
    soc_file: &Path,
    key: &Path,
) -> (bool, String, String) {
    let env = [
        ("WARDGATE_CONTROLLER", lab.url()),
        ("WARDGATE_CERTS", lab.certs().display().to_string()),
        ("WARDGATE_AS", "user-vic".to_string()),
    ];
    let args = [
        "audit".to_string(),
        "verify".into(),
        "--checkpoints".into(),
        soc_file.display().to_string(),
        "--checkpoint-key".into(),
        key.display().to_string(),
    ];
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(env!("CARGO_BIN_EXE_wardctl"), &args, &env)
    })
    .await
    .unwrap()
}

/// The checkpoints in a file the SOC kept.
fn checkpoints_in(path: &Path) -> Vec<Signed> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(Signed::find)
        .map(Result::unwrap)
        .collect()
}

/// The attacker, owning the controller's disk, rewrites the head file to agree with the store
/// as it now is: one line per entry with its (recomputed) hash, so the head-file check passes.
fn rewrite_head_file(store: &SqliteStore, head: &Path) {
    let mut text = format!("0 {} 1 adopted\n", audit::GENESIS);
    for e in store.audit().unwrap() {
        text += &format!("{} {} {}\n", e.seq, e.hash, e.unix_ms);
    }
    std::fs::write(head, text).unwrap();
}

/// Rewrites every entry from `from` on with a new reason and recomputed hashes.
fn rewrite_chain(store: &SqliteStore, from: u64) {
    let mut prev = audit::GENESIS.to_string();
    for e in store.audit().unwrap() {
        let mut e: AuditEntry = e;
        if e.seq >= from {
            e.reason = "routine maintenance".into();
            e.prev_hash = prev.clone();
            e.hash = e.content_hash();
            store
                .execute_raw(&format!(
                    "UPDATE audit SET reason = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
                    e.reason, e.prev_hash, e.hash, e.seq
                ))
                .unwrap();
        }
        prev = e.hash;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_reach_the_soc_and_catch_a_trail_rewritten_with_its_head_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rsyslog = Rsyslog::start(&dir.path().join("rsyslog"), port, None);
    let ocsf = dir.path().join("soc/ocsf.jsonl");
    let key_path = dir.path().join("keys/audit-checkpoint.key");
    let lab = LabController::start_with_soc(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("vic", "viewer")],
        &[syslog_sink(port), ocsf_sink(&ocsf)],
        Some(&CheckpointConfig {
            enabled: true,
            key: Some(key_path.clone()),
            every_entries: 1,
            every_seconds: 60,
        }),
    )
    .await
    .unwrap();
    // The SOC's copy of the public key, taken at install.
    let soc_key: PathBuf = dir.path().join("soc/controller-checkpoint.pub");
    std::fs::create_dir_all(dir.path().join("soc")).unwrap();
    std::fs::copy(audit::signing::public_path(&key_path), &soc_key).unwrap();

    lab.push_demo_site("eve", "CHG-1 commissioning")
        .await
        .unwrap();
    let mut eve = lab.admin("eve").await.unwrap();
    eve.set_mode(pb::SetModeRequest {
        accept_impact: false,
        device: "pump-3a-bed12".into(),
        mode: "monitor".into(),
        reason: "INC-42 false positives".into(),
        dry_run: false,
        for_minutes: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let last = lab.store.audit().unwrap().last().unwrap().seq;
    assert!(last > 3, "{last} entries");

    // The newest checkpoint reaches rsyslog and the OCSF file.
    let syslog_file = rsyslog.out.clone();
    let t = Instant::now();
    while ![&syslog_file, &ocsf]
        .iter()
        .all(|f| checkpoints_in(f).iter().any(|c| c.checkpoint.seq == last))
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no checkpoint of entry {last} at the SOC: syslog {:?}, ocsf {:?}",
            checkpoints_in(&syslog_file),
            checkpoints_in(&ocsf)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "checkpoint of entry {last} at the SOC after {:?}",
        t.elapsed()
    );
    // rsyslog read it as RFC 5424 with our MSGID.
    let line = rsyslog
        .lines()
        .into_iter()
        .find(|l| l.contains("audit-checkpoint v1 seq="))
        .unwrap();
    assert!(
        line.starts_with("plain 1 wardgate-controller wardgate audit_checkpoint 5|"),
        "{line}"
    );
    let data = dir.path().join("data");
    for soc_file in [&syslog_file, &ocsf] {
        let (ok, out, err) = verify_offline(&data, soc_file, &soc_key);
        assert!(ok, "{out}{err}");
        println!("{}: {out}", soc_file.display());
        assert!(
            out.contains("signed checkpoints:")
                && out.contains(&format!("reaches the newest (entry {last})")),
            "{out}"
        );
    }
    let (ok, out, err) = verify_wardctl(&lab, &syslog_file, &soc_key).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("signed checkpoints:"), "{out}");

    // A checkpoint that was not signed with the controller's key: one signature byte changed,
    // or one signed by another key claiming a later entry.
    let forged = dir.path().join("soc/forged.log");
    let text = std::fs::read_to_string(&syslog_file).unwrap();
    let (i, sig) = text.match_indices(" sig=").last().unwrap();
    let at = i + sig.len();
    let flipped = if &text[at..=at] == "0" { "1" } else { "0" };
    std::fs::write(
        &forged,
        format!("{}{flipped}{}", &text[..at], &text[at + 1..]),
    )
    .unwrap();
    let (ok, _, err) = verify_offline(&data, &forged, &soc_key);
    assert!(!ok);
    assert!(err.contains("forged or altered"), "{err}");
    println!(
        "a signature byte changed: {}",
        err.lines().next().unwrap_or_default()
    );
    let other = SigningKey::load_or_create(&dir.path().join("attacker.key")).unwrap();
    let fake = Checkpoint {
        seq: last,
        hash: "00".repeat(32),
        unix_ms: 1,
    }
    .sign(&other);
    std::fs::write(&forged, format!("{text}{}\n", fake.message())).unwrap();
    let (ok, _, err) = verify_offline(&data, &forged, &soc_key);
    assert!(!ok);
    assert!(err.contains("forged or altered"), "{err}");

    // The attacker owns the disk: the chain rewritten from entry 2 with recomputed hashes and
    // the head file rewritten to match. The head file cannot tell; the SOC's checkpoints can.
    let head = data.join("audit-head.log");
    rewrite_chain(&lab.store, 2);
    rewrite_head_file(&lab.store, &head);
    let (ok, out, err) = verify_head_only(&data);
    assert!(ok, "the attacker's rewrite is consistent: {out}{err}");
    let (ok, _, err) = verify_offline(&data, &syslog_file, &soc_key);
    assert!(!ok);
    assert!(
        err.contains("does not match the signed checkpoint") && err.contains("rewritten"),
        "{err}"
    );
    println!(
        "chain and head file rewritten: {}",
        err.lines().next().unwrap_or_default()
    );
    let (ok, _, err) = verify_wardctl(&lab, &syslog_file, &soc_key).await;
    assert!(!ok);
    assert!(
        err.contains("does not match the signed checkpoint"),
        "{err}"
    );

    // Then the tail deleted, the head file rewritten again.
    lab.store
        .execute_raw(&format!("DELETE FROM audit WHERE seq >= {}", last - 1))
        .unwrap();
    rewrite_head_file(&lab.store, &head);
    let (ok, out, err) = verify_head_only(&data);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = verify_offline(&data, &syslog_file, &soc_key);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "the trail ends at entry {}, but the SOC holds a signed checkpoint of entry {last}",
            last - 2
        )) && err.contains("cut"),
        "{err}"
    );
    println!(
        "tail deleted, head file rewritten: {}",
        err.lines().next().unwrap_or_default()
    );
    rsyslog.stop();
}

#[test]
fn a_soc_file_without_checkpoints_checks_nothing_and_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(SqliteStore::open(&data).unwrap());
    let key = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
    let pubkey = audit::signing::public_path(&dir.path().join("k"));
    assert!(pubkey.exists(), "{:?}", key.public().id());
    let soc = dir.path().join("soc.log");
    std::fs::write(&soc, "<13>1 - host app - - - hello\n").unwrap();
    let (ok, _, err) = verify_offline(&data, &soc, &pubkey);
    assert!(!ok);
    assert!(err.contains("no audit checkpoint in"), "{err}");
}

/// The controller binary with `audit_checkpoints` in its config: it makes its key, and its
/// first checkpoint (at start) reaches the OCSF file and verifies with the public key.
#[test]
fn the_binary_signs_checkpoints_as_configured() {
    binary_signs_checkpoints("audit_checkpoints:\n  every_entries: 10\n");
}

/// Nothing said about checkpoints: a controller with a sink sends them all the same.
#[test]
fn the_binary_signs_checkpoints_by_default() {
    binary_signs_checkpoints("");
}

fn binary_signs_checkpoints(checkpoint_config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    wardgate_controller::certs::init(
        &certs,
        &[],
        &[],
        &wardgate_controller::certs::InitOptions::default(),
    )
    .unwrap();
    let data = dir.path().join("data");
    let ocsf = dir.path().join("soc/ocsf.jsonl");
    let config = dir.path().join("controller.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata: {}\ncerts: {}\nsinks:\n  - kind: ocsf\n    path: {}\n{checkpoint_config}",
            data.display(),
            certs.display(),
            ocsf.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardgate-controller"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("controller.log")).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while checkpoints_in(&ocsf).is_empty() {
        if t.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!(
                "no checkpoint in the OCSF file: {}",
                std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let event: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&ocsf)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(event["class_uid"], 1008);
    assert_eq!(event["unmapped"]["seq"], 0);
    // An Event Log Activity as the official OCSF schema of its version defines it.
    assert!(
        wardgate_testkit::ocsf::validate_against_schema(&std::fs::read_to_string(&ocsf).unwrap())
            >= 1
    );
    let key = data.join("audit-checkpoint.key.pub");
    let (ok, out, err) = verify_offline(&data, &ocsf, &key);
    assert!(ok, "{out}{err}");
    assert!(out.contains("signed checkpoints: 1 verified"), "{out}");
}
