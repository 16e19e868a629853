//! One validation (issue 24 point 4): the controller's `profiles validate` says what `profiles
//! upsert` would (it runs the upsert's own steps, rolled back); `profile validate` takes files
//! as well as directories. Through the real wardctl against a controller on loopback.

#[path = "support/wardctl.rs"]
mod cli;

use std::path::Path;

use wardgate_controller::store::Store;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";

async fn wardctl(lab: &LabController, args: &[&str]) -> (bool, String, String) {
    cli::run(lab, "user-eve", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_on_the_controller_refuses_what_upsert_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let lab =
        LabController::with_demo_site(dir.path(), &[GW.to_string()], &[("eve", "engineer")], "eve")
            .await
            .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pump = std::fs::read_to_string(root.join("device-profiles/infusion-pump.yaml")).unwrap();
    // A well-formed profile naming a group the controller does not have.
    let unknown = dir.path().join("infusion-pump.yaml");
    std::fs::write(&unknown, pump.replace("group:ntp", "group:billing")).unwrap();
    let file = unknown.to_str().unwrap();

    let (upserted, _, upsert_err) = wardctl(
        &lab,
        &["profiles", "upsert", file, "--reason", "CHG-9 a new group"],
    )
    .await;
    assert!(!upserted, "the controller has no group `billing`");
    assert!(upsert_err.contains("`billing`"), "{upsert_err}");

    let (valid, out, err) = wardctl(&lab, &["profiles", "validate", file]).await;
    assert!(!valid, "validate must refuse what upsert refuses: {out}");
    assert!(err.contains("`billing`"), "{err}");
    assert!(
        err.contains("profiles upsert") && !err.contains(":0:0"),
        "{err}"
    );

    // The unchanged profile validates, and nothing was written by validating.
    let audit = lab.store.audit().unwrap().len();
    let ok_file = dir.path().join("ok.yaml");
    std::fs::write(&ok_file, &pump).unwrap();
    let (valid, out, err) =
        wardctl(&lab, &["profiles", "validate", ok_file.to_str().unwrap()]).await;
    assert!(valid, "{err}");
    assert!(out.ends_with(": valid\n"), "{out}");
    assert_eq!(lab.store.audit().unwrap().len(), audit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_validate_takes_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let lab =
        LabController::with_demo_site(dir.path(), &[GW.to_string()], &[("eve", "engineer")], "eve")
            .await
            .unwrap();
    let one = "device-profiles/infusion-pump.yaml";
    let (ok, out, err) = wardctl(&lab, &["profile", "validate", one]).await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("1 profiles valid in {one}\n"));
    // A file and a directory together: the file's profile is also in the directory, so it is
    // defined twice, which is said with both places.
    let (ok, _, err) = wardctl(&lab, &["profile", "validate", one, "device-profiles"]).await;
    assert!(!ok);
    assert!(
        err.contains("profile `infusion-pump` is already defined in"),
        "{err}"
    );
    // A broken file among good ones: its position, and the others still read.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "name: x\nflows:\n  - direction: from-device\n    protocl: tcp\n",
    )
    .unwrap();
    let (ok, _, err) = wardctl(
        &lab,
        &[
            "profile",
            "validate",
            broken.to_str().unwrap(),
            "device-profiles",
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("broken.yaml:4:5"), "{err}");
    assert!(err.contains("did you mean `protocol`?"), "{err}");
}
