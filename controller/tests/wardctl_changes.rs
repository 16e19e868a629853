//! Four eyes through wardctl (`wardctl changes`), against a controller on loopback holding the
//! demo site: eve submits a new profile for the pump, `list` and `show` (the rule diff and the
//! simulation) tell the reviewer what it does, eve's own approval is refused (and audited),
//! ana's applies it and the audit entry names both. A soc user may not approve.

#[path = "support/wardctl.rs"]
mod wardctl;

use std::path::Path;

use wardctl::{ok, run};
use wardgate_controller::store::Store;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";
const PUMP: &str = "pump-3a-bed12";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_applied_by_a_second_engineer_only() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::with_demo_site(
        dir.path(),
        &[GW.to_string()],
        &[("eve", "engineer"), ("ana", "engineer"), ("sam", "soc")],
        "eve",
    )
    .await
    .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pump = std::fs::read_to_string(root.join("device-profiles/infusion-pump.yaml")).unwrap();
    let v2 = pump
        .replace("name: infusion-pump\n", "name: infusion-pump-v2\n")
        .replace("    ports: 443\n", "    ports: [443, 8443]\n");
    assert!(v2.contains("[443, 8443]"));
    let file = dir.path().join("infusion-pump-v2.yaml");
    std::fs::write(&file, &v2).unwrap();

    let out = ok(
        &lab,
        "user-eve",
        &[
            "changes",
            "submit",
            "--device",
            PUMP,
            "--profile",
            file.to_str().unwrap(),
            "--reason",
            "CHG-9 vendor port 8443",
        ],
    )
    .await;
    let id = out
        .strip_prefix("change ")
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no change id in {out:?}"))
        .to_string();
    let gen_before = lab.store.latest(GW).unwrap().unwrap().generation;
    assert_eq!(
        lab.store.device(PUMP).unwrap().unwrap().profile,
        "infusion-pump",
        "a submitted change is not applied"
    );

    let list = ok(&lab, "user-ana", &["changes", "list"]).await;
    let row = list
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("change {id} not listed: {list}"));
    assert!(
        row.contains(PUMP) && row.contains("infusion-pump-v2") && row.contains("eve"),
        "{row}"
    );
    let show = ok(&lab, "user-ana", &["changes", "show", &id]).await;
    assert!(
        show.contains("profile infusion-pump -> infusion-pump-v2")
            && show.contains("+ tcp/8443 to infusion-server"),
        "the review shows the rule diff: {show}"
    );
    assert!(show.contains("simulation: "), "{show}");

    // The submitter may not approve her own change; the refusal is audited.
    let (approved, _, err) = run(
        &lab,
        "user-eve",
        &["changes", "approve", &id, "--reason", "looks fine"],
    )
    .await;
    assert!(!approved, "eve approved her own change");
    assert!(err.contains("another engineer"), "{err}");
    let audit = lab.store.audit().unwrap();
    assert!(
        audit.iter().any(|e| e.actor == "user:eve"
            && e.action == "refused"
            && e.diff.contains("approve_change")),
        "the refused approval is audited"
    );
    // Nor may the SOC.
    let (approved, _, _) = run(
        &lab,
        "user-sam",
        &["changes", "approve", &id, "--reason", "soc says yes"],
    )
    .await;
    assert!(!approved, "a soc user approved a change");
    assert_eq!(
        lab.store.device(PUMP).unwrap().unwrap().profile,
        "infusion-pump"
    );
    assert_eq!(
        lab.store.latest(GW).unwrap().unwrap().generation,
        gen_before
    );

    let out = ok(
        &lab,
        "user-ana",
        &["changes", "approve", &id, "--reason", "CAB-3 reviewed"],
    )
    .await;
    assert!(out.contains("recorded as audit entry"), "{out}");
    assert_eq!(
        lab.store.device(PUMP).unwrap().unwrap().profile,
        "infusion-pump-v2",
        "the approval applies the change"
    );
    assert!(lab.store.latest(GW).unwrap().unwrap().generation > gen_before);
    let audit = lab.store.audit().unwrap();
    let entry = audit
        .iter()
        .find(|e| e.action == "approve_change")
        .expect("an approve_change audit entry");
    assert_eq!(entry.actor, "user:ana");
    assert!(
        entry.diff.contains("\"proposer\":\"eve\"") && entry.diff.contains("\"approver\":\"ana\""),
        "{}",
        entry.diff
    );
    assert!(
        entry.reason.contains("CHG-9") && entry.reason.contains("CAB-3"),
        "{}",
        entry.reason
    );
    // Approved once: no longer pending, and a second approval is refused.
    assert!(
        !ok(&lab, "user-ana", &["changes", "list"])
            .await
            .lines()
            .any(|l| l.starts_with(&format!("{id} "))),
    );
    let (again, _, _) = run(
        &lab,
        "user-ana",
        &["changes", "approve", &id, "--reason", "again"],
    )
    .await;
    assert!(!again, "a change was approved twice");
}
