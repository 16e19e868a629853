//! `--dry-run` on `assign`, `mode`, `push` and `profiles upsert` through the real wardctl against a controller on
//! loopback (the demo site): what changes for each device, in words, computed by the
//! controller; nothing written (no audit entry, no new generation); moving a pump to a copy of
//! its profile with one more port and one flow fewer shows exactly those two.

#[path = "support/wardctl.rs"]
mod cli;

#[path = "support/impact.rs"]
mod impact;

use std::path::Path;

use wardgate_controller::store::Store;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";

async fn wardctl(lab: &LabController, args: &[&str]) -> (bool, String, String) {
    cli::run(lab, "user-eve", args).await
}

async fn ok(lab: &LabController, args: &[&str]) -> String {
    cli::ok(lab, "user-eve", args).await
}

/// Audit entries and the gateway's latest generation: what a dry run must not move.
fn written(lab: &LabController) -> (usize, u32) {
    (
        lab.store.audit().unwrap().len(),
        lab.store.latest(GW).unwrap().unwrap().generation,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_says_what_changes_per_device_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lab =
        LabController::with_demo_site(dir.path(), &[GW.to_string()], &[("eve", "engineer")], "eve")
            .await
            .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The vendor's variant: one more port to the infusion server, no DNS.
    let pump = std::fs::read_to_string(root.join("device-profiles/infusion-pump.yaml")).unwrap();
    let bbraun = pump
        .replace("name: infusion-pump\n", "name: infusion-pump-bbraun\n")
        .replace("    ports: 443\n", "    ports: [443, 8443]\n")
        .replace(
            "  - name: dns\n    direction: from-device\n    protocol: udp\n    peers: [group:dns]\n    ports: 53\n",
            "",
        );
    assert!(bbraun.contains("[443, 8443]") && !bbraun.contains("group:dns"));
    let file = dir.path().join("infusion-pump-bbraun.yaml");
    std::fs::write(&file, &bbraun).unwrap();
    ok(
        &lab,
        &[
            "profiles",
            "upsert",
            file.to_str().unwrap(),
            "--reason",
            "CHG-7 vendor profile",
        ],
    )
    .await;

    let before = written(&lab);
    // A new version of the pump's own profile: each device on it, what it gains.
    let plus = dir.path().join("infusion-pump.yaml");
    std::fs::write(
        &plus,
        pump.replace("    ports: 443\n", "    ports: [443, 8443]\n"),
    )
    .unwrap();
    let out = ok(
        &lab,
        &["profiles", "upsert", plus.to_str().unwrap(), "--dry-run"],
    )
    .await;
    assert_eq!(
        out,
        "dry run: nothing was changed\n\
         pump-3a-bed12 on gw-ward-3\n  + tcp/8443 to infusion-server\n"
    );
    assert_eq!(written(&lab), before);
    let out = ok(
        &lab,
        &[
            "assign",
            "pump-3a-bed12",
            "infusion-pump-bbraun",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(
        out,
        "dry run: nothing was changed\n\
         pump-3a-bed12 on gw-ward-3: profile infusion-pump -> infusion-pump-bbraun\n  \
         + tcp/8443 to infusion-server\n  \
         - udp/53 to dns\n  \
         ! it is enforced: the removed flows are dropped at once\n"
    );
    assert_eq!(written(&lab), before, "a dry run writes nothing");
    let json: serde_json::Value = serde_json::from_str(
        &ok(
            &lab,
            &[
                "--output",
                "json",
                "assign",
                "pump-3a-bed12",
                "infusion-pump-bbraun",
                "--dry-run",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(json["dry_run"], true);
    assert_eq!(
        json["devices"][0]["allowed_added"],
        serde_json::json!(["tcp/8443 to infusion-server"])
    );

    // mode: the mode, and the flows unchanged.
    let out = ok(&lab, &["mode", "monitor-3a-bed12", "enforce", "--dry-run"]).await;
    assert_eq!(
        out,
        "dry run: nothing was changed\n\
         monitor-3a-bed12 on gw-ward-3: mode monitor -> enforce\n  allowed flows unchanged\n  \
         ! from now on, flows its profile does not allow are dropped (`wardctl simulate` shows \
         which of its recorded flows would be)\n"
    );
    assert_eq!(written(&lab), before);
    // Refused as the write would be.
    let (done, _, err) = wardctl(&lab, &["mode", "pump-9", "enforce", "--dry-run"]).await;
    assert!(!done && err.contains("pump-9"), "{err}");
    assert_eq!(written(&lab), before);
    // Without --dry-run a reason is needed.
    let (done, _, err) = wardctl(&lab, &["mode", "monitor-3a-bed12", "enforce"]).await;
    assert!(!done && err.contains("--reason"), "{err}");

    // push: a site file with one device's mode changed.
    let site = std::fs::read_to_string(root.join("device-profiles/sites/demo-ward.yaml")).unwrap();
    let changed = dir.path().join("site.yaml");
    std::fs::write(&changed, site.replace("mode: monitor", "mode: enforce")).unwrap();
    let out = ok(
        &lab,
        &[
            "push",
            "--site",
            changed.to_str().unwrap(),
            "--profiles",
            "device-profiles",
            "--dry-run",
        ],
    )
    .await;
    assert!(
        out.contains("monitor-3a-bed12 on gw-ward-3: mode monitor -> enforce"),
        "{out}"
    );
    assert!(
        !out.contains("pump-3a-bed12 on"),
        "only what changes: {out}"
    );
    assert_eq!(written(&lab), before);

    // The write itself, then: one audit entry, one generation.
    ok(
        &lab,
        &[
            "assign",
            "pump-3a-bed12",
            "infusion-pump-bbraun",
            "--reason",
            "CHG-8 vendor profile",
        ],
    )
    .await;
    assert_eq!(written(&lab), (before.0 + 1, before.1 + 1));

    // The pump's audit trail alone, in a table.
    let trail = ok(
        &lab,
        &["audit", "list", "--device", "pump-3a-bed12", "--utc"],
    )
    .await;
    let mut lines = trail.lines();
    assert!(
        lines.next().unwrap().starts_with("#")
            && trail.contains("user:eve")
            && trail.contains(" UTC "),
        "{trail}"
    );
    let rest: Vec<&str> = lines.collect();
    let rows: Vec<&str> = rest
        .iter()
        .copied()
        .filter(|l| !l.starts_with("    "))
        .collect();
    assert_eq!(rows.len(), 2, "commissioning and the assign: {trail}");
    assert!(
        rows[1].contains("assign profile  pump-3a-bed12  CHG-8 vendor profile"),
        "{trail}"
    );
    // Under each entry, what it did to the pump in words: the assign, by what the rules
    // allow (the renamed profile's rules are not all removed and added again).
    let assign = rest.iter().position(|l| l.contains("CHG-8")).unwrap();
    assert_eq!(
        rest[assign + 1..].join("\n"),
        "    pump-3a-bed12 on gw-ward-3: profile infusion-pump -> infusion-pump-bbraun\n      \
         + tcp/8443 to infusion-server\n      \
         - udp/53 to dns",
        "{trail}"
    );

    assert!(!trail.contains("monitor-3a-bed12"), "{trail}");
    let (found, _, err) = wardctl(&lab, &["audit", "list", "--device", "pump-9"]).await;
    assert!(
        !found && err.contains("no audit entry is about `pump-9`"),
        "{err}"
    );
}

/// The availability warning through wardctl: the monitor, alone of its class on its ward, had
/// flows yesterday that its profile does not allow; `mode ... enforce` prints the warning and
/// fails without --accept-impact, `--dry-run` shows it, and with --accept-impact the audit
/// entry keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforcing_against_recent_traffic_needs_accept_impact() {
    let dir = tempfile::tempdir().unwrap();
    let lab =
        LabController::with_demo_site(dir.path(), &[GW.to_string()], &[("eve", "engineer")], "eve")
            .await
            .unwrap();
    impact::record(&lab, 1.0, 4);
    let dry = ok(&lab, &["mode", impact::MONITOR, "enforce", "--dry-run"]).await;
    for want in [
        "availability warning:",
        "1 of 1 `patient-monitor` devices on ward Ward 3A, bed 12",
        "monitor-3a-bed12 on gw-ward-3:",
        "- tcp 203.0.113.200 port 4444, from-device: 4 flows",
        "needs --accept-impact",
    ] {
        assert!(dry.contains(want), "{want}: {dry}");
    }
    let before = written(&lab);
    let (done, _, err) = wardctl(
        &lab,
        &["mode", impact::MONITOR, "enforce", "--reason", "CHG-9"],
    )
    .await;
    assert!(!done, "refused without --accept-impact");
    for want in [
        "availability warning",
        "203.0.113.200 port 4444",
        "--accept-impact",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(written(&lab), before, "nothing written");
    let out = ok(
        &lab,
        &[
            "mode",
            impact::MONITOR,
            "enforce",
            "--reason",
            "CHG-9",
            "--accept-impact",
        ],
    )
    .await;
    assert!(out.contains("availability impact accepted"), "{out}");
    let audit = lab.store.audit().unwrap();
    let last = audit.iter().rfind(|e| e.action == "set_mode").unwrap();
    assert!(last.diff.contains("impact_accepted"), "{}", last.diff);
    assert!(
        last.diff.contains("203.0.113.200 port 4444"),
        "{}",
        last.diff
    );
}
