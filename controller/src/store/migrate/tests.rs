//! A SQLite store with a history (generations stored as JSON before migration 9, then writes
//! through the write service, every area of the store written by the PostgreSQL scenario)
//! moved into a fresh PostgreSQL database: counts, the audit trail and every read agree.

use std::collections::BTreeMap;

use wardgate_policy::desired::Mode;
use wardgate_testkit::postgres::Server;

use super::{MigrateError, sqlite_to_postgres};
use crate::{
    audit,
    store::{
        AlertPageQuery, AlertQuery, Change, FlowLimits, GenerationContent, InventoryQuery,
        NewAlert, PgStore, SqliteStore, Store,
        postgres::tests::same_as_sqlite::{flow, scenario},
    },
    write::{tests::legacy_store, write},
};

/// The source: the legacy store, migrated by opening it, one write through the write service
/// (a bundle generation and its entry), then the scenario (devices, profiles, ids, alerts,
/// drops, suppressions, cursors, flows, baselines, sessions, fleet, changes, quarantine,
/// provenance). Returns the highest pending change id handed out (its row then deleted: the
/// number must not be handed out again after the move).
fn source(dir: &std::path::Path) -> i64 {
    legacy_store(dir);
    let store = SqliteStore::open(dir).unwrap();
    let compile = |_: &dyn crate::store::SiteReader, _: &[_], _: &[_]| {
        Ok(BTreeMap::from([(
            "gw-3a".to_string(),
            crate::generation::one_pump("gw-3a", 3, Mode::Enforce),
        )]))
    };
    let gateway = Change::UpsertGateway(crate::store::GatewayRow {
        name: "gw-3a".into(),
        interfaces: vec!["eth1".into()],
        location: "3A".into(),
        applied_generation: 0,
        last_error: String::new(),
        applied_epoch: String::new(),
    });
    write(&store, "user:sam", "INC-7", &[gateway], &compile).unwrap();
    scenario(&store);
    store.advance_sink_cursor("siem", 3).unwrap();
    drop(store);
    // Alerts past a quota of 1 (drops counted), flows past a row cap of 1 (overflow counted)
    // that stay within their retention.
    let store = SqliteStore::open(dir).unwrap().with_alert_quota(1);
    let alert = |id: &str, severity: u8| NewAlert {
        id: id.into(),
        device: "pump-1".into(),
        severity,
        body: format!(r#"{{"detector":"scan","device":"pump-1","id":"{id}"}}"#),
        detector: "scan".into(),
        peer: String::new(),
        count: 1,
        last_seen_ns: 0,
    };
    store
        .insert_alerts("gw-3a", &[alert("q1", 1), alert("q2", 2), alert("q3", 0)])
        .unwrap();
    const NOW_NS: u64 = 1_800_000_000_000_000_000;
    let limits = FlowLimits {
        retention_days: 3650,
        rows_per_device_day: 1,
    };
    let records = [
        flow("pump-1", "198.51.100.7", 104, NOW_NS - 5_000),
        flow("pump-1", "198.51.100.8", 2575, NOW_NS - 4_000),
    ];
    store
        .insert_flows("gw-a", &records, NOW_NS, limits)
        .unwrap();
    let highest = store.latest_changes(false, 1).unwrap()[0].id;
    store
        .execute_raw(&format!("DELETE FROM pending_changes WHERE id = {highest}"))
        .unwrap();
    highest
}

/// Every read of the `Store` trait, over what the store holds, as text.
fn reads(s: &dyn Store) -> Vec<String> {
    let mut out = Vec::new();
    let mut say = |what: &str, v: String| out.push(format!("{what}: {v}"));
    let snap = s.snapshot().unwrap();
    say("snapshot", format!("{snap:?}"));
    say("epoch", format!("{:?}", s.epoch()));
    say("groups", format!("{:?}", s.groups()));
    for d in &snap.devices {
        let n = d.name.as_str();
        say("device", format!("{:?}", s.device(n)));
        say("overflow", format!("{:?}", s.flow_overflow(n)));
        say(
            "aggregates",
            format!("{:?}", s.flow_aggregates(n, 0, u64::MAX)),
        );
        say("baseline", format!("{:?}", s.baseline_lifecycle(n)));
        say("changes of", format!("{:?}", s.pending_changes(n, 100)));
    }
    for p in &snap.profiles {
        say("profile", format!("{:?}", s.profile(&p.name)));
    }
    for g in snap
        .gateways
        .iter()
        .map(|g| g.name.as_str())
        .chain(["gw-3a"])
    {
        say("gateway", format!("{:?}", s.gateway(g)));
        say("generations", format!("{:?}", s.generations_after(g, 0)));
        say("latest", format!("{:?}", s.latest(g)));
        say("latest n", format!("{:?}", s.latest_generation(g)));
        say("drops", format!("{:?}", s.alert_drops(g)));
        say("revoked", format!("{:?}", s.gateway_revoked(g)));
    }
    say(
        "gateway generations",
        format!("{:?}", s.gateway_generations()),
    );
    say("health", format!("{:?}", s.gateway_health()));
    let alerts = s.alerts_after(0, 10_000).unwrap();
    for a in &alerts {
        say("console alert", format!("{:?}", s.console_alert(a.seq)));
    }
    say("alerts after", format!("{alerts:?}"));
    say(
        "alerts since",
        format!("{:?}", s.alerts_since(&AlertQuery::default(), 0)),
    );
    say("pending alerts", format!("{:?}", s.alerts_pending(0)));
    say("cursor", format!("{:?}", s.sink_cursor("siem")));
    say("alerts", format!("{:?}", s.alerts(&AlertQuery::default())));
    say("suppressions", format!("{:?}", s.suppressions()));
    say(
        "alert page",
        format!(
            "{:?}",
            s.alert_page(&AlertPageQuery {
                limit: 1000,
                ..Default::default()
            })
        ),
    );
    for id in 1..20 {
        say("quarantine", format!("{:?}", s.quarantine_request(id)));
        say("change", format!("{:?}", s.pending_change(id)));
    }
    say(
        "pending quarantines",
        format!("{:?}", s.pending_quarantines()),
    );
    say("timers", format!("{:?}", s.due_quarantine_timers(i64::MAX)));
    say("audit", format!("{:?}", s.audit()));
    say(
        "inventory",
        format!(
            "{:?}",
            s.inventory(&InventoryQuery {
                limit: 1000,
                ..Default::default()
            })
        ),
    );
    for id in ["h1", "h2", "h3"] {
        say("session", format!("{:?}", s.session(id)));
    }
    for user in ["sam", "kim"] {
        say("sessions of", format!("{:?}", s.sessions_of(user)));
    }
    say("revoked serials", format!("{:?}", s.revoked_serials()));
    say("fields", format!("{:?}", s.device_fields(None)));
    say("observed", format!("{:?}", s.observed_flows(0)));
    say("cert expiry", format!("{:?}", s.cert_expiry()));
    say(
        "latest changes",
        format!("{:?}", s.latest_changes(false, 100)),
    );
    say(
        "pending changes",
        format!("{:?}", s.latest_changes(true, 100)),
    );
    out
}

#[test]
fn a_store_with_a_history_moves_to_postgres_verified_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let highest_change = source(dir.path());
    let url = Server::shared().fresh_database();
    let summary = sqlite_to_postgres(dir.path(), None, &url).unwrap();

    // Every table, each with the source's rows; the history reached every one of them.
    let empty: Vec<&str> = summary
        .tables
        .iter()
        .filter(|t| t.source == 0)
        .map(|t| t.table.as_str())
        .collect();
    assert!(empty.is_empty(), "tables the history left empty: {empty:?}");
    assert!(summary.tables.iter().all(|t| t.source == t.target));
    assert_eq!(summary.tables.len(), 25, "{:?}", summary.tables);
    // The trail: 2 entries hashed as JSON, then the write service's.
    assert!(summary.source.entries >= 3, "{:?}", summary.source);
    assert_eq!(summary.target_entries, summary.source.entries);
    assert_eq!(summary.target_generations, summary.source.generations);
    assert!(summary.source.generations >= 3);
    println!("{}", crate::cli::store::human(&summary));

    let sqlite = SqliteStore::open_read_only(dir.path()).unwrap();
    let pg = PgStore::connect(&url).unwrap();
    // The audit verifies on PostgreSQL through the store: chain and generations, the legacy
    // JSON ones among them, stored as they were.
    let entries = pg.audit().unwrap();
    assert_eq!(audit::verify(&entries), Ok(summary.source.entries));
    let lookup = |g: &str, n: u32| -> Result<Option<GenerationContent>, String> {
        Ok(pg.generation(g, n).unwrap().map(|r| r.content))
    };
    assert_eq!(
        audit::verify_generations(&entries, &lookup),
        Ok(summary.source.generations)
    );
    let legacy = pg.generation("gw-3a", 1).unwrap().unwrap();
    assert!(
        matches!(legacy.content, GenerationContent::LegacyJson(_)),
        "{legacy:?}"
    );
    assert_eq!(legacy, sqlite.generation("gw-3a", 1).unwrap().unwrap());

    // Every read answers the same on both.
    let (want, got) = (reads(&sqlite), reads(&pg));
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g);
    }

    // Numbers handed out go on past the source's: a new alert's sequence number.
    let max_seq = pg.alerts_after(0, 10_000).unwrap().last().unwrap().seq;
    pg.insert_alerts(
        "gw-a",
        &[crate::store::NewAlert {
            id: "after-move".into(),
            device: "pump-1".into(),
            severity: 3,
            body: "{}".into(),
            detector: "d".into(),
            peer: String::new(),
            count: 1,
            last_seen_ns: 0,
        }],
    )
    .unwrap();
    let new = pg.alerts_after(max_seq, 10).unwrap();
    assert_eq!(new.len(), 1);
    assert!(new[0].seq > max_seq);
    // ... and a new change's id: past the source's highest, even though its row was deleted.
    let mut tx = pg.begin().unwrap();
    tx.apply(&Change::SubmitChange(crate::store::PendingChangeRow {
        id: 0,
        device: "pump-1".into(),
        profile: "pump".into(),
        yaml: "y".into(),
        reason: "after the move".into(),
        proposer: "ann".into(),
        proposed_ms: 9,
        approver: None,
        decided_ms: None,
        closed: None,
        closed_by: None,
        close_reason: String::new(),
    }))
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        pg.latest_changes(false, 1).unwrap()[0].id,
        highest_change + 1
    );

    // A second run into the now non-empty target is refused, and writes nothing.
    let before = pg.audit().unwrap().len();
    let err = sqlite_to_postgres(dir.path(), None, &url).unwrap_err();
    assert!(matches!(err, MigrateError::NotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("is not empty"), "{err}");
    assert_eq!(pg.audit().unwrap().len(), before);
}

#[test]
fn a_source_whose_trail_does_not_verify_is_not_moved() {
    let dir = tempfile::tempdir().unwrap();
    source(dir.path());
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .execute_raw("UPDATE audit SET reason = 'edited' WHERE seq = 2")
        .unwrap();
    drop(store);
    let url = Server::shared().fresh_database();
    let err = sqlite_to_postgres(dir.path(), None, &url).unwrap_err();
    assert!(matches!(err, MigrateError::SourceTrail(_)), "{err}");
    assert!(err.to_string().contains("entry 2 was edited"), "{err}");
}

#[test]
fn the_arguments_name_a_data_directory_and_a_url() {
    use crate::cli::store::{postgres_target, sqlite_source};
    assert_eq!(
        sqlite_source("sqlite:/var/lib/wardgate").unwrap(),
        std::path::Path::new("/var/lib/wardgate")
    );
    assert_eq!(
        sqlite_source("sqlite:/var/lib/wardgate/wardgate.db").unwrap(),
        std::path::Path::new("/var/lib/wardgate")
    );
    assert!(sqlite_source("/var/lib/wardgate").is_err());
    assert_eq!(
        postgres_target("postgres:postgres://u@db/w").unwrap(),
        "postgres://u@db/w"
    );
    assert_eq!(
        postgres_target("postgres://u@db/w").unwrap(),
        "postgres://u@db/w"
    );
    let err = postgres_target("mysql://u:secret@db/w").unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

/// More rows than one INSERT batch takes (full batches and a last partial one): all arrive,
/// and read the same.
#[test]
fn a_table_larger_than_a_batch_moves_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut tx = store.begin().unwrap();
    tx.apply(&Change::UpsertGateway(crate::store::GatewayRow {
        name: "gw-a".into(),
        interfaces: vec!["eth1".into()],
        location: String::new(),
        applied_generation: 0,
        last_error: String::new(),
        applied_epoch: String::new(),
    }))
    .unwrap();
    tx.apply(&Change::UpsertDevice(crate::store::DeviceRow {
        name: "pump-1".into(),
        id: 1,
        mac: "02:00:00:00:00:01".parse().unwrap(),
        addresses: vec!["192.0.2.10".parse().unwrap()],
        profile: "pump".into(),
        mode: Mode::Monitor,
        gateway: "gw-a".into(),
        location: String::new(),
        asset_id: String::new(),
    }))
    .unwrap();
    tx.commit().unwrap();
    const NOW_NS: u64 = 1_800_000_000_000_000_000;
    const ROWS: u32 = 2_500;
    let limits = FlowLimits {
        retention_days: 3650,
        rows_per_device_day: 1_000_000,
    };
    let records: Vec<_> = (0..ROWS)
        .map(|n| {
            let peer = format!("198.51.100.{}", n % 250);
            flow("pump-1", &peer, 1 + (n / 250) as u16, NOW_NS - 5_000)
        })
        .collect();
    store
        .insert_flows("gw-a", &records, NOW_NS, limits)
        .unwrap();
    let url = Server::shared().fresh_database();
    let started = std::time::Instant::now();
    let summary = sqlite_to_postgres(dir.path(), None, &url).unwrap();
    println!("{ROWS} flow rows moved in {:?}", started.elapsed());
    let flows = summary
        .tables
        .iter()
        .find(|t| t.table == "flow_days")
        .unwrap();
    assert_eq!(
        (flows.source, flows.target),
        (u64::from(ROWS), u64::from(ROWS))
    );
    let pg = PgStore::connect(&url).unwrap();
    assert_eq!(
        pg.flow_aggregates("pump-1", 0, u64::MAX).unwrap(),
        store.flow_aggregates("pump-1", 0, u64::MAX).unwrap()
    );
}
