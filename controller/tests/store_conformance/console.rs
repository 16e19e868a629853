//! What the console and the fleet keep: sessions, pending changes, quarantine requests and
//! timers, enrollment tokens, certificates and revocation, and each field's provenance.

use std::collections::BTreeMap;

use wardgate_controller::{
    auth::Role,
    error::Error,
    store::{
        Change, Closure, FieldRow, ImportSource, ImportedFields, IssuedCert, PendingChangeRow,
        QuarantineRequestRow, QuarantineTimerRow, SessionRow,
    },
};
use wardgate_policy::desired::Mode;

use crate::fixture::{GW_A, GW_B, Open, QUOTA, profile_yaml, site, verify_trail, write, written};

fn session(id_hash: &str, user: &str, role: Role, created_ms: i64) -> SessionRow {
    SessionRow {
        id_hash: id_hash.into(),
        user: user.into(),
        role,
        source: "local".into(),
        subject: String::new(),
        acr: String::new(),
        csrf: format!("csrf-{id_hash}"),
        created_ms,
        last_seen_ms: created_ms,
        revoked_ms: None,
    }
}

pub fn console_sessions_are_stored_touched_revoked_and_pruned(open: Open) {
    let store = open(QUOTA);
    let h1 = session("h1", "eve", Role::Engineer, 1_000);
    let h2 = SessionRow {
        source: "oidc:https://idp.example.org".into(),
        subject: "sub-1".into(),
        acr: "eidas2".into(),
        ..session("h2", "eve", Role::Viewer, 2_000)
    };
    let h3 = session("h3", "sam", Role::Soc, 1_500);
    for s in [&h1, &h2, &h3] {
        store.insert_session(s).unwrap();
    }
    assert!(store.insert_session(&h1).is_err(), "an id is stored once");
    assert_eq!(store.session("h1").unwrap(), Some(h1.clone()));
    assert_eq!(store.session("h2").unwrap(), Some(h2.clone()));
    assert_eq!(store.session("zz").unwrap(), None);
    // Touches move the last request forward only.
    store.touch_session("h1", 1_500).unwrap();
    store.touch_session("h1", 1_200).unwrap();
    store.touch_session("zz", 1_200).unwrap();
    assert_eq!(store.session("h1").unwrap().unwrap().last_seen_ms, 1_500);
    // Revoked once.
    assert!(store.revoke_session("h1", 1_600).unwrap());
    assert!(!store.revoke_session("h1", 1_700).unwrap());
    assert!(!store.revoke_session("zz", 1_700).unwrap());
    let revoked = SessionRow {
        last_seen_ms: 1_500,
        revoked_ms: Some(1_600),
        ..h1
    };
    assert_eq!(store.session("h1").unwrap(), Some(revoked.clone()));
    assert_eq!(store.sessions_of("eve").unwrap(), [h2.clone(), revoked]);
    assert_eq!(store.sessions_of("sam").unwrap(), [h3]);
    assert!(store.sessions_of("nobody").unwrap().is_empty());
    // Pruned by when they started.
    assert_eq!(store.prune_sessions(1_000).unwrap(), 0);
    assert_eq!(store.prune_sessions(1_800).unwrap(), 2);
    assert_eq!(store.sessions_of("eve").unwrap(), [h2]);
    assert_eq!(store.session("h3").unwrap(), None);
}

fn proposal(device: &str, proposer: &str, ms: i64) -> PendingChangeRow {
    PendingChangeRow {
        id: 0,
        device: device.into(),
        profile: "monitor".into(),
        yaml: profile_yaml("monitor", 8443),
        reason: format!("INC-{ms}"),
        proposer: proposer.into(),
        proposed_ms: ms,
        approver: None,
        decided_ms: None,
        closed: None,
        closed_by: None,
        close_reason: String::new(),
    }
}

pub fn pending_changes_are_submitted_approved_and_closed(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let err = write(
        &*store,
        vec![Change::SubmitChange(proposal("ghost", "user:eve", 1))],
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let submitted = [
        proposal("pump-1", "user:eve", 1_000),
        proposal("pump-1", "user:eve", 1_100),
        proposal("pump-2", "user:eve", 1_200),
        proposal("pump-2", "user:ann", 1_300),
    ];
    for p in &submitted {
        written(&*store, vec![Change::SubmitChange(p.clone())]);
    }
    let all = store.latest_changes(false, 10).unwrap();
    let ids: Vec<i64> = all.iter().map(|p| p.id).collect();
    assert_eq!(ids.len(), 4);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let id = |i: usize| ids[3 - i];
    for (i, p) in submitted.iter().enumerate() {
        let stored = store.pending_change(id(i)).unwrap().unwrap();
        assert_eq!(
            stored,
            PendingChangeRow {
                id: id(i),
                ..p.clone()
            }
        );
        assert!(stored.is_pending());
    }
    assert_eq!(store.pending_change(id(3) + 100).unwrap(), None);
    assert_eq!(
        store
            .pending_changes("pump-1", 10)
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>(),
        [id(1), id(0)]
    );
    assert_eq!(store.pending_changes("pump-1", 1).unwrap()[0].id, id(1));
    assert!(store.pending_changes("pump-3", 10).unwrap().is_empty());
    assert_eq!(store.latest_changes(false, 2).unwrap().len(), 2);

    let approve = |i: usize, proposer: &str, approver: &str| Change::ApproveChange {
        id: id(i),
        device: submitted[i].device.clone(),
        proposer: proposer.into(),
        approver: approver.into(),
        at_ms: 2_000,
    };
    let close = |i: usize, by: &str, closure: Closure| Change::CloseChange {
        id: id(i),
        device: submitted[i].device.clone(),
        proposer: submitted[i].proposer.clone(),
        by: by.into(),
        closure,
        why: "not now".into(),
        at_ms: 2_100,
    };
    let refused = |c: Change| {
        let err = write(&*store, vec![c]).unwrap_err();
        assert!(matches!(err, Error::Precondition(_)), "{err:?}");
    };
    refused(approve(0, "user:ann", "user:sam"));
    written(&*store, vec![approve(0, "user:eve", "user:sam")]);
    refused(approve(0, "user:eve", "user:sam"));
    refused(close(0, "user:eve", Closure::Withdrawn));
    assert_eq!(
        store.pending_change(id(0)).unwrap().unwrap(),
        PendingChangeRow {
            id: id(0),
            approver: Some("user:sam".into()),
            decided_ms: Some(2_000),
            ..submitted[0].clone()
        }
    );
    // Withdrawn by its proposer only; rejected by anyone else only.
    refused(close(1, "user:sam", Closure::Withdrawn));
    written(&*store, vec![close(1, "user:eve", Closure::Withdrawn)]);
    refused(close(2, "user:eve", Closure::Rejected));
    written(&*store, vec![close(2, "user:sam", Closure::Rejected)]);
    refused(approve(2, "user:eve", "user:sam"));
    let withdrawn = store.pending_change(id(1)).unwrap().unwrap();
    assert_eq!(
        withdrawn,
        PendingChangeRow {
            id: id(1),
            decided_ms: Some(2_100),
            closed: Some(Closure::Withdrawn),
            closed_by: Some("user:eve".into()),
            close_reason: "not now".into(),
            ..submitted[1].clone()
        }
    );
    assert!(!withdrawn.is_pending());
    let rejected = store.pending_change(id(2)).unwrap().unwrap();
    assert_eq!(
        (rejected.closed, rejected.closed_by.as_deref()),
        (Some(Closure::Rejected), Some("user:sam"))
    );
    // Listings: everything, or only the pending ones (neither approved, withdrawn nor rejected).
    assert_eq!(store.latest_changes(false, 10).unwrap().len(), 4);
    let open_ids: Vec<i64> = store
        .latest_changes(true, 10)
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        open_ids,
        [id(3)],
        "approved, withdrawn and rejected are not pending"
    );
}

pub fn quarantine_requests_and_timers(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let request = |device: &str, at_ms: i64| Change::RequestQuarantine {
        device: device.into(),
        reason: "C2 beacon".into(),
        by: "soc:ana".into(),
        at_ms,
        minutes: 60,
    };
    let err = write(&*store, vec![request("ghost", 1)]).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    written(&*store, vec![request("pump-1", 1_000)]);
    written(&*store, vec![request("pump-2", 1_100)]);
    let pending = store.pending_quarantines().unwrap();
    assert_eq!(pending.len(), 2);
    assert!(pending[0].id < pending[1].id, "oldest first");
    let row = |id: i64, device: &str, ms: i64, approver: Option<&str>| QuarantineRequestRow {
        id,
        device: device.into(),
        reason: "C2 beacon".into(),
        requested_by: "soc:ana".into(),
        requested_ms: ms,
        minutes: 60,
        approver: approver.map(str::to_string),
    };
    let (one, two) = (pending[0].id, pending[1].id);
    assert_eq!(
        pending,
        [
            row(one, "pump-1", 1_000, None),
            row(two, "pump-2", 1_100, None)
        ]
    );
    assert_eq!(
        store.quarantine_request(one).unwrap(),
        Some(row(one, "pump-1", 1_000, None))
    );
    assert_eq!(store.quarantine_request(two + 100).unwrap(), None);
    let approve = |id: i64, device: &str, approver: &str| Change::ApproveQuarantine {
        id,
        device: device.into(),
        approver: approver.into(),
        at_ms: 2_000,
    };
    let refused = |c: Change| {
        let err = write(&*store, vec![c]).unwrap_err();
        assert!(matches!(err, Error::Precondition(_)), "{err:?}");
    };
    refused(approve(one, "pump-1", "soc:ana"));
    refused(approve(one, "pump-2", "user:eve"));
    written(&*store, vec![approve(one, "pump-1", "user:eve")]);
    refused(approve(one, "pump-1", "user:ann"));
    assert_eq!(
        store.quarantine_request(one).unwrap(),
        Some(row(one, "pump-1", 1_000, Some("user:eve")))
    );
    assert_eq!(
        store.pending_quarantines().unwrap(),
        [row(two, "pump-2", 1_100, None)]
    );

    let timer = |device: &str, until_ms: i64, restore_mode: Mode| QuarantineTimerRow {
        device: device.into(),
        until_ms,
        restore_mode,
        set_by: "user:eve".into(),
    };
    let set = |t: QuarantineTimerRow| Change::QuarantineTimer {
        device: t.device,
        until_ms: t.until_ms,
        restore_mode: t.restore_mode,
        set_by: t.set_by,
    };
    written(
        &*store,
        vec![
            set(timer("pump-1", 5_000, Mode::Monitor)),
            set(timer("pump-2", 3_000, Mode::Enforce)),
        ],
    );
    assert!(store.due_quarantine_timers(2_999).unwrap().is_empty());
    assert_eq!(
        store.due_quarantine_timers(3_000).unwrap(),
        [timer("pump-2", 3_000, Mode::Enforce)]
    );
    assert_eq!(
        store.due_quarantine_timers(9_000).unwrap(),
        [
            timer("pump-2", 3_000, Mode::Enforce),
            timer("pump-1", 5_000, Mode::Monitor)
        ],
        "by when they end"
    );
    // Set again, a timer replaces the one before; cleared, it is gone.
    written(&*store, vec![set(timer("pump-1", 2_000, Mode::Learn))]);
    assert_eq!(
        store.due_quarantine_timers(2_500).unwrap(),
        [timer("pump-1", 2_000, Mode::Learn)]
    );
    written(
        &*store,
        vec![Change::ClearQuarantineTimer {
            device: "pump-1".into(),
        }],
    );
    assert_eq!(
        store.due_quarantine_timers(9_000).unwrap(),
        [timer("pump-2", 3_000, Mode::Enforce)]
    );
}

pub fn enrollment_tokens_certificates_and_revocation(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let token = |gateway: &str, hash: &str, expires_ms: i64| Change::IssueEnrollmentToken {
        gateway: gateway.into(),
        token_hash: hash.into(),
        expires_ms,
    };
    let cert = |serial: &str, not_after_ms: i64| IssuedCert {
        serial: serial.into(),
        not_after_ms,
    };
    let enroll = |gateway: &str, hash: &str, c: IssuedCert| Change::Enroll {
        gateway: gateway.into(),
        token_hash: hash.into(),
        cert: c,
        now_ms: 5_000,
    };
    written(
        &*store,
        vec![
            token(GW_A, "t1", 10_000),
            token(GW_A, "t2", 1_000),
            token(GW_B, "t3", 10_000),
        ],
    );
    let denied = |c: Change, why: &str| {
        let err = write(&*store, vec![c]).unwrap_err();
        assert!(
            matches!(&err, Error::Denied(m) if m.contains(why)),
            "{why}: {err:?}"
        );
    };
    denied(enroll(GW_A, "t9", cert("09", 1)), "unknown token");
    denied(enroll(GW_A, "t2", cert("02", 1)), "expired");
    denied(
        enroll(GW_A, "t3", cert("03", 1)),
        "issued for gateway gw-3b",
    );
    written(&*store, vec![enroll(GW_A, "t1", cert("0a", 100_000))]);
    denied(enroll(GW_A, "t1", cert("0d", 1)), "already used");
    written(
        &*store,
        vec![Change::RenewCertificate {
            gateway: GW_A.into(),
            cert: cert("0b", 200_000),
        }],
    );
    written(&*store, vec![enroll(GW_B, "t3", cert("0c", 50_000))]);
    assert_eq!(
        store.cert_expiry().unwrap(),
        BTreeMap::from([(GW_A.to_string(), 200_000), (GW_B.to_string(), 50_000)]),
        "each gateway's latest"
    );
    assert!(store.revoked_serials().unwrap().is_empty());
    assert!(!store.gateway_revoked(GW_A).unwrap());

    let revoke = Change::RevokeGateway {
        gateway: GW_A.into(),
    };
    written(&*store, vec![revoke.clone()]);
    written(&*store, vec![revoke]);
    assert!(store.gateway_revoked(GW_A).unwrap());
    assert!(!store.gateway_revoked(GW_B).unwrap());
    assert_eq!(store.revoked_serials().unwrap(), ["0a", "0b"]);
    denied(
        Change::RenewCertificate {
            gateway: GW_A.into(),
            cert: cert("0e", 300_000),
        },
        "revoked",
    );
    let err = write(&*store, vec![token(GW_A, "t4", 10_000)]).unwrap_err();
    assert!(matches!(err, Error::Precondition(_)), "{err:?}");
    // A refusal is recorded in the trail, nothing else.
    let before = store.audit().unwrap().len();
    written(
        &*store,
        vec![Change::RefuseCertificate {
            gateway: GW_A.into(),
            kind: wardgate_controller::store::CertRequest::Renew,
            why: "revoked".into(),
        }],
    );
    assert_eq!(store.audit().unwrap().len(), before + 1);
    assert_eq!(store.revoked_serials().unwrap(), ["0a", "0b"]);
    verify_trail(&*store);
}

pub fn imports_keep_each_fields_provenance(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let import = |format: &str, fields: Vec<ImportedFields>| Change::RecordImport {
        source: ImportSource {
            format: format.into(),
            file: format!("site.{format}"),
            sha256: format!("{format}-sha256"),
        },
        fields,
    };
    let set = |device: &str, fields: &[(&str, &str)]| ImportedFields {
        device: device.into(),
        fields: fields
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect(),
    };
    let t0 = wardgate_controller::audit::now_ms();
    written(
        &*store,
        vec![import(
            "csv",
            vec![
                set("pump-1", &[("location", "bed 12"), ("asset_id", "A-100")]),
                set("pump-2", &[("location", "bed 20")]),
            ],
        )],
    );
    let field = |device: &str, field: &str, value: &str, format: &str, set_ms: i64| FieldRow {
        device: device.into(),
        field: field.into(),
        value: value.into(),
        source: format.into(),
        file: format!("site.{format}"),
        sha256: format!("{format}-sha256"),
        set_ms,
    };
    let rows = store.device_fields(Some("pump-1")).unwrap();
    assert_eq!(rows.len(), 2);
    let t1 = rows[0].set_ms;
    assert!(t1 >= t0 && t1 <= wardgate_controller::audit::now_ms());
    assert_eq!(
        rows,
        [
            field("pump-1", "asset_id", "A-100", "csv", t1),
            field("pump-1", "location", "bed 12", "csv", t1)
        ],
        "by field"
    );
    // Set again by another import: that field's provenance is the new one's.
    written(
        &*store,
        vec![import(
            "fhir",
            vec![set("pump-1", &[("location", "bed 14")])],
        )],
    );
    let all = store.device_fields(None).unwrap();
    let t2 = all[1].set_ms;
    assert!(t2 >= t1);
    assert_eq!(
        all,
        [
            field("pump-1", "asset_id", "A-100", "csv", t1),
            field("pump-1", "location", "bed 14", "fhir", t2),
            field("pump-2", "location", "bed 20", "csv", t1),
        ]
    );
    assert!(store.device_fields(Some("ghost")).unwrap().is_empty());
}
