//! `wardctl devices import` through the real wardctl against a controller on loopback (the
//! demo site): a FHIR R4 Bundle's diff with --dry-run (nothing written), then written (one
//! audited write naming the file and its SHA-256, the new pump learning), then the same file
//! again changes nothing; a CSV with a mapping file changes a field.

#[path = "support/wardctl.rs"]
mod cli;

use wardgate_controller::store::Store;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";
const BUNDLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/devices.fhir.json");

async fn wardctl(lab: &LabController, args: &[&str]) -> (bool, String, String) {
    cli::run(lab, "user-eve", args).await
}

async fn ok(lab: &LabController, args: &[&str]) -> String {
    cli::ok(lab, "user-eve", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fhir_bundle_dry_run_then_written_then_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let lab =
        LabController::with_demo_site(dir.path(), &[GW.to_string()], &[("eve", "engineer")], "eve")
            .await
            .unwrap();
    let audit = || lab.store.audit().unwrap().len();
    let before = audit();
    let out = ok(&lab, &["devices", "import", BUNDLE, "--dry-run"]).await;
    print!("{out}");
    let sha = wardgate_controller::import::sha256(&std::fs::read(BUNDLE).unwrap());
    assert!(
        out.contains(&format!("import of devices.fhir.json (sha256 {sha})")),
        "{out}"
    );
    assert!(out.contains("new devices (learn mode): 1\n"), "{out}");
    assert!(
        out.contains("  + pump-icu-01 00:1a:2b:3c:4d:01 192.0.2.41 profile=infusion-pump gateway=gw-ward-3 location=\"ICU 3\" type=\"Infusion pump\"\n"),
        "{out}"
    );
    // The monitor has no address, the ventilator no profile, the thermometer only a
    // Bluetooth MAC, and a Patient is not a Device.
    assert!(out.contains("refused: 4\n"), "{out}");
    assert!(
        out.contains("  ! entry 2: address: a new device needs one"),
        "{out}"
    );
    assert!(
        out.contains("  ! entry 3: profile: no profile named `ventilator`"),
        "{out}"
    );
    assert!(out.contains("unmatched (left as they are): 3\n"), "{out}");
    assert!(out.contains("dry run: nothing written"), "{out}");
    assert_eq!(audit(), before, "a dry run writes nothing");
    assert!(lab.store.device("pump-icu-01").unwrap().is_none());

    // Without --reason: refused before anything is sent.
    let (success, _, err) = wardctl(&lab, &["devices", "import", BUNDLE]).await;
    assert!(!success && err.contains("--reason"), "{err}");

    let out = ok(
        &lab,
        &[
            "devices",
            "import",
            BUNDLE,
            "--reason",
            "CHG-9 ICU registry",
        ],
    )
    .await;
    assert!(out.contains("written (audit entry #"), "{out}");
    let pump = lab.store.device("pump-icu-01").unwrap().unwrap();
    assert_eq!(pump.mode.as_str(), "learn");
    assert_eq!(pump.asset_id, "BIO-004211");
    let entries = lab.store.audit().unwrap();
    let last = entries.last().unwrap();
    assert_eq!(last.action, "import_devices");
    assert!(
        last.diff.contains(&sha) && last.diff.contains("\"fhir\""),
        "{}",
        last.diff
    );
    let maker = lab
        .store
        .device_fields(Some("pump-icu-01"))
        .unwrap()
        .into_iter()
        .find(|f| f.field == "manufacturer")
        .unwrap();
    assert_eq!(
        (maker.value.as_str(), maker.source.as_str()),
        ("B. Braun", "fhir")
    );

    let n = audit();
    let out = ok(
        &lab,
        &["devices", "import", BUNDLE, "--reason", "CHG-9 again"],
    )
    .await;
    assert!(
        out.contains("new devices (learn mode): 0\nchanged devices: 0\nunchanged: 1\n"),
        "{out}"
    );
    assert!(out.contains("nothing to write"), "{out}");
    assert_eq!(audit(), n);

    // A CSV with a mapping file: the pump moves ward; JSON output for scripts.
    let csv = dir.path().join("cmms.csv");
    std::fs::write(
        &csv,
        "Asset;Label;MAC;Ward\nBIO-004211;pump-icu-01;00:1a:2b:3c:4d:01;ICU 4\n",
    )
    .unwrap();
    let map = dir.path().join("cmms.map");
    std::fs::write(
        &map,
        "# our CMMS\nmac = MAC\nname = Label\nward = Ward\nasset_id = Asset\n",
    )
    .unwrap();
    let out = ok(
        &lab,
        &[
            "--output",
            "json",
            "devices",
            "import",
            csv.to_str().unwrap(),
            "--map",
            map.to_str().unwrap(),
            "--dry-run",
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["diff"]["changed"][0]["device"], "pump-icu-01");
    assert_eq!(v["diff"]["changed"][0]["fields"][0]["old"], "ICU 3");
    assert_eq!(v["diff"]["changed"][0]["fields"][0]["new"], "ICU 4");
    assert_eq!(audit(), n);
}
