//! The audit trail an auditor can rely on: the chain head leaves the database on every write
//! (the head file), so a deleted tail, a chain rewritten from scratch and an emptied table are
//! reported; each generation's content hash and the enforcement diff are in its entry, and a
//! generation changed in the store is reported; `wardgate-controller audit verify --data` (offline: wardctl
//! talks to the API only) on a directory
//! without a store is an error and creates nothing.

use std::{io::Write as _, path::Path, process::Command, sync::Arc};

use wardgate_controller::{
    audit::{self, AuditEntry, enforcement},
    store::{GenerationContent, SqliteStore, Store},
};
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";

struct Lab {
    dir: tempfile::TempDir,
    lab: LabController,
    store: Arc<SqliteStore>,
}

/// A controller with the demo site and two more audited writes.
async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::with_demo_site(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("vic", "viewer")],
        "eve",
    )
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
    eve.assign_profile(pb::AssignProfileRequest {
        accept_impact: false,
        device: "us-3a-portable".into(),
        profile: "ct".into(),
        reason: "INC-7 relabelled".into(),
        dry_run: false,
    })
    .await
    .unwrap();
    let store = lab.store.clone();
    Lab { dir, lab, store }
}

impl Lab {
    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    async fn verify(&self) -> pb::VerifyAuditResponse {
        self.lab
            .admin("vic")
            .await
            .unwrap()
            .verify_audit(pb::VerifyAuditRequest {})
            .await
            .unwrap()
            .into_inner()
    }
}

fn controller(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wardgate-controller"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn verify_data(dir: &Path) -> (bool, String, String) {
    controller(&["audit", "verify", "--data", dir.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_appends_its_head_and_an_intact_trail_verifies() {
    let l = lab().await;
    let entries = l.store.audit().unwrap();
    let head = audit::head::read(&l.data().join("audit-head.log")).unwrap();
    // The adoption line of the new store (entry 0), then one line per write, in order.
    assert_eq!(head[0].seq, 0);
    assert!(head[0].adopted);
    assert_eq!(
        head[1..]
            .iter()
            .map(|h| (h.seq, h.hash.clone()))
            .collect::<Vec<_>>(),
        entries
            .iter()
            .map(|e| (e.seq, e.hash.clone()))
            .collect::<Vec<_>>()
    );
    let v = l.verify().await;
    assert!(v.intact, "{}", v.problem);
    assert_eq!(v.entries, entries.len() as u64);
    let (ok, out, err) = verify_data(&l.data());
    assert!(ok, "{out}{err}");
    let n = entries.len();
    assert!(
        out.contains(&format!(
            "audit trail intact: {n} entries; the head file agrees up to entry {n} (kept since entry 0)"
        )),
        "{out}"
    );
    println!("{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tail_is_reported() {
    let l = lab().await;
    let last = l.store.audit().unwrap().last().unwrap().seq;
    // The last two entries go; what is left is a perfectly valid chain.
    l.store
        .execute_raw(&format!("DELETE FROM audit WHERE seq >= {}", last - 1))
        .unwrap();
    assert!(audit::verify(&l.store.audit().unwrap()).is_ok());
    let v = l.verify().await;
    assert!(!v.intact);
    assert!(
        v.problem.contains(&format!(
            "the trail ends at entry {}, but the head file records entry {last}",
            last - 2
        )) && v.problem.contains("truncated"),
        "{}",
        v.problem
    );
    let (ok, _, err) = verify_data(&l.data());
    assert!(!ok);
    assert!(err.contains("truncated"), "{err}");
}

/// The attack of the hardening issue: `aborted` lines appended to the head file for the last
/// entries (as if their writes had failed), then those rows deleted. Before aborts were held
/// to how the controller writes them, verify called this trail intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborts_appended_for_the_last_entries_then_their_rows_deleted_are_reported() {
    let l = lab().await;
    let entries = l.store.audit().unwrap();
    let last = entries.last().unwrap().seq;
    let head_path = l.data().join("audit-head.log");
    let mut forged = String::new();
    for e in entries.iter().rev().take(2) {
        forged += &format!("{} {} 0 aborted\n", e.seq, e.hash);
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&head_path)
        .unwrap()
        .write_all(forged.as_bytes())
        .unwrap();
    l.store
        .execute_raw(&format!("DELETE FROM audit WHERE seq >= {}", last - 1))
        .unwrap();
    assert!(audit::verify(&l.store.audit().unwrap()).is_ok());
    let v = l.verify().await;
    assert!(!v.intact, "verify called the trail intact");
    assert!(
        v.problem
            .contains(&format!("an `aborted` line for entry {last}"))
            && v.problem.contains("tampered"),
        "{}",
        v.problem
    );
    let (ok, out, err) = verify_data(&l.data());
    assert!(!ok, "{out}");
    assert!(err.contains("tampered"), "{err}");
}

/// An abort that copies its head line's time exactly but cancels an entry the store still
/// holds: the write it cancels did commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_of_an_entry_the_store_holds_is_reported() {
    let l = lab().await;
    let head_path = l.data().join("audit-head.log");
    let lines = audit::head::read(&head_path).unwrap();
    let h = lines.last().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&head_path)
        .unwrap()
        .write_all(format!("{} {} {} aborted\n", h.seq, h.hash, h.unix_ms).as_bytes())
        .unwrap();
    let v = l.verify().await;
    assert!(!v.intact);
    assert!(
        v.problem.contains(&format!(
            "entry {} is in the store, but the head file cancels it as aborted",
            h.seq
        )),
        "{}",
        v.problem
    );
}

/// Rewrites every entry from `from` on with a new reason and recomputed hashes: a chain
/// nobody can tell from the real one by looking at the database alone.
fn rewrite_chain(store: &SqliteStore, from: u64) {
    let entries = store.audit().unwrap();
    let mut prev = audit::GENESIS.to_string();
    for e in &entries {
        let mut e: AuditEntry = e.clone();
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
async fn a_rewritten_chain_is_reported() {
    let l = lab().await;
    rewrite_chain(&l.store, 2);
    let rewritten = l.store.audit().unwrap();
    assert!(
        audit::verify(&rewritten).is_ok(),
        "the rewritten chain is self-consistent"
    );
    assert_eq!(rewritten[1].reason, "routine maintenance");
    let v = l.verify().await;
    assert!(!v.intact);
    assert!(
        v.problem.contains("entry 2 does not match the head file")
            && v.problem.contains("rewritten"),
        "{}",
        v.problem
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_table_is_reported() {
    let l = lab().await;
    let n = l.store.audit().unwrap().len();
    l.store.execute_raw("DELETE FROM audit").unwrap();
    let v = l.verify().await;
    assert!(!v.intact);
    assert!(
        v.problem.contains(&format!(
            "the audit table is empty, but the head file records {n} entries"
        )),
        "{}",
        v.problem
    );
    let (ok, _, err) = verify_data(&l.data());
    assert!(!ok);
    assert!(err.contains("emptied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_head_file_is_reported() {
    let l = lab().await;
    std::fs::remove_file(l.data().join("audit-head.log")).unwrap();
    let (ok, _, err) = verify_data(&l.data());
    assert!(!ok);
    assert!(err.contains("no audit head file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_hold_the_generation_hash_and_the_enforcement_diff() {
    let l = lab().await;
    let entries = l.store.audit().unwrap();
    let assign = entries.last().unwrap();
    assert_eq!(assign.action, "assign_profile");
    let enforced = enforcement::of_diff(&assign.diff).unwrap();
    let change = &enforced[GW];
    let latest = l.store.latest_generation(GW).unwrap();
    assert_eq!(change.generation, latest);
    let stored = l.store.generation(GW, latest).unwrap().unwrap();
    assert!(matches!(stored.content, GenerationContent::Bundle(_)));
    assert_eq!(change.content_sha256, stored.content_hash());
    assert_eq!(change.content_format, enforcement::ContentFormat::Bundle);
    assert_eq!(change.devices_changed, vec!["us-3a-portable".to_string()]);
    assert!(
        !change.rules_added.is_empty() && change.rules_added.iter().all(|r| r.starts_with("ct: ")),
        "{:?}",
        change.rules_added
    );
    assert!(
        !change.rules_removed.is_empty()
            && change
                .rules_removed
                .iter()
                .all(|r| r.starts_with("ultrasound: ")),
        "{:?}",
        change.rules_removed
    );
    // The mode change before it: a changed device, no rule added or removed.
    let mode = &entries[entries.len() - 2];
    let m = &enforcement::of_diff(&mode.diff).unwrap()[GW];
    assert_eq!(m.generation, latest - 1);
    assert_eq!(m.devices_changed, vec!["pump-3a-bed12".to_string()]);
    assert!(m.rules_added.is_empty() && m.rules_removed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_changed_in_the_store_is_reported() {
    let l = lab().await;
    let latest = l.store.latest_generation(GW).unwrap();
    // Quietly put the pump back into enforce in the policy the agent receives.
    let mut state = l
        .store
        .generation(GW, latest)
        .unwrap()
        .unwrap()
        .state("")
        .unwrap();
    let pump = state
        .devices
        .iter_mut()
        .find(|d| d.name == "pump-3a-bed12")
        .unwrap();
    assert_eq!(pump.mode, wardgate_policy::Mode::Monitor);
    pump.mode = wardgate_policy::Mode::Enforce;
    let bytes = wardgate_controller::generation::canonical_bytes(&state);
    let n = l
        .store
        .execute_raw(&format!(
            "UPDATE generations SET bundle = X'{}' WHERE gateway = '{GW}' AND generation = {latest}",
            hex::encode(bytes)
        ))
        .unwrap();
    assert_eq!(n, 1);
    let v = l.verify().await;
    assert!(!v.intact);
    assert!(
        v.problem.contains(&format!(
            "generation {latest} of {GW} does not match its audit entry"
        )),
        "{}",
        v.problem
    );
}

#[test]
fn verify_on_a_directory_without_a_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("not-the-data-dir");
    std::fs::create_dir(&wrong).unwrap();
    let (ok, out, err) = verify_data(&wrong);
    assert!(!ok, "{out}");
    assert!(
        err.contains("not-the-data-dir") && err.contains("wardgate.db"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&wrong).unwrap().next().is_none(),
        "verify created nothing"
    );
    let missing = dir.path().join("missing");
    let (ok, _, _) = verify_data(&missing);
    assert!(!ok);
    assert!(!missing.exists());
}

#[test]
fn wardctl_reads_no_store_files() {
    // wardctl talks to the API only: the offline check is the controller's.
    let out = Command::new(env!("CARGO_BIN_EXE_wardctl"))
        .args(["audit", "verify", "--data", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unexpected argument '--data'"), "{err}");
}
