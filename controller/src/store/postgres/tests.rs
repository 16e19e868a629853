//! Smoke tests of the PostgreSQL store against a real server: the runtime
//! design (called from every kind of thread), one write through the write service, two
//! writers at once, the alert rules. The conformance suite (both stores, every method) is
//! `controller/tests/store_conformance*.rs`.
//!
//! The server is `wardgate_testkit::postgres::Server`: the test process's shared one (a fresh
//! database per test), or one of its own for the restart. A test that cannot start PostgreSQL
//! fails; it never skips.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use wardgate_testkit::postgres::Server;

use wardgate_policy::desired::Mode;

use super::{PgStore, site};
use crate::{
    audit,
    store::{AlertQuery, Change, DeviceRow, GatewayRow, GenerationContent, NewAlert, Store},
    write::write,
};

/// A fresh database of this test process's server (`wardgate_testkit::postgres`): its URL.
fn fresh() -> String {
    Server::shared().fresh_database()
}

fn gateway(name: &str) -> Change {
    Change::UpsertGateway(GatewayRow {
        name: name.into(),
        interfaces: vec!["eth1".into()],
        location: "3A".into(),
        applied_generation: 0,
        last_error: String::new(),
        applied_epoch: String::new(),
    })
}

fn pump(gw: &str) -> Change {
    Change::UpsertDevice(DeviceRow {
        name: "pump".into(),
        id: 0,
        mac: "02:00:00:00:00:0c".parse().unwrap(),
        addresses: vec!["192.0.2.12".parse().unwrap()],
        profile: "pump".into(),
        mode: Mode::Monitor,
        gateway: gw.into(),
        location: "3A".into(),
        asset_id: String::new(),
    })
}

/// A few calls that read and write, from whatever thread runs them.
fn exercise(store: &PgStore, tag: &str) {
    let mut tx = store.begin().unwrap();
    tx.apply(&gateway(&format!("gw-{tag}"))).unwrap();
    tx.commit().unwrap();
    assert!(store.gateway(&format!("gw-{tag}")).unwrap().is_some());
    assert_eq!(store.epoch().unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_from_workers_blocking_tasks_and_plain_threads() {
    let store = Arc::new(PgStore::connect(&fresh()).unwrap());
    // On a worker thread, as it is (blocks the worker, never starts a runtime) ...
    exercise(&store, "worker");
    // ... inside block_in_place, in spawn_blocking, and on a plain thread.
    tokio::task::block_in_place(|| exercise(&store, "in-place"));
    let s = store.clone();
    tokio::task::spawn_blocking(move || exercise(&s, "blocking"))
        .await
        .unwrap();
    let s = store.clone();
    std::thread::spawn(move || exercise(&s, "thread"))
        .join()
        .unwrap();
    // Many at once: more callers than pooled connections wait for one, none fails.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let s = store.clone();
            tokio::task::spawn_blocking(move || exercise(&s, &format!("many-{i}")))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.snapshot().unwrap().gateways.len(), 16);
    // Dropped inside the runtime: the store's own thread stops without a panic.
    drop(store);
}

#[tokio::test]
async fn the_store_works_on_a_current_thread_runtime() {
    let store = PgStore::connect(&fresh()).unwrap();
    exercise(&store, "current");
}

#[test]
fn a_write_through_the_write_service_stores_its_generation_and_chained_entries() {
    let url = fresh();
    let store = PgStore::connect(&url).unwrap();
    assert!(store.audit_head().is_none(), "no head file for PostgreSQL");
    let compile = |_: &dyn crate::store::SiteReader, _: &[_], _: &[_]| {
        Ok(BTreeMap::from([(
            "gw-3a".to_string(),
            crate::generation::one_pump("gw-3a", 1, Mode::Monitor),
        )]))
    };
    let out = write(
        &store,
        "user:sam",
        "INC-1",
        &[gateway("gw-3a"), pump("gw-3a")],
        &compile,
    )
    .unwrap();
    assert_eq!(out.generations["gw-3a"], 1);
    let device = store.device("pump").unwrap().unwrap();
    assert_eq!(device.id, 1, "the write service gave the first id");
    let g = store.generation("gw-3a", 1).unwrap().unwrap();
    assert!(matches!(g.content, GenerationContent::Bundle(_)));
    assert_eq!(out.states["gw-3a"].content_hash, g.content_hash());
    assert_eq!(store.latest_generation("gw-3a").unwrap(), 1);
    let trail = store.audit().unwrap();
    assert_eq!(trail.len(), 2);
    assert_eq!(audit::verify(&trail), Ok(2));
    assert_eq!(store.audit_chain_head().unwrap().0, 2);
    // A failing change rolls the whole write back.
    let missing = Change::SetMode {
        device: "nobody".into(),
        mode: Mode::Enforce,
    };
    assert!(
        write(
            &store,
            "user:sam",
            "INC-2",
            &[gateway("gw-x"), missing],
            &compile
        )
        .is_err()
    );
    assert!(store.gateway("gw-x").unwrap().is_none());
    // A server error says what the server said, not only its kind.
    let e = store
        .execute_raw("SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(e.to_string().contains("no_such_table"), "{e}");
    assert_eq!(store.audit().unwrap().len(), 2);
    // A second store on the same database (another replica) sees the same epoch and rows.
    let other = PgStore::connect(&url).unwrap();
    assert_eq!(other.epoch().unwrap(), store.epoch().unwrap());
    assert_eq!(other.device("pump").unwrap(), Some(device));
}

/// The generations, the audit entries and the COMMIT go out together (one round trip under
/// the lock): an insert refused there ends the transaction as a rollback, the write fails with
/// the insert's error, nothing of it stays, and the next write works.
#[test]
fn an_insert_refused_at_the_commit_rolls_the_whole_write_back() {
    let store = PgStore::connect(&fresh()).unwrap();
    let row = |generation, reason: &str| crate::store::GenerationRow {
        gateway: "gw-3a".into(),
        generation,
        content: GenerationContent::Bundle(vec![1, 2, 3]),
        reason: reason.into(),
    };
    let entry = |seq: u64, prev: &str| audit::AuditEntry {
        seq,
        unix_ms: 1,
        actor: "user:sam".into(),
        action: "test".into(),
        target: "gw-3a".into(),
        diff: "{}".into(),
        reason: "INC-1".into(),
        prev_hash: prev.into(),
        hash: format!("{seq:064}"),
    };
    let mut tx = store.begin().unwrap();
    tx.apply(&gateway("gw-3a")).unwrap();
    tx.insert_generation(&row(1, "first")).unwrap();
    tx.insert_audit(&entry(1, audit::GENESIS)).unwrap();
    tx.commit().unwrap();

    // Generation 1 again: the primary key refuses it at the commit.
    let mut tx = store.begin().unwrap();
    assert_eq!(tx.audit_chain_head().unwrap().0, 1);
    tx.apply(&gateway("gw-3b")).unwrap();
    tx.insert_generation(&row(1, "again")).unwrap();
    assert_eq!(
        tx.latest("gw-3a").unwrap().unwrap().reason,
        "again",
        "a held generation is the transaction's latest"
    );
    let (_, prev) = store.audit_chain_head().unwrap();
    tx.insert_audit(&entry(2, &prev)).unwrap();
    let e = tx.commit().unwrap_err();
    assert!(e.to_string().contains("duplicate key"), "{e}");
    assert!(store.gateway("gw-3b").unwrap().is_none(), "rolled back");
    assert_eq!(store.audit().unwrap().len(), 1);
    assert_eq!(
        store
            .generation("gw-3a", 1)
            .unwrap()
            .unwrap()
            .content_hash(),
        crate::generation::content_hash(&row(1, "first").content)
    );

    // The connections are usable: the next write goes through.
    let mut tx = store.begin().unwrap();
    tx.apply(&gateway("gw-3c")).unwrap();
    tx.insert_generation(&row(2, "second")).unwrap();
    tx.insert_audit(&entry(2, &prev)).unwrap();
    tx.commit().unwrap();
    assert_eq!(store.latest_generation("gw-3a").unwrap(), 2);
    assert_eq!(store.audit().unwrap().len(), 2);
    assert!(store.gateway("gw-3c").unwrap().is_some());
}

#[test]
fn two_replicas_writing_at_once_keep_one_audit_chain() {
    let url = fresh();
    let stores: Vec<Arc<PgStore>> = (0..2)
        .map(|_| Arc::new(PgStore::connect(&url).unwrap()))
        .collect();
    let compile = |_: &dyn crate::store::SiteReader, _: &[_], _: &[_]| Ok(BTreeMap::new());
    // A transaction open on one replica holds the write lock: the other's write waits for it.
    let held = stores[0].begin().unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let b = stores[1].clone();
    let waiting = std::thread::spawn(move || {
        write(&*b, "user:sam", "INC", &[gateway("gw-waited")], &compile).unwrap();
        done.send(()).unwrap();
    });
    assert!(
        finished.recv_timeout(Duration::from_millis(500)).is_err(),
        "a write went through while another replica held the write lock"
    );
    held.commit().unwrap();
    finished.recv_timeout(Duration::from_secs(10)).unwrap();
    waiting.join().unwrap();
    // Writers on both replicas at once: one chain, no sequence number taken twice.
    let start = Arc::new(std::sync::Barrier::new(4));
    let began = std::time::Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (s, start) = (stores[i % 2].clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for n in 0..10 {
                    let change = gateway(&format!("gw-{i}-{n}"));
                    write(&*s, "user:sam", "INC", &[change], &compile).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    // A figure for the report (`--nocapture`): 40 writes, 4 writers, 2 replicas.
    eprintln!("40 writes on two replicas: {:?}", began.elapsed());
    let trail = stores[1].audit().unwrap();
    assert_eq!(audit::verify(&trail), Ok(41), "one chain, no fork");
}

/// The server restarts under a running store (as after a failover): connections found closed
/// are replaced, no call needs a new store.
#[test]
fn a_restarted_server_is_connected_to_again() {
    let server = Server::start();
    let store = PgStore::connect(&server.url("postgres")).unwrap();
    exercise(&store, "before");
    server.restart();
    // The closed connections are noticed as their tasks end: within a bounded wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.epoch().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnection in 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    exercise(&store, "after");
    assert_eq!(store.snapshot().unwrap().gateways.len(), 2);
}

fn alert(id: &str, severity: u8, count: u64, last_seen_ns: u64) -> NewAlert {
    NewAlert {
        id: id.into(),
        device: "d".into(),
        severity,
        body: format!(r#"{{"count":{count},"detector":"scan_vertical"}}"#),
        detector: "scan_vertical".into(),
        peer: String::new(),
        count,
        last_seen_ns,
    }
}

#[test]
fn alerts_update_by_count_keep_their_sequence_rules_and_the_quota() {
    let store = PgStore::connect(&fresh()).unwrap().with_alert_quota(2);
    let rows = |after: i64| -> Vec<(i64, bool, String)> {
        store
            .alerts_after(after, 10)
            .unwrap()
            .into_iter()
            .map(|a| (a.seq, a.is_update(), a.id))
            .collect()
    };
    store
        .insert_alerts("gw", &[alert("x", 2, 1, 10), alert("y", 2, 1, 10)])
        .unwrap();
    let acked = store
        .insert_alerts("gw", &[alert("x", 2, 5, 50), alert("y", 2, 1, 10)])
        .unwrap();
    assert_eq!(acked, ["x", "y"]);
    store.insert_alerts("gw", &[alert("x", 2, 1, 10)]).unwrap();
    assert_eq!(
        rows(0),
        [
            (1, false, "x".into()),
            (2, false, "y".into()),
            (3, true, "x".into())
        ]
    );
    let mut tx = store.begin().unwrap();
    tx.apply(&Change::AcknowledgeAlerts {
        ids: vec!["x".into()],
        by: "user:sam".into(),
    })
    .unwrap();
    tx.commit().unwrap();
    store.insert_alerts("gw", &[alert("x", 2, 5, 60)]).unwrap();
    let x = store.alerts_after(2, 10).unwrap();
    assert_eq!((x.len(), x[0].seq, x[0].first_seq), (1, 4, 1));
    assert!(x[0].acknowledged);
    assert_eq!(store.alerts_pending(2).unwrap(), 1);
    // The console finds it by its first number, and filters by the body's detector.
    let c = store.console_alert(1).unwrap().unwrap();
    assert_eq!((c.id.as_str(), c.acknowledged), ("x", true));
    let page = store
        .alert_page(&crate::store::AlertPageQuery {
            detector: "scan_vertical".into(),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.total, 2);
    // Past the quota: the acknowledged alert goes first, counted once by its severity.
    store.insert_alerts("gw", &[alert("z", 1, 1, 10)]).unwrap();
    assert_eq!(store.alert_drops("gw").unwrap(), [0, 0, 1, 0]);
    assert!(rows(0).iter().all(|r| r.2 != "x"));
    // Then the lowest severity; numbers are never reused, cursors never move back.
    store.insert_alerts("gw", &[alert("low", 0, 1, 0)]).unwrap();
    assert_eq!(store.alert_drops("gw").unwrap(), [1, 0, 1, 0]);
    store.insert_alerts("gw", &[alert("c", 3, 1, 0)]).unwrap();
    assert_eq!(rows(5).last().unwrap().0, 7);
    store.advance_sink_cursor("siem", 6).unwrap();
    store.advance_sink_cursor("siem", 2).unwrap();
    assert_eq!(store.sink_cursor("siem").unwrap(), 6);
    assert_eq!(store.sink_cursor("new").unwrap(), 0);
    let listed = store.alerts(&AlertQuery::recent(10)).unwrap();
    assert_eq!(listed.len(), 2);
}

#[test]
fn a_server_that_is_not_there_is_named_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let e = PgStore::connect(&format!(
        "postgres://wardgate:s3cret@127.0.0.1:{port}/wardgate"
    ))
    .err()
    .expect("nothing listens there");
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("wardgate"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(msg.contains("refused"), "says why: {msg}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// One scenario over every `Store` method, run on both stores and compared.
pub(in crate::store) mod same_as_sqlite;

/// Several controllers on one database: announcements and SOC sink leases.
mod replicas;

/// The database fails over to a promoted standby under two stores.
mod failover;

/// A read of the site for a caller that writes nothing (the availability assessment) does not
/// wait for the write lock: 500 assignments in flight each made one, and each queued behind
/// the writes for the lock.
#[test]
fn a_site_read_does_not_wait_for_the_write_lock() {
    let store = Arc::new(PgStore::connect(&fresh()).unwrap());
    write(
        &*store,
        "user:sam",
        "INC-1",
        &[gateway("gw-3a"), pump("gw-3a")],
        &|_: &dyn crate::store::SiteReader, _: &[_], _: &[_]| Ok(BTreeMap::new()),
    )
    .unwrap();
    let mut held = store.begin().unwrap(); // holds the write lock until dropped
    held.apply(&gateway("gw-3b")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let site = store.read_site().unwrap();
            let read = (
                site.device("pump").unwrap().map(|d| d.gateway),
                site.gateways(&["gw-3b".to_string()].into()).unwrap().len(),
            );
            tx.send(read).unwrap();
        })
    };
    let read = rx.recv_timeout(Duration::from_secs(5));
    drop(held);
    reader.join().unwrap();
    assert_eq!(
        read.expect("the read waited for the write lock"),
        (Some("gw-3a".to_string()), 0),
        "it reads what is committed, not the open write's rows"
    );
}

/// What a group of writes reads ahead (`StoreTx::read_ahead`) is served only as what reading
/// would return: before any write, after the writes that patch it, and after one that drops it.
#[test]
fn what_a_group_reads_ahead_is_what_reading_returns() {
    use crate::store::{SiteReader, StoreTx};
    let store = PgStore::connect(&fresh()).unwrap();
    let mut other = match pump("gw-3b") {
        Change::UpsertDevice(d) => d,
        _ => unreachable!(),
    };
    other.name = "monitor".into();
    other.mac = "02:00:00:00:00:0d".parse().unwrap();
    other.addresses = vec!["192.0.2.13".parse().unwrap()];
    let one_generation = |_: &dyn crate::store::SiteReader, _: &[_], _: &[_]| {
        Ok(BTreeMap::from([(
            "gw-3a".to_string(),
            crate::generation::one_pump("gw-3a", 1, Mode::Monitor),
        )]))
    };
    write(
        &store,
        "user:sam",
        "INC-1",
        &[
            gateway("gw-3a"),
            gateway("gw-3b"),
            pump("gw-3a"),
            Change::UpsertDevice(other),
        ],
        &one_generation,
    )
    .unwrap();
    let mut tx = store.begin_tx().unwrap();
    tx.read_ahead(&["pump", "nobody"]).unwrap();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let check = |tx: &super::tx::PgTx<'_>, when: &str| {
        // The connection with the updates the transaction held back written.
        let c = tx.db().unwrap();
        for name in ["pump", "nobody", "monitor"] {
            assert_eq!(
                tx.device(name).unwrap(),
                site::device(c, name).unwrap(),
                "{when}: {name}"
            );
        }
        for gws in [&["gw-3a"][..], &["gw-3a", "gw-3b"], &["gw-3b"]] {
            let read = site::devices_where(c, "WHERE gateway = ANY($1)", &[&gws]).unwrap();
            assert_eq!(
                tx.devices_of(&names(gws), &BTreeSet::new()).unwrap(),
                read,
                "{when}"
            );
        }
        let gws = names(&["gw-3a", "gw-x"]);
        let read = site::gateways_where(c, "WHERE name = ANY($1)", &[&vec!["gw-3a", "gw-x"]]);
        assert_eq!(tx.gateways(&gws).unwrap(), read.unwrap(), "{when}");
        assert_eq!(
            tx.latest("gw-3a").unwrap().map(|g| g.generation),
            site::latest(c, "gw-3a").unwrap().map(|g| g.generation),
            "{when}"
        );
    };
    check(&tx, "read ahead");
    assert!(tx.ahead.is_some());
    tx.apply(&Change::AssignProfile {
        device: "pump".into(),
        profile: "infusion".into(),
    })
    .unwrap();
    check(&tx, "after an assignment");
    tx.apply(&Change::SetLocation {
        device: "pump".into(),
        location: "bed 4".into(),
    })
    .unwrap();
    check(&tx, "after a move");
    assert!(tx.ahead.is_some(), "patched, not dropped");
    tx.apply(&Change::SetMode {
        device: "pump".into(),
        mode: Mode::Enforce,
    })
    .unwrap();
    assert_eq!(
        tx.device("pump").unwrap().unwrap().mode,
        Mode::Enforce,
        "an update held back is read"
    );
    tx.apply(&pump("gw-3b")).unwrap();
    assert!(tx.ahead.is_none(), "another change drops it");
    check(&tx, "after a device moved to another gateway");
    tx.apply(&Change::SetLocation {
        device: "pump".into(),
        location: "bed 9".into(),
    })
    .unwrap();
    // The row is the transaction's again (the move's update returned it): held back until
    // the commit, and sent with it.
    tx.apply(&Change::SetMode {
        device: "pump".into(),
        mode: Mode::Learn,
    })
    .unwrap();
    assert_eq!(tx.updates().len(), 1, "held back");
    Box::new(tx).commit().unwrap();
    let stored = store.device("pump").unwrap().unwrap();
    assert_eq!(
        (
            stored.gateway.as_str(),
            stored.location.as_str(),
            stored.mode
        ),
        ("gw-3b", "bed 9", Mode::Learn),
        "the update held back until the commit is committed with it"
    );
}
