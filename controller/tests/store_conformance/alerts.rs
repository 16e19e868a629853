//! What gateways report (status, health) and the alerts they send: dedup and updates, the
//! quota, sequence numbers and sink cursors, acknowledgements and suppressions, and the
//! console's alert list.

use wardgate_controller::{
    error::Error,
    store::{
        AgentHealth, AlertPageQuery, AlertQuery, AlertState, Change, ConsoleAlert, NewAlert,
        SuppressionRow,
    },
};

use crate::fixture::{GW_A, GW_B, Open, QUOTA, alert, site, write, written};

fn ids(alerts: &[wardgate_controller::store::StoredAlert]) -> Vec<&str> {
    alerts.iter().map(|a| a.id.as_str()).collect()
}

/// The bodies `alerts` lists (the newest 10, one per alert).
fn listed_bodies(store: &dyn wardgate_controller::store::Store) -> Vec<String> {
    store
        .alerts(&AlertQuery::recent(10))
        .unwrap()
        .into_iter()
        .map(|a| a.body)
        .collect()
}

pub fn status_reports_and_health_round_trip(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    assert!(store.gateway_health().unwrap().is_empty());
    let err = store.report_status("gw-9", 1, "e", "", None).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    let mut fired = AgentHealth {
        agent_version: "0.9.1".into(),
        watchdog_fired: true,
        watchdog_fired_count: 3,
        watchdog_recovered_count: 2,
        fail_open_devices: 7,
        heartbeat_age_ms: Some(12_345),
    };
    let before = wardgate_controller::audit::now_ms();
    store
        .report_status(GW_A, 1, "epoch-a", "bundle too old", Some(&fired))
        .unwrap();
    store.report_status(GW_B, 1, "epoch-a", "", None).unwrap();
    let a = store.gateway(GW_A).unwrap().unwrap();
    assert_eq!(
        (
            a.applied_generation,
            a.applied_epoch.as_str(),
            a.last_error.as_str()
        ),
        (1, "epoch-a", "bundle too old")
    );
    let all = store.gateway_health().unwrap();
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        [GW_A],
        "gw-3b reported none"
    );
    let h = &all[GW_A];
    assert_eq!(h.health, fired);
    assert!(h.received_ms >= before && h.received_ms <= wardgate_controller::audit::now_ms());
    let since = h.watchdog_fired_since_ms.expect("fired");
    assert_eq!(since, h.received_ms);

    // Still fired: the firing keeps its first report's time.
    std::thread::sleep(std::time::Duration::from_millis(5));
    fired.heartbeat_age_ms = None;
    fired.fail_open_devices = 8;
    store
        .report_status(GW_A, 2, "epoch-a", "", Some(&fired))
        .unwrap();
    let h = &store.gateway_health().unwrap()[GW_A];
    assert_eq!(h.health, fired);
    assert_eq!(h.watchdog_fired_since_ms, Some(since));
    assert!(h.received_ms > since);
    assert_eq!(store.gateway(GW_A).unwrap().unwrap().last_error, "");
    // Recovered: no firing time.
    let ok = AgentHealth {
        watchdog_fired: false,
        watchdog_recovered_count: 3,
        ..fired.clone()
    };
    store
        .report_status(GW_A, 3, "epoch-a", "", Some(&ok))
        .unwrap();
    let h = &store.gateway_health().unwrap()[GW_A];
    assert_eq!((&h.health, h.watchdog_fired_since_ms), (&ok, None));
    // A status without health clears it; the generation is still stored.
    store.report_status(GW_A, 4, "epoch-b", "", None).unwrap();
    assert!(store.gateway_health().unwrap().is_empty());
    let a = store.gateway(GW_A).unwrap().unwrap();
    assert_eq!(
        (a.applied_generation, a.applied_epoch.as_str()),
        (4, "epoch-b")
    );
    let mut gens = store.gateway_generations().unwrap();
    gens.sort_by(|a, b| a.gateway.cmp(&b.gateway));
    assert_eq!(
        gens.iter()
            .map(|g| (g.gateway.as_str(), g.latest, g.applied))
            .collect::<Vec<_>>(),
        [(GW_A, 1, 4), (GW_B, 1, 1)]
    );
}

pub fn an_alert_is_stored_once_and_updated_by_a_higher_count(open: Open) {
    let store = open(2);
    let row = |id: &str, count: u64, last_seen_ns: u64| NewAlert {
        last_seen_ns,
        ..alert(id, "pump-1", 2, "scan_vertical", count)
    };
    let body = |id: &str, count: u64| alert(id, "pump-1", 2, "scan_vertical", count).body;
    store
        .insert_alerts(GW_A, &[row("x", 1, 10), row("y", 1, 10)])
        .unwrap();
    // x grows; y's copy is a retry; then x's older copy arrives late, and x's current again.
    let acked = store
        .insert_alerts(GW_A, &[row("x", 5, 50), row("y", 1, 10)])
        .unwrap();
    assert_eq!(acked, ["x", "y"], "every copy is acknowledged");
    store.insert_alerts(GW_A, &[row("x", 1, 10)]).unwrap();
    store.insert_alerts(GW_A, &[row("x", 5, 50)]).unwrap();
    let all = store.alerts_after(0, 10).unwrap();
    assert_eq!(ids(&all), ["x", "y", "x"], "x's creation, y, x's update");
    let (x1, y, x5) = (&all[0], &all[1], &all[2]);
    assert!(x1.seq < y.seq && y.seq < x5.seq, "oldest first");
    assert_eq!(
        (x1.first_seq, y.first_seq, x5.first_seq),
        (x1.seq, y.seq, x1.seq)
    );
    assert_eq!(
        (x1.is_update(), y.is_update(), x5.is_update()),
        (false, false, true)
    );
    assert_eq!(
        [&x1.body, &y.body, &x5.body],
        [&body("x", 1), &body("y", 1), &body("x", 5)]
    );
    assert!(all.iter().all(|a| a.gateway == GW_A && !a.acknowledged));
    let listed = listed_bodies(&*store);
    assert_eq!(
        listed,
        [body("x", 5), body("y", 1)],
        "one per id, newest first"
    );

    // Acknowledged, then the same count seen later: an update under a new number that
    // replaces the previous update row and keeps the acknowledgement.
    written(
        &*store,
        vec![Change::AcknowledgeAlerts {
            ids: vec!["x".into()],
            by: "user:sam".into(),
        }],
    );
    store.insert_alerts(GW_A, &[row("x", 5, 60)]).unwrap();
    let updated = store.alerts_after(y.seq, 10).unwrap();
    assert_eq!(updated.len(), 1, "{updated:?}");
    let x6 = &updated[0];
    assert!(x6.seq > x5.seq);
    assert_eq!(x6.first_seq, x1.seq);
    assert!(x6.acknowledged && x6.acknowledged_by == "user:sam");
    assert_eq!(
        store.alerts_after(0, 10).unwrap().len(),
        3,
        "at most a creation and a latest row per alert"
    );
    assert_eq!(store.alerts_pending(y.seq).unwrap(), 1);
    assert_eq!(store.alerts_pending(0).unwrap(), 3);
    // The quota (2) counts alerts, not rows; past it an alert goes with both its rows and
    // counts once, acknowledged ones first.
    assert_eq!(store.alert_drops(GW_A).unwrap(), [0; 4]);
    store.insert_alerts(GW_A, &[row("z", 1, 10)]).unwrap();
    assert_eq!(store.alert_drops(GW_A).unwrap(), [0, 0, 1, 0]);
    assert_eq!(ids(&store.alerts_after(0, 10).unwrap()), ["y", "z"]);
}

/// Several copies of one alert in one batch (an agent's outbox after an outage): decided in
/// order as if they came one by one, so one creation row and one latest row stay.
pub fn copies_of_an_alert_in_one_batch_leave_its_creation_and_latest_rows(open: Open) {
    let store = open(2);
    let row = |id: &str, count: u64| alert(id, "pump-1", 2, "scan_vertical", count);
    // New: created, grown twice, a late older copy, in one batch.
    store
        .insert_alerts(GW_A, &[row("x", 1), row("x", 2), row("x", 3), row("x", 2)])
        .unwrap();
    let all = store.alerts_after(0, 10).unwrap();
    assert_eq!(ids(&all), ["x", "x"], "{all:?}");
    let (created, latest) = (&all[0], &all[1]);
    assert!(!created.is_update() && latest.is_update());
    assert_eq!(latest.first_seq, created.seq);
    assert_eq!(latest.body, row("x", 3).body);
    assert_eq!(created.body, row("x", 1).body);
    // Stored already: two updates and a new alert in one batch.
    store
        .insert_alerts(GW_A, &[row("x", 4), row("y", 1), row("x", 5)])
        .unwrap();
    let all = store.alerts_after(0, 10).unwrap();
    assert_eq!(ids(&all), ["x", "y", "x"], "{all:?}");
    assert_eq!(all[0].seq, created.seq, "the creation row stays");
    assert_eq!(all[2].body, row("x", 5).body);
    assert_eq!(all[2].first_seq, created.seq);
    assert!(all[1].seq < all[2].seq, "numbers in the batch's order");
    let listed = listed_bodies(&*store);
    assert_eq!(listed.len(), 2, "one per id: {listed:?}");
}

pub fn past_its_quota_a_gateway_drops_its_lowest_severity_first_and_counts_them(open: Open) {
    let store = open(10);
    let batch = |prefix: &str, n: usize, severity: u8| -> Vec<NewAlert> {
        (0..n)
            .map(|i| {
                alert(
                    &format!("{prefix}-{i}"),
                    "pump-1",
                    severity,
                    "scan_vertical",
                    1,
                )
            })
            .collect()
    };
    store.insert_alerts(GW_A, &batch("crit", 4, 3)).unwrap();
    store.insert_alerts(GW_A, &batch("med", 3, 1)).unwrap();
    store.insert_alerts(GW_A, &batch("low", 8, 0)).unwrap();
    store.insert_alerts(GW_B, &batch("low", 5, 0)).unwrap();
    let held = |gw: &str, min: u8| {
        store
            .alerts(&AlertQuery {
                gateway: gw.into(),
                min_severity: min,
                include_acknowledged: true,
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .len()
    };
    assert_eq!(held(GW_A, 0), 10, "capped at the quota");
    assert_eq!(held(GW_A, 3), 4, "every critical kept");
    assert_eq!(held(GW_A, 1), 7, "every medium kept");
    assert_eq!(store.alert_drops(GW_A).unwrap(), [5, 0, 0, 0]);
    assert_eq!(held(GW_B, 0), 5, "another gateway is not touched");
    assert_eq!(store.alert_drops(GW_B).unwrap(), [0; 4]);
    // The lows kept are the newest (the oldest go first within a severity).
    let lows: Vec<String> = store
        .alerts_since(
            &AlertQuery {
                gateway: GW_A.into(),
                ..AlertQuery::recent(100)
            },
            0,
        )
        .unwrap()
        .into_iter()
        .filter(|a| a.id.starts_with("low"))
        .map(|a| a.id)
        .collect();
    assert_eq!(lows, ["low-5", "low-6", "low-7"]);
    // A flood of lows keeps pushing out lows, never the criticals.
    store.insert_alerts(GW_A, &batch("flood", 50, 0)).unwrap();
    assert_eq!(held(GW_A, 3), 4);
    assert_eq!(held(GW_A, 0), 10);
    assert_eq!(store.alert_drops(GW_A).unwrap(), [55, 0, 0, 0]);
}

pub fn sequence_numbers_are_never_reused_and_cursors_never_move_back(open: Open) {
    let store = open(2);
    store
        .insert_alerts(
            GW_A,
            &[
                alert("a", "pump-1", 3, "scan_vertical", 1),
                alert("b", "pump-1", 3, "scan_vertical", 1),
            ],
        )
        .unwrap();
    let first = store.alerts_after(0, 10).unwrap();
    assert_eq!(ids(&first), ["a", "b"]);
    let b = first[1].seq;
    assert_eq!(
        store.sink_cursor("siem").unwrap(),
        0,
        "a new sink starts at 0"
    );
    store.advance_sink_cursor("siem", b).unwrap();
    // Past the quota the newest, lowest-severity row goes at once: the next alert must still
    // come after every number handed out, or a sink past it would skip it.
    store
        .insert_alerts(GW_A, &[alert("low", "pump-1", 0, "scan_vertical", 1)])
        .unwrap();
    store
        .insert_alerts(GW_A, &[alert("c", "pump-1", 3, "scan_vertical", 1)])
        .unwrap();
    let after = store
        .alerts_after(store.sink_cursor("siem").unwrap(), 10)
        .unwrap();
    assert_eq!(ids(&after), ["c"]);
    assert!(
        after[0].seq > b + 1,
        "the dropped alert's number is not reused"
    );
    assert_eq!(store.alert_drops(GW_A).unwrap(), [1, 0, 0, 1]);
    // Cursors: never back, one per sink.
    store.advance_sink_cursor("siem", after[0].seq).unwrap();
    store.advance_sink_cursor("siem", 1).unwrap();
    assert_eq!(store.sink_cursor("siem").unwrap(), after[0].seq);
    store.advance_sink_cursor("ocsf", 1).unwrap();
    assert_eq!(store.sink_cursor("ocsf").unwrap(), 1);
    assert_eq!(store.sink_cursor("siem").unwrap(), after[0].seq);
    assert_eq!(store.alerts_pending(after[0].seq).unwrap(), 0);
}

/// Two gateways storing alerts at once while a sink tails them by sequence number: numbers
/// are taken in commit order, so the sink, moving its cursor past what it read, misses none.
pub fn a_sink_tailing_two_writers_misses_no_alert(open: Open) {
    const PER_WRITER: usize = 100;
    let store = open(QUOTA);
    let store: &dyn wardgate_controller::store::Store = &*store;
    let writing = std::sync::atomic::AtomicUsize::new(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let read: Vec<(i64, String)> = std::thread::scope(|s| {
        for gw in [GW_A, GW_B] {
            let writing = &writing;
            s.spawn(move || {
                for i in 0..PER_WRITER {
                    let a = alert(&format!("{gw}-{i}"), "pump-1", 1, "new_peer", 1);
                    store.insert_alerts(gw, &[a]).unwrap();
                }
                writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let mut cursor = 0;
        let mut read = Vec::new();
        loop {
            // Read whether the writers were done before the read, so the last read sees all.
            let done = writing.load(std::sync::atomic::Ordering::SeqCst) == 0;
            let batch = store.alerts_after(cursor, 50).unwrap();
            if let Some(last) = batch.last() {
                cursor = last.seq;
            }
            let empty = batch.is_empty();
            read.extend(batch.into_iter().map(|a| (a.seq, a.id)));
            if done && empty {
                break read;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still tailing after 60 s"
            );
        }
    });
    assert_eq!(read.len(), 2 * PER_WRITER, "every alert read once");
    assert!(
        read.windows(2).all(|w| w[0].0 < w[1].0),
        "in sequence order"
    );
    let mut ids: Vec<&str> = read.iter().map(|r| r.1.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2 * PER_WRITER);
    // Each gateway's alerts in the order it stored them.
    for gw in [GW_A, GW_B] {
        let mine: Vec<&str> = read
            .iter()
            .map(|r| r.1.as_str())
            .filter(|id| id.starts_with(gw))
            .collect();
        let expected: Vec<String> = (0..PER_WRITER).map(|i| format!("{gw}-{i}")).collect();
        assert_eq!(mine, expected);
    }
}

pub fn alerts_since_filters_in_the_query_and_reads_oldest_first(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    store
        .insert_alerts(
            GW_A,
            &[
                alert("a1", "pump-1", 0, "scan_vertical", 1),
                alert("a2", "pump-1", 3, "new_peer", 1),
                alert("a3", "pump-3", 2, "new_peer", 1),
            ],
        )
        .unwrap();
    store
        .insert_alerts(GW_B, &[alert("b1", "pump-2", 3, "scan_vertical", 1)])
        .unwrap();
    written(
        &*store,
        vec![Change::AcknowledgeAlerts {
            ids: vec!["a2".into()],
            by: "user:sam".into(),
        }],
    );
    let since = |q: AlertQuery, after: i64| -> Vec<String> {
        store
            .alerts_since(&q, after)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect()
    };
    let all = AlertQuery::recent(100);
    assert_eq!(since(all.clone(), 0), ["a1", "a2", "a3", "b1"]);
    assert_eq!(
        since(
            AlertQuery {
                gateway: GW_A.into(),
                ..all.clone()
            },
            0
        ),
        ["a1", "a2", "a3"]
    );
    assert_eq!(
        since(
            AlertQuery {
                device: "pump-1".into(),
                ..all.clone()
            },
            0
        ),
        ["a1", "a2"]
    );
    assert_eq!(
        since(
            AlertQuery {
                min_severity: 2,
                ..all.clone()
            },
            0
        ),
        ["a2", "a3", "b1"]
    );
    assert_eq!(
        since(
            AlertQuery {
                include_acknowledged: false,
                ..all.clone()
            },
            0
        ),
        ["a1", "a3", "b1"]
    );
    assert_eq!(since(AlertQuery::recent(2), 0), ["a1", "a2"], "limited");
    let seqs: Vec<i64> = store
        .alerts_since(&all, 0)
        .unwrap()
        .iter()
        .map(|a| a.seq)
        .collect();
    assert_eq!(since(all.clone(), seqs[1]), ["a3", "b1"]);
    assert_eq!(store.alerts_pending(seqs[1]).unwrap(), 2);
    let a2 = &store.alerts_since(&all, seqs[0]).unwrap()[0];
    assert_eq!(
        (a2.acknowledged, a2.acknowledged_by.as_str()),
        (true, "user:sam")
    );
    // Listings: newest first, filtered the same way.
    let listed: Vec<(String, bool)> = store
        .alerts(&AlertQuery {
            gateway: GW_A.into(),
            ..all.clone()
        })
        .unwrap()
        .into_iter()
        .map(|a| (a.gateway, a.acknowledged))
        .collect();
    assert_eq!(
        listed,
        [
            (GW_A.to_string(), false),
            (GW_A.to_string(), true),
            (GW_A.to_string(), false)
        ]
    );
    assert_eq!(
        store
            .alerts(&AlertQuery {
                include_acknowledged: false,
                min_severity: 3,
                ..all
            })
            .unwrap()
            .len(),
        1,
        "b1 only"
    );
}

pub fn acknowledgements_name_one_gateways_alert(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    store
        .insert_alerts(GW_A, &[alert("dup", "pump-1", 1, "new_peer", 1)])
        .unwrap();
    store
        .insert_alerts(GW_B, &[alert("dup", "pump-2", 1, "new_peer", 1)])
        .unwrap();
    let ack = |id: &str| Change::AcknowledgeAlerts {
        ids: vec![id.into()],
        by: "user:sam".into(),
    };
    let err = write(&*store, vec![ack("dup")]).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("2 gateways")),
        "{err:?}"
    );
    let err = write(&*store, vec![ack("nope")]).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    written(&*store, vec![ack(&format!("{GW_B}/dup"))]);
    let acked: Vec<(String, bool, String)> = store
        .alerts(&AlertQuery::recent(10))
        .unwrap()
        .into_iter()
        .map(|a| (a.gateway, a.acknowledged, a.acknowledged_by))
        .collect();
    assert_eq!(
        acked,
        [
            (GW_B.to_string(), true, "user:sam".to_string()),
            (GW_A.to_string(), false, String::new())
        ]
    );
}

pub fn suppressed_alerts_are_stored_but_not_sent(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let suppress = |peer: &str, reason: &str| Change::SuppressAlerts {
        device: "pump-1".into(),
        detector: "new_peer".into(),
        peer: peer.into(),
        made_by: "user:sam".into(),
        made_ms: 1_000,
        reason: reason.into(),
    };
    // A suppression needs its device.
    let err = write(
        &*store,
        vec![Change::SuppressAlerts {
            device: "ghost".into(),
            detector: "new_peer".into(),
            peer: String::new(),
            made_by: "user:sam".into(),
            made_ms: 1_000,
            reason: "INC-3".into(),
        }],
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    written(&*store, vec![suppress("", "INC-3 noisy")]);
    written(&*store, vec![suppress("", "INC-4 still noisy")]);
    written(&*store, vec![suppress("198.51.100.9", "INC-5")]);
    assert_eq!(
        store.suppressions().unwrap(),
        [
            SuppressionRow {
                device: "pump-1".into(),
                detector: "new_peer".into(),
                peer: String::new(),
                made_by: "user:sam".into(),
                made_ms: 1_000,
                reason: "INC-4 still noisy".into(),
            },
            SuppressionRow {
                device: "pump-1".into(),
                detector: "new_peer".into(),
                peer: "198.51.100.9".into(),
                made_by: "user:sam".into(),
                made_ms: 1_000,
                reason: "INC-5".into(),
            },
        ],
        "made again, the newest says why"
    );
    store
        .insert_alerts(
            GW_A,
            &[
                alert("held", "pump-1", 2, "new_peer", 1),
                alert("other-detector", "pump-1", 2, "scan_vertical", 1),
                alert("other-device", "pump-3", 2, "new_peer", 1),
            ],
        )
        .unwrap();
    let sent: Vec<String> = store
        .alerts_after(0, 10)
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(sent, ["other-detector", "other-device"]);
    assert_eq!(store.alerts_pending(0).unwrap(), 2);
    assert_eq!(store.alerts(&AlertQuery::recent(10)).unwrap().len(), 2);
    let listed = store
        .alerts(&AlertQuery {
            include_suppressed: true,
            ..AlertQuery::recent(10)
        })
        .unwrap();
    assert_eq!(
        listed.iter().map(|a| a.suppressed).collect::<Vec<_>>(),
        [false, false, true]
    );
    // Removed exactly as made; a second removal is an error; later alerts are sent again.
    let unsuppress = Change::UnsuppressAlerts {
        device: "pump-1".into(),
        detector: "new_peer".into(),
        peer: String::new(),
    };
    written(&*store, vec![unsuppress.clone()]);
    let err = write(&*store, vec![unsuppress]).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(store.suppressions().unwrap().len(), 1);
    store
        .insert_alerts(
            GW_A,
            &[
                alert("again", "pump-1", 2, "new_peer", 1),
                NewAlert {
                    peer: "198.51.100.9".into(),
                    ..alert("peer-held", "pump-1", 2, "new_peer", 1)
                },
            ],
        )
        .unwrap();
    let sent: Vec<String> = store
        .alerts_after(0, 10)
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(sent, ["other-detector", "other-device", "again"]);
}

pub fn the_console_alert_page_filters_counts_and_pages(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    store
        .insert_alerts(
            GW_A,
            &[
                alert("p1", "pump-1", 1, "new_peer", 1),
                alert("p2", "pump-1", 3, "scan_vertical", 1),
                alert("p3", "pump-1", 2, "new_peer", 1),
            ],
        )
        .unwrap();
    store
        .insert_alerts(GW_B, &[alert("q1", "pump-2", 0, "new_peer", 1)])
        .unwrap();
    written(
        &*store,
        vec![
            Change::AcknowledgeAlerts {
                ids: vec!["p2".into()],
                by: "user:sam".into(),
            },
            Change::SuppressAlerts {
                device: "pump-2".into(),
                detector: "new_peer".into(),
                peer: String::new(),
                made_by: "user:sam".into(),
                made_ms: 1,
                reason: "INC-6".into(),
            },
        ],
    );
    store
        .insert_alerts(GW_B, &[alert("q2", "pump-2", 2, "new_peer", 1)])
        .unwrap();
    // p3 grows: its latest version is what the page shows, under its first number.
    store
        .insert_alerts(GW_A, &[alert("p3", "pump-1", 2, "new_peer", 4)])
        .unwrap();
    let page = |q: AlertPageQuery| -> (Vec<String>, u64) {
        let p = store.alert_page(&q).unwrap();
        (p.rows.into_iter().map(|r| r.id).collect(), p.total)
    };
    let all = AlertPageQuery {
        limit: 10,
        ..Default::default()
    };
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        page(all.clone()),
        (strs(&["p3", "q2", "q1", "p2", "p1"]), 5)
    );
    assert_eq!(
        page(AlertPageQuery {
            limit: 2,
            offset: 1,
            ..all.clone()
        }),
        (strs(&["q2", "q1"]), 5),
        "paged, counted whole"
    );
    assert_eq!(
        page(AlertPageQuery {
            device: "pump-1".into(),
            ..all.clone()
        }),
        (strs(&["p3", "p2", "p1"]), 3)
    );
    assert_eq!(
        page(AlertPageQuery {
            detector: "scan_vertical".into(),
            ..all.clone()
        }),
        (strs(&["p2"]), 1),
        "the detector is read from the body"
    );
    assert_eq!(
        page(AlertPageQuery {
            min_severity: 2,
            ..all.clone()
        }),
        (strs(&["p3", "q2", "p2"]), 3)
    );
    let state = |s| AlertPageQuery {
        state: Some(s),
        ..all.clone()
    };
    assert_eq!(
        page(state(AlertState::Open)),
        (strs(&["p3", "q1", "p1"]), 3)
    );
    assert_eq!(page(state(AlertState::Acknowledged)), (strs(&["p2"]), 1));
    assert_eq!(page(state(AlertState::Suppressed)), (strs(&["q2"]), 1));

    let p3 = store
        .alert_page(&AlertPageQuery {
            limit: 1,
            ..all.clone()
        })
        .unwrap()
        .rows
        .remove(0);
    assert_eq!(
        p3,
        ConsoleAlert {
            first_seq: p3.first_seq,
            gateway: GW_A.into(),
            id: "p3".into(),
            device: "pump-1".into(),
            body: alert("p3", "pump-1", 2, "new_peer", 4).body,
            severity: 2,
            received_ms: p3.received_ms,
            acknowledged: false,
            acknowledged_by: String::new(),
            suppressed: false,
        }
    );
    assert_eq!(store.console_alert(p3.first_seq).unwrap(), Some(p3.clone()));
    // Its update row's number is not an alert's first number.
    let update_seq = store
        .alerts_after(0, 10)
        .unwrap()
        .into_iter()
        .find(|a| a.id == "p3" && a.is_update())
        .unwrap()
        .seq;
    assert_eq!(store.console_alert(update_seq).unwrap(), None);
    assert_eq!(store.console_alert(999_999).unwrap(), None);
    // Received time is the first copy's.
    let p1 = store
        .console_alert(store.alerts_after(0, 1).unwrap()[0].seq)
        .unwrap();
    assert!(p1.unwrap().received_ms <= p3.received_ms);
}
