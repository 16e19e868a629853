//! `wardctl store migrate`, the binary: a SQLite store written through the write service with
//! the controller's compiler (real generations) and alerts, moved into a fresh PostgreSQL
//! database of the test process's server; the summary printed; the moved store's trail
//! verifies there; a second run into the now non-empty target fails and says why. (Every
//! table and every read compared: `store::migrate`'s own tests.)

#[allow(dead_code)]
#[path = "store_conformance/fixture.rs"]
mod fixture;

use std::process::Command;

use fixture::{GW_A, alert, site, verify_trail};
use wardgate_controller::store::{PgStore, SqliteStore, Store as _};
use wardgate_testkit::postgres::Server;

fn wardctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wardctl"))
        .args(args)
        .output()
        .expect("running wardctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn wardctl_moves_a_sqlite_store_into_an_empty_postgres_database_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    site(&store);
    store
        .insert_alerts(GW_A, &[alert("a1", "pump-1", 2, "scan", 1)])
        .unwrap();
    let (entries, generations) = verify_trail(&store);
    assert!(generations >= 2, "the site write made generations");
    drop(store);

    let url = Server::shared().fresh_database();
    let from = format!("sqlite:{}", dir.path().display());
    let to = format!("postgres:{url}");
    let (ok, out, err) = wardctl(&["store", "migrate", "--from", &from, "--to", &to]);
    assert!(ok, "wardctl failed: {err}");
    println!("{out}");
    assert!(out.contains("TABLE"), "{out}");
    for line in [
        "devices              2       2",
        "alerts               1       1",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
    assert!(!out.contains("DIFFERS"), "{out}");
    assert!(
        out.contains(&format!(
            "target audit trail: {entries} entries verified, {generations} generations"
        )),
        "{out}"
    );

    let pg = PgStore::connect(&url).unwrap();
    assert_eq!(verify_trail(&pg), (entries, generations));

    let (ok, _, err) = wardctl(&["store", "migrate", "--from", &from, "--to", &to]);
    assert!(!ok, "a second run must fail");
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(pg.audit().unwrap().len(), entries, "nothing written");
}
