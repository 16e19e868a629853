//! Both stores, one scenario: what each answers, as text (times the stores take from the
//! clock left out).

use wardgate_analysis::{
    FlowDirection, FlowOutcome, FlowRecord, aggregate::NS_PER_DAY, baseline::lifecycle::Action,
    flow::DeviceRef,
};

use super::*;
use crate::store::{
    AlertPageQuery, AlertState, CertRequest, Closure, FlowLimits, ImportSource, ImportedFields,
    InventoryQuery, IssuedCert, PendingChangeRow, SessionRow, SqliteStore,
};

const NOW_NS: u64 = 20_000 * NS_PER_DAY + 3_600_000_000_000;

fn device(name: &str, id: u32, gw: &str, mac: &str, addr: &str, asset: &str) -> Change {
    Change::UpsertDevice(DeviceRow {
        name: name.into(),
        id,
        mac: mac.parse().unwrap(),
        addresses: vec![addr.parse().unwrap()],
        profile: "pump".into(),
        mode: Mode::Monitor,
        gateway: gw.into(),
        location: "Ward 3A".into(),
        asset_id: asset.into(),
    })
}

pub(in crate::store) fn flow(device: &str, peer: &str, port: u16, t: u64) -> FlowRecord {
    FlowRecord {
        device: DeviceRef {
            name: device.into(),
            id: None,
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.10".parse().unwrap(),
        device_port: 40_000,
        peer: peer.parse().unwrap(),
        peer_port: port,
        proto: 6,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 10,
        bytes_out: 1000,
        packets_in: 5,
        bytes_in: 300,
        first_seen_ns: t,
        last_seen_ns: t + 1_000,
        tcp: None,
        outcome: FlowOutcome::Established,
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: Some("pacs.example".into()),
        continuation: false,
    }
}

fn new_alert(id: &str, device: &str, severity: u8, detector: &str) -> NewAlert {
    NewAlert {
        id: id.into(),
        device: device.into(),
        severity,
        body: format!(r#"{{"detector":"{detector}","device":"{device}"}}"#),
        detector: detector.into(),
        peer: String::new(),
        count: 1,
        last_seen_ns: 0,
    }
}

/// Applies one change in a transaction of its own: its result, committed when it is Ok.
fn apply(s: &dyn Store, change: Change) -> String {
    let mut tx = s.begin().unwrap();
    match tx.apply(&change) {
        Ok(a) => {
            tx.commit().unwrap();
            format!("{a:?}")
        }
        Err(e) => format!("error: {e}"),
    }
}

pub(in crate::store) fn scenario(s: &dyn Store) -> Vec<String> {
    let mut out = Vec::new();
    let mut say = |what: &str, v: String| out.push(format!("{what}: {v}"));
    for c in [
        gateway("gw-a"),
        gateway("gw-b"),
        Change::UpsertProfile {
            name: "pump".into(),
            yaml: "v1".into(),
        },
        Change::UpsertProfile {
            name: "pump".into(),
            yaml: "v2".into(),
        },
        Change::UpsertGroup {
            name: "pacs".into(),
            cidrs: vec!["192.0.2.0/28".into()],
        },
        Change::UpsertGroup {
            name: "pacs".into(),
            cidrs: vec!["192.0.2.0/27".into()],
        },
        device(
            "pump-1",
            1,
            "gw-a",
            "02:00:00:00:00:01",
            "192.0.2.1",
            "AB_1",
        ),
        device("Mon-2", 2, "gw-b", "02:00:00:00:00:02", "192.0.2.2", "ABX1"),
        device("dup", 3, "gw-b", "02:00:00:00:00:01", "192.0.2.3", ""),
        device("dup", 3, "gw-b", "02:00:00:00:00:03", "192.0.2.2", ""),
        Change::SetMode {
            device: "Mon-2".into(),
            mode: Mode::Enforce,
        },
        Change::AssignProfile {
            device: "nobody".into(),
            profile: "pump".into(),
        },
        Change::SetLocation {
            device: "pump-1".into(),
            location: "Ward 3B".into(),
        },
    ] {
        say("apply", apply(s, c));
    }
    let mut tx = s.begin().unwrap();
    tx.insert_policy_id("pump", 7).unwrap();
    tx.insert_rule_id("pump", "out tcp 104", 9).unwrap();
    say("max id", format!("{:?}", tx.max_device_id()));
    say("base", format!("{:?}", tx.base().unwrap()));
    let names = ["gw-b".to_string(), "gw-z".to_string()].into();
    say("gateways", format!("{:?}", tx.gateways(&names)));
    say("gateway names", format!("{:?}", tx.gateway_names()));
    let (gws, profiles) = (["gw-a".to_string()].into(), ["none".to_string()].into());
    say(
        "devices of",
        format!("{:?}", tx.devices_of(&gws, &profiles)),
    );
    say("latest none", format!("{:?}", tx.latest("gw-a")));
    for g in 1..=3 {
        let row = crate::store::GenerationRow {
            gateway: "gw-a".into(),
            generation: g,
            content: GenerationContent::Bundle(vec![g as u8, 0, 255]),
            reason: format!("r{g}"),
        };
        tx.insert_generation(&row).unwrap();
    }
    say("latest", format!("{:?}", tx.latest("gw-a")));
    tx.commit().unwrap();
    say("after 1", format!("{:?}", s.generations_after("gw-a", 1)));
    say("generation", format!("{:?}", s.generation("gw-a", 2)));
    say("latest gen", format!("{:?}", s.latest_generation("gw-a")));
    say("gen of b", format!("{:?}", s.latest_generation("gw-b")));
    say("snapshot", format!("{:?}", s.snapshot()));
    say("device", format!("{:?}", s.device("Mon-2")));
    say("groups", format!("{:?}", s.groups()));
    say("gateway", format!("{:?}", s.gateway("gw-a")));
    say("profile", format!("{:?}", s.profile("pump")));
    let health = crate::store::AgentHealth {
        agent_version: "1.2.3".into(),
        watchdog_fired: true,
        watchdog_fired_count: 2,
        watchdog_recovered_count: 1,
        fail_open_devices: 3,
        heartbeat_age_ms: Some(u64::MAX),
    };
    say(
        "status",
        format!("{:?}", s.report_status("gw-a", 3, "e", "", Some(&health))),
    );
    say(
        "status none",
        format!("{:?}", s.report_status("gw-z", 1, "e", "", None)),
    );
    say(
        "health",
        format!(
            "{:?}",
            s.gateway_health()
                .unwrap()
                .into_iter()
                .map(|(g, h)| (
                    g,
                    h.health,
                    h.watchdog_fired_since_ms == Some(h.received_ms)
                ))
                .collect::<Vec<_>>()
        ),
    );
    say(
        "gateway generations",
        format!("{:?}", s.gateway_generations()),
    );
    // Alerts: a suppression, two gateways sharing an id, filters.
    say(
        "suppress",
        apply(
            s,
            Change::SuppressAlerts {
                device: "Mon-2".into(),
                detector: "flood".into(),
                peer: String::new(),
                made_by: "user:sam".into(),
                made_ms: 5,
                reason: "INC-9".into(),
            },
        ),
    );
    say(
        "unsuppress",
        apply(
            s,
            Change::UnsuppressAlerts {
                device: "Mon-2".into(),
                detector: "scan".into(),
                peer: "192.0.2.9".into(),
            },
        ),
    );
    say("suppressions", format!("{:?}", s.suppressions()));
    s.insert_alerts(
        "gw-a",
        &[
            new_alert("a1", "pump-1", 3, "scan"),
            new_alert("shared", "pump-1", 1, "scan"),
        ],
    )
    .unwrap();
    s.insert_alerts(
        "gw-b",
        &[
            new_alert("shared", "Mon-2", 2, "flood"),
            new_alert("b1", "Mon-2", 0, "scan"),
        ],
    )
    .unwrap();
    say(
        "ack ambiguous",
        apply(
            s,
            Change::AcknowledgeAlerts {
                ids: vec!["shared".into()],
                by: "user:sam".into(),
            },
        ),
    );
    say(
        "ack",
        apply(
            s,
            Change::AcknowledgeAlerts {
                ids: vec!["gw-a/shared".into(), "b1".into()],
                by: "user:sam".into(),
            },
        ),
    );
    say(
        "ack missing",
        apply(
            s,
            Change::AcknowledgeAlerts {
                ids: vec!["zz".into()],
                by: "x".into(),
            },
        ),
    );
    let q = AlertQuery {
        gateway: "gw-a".into(),
        min_severity: 1,
        limit: 10,
        ..Default::default()
    };
    say("alerts open gw-a", format!("{:?}", s.alerts(&q)));
    say(
        "alerts all",
        format!(
            "{:?}",
            s.alerts(&AlertQuery {
                include_suppressed: true,
                ..AlertQuery::recent(10)
            })
        ),
    );
    say(
        "since",
        format!("{:?}", s.alerts_since(&AlertQuery::recent(2), 1)),
    );
    say(
        "since device",
        format!(
            "{:?}",
            s.alerts_since(
                &AlertQuery {
                    device: "Mon-2".into(),
                    ..AlertQuery::recent(10)
                },
                0
            )
        ),
    );
    say("pending", format!("{:?}", s.alerts_pending(0)));
    for state in [
        None,
        Some(AlertState::Open),
        Some(AlertState::Acknowledged),
        Some(AlertState::Suppressed),
    ] {
        let p = s
            .alert_page(&AlertPageQuery {
                state,
                limit: 2,
                offset: 1,
                ..Default::default()
            })
            .unwrap();
        let rows: Vec<_> = p
            .rows
            .iter()
            .map(|r| {
                (
                    r.first_seq,
                    r.id.clone(),
                    r.acknowledged,
                    r.suppressed,
                    r.severity,
                )
            })
            .collect();
        say("page", format!("{state:?} {} {rows:?}", p.total));
    }
    let p = s
        .alert_page(&AlertPageQuery {
            detector: "flood".into(),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    say("page flood", format!("{}", p.total));
    say(
        "console alert",
        format!(
            "{:?}",
            s.console_alert(3)
                .unwrap()
                .map(|a| (a.gateway, a.id, a.body))
        ),
    );
    say("console alert none", format!("{:?}", s.console_alert(99)));
    say("drops", format!("{:?}", s.alert_drops("gw-a")));
    // Flows: a cap of 2 rows per device and day.
    let limits = FlowLimits {
        retention_days: 3,
        rows_per_device_day: 2,
    };
    let t = NOW_NS - 1_000_000;
    let records = [
        flow("pump-1", "192.0.2.100", 104, t),
        flow("pump-1", "192.0.2.100", 104, t + 5),
        flow("pump-1", "192.0.2.101", 104, t),
        flow("pump-1", "192.0.2.102", 443, t),
        flow("pump-1", "192.0.2.100", 104, NOW_NS - 10 * NS_PER_DAY),
        flow("ghost", "192.0.2.100", 104, t),
    ];
    say(
        "flows",
        format!("{:?}", s.insert_flows("gw-a", &records, NOW_NS, limits)),
    );
    say(
        "flows again",
        format!(
            "{:?}",
            s.insert_flows("gw-a", &records[..4], NOW_NS, limits)
        ),
    );
    say(
        "flows other gw",
        format!(
            "{:?}",
            s.insert_flows("gw-b", &records[..1], NOW_NS, limits)
                .map_err(|e| e.to_string())
        ),
    );
    say("overflow", format!("{:?}", s.flow_overflow("pump-1")));
    say(
        "aggregates",
        format!("{:?}", s.flow_aggregates("pump-1", 0, u64::MAX / 2)),
    );
    say(
        "lifecycle",
        format!("{:?}", s.baseline_lifecycle("pump-1").unwrap().map(|l| l.0)),
    );
    say(
        "lifecycle none",
        format!("{:?}", s.baseline_lifecycle("Mon-2")),
    );
    say("observed", format!("{:?}", s.observed_flows(0)));
    say(
        "freeze",
        apply(
            s,
            Change::SetBaseline {
                device: "pump-1".into(),
                action: Action::Freeze,
                now_ns: NOW_NS,
            },
        ),
    );
    say(
        "approve none",
        apply(
            s,
            Change::SetBaseline {
                device: "Mon-2".into(),
                action: Action::Approve,
                now_ns: NOW_NS,
            },
        ),
    );
    for q in [
        InventoryQuery {
            limit: 10,
            ..Default::default()
        },
        InventoryQuery {
            search: "ab_".into(),
            limit: 10,
            ..Default::default()
        },
        InventoryQuery {
            search: "PUMP".into(),
            limit: 10,
            ..Default::default()
        },
        InventoryQuery {
            baseline: "none".into(),
            limit: 10,
            ..Default::default()
        },
        InventoryQuery {
            mode: Some(Mode::Enforce),
            gateway: "gw-b".into(),
            limit: 10,
            ..Default::default()
        },
        InventoryQuery {
            limit: 1,
            offset: 1,
            ..Default::default()
        },
    ] {
        say("inventory", format!("{:?}", s.inventory(&q)));
    }
    say(
        "relearn",
        apply(
            s,
            Change::SetBaseline {
                device: "pump-1".into(),
                action: Action::Relearn {
                    window_days: Some(3),
                },
                now_ns: NOW_NS,
            },
        ),
    );
    say(
        "overflow after relearn",
        format!("{:?}", s.flow_overflow("pump-1")),
    );
    s.insert_flows("gw-a", &records[..1], NOW_NS, limits)
        .unwrap();
    say(
        "prune",
        format!("{:?}", s.prune_flows(NOW_NS + 10 * NS_PER_DAY, 3)),
    );
    // Sessions.
    let session = |id: &str, user: &str, created_ms: i64| SessionRow {
        id_hash: id.into(),
        user: user.into(),
        role: crate::auth::Role::Engineer,
        source: "local".into(),
        subject: String::new(),
        acr: String::new(),
        csrf: "c".into(),
        created_ms,
        last_seen_ms: created_ms,
        revoked_ms: None,
    };
    s.insert_session(&session("h1", "sam", 10)).unwrap();
    s.insert_session(&session("h2", "sam", 20)).unwrap();
    s.insert_session(&session("h3", "kim", 30)).unwrap();
    s.touch_session("h1", 15).unwrap();
    s.touch_session("h1", 12).unwrap();
    say(
        "revoke",
        format!(
            "{:?} {:?} {:?}",
            s.revoke_session("h2", 25),
            s.revoke_session("h2", 26),
            s.revoke_session("zz", 1)
        ),
    );
    say("session", format!("{:?}", s.session("h1")));
    say("sessions of", format!("{:?}", s.sessions_of("sam")));
    say("prune sessions", format!("{:?}", s.prune_sessions(20)));
    // Fleet.
    let cert = |serial: &str, not_after_ms: i64| IssuedCert {
        serial: serial.into(),
        not_after_ms,
    };
    for c in [
        Change::IssueEnrollmentToken {
            gateway: "gw-a".into(),
            token_hash: "t1".into(),
            expires_ms: 100,
        },
        Change::Enroll {
            gateway: "gw-b".into(),
            token_hash: "t1".into(),
            cert: cert("01", 1),
            now_ms: 50,
        },
        Change::Enroll {
            gateway: "gw-a".into(),
            token_hash: "t1".into(),
            cert: cert("02", 1000),
            now_ms: 150,
        },
        Change::Enroll {
            gateway: "gw-a".into(),
            token_hash: "t1".into(),
            cert: cert("02", 1000),
            now_ms: 50,
        },
        Change::Enroll {
            gateway: "gw-a".into(),
            token_hash: "t1".into(),
            cert: cert("03", 1000),
            now_ms: 60,
        },
        Change::Enroll {
            gateway: "gw-a".into(),
            token_hash: "t9".into(),
            cert: cert("04", 1000),
            now_ms: 60,
        },
        Change::RenewCertificate {
            gateway: "gw-a".into(),
            cert: cert("05", 2000),
        },
        Change::RenewCertificate {
            gateway: "gw-b".into(),
            cert: cert("06", 500),
        },
        Change::RefuseCertificate {
            gateway: "gw-b".into(),
            kind: CertRequest::Renew,
            why: "no".into(),
        },
        Change::RevokeGateway {
            gateway: "gw-b".into(),
        },
        Change::RevokeGateway {
            gateway: "gw-b".into(),
        },
        Change::RenewCertificate {
            gateway: "gw-b".into(),
            cert: cert("07", 500),
        },
        Change::IssueEnrollmentToken {
            gateway: "gw-b".into(),
            token_hash: "t2".into(),
            expires_ms: 100,
        },
    ] {
        say("fleet", apply(s, c));
    }
    say(
        "revoked",
        format!(
            "{:?} {:?}",
            s.gateway_revoked("gw-b"),
            s.gateway_revoked("gw-a")
        ),
    );
    say("serials", format!("{:?}", s.revoked_serials()));
    say("expiry", format!("{:?}", s.cert_expiry()));
    // Pending changes.
    let submit = |device: &str, proposer: &str| {
        Change::SubmitChange(PendingChangeRow {
            id: 0,
            device: device.into(),
            profile: "pump".into(),
            yaml: "y".into(),
            reason: "why".into(),
            proposer: proposer.into(),
            proposed_ms: 7,
            approver: None,
            decided_ms: None,
            closed: None,
            closed_by: None,
            close_reason: String::new(),
        })
    };
    for c in [
        submit("pump-1", "ann"),
        submit("pump-1", "bob"),
        submit("Mon-2", "ann"),
        submit("nobody", "ann"),
        Change::ApproveChange {
            id: 1,
            device: "pump-1".into(),
            proposer: "ann".into(),
            approver: "bob".into(),
            at_ms: 8,
        },
        Change::ApproveChange {
            id: 1,
            device: "pump-1".into(),
            proposer: "ann".into(),
            approver: "cid".into(),
            at_ms: 9,
        },
        Change::CloseChange {
            id: 2,
            device: "pump-1".into(),
            proposer: "bob".into(),
            by: "bob".into(),
            closure: Closure::Rejected,
            why: "x".into(),
            at_ms: 9,
        },
        Change::CloseChange {
            id: 2,
            device: "pump-1".into(),
            proposer: "bob".into(),
            by: "bob".into(),
            closure: Closure::Withdrawn,
            why: "oops".into(),
            at_ms: 9,
        },
    ] {
        say("pending", apply(s, c));
    }
    say("change", format!("{:?}", s.pending_change(2)));
    say("changes", format!("{:?}", s.pending_changes("pump-1", 1)));
    say(
        "latest changes",
        format!(
            "{:?} {:?}",
            s.latest_changes(true, 10),
            s.latest_changes(false, 2)
        ),
    );
    // Quarantine.
    for c in [
        Change::RequestQuarantine {
            device: "Mon-2".into(),
            reason: "r".into(),
            by: "soc:x".into(),
            at_ms: 1,
            minutes: 30,
        },
        Change::RequestQuarantine {
            device: "pump-1".into(),
            reason: "r".into(),
            by: "soc:x".into(),
            at_ms: 2,
            minutes: 5,
        },
        Change::ApproveQuarantine {
            id: 1,
            device: "Mon-2".into(),
            approver: "soc:x".into(),
            at_ms: 3,
        },
        Change::ApproveQuarantine {
            id: 1,
            device: "Mon-2".into(),
            approver: "user:sam".into(),
            at_ms: 3,
        },
        Change::QuarantineTimer {
            device: "Mon-2".into(),
            until_ms: 100,
            restore_mode: Mode::Monitor,
            set_by: "soc:x".into(),
        },
        Change::QuarantineTimer {
            device: "pump-1".into(),
            until_ms: 50,
            restore_mode: Mode::Learn,
            set_by: "soc:x".into(),
        },
        Change::QuarantineTimer {
            device: "Mon-2".into(),
            until_ms: 40,
            restore_mode: Mode::Enforce,
            set_by: "soc:y".into(),
        },
    ] {
        say("quarantine", apply(s, c));
    }
    say("request", format!("{:?}", s.quarantine_request(1)));
    say(
        "pending quarantines",
        format!("{:?}", s.pending_quarantines()),
    );
    say(
        "due",
        format!(
            "{:?} {:?}",
            s.due_quarantine_timers(45),
            s.due_quarantine_timers(10)
        ),
    );
    say(
        "clear",
        apply(
            s,
            Change::ClearQuarantineTimer {
                device: "Mon-2".into(),
            },
        ),
    );
    say(
        "due after clear",
        format!("{:?}", s.due_quarantine_timers(1000)),
    );
    // Provenance.
    let import = |sha: &str| Change::RecordImport {
        source: ImportSource {
            format: "csv".into(),
            file: "site.csv".into(),
            sha256: sha.into(),
        },
        fields: vec![
            ImportedFields {
                device: "pump-1".into(),
                fields: vec![
                    ("location".into(), "3A".into()),
                    ("asset_id".into(), "AB_1".into()),
                ],
            },
            ImportedFields {
                device: "Mon-2".into(),
                fields: vec![("location".into(), "3B".into())],
            },
        ],
    };
    say("import", apply(s, import("aa")));
    say("import again", apply(s, import("bb")));
    let fields = |d: Option<&str>| {
        s.device_fields(d)
            .unwrap()
            .into_iter()
            .map(|f| (f.device, f.field, f.value, f.source, f.file, f.sha256))
            .collect::<Vec<_>>()
    };
    say(
        "fields",
        format!("{:?} {:?}", fields(Some("Mon-2")), fields(None)),
    );
    say(
        "audit empty",
        format!(
            "{:?} {:?}",
            s.audit().map(|a| a.len()),
            s.audit_chain_head()
        ),
    );
    say("epoch", format!("{}", s.epoch().unwrap().len()));
    out
}

#[test]
fn every_store_method_answers_as_the_sqlite_store_does() {
    let pg = PgStore::connect(&super::fresh()).unwrap();
    let sqlite = SqliteStore::in_memory().unwrap();
    let want = scenario(&sqlite);
    let got = scenario(&pg);
    let differ: Vec<String> = want
        .iter()
        .zip(&got)
        .enumerate()
        .filter(|(_, (w, g))| w != g)
        .map(|(i, (w, g))| format!("step {i}\n  PostgreSQL: {g}\n  SQLite:     {w}"))
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert_eq!(got.len(), want.len());
    // Not two empty answers agreeing: the scenario stored and refused things.
    let text = want.join("\n");
    for expected in [
        "duplicate MAC 02:00:00:00:00:01",
        "used by 2 gateways",
        "over_cap: 1",
        "token already used",
        "not pending from",
        "pump-1\", \"asset_id\", \"AB_1\", \"csv\", \"site.csv\", \"bb\"",
    ] {
        assert!(
            text.contains(expected),
            "the scenario lacks `{expected}`:\n{text}"
        );
    }
}
