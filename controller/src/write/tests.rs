//! A store written by the code before migration 9 (generations as pretty JSON, hashed as that
//! text), then written to by the write service: its trail verifies across the boundary.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};
use wardgate_policy::{DesiredState, desired::Mode};

use super::write;
use crate::{
    audit::{self, AuditEntry, GENESIS, enforcement::ContentFormat, head::HeadFile},
    generation::legacy_json_hash,
    store::{Change, GatewayRow, GenerationContent, SqliteStore, Store, migrations::MIGRATIONS},
};

const GW: &str = "gw-3a";

fn state(generation: u32, mode: Mode) -> DesiredState {
    crate::generation::one_pump(GW, generation, mode)
}

/// What the code before migration 9 left: schema 8, two generations stored as pretty JSON,
/// their audit entries recording the SHA-256 of that text, and the head file.
pub(crate) fn legacy_store(dir: &std::path::Path) {
    let c = Connection::open(dir.join("wardgate.db")).unwrap();
    c.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        .unwrap();
    for sql in &MIGRATIONS[..8] {
        c.execute_batch(sql).unwrap();
    }
    c.execute("INSERT INTO schema_version (version) VALUES (8)", [])
        .unwrap();
    c.execute(
        "INSERT INTO store_meta (key, value) VALUES ('epoch', 'e0')",
        [],
    )
    .unwrap();
    c.execute(
        "INSERT INTO gateways (name, interfaces) VALUES (?1, '[\"eth1\"]')",
        [GW],
    )
    .unwrap();
    let head = HeadFile::open(&dir.join(audit::head::FILE_NAME), (0, GENESIS)).unwrap();
    let mut prev = GENESIS.to_string();
    for (generation, mode) in [(1, Mode::Learn), (2, Mode::Monitor)] {
        let json = state(generation, mode).to_json();
        c.execute(
            "INSERT INTO generations (gateway, generation, state_json, reason, created_ms) \
             VALUES (?1, ?2, ?3, 'r', 0)",
            params![GW, generation, json],
        )
        .unwrap();
        let diff = serde_json::json!({"before": null, "after": {"mode": mode}, "enforcement": {
            GW: {"generation": generation, "content_sha256": legacy_json_hash(&json),
                 "devices_changed": ["pump"]}}});
        let mut e = AuditEntry {
            seq: u64::from(generation),
            unix_ms: 1,
            actor: "user:sam".into(),
            action: "set_mode".into(),
            target: "pump".into(),
            diff: diff.to_string(),
            reason: "r".into(),
            prev_hash: prev,
            hash: String::new(),
        };
        e.hash = e.content_hash();
        c.execute(
            "INSERT INTO audit (seq, unix_ms, actor, action, target, diff, reason, prev_hash, \
             hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                e.seq as i64,
                e.unix_ms,
                e.actor,
                e.action,
                e.target,
                e.diff,
                e.reason,
                e.prev_hash,
                e.hash
            ],
        )
        .unwrap();
        head.append(e.seq, &e.hash, 1).unwrap();
        prev = e.hash;
    }
    head.sync().unwrap();
}

fn verify(store: &SqliteStore, dir: &std::path::Path) -> audit::Report {
    audit::verify_store(store, &dir.join(audit::head::FILE_NAME))
        .unwrap()
        .unwrap()
}

#[test]
fn a_trail_hashed_as_json_still_verifies_after_writes_hashed_as_bundles() {
    let dir = tempfile::tempdir().unwrap();
    legacy_store(dir.path());
    // Offline verify reads an old store as it is, unmigrated.
    let read_only = SqliteStore::open_read_only(dir.path()).unwrap();
    let unmigrated = verify(&read_only, dir.path());
    assert_eq!((unmigrated.entries, unmigrated.generations), (2, 2));
    drop(read_only);
    let store = SqliteStore::open(dir.path()).unwrap();
    let before = verify(&store, dir.path());
    assert_eq!((before.entries, before.generations), (2, 2));
    let old = store.generation(GW, 2).unwrap().unwrap();
    assert!(matches!(old.content, GenerationContent::LegacyJson(_)));
    let compile = |_: &dyn crate::store::SiteReader, _: &[_], _: &[_]| {
        Ok(BTreeMap::from([(GW.to_string(), state(1, Mode::Enforce))]))
    };
    let gateway = Change::UpsertGateway(GatewayRow {
        name: GW.into(),
        interfaces: vec!["eth1".into()],
        location: "3A".into(),
        applied_generation: 0,
        last_error: String::new(),
        applied_epoch: String::new(),
    });
    let out = write(&store, "user:sam", "INC-7", &[gateway], &compile).unwrap();
    assert_eq!(out.generations[GW], 3);
    let new = store.generation(GW, 3).unwrap().unwrap();
    assert!(matches!(new.content, GenerationContent::Bundle(_)));
    assert_eq!(out.states[GW].content_hash, new.content_hash());
    let entry = store.audit().unwrap().pop().unwrap();
    let recorded = &audit::enforcement::of_diff(&entry.diff).unwrap()[GW];
    assert_eq!(recorded.content_format, ContentFormat::Bundle);
    assert_eq!(
        recorded.devices_changed,
        ["pump"],
        "diffed against the JSON one"
    );
    let after = verify(&store, dir.path());
    assert_eq!((after.entries, after.generations), (3, 3));
    // The old generations are still checked, the old way: an edit of one is reported.
    store
        .execute_raw(
            "UPDATE generations SET state_json = replace(state_json, '\"learn\"', '\"enforce\"') \
             WHERE generation = 1",
        )
        .unwrap();
    let problem = audit::verify_store(&store, &dir.path().join(audit::head::FILE_NAME))
        .unwrap()
        .unwrap_err();
    assert!(
        problem.contains("generation 1 of gw-3a does not match its audit entry 1"),
        "{problem}"
    );
}

#[test]
fn a_generation_swapped_to_the_other_stored_form_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    legacy_store(dir.path());
    let store = SqliteStore::open(dir.path()).unwrap();
    let compile = |_: &dyn crate::store::SiteReader, _: &[_], _: &[_]| {
        Ok(BTreeMap::from([(GW.to_string(), state(1, Mode::Enforce))]))
    };
    let ack = Change::SuppressAlerts {
        device: "pump".into(),
        detector: "scan_vertical".into(),
        peer: String::new(),
        made_by: "user:sam".into(),
        made_ms: 1,
        reason: "INC-8".into(),
    };
    // SuppressAlerts needs the device row.
    store
        .execute_raw(
            "INSERT INTO devices (name, id, mac, addresses, profile, mode, gateway) VALUES \
             ('pump', 1, '02:00:00:00:00:0c', '[\"192.0.2.12\"]', 'pump', 'monitor', 'gw-3a')",
        )
        .unwrap();
    write(&store, "user:sam", "INC-8", &[ack], &compile).unwrap();
    // Generation 3 relabelled as JSON whose text hashes to what its entry recorded would need
    // a SHA-256 preimage; relabelling alone must not pass either.
    store
        .execute_raw(&format!(
            "UPDATE generations SET format = 'json', state_json = '{}' WHERE generation = 3",
            state(3, Mode::Enforce).to_json()
        ))
        .unwrap();
    let problem = audit::verify_store(&store, &dir.path().join(audit::head::FILE_NAME))
        .unwrap()
        .unwrap_err();
    assert!(
        problem.contains("generation 3 of gw-3a is stored as"),
        "{problem}"
    );
}
