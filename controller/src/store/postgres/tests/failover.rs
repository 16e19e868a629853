//! The database fails over: a streaming standby of the test's server is promoted and the old
//! primary stopped; two stores on a multi-host URL (`target_session_attrs=read-write`) write
//! again through the new primary without being made anew, and nothing acknowledged is lost.

use std::time::Instant;

use wardgate_testkit::postgres::Standby;

use super::*;

/// A write through `store`, tried every 100 ms until it succeeds (at most `within`): how long
/// it took, and the generation it made.
fn write_until(store: &PgStore, gw: &str, n: u32, within: Duration) -> (Duration, u32) {
    let started = Instant::now();
    // Each write's bundle differs from the one before.
    let mode = if n.is_multiple_of(2) {
        Mode::Monitor
    } else {
        Mode::Enforce
    };
    loop {
        let compile = |_: &dyn crate::store::SiteReader, _: &[_], _: &[_]| {
            Ok(BTreeMap::from([(
                gw.to_string(),
                crate::generation::one_pump(gw, 1, mode),
            )]))
        };
        // A gateway change each time (its location), so each write makes a generation.
        let Change::UpsertGateway(mut row) = gateway(gw) else {
            unreachable!()
        };
        row.location = format!("3A-{n}");
        let change = Change::UpsertGateway(row);
        match write(store, "user:sam", &format!("INC-{n}"), &[change], &compile) {
            Ok(out) => return (started.elapsed(), out.generations[gw]),
            Err(e) => {
                assert!(
                    started.elapsed() < within,
                    "no write within {within:?}: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn two_stores_follow_a_promoted_standby_without_being_made_anew() {
    let t0 = Instant::now();
    let phase = |what: &str| println!("{:>8.2?} {what}", t0.elapsed());
    let primary = Server::start();
    phase("primary started");
    primary.psql("postgres", "CREATE DATABASE ha");
    let standby = Standby::of(&primary);
    phase("standby started");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/ha?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let a = PgStore::connect(&url).unwrap();
    let b = PgStore::connect(&url).unwrap();
    phase("stores connected");
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        acknowledged.push(write_until(&a, "gw-a", n, Duration::ZERO).1);
        acknowledged.push(write_until(&b, "gw-b", n, Duration::ZERO).1);
    }
    // A planned failover: the standby has replayed everything, the old primary stops (so that
    // it takes no more writes), the standby is promoted.
    standby.catch_up(&primary, Duration::from_secs(10));
    phase("standby caught up");
    primary.stop();
    phase("primary stopped");
    let failed_over = Instant::now();
    standby.promote();
    // Both stores write again through the new primary (their broken connections replaced).
    let (ta, ga) = write_until(&a, "gw-a", 5, Duration::from_secs(10));
    let (tb, gb) = write_until(&b, "gw-b", 5, Duration::from_secs(10));
    let total = failed_over.elapsed();
    println!("writes resumed {ta:?} / {tb:?} after the promotion began ({total:?} for both)");
    assert!(total < Duration::from_secs(10));
    assert_eq!((ga, gb), (6, 6), "every acknowledged generation is there");
    assert_eq!(acknowledged.len(), 10);
    for gw in ["gw-a", "gw-b"] {
        let stored: Vec<u32> = a
            .generations_after(gw, 0)
            .unwrap()
            .iter()
            .map(|g| g.generation)
            .collect();
        assert_eq!(stored, (1..=6).collect::<Vec<_>>(), "{gw}");
    }
    phase("checked");
    let trail = b.audit().unwrap();
    assert_eq!(audit::verify(&trail), Ok(trail.len()));
    assert!(trail.len() >= 12, "every write's entries: {}", trail.len());
}
