//! The availability warning through gRPC: a change that would cut off traffic seen in the
//! last 7 days on more than the share of a class's devices on a ward is refused with
//! FAILED_PRECONDITION naming the devices and flows, unless the request accepts the impact;
//! accepted, the audit entry keeps it. Flows older than the window do not count.

#[path = "support/impact.rs"]
mod impact;

use impact::{MONITOR, PEER, PORT, record};
use wardgate_controller::store::Store;
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;

fn enforce(accept_impact: bool, dry_run: bool) -> pb::SetModeRequest {
    pb::SetModeRequest {
        device: MONITOR.into(),
        mode: "enforce".into(),
        reason: if dry_run {
            String::new()
        } else {
            "CHG-9 enforce the monitor".into()
        },
        dry_run,
        accept_impact,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_cutting_off_recent_traffic_needs_its_impact_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabController::with_demo_site(
        dir.path(),
        &[impact::GW.to_string()],
        &[("eve", "engineer")],
        "eve",
    )
    .await
    .unwrap();
    let mut admin = lab.admin("eve").await.unwrap();

    // Eight days ago is outside the 7-day window: nothing to warn about.
    record(&lab, 8.0, 3);
    let dry = admin
        .set_mode(enforce(false, true))
        .await
        .unwrap()
        .into_inner();
    assert!(dry.impact.is_empty(), "{:?}", dry.impact);
    assert!(!dry.impact_over_threshold);

    // Yesterday: the only patient monitor of its ward would lose it, 1 of 1.
    record(&lab, 1.0, 5);
    let dry = admin
        .set_mode(enforce(false, true))
        .await
        .unwrap()
        .into_inner();
    assert!(dry.impact_over_threshold);
    assert_eq!(dry.impact.len(), 1);
    let w = &dry.impact[0];
    assert_eq!(
        (
            w.class.as_str(),
            w.ward.as_str(),
            w.devices,
            w.blocked_devices
        ),
        ("patient-monitor", "Ward 3A, bed 12", 1, 1)
    );
    assert_eq!(w.blocked[0].device, MONITOR);
    let f = &w.blocked[0].flows;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].peer.as_str(), f[0].port, f[0].proto, f[0].flows),
        (PEER, u32::from(PORT), 6, 5),
        "the 8-day-old flows are not counted"
    );

    // Without acceptance: refused, nothing written.
    let audit_before = lab.store.audit().unwrap().len();
    let err = admin.set_mode(enforce(false, false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    for want in [MONITOR, PEER, "port 4444", "patient-monitor", "accept"] {
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    assert_eq!(lab.store.audit().unwrap().len(), audit_before);
    assert_ne!(
        lab.store.device(MONITOR).unwrap().unwrap().mode.as_str(),
        "enforce"
    );

    // Accepted: written, and the audit entry says what was accepted.
    let w = admin
        .set_mode(enforce(true, false))
        .await
        .unwrap()
        .into_inner();
    assert!(w.impact_over_threshold);
    assert_eq!(
        lab.store.device(MONITOR).unwrap().unwrap().mode.as_str(),
        "enforce"
    );
    let audit = lab.store.audit().unwrap();
    let entry = audit.iter().find(|e| e.seq == w.audit_seq).unwrap();
    assert_eq!(entry.action, "set_mode");
    let diff: serde_json::Value = serde_json::from_str(&entry.diff).unwrap();
    let accepted = &diff["impact_accepted"][0];
    assert_eq!(accepted["class"], "patient-monitor");
    assert_eq!(accepted["blocked_devices"], 1);
    let words = accepted["blocked"][MONITOR][0].as_str().unwrap();
    assert!(words.contains("203.0.113.200 port 4444"), "{words}");

    // Out of quarantine back to enforce only gives traffic back: no acceptance needed.
    for mode in ["quarantine", "enforce"] {
        admin
            .set_mode(pb::SetModeRequest {
                mode: mode.into(),
                ..enforce(false, false)
            })
            .await
            .unwrap();
    }

    // A write that cuts nothing off records no impact.
    let w = admin
        .set_location(pb::SetLocationRequest {
            device: MONITOR.into(),
            location: "Ward 3A, bed 14".into(),
            reason: "CHG-10 moved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let audit = lab.store.audit().unwrap();
    let entry = audit.iter().find(|e| e.seq == w.audit_seq).unwrap();
    assert!(!entry.diff.contains("impact_accepted"), "{}", entry.diff);
}
