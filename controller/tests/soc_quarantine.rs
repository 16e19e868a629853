//! The SOC's emergency quarantine (issue 24 point 6) through the real wardctl against a
//! controller on loopback (the demo site): by default the SOC files a request an engineer
//! approves; with `--soc-quarantine direct` it quarantines at once for a bounded time and the
//! device goes back to its mode when the time is up. The SOC sets no other mode, a viewer
//! none, and every refused attempt is in the audit trail. The sinks' alert store carries an
//! `operator_quarantine` alert each time.

#[path = "support/wardctl.rs"]
mod cli;

use std::time::Duration;

use wardgate_controller::{
    server::{Settings, SocQuarantineMode},
    store::Store,
};
use wardgate_policy::Mode;
use wardgate_testkit::controller::LabController;

const PUMP: &str = "pump-3a-bed12";
const USERS: &[(&str, &str)] = &[("eve", "engineer"), ("sam", "soc"), ("vic", "viewer")];

async fn wardctl(lab: &LabController, who: &str, args: &[&str]) -> (bool, String, String) {
    cli::run(lab, &format!("user-{who}"), args).await
}

async fn lab(dir: &std::path::Path, settings: &Settings) -> LabController {
    let gw = ["gw-ward-3".to_string()];
    let lab = LabController::start_with(dir, &gw, USERS, settings)
        .await
        .unwrap();
    lab.push_demo_site("eve", "CHG-1 commissioning")
        .await
        .unwrap();
    lab
}

fn mode(lab: &LabController) -> Mode {
    lab.store.device(PUMP).unwrap().unwrap().mode
}

/// (actor, action, reason) of every audit entry.
fn trail(lab: &LabController) -> Vec<(String, String, String)> {
    lab.store
        .audit()
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action, e.reason))
        .collect()
}

fn operator_alerts(lab: &LabController) -> Vec<String> {
    lab.store
        .alerts(&wardgate_controller::store::AlertQuery::recent(100))
        .unwrap()
        .into_iter()
        .map(|a| a.body)
        .filter(|b| b.contains("\"operator_quarantine\""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soc_requests_a_quarantine_and_an_engineer_approves_it() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), &Settings::default()).await;
    assert_eq!(mode(&lab), Mode::Enforce);

    // The SOC may not set another mode; a viewer may not quarantine: both refused, audited.
    let (ok, _, err) = wardctl(&lab, "sam", &["mode", PUMP, "monitor", "--reason", "x"]).await;
    assert!(
        !ok && err.contains("the SOC may quarantine a device"),
        "{err}"
    );
    let (ok, _, err) = wardctl(&lab, "vic", &["mode", PUMP, "quarantine", "--reason", "x"]).await;
    assert!(!ok && err.contains("permission denied"), "{err}");
    let refused: Vec<_> = trail(&lab)
        .into_iter()
        .filter(|(_, action, _)| action == "refused")
        .map(|(actor, ..)| actor)
        .collect();
    assert_eq!(refused, ["user:sam", "user:vic"]);

    // The request: nothing changes for the pump yet, the sinks hear of it.
    let (ok, out, err) = wardctl(
        &lab,
        "sam",
        &[
            "mode",
            PUMP,
            "quarantine",
            "--reason",
            "INC-77 beacon to 203.0.113.66",
            "--for",
            "2h",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("quarantine of pump-3a-bed12 requested (request 1)")
            && out.contains("wardctl quarantine approve 1"),
        "{out}"
    );
    assert_eq!(mode(&lab), Mode::Enforce);
    let told = operator_alerts(&lab);
    assert_eq!(told.len(), 1);
    assert!(
        told[0].contains("user:sam asks to quarantine pump-3a-bed12 for 120 min"),
        "{}",
        told[0]
    );

    let (ok, listed, _) = wardctl(&lab, "eve", &["quarantine", "requests"]).await;
    assert!(ok);
    let row = listed.lines().nth(1).unwrap_or_default();
    for want in ["1", PUMP, "user:sam", "120 min", "INC-77"] {
        assert!(row.contains(want), "`{want}` missing from: {listed}");
    }
    // The SOC cannot approve its own request.
    let (ok, _, err) = wardctl(
        &lab,
        "sam",
        &["quarantine", "approve", "1", "--reason", "x"],
    )
    .await;
    assert!(!ok && err.contains("permission denied"), "{err}");

    let (ok, out, err) = wardctl(
        &lab,
        "eve",
        &[
            "quarantine",
            "approve",
            "1",
            "--reason",
            "CHG-90 confirmed with the SOC",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("pump-3a-bed12 quarantined until")
            && out.contains("requested by user:sam, approved by user:eve"),
        "{out}"
    );
    assert_eq!(mode(&lab), Mode::Quarantine);
    assert_eq!(operator_alerts(&lab).len(), 2);
    let approvals: Vec<_> = trail(&lab)
        .into_iter()
        .filter(|(_, a, _)| a == "quarantine_approved")
        .collect();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].0, "user:eve");
    let (ok, _, err) = wardctl(
        &lab,
        "eve",
        &["quarantine", "approve", "1", "--reason", "again"],
    )
    .await;
    assert!(!ok && err.contains("is not pending"), "{err}");
    assert_eq!(
        wardctl(&lab, "eve", &["quarantine", "requests"]).await.1,
        "no quarantine requests waiting\n"
    );

    // An engineer's mode change ends the SOC quarantine's timer.
    assert_eq!(lab.store.due_quarantine_timers(i64::MAX).unwrap().len(), 1);
    let (ok, _, err) = wardctl(
        &lab,
        "eve",
        &["mode", PUMP, "enforce", "--reason", "CHG-91 cleaned"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        lab.store
            .due_quarantine_timers(i64::MAX)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_soc_quarantine_starts_at_once_and_ends_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        soc_quarantine: SocQuarantineMode::Direct,
        soc_quarantine_max: Duration::from_secs(3),
        ..Settings::default()
    };
    let lab = lab(dir.path(), &settings).await;
    // No reason: refused before anything is written.
    let (ok, _, err) = wardctl(&lab, "sam", &["mode", PUMP, "quarantine"]).await;
    assert!(!ok && err.contains("--reason"), "{err}");

    let (ok, out, err) = wardctl(
        &lab,
        "sam",
        &[
            "mode",
            PUMP,
            "quarantine",
            "--reason",
            "INC-78 ransomware spreading",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("pump-3a-bed12 quarantined by the SOC until")
            && out.contains("goes back to enforce"),
        "{out}"
    );
    assert_eq!(mode(&lab), Mode::Quarantine);
    let sam: Vec<_> = trail(&lab)
        .into_iter()
        .filter(|(actor, a, _)| actor == "user:sam" && a == "set_mode")
        .collect();
    assert_eq!(sam.len(), 1);
    assert_eq!(sam[0].2, "INC-78 ransomware spreading");
    assert_eq!(operator_alerts(&lab).len(), 1);

    // The maximum (3 s here) passes: back to enforce, by the controller, the sinks told.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while mode(&lab) == Mode::Quarantine {
        assert!(
            std::time::Instant::now() < deadline,
            "the SOC quarantine never ended"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(mode(&lab), Mode::Enforce);
    let ended: Vec<_> = trail(&lab)
        .into_iter()
        .filter(|(actor, a, _)| actor == "controller" && a == "set_mode")
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(
        ended[0].2.contains("SOC quarantine set by user:sam ended"),
        "{:?}",
        ended[0]
    );
    assert_eq!(operator_alerts(&lab).len(), 2);
    assert!(
        lab.store
            .due_quarantine_timers(i64::MAX)
            .unwrap()
            .is_empty()
    );
}
